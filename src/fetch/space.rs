//! Free space on the destination's filesystem: checked before a file of known size is
//! written, and reserved for it with `fallocate` where the filesystem can.
//!
//! The check counts what the `.part` already holds on disk (its allocated blocks), so a
//! resumed or preallocated file asks only for the rest. Too little space is
//! [`FetchError::InsufficientStorage`]: the worker pauses the job (its partial data and
//! checkpoints kept) rather than fail it half-way, and a resume once space is freed carries on.
//! A write that meets a full disk (`ENOSPC`, `EDQUOT`) is the same error. A file larger than
//! the whole filesystem is [`FetchError::FileTooLarge`] instead: freeing space cannot help, so
//! the file fails. Blocking: call it on the blocking pool.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::FallocateFlags;

use super::FetchError;

/// Checks that the filesystem of `part` has room for the rest of a `total`-byte file plus
/// `reserve` bytes left free, then preallocates the file's blocks (without changing its
/// length, so what is on disk still reads as what was written). A filesystem that cannot
/// preallocate is fine; one that runs out while doing so is not.
pub fn reserve(
    file: &std::fs::File,
    part: &Path,
    total: u64,
    reserve: u64,
) -> Result<(), FetchError> {
    let held = file
        .metadata()
        .map_err(|e| FetchError::io(part, e))?
        .blocks()
        .saturating_mul(512);
    let (free, capacity) = free_bytes(file).map_err(|e| FetchError::io(part, e))?;
    // Some FUSE and network filesystems report no size at all: nothing to check against.
    if capacity == 0 {
        return preallocate(file, part, total);
    }
    if total > capacity {
        return Err(FetchError::FileTooLarge {
            path: part.display().to_string(),
            size: total,
            capacity,
        });
    }
    let needed = total.saturating_sub(held);
    if free < needed.saturating_add(reserve) {
        return Err(FetchError::InsufficientStorage {
            path: part.display().to_string(),
            detail: format!(
                "{needed} more bytes needed and {reserve} to be kept free (min_free_space), \
                 {free} available"
            ),
        });
    }
    preallocate(file, part, total)
}

/// Allocates `total` bytes of blocks for the file, keeping its length.
fn preallocate(file: &std::fs::File, part: &Path, total: u64) -> Result<(), FetchError> {
    match rustix::fs::fallocate(file, FallocateFlags::KEEP_SIZE, 0, total) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
            Err(FetchError::io(part, e.into()))
        }
        // An optimisation only: EOPNOTSUPP (a filesystem without it), ENOSYS, and the rest.
        Err(e) => {
            tracing::debug!(path = %part.display(), error.message = %e, "cannot preallocate");
            Ok(())
        }
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `file`, and the
/// filesystem's whole size.
fn free_bytes(file: &std::fs::File) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::fstatvfs(file)?;
    Ok((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_full(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve_at(part: &Path, total: u64, keep: u64) -> Result<(), FetchError> {
        let file = std::fs::File::options().write(true).open(part).unwrap();
        reserve(&file, part, total, keep)
    }

    #[test]
    fn a_file_that_fits_is_preallocated_and_one_that_does_not_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        std::fs::write(&part, b"").unwrap();
        reserve_at(&part, 1 << 20, 0).unwrap();
        let meta = std::fs::metadata(&part).unwrap();
        // The length is unchanged; the blocks are there where the filesystem preallocates.
        assert_eq!(meta.len(), 0);
        // Larger than the filesystem itself: it can never fit.
        let err = reserve_at(&part, u64::MAX / 2, 0).unwrap_err();
        assert_eq!(err.kind(), "file-too-large", "{err}");
        assert!(!err.is_retryable());
        let err = reserve_at(&part, 0, u64::MAX / 2).unwrap_err();
        assert_eq!(err.kind(), "insufficient-storage", "{err}");
    }

    #[test]
    fn the_blocks_are_reserved_where_the_filesystem_can() {
        // tmpfs preallocates; skip where there is none to try it on.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let part = dir.path().join("f.part");
        std::fs::write(&part, b"abc").unwrap();
        reserve_at(&part, 1 << 20, 0).unwrap();
        let meta = std::fs::metadata(&part).unwrap();
        assert_eq!(meta.len(), 3, "the length still reads as what was written");
        assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
        // A second check counts what is held already: nothing more is needed.
        reserve_at(&part, 1 << 20, 0).unwrap();
    }

    #[test]
    fn full_disks_are_recognised() {
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(libc::EIO)));
    }
}
