//! Placing files: choosing the destination before a download (conflict policy, an existing
//! file with the expected checksum) and moving a verified `.part` into place after it.
//!
//! Invariant: a file gets its final name only after its size and checksum are verified and its
//! data fsynced; the rename is followed by an fsync of the directory. The final name is taken
//! with a hard link where the policy forbids replacing, so a file that appeared meanwhile is
//! never overwritten. Everything here blocks: call it on the blocking pool.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::FetchError;
use crate::domain::paths::{DownloadRoot, numbered_alternative};
use crate::domain::{OnConflict, Sha256};

/// Alternatives tried by the rename policy before giving up.
const MAX_ALTERNATIVES: u32 = 10_000;

/// What to do with a file before downloading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Download into `part` (relative destination `path`).
    Download { path: String },
    /// A file with the expected checksum is already at `path`: nothing to fetch.
    Cached { path: String, size: u64 },
    /// A file is already at the destination and the policy is `skip`.
    Skipped,
}

/// The `.part` beside a destination.
pub fn part_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    final_path.with_file_name(name)
}

fn sibling(rel: &str, name: &str) -> String {
    match rel.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_owned(),
    }
}

fn file_name(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(rel, |(_, name)| name)
}

fn destination_error(rel: &str, reason: impl std::fmt::Display) -> FetchError {
    FetchError::Destination(format!("{rel}: {reason}"))
}

/// Applies the conflict policy to the planned destination `rel`. `busy` says whether another
/// running download is using a relative path.
pub fn prepare(
    root: &DownloadRoot,
    rel: &str,
    policy: OnConflict,
    expected: Option<&Sha256>,
    stop: &CancellationToken,
    busy: &dyn Fn(&str) -> bool,
) -> Result<Prepared, FetchError> {
    root.confine(rel).map_err(|e| destination_error(rel, e))?;
    let target = root.join(rel);
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        if let Some(expected) = expected.filter(|_| meta.is_file())
            && sha256_of(&target, stop)? == *expected
        {
            return Ok(Prepared::Cached {
                path: rel.to_owned(),
                size: meta.len(),
            });
        }
        match policy {
            OnConflict::Skip => return Ok(Prepared::Skipped),
            OnConflict::Overwrite if meta.is_dir() => {
                return Err(destination_error(rel, "a directory is in the way"));
            }
            OnConflict::Overwrite => {}
            OnConflict::Rename => return free_alternative(root, rel, stop, busy),
        }
    } else if policy == OnConflict::Rename && (busy(rel) || part_path(&target).exists()) {
        return free_alternative(root, rel, stop, busy);
    }
    if busy(rel) {
        return Err(FetchError::PathBusy(rel.to_owned()));
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    }
    // Re-check now that the directories exist: one of them may be a symlink planted meanwhile.
    root.confine(rel).map_err(|e| destination_error(rel, e))?;
    Ok(Prepared::Download {
        path: rel.to_owned(),
    })
}

fn free_alternative(
    root: &DownloadRoot,
    rel: &str,
    stop: &CancellationToken,
    busy: &dyn Fn(&str) -> bool,
) -> Result<Prepared, FetchError> {
    for n in 1..=MAX_ALTERNATIVES {
        let candidate = sibling(rel, &numbered_alternative(file_name(rel), n));
        let path = root.join(&candidate);
        if !busy(&candidate)
            && std::fs::symlink_metadata(&path).is_err()
            && !part_path(&path).exists()
        {
            return prepare(root, &candidate, OnConflict::Overwrite, None, stop, busy);
        }
    }
    Err(destination_error(rel, "no free alternative name"))
}

/// Creates the `.part` of a destination just claimed. `Ok(false)` when a file already has that
/// name: it is not ours (no store record owns it), so it is neither opened nor removed.
pub fn create_part(root: &DownloadRoot, rel: &str) -> Result<bool, FetchError> {
    let part = part_path(&root.join(rel));
    // create_new refuses any existing name, a symlink included, so it cannot be redirected.
    match File::options().write(true).create_new(true).open(&part) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FetchError::io(&part, e)),
    }
}

/// Opens a `.part` for reading and writing without truncating it, creating it should it have
/// vanished since its destination was claimed (a manual clean-up). Never through a symlink.
pub fn open_part(part: &Path) -> Result<File, FetchError> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)
        .map_err(|e| FetchError::io(part, e))
}

/// True when a file that was being verified was in fact put in place before the process
/// ended: its `.part` is gone, and a regular file of its size (and checksum) has its name.
pub fn placed_before_crash(
    root: &DownloadRoot,
    rel: &str,
    total: u64,
    expected: Option<&Sha256>,
    stop: &CancellationToken,
) -> Result<bool, FetchError> {
    let target = root.join(rel);
    if std::fs::symlink_metadata(part_path(&target)).is_ok() {
        return Ok(false);
    }
    match std::fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_file() && meta.len() == total => match expected {
            Some(expected) => Ok(sha256_of(&target, stop)? == *expected),
            None => Ok(true),
        },
        _ => Ok(false),
    }
}

