//! A worker runs one claimed job: it renews the lease (heartbeat), fetches each file, keeps
//! live progress, and records the outcome. Whatever happens — success, failure, cancel, pause,
//! shutdown, a lost lease, a panic — it leaves the job in a state the store can resume from.

mod destination;
mod files;
mod journal;
mod naming;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::Engine;
use super::patience::patiently;
use super::registry::Run;
use crate::domain::{FileRecord, JobError, JobId, JobStatus};
use crate::events::{EventKind, JobEvent};
use crate::fetch::LiveFile;
use crate::store::{ByteTotals, LoadedRun, StoreError};

pub(super) use files::store_error;

/// What every step of a run needs: the engine, the job, and the run with its lease.
pub(super) struct Ctx<'a> {
    pub engine: &'a Engine,
    pub job: &'a crate::domain::Job,
    pub run: &'a Run,
}

impl Ctx<'_> {
    fn store(&self) -> &crate::store::Store {
        &self.engine.inner.store
    }

    fn lease(&self) -> &str {
        &self.run.lease
    }
}

/// Why the file loop ended early.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    /// Cancel, pause or shutdown fired the job's token.
    Stopped,
    /// Another owner holds the job now: touch nothing.
    LeaseLost,
    /// A file found its disk too full (`insufficient-storage`): the job pauses until resumed.
    NoSpace(JobError),
}

