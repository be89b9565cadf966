//! Claims: which daemon runs which job. A claim is a lease (owner + expiry) renewed by a
//! heartbeat, never a lock held for the length of a download.
//!
//! Each of these writes is one statement, so it runs as its own transaction: SQLite starts a
//! writing statement's transaction with the write lock taken (as `BEGIN IMMEDIATE` does), so
//! the busy timeout applies and no snapshot can go stale between read and write. An explicit
//! transaction would only add two round trips to the connection's thread.

use std::time::Duration;

use super::rows::{parse_job_id, parse_status};
use super::{Store, StoreError};
use crate::domain::time::now_ms;
use crate::domain::{JobError, JobId, JobStatus};

/// A job's bytes done and total size (unknown while a file's size is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteTotals {
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
}

/// From the `bytes_done` and `bytes_total` columns of [`byte_totals!`].
impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for ByteTotals {
    fn from_row(row: &'r sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let decode = |e: std::num::TryFromIntError| sqlx::Error::Decode(Box::new(e));
        let done: i64 = row.try_get("bytes_done")?;
        let total: Option<i64> = row.try_get("bytes_total")?;
        Ok(Self {
            bytes_done: u64::try_from(done).map_err(decode)?,
            bytes_total: total.map(u64::try_from).transpose().map_err(decode)?,
        })
    }
}

/// Marks the next queued job (lowest priority number, then oldest) running under a lease and
/// returns its id. Binds the owner, the lease's expiry and the time twice.
macro_rules! claim_next_sql {
    () => {
        "UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires_at = ?, \
         attempt = attempt + 1, started_at = COALESCE(started_at, MAX(?, created_at)), \
         updated_at = MAX(?, updated_at) \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1) \
         RETURNING id"
    };
}

pub(super) fn expiry(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Claims the next queued job (lowest priority number, then oldest) in one statement and
    /// marks it running under `owner`'s lease. The engine claims with [`Store::claim_run`],
    /// which loads the job in the same call.
    #[cfg(test)]
    pub async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<JobId>, StoreError> {
        // `now` is taken before the statement waits for the write lock, so a job committed
        // meanwhile may be younger: its times never run backwards (here, and in the single
        // statements below).
        let now = now_ms();
        let id: Option<String> = sqlx::query_scalar(claim_next_sql!())
            .bind(owner)
            .bind(expiry(lease))
            .bind(now)
            .bind(now)
            .fetch_optional(&mut *self.writer().await?)
            .await?;
        id.as_deref().map(parse_job_id).transpose()
    }

    /// Extends the lease and returns the job's status, which a user may have changed to
    /// paused or cancelled meanwhile. Fails with `LeaseLost` when `owner` no longer holds it.
    pub async fn renew_lease(
        &self,
        id: JobId,
        owner: &str,
        lease: Duration,
    ) -> Result<JobStatus, StoreError> {
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? RETURNING status",
        )
        .bind(expiry(lease))
        .bind(id.to_string())
        .bind(owner)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        parse_status(&status.ok_or(StoreError::LeaseLost(id))?)
    }

    /// Gives the job up: a running job goes back to the queue (shutdown); a job a user paused
    /// or cancelled keeps that status. Either way the lease is cleared.
    pub async fn release(&self, id: JobId, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET status = CASE status WHEN 'running' THEN 'queued' ELSE status END, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = MAX(?, updated_at) \
             WHERE id = ? AND lease_owner = ?",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .bind(owner)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Ends a running job with a final status, if `owner` still holds it, and returns its
    /// byte totals then (for the event that announces it). `None` when a user changed the
    /// status first (their decision wins) or the lease was lost.
    pub async fn finish_job(
        &self,
        id: JobId,
        owner: &str,
        status: JobStatus,
        error: Option<&JobError>,
    ) -> Result<Option<ByteTotals>, StoreError> {
        let now = now_ms();
        let totals: Option<ByteTotals> = sqlx::query_as(concat!(
            "UPDATE jobs SET status = ?, finished_at = MAX(?, started_at), \
             updated_at = MAX(?, updated_at), error_type = ?, \
             error_message = ?, error_http_status = ?, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING ",
            byte_totals!("jobs.id")
        ))
        .bind(status.as_str())
        .bind(now)
        .bind(now)
        .bind(error.map(|e| e.kind.clone()))
        .bind(error.map(|e| e.message.clone()))
        .bind(error.and_then(|e| e.http_status))
        .bind(id.to_string())
        .bind(owner)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        Ok(totals)
    }

    /// Puts back jobs whose lease expired (their worker or daemon died). Returns their ids.
    pub async fn requeue_expired(&self) -> Result<Vec<JobId>, StoreError> {
        let now = now_ms();
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ? WHERE status = 'running' AND lease_expires_at < ? RETURNING id",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&mut *self.writer().await?)
        .await?;
        ids.iter().map(|id| parse_job_id(id)).collect()
    }

    /// Puts back every running job. Only for start-up, when this daemon holds the data
    /// directory's lock and so no other process can be running them.
    pub async fn requeue_all_running(&self) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ? WHERE status = 'running' RETURNING id",
        )
        .bind(now_ms())
        .fetch_all(&mut *self.writer().await?)
        .await?;
        ids.iter().map(|id| parse_job_id(id)).collect()
    }

    /// The current status of a job.
    pub async fn job_status(&self, id: JobId) -> Result<JobStatus, StoreError> {
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        parse_status(&status)
    }
}
