//! The dispatcher loop: claim queued jobs while there is capacity, sleep until woken.
//!
//! It wakes at once on submit, resume and worker exit (a `Notify` registered before the store
//! is checked, so no wake-up is lost), and on a periodic sweep that requeues jobs whose lease
//! expired. It never holds a transaction or lock across a download.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Engine, worker};

/// Pause after the store fails to answer a claim, so a sick database is not hammered.
const CLAIM_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs until the shutdown token fires.
pub async fn run(engine: Engine) {
    let inner = &engine.inner;
    let slots = Arc::new(Semaphore::new(inner.settings.max_concurrent_jobs));
    let mut sweep = tokio::time::interval(inner.settings.lease / 2);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = inner.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let healthy = claim_while_capacity(&engine, &slots).await;
        let pause = async {
            if !healthy {
                tokio::time::sleep(CLAIM_ERROR_BACKOFF).await;
            }
        };
        tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => break,
            () = &mut notified, if healthy => {}
            () = pause, if !healthy => {}
            _ = sweep.tick() => requeue_expired(&engine).await,
        }
    }
    tracing::debug!("dispatcher stopped");
}

/// Claims and starts jobs until the slots or the queue run out. False if the store failed.
async fn claim_while_capacity(engine: &Engine, slots: &Arc<Semaphore>) -> bool {
    let inner = &engine.inner;
    while !inner.shutdown.is_cancelled() {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            return true;
        };
        let gate = inner.claim_gate.lock().await;
        // One lease token per claim (daemon and claim), not per daemon: see `Run::lease`.
        let lease = format!("{}/{}", inner.owner, uuid::Uuid::new_v4());
        let claimed = inner.store.claim_run(&lease, inner.settings.lease).await;
        let loaded = match claimed {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return true,
            Err(err) => {
                tracing::warn!(error.message = %err, error.cause_chain = ?err, "cannot claim a job");
                return false;
            }
        };
        let id = loaded.job.id;
        let (run, previous) = inner
            .registry
            .start(id, lease, inner.shutdown.child_token());
        drop(gate);
        tracing::info!(job.id = %id, "claimed job {id}");
        inner
            .tracker
            .spawn(worker::run(engine.clone(), loaded, run, previous, permit));
    }
    true
}

async fn requeue_expired(engine: &Engine) {
    match engine.inner.store.requeue_expired().await {
        Ok(ids) if ids.is_empty() => {}
        Ok(ids) => {
            tracing::warn!(
                jobs = ids.len(),
                "requeued {} jobs whose lease expired",
                ids.len()
            );
        }
        Err(err) => tracing::warn!(error.message = %err, "cannot requeue expired jobs"),
    }
}