/// Entry point spawned by the dispatcher with the job it claimed and loaded. Holds the
/// concurrency permit until the job ends.
pub async fn run(
    engine: Engine,
    loaded: LoadedRun,
    run: Arc<Run>,
    previous: Option<Arc<Run>>,
    permit: OwnedSemaphorePermit,
) {
    let id = loaded.job.id;
    let span = tracing::info_span!("job", job.id = %id);
    async {
        let mut loaded = Some(loaded);
        if let Some(previous) = previous {
            // A resume can be claimed while the last run is still checkpointing: what was
            // loaded with the claim may miss its last checkpoint, so load again after it.
            tokio::select! {
                () = previous.done.cancelled() => {}
                () = run.stop.cancelled() => {}
            }
            loaded = None;
        }
        let started = Instant::now();
        let outcome = AssertUnwindSafe(run_job(&engine, id, loaded, &run))
            .catch_unwind()
            .await;
        if outcome.is_err() {
            tracing::error!("worker for job {id} panicked");
            let error = JobError {
                kind: "internal".into(),
                message: "the worker failed unexpectedly".into(),
                http_status: None,
            };
            finish(&engine, id, &run, JobStatus::Failed, Some(&error)).await;
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(duration_ms = ms, "worker for job {id} ended after {ms} ms");
    }
    .instrument(span)
    .await;
    engine.inner.registry.finish(id, &run);
    drop(permit);
    engine.wake();
}

async fn run_job(engine: &Engine, id: JobId, loaded: Option<LoadedRun>, run: &Run) {
    let store = &engine.inner.store;
    let loaded = match loaded {
        Some(loaded) => Ok(loaded),
        None => store.load_run(id).await,
    };
    let (job, files, secrets) = match loaded {
        Ok(loaded) => (
            loaded.job,
            loaded.files,
            (loaded.headers, loaded.access_token, loaded.proxy),
        ),
        Err(err) => {
            tracing::warn!(error.message = %err, "cannot load job {id}; releasing it");
            if let Err(err) = store.release(id, &run.lease).await {
                tracing::warn!(error.message = %err, "cannot release job {id}; its lease will expire");
            }
            return;
        }
    };
    run.throttle.set_rate(job.limits.max_bytes_per_second);
    engine
        .inner
        .events
        .publish(JobEvent::about(EventKind::Started, &job));
    let lives: Vec<Arc<LiveFile>> = files.iter().map(|f| track(run, &f.record)).collect();
    let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
    let lost = AtomicBool::new(false);
    let ctx = Ctx {
        engine,
        job: &job,
        run,
    };
    let result = tokio::select! {
        result = files::run_files(&ctx, files, &lives, &secrets) => result,
        () = heartbeat(engine, id, run, &lost) => Err(Stop::LeaseLost),
        () = report_progress(engine, id, run) => Err(Stop::Stopped),
    };
    match result {
        // Another claim owns the job now: nothing here may touch it any more.
        _ if lost.load(Ordering::Relaxed) => {
            tracing::warn!("lost the lease on job {id}; another run owns it");
        }
        Err(Stop::LeaseLost) => tracing::warn!("lost the lease on job {id}; another run owns it"),
        Ok(failed) => complete(engine, id, run, &failed, count).await,
        Err(Stop::Stopped) => stopped(engine, id, run).await,
        Err(Stop::NoSpace(error)) => out_of_space(engine, id, run, &error).await,
    }
}

/// Pauses the job for want of disk space, keeping its partial files and checkpoints; a resume
/// carries on from them. A user's pause or cancel that came first wins.
async fn out_of_space(engine: &Engine, id: JobId, run: &Run, error: &JobError) {
    let inner = &engine.inner;
    match inner.store.pause_job(id, &run.lease, error).await {
        Ok(Some(totals)) => announce_end(engine, id, JobStatus::Paused, totals, Some(error)),
        Ok(None) => stopped(engine, id, run).await,
        Err(err) => tracing::error!(
            error.message = %err,
            error.cause_chain = ?err,
            "cannot pause job {id} for want of disk space"
        ),
    }
}

/// Live counters for a file, seeded with what the store knows.
fn track(run: &Run, record: &FileRecord) -> Arc<LiveFile> {
    let live = Arc::new(LiveFile::default());
    live.set(record.bytes_done, record.bytes_total);
    run.live.track(record.id, live.clone());
    live
}

/// Renews the lease every third of its length. A job a user paused or cancelled (perhaps
/// through another daemon) is stopped; the work then ends on its own, checkpointing. When the
/// lease is lost outright, it flags that and stops the work too: the flag keeps the ending
/// from touching the store, and the lease token keeps every last write from landing. Never
/// returns.
async fn heartbeat(engine: &Engine, id: JobId, run: &Run, lost: &AtomicBool) {
    let inner = &engine.inner;
    let mut tick = tokio::time::interval(inner.settings.lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match inner
            .store
            .renew_lease(id, &run.lease, inner.settings.lease)
            .await
        {
            Ok(JobStatus::Running) => {}
            Ok(_) => run.stop.cancel(),
            Err(StoreError::LeaseLost(_)) => {
                lost.store(true, Ordering::Relaxed);
                run.stop.cancel();
                std::future::pending::<()>().await;
            }
            Err(err) => tracing::warn!(error.message = %err, "cannot renew the lease; will retry"),
        }
    }
}

/// Publishes `job.progress` a few times a second while bytes arrive, and keeps the smoothed
/// rate. Never returns.
async fn report_progress(engine: &Engine, id: JobId, run: &Run) {
    let mut tick = tokio::time::interval(engine.inner.settings.progress_every);
    let (mut last_done, mut last_at, mut rate) = (run.live.totals().0, Instant::now(), 0f64);
    loop {
        tick.tick().await;
        let (done, total) = run.live.totals();
        let elapsed = last_at.elapsed().as_secs_f64().max(1e-3);
        let instant = done.saturating_sub(last_done) as f64 / elapsed;
        // Exponential smoothing: steady enough to read, quick enough to follow a change.
        rate = 0.6 * rate + 0.4 * instant;
        run.live.set_rate(rate as u64);
        if done != last_done {
            let mut event = JobEvent::progress(id, done, total);
            event.bytes_per_second = Some(rate as u64);
            engine.inner.events.publish(event);
        }
        (last_done, last_at) = (done, Instant::now());
    }
}

/// Ends the job after its file loop: completed, or failed with a summary of failed files.
async fn complete(
    engine: &Engine,
    id: JobId,
    run: &Run,
    failed: &[(String, JobError)],
    files: u32,
) {
    let error = match failed {
        [] => None,
        [(_, only)] if files == 1 => Some(only.clone()),
        [..] => Some(JobError {
            kind: "files-failed".into(),
            message: failure_summary(failed, files),
            http_status: None,
        }),
    };
    if let (None, Some(totals)) = (&error, run.finished.get()) {
        // The committer ended the job with its last file.
        return announce_end(engine, id, JobStatus::Completed, *totals, None);
    }
    let status = if error.is_some() {
        JobStatus::Failed
    } else {
        JobStatus::Completed
    };
    finish(engine, id, run, status, error.as_ref()).await;
}

/// Most failed files named in a job's error; the files' own errors name them all.
const NAMED_FAILURES: usize = 5;

/// `3 of 1000 files failed: a.bin: HTTP 404, b.bin: ..., c.bin: ...` (and how many more).
fn failure_summary(failed: &[(String, JobError)], files: u32) -> String {
    let named: Vec<String> = failed
        .iter()
        .take(NAMED_FAILURES)
        .map(|(path, error)| format!("{path}: {}", error.message))
        .collect();
    let more = failed.len().saturating_sub(NAMED_FAILURES);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} of {files} files failed: {}{tail}",
        failed.len(),
        named.join("; ")
    )
}

