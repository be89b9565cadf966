//! The file loop of a job: for each file, settle its destination, fetch it, verify it and put
//! it in place, recording each step in the store.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use reqwest::header::HeaderMap;
use tokio::sync::Notify;

use super::super::commit::{self, Owner};
use super::destination::{self, Destination};
use super::journal::StoreJournal;
use super::naming;
use super::{Ctx, Stop};
use crate::domain::{FileId, FileRecord, FileStatus, JobError};
use crate::fetch::place::{self, Finish};
use crate::fetch::{Data, FetchError, Fetched, FileLimits, FileTask, LiveFile, request_headers};
use crate::store::{FileStatusUpdate, RunFile, StoreError};

/// Files whose destinations are claimed together.
const CLAIM_BATCH: usize = 64;

/// Bytes of small files held in memory while they wait for their commit, per job.
const HANDOFF_BYTES: u64 = 2 << 20;

/// Most files waiting for their commit while others start, per job.
const HANDOFF_FILES: usize = 256;

/// Files whose bytes have all arrived and that wait for their commit. They hold no connection
/// any more, so others start meanwhile — up to a budget, since small files wait in memory.
#[derive(Default)]
struct Handoff {
    files: AtomicUsize,
    bytes: AtomicU64,
    /// Wakes the file loop when a file is handed off (a slot came free).
    handed: Notify,
}

impl Handoff {
    /// Whether another file may start, with `running` file futures under way.
    fn room(&self, running: usize, at_once: usize) -> bool {
        let waiting = self.files.load(Ordering::Relaxed);
        running.saturating_sub(waiting) < at_once
            && waiting < HANDOFF_FILES
            && self.bytes.load(Ordering::Relaxed) < HANDOFF_BYTES
    }

    /// Counts a file as waiting for its commit until the guard is dropped.
    fn hand_off(&self, bytes: u64) -> Handed<'_> {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.handed.notify_one();
        Handed(self, bytes)
    }
}

struct Handed<'a>(&'a Handoff, u64);

impl Drop for Handed<'_> {
    fn drop(&mut self) {
        self.0.files.fetch_sub(1, Ordering::Relaxed);
        self.0.bytes.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Destinations claimed ahead of the files, a batch at a time, while the downloads run: the
/// file loop waits for a claim only when the next file's is still under way. (Awaiting each
/// batch in the loop stopped every running download — their responses unread, no new
/// request — for the claim's two hops to the blocking pool and one to the store.)
struct Ahead<'b> {
    batch: &'b destination::Batch<'b>,
    /// Files a batch has tried to claim (or is claiming); the rest of them take the one-file
    /// path.
    attempted: HashSet<FileId>,
    /// The files of the claim under way.
    in_flight: HashSet<FileId>,
    claim: Option<BoxFuture<'b, Result<(), FetchError>>>,
}

impl<'b> Ahead<'b> {
    fn new(batch: &'b destination::Batch<'b>) -> Self {
        Self {
            batch,
            attempted: HashSet::new(),
            in_flight: HashSet::new(),
            claim: None,
        }
    }

    fn claiming(&self) -> bool {
        self.claim.is_some()
    }

    /// Whether `record` waits for a batch's claim before it may start.
    fn waits(&self, record: &FileRecord) -> bool {
        destination::batchable(record)
            && !self.batch.has(record.id)
            && (self.in_flight.contains(&record.id) || !self.attempted.contains(&record.id))
    }

    /// Claims the next batch of `pending` (in order) that needs one, unless a claim is under
    /// way or a batch's worth is claimed already and the first file does not wait for one.
    fn start<'r>(&mut self, mut pending: impl Iterator<Item = &'r FileRecord>) {
        if self.claim.is_some() {
            return;
        }
        let mut pending = pending.by_ref().peekable();
        let first_waits = pending.peek().is_some_and(|r| self.waits(r));
        if !first_waits && self.batch.waiting() >= CLAIM_BATCH {
            return;
        }
        let wanted: Vec<(FileId, String)> = pending
            .filter(|r| destination::batchable(r) && !self.attempted.contains(&r.id))
            .take(CLAIM_BATCH)
            .map(|r| (r.id, r.path.clone()))
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.in_flight = wanted.iter().map(|(id, _)| *id).collect();
        self.attempted.extend(self.in_flight.iter().copied());
        self.claim = Some(self.batch.claim(wanted).boxed());
    }

    /// Waits for the claim under way (at once when there is none).
    async fn finished(&mut self) {
        if let Some(claim) = &mut self.claim {
            // A batch that fails leaves its files to the one-file path.
            let _ = claim.await;
        }
        self.claim = None;
        self.in_flight.clear();
    }
}

