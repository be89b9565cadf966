//! Jobs as users see them: submit, read, list, change status, forget.

use sqlx::{QueryBuilder, Sqlite};

use super::rows::{FileRow, JOB_COLUMNS, JobRow, parse_status, to_i64};
use super::{Store, StoreError, at_once, begin_write};
use crate::domain::job::Outcome;
use crate::domain::time::now_ms;
use crate::domain::{
    FileRecord, IdempotencyKey, Job, JobChanges, JobId, JobStatus, KeyedJob, NewJob, Transition,
};

/// SQLite allows 32766 bound parameters per statement; files take 8 each.
pub(super) const FILE_INSERT_CHUNK: usize = 1000;

/// What `list_jobs` returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only jobs in one of these statuses; empty means all.
    pub statuses: Vec<JobStatus>,
    /// A regular expression the description must match (already validated by the caller).
    pub description_regex: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Only jobs older than the job with this sequence number (from a previous page).
    pub before: Option<i64>,
}

/// What `cancel_all` did.
#[derive(Debug, Clone)]
pub struct CancelledJobs {
    /// The jobs as they were just before being cancelled.
    pub jobs: Vec<Job>,
    /// Root-relative destinations whose `.part` files nobody is writing any more.
    pub partials: Vec<String>,
}

/// What [`Store::insert_job_once`] did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// The job is new.
    Created(Box<Job>),
    /// The key names a job already; nothing was inserted.
    Existing(KeyedJob),
}

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next: Option<i64>,
}

