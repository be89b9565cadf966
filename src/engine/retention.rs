//! History retention: a background task forgets finished jobs (completed, failed, cancelled)
//! once they finished longer ago than the retention, at start and then every few minutes,
//! removing the partial files they leave behind as `POST /v1/jobs/prune` does.
//!
//! It deletes a chunk of jobs per transaction and yields between chunks, so a large history
//! never holds the store's write lock for long.

use std::time::Duration;

use super::Engine;

/// Jobs forgotten per transaction.
const CHUNK: u32 = 100;

/// Runs until the shutdown token fires: a sweep at once, then one every `every`.
pub(super) async fn run(engine: Engine, retention: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = engine.inner.shutdown.cancelled() => break,
            _ = tick.tick() => sweep(&engine, retention).await,
        }
    }
    tracing::debug!("history retention stopped");
}

/// Forgets every job that finished more than `retention` ago, a chunk at a time.
async fn sweep(engine: &Engine, retention: Duration) {
    let Ok(age) = chrono::Duration::from_std(retention) else {
        return;
    };
    let cutoff = chrono::Utc::now() - age;
    let mut forgotten = 0;
    while !engine.inner.shutdown.is_cancelled() {
        match engine
            .inner
            .store
            .prune_finished_before(cutoff, CHUNK)
            .await
        {
            Ok((count, partials)) => {
                engine.discard_paths(partials).await;
                forgotten += count;
                if count < u64::from(CHUNK) {
                    break;
                }
                // Let the workers' checkpoints and the API have the write lock in between.
                tokio::task::yield_now().await;
            }
            Err(err) => {
                tracing::warn!(
                    error.message = %err,
                    error.cause_chain = ?err,
                    "cannot forget old finished jobs; trying again at the next sweep"
                );
                break;
            }
        }
    }
    if forgotten > 0 {
        tracing::info!(
            jobs = forgotten,
            "forgot {forgotten} jobs that finished more than {} s ago",
            retention.as_secs()
        );
    }
}
