//! Placing files: choosing the destination before a download (conflict policy, an existing
//! file with the expected checksum) and moving a verified `.part` into place after it.
//!
//! Invariant: a file gets its final name only after its size and checksum are verified and its
//! data fsynced; the rename is followed by an fsync of the directory. The final name is taken
//! with `RENAME_NOREPLACE` where the policy forbids replacing, so a file that appeared
//! meanwhile is never overwritten. Everything here blocks: call it on the blocking pool.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, RenameFlags};

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::{Data, FetchError};
use crate::domain::paths::{
    Confined, DownloadRoot, PathError, numbered_alternative, open_dir_inside,
};
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

/// `name` in the directory of the relative path `rel`.
pub fn sibling(rel: &str, name: &str) -> String {
    match rel.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_owned(),
    }
}

/// The last component of a root-relative path.
pub fn file_name(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(rel, |(_, name)| name)
}

/// Removes a `.part` nothing was kept in (one missing already is fine): an empty `.part` helps
/// no resume, outlives its job, and would push the next download of its name to an
/// alternative ("NAME (1)"). Through its directory's checked descriptor, so a directory
/// swapped for a symlink cannot make it remove a file elsewhere.
pub async fn remove_part(root: &DownloadRoot, rel: &str) {
    let (root, rel) = (root.clone(), rel.to_owned());
    let removed = tokio::task::spawn_blocking(move || {
        let mut dirs = Dirs::new(&root);
        let dir = dirs.part_dir(&rel)?;
        match rustix::fs::unlinkat(dir, part_name(&rel), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(FetchError::io(&root.part(&rel), e.into())),
        }
    })
    .await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error.message = %e, "cannot remove a partial file");
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "removing a partial file was interrupted");
        }
    }
}

/// The file name of `rel`'s `.part` in its directory.
fn part_name(rel: &str) -> String {
    format!("{}.part", file_name(rel))
}

fn destination_error(rel: &str, reason: impl std::fmt::Display) -> FetchError {
    FetchError::Destination(format!("{rel}: {reason}"))
}

/// Applies the conflict policy to the planned destination `rel`. `busy` says whether another
/// running download is using a relative path; `hashing` is called before an existing file is
/// read to compare it with `expected` (a phase the API shows).
#[expect(
    clippy::too_many_arguments,
    reason = "the destination, the policy and what the caller tracks (stop, busy names, the \
              hashing phase, directories already checked); a struct would only rename them"
)]
pub fn prepare(
    root: &DownloadRoot,
    rel: &str,
    policy: OnConflict,
    expected: Option<&Sha256>,
    stop: &CancellationToken,
    busy: &dyn Fn(&str) -> bool,
    hashing: &dyn Fn(),
    seen: &mut Confined,
) -> Result<Prepared, FetchError> {
    let target = root.join(rel);
    let existing = std::fs::symlink_metadata(&target);
    let last_is_link = existing.as_ref().is_ok_and(|m| m.is_symlink());
    root.confine_known(rel, last_is_link, seen)
        .map_err(|e| destination_error(rel, e))?;
    if let Ok(meta) = existing {
        if let Some(expected) = expected.filter(|_| meta.is_file())
            && {
                hashing();
                sha256_of(&target, stop)? == *expected
            }
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
            OnConflict::Rename => return free_alternative(root, rel, stop, busy, seen),
        }
    } else if policy == OnConflict::Rename && (busy(rel) || root.part(rel).exists()) {
        return free_alternative(root, rel, stop, busy, seen);
    }
    if busy(rel) {
        // Claimed by another download since the check above: under `rename`, another name.
        if policy == OnConflict::Rename {
            return free_alternative(root, rel, stop, busy, seen);
        }
        return Err(FetchError::PathBusy(rel.to_owned()));
    }
    if let Some(parent) = target.parent().filter(|p| !seen.has_dir(p)) {
        std::fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
        seen.created(parent);
    }
    // Re-check now that the directories exist: one of them may be a symlink planted meanwhile.
    root.confine_known(rel, last_is_link, seen)
        .map_err(|e| destination_error(rel, e))?;
    Ok(Prepared::Download {
        path: rel.to_owned(),
    })
}

