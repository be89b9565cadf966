//! Webhooks: a job's callback URL, and the delivery log.

use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::rows::{parse_job_id, to_i64, to_u64};
use super::{Store, StoreError, begin_write};
use crate::domain::time::from_ms;
use crate::domain::{Delivery, DeliveryStatus, DeliveryTarget, JobId};

/// Rows per insert statement (13 parameters each, far below SQLite's limit).
const RECORD_CHUNK: usize = 500;

#[derive(FromRow)]
struct DeliveryRow {
    id: String,
    job_id: String,
    event_seq: i64,
    event_type: String,
    url: String,
    target: String,
    status: String,
    attempts: i64,
    http_status: Option<i64>,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
    delivered_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("{what}: {value}"));
        Ok(Delivery {
            id: row
                .id
                .parse()
                .map_err(|_| corrupt("delivery id", &row.id))?,
            job_id: parse_job_id(&row.job_id)?,
            event_seq: to_u64("event_seq", row.event_seq)?,
            event_type: row.event_type,
            url: row.url,
            target: DeliveryTarget::parse(&row.target)
                .ok_or_else(|| corrupt("delivery target", &row.target))?,
            status: DeliveryStatus::parse(&row.status)
                .ok_or_else(|| corrupt("delivery status", &row.status))?,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            http_status: row.http_status.and_then(|s| u16::try_from(s).ok()),
            error: row.error,
            created_at: from_ms(row.created_at),
            updated_at: from_ms(row.updated_at),
            delivered_at: row.delivered_at.map(from_ms),
        })
    }
}

impl Store {
    /// The job's `callback_url`, if it has one. `NotFound` when the job does not exist.
    pub async fn callback_url(&self, id: JobId) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT callback_url FROM jobs WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(url,)| url).ok_or(StoreError::NotFound(id))
    }

    /// Whether any job has a `callback_url` (so the webhooks need to look callbacks up).
    pub async fn any_callback_url(&self) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE callback_url IS NOT NULL)")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Records deliveries as they stand now, inserting new ones and replacing the state of
    /// known ones, in one transaction. Deliveries of jobs that no longer exist (forgotten
    /// meanwhile) are skipped.
    pub async fn record_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer().await?;
        let mut tx = begin_write(&mut writer).await?;
        for chunk in deliveries.chunks(RECORD_CHUNK) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO webhook_deliveries (id, job_id, event_seq, event_type, url, target, \
                 status, attempts, http_status, error, created_at, updated_at, delivered_at) \
                 SELECT * FROM (",
            );
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(d.id.to_string())
                    .push_bind(d.job_id.to_string())
                    .push_bind(to_i64(d.event_seq))
                    .push_bind(d.event_type.clone())
                    .push_bind(d.url.clone())
                    .push_bind(d.target.as_str())
                    .push_bind(d.status.as_str())
                    .push_bind(i64::from(d.attempts))
                    .push_bind(d.http_status.map(i64::from))
                    .push_bind(d.error.clone())
                    .push_bind(d.created_at.timestamp_millis())
                    .push_bind(d.updated_at.timestamp_millis())
                    .push_bind(d.delivered_at.map(|t| t.timestamp_millis()));
            });
            // VALUES columns are named column1, column2, …; a SELECT before an upsert needs a
            // WHERE for SQLite to parse it, and this one has a purpose: the job must exist.
            insert.push(
                ") AS d WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = d.column2) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 attempts = excluded.attempts, http_status = excluded.http_status, \
                 error = excluded.error, updated_at = excluded.updated_at, \
                 delivered_at = excluded.delivered_at",
            );
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks deliveries a previous process left waiting for a retry as failed: retries live
    /// in memory and did not survive it. Returns how many.
    pub async fn abandon_pending_deliveries(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', updated_at = ?, \
             error = COALESCE(error || '; ', '') || 'abandoned: the daemon stopped before a retry' \
             WHERE status = 'retrying'",
        )
        .bind(crate::domain::time::now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// A job's deliveries in event order. `NotFound` when the job does not exist.
    pub async fn deliveries_of(&self, id: JobId) -> Result<Vec<Delivery>, StoreError> {
        let key = id.to_string();
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(id));
        }
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT id, job_id, event_seq, event_type, url, target, status, attempts, \
             http_status, error, created_at, updated_at, delivered_at \
             FROM webhook_deliveries WHERE job_id = ? ORDER BY event_seq, created_at, url",
        )
        .bind(&key)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }
}
