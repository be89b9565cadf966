//! Where a file goes: the conflict policy, an existing file with the expected checksum, and
//! ownership of the destination.
//!
//! A destination and its `.part` belong to one file at a time. Ownership is taken in three
//! places, in order: the registry (runs of this process), the store (`claim_path`: every job,
//! running or not, and every daemon sharing the store), and the disk (the `.part` is created
//! with `create_new`, so a file that is not ours is never opened as ours).

use std::collections::HashSet;
use std::sync::Arc;

use super::Ctx;
use super::files::{set_status, store_error, update};
use crate::domain::paths::Confined;
use crate::domain::{FileRecord, FileStatus, OnConflict, Segment};
use crate::fetch::place::{self, Prepared};
use crate::fetch::{FetchError, LiveFile};
use crate::store::{FileMeta, FileStatusUpdate, RunFile, StoreError};

/// Attempts at finding a free destination before giving up.
const ATTEMPTS: usize = 8;

/// A destination this run owns, with the progress that may be resumed into it.
pub(super) struct Destination<'a> {
    pub claim: PathClaim<'a>,
    pub meta: FileMeta,
    pub segments: Vec<Segment>,
    /// The file was being verified when the last run ended.
    verifying: bool,
}

/// Frees a destination in the registry when the file's work ends, however it ends.
pub(super) struct PathClaim<'a> {
    ctx: &'a Ctx<'a>,
    pub rel: String,
}

impl Drop for PathClaim<'_> {
    fn drop(&mut self) {
        self.ctx.engine.inner.registry.release_path(&self.rel);
    }
}

/// Settles the file's destination. `None` when there is nothing to download (a cached or
/// skipped file, already recorded).
pub(super) async fn settle<'a>(
    ctx: &'a Ctx<'a>,
    file: RunFile,
    live: &Arc<LiveFile>,
    claimed: Option<String>,
) -> Result<Option<Destination<'a>>, FetchError> {
    let record = &file.record;
    live.set_phase(FileStatus::Preparing);
    if let Some(rel) = claimed {
        // Claimed with others of its job a moment ago (registry, store and `.part`).
        return Ok(Some(Destination {
            claim: PathClaim { ctx, rel },
            meta: FileMeta::default(),
            segments: Vec::new(),
            verifying: false,
        }));
    }
    let mut taken = HashSet::new();
    if record.path_claimed {
        match claim(ctx, record, &record.path).await? {
            Some(claim) => {
                return Ok(Some(Destination {
                    claim,
                    meta: FileMeta {
                        total: record.bytes_total,
                        etag: record.etag.clone(),
                        last_modified: record.last_modified.clone(),
                    },
                    segments: file.segments,
                    verifying: record.status == FileStatus::Verifying,
                }));
            }
            // Our partial file was given up (a failed file that kept nothing) and another job
            // owns the name now: start afresh elsewhere, touching nothing of theirs.
            None if ctx.job.on_conflict == OnConflict::Rename => {
                taken.insert(record.path.clone());
            }
            None => return Err(FetchError::PathBusy(record.path.clone())),
        }
    }
    plan(ctx, record, live, taken).await
}

/// Claims `rel` for the file in the registry and the store (a destination claimed by an
/// earlier run is taken back the same way). `None` if another file owns it now.
async fn claim<'a>(
    ctx: &'a Ctx<'a>,
    record: &FileRecord,
    rel: &str,
) -> Result<Option<PathClaim<'a>>, FetchError> {
    if !ctx.engine.inner.registry.claim_path(rel) {
        return Ok(None);
    }
    let claim = PathClaim {
        ctx,
        rel: rel.to_owned(),
    };
    match ctx
        .store()
        .claim_path(ctx.job.id, ctx.lease(), record.id, rel)
        .await
    {
        Ok(()) => Ok(Some(claim)),
        Err(StoreError::PathTaken(_)) => Ok(None),
        Err(err) => Err(store_error(err)),
    }
}