/// SHA-256 of a whole file. Gives up with `Stopped` as soon as `stop` fires.
pub fn sha256_of(path: &Path, stop: &CancellationToken) -> Result<Sha256, FetchError> {
    let mut file = File::open(path).map_err(|e| FetchError::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.is_cancelled() {
            return Err(FetchError::Stopped);
        }
        let n = file.read(&mut buf).map_err(|e| FetchError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha256::from_digest(&hasher.finalize()))
}

/// A finished `.part` to verify and move into place.
pub struct Finish<'a> {
    pub root: &'a DownloadRoot,
    pub rel: &'a str,
    pub file: File,
    pub total: u64,
    pub expected: Option<&'a Sha256>,
    pub digest: Option<[u8; 32]>,
    pub policy: OnConflict,
    /// A cancel or pause that arrives before the rename keeps the file from its final name.
    pub stop: &'a CancellationToken,
}

/// Where a finished file ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// At this relative path (the planned one, or an alternative if the name was taken).
    At(String),
    /// The policy is `skip` and a file took the name while downloading; the `.part` is gone.
    Skipped,
}

/// Verifies, fsyncs, places, and fsyncs the directory: [`verify`], [`place`], [`sync_dirs`].
pub fn finish(job: Finish<'_>) -> Result<Placed, FetchError> {
    let (root, rel, policy, stop) = (job.root, job.rel, job.policy, job.stop);
    verify(job)?;
    let placed = place(root, rel, policy, stop)?;
    sync_dirs(root, [rel])?;
    Ok(placed)
}

