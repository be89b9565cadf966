//! The file loop of a job: for each file, settle its destination, fetch it, verify it and put
//! it in place, recording each step in the store.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::header::HeaderMap;
use tokio::sync::mpsc;

use super::commit;
use super::destination::{self, Destination};
use super::journal::StoreJournal;
use super::{Ctx, Stop};
use crate::domain::{FileId, FileRecord, FileStatus, JobError};
use crate::fetch::place::{self, Finish};
use crate::fetch::{FetchError, Fetched, FileLimits, FileTask, LiveFile, request_headers};
use crate::store::{FileStatusUpdate, RunFile, StoreError};

/// Files whose destinations are claimed together.
const CLAIM_BATCH: usize = 64;

/// Runs every unfinished file, several at a time (as many as the job's connection limit).
/// Returns the files that failed for good (path and error), or why the loop stopped early.
pub(super) async fn run_files(
    ctx: &Ctx<'_>,
    files: Vec<RunFile>,
    lives: &[Arc<LiveFile>],
    secrets: &(Vec<(String, String)>, Option<String>),
) -> Result<Vec<(String, JobError)>, Stop> {
    let headers = request_headers(&secrets.0, secrets.1.as_deref());
    let headers = &headers;
    let at_once = file_limits(ctx).max_connections.max(1);
    let (commits, queue) = mpsc::channel(256);
    let batch = destination::Batch::new(ctx);
    let batch = &batch;
    let fetching = async move {
        let mut pending: VecDeque<_> = files
            .into_iter()
            .zip(lives)
            .filter(|(f, _)| !f.record.status.is_done())
            .collect();
        let mut running = FuturesUnordered::new();
        let mut outcomes = Vec::new();
        loop {
            while running.len() < at_once {
                let Some((file, live)) = pending.pop_front() else {
                    break;
                };
                if destination::batchable(&file.record) && !batch.has(file.record.id) {
                    let records: Vec<&FileRecord> = std::iter::once(&file.record)
                        .chain(
                            pending
                                .iter()
                                .map(|(f, _)| &f.record)
                                .filter(|r| destination::batchable(r)),
                        )
                        .take(CLAIM_BATCH)
                        .collect();
                    // A batch that fails leaves its files to the one-file path.
                    let _ = batch.claim(&records).await;
                }
                let claimed = batch.take(file.record.id);
                running.push(fetch_tracked(
                    ctx,
                    file,
                    live,
                    headers,
                    commits.clone(),
                    claimed,
                ));
            }
            match running.next().await {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            }
        }
        // The last sender goes here, which ends the committer.
        drop(commits);
        outcomes
    };
    let (outcomes, ()) = tokio::join!(fetching, commit::run(ctx, queue));
    let mut failed = Vec::new();
    let mut stop = None;
    for (path, id, outcome) in outcomes {
        match outcome {
            Ok(()) => {}
            Err(FetchError::LeaseLost) => stop = Some(Stop::LeaseLost),
            Err(FetchError::Stopped) => stop = stop.or(Some(Stop::Stopped)),
            Err(err) => {
                tracing::warn!(file.id = %id, error.message = %err, "file {path} failed");
                let error = err.to_job_error();
                let failure = FileStatusUpdate {
                    error: Some(&error),
                    ..update(FileStatus::Failed, None)
                };
                set_status(ctx, id, &failure)
                    .await
                    .map_err(|_| Stop::LeaseLost)?;
                failed.push((path, error));
            }
        }
    }
    match stop {
        Some(stop) => Err(stop),
        None => Ok(failed),
    }
}

/// One file's work, with what the loop needs to report it.
async fn fetch_tracked(
    ctx: &Ctx<'_>,
    file: RunFile,
    live: &Arc<LiveFile>,
    headers: &Result<HeaderMap, FetchError>,
    commits: mpsc::Sender<commit::Commit>,
    claimed: Option<String>,
) -> (String, FileId, Result<(), FetchError>) {
    let (path, id) = (file.record.path.clone(), file.record.id);
    let outcome = match headers {
        Ok(headers) => fetch_one(ctx, file, live, headers, &commits, claimed).await,
        Err(err) => Err(FetchError::Store(err.to_string())),
    };
    (path, id, outcome)
}