/// Records the final status if the job is still ours; otherwise honours the user's decision.
async fn finish(
    engine: &Engine,
    id: JobId,
    run: &Run,
    status: JobStatus,
    error: Option<&JobError>,
) {
    let inner = &engine.inner;
    let ended = patiently(&inner.shutdown, "the end of a job", || {
        inner.store.finish_job(id, &run.lease, status, error)
    });
    match ended.await {
        Ok(Some(totals)) => announce_end(engine, id, status, totals, error),
        // A user paused or cancelled it first: their decision wins.
        Ok(None) => stopped(engine, id, run).await,
        Err(err) => tracing::error!(
            error.message = %err,
            error.cause_chain = ?err,
            "cannot record the end of job {id}"
        ),
    }
}

/// Logs and publishes the end of a job that was recorded.
fn announce_end(
    engine: &Engine,
    id: JobId,
    status: JobStatus,
    totals: ByteTotals,
    error: Option<&JobError>,
) {
    match error {
        None => tracing::info!("job {id} {status}"),
        Some(e) => tracing::warn!(error.message = %e.message, "job {id} {status}"),
    }
    engine.inner.events.publish(JobEvent::ended(
        id,
        status,
        totals.bytes_done,
        totals.bytes_total,
        error.cloned(),
    ));
}

/// The job's token fired. What happens next depends on why, and the store says why.
async fn stopped(engine: &Engine, id: JobId, run: &Run) {
    let inner = &engine.inner;
    let status = inner.store.job_status(id).await;
    if matches!(status, Ok(JobStatus::Cancelled)) {
        engine.discard_partials(id).await;
    }
    // Running (shutdown) goes back to the queue; paused and cancelled keep their status.
    // While the store is unavailable this waits for it (unless the daemon is stopping), so
    // the job is queued again at once rather than when its lease expires.
    let released = patiently(&inner.shutdown, "the release of a job", || {
        inner.store.release(id, &run.lease)
    });
    if let Err(err) = released.await {
        tracing::warn!(error.message = %err, "cannot release job {id}; its lease will expire");
    }
    match status {
        Ok(JobStatus::Running) => tracing::info!("job {id} released for a later run"),
        Ok(status) => tracing::info!("job {id} stopped: {status}"),
        Err(err) => tracing::warn!(error.message = %err, "job {id} stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_names_its_first_failed_files_and_counts_the_rest() {
        let failed: Vec<(String, JobError)> = (1..=7)
            .map(|i| {
                let error = JobError {
                    kind: "http".into(),
                    message: format!("HTTP 40{i}"),
                    http_status: None,
                };
                (format!("f{i}.bin"), error)
            })
            .collect();
        assert_eq!(
            failure_summary(&failed[..2], 10),
            "2 of 10 files failed: f1.bin: HTTP 401; f2.bin: HTTP 402"
        );
        let all = failure_summary(&failed, 10);
        assert!(
            all.starts_with("7 of 10 files failed: f1.bin: HTTP 401;"),
            "{all}"
        );
        assert!(
            all.contains("f5.bin: HTTP 405; and 2 more") && !all.contains("f6"),
            "{all}"
        );
    }
}