fn free_alternative(
    root: &DownloadRoot,
    rel: &str,
    stop: &CancellationToken,
    busy: &dyn Fn(&str) -> bool,
    seen: &mut Confined,
) -> Result<Prepared, FetchError> {
    for n in 1..=MAX_ALTERNATIVES {
        let candidate = sibling(rel, &numbered_alternative(file_name(rel), n));
        let path = root.join(&candidate);
        if !busy(&candidate)
            && std::fs::symlink_metadata(&path).is_err()
            && !root.part(&candidate).exists()
        {
            let overwrite = OnConflict::Overwrite;
            match prepare(root, &candidate, overwrite, None, stop, busy, &|| {}, seen) {
                // Claimed by another download meanwhile: try the next one.
                Err(FetchError::PathBusy(_)) => continue,
                prepared => return prepared,
            }
        }
    }
    Err(destination_error(rel, "no free alternative name"))
}

/// Creates the `.part` of a destination just claimed, in its directory's checked
/// descriptor. `Ok(false)` when a file already has that name: it is not ours (no store record
/// owns it), so it is neither opened nor removed.
pub fn create_part(dirs: &mut Dirs<'_>, rel: &str) -> Result<bool, FetchError> {
    use rustix::fs::{Mode, OFlags};
    dirs.root
        .prepare_part_dir(rel)
        .map_err(|e| destination_error(rel, e))?;
    let dir = dirs.part_dir(rel)?;
    // O_EXCL refuses any existing name, a symlink included, so it cannot be redirected.
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, part_name(rel), flags, Mode::from_raw_mode(0o644)) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(FetchError::io(&dirs.root.part(rel), e.into())),
    }
}

