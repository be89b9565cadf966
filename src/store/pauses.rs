//! A run that pauses its own job: a full disk (`insufficient-storage`) is not the end of a
//! job, only a wait for the user to free space and resume.

use super::claims::ByteTotals;
use super::{Store, StoreError};
use crate::domain::time::now_ms;
use crate::domain::{JobError, JobId};

impl Store {
    /// Pauses a job its run still holds, recording why. Like `finish_job` it releases the
    /// lease and returns the byte totals, or `None` when the job is no longer this run's to
    /// end (a user paused or cancelled it first); unlike it, `finished_at` stays empty. The
    /// files keep their statuses and checkpoints, so a resume carries on from them.
    pub async fn pause_job(
        &self,
        id: JobId,
        owner: &str,
        error: &JobError,
    ) -> Result<Option<ByteTotals>, StoreError> {
        let totals: Option<ByteTotals> = sqlx::query_as(concat!(
            "UPDATE jobs SET status = 'paused', updated_at = MAX(?, updated_at), error_type = ?, \
             error_message = ?, error_http_status = ?, lease_owner = NULL, \
             lease_expires_at = NULL WHERE id = ? AND lease_owner = ? AND status = 'running' \
             RETURNING ",
            byte_totals!("jobs.id")
        ))
        .bind(now_ms())
        .bind(&error.kind)
        .bind(&error.message)
        .bind(error.http_status)
        .bind(id.to_string())
        .bind(owner)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::domain::paths::temp_root;
    use crate::domain::{JobChanges, JobRequest, JobStatus, Transition};
    use crate::store::{ByteTotals, FileMeta, Store};

    use super::*;

    #[tokio::test]
    async fn a_run_pauses_its_job_with_the_reason_and_a_resume_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("haul.db")).await.unwrap();
        let (_root_dir, root) = temp_root();
        let request = JobRequest {
            url: Some("http://h/a".into()),
            ..Default::default()
        };
        let new = request.parse(&root, 10).unwrap();
        store.insert_job(&new, 10).await.unwrap();
        let id = store
            .claim_next("owner", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let meta = FileMeta {
            total: Some(100),
            ..Default::default()
        };
        let mut segment = crate::domain::Segment::whole(Some(100));
        segment.written = 40;
        store
            .reset_file(id, "owner", new.files[0].id, &meta, &[segment])
            .await
            .unwrap();
        let error = JobError {
            kind: "insufficient-storage".into(),
            message: "no room".into(),
            http_status: None,
        };
        // Another run's lease changes nothing.
        assert_eq!(store.pause_job(id, "other", &error).await.unwrap(), None);
        let totals = store.pause_job(id, "owner", &error).await.unwrap();
        assert_eq!(
            totals,
            Some(ByteTotals {
                bytes_done: 40,
                bytes_total: Some(100)
            })
        );
        let job = store.get_job(id).await.unwrap();
        assert_eq!(
            (job.status, job.error.as_ref(), job.finished_at),
            (JobStatus::Paused, Some(&error), None)
        );
        // A paused job is not this run's any more.
        assert_eq!(store.pause_job(id, "owner", &error).await.unwrap(), None);
        let (_, job) = store
            .transition(id, Transition::Resume, JobChanges::default())
            .await
            .unwrap();
        let job = job.unwrap();
        assert_eq!((job.status, job.error), (JobStatus::Queued, None));
        assert_eq!(job.files[0].bytes_done, 40, "the checkpoint stays");
    }
}