/// A status change with its byte count (`bytes` sets both done and total).
pub(super) fn update(status: FileStatus, bytes: Option<u64>) -> FileStatusUpdate<'static> {
    FileStatusUpdate {
        status,
        bytes,
        cached: false,
        error: None,
    }
}

pub(super) async fn set_status(
    ctx: &Ctx<'_>,
    file: FileId,
    update: &FileStatusUpdate<'_>,
) -> Result<(), FetchError> {
    ctx.store()
        .set_file_status(ctx.job.id, ctx.lease(), file, update)
        .await
        .map_err(store_error)
}

/// Store failures as the fetch layer reports them: a lost lease stops the run.
pub(super) fn store_error(err: StoreError) -> FetchError {
    match err {
        StoreError::LeaseLost(_) => FetchError::LeaseLost,
        err => FetchError::Store(err.to_string()),
    }
}

async fn fetch_one(
    ctx: &Ctx<'_>,
    file: RunFile,
    live: &Arc<LiveFile>,
    headers: &HeaderMap,
    commits: &mpsc::Sender<commit::Commit>,
    claimed: Option<String>,
) -> Result<(), FetchError> {
    let record = &file.record;
    let Some(destination) = destination::settle(ctx, file.clone(), live, claimed).await? else {
        return Ok(());
    };
    if destination.placed_before_crash(ctx, record).await? {
        tracing::info!(file.id = %record.id, "{} was put in place before a restart", destination.claim.rel);
        let total = record.bytes_total.unwrap_or(0);
        return complete(ctx, record.id, live, FileStatus::Complete, total).await;
    }
    let inner = &ctx.engine.inner;
    let url =
        url::Url::parse(&record.url).map_err(|e| FetchError::Store(format!("stored URL: {e}")))?;
    let task = FileTask {
        url,
        headers: headers.clone(),
        part: place::part_path(&inner.root.join(&destination.claim.rel)),
        meta: destination.meta.clone(),
        segments: destination.segments.clone(),
        hash: record.sha256.is_some(),
        limits: file_limits(ctx),
        throttle: ctx.run.throttle.clone(),
    };
    let journal = StoreJournal {
        ctx,
        file: record.id,
        live,
    };
    let fetched = inner
        .fetcher
        .fetch_file(&task, &journal, live, &ctx.run.stop)
        .await?;
    let total = fetched.total;
    let verifying = std::time::Instant::now();
    verify(ctx, record, &destination, fetched).await?;
    tracing::debug!(file.id = %record.id, duration_ms = verifying.elapsed().as_millis() as u64, "verified");
    commit::put_in_place(commits, record.id, &destination.claim.rel, total, live).await
}

/// Checks the size and checksum of a fetched file and fsyncs it, on the blocking pool.
async fn verify(
    ctx: &Ctx<'_>,
    record: &FileRecord,
    destination: &Destination<'_>,
    fetched: Fetched,
) -> Result<(), FetchError> {
    let inner = &ctx.engine.inner;
    let stop = ctx.run.stop.clone();
    let (root, rel) = (inner.root.clone(), destination.claim.rel.clone());
    let (expected, policy) = (record.sha256.clone(), ctx.job.on_conflict);
    tokio::task::spawn_blocking(move || {
        place::verify(Finish {
            root: &root,
            rel: &rel,
            file: fetched.file,
            total: fetched.total,
            expected: expected.as_ref(),
            digest: fetched.digest,
            policy,
            stop: &stop,
        })
    })
    .await
    .map_err(|e| FetchError::Store(format!("verification was interrupted: {e}")))?
}

/// The job's limits, or the daemon's where it sets none.
fn file_limits(ctx: &Ctx<'_>) -> FileLimits {
    let settings = &ctx.engine.inner.settings;
    let limits = ctx.job.limits;
    FileLimits {
        max_connections: limits
            .max_connections
            .map_or(settings.max_connections_per_file, |n| n as usize),
        min_segment: limits.min_segment_size.unwrap_or(settings.min_segment_size),
    }
}

/// Records a file that needs nothing more.
pub(super) async fn complete(
    ctx: &Ctx<'_>,
    file: FileId,
    live: &LiveFile,
    status: FileStatus,
    total: u64,
) -> Result<(), FetchError> {
    live.set(total, Some(total));
    set_status(ctx, file, &update(status, Some(total))).await
}