/// Opens `rel`'s `.part` for reading and writing without truncating it, creating it should it
/// have vanished since its destination was claimed (a manual clean-up). Through its
/// directory's checked descriptor and never through a symlink, so a directory swapped for a
/// symlink since the claim cannot lead the download's bytes out of the root.
pub fn open_part(root: &DownloadRoot, rel: &str) -> Result<File, FetchError> {
    use rustix::fs::{Mode, OFlags};
    let mut dirs = Dirs::new(root);
    let dir = dirs.part_dir(rel)?;
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, part_name(rel), flags, Mode::from_raw_mode(0o644))
        .map(File::from)
        .map_err(|e| FetchError::io(&root.part(rel), e.into()))
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
    if std::fs::symlink_metadata(root.part(rel)).is_ok() {
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

/// A fetched file to verify and move into place.
pub struct Finish<'a> {
    pub root: &'a DownloadRoot,
    pub rel: &'a str,
    pub data: &'a Data,
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

/// Verifies, persists, places, and fsyncs the directory: [`verify`], [`persist`], [`place`],
/// [`Dirs::sync`], for one file.
pub fn finish(job: Finish<'_>) -> Result<Placed, FetchError> {
    let (root, rel, data, policy, stop) = (job.root, job.rel, job.data, job.policy, job.stop);
    verify(job)?;
    let mut dirs = Dirs::new(root);
    persist(&mut dirs, &[(rel, data)]).pop().unwrap_or(Ok(()))?;
    let placed = place(&mut dirs, rel, policy, stop, &|_| false)?;
    dirs.sync()?;
    Ok(placed)
}

/// Checks size and checksum. On a checksum mismatch the `.part` is deleted: its bytes are
/// wrong and must not be resumed. Blocks only for a file in its `.part`.
pub fn verify(job: Finish<'_>) -> Result<(), FetchError> {
    let part = job.root.part(job.rel);
    let size = match job.data {
        Data::Part(file) => file.metadata().map_err(|e| FetchError::io(&part, e))?.len(),
        Data::Memory(body) => body.len() as u64,
    };
    if size != job.total {
        return Err(FetchError::SizeMismatch {
            expected: job.total,
            actual: size,
        });
    }
    if let Some(expected) = job.expected {
        let actual = match (job.digest, job.data) {
            (Some(digest), _) => Sha256::from_digest(&digest),
            (None, Data::Memory(body)) => Sha256::from_digest(&sha2::Sha256::digest(body)),
            (None, Data::Part(_)) => sha256_of(&part, job.stop)?,
        };
        if actual != *expected {
            let _ = std::fs::remove_file(&part);
            return Err(FetchError::ChecksumMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    Ok(())
}

/// Makes verified files durable in their `.part`s: writes those still in memory, then syncs
/// them all at once — an fsync for one file, one `syncfs` per filesystem for several (one
/// journal commit instead of one per file; since Linux 5.8 it reports the writeback errors of
/// every file on it). Returns one result per file, in order.
pub fn persist(dirs: &mut Dirs<'_>, files: &[(&str, &Data)]) -> Vec<Result<(), FetchError>> {
    let parts: Vec<PathBuf> = files.iter().map(|(rel, _)| dirs.root.part(rel)).collect();
    let mut results: Vec<Result<(), FetchError>> = Vec::with_capacity(files.len());
    let mut written: Vec<Option<File>> = Vec::with_capacity(files.len());
    for ((rel, data), part) in files.iter().zip(&parts) {
        let (result, file) = match data {
            Data::Part(_) => (Ok(()), None),
            Data::Memory(body) => match write_part(dirs, rel, part, body) {
                Ok(file) => (Ok(()), Some(file)),
                Err(err) => (Err(err), None),
            },
        };
        results.push(result);
        written.push(file);
    }
    // Every file still in the running, by its index: written here, or written by its writer.
    let handles: Vec<(usize, &File)> = files
        .iter()
        .zip(&written)
        .enumerate()
        .filter(|(i, _)| results[*i].is_ok())
        .filter_map(|(i, ((_, data), file))| match (file, data) {
            (Some(file), _) | (None, Data::Part(file)) => Some((i, file)),
            (None, Data::Memory(_)) => None,
        })
        .collect();
    for (i, synced) in sync_all(&handles) {
        if let Err(err) = synced {
            results[i] = Err(FetchError::io(&parts[i], err));
        }
    }
    // `syncfs` reports only the writeback errors since the descriptor it was given was
    // opened; a `.part` written by its writer was opened earlier, so it is asked on its own.
    // Its data is clean by now: this costs no I/O, only the answer.
    if handles.len() > 1 {
        for (i, (_, data)) in files.iter().enumerate() {
            if let (Data::Part(file), Ok(())) = (data, &results[i])
                && let Err(err) = rustix::fs::fdatasync(file)
            {
                results[i] = Err(FetchError::io(&parts[i], err.into()));
            }
        }
    }
    results
}

/// Writes a whole body into its `.part` (created when the destination was claimed). The body
/// has waited in memory since then, and a directory of the path may have become a symlink
/// out of the root meanwhile: the `.part` is opened in its directory's checked descriptor,
/// never through a symlink, and truncated (the body is all of it).
fn write_part(
    dirs: &mut Dirs<'_>,
    rel: &str,
    part: &Path,
    body: &[u8],
) -> Result<File, FetchError> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::FileExt;
    let dir = dirs.part_dir(rel)?;
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = File::from(
        rustix::fs::openat(dir, part_name(rel), flags, Mode::from_raw_mode(0o644))
            .map_err(|e| FetchError::io(part, e.into()))?,
    );
    file.write_all_at(body, 0)
        .map_err(|e| FetchError::io(part, e))?;
    Ok(file)
}

/// Syncs these files: `fsync` for one, `syncfs` once per filesystem for several.
fn sync_all(files: &[(usize, &File)]) -> Vec<(usize, std::io::Result<()>)> {
    use std::os::unix::fs::MetadataExt;
    if let [(i, file)] = files {
        return vec![(*i, file.sync_all())];
    }
    let mut synced: std::collections::HashMap<u64, std::io::Result<()>> = Default::default();
    files
        .iter()
        .map(|(i, file)| {
            let result = file.metadata().and_then(|meta| {
                match synced
                    .entry(meta.dev())
                    .or_insert_with(|| rustix::fs::syncfs(file).map_err(std::io::Error::from))
                {
                    Ok(()) => Ok(()),
                    Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
                }
            });
            (*i, result)
        })
        .collect()
}

/// The directories one group of files is written and named in. Each is opened once and found
/// inside the root (or the incomplete root, for `.part`s) through its descriptor; files are
/// then opened and named relative to that descriptor, so a symlink planted on the path after
/// the check cannot redirect them, and the same descriptor is fsynced once its names are given.
pub struct Dirs<'r> {
    root: &'r DownloadRoot,
    /// By absolute path; `None` when it leads outside where it must be.
    open: HashMap<PathBuf, Option<Arc<OwnedFd>>>,
    /// Directories a name was given in: the ones to fsync.
    named: BTreeSet<PathBuf>,
}

impl<'r> Dirs<'r> {
    pub fn new(root: &'r DownloadRoot) -> Self {
        Self {
            root,
            open: HashMap::new(),
            named: BTreeSet::new(),
        }
    }

    /// The directory of `rel`'s destination, opened and checked inside the root on first use.
    fn dest_dir(&mut self, rel: &str) -> Result<(PathBuf, Arc<OwnedFd>), FetchError> {
        let root = self.root.path();
        let path = self.root.join(rel);
        self.lookup(rel, path.parent().unwrap_or(root), root)
    }

    /// The directory of `rel`'s `.part`, opened and checked on first use: inside the
    /// incomplete root when there is one, else the root.
    fn part_dir(&mut self, rel: &str) -> Result<Arc<OwnedFd>, FetchError> {
        let base = self.root.incomplete().unwrap_or(self.root.path());
        let part = self.root.part(rel);
        Ok(self.lookup(rel, part.parent().unwrap_or(base), base)?.1)
    }

    fn lookup(
        &mut self,
        rel: &str,
        dir: &Path,
        base: &Path,
    ) -> Result<(PathBuf, Arc<OwnedFd>), FetchError> {
        if !self.open.contains_key(dir) {
            let fd = open_dir_inside(dir, base).map_err(|e| FetchError::io(dir, e))?;
            self.open.insert(dir.to_path_buf(), fd.map(Arc::new));
        }
        match self.open.get(dir) {
            Some(Some(fd)) => Ok((dir.to_path_buf(), Arc::clone(fd))),
            _ => Err(destination_error(
                rel,
                PathError::EscapesRoot(rel.to_owned()),
            )),
        }
    }

    /// Fsyncs, once each, the directories names were given in, making the names durable.
    pub fn sync(self) -> Result<(), FetchError> {
        for dir in &self.named {
            if let Some(Some(fd)) = self.open.get(dir) {
                rustix::fs::fsync(fd).map_err(|e| FetchError::io(dir, e.into()))?;
            }
        }
        Ok(())
    }
}

/// Gives a verified `.part` its final name under the conflict policy, in a directory of
/// `dirs`. The name is durable once [`Dirs::sync`] has run.
pub fn place(
    dirs: &mut Dirs<'_>,
    rel: &str,
    policy: OnConflict,
    stop: &CancellationToken,
    busy: &dyn Fn(&str) -> bool,
) -> Result<Placed, FetchError> {
    if stop.is_cancelled() {
        return Err(FetchError::Stopped);
    }
    let part_name = part_name(rel);
    let target = dirs.root.join(rel);
    let io = |e: std::io::Error| FetchError::io(&target, e);
    let from = dirs.part_dir(rel)?;
    let (dir_path, dir) = dirs.dest_dir(rel)?;
    let (from, dir) = (&*from, &*dir);
    let source = (from, part_name.as_str());
    let placed = match policy {
        OnConflict::Overwrite => {
            // rename replaces a symlink at the name; it never follows it.
            rustix::fs::renameat(from, &part_name, dir, file_name(rel))
                .map_err(|e| io(e.into()))?;
            Placed::At(rel.to_owned())
        }
        OnConflict::Skip => match name_new(source, dir, file_name(rel)).map_err(io)? {
            true => Placed::At(rel.to_owned()),
            false => Placed::Skipped,
        },
        OnConflict::Rename => place_renaming(source, dir, rel, busy)
            .map_err(io)?
            .ok_or_else(|| destination_error(rel, "no free alternative name"))?,
    };
    match &placed {
        Placed::At(_) => {
            dirs.named.insert(dir_path);
        }
        Placed::Skipped => {
            let _ = rustix::fs::unlinkat(from, &part_name, AtFlags::empty());
        }
    }
    Ok(placed)
}

/// A `.part` by its directory's descriptor and its name there.
type Source<'a> = (&'a OwnedFd, &'a str);

/// The `rename` policy at the final step: the planned name, else the first alternative free
/// on disk and not claimed by another running download (which would replace it). `None`
/// when every alternative is taken.
fn place_renaming(
    part: Source<'_>,
    dir: &OwnedFd,
    rel: &str,
    busy: &dyn Fn(&str) -> bool,
) -> std::io::Result<Option<Placed>> {
    if name_new(part, dir, file_name(rel))? {
        return Ok(Some(Placed::At(rel.to_owned())));
    }
    for n in 1..=MAX_ALTERNATIVES {
        let name = numbered_alternative(file_name(rel), n);
        let candidate = sibling(rel, &name);
        if !busy(&candidate) && name_new(part, dir, &name)? {
            return Ok(Some(Placed::At(candidate)));
        }
    }
    Ok(None)
}

/// Moves `part` to `name` in `dir` unless something already has that name (a symlink
/// included). Returns false if taken.
fn name_new((from, part): Source<'_>, dir: &OwnedFd, name: &str) -> std::io::Result<bool> {
    use rustix::io::Errno;
    match rustix::fs::renameat_with(from, part, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        // Filesystems without RENAME_NOREPLACE: a hard link, which never replaces either.
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => link_new((from, part), dir, name),
        Err(e) => Err(e.into()),
    }
}

/// [`name_new`] by a hard link and an unlink of the `.part`.
fn link_new((from, part): Source<'_>, dir: &OwnedFd, name: &str) -> std::io::Result<bool> {
    use rustix::io::Errno;
    match rustix::fs::linkat(from, part, dir, name, AtFlags::empty()) {
        Ok(()) => {
            let _ = rustix::fs::unlinkat(from, part, AtFlags::empty());
            Ok(true)
        }
        Err(Errno::EXIST) => Ok(false),
        // Nor hard links: a rename after a check (racy only there).
        Err(_) => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(false),
            Err(_) => rustix::fs::renameat(from, part, dir, name)
                .map(|()| true)
                .map_err(Into::into),
        },
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
        let prepared = prepare(
            &root,
            "a.bin",
            OnConflict::Rename,
            None,
            &never(),
            NOT_BUSY,
            &|| {},
            &mut Confined::default(),
        )
        .unwrap();
        assert_eq!(
            prepared,
            Prepared::Download {
                path: "a (2).bin".into()
            }
        );
        let busy: &dyn Fn(&str) -> bool = &|p| p == "b.bin";
        let prepared = prepare(
            &root,
            "b.bin",
            OnConflict::Rename,
            None,
            &never(),
            busy,
            &|| {},
            &mut Confined::default(),
        )
        .unwrap();
        assert_eq!(
            prepared,
            Prepared::Download {
                path: "b (1).bin".into()
            }
        );
    }

    #[test]
    fn a_name_claimed_while_it_is_checked_gets_an_alternative_under_rename() {
        let (_d, root) = root();
        // Free at the first look, taken at the next (another job claimed it in between).
        let looks = std::cell::Cell::new(0);
        let busy = |p: &str| {
            looks.set(looks.get() + 1);
            (p == "r.bin" && looks.get() > 1) || (p == "r (1).bin" && looks.get() > 3)
        };
        let prepared = prepare(
            &root,
            "r.bin",
            OnConflict::Rename,
            None,
            &never(),
            &busy,
            &|| {},
            &mut Confined::default(),
        );
        assert_eq!(
            prepared.unwrap(),
            Prepared::Download {
                path: "r (2).bin".into()
            }
        );
        let prepared = prepare(
            &root,
            "r.bin",
            OnConflict::Skip,
            None,
            &never(),
            &|_| true,
            &|| {},
            &mut Confined::default(),
        );
        assert!(matches!(prepared, Err(FetchError::PathBusy(_))));
    }

    #[test]
    fn existing_file_with_the_checksum_is_cached() {
        let (_d, root) = root();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"abc").unwrap();
        let sha = sha256_of(&root.join("sub/f"), &never()).unwrap();
        let hashed = std::cell::Cell::new(false);
        let prepared = prepare(
            &root,
            "sub/f",
            OnConflict::Rename,
            Some(&sha),
            &never(),
            NOT_BUSY,
            &|| hashed.set(true),
            &mut Confined::default(),
        )
        .unwrap();
        assert!(hashed.get(), "the hashing phase is announced");
        assert_eq!(
            prepared,
            Prepared::Cached {
                path: "sub/f".into(),
                size: 3
            }
        );
        let prepared = prepare(
            &root,
            "sub/f",
            OnConflict::Skip,
            None,
            &never(),
            NOT_BUSY,
            &|| {},
            &mut Confined::default(),
        )
        .unwrap();
        assert_eq!(prepared, Prepared::Skipped);
    }

    fn finish_with(
        root: &DownloadRoot,
        rel: &str,
        body: &[u8],
        policy: OnConflict,
        expected: Option<&Sha256>,
    ) -> Result<Placed, FetchError> {
        let part = root.part(rel);
        std::fs::write(&part, body).unwrap();
        let data = Data::Part(File::options().read(true).write(true).open(&part).unwrap());
        finish(Finish {
            root,
            rel,
            data: &data,
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
        assert!(!root.part("f").exists());
    }

    #[test]
    fn a_stop_before_the_rename_keeps_the_part_and_takes_no_name() {
        let (_d, root) = root();
        let part = root.part("h");
        std::fs::write(&part, b"data").unwrap();
        let stop = never();
        stop.cancel();
        let data = Data::Part(File::options().read(true).write(true).open(&part).unwrap());
        let placed = finish(Finish {
            root: &root,
            rel: "h",
            data: &data,
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
        assert!(!root.part("g").exists());
    }

    #[test]
    fn files_in_memory_are_written_and_synced_as_a_group() {
        let (_d, root) = root();
        let on_disk = root.part("d");
        std::fs::write(&on_disk, b"disk").unwrap();
        let group = [
            ("a", Data::Memory(bytes::Bytes::from_static(b"alpha"))),
            ("b", Data::Memory(bytes::Bytes::from_static(b""))),
            ("d", Data::Part(File::open(&on_disk).unwrap())),
        ];
        // A `.part` that vanished since its claim is created again.
        std::fs::write(root.part("a"), b"stale and longer").unwrap();
        let files: Vec<(&str, &Data)> = group.iter().map(|(rel, data)| (*rel, data)).collect();
        let results = persist(&mut Dirs::new(&root), &files);
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(std::fs::read(root.part("a")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(root.part("b")).unwrap(), b"");
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"disk");
    }

    #[test]
    fn a_file_in_memory_is_verified_without_touching_the_disk() {
        let (_d, root) = root();
        let body = Data::Memory(bytes::Bytes::from_static(b"data"));
        let check = |total, expected: Option<&Sha256>| {
            verify(Finish {
                root: &root,
                rel: "m",
                data: &body,
                total,
                expected,
                digest: None,
                policy: OnConflict::Rename,
                stop: &never(),
            })
        };
        let right = Sha256::from_digest(&sha2::Sha256::digest(b"data"));
        check(4, Some(&right)).unwrap();
        assert!(matches!(
            check(5, None),
            Err(FetchError::SizeMismatch {
                expected: 5,
                actual: 4
            })
        ));
        let wrong = Sha256::parse(&"0".repeat(64)).unwrap();
        assert!(matches!(
            check(4, Some(&wrong)),
            Err(FetchError::ChecksumMismatch { .. })
        ));
        assert!(!root.join("m").exists() && !root.part("m").exists());
    }
}
