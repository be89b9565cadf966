//! The file loop of a job: for each file, choose its destination, fetch it, verify it and put
//! it in place, recording each step in the store.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::header::HeaderMap;

use super::Stop;
use super::journal::StoreJournal;
use crate::domain::{FileRecord, FileStatus, Job, JobError};
use crate::engine::Engine;
use crate::engine::registry::Run;
use crate::fetch::place::{self, Finish, Placed, Prepared};
use crate::fetch::{FetchError, FileTask, LiveFile, request_headers};
use crate::store::{FileMeta, FileStatusUpdate, RunFile, StoreError};

/// Runs every unfinished file. Returns the files that failed for good (path and error), or
/// why the loop stopped early.
pub(super) async fn run_files(
    engine: &Engine,
    job: &Job,
    files: Vec<RunFile>,
    lives: &[Arc<LiveFile>],
    secrets: &(Vec<(String, String)>, Option<String>),
    run: &Run,
) -> Result<Vec<(String, JobError)>, Stop> {
    let mut failed = Vec::new();
    let headers = request_headers(&secrets.0, secrets.1.as_deref());
    for (file, live) in files.into_iter().zip(lives) {
        if file.record.status.is_done() {
            continue;
        }
        let path = file.record.path.clone();
        let id = file.record.id;
        let outcome = match &headers {
            Ok(headers) => fetch_one(engine, job, file, live, headers, run).await,
            Err(err) => Err(FetchError::Store(err.to_string())),
        };
        let Err(err) = outcome else { continue };
        match err {
            FetchError::Stopped => return Err(Stop::Stopped),
            FetchError::LeaseLost => return Err(Stop::LeaseLost),
            err => {
                tracing::warn!(file.id = %id, error.message = %err, "file {path} failed");
                let error = err.to_job_error();
                let update = FileStatusUpdate {
                    status: FileStatus::Failed,
                    bytes: None,
                    cached: false,
                    error: Some(&error),
                };
                set_status(engine, job, id, &update)
                    .await
                    .map_err(|_| Stop::LeaseLost)?;
                failed.push((path, error));
            }
        }
    }
    Ok(failed)
}

async fn set_status(
    engine: &Engine,
    job: &Job,
    file: crate::domain::FileId,
    update: &FileStatusUpdate<'_>,
) -> Result<(), FetchError> {
    let inner = &engine.inner;
    inner
        .store
        .set_file_status(job.id, &inner.owner, file, update)
        .await
        .map_err(store_error)
}

/// An existing file already has the expected checksum: it is the download.
async fn record_cached(
    engine: &Engine,
    job: &Job,
    record: &FileRecord,
    live: &LiveFile,
    path: &str,
    size: u64,
) -> Result<(), FetchError> {
    let inner = &engine.inner;
    inner
        .store
        .record_path(job.id, &inner.owner, record.id, path)
        .await
        .map_err(store_error)?;
    let update = FileStatusUpdate {
        status: FileStatus::Complete,
        bytes: Some(size),
        cached: true,
        error: None,
    };
    set_status(engine, job, record.id, &update).await?;
    live.set(size, Some(size));
    tracing::info!(file.id = %record.id, "{path} already has the expected SHA-256; not downloading it");
    Ok(())
}

fn policy_renames(job: &Job) -> bool {
    job.on_conflict == crate::domain::OnConflict::Rename
}

fn store_error(err: StoreError) -> FetchError {
    match err {
        StoreError::LeaseLost(_) => FetchError::LeaseLost,
        err => FetchError::Store(err.to_string()),
    }
}

/// Frees a destination in the registry when the file's work ends, however it ends.
struct PathClaim<'a> {
    engine: &'a Engine,
    rel: String,
}

impl Drop for PathClaim<'_> {
    fn drop(&mut self) {
        self.engine.inner.registry.release_path(&self.rel);
    }
}