/// Finds a destination for a file not yet claimed, applying the conflict policy.
pub(super) async fn plan<'a>(
    ctx: &'a Ctx<'a>,
    record: &FileRecord,
    live: &Arc<LiveFile>,
    mut taken: HashSet<String>,
) -> Result<Option<Destination<'a>>, FetchError> {
    let renames = ctx.job.on_conflict == OnConflict::Rename;
    for _ in 0..ATTEMPTS {
        let path = match prepare(ctx, record, live, &taken).await? {
            Prepared::Cached { path, size } => {
                record_cached(ctx, record, live, &path, size).await?;
                return Ok(None);
            }
            Prepared::Skipped => {
                if record.auto_name {
                    // The name skipped may be the server's, which the store does not have yet.
                    record_path(ctx, record, &record.path).await?;
                }
                // Nothing of it is downloaded: it counts as zero bytes of zero.
                set_status(ctx, record.id, &update(FileStatus::Skipped, Some(0))).await?;
                tracing::info!(file.id = %record.id, "{} exists; skipping it", record.path);
                return Ok(None);
            }
            Prepared::Download { path } => path,
        };
        match take(ctx, record, &path).await? {
            Some(claim) => {
                return Ok(Some(Destination {
                    claim,
                    meta: FileMeta::default(),
                    segments: Vec::new(),
                    verifying: false,
                }));
            }
            // Someone took the name between the check and the claim: only `rename` may choose
            // another.
            None if renames => {
                taken.insert(path);
            }
            None => return Err(FetchError::PathBusy(path)),
        }
    }
    Err(FetchError::PathBusy(record.path.clone()))
}

/// Runs the conflict policy on the blocking pool.
async fn prepare(
    ctx: &Ctx<'_>,
    record: &FileRecord,
    live: &Arc<LiveFile>,
    taken: &HashSet<String>,
) -> Result<Prepared, FetchError> {
    let inner = &ctx.engine.inner;
    let live = live.clone();
    let (root, rel, sha) = (
        inner.root.clone(),
        record.path.clone(),
        record.sha256.clone(),
    );
    let (policy, stop) = (ctx.job.on_conflict, ctx.run.stop.clone());
    let (engine, avoid) = (ctx.engine.clone(), taken.clone());
    tokio::task::spawn_blocking(move || {
        let busy = |p: &str| avoid.contains(p) || engine.inner.registry.path_busy(p);
        let hashing = || live.set_phase(FileStatus::HashingExisting);
        let mut seen = Confined::default();
        place::prepare(
            &root,
            &rel,
            policy,
            sha.as_ref(),
            &stop,
            &busy,
            &hashing,
            &mut seen,
        )
    })
    .await
    .map_err(|e| FetchError::Store(format!("preparing the destination was interrupted: {e}")))?
}

/// Claims `rel` in the registry, the store and on disk ([`claim`], then a fresh `.part`).
/// `None` if any says it is taken.
async fn take<'a>(
    ctx: &'a Ctx<'a>,
    record: &FileRecord,
    rel: &str,
) -> Result<Option<PathClaim<'a>>, FetchError> {
    let Some(claim) = claim(ctx, record, rel).await? else {
        return Ok(None);
    };
    let root = ctx.engine.inner.root.clone();
    let rel_owned = rel.to_owned();
    let created = tokio::task::spawn_blocking(move || {
        place::create_part(&mut place::Dirs::new(&root), &rel_owned)
    })
    .await
    .map_err(|e| FetchError::Store(format!("creating the partial file was interrupted: {e}")))?;
    match created {
        Ok(true) => Ok(Some(claim)),
        Ok(false) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Records where a file that needs no download ended up.
async fn record_path(ctx: &Ctx<'_>, record: &FileRecord, path: &str) -> Result<(), FetchError> {
    ctx.store()
        .record_path(ctx.job.id, ctx.lease(), record.id, path)
        .await
        .map_err(store_error)
}

/// An existing file already has the expected checksum: it is the download.
async fn record_cached(
    ctx: &Ctx<'_>,
    record: &FileRecord,
    live: &LiveFile,
    path: &str,
    size: u64,
) -> Result<(), FetchError> {
    record_path(ctx, record, path).await?;
    let cached = FileStatusUpdate {
        cached: true,
        ..update(FileStatus::Complete, Some(size))
    };
    set_status(ctx, record.id, &cached).await?;
    live.set(size, Some(size));
    tracing::info!(file.id = %record.id, "{path} already has the expected SHA-256; not downloading it");
    Ok(())
}

impl Destination<'_> {
    /// True when the last run put this file in place but ended before recording it: it was
    /// being verified, its `.part` is gone and a file of its size (and checksum) has its name.
    pub(super) async fn placed_before_crash(
        &self,
        ctx: &Ctx<'_>,
        record: &FileRecord,
    ) -> Result<bool, FetchError> {
        let Some(total) = record.bytes_total.filter(|_| self.verifying) else {
            return Ok(false);
        };
        let root = ctx.engine.inner.root.clone();
        let (rel, sha, stop) = (
            self.claim.rel.clone(),
            record.sha256.clone(),
            ctx.run.stop.clone(),
        );
        tokio::task::spawn_blocking(move || {
            place::placed_before_crash(&root, &rel, total, sha.as_ref(), &stop)
        })
        .await
        .map_err(|e| FetchError::Store(format!("checking the destination was interrupted: {e}")))?
    }
}

