//! Waiting out an unavailable store. A verified file whose completion cannot be recorded, or a
//! job whose end cannot be, is finished work: failing it because the disk under the database
//! filled up for a minute, or a backup held its lock, would throw that work away. So these
//! writes are tried again, with backoff, until the store takes them or the daemon stops
//! (a later run then recognises what was done: a file in place is found, a job left running
//! is requeued).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// The first pause after a failed write; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Runs `write` until it succeeds, fails for another reason than an unavailable store, or
/// `stop` fires (then the last error is returned).
pub(super) async fn patiently<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = FIRST_DELAY;
    let mut failures = 0u32;
    loop {
        let err = match write().await {
            Err(err @ StoreError::Unavailable(_)) => err,
            done => {
                if failures > 0 {
                    tracing::info!(attempts = failures + 1, "the store took {what} again");
                }
                return done;
            }
        };
        if failures == 0 {
            let fault = err.fault().map_or("unknown", |f| f.as_str());
            tracing::warn!(
                store.fault = fault,
                error.message = %err,
                error.cause_chain = ?err,
                "cannot record {what}; retrying until the store is back"
            );
        }
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Err(err),
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unavailable() -> StoreError {
        StoreError::Unavailable("locked".into())
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_is_waited_for_and_other_errors_are_not() {
        let stop = CancellationToken::new();
        let tries = AtomicU32::new(0);
        let done = patiently(&stop, "a test write", || async {
            match tries.fetch_add(1, Ordering::Relaxed) {
                0..3 => Err(unavailable()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(done.ok(), Some(7));
        assert_eq!(tries.load(Ordering::Relaxed), 4);

        let tries = AtomicU32::new(0);
        let done: Result<(), _> = patiently(&stop, "a test write", || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err(StoreError::Corrupt("bad".into()))
        })
        .await;
        assert!(matches!(done, Err(StoreError::Corrupt(_))));
        assert_eq!(tries.load(Ordering::Relaxed), 1, "a bug is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_with_the_last_error() {
        let stop = CancellationToken::new();
        let waiting = patiently(&stop, "a test write", || async {
            Err::<(), _>(unavailable())
        });
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.cancel();
        };
        let (done, ()) = tokio::join!(waiting, stopping);
        assert!(matches!(done, Err(StoreError::Unavailable(_))));
    }
}
