//! History retention: forgetting jobs that finished long enough ago, a chunk at a time.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, begin_write};

/// The finished jobs of one chunk: the oldest first, so each chunk makes progress. (The
/// partial-file query spells the same selection out: its macro takes a single literal.)
macro_rules! expired_chunk {
    () => {
        "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? \
         AND status IN ('completed', 'failed', 'cancelled') ORDER BY finished_at, seq LIMIT ?"
    };
}

impl Store {
    /// Forgets at most `limit` finished jobs (completed, failed, cancelled) that finished
    /// before `cutoff`, oldest first, in one short transaction. Returns how many, and the
    /// destinations of partial files they leave behind, as [`Store::prune`] does. Call again
    /// while it returns `limit`: each call holds the write lock only for its own chunk.
    pub async fn prune_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let cutoff = cutoff.timestamp_millis();
        let mut writer = self.writer().await?;
        let mut tx = begin_write(&mut writer).await?;
        // Both statements select the same chunk: nothing can change it inside the transaction.
        let partials: Vec<String> = sqlx::query_scalar(unowned_partials!(
            "j.status = 'failed' AND f.bytes_done > 0 AND j.id IN (SELECT id FROM jobs \
             WHERE finished_at IS NOT NULL AND finished_at < ? \
             AND status IN ('completed', 'failed', 'cancelled') \
             ORDER BY finished_at, seq LIMIT ?)"
        ))
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let done = sqlx::query(concat!(
            "DELETE FROM jobs WHERE id IN (",
            expired_chunk!(),
            ")"
        ))
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((done.rows_affected(), partials))
    }
}
