//! Waiting out an unavailable store. A verified file whose completion cannot be recorded, or a
//! job whose end cannot be, is finished work: failing it because the disk under the database
//! filled up for a minute, or a backup held its lock, would throw that work away. So these
//! writes are tried again, with backoff, until the store takes them or the daemon stops
//! (a later run then recognises what was done: a file in place is found, a job left running
//! is requeued).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, StoreFault};

/// The first pause after a failed write; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Runs `write` until it succeeds, fails for another reason than an unavailable store, or
/// `stop` fires (then the last error is returned). A damaged database (`SQLITE_CORRUPT`,
/// `SQLITE_NOTADB`) is not waited for: its error is logged and returned at once.
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
            // A damaged file does not mend while we wait: the caller's error path (fail the
            // file, release the job) runs now instead of the job holding its slot and its
            // memory until shutdown.
            Err(err) if err.fault() == Some(StoreFault::Corrupt) => {
                tracing::error!(
                    store.fault = StoreFault::Corrupt.as_str(),
                    error.message = %err,
                    error.cause_chain = ?err,
                    "cannot record {what}: the database file is damaged; not waiting for it"
                );
                return Err(err);
            }
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

    /// The error SQLite gives for a file that is not a database (`SQLITE_NOTADB`).
    async fn corrupt() -> sqlx::Error {
        use sqlx::ConnectOptions;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haul.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
        match options.connect().await {
            Err(err) => err,
            Ok(mut conn) => sqlx::query("SELECT * FROM sqlite_master")
                .fetch_all(&mut conn)
                .await
                .unwrap_err(),
        }
    }

    // Real time: the damaged file is read through SQLite's own thread.
    #[tokio::test]
    async fn a_damaged_database_is_not_waited_for() {
        let damaged = StoreError::from(corrupt().await);
        assert_eq!(damaged.fault(), Some(StoreFault::Corrupt), "{damaged:?}");
        let mut damaged = Some(damaged);
        let stop = CancellationToken::new();
        let tries = AtomicU32::new(0);
        let done: Result<(), _> = patiently(&stop, "a test write", || {
            let answer = match tries.fetch_add(1, Ordering::Relaxed) {
                // A lock first: waited for; then the damage is found.
                0 => unavailable(),
                _ => damaged.take().unwrap_or_else(unavailable),
            };
            async move { Err(answer) }
        })
        .await;
        let err = done.unwrap_err();
        assert_eq!(err.fault(), Some(StoreFault::Corrupt), "{err:?}");
        assert_eq!(tries.load(Ordering::Relaxed), 2);
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
