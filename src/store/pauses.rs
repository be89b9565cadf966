//! A run that pauses its own job: a full disk (`insufficient-storage`) is not the end of a
//! job, only a wait for the user to free space and resume.

use super::claims::ByteTotals;
use super::rows::to_u64;
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
        let totals: Option<(i64, Option<i64>)> = sqlx::query_as(concat!(
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
        totals
            .map(|(done, total)| {
                Ok(ByteTotals {
                    bytes_done: to_u64("bytes_done", done)?,
                    bytes_total: total.map(|t| to_u64("bytes_total", t)).transpose()?,
                })
            })
            .transpose()
    }
}
