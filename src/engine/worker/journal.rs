//! The worker's side of the fetch layer's [`Journal`]: progress goes to the store under the
//! job's lease, retries become `job.retrying` events.

use std::time::Duration;

use crate::domain::{FileId, JobId, Segment};
use crate::engine::Engine;
use crate::events::{EventKind, JobEvent};
use crate::fetch::{FetchError, Journal, LiveFile};
use crate::store::{FileCheckpoint, FileMeta, StoreError};

/// Records one file's progress.
pub struct StoreJournal<'a> {
    pub engine: &'a Engine,
    pub job: JobId,
    pub file: FileId,
    pub live: &'a LiveFile,
}

/// A lost lease stops the fetch; any other store failure is logged and the download goes on
/// (the next checkpoint will try again, and a crash meanwhile only costs re-fetching).
fn tolerate(result: Result<(), StoreError>, what: &str) -> Result<(), FetchError> {
    match result {
        Ok(()) => Ok(()),
        Err(StoreError::LeaseLost(_)) => Err(FetchError::LeaseLost),
        Err(err) => {
            tracing::warn!(error.message = %err, error.cause_chain = ?err, "cannot save {what}");
            Ok(())
        }
    }
}

impl Journal for StoreJournal<'_> {
    async fn restart(&self, meta: &FileMeta, segments: &[Segment]) -> Result<(), FetchError> {
        let inner = &self.engine.inner;
        let saved = inner
            .store
            .reset_file(self.job, &inner.owner, self.file, meta, segments)
            .await;
        tolerate(saved, "the file's validators")
    }

    async fn save(&self, segments: &[Segment]) -> Result<(), FetchError> {
        let inner = &self.engine.inner;
        let checkpoint = FileCheckpoint {
            file_id: self.file,
            segments: segments.to_vec(),
        };
        let saved = inner
            .store
            .checkpoint(self.job, &inner.owner, &[checkpoint])
            .await;
        tolerate(saved, "a checkpoint")
    }

    fn retrying(&self, error: &FetchError, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(file.id = %self.file, error.message = %error, retry_in_ms = ms, "retrying in {ms} ms");
        let mut event = JobEvent::progress(self.job, self.live.done(), self.live.total());
        event.kind = EventKind::Retrying;
        event.error = Some(error.to_job_error());
        event.retry_in_ms = Some(ms);
        self.engine.inner.events.publish(event);
    }
}