/// Writes what a transition decided.
async fn apply(
    tx: &mut sqlx::SqliteConnection,
    id: JobId,
    outcome: Outcome,
    changes: Option<JobChanges>,
) -> Result<(), StoreError> {
    let (now, key) = (now_ms(), id.to_string());
    match outcome {
        Outcome::Remove => {
            sqlx::query("DELETE FROM jobs WHERE id = ?")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        Outcome::Unchanged => {}
        Outcome::MoveTo(JobStatus::Queued) => {
            // Resume: a failed job is retried; its failed files start over, complete ones stay.
            sqlx::query(
                "UPDATE jobs SET status = 'queued', updated_at = ?, finished_at = NULL, \
                 error_type = NULL, error_message = NULL, error_http_status = NULL WHERE id = ?",
            )
            .bind(now)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE files SET status = 'queued', error_type = NULL, error_message = NULL, \
                 error_http_status = NULL WHERE job_id = ? AND status = 'failed'",
            )
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        }
        Outcome::MoveTo(to) => {
            let finished = to.is_finished().then_some(now);
            sqlx::query(
                "UPDATE jobs SET status = ?, updated_at = ?, \
                 finished_at = COALESCE(?, finished_at) WHERE id = ?",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(finished)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        }
    }
    let changes = changes.unwrap_or_default();
    if let Some(priority) = changes.priority {
        sqlx::query("UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ?")
            .bind(priority.get())
            .bind(now)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(rate) = changes.max_bytes_per_second {
        sqlx::query("UPDATE jobs SET max_bytes_per_second = ?, updated_at = ? WHERE id = ?")
            .bind(rate.map(to_i64))
            .bind(now)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Appends the insert of one chunk of a job's files (numbered `chunk_no`), made only if the
/// job exists.
fn push_files(
    insert: &mut QueryBuilder<Sqlite>,
    job: &NewJob,
    (chunk_no, chunk): (usize, &[crate::domain::NewFile]),
) {
    insert.push(
        "INSERT INTO files (id, job_id, idx, url, path, status, sha256, mirrors, auto_name, \
         headers) \
         SELECT * FROM (",
    );
    insert.push_values(chunk.iter().enumerate(), |mut row, (i, file)| {
        let index = i64::try_from(chunk_no * FILE_INSERT_CHUNK + i).unwrap_or(i64::MAX);
        row.push_bind(file.id.to_string())
            .push_bind(job.id.to_string())
            .push_bind(index)
            .push_bind(file.url.to_string())
            .push_bind(file.path.clone())
            .push_bind("queued")
            .push_bind(file.sha256.as_ref().map(|s| s.as_str().to_owned()))
            .push_bind(json_unless_empty(
                &file
                    .mirrors
                    .iter()
                    .map(url::Url::as_str)
                    .collect::<Vec<_>>(),
            ))
            .push_bind(file.auto_name)
            .push_bind(json_unless_empty(&file.headers));
    });
    insert
        .push(") WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ")
        .push_bind(job.id.to_string())
        .push(")");
}

/// A file's list (its mirrors, its own headers) as stored: JSON, or NULL when empty (the
/// common case).
fn json_unless_empty<T: serde::Serialize>(items: &[T]) -> Option<String> {
    (!items.is_empty())
        .then(|| serde_json::to_string(items).ok())
        .flatten()
}

/// Appends the statements that insert a job and its files, created at `now`: the job's
/// insert returns its id only when fewer than `max_queued` jobs wait, the key (if any) goes
/// in before the files (a taken key fails the batch before it writes them), and the files go
/// in only with their job.
pub(super) fn push_job(
    insert: &mut QueryBuilder<Sqlite>,
    job: &NewJob,
    now: i64,
    max_queued: u64,
    key: Option<&IdempotencyKey>,
) -> Result<(), StoreError> {
    let headers =
        serde_json::to_string(&job.headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let id = job.id.to_string();
    insert.push(
        "INSERT INTO jobs (id, status, priority, description, dest, on_conflict, headers, \
         access_token, created_at, updated_at, max_connections, min_segment_size, \
         max_bytes_per_second, callback_url, proxy) SELECT ",
    );
    let mut values = insert.separated(", ");
    values
        .push_bind(id.clone())
        .push_bind("queued")
        .push_bind(job.priority.get())
        .push_bind(job.description.clone())
        .push_bind(job.dest.clone())
        .push_bind(job.on_conflict.as_str())
        .push_bind(headers)
        .push_bind(job.access_token.clone())
        .push_bind(now)
        .push_bind(now)
        .push_bind(job.limits.max_connections)
        .push_bind(job.limits.min_segment_size.map(to_i64))
        .push_bind(job.limits.max_bytes_per_second.map(to_i64))
        .push_bind(job.callback_url.as_ref().map(url::Url::to_string))
        .push_bind(job.proxy.clone());
    insert
        .push(" WHERE (SELECT COUNT(*) FROM jobs WHERE status = 'queued') < ")
        .push_bind(i64::try_from(max_queued).unwrap_or(i64::MAX))
        .push(" RETURNING id");
    if let Some(key) = key {
        insert
            .push("; INSERT INTO idempotency_keys (key, request_hash, job_id, created_at) ")
            .push("SELECT ")
            .push_bind(key.key().to_owned())
            .push(", ")
            .push_bind(key.request_hash().to_owned())
            .push(", ")
            .push_bind(id.clone())
            .push(", ")
            .push_bind(now)
            .push(" WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ")
            .push_bind(id)
            .push(")");
    }
    for chunk in job.files.chunks(FILE_INSERT_CHUNK).enumerate() {
        insert.push("; ");
        push_files(insert, job, chunk);
    }
    Ok(())
}

/// The read model of a job just inserted with `insert_job`.
fn inserted_job(job: &NewJob, now: i64) -> Job {
    let at = crate::domain::time::from_ms(now);
    let files = job
        .files
        .iter()
        .enumerate()
        .map(|(index, file)| FileRecord {
            id: file.id,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            url: file.url.to_string(),
            path: file.path.clone(),
            path_claimed: false,
            auto_name: file.auto_name,
            status: crate::domain::FileStatus::Queued,
            sha256: file.sha256.clone(),
            bytes_done: 0,
            bytes_total: None,
            etag: None,
            last_modified: None,
            cached: false,
            error: None,
            mirrors: file.mirrors.iter().map(url::Url::to_string).collect(),
            headers: file.headers.clone(),
        })
        .collect::<Vec<_>>();
    Job {
        id: job.id,
        status: JobStatus::Queued,
        priority: job.priority,
        description: job.description.clone(),
        dest: job.dest.clone(),
        on_conflict: job.on_conflict,
        limits: job.limits,
        created_at: at,
        updated_at: at,
        started_at: None,
        finished_at: None,
        attempt: 0,
        error: None,
        header_names: job.headers.iter().map(|(name, _)| name.clone()).collect(),
        has_access_token: job.access_token.is_some(),
        file_count: u32::try_from(files.len()).unwrap_or(u32::MAX),
        bytes_done: 0,
        bytes_total: None,
        files,
    }
}

/// The files of a job, in submission order.
pub(super) async fn files_of(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: JobId,
) -> Result<Vec<FileRecord>, StoreError> {
    let rows: Vec<FileRow> = sqlx::query_as(concat_file_query!("WHERE job_id = ? ORDER BY idx"))
        .bind(id.to_string())
        .fetch_all(executor)
        .await?;
    rows.into_iter().map(FileRecord::try_from).collect()
}

impl Store {
    /// Inserts a job and its files as `queued`, unless `max_queued` jobs already wait: one
    /// transaction in one round trip, whose first statement inserts the job only under the
    /// limit and whose others insert the files only with their job, so a refused job leaves
    /// nothing behind.
    pub async fn insert_job(&self, job: &NewJob, max_queued: u64) -> Result<Job, StoreError> {
        self.insert(job, max_queued, None).await
    }

    /// [`Store::insert_job`], recording `key` in the same transaction. When the key is taken
    /// (also by a submission committed a moment earlier), its insert fails, the whole
    /// transaction rolls back, and the job the key names is returned instead.
    pub async fn insert_job_once(
        &self,
        job: &NewJob,
        max_queued: u64,
        key: &IdempotencyKey,
    ) -> Result<Submitted, StoreError> {
        match self.insert(job, max_queued, Some(key)).await {
            Ok(job) => Ok(Submitted::Created(Box::new(job))),
            Err(err) if err.is_unique_violation() => match self.find_key(key).await? {
                Some(keyed) => Ok(Submitted::Existing(keyed)),
                // The job it named was forgotten in between: the client may simply retry.
                None => Err(StoreError::Unavailable(
                    "the job of this idempotency key was just forgotten".into(),
                )),
            },
            Err(err) => Err(err),
        }
    }

    /// The job `key` created, if it is still known, and whether its request was the same.
    pub async fn find_key(&self, key: &IdempotencyKey) -> Result<Option<KeyedJob>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT job_id, request_hash FROM idempotency_keys WHERE key = ?")
                .bind(key.key())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(job, hash)| {
            let job = job
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("job id {job:?}")))?;
            Ok(KeyedJob {
                job,
                same_request: hash == key.request_hash(),
            })
        })
        .transpose()
    }

    async fn insert(
        &self,
        job: &NewJob,
        max_queued: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<Job, StoreError> {
        let inserted = if key.is_none() && job.files.len() <= FILE_INSERT_CHUNK {
            // Together with whatever else was submitted meanwhile.
            super::inserts::insert(&self.inserts, job, max_queued).await?
        } else {
            let now = now_ms();
            let mut insert = at_once();
            push_job(&mut insert, job, now, max_queued, key)?;
            let ids = super::write_at_once(&self.writer, insert).await?;
            (!ids.is_empty()).then_some(now)
        };
        let Some(now) = inserted else {
            return Err(StoreError::QueueFull { limit: max_queued });
        };
        // The job as inserted, not re-read: a dispatcher may claim it the moment the
        // transaction commits, and the submitter should see what it created.
        Ok(inserted_job(job, now))
    }

    /// One job with all its files.
    pub async fn get_job(&self, id: JobId) -> Result<Job, StoreError> {
        let row: JobRow = sqlx::query_as(concat_job_query!("WHERE j.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let files = self.files_of(id).await?;
        row.into_job(files)
    }

    /// The files of a job, in submission order.
    pub(super) async fn files_of(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
        files_of(&self.pool, id).await
    }

    /// Jobs newest first, without their files (listings carry the per-job totals).
    pub async fn list_jobs(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT ");
        sql.push(JOB_COLUMNS).push(" FROM jobs j WHERE 1 = 1");
        if !query.statuses.is_empty() {
            sql.push(" AND j.status IN (");
            let mut list = sql.separated(", ");
            for status in &query.statuses {
                list.push_bind(status.as_str());
            }
            sql.push(")");
        }
        if let Some(regex) = &query.description_regex {
            sql.push(" AND j.description REGEXP ")
                .push_bind(regex.clone());
        }
        if let Some(before) = query.before {
            sql.push(" AND j.seq < ").push_bind(before);
        }
        sql.push(" ORDER BY j.seq DESC LIMIT ")
            .push_bind(i64::from(query.limit) + 1);
        let mut rows: Vec<JobRow> = sql.build_query_as().fetch_all(&self.pool).await?;
        let next = if rows.len() > query.limit as usize {
            rows.truncate(query.limit as usize);
            rows.last().map(|row| row.seq)
        } else {
            None
        };
        let jobs = rows
            .into_iter()
            .map(|row| row.into_job(Vec::new()))
            .collect::<Result<_, _>>()?;
        Ok(Page { jobs, next })
    }

    /// Applies a user's transition atomically. Returns the status the job had before, and the
    /// job after (`None` when it was forgotten).
    pub async fn transition(
        &self,
        id: JobId,
        action: Transition,
        changes: JobChanges,
    ) -> Result<(JobStatus, Option<Job>), StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = begin_write(&mut writer).await?;
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let before = parse_status(&status)?;
        let outcome = action.apply(before).ok_or(StoreError::InvalidTransition {
            id,
            status: before,
            action,
        })?;
        apply(
            &mut tx,
            id,
            outcome,
            Some(changes).filter(|_| action == Transition::Update),
        )
        .await?;
        tx.commit().await?;
        if outcome == Outcome::Remove {
            return Ok((before, None));
        }
        Ok((before, Some(self.get_job(id).await?)))
    }

    /// Cancels every queued, running and paused job. Returns each as it was just before
    /// (without files), and the partial files of those not running, for the caller to remove.
    pub async fn cancel_all(&self) -> Result<CancelledJobs, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = begin_write(&mut writer).await?;
        let rows: Vec<JobRow> = sqlx::query_as(concat_job_query!(
            "WHERE j.status IN ('queued', 'running', 'paused') ORDER BY j.seq"
        ))
        .fetch_all(&mut *tx)
        .await?;
        // Running jobs' workers remove their own partial files once they have stopped.
        let partials: Vec<String> =
            sqlx::query_scalar(unowned_partials!("j.status IN ('queued', 'paused')"))
                .fetch_all(&mut *tx)
                .await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', updated_at = ?, finished_at = ? \
             WHERE status IN ('queued', 'running', 'paused')",
        )
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let jobs = rows
            .into_iter()
            .map(|row| row.into_job(Vec::new()))
            .collect::<Result<_, _>>()?;
        Ok(CancelledJobs { jobs, partials })
    }

    /// Forgets every finished job (completed, failed, cancelled). Returns how many, and the
    /// destinations of partial files they leave behind (a failed job keeps its bytes for a
    /// resume that can no longer happen).
    pub async fn prune(&self) -> Result<(u64, Vec<String>), StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = begin_write(&mut writer).await?;
        let partials: Vec<String> = sqlx::query_scalar(unowned_partials!(
            "j.status = 'failed' AND f.bytes_done > 0"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let done =
            sqlx::query("DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled')")
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((done.rows_affected(), partials))
    }

    /// How many jobs are in each status.
    pub async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(status, n)| Ok((parse_status(&status)?, u64::try_from(n).unwrap_or(0))))
            .collect()
    }
}