async fn fetch_one(
    engine: &Engine,
    job: &Job,
    file: RunFile,
    live: &LiveFile,
    headers: &HeaderMap,
    run: &Run,
) -> Result<(), FetchError> {
    let record = &file.record;
    let Some(claim) = destination(engine, job, record, live, run).await? else {
        return Ok(());
    };
    let inner = &engine.inner;
    let url =
        url::Url::parse(&record.url).map_err(|e| FetchError::Store(format!("stored URL: {e}")))?;
    let task = FileTask {
        url,
        headers: headers.clone(),
        part: place::part_path(&inner.root.join(&claim.rel)),
        meta: FileMeta {
            total: record.bytes_total,
            etag: record.etag.clone(),
            last_modified: record.last_modified.clone(),
        },
        segments: file.segments,
        hash: record.sha256.is_some(),
    };
    let journal = StoreJournal {
        engine,
        job: job.id,
        file: record.id,
        live,
    };
    let fetched = inner
        .fetcher
        .fetch_file(&task, &journal, live, &run.stop)
        .await?;
    let total = fetched.total;
    let verifying = FileStatusUpdate {
        status: FileStatus::Verifying,
        bytes: Some(total),
        cached: false,
        error: None,
    };
    set_status(engine, job, record.id, &verifying).await?;
    let stop = run.stop.clone();
    let (root, rel, expected, policy) = (
        inner.root.clone(),
        claim.rel.clone(),
        record.sha256.clone(),
        job.on_conflict,
    );
    let placed = tokio::task::spawn_blocking(move || {
        place::finish(Finish {
            root: &root,
            rel: &rel,
            file: fetched.file,
            total,
            expected: expected.as_ref(),
            digest: fetched.digest,
            policy,
            stop: &stop,
        })
    })
    .await
    .map_err(|e| FetchError::Store(format!("verification was interrupted: {e}")))??;
    let status = match placed {
        Placed::At(path) if path != claim.rel => {
            inner
                .store
                .record_path(job.id, &inner.owner, record.id, &path)
                .await
                .map_err(store_error)?;
            FileStatus::Complete
        }
        Placed::At(_) => FileStatus::Complete,
        Placed::Skipped => FileStatus::Skipped,
    };
    live.set(total, Some(total));
    let done = FileStatusUpdate {
        status,
        bytes: Some(total),
        cached: false,
        error: None,
    };
    set_status(engine, job, record.id, &done).await
}

/// Settles where the file goes and claims it. `None` when there is nothing to download (a
/// cached or skipped file, already recorded).
async fn destination<'a>(
    engine: &'a Engine,
    job: &Job,
    record: &FileRecord,
    live: &LiveFile,
    run: &Run,
) -> Result<Option<PathClaim<'a>>, FetchError> {
    let inner = &engine.inner;
    if record.path_claimed {
        if !inner.registry.claim_path(&record.path) {
            return Err(FetchError::PathBusy(record.path.clone()));
        }
        return Ok(Some(PathClaim {
            engine,
            rel: record.path.clone(),
        }));
    }
    // Another job may take the chosen name between the check and the claim: choose again,
    // avoiding the names found taken.
    let mut taken: HashSet<String> = HashSet::new();
    for _ in 0..8 {
        let (root, rel, sha, policy) = (
            inner.root.clone(),
            record.path.clone(),
            record.sha256.clone(),
            job.on_conflict,
        );
        let (checker, avoid, stop) = (engine.clone(), taken.clone(), run.stop.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            place::prepare(&root, &rel, policy, sha.as_ref(), &stop, &|p| {
                avoid.contains(p) || checker.inner.registry.path_busy(p)
            })
        })
        .await
        .map_err(|e| {
            FetchError::Store(format!("preparing the destination was interrupted: {e}"))
        })??;
        match prepared {
            Prepared::Cached { path, size } => {
                record_cached(engine, job, record, live, &path, size).await?;
                return Ok(None);
            }
            Prepared::Skipped => {
                // Nothing of it is downloaded: it counts as zero bytes of zero.
                let update = FileStatusUpdate {
                    status: FileStatus::Skipped,
                    bytes: Some(0),
                    cached: false,
                    error: None,
                };
                set_status(engine, job, record.id, &update).await?;
                tracing::info!(file.id = %record.id, "{} exists; skipping it", record.path);
                return Ok(None);
            }
            Prepared::Download { path } if inner.registry.claim_path(&path) => {
                let claim = PathClaim { engine, rel: path };
                match inner
                    .store
                    .claim_path(job.id, &inner.owner, record.id, &claim.rel)
                    .await
                {
                    Ok(()) => return Ok(Some(claim)),
                    // A paused or failed job owns the name: only `rename` may pick another.
                    Err(StoreError::PathTaken(path)) if policy_renames(job) => {
                        taken.insert(path);
                    }
                    Err(StoreError::PathTaken(path)) => return Err(FetchError::PathBusy(path)),
                    Err(err) => return Err(store_error(err)),
                }
            }
            Prepared::Download { path } if !policy_renames(job) => {
                return Err(FetchError::PathBusy(path));
            }
            Prepared::Download { .. } => {}
        }
    }
    Err(FetchError::PathBusy(record.path.clone()))
}
