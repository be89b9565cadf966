//! The daemon-wide key that signs deliveries to jobs' `callback_url`s.
//!
//! When `webhook_secret` is not configured, one is generated at first start and kept in
//! `<data_dir>/webhook-secret` (mode 0600), so it survives restarts and whoever runs the
//! receiver can read it there. It is never logged, returned by the API or sent.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::config::Secret;

/// The file, inside the data directory, that holds the generated key.
pub const FILE_NAME: &str = "webhook-secret";

/// The configured key, or the one kept in the data directory (created if missing).
pub fn callback_secret(configured: Option<&Secret>, data_dir: &Path) -> std::io::Result<Secret> {
    if let Some(secret) = configured {
        return Ok(secret.clone());
    }
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create(&path)
}

/// Writes a new random key (256 bits, hex) that only the daemon's user can read.
fn create(path: &PathBuf) -> std::io::Result<Secret> {
    let mut key = [0u8; 32];
    rand::rng().fill(&mut key);
    let text = hex::encode(key);
    let mut options = std::fs::File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    tracing::info!(
        path = %path.display(),
        "generated the key that signs callback deliveries; receivers find it in {}",
        path.display()
    );
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_and_a_configured_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = callback_secret(None, dir.path()).unwrap();
        assert_eq!(first.expose().len(), 64);
        let again = callback_secret(None, dir.path()).unwrap();
        assert_eq!(first, again, "the key survives a restart");
        let configured = Secret::new("mine");
        assert_eq!(
            callback_secret(Some(&configured), dir.path()).unwrap(),
            configured
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