/// Checks size and checksum and fsyncs the data. On a checksum mismatch the `.part` is
/// deleted: its bytes are wrong and must not be resumed.
pub fn verify(job: Finish<'_>) -> Result<(), FetchError> {
    let part = part_path(&job.root.join(job.rel));
    let size = job
        .file
        .metadata()
        .map_err(|e| FetchError::io(&part, e))?
        .len();
    if size != job.total {
        return Err(FetchError::SizeMismatch {
            expected: job.total,
            actual: size,
        });
    }
    if let Some(expected) = job.expected {
        let actual = match job.digest {
            Some(digest) => Sha256::from_digest(&digest),
            None => sha256_of(&part, job.stop)?,
        };
        if actual != *expected {
            let _ = std::fs::remove_file(&part);
            return Err(FetchError::ChecksumMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    job.file.sync_all().map_err(|e| FetchError::io(&part, e))
}

/// Gives a verified `.part` its final name under the conflict policy. The directory still
/// needs an fsync ([`sync_dirs`]) for the name to be durable.
pub fn place(
    root: &DownloadRoot,
    rel: &str,
    policy: OnConflict,
    stop: &CancellationToken,
) -> Result<Placed, FetchError> {
    if stop.is_cancelled() {
        return Err(FetchError::Stopped);
    }
    root.confine(rel).map_err(|e| destination_error(rel, e))?;
    let target = root.join(rel);
    let part = part_path(&target);
    let placed = match policy {
        OnConflict::Overwrite => {
            std::fs::rename(&part, &target).map_err(|e| FetchError::io(&target, e))?;
            Placed::At(rel.to_owned())
        }
        OnConflict::Skip => match link_new(&part, &target)? {
            true => Placed::At(rel.to_owned()),
            false => Placed::Skipped,
        },
        OnConflict::Rename => place_renaming(root, rel, &part)?,
    };
    let _ = std::fs::remove_file(&part);
    Ok(placed)
}

/// Fsyncs, once each, the directories of these root-relative paths.
pub fn sync_dirs<'a>(
    root: &DownloadRoot,
    rels: impl IntoIterator<Item = &'a str>,
) -> Result<(), FetchError> {
    let dirs: std::collections::BTreeSet<PathBuf> = rels
        .into_iter()
        .filter_map(|rel| root.join(rel).parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FetchError::io(&dir, e))?;
    }
    Ok(())
}

fn place_renaming(root: &DownloadRoot, rel: &str, part: &Path) -> Result<Placed, FetchError> {
    if link_new(part, &root.join(rel))? {
        return Ok(Placed::At(rel.to_owned()));
    }
    for n in 1..=MAX_ALTERNATIVES {
        let candidate = sibling(rel, &numbered_alternative(file_name(rel), n));
        if link_new(part, &root.join(&candidate))? {
            return Ok(Placed::At(candidate));
        }
    }
    Err(destination_error(rel, "no free alternative name"))
}

/// Gives `part` the name `target` unless something already has it. Returns false if taken.
fn link_new(part: &Path, target: &Path) -> Result<bool, FetchError> {
    match std::fs::hard_link(part, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // Filesystems without hard links: fall back to a rename after a check (racy only there).
        Err(_) if !target.exists() => std::fs::rename(part, target)
            .map(|()| true)
            .map_err(|e| FetchError::io(target, e)),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::paths::temp_root as root;

    const NOT_BUSY: &dyn Fn(&str) -> bool = &|_| false;

    fn never() -> CancellationToken {
        CancellationToken::new()
    }

    #[test]
    fn rename_policy_picks_a_free_name() {
        let (_d, root) = root();
        std::fs::write(root.join("a.bin"), b"x").unwrap();
        std::fs::write(root.join("a (1).bin.part"), b"x").unwrap();
        let prepared =
            prepare(&root, "a.bin", OnConflict::Rename, None, &never(), NOT_BUSY).unwrap();
        assert_eq!(
            prepared,
            Prepared::Download {
                path: "a (2).bin".into()
            }
        );
        let busy: &dyn Fn(&str) -> bool = &|p| p == "b.bin";
        let prepared = prepare(&root, "b.bin", OnConflict::Rename, None, &never(), busy).unwrap();
        assert_eq!(
            prepared,
            Prepared::Download {
                path: "b (1).bin".into()
            }
        );
    }

    #[test]
    fn existing_file_with_the_checksum_is_cached() {
        let (_d, root) = root();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"abc").unwrap();
        let sha = sha256_of(&root.join("sub/f"), &never()).unwrap();
        let prepared = prepare(
            &root,
            "sub/f",
            OnConflict::Rename,
            Some(&sha),
            &never(),
            NOT_BUSY,
        )
        .unwrap();
        assert_eq!(
            prepared,
            Prepared::Cached {
                path: "sub/f".into(),
                size: 3
            }
        );
        let prepared = prepare(&root, "sub/f", OnConflict::Skip, None, &never(), NOT_BUSY).unwrap();
        assert_eq!(prepared, Prepared::Skipped);
    }

    fn finish_with(
        root: &DownloadRoot,
        rel: &str,
        body: &[u8],
        policy: OnConflict,
        expected: Option<&Sha256>,
    ) -> Result<Placed, FetchError> {
        let part = part_path(&root.join(rel));
        std::fs::write(&part, body).unwrap();
        finish(Finish {
            root,
            rel,
            file: File::options().read(true).write(true).open(&part).unwrap(),
            total: body.len() as u64,
            expected,
            digest: None,
            policy,
            stop: &never(),
        })
    }

    #[test]
    fn a_verified_part_takes_its_name_without_overwriting() {
        let (_d, root) = root();
        assert_eq!(
            finish_with(&root, "f", b"one", OnConflict::Rename, None).unwrap(),
            Placed::At("f".into())
        );
        // The name was taken while the second download ran: it gets an alternative.
        assert_eq!(
            finish_with(&root, "f", b"two", OnConflict::Rename, None).unwrap(),
            Placed::At("f (1)".into())
        );
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"one");
        assert_eq!(
            finish_with(&root, "f", b"new", OnConflict::Overwrite, None).unwrap(),
            Placed::At("f".into())
        );
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"new");
        assert_eq!(
            finish_with(&root, "f", b"zzz", OnConflict::Skip, None).unwrap(),
            Placed::Skipped
        );
        assert!(!part_path(&root.join("f")).exists());
    }

    #[test]
    fn a_stop_before_the_rename_keeps_the_part_and_takes_no_name() {
        let (_d, root) = root();
        let part = part_path(&root.join("h"));
        std::fs::write(&part, b"data").unwrap();
        let stop = never();
        stop.cancel();
        let placed = finish(Finish {
            root: &root,
            rel: "h",
            file: File::options().read(true).write(true).open(&part).unwrap(),
            total: 4,
            expected: None,
            digest: None,
            policy: OnConflict::Rename,
            stop: &stop,
        });
        assert!(matches!(placed, Err(FetchError::Stopped)));
        assert!(part.exists() && !root.join("h").exists());
    }

    #[test]
    fn a_checksum_mismatch_leaves_no_file_at_all() {
        let (_d, root) = root();
        let wrong = Sha256::parse(&"0".repeat(64)).unwrap();
        let err = finish_with(&root, "g", b"data", OnConflict::Rename, Some(&wrong)).unwrap_err();
        assert!(matches!(err, FetchError::ChecksumMismatch { .. }));
        assert!(!root.join("g").exists());
        assert!(!part_path(&root.join("g")).exists());
    }
}