/// Runs every unfinished file, several at a time (as many as the job's connection limit).
/// Returns the files that failed for good (path and error), or why the loop stopped early.
pub(super) async fn run_files(
    ctx: &Ctx<'_>,
    files: Vec<RunFile>,
    lives: &[Arc<LiveFile>],
    secrets: &(Vec<(String, String)>, Option<String>, Option<String>),
) -> Result<Vec<(String, JobError)>, Stop> {
    // Once per job: the job's headers, and the client of its proxy (the shared one without).
    let clients = ctx.engine.inner.fetcher.clients();
    let headers = request_headers(&secrets.0, secrets.1.as_deref())
        .and_then(|headers| Ok((headers, clients.for_job(secrets.2.as_deref())?)));
    let headers = &headers;
    let at_once = file_limits(ctx).max_connections.max(1);
    let owner = Owner {
        job: ctx.job.id,
        lease: Arc::from(ctx.lease()),
        policy: ctx.job.on_conflict,
        stop: ctx.run.stop.clone(),
        // A job's only file ends the job with it, in the committer's round trip.
        finish: (files.len() == 1).then(|| ctx.run.finished.clone()),
    };
    let owner = &owner;
    let batch = destination::Batch::new(ctx);
    let batch = &batch;
    let handoff = Handoff::default();
    let handoff = &handoff;
    let fetching = async move {
        let mut pending: VecDeque<_> = files
            .into_iter()
            .zip(lives)
            .filter(|(f, _)| !f.record.status.is_done())
            .collect();
        let mut running = FuturesUnordered::new();
        let mut outcomes = Vec::new();
        let mut ahead = Ahead::new(batch);
        loop {
            ahead.start(pending.iter().map(|(f, _)| &f.record));
            while handoff.room(running.len(), at_once) {
                let Some((file, _)) = pending.front() else {
                    break;
                };
                if ahead.waits(&file.record) {
                    break;
                }
                let Some((file, live)) = pending.pop_front() else {
                    break;
                };
                let claimed = batch.take(file.record.id);
                running.push(fetch_tracked(
                    ctx,
                    file,
                    live,
                    headers,
                    (owner, handoff),
                    claimed,
                ));
            }
            if running.is_empty() && !ahead.claiming() && pending.is_empty() {
                break;
            }
            tokio::select! {
                Some(outcome) = running.next(), if !running.is_empty() => {
                    // A full disk pauses the job: start nothing more, let the rest end.
                    if matches!(outcome.2, Err(FetchError::InsufficientStorage { .. })) {
                        pending.clear();
                    }
                    outcomes.push(outcome);
                },
                () = ahead.finished(), if ahead.claiming() => {}
                () = handoff.handed.notified() => {}
            }
        }
        outcomes
    };
    record_outcomes(ctx, fetching.await).await
}

