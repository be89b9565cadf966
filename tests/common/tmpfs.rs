//! A small tmpfs a test mounts for itself (root needed): a filesystem that can really fill up
//! or turn read-only, without touching the machine's own.

use std::path::Path;
use std::process::Command;

/// A tmpfs of a fixed size, unmounted (lazily: a daemon may still hold a file) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one. Where mounting is not permitted the test fails, unless
    /// `HAUL_TEST_NO_MOUNT=1` says to skip it (`None`, with the reason printed): a test that
    /// passes without running must be asked for.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(status) if status.success() => Some(Tmpfs { dir }),
            other if std::env::var_os("HAUL_TEST_NO_MOUNT").is_some() => {
                eprintln!("SKIPPED: cannot mount a tmpfs here ({other:?})");
                None
            }
            other => panic!(
                "cannot mount a tmpfs ({other:?}): run the tests as root, or set \
                 HAUL_TEST_NO_MOUNT=1 to skip the tests that need one"
            ),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
