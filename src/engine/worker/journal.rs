//! The worker's side of the fetch layer's [`Journal`]: progress goes to the store under the
//! run's lease, retries become `job.retrying` events.

use std::time::Duration;

use super::Ctx;
use crate::domain::{FileId, Segment};
use crate::events::{EventKind, JobEvent};
use crate::fetch::{FetchError, Journal, LiveFile};
use crate::store::{FileCheckpoint, FileMeta, StoreError};

/// Records one file's progress.
pub struct StoreJournal<'a> {
    pub ctx: &'a Ctx<'a>,
    pub file: FileId,
    pub live: &'a LiveFile,
}

impl Journal for StoreJournal<'_> {
    async fn restart(&self, meta: &FileMeta, segments: &[Segment]) -> Result<(), FetchError> {
        let saved = self
            .ctx
            .store()
            .reset_file(self.ctx.job.id, self.ctx.lease(), self.file, meta, segments)
            .await;
        // The new validator must be on record before any byte of the new version is: a
        // resume would otherwise continue those bytes with the old version's. So a failure
        // here fails the attempt (and is retried), unlike a failed checkpoint.
        saved.map_err(|err| match err {
            StoreError::LeaseLost(_) => FetchError::LeaseLost,
            err => FetchError::StoreUnavailable(err.to_string()),
        })
    }

    async fn save(&self, segments: &[Segment]) -> Result<(), FetchError> {
        let checkpoint = FileCheckpoint {
            file_id: self.file,
            segments: segments.to_vec(),
        };
        let saved = self
            .ctx
            .store()
            .checkpoint(self.ctx.job.id, self.ctx.lease(), &[checkpoint])
            .await;
        match saved {
            Ok(()) => Ok(()),
            Err(StoreError::LeaseLost(_)) => Err(FetchError::LeaseLost),
            // The next checkpoint tries again; a crash meanwhile only costs re-fetching.
            Err(err) => {
                tracing::warn!(error.message = %err, error.cause_chain = ?err, "cannot save a checkpoint");
                Ok(())
            }
        }
    }

    fn retrying(&self, error: &FetchError, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(file.id = %self.file, error.message = %error, retry_in_ms = ms, "retrying in {ms} ms");
        let mut event = JobEvent::progress(self.ctx.job.id, self.live.done(), self.live.total());
        event.kind = EventKind::Retrying;
        event.error = Some(error.to_job_error());
        event.retry_in_ms = Some(ms);
        self.ctx.engine.inner.events.publish(event);
    }
}