/// Records the files that failed for good; a lost lease or a stop wins over failures, and a
/// full disk pauses the job (its files keep their state, to resume).
async fn record_outcomes(
    ctx: &Ctx<'_>,
    outcomes: Vec<(String, FileId, Result<(), FetchError>)>,
) -> Result<Vec<(String, JobError)>, Stop> {
    let mut failed = Vec::new();
    let mut stop = None;
    for (path, id, outcome) in outcomes {
        match outcome {
            Ok(()) => {}
            Err(FetchError::LeaseLost) => stop = Some(Stop::LeaseLost),
            // An unavailable store is not the file's fault: the job goes back to the queue
            // (or, if even that cannot be written, its lease expires) and resumes from its
            // checkpoints once the store is back.
            Err(FetchError::Stopped | FetchError::StoreUnavailable(_)) => {
                if !matches!(stop, Some(Stop::LeaseLost)) {
                    stop = Some(Stop::Stopped);
                }
            }
            Err(err @ FetchError::InsufficientStorage { .. }) => {
                tracing::warn!(file.id = %id, error.message = %err, "file {path} does not fit");
                stop = stop.or(Some(Stop::NoSpace(err.to_job_error())));
            }
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
    headers: &Result<(HeaderMap, crate::fetch::HttpClient), FetchError>,
    commits: (&Owner, &Handoff),
    claimed: Option<String>,
) -> (String, FileId, Result<(), FetchError>) {
    let (path, id) = (file.record.path.clone(), file.record.id);
    let outcome = match headers {
        Ok(headers) => fetch_one(ctx, file, live, headers, &commits, claimed).await,
        Err(err) => Err(FetchError::InvalidResponse {
            url: String::new(),
            reason: err.to_string(),
        }),
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
pub(in crate::engine) fn store_error(err: StoreError) -> FetchError {
    match err {
        StoreError::LeaseLost(_) => FetchError::LeaseLost,
        err @ StoreError::Unavailable(_) => FetchError::StoreUnavailable(err.to_string()),
        err => FetchError::Store(err.to_string()),
    }
}

async fn fetch_one(
    ctx: &Ctx<'_>,
    file: RunFile,
    live: &Arc<LiveFile>,
    (headers, client): &(HeaderMap, crate::fetch::HttpClient),
    (owner, handoff): &(&Owner, &Handoff),
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
    live.set_phase(FileStatus::Downloading);
    let inner = &ctx.engine.inner;
    let url =
        url::Url::parse(&record.url).map_err(|e| FetchError::Store(format!("stored URL: {e}")))?;
    let mirrors = record
        .mirrors
        .iter()
        .map(|m| url::Url::parse(m))
        .collect::<Result<_, _>>()
        .map_err(|e| FetchError::Store(format!("stored mirror URL: {e}")))?;
    let mut task = FileTask {
        url,
        mirrors,
        headers: file_headers(headers, &record.headers)?,
        client: client.clone(),
        root: inner.root.clone(),
        rel: destination.claim.rel.clone(),
        meta: destination.meta.clone(),
        segments: destination.segments.clone(),
        hash: record.sha256.is_some(),
        limits: file_limits(ctx),
        throttle: ctx.run.throttle.clone(),
    };
    let Some((destination, opening)) =
        naming::open(ctx, record, destination, &mut task, live).await?
    else {
        return Ok(());
    };
    let journal = StoreJournal {
        ctx,
        file: record.id,
        live,
    };
    let started = std::time::Instant::now();
    let fetched = inner
        .fetcher
        .fetch_file(&task, opening, &journal, live, &ctx.run.stop)
        .await?;
    ctx.engine.note_download(fetched.total, started.elapsed());
    live.set_phase(FileStatus::Verifying);
    let fetched = verify(ctx, record, &destination, fetched).await?;
    let _handed = handoff.hand_off(fetched.data.in_memory());
    let rel = &destination.claim.rel;
    commit::put_in_place(ctx.engine, (*owner).clone(), record.id, rel, fetched, live).await
}

/// Checks the size and checksum of a fetched file: in place for a file in memory, on the
/// blocking pool for one in its `.part`.
async fn verify(
    ctx: &Ctx<'_>,
    record: &FileRecord,
    destination: &Destination<'_>,
    fetched: Fetched,
) -> Result<Fetched, FetchError> {
    let inner = &ctx.engine.inner;
    let stop = ctx.run.stop.clone();
    let (root, rel) = (inner.root.clone(), destination.claim.rel.clone());
    let (expected, policy) = (record.sha256.clone(), ctx.job.on_conflict);
    let check = move |fetched: Fetched| {
        place::verify(Finish {
            root: &root,
            rel: &rel,
            data: &fetched.data,
            total: fetched.total,
            expected: expected.as_ref(),
            digest: fetched.digest,
            policy,
            stop: &stop,
        })
        .map(|()| fetched)
    };
    if matches!(fetched.data, Data::Memory(_)) {
        return check(fetched);
    }
    tokio::task::spawn_blocking(move || check(fetched))
        .await
        .map_err(|e| FetchError::Store(format!("verification was interrupted: {e}")))?
}

/// The job's headers with the file's own over them (a name in both: the file's value).
fn file_headers(job: &HeaderMap, own: &[(String, String)]) -> Result<HeaderMap, FetchError> {
    let mut headers = job.clone();
    if !own.is_empty() {
        for (name, value) in request_headers(own, None)? {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
    }
    Ok(headers)
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