/// Destinations claimed in batches, ahead of their downloads: for a job of many files, one
/// pass on the blocking pool plans them, one store transaction claims them and one more pass
/// creates their `.part` files, instead of a round of each per file. What is not handed out
/// is released when this is dropped.
pub(super) struct Batch<'a> {
    ctx: &'a Ctx<'a>,
    claimed: std::sync::Mutex<std::collections::HashMap<crate::domain::FileId, String>>,
}

/// Files a batch can claim: not claimed yet, and with no checksum (an existing file might be
/// theirs already, which only the one-file path checks).
pub(super) fn batchable(record: &FileRecord) -> bool {
    !record.path_claimed && record.sha256.is_none() && !record.status.is_done()
}

impl<'a> Batch<'a> {
    pub(super) fn new(ctx: &'a Ctx<'a>) -> Self {
        Self {
            ctx,
            claimed: std::sync::Mutex::default(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<crate::domain::FileId, String>> {
        self.claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The destination claimed for `file`, if any (handed out once).
    pub(super) fn take(&self, file: crate::domain::FileId) -> Option<String> {
        self.lock().remove(&file)
    }

    /// Whether `file` was claimed and not handed out yet.
    pub(super) fn has(&self, file: crate::domain::FileId) -> bool {
        self.lock().contains_key(&file)
    }

    /// Destinations claimed and not handed out yet.
    pub(super) fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// Claims destinations for these files (id, path) where nothing is in the way. Files left
    /// out (or a failure of the whole batch) fall back to the one-file path.
    pub(super) async fn claim(
        &self,
        wanted: Vec<(crate::domain::FileId, String)>,
    ) -> Result<(), FetchError> {
        let ctx = self.ctx;
        let planned = self.plan(wanted).await?;
        let registry = &ctx.engine.inner.registry;
        let planned: Vec<_> = planned
            .into_iter()
            .filter(|(_, rel)| registry.claim_path(rel))
            .collect();
        let release = |rels: &mut dyn Iterator<Item = &String>| {
            rels.for_each(|rel| registry.release_path(rel))
        };
        let stored = match ctx
            .store()
            .claim_paths(ctx.job.id, ctx.lease(), &planned)
            .await
        {
            Ok(stored) => stored,
            Err(err) => {
                release(&mut planned.iter().map(|(_, rel)| rel));
                return Err(store_error(err));
            }
        };
        let (ours, theirs): (Vec<_>, Vec<_>) =
            planned.into_iter().zip(stored).partition(|(_, ok)| *ok);
        release(&mut theirs.iter().map(|((_, rel), _)| rel));
        let root = ctx.engine.inner.root.clone();
        let rels: Vec<String> = ours.iter().map(|((_, rel), _)| rel.clone()).collect();
        let created = tokio::task::spawn_blocking(move || {
            let mut dirs = place::Dirs::new(&root);
            rels.iter()
                .map(|rel| matches!(place::create_part(&mut dirs, rel), Ok(true)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| FetchError::Store(format!("creating partial files was interrupted: {e}")))?;
        let mut claimed = self.lock();
        for (((file, rel), _), made) in ours.into_iter().zip(created) {
            if made {
                claimed.insert(file, rel);
            } else {
                registry.release_path(&rel);
            }
        }
        Ok(())
    }

    /// Runs the conflict policy for each file; keeps those that download to a free name.
    async fn plan(
        &self,
        wanted: Vec<(crate::domain::FileId, String)>,
    ) -> Result<Vec<(crate::domain::FileId, String)>, FetchError> {
        let ctx = self.ctx;
        let root = ctx.engine.inner.root.clone();
        let (policy, stop, engine) = (
            ctx.job.on_conflict,
            ctx.run.stop.clone(),
            ctx.engine.clone(),
        );
        tokio::task::spawn_blocking(move || {
            // The batch's files mostly share a directory: it is checked once for all.
            let mut seen = Confined::default();
            wanted
                .into_iter()
                .filter_map(|(file, rel)| {
                    let busy = |p: &str| engine.inner.registry.path_busy(p);
                    let none = || {};
                    match place::prepare(&root, &rel, policy, None, &stop, &busy, &none, &mut seen)
                    {
                        Ok(Prepared::Download { path }) => Some((file, path)),
                        _ => None,
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| FetchError::Store(format!("planning destinations was interrupted: {e}")))
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let registry = &self.ctx.engine.inner.registry;
        for rel in self.lock().values() {
            registry.release_path(rel);
        }
    }
}
