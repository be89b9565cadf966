//! What a worker reads and writes while it runs a job: secrets, files with their segments,
//! claimed paths, validators, batched checkpoints and per-file outcomes.
//!
//! Every write checks that the caller still holds the job's lease, so a worker that lost its
//! claim (a requeue after its lease expired, a resume picked up by another run) cannot clobber
//! the new owner's progress.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::query::Query;
use sqlx::query_builder::Separated;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Either, Executor, FromRow, QueryBuilder, Row, Sqlite, SqliteConnection, SqliteExecutor,
    Transaction,
};

use super::claims::ByteTotals;
use super::rows::{FileRow, JobRow, SegmentRow, parse_job_id, to_i64};
use super::{Store, StoreError, begin_write};
use crate::domain::time::now_ms;
use crate::domain::{FileId, FileRecord, FileStatus, Job, JobError, JobId, Segment};

/// The guard of a worker's statement: it changes nothing unless the job's lease is held (binds
/// the job and the owner after the statement's own parameters: [`with_lease`]).
macro_rules! leased {
    () => {
        " AND EXISTS (SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ?)"
    };
}

/// Rows of files to change, each under its own job's lease: a CTE `v(fid, jid, owner, ...)`
/// joined to the job it names, so a row whose job's lease is held by someone else matches
/// nothing. Many files of many jobs change in one statement (one round trip); `RETURNING id`
/// tells which did.
macro_rules! leased_rows {
    ($columns:literal) => {
        concat!("WITH v(fid, jid, owner, ", $columns, ") AS (")
    };
}

/// Follows the rows of [`leased_rows!`] and the `SET` clause: restricts the update to rows
/// whose lease is held.
macro_rules! leased_from {
    () => {
        " FROM v JOIN jobs j ON j.id = v.jid AND j.lease_owner = v.owner \
         WHERE files.id = v.fid AND files.job_id = v.jid"
    };
}

/// Most rows in one statement (SQLite binds at most 32766 parameters; rows take up to 7).
const ROWS_PER_STATEMENT: usize = 1000;

/// A job as a worker loads it: the job, its files with their segments, and its secrets.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub job: Job,
    pub files: Vec<RunFile>,
    pub headers: Vec<(String, String)>,
    pub access_token: Option<String>,
    /// The job's own proxy.
    pub proxy: Option<String>,
}

/// `SELECT` a [`RunJobRow`] `FROM jobs j <tail>`.
macro_rules! run_job_query {
    ($tail:literal) => {
        concat!(
            "SELECT ",
            job_columns!(),
            ", j.access_token AS secret_token, j.proxy AS secret_proxy FROM jobs j ",
            $tail
        )
    };
}

/// A job row with the job's access token and proxy.
#[derive(sqlx::FromRow)]
struct RunJobRow {
    #[sqlx(flatten)]
    job: JobRow,
    secret_token: Option<String>,
    secret_proxy: Option<String>,
}

/// A file as a worker needs it: its record plus its saved segments.
#[derive(Debug, Clone)]
pub struct RunFile {
    pub record: FileRecord,
    pub segments: Vec<Segment>,
}

impl RunFile {
    fn fresh(record: FileRecord) -> Self {
        Self {
            record,
            segments: Vec::new(),
        }
    }
}

/// A segment row with the file it belongs to.
#[derive(sqlx::FromRow)]
struct FileSegmentRow {
    file_id: String,
    #[sqlx(flatten)]
    segment: SegmentRow,
}

/// What the first response told us about a file: its size and validators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    pub total: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Progress of one file to save in a checkpoint.
#[derive(Debug, Clone)]
pub struct FileCheckpoint {
    pub file_id: FileId,
    pub segments: Vec<Segment>,
}

impl FileCheckpoint {
    /// Bytes on disk across all segments.
    pub fn bytes_done(&self) -> u64 {
        self.segments.iter().map(|s| s.written).sum()
    }
}

impl Store {
    /// The job's secrets: extra headers and the bearer token. Only workers call this.
    pub async fn job_secrets(
        &self,
        id: JobId,
    ) -> Result<(Vec<(String, String)>, Option<String>), StoreError> {
        let (headers, token): (String, Option<String>) =
            sqlx::query_as("SELECT headers, access_token FROM jobs WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound(id))?;
        let headers =
            serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((headers, token))
    }

    /// Everything a worker needs to run a job, in three queries: the job with its secrets, its
    /// files, and their segments (two for a job that never started).
    pub async fn load_run(&self, id: JobId) -> Result<LoadedRun, StoreError> {
        // On the writer's connection: a pooled one costs a ping each time it is given back.
        let mut writer = self.writer().await?;
        let row: RunJobRow = sqlx::query_as(run_job_query!("WHERE j.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&mut *writer)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let records = super::jobs::files_of(&mut *writer, id).await?;
        drop(writer);
        self.assemble_run(row, records).await
    }

    /// Claims the next queued job as [`Store::claim_next`] does and loads it as
    /// [`Store::load_run`] does, in one round trip to the writer's connection: the claim, the
    /// job and its files are three statements of one call, the last two finding the job by
    /// its new lease. `None` when nothing is queued.
    pub async fn claim_run(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<LoadedRun>, StoreError> {
        let now = now_ms();
        let query = sqlx::query(concat!(
            claim_next_sql!(),
            "; ",
            run_job_query!("WHERE j.status = 'running' AND j.lease_owner = ?"),
            "; ",
            concat_file_query!(
                "WHERE job_id = (SELECT id FROM jobs WHERE status = 'running' AND lease_owner = ?) \
                 ORDER BY idx"
            )
        ))
        .bind(owner)
        .bind(super::claims::expiry(lease))
        .bind(now)
        .bind(now)
        .bind(owner)
        .bind(owner);
        let (mut claimed, mut job, mut records) = (None, None, Vec::new());
        let read = rows_by_statement(&mut *self.writer().await?, query, |statement, row| {
            match statement {
                0 => claimed = Some(row.try_get::<String, _>(0)?),
                1 => job = Some(RunJobRow::from_row(&row)?),
                _ => records.push(FileRow::from_row(&row)?),
            }
            Ok(())
        })
        .await;
        let Some(id) = claimed.as_deref().map(parse_job_id).transpose()? else {
            return read.map(|()| None);
        };
        let loaded = match (read, job) {
            (Ok(()), Some(row)) => {
                let records = records.into_iter().map(FileRecord::try_from);
                match records.collect::<Result<Vec<_>, _>>() {
                    Ok(records) => self.assemble_run(row, records).await,
                    Err(err) => Err(err),
                }
            }
            (Ok(()), None) => Err(StoreError::NotFound(id)),
            (Err(err), _) => Err(err),
        };
        if loaded.is_err() {
            // Claimed but not loaded: back to the queue rather than waiting for the lease.
            self.release(id, owner).await?;
        }
        loaded.map(Some)
    }

    /// A loaded job from its row and its files (and their segments after a first run).
    async fn assemble_run(
        &self,
        row: RunJobRow,
        records: Vec<FileRecord>,
    ) -> Result<LoadedRun, StoreError> {
        let headers = row.job.headers()?;
        let job = row.job.into_job(records.clone())?;
        let id = job.id;
        // Only a run saves segments, after its own load: the first run finds none.
        let files = if job.attempt <= 1 {
            records.into_iter().map(RunFile::fresh).collect()
        } else {
            self.with_segments(id, records).await?
        };
        Ok(LoadedRun {
            job,
            files,
            headers,
            access_token: row.secret_token,
            proxy: row.secret_proxy,
        })
    }

    /// The job's files with their segments, in order.
    pub async fn files_for_run(&self, id: JobId) -> Result<Vec<RunFile>, StoreError> {
        let files = self.files_of(id).await?;
        self.with_segments(id, files).await
    }

    /// Pairs the job's files with their saved segments.
    async fn with_segments(
        &self,
        id: JobId,
        files: Vec<FileRecord>,
    ) -> Result<Vec<RunFile>, StoreError> {
        // One query for every segment of the job, rather than one per file.
        let rows: Vec<(String, SegmentRow)> = sqlx::query_as(
            "SELECT s.file_id, s.idx, s.range_start, s.range_end, s.written FROM segments s \
             JOIN files f ON f.id = s.file_id WHERE f.job_id = ? ORDER BY s.file_id, s.idx",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row: FileSegmentRow| (row.file_id, row.segment))
        .collect();
        let mut by_file: std::collections::HashMap<String, Vec<Segment>> =
            std::collections::HashMap::new();
        for (file_id, row) in rows {
            by_file
                .entry(file_id)
                .or_default()
                .push(Segment::try_from(row)?);
        }
        Ok(files
            .into_iter()
            .map(|record| {
                let segments = by_file.remove(&record.id.to_string()).unwrap_or_default();
                RunFile { record, segments }
            })
            .collect())
    }

    /// Takes ownership of a destination (and its `.part`) for a file about to be downloaded.
    /// Fails with `PathTaken` when another unfinished file owns it: one that is queued,
    /// running or paused, or failed with bytes kept for a resume. Two jobs thus never write
    /// the same `.part`, whatever their conflict policies.
    pub async fn claim_path(
        &self,
        job: JobId,
        owner: &str,
        file: FileId,
        path: &str,
    ) -> Result<(), StoreError> {
        match self
            .claim_paths(job, owner, &[(file, path.to_owned())])
            .await?[..]
        {
            [true] => Ok(()),
            _ => Err(StoreError::PathTaken(path.to_owned())),
        }
    }

    /// [`Store::claim_path`] for many files of one job in one statement: for each, whether
    /// it got its destination. A path asked for twice goes to its first file only.
    pub async fn claim_paths(
        &self,
        job: JobId,
        owner: &str,
        claims: &[(FileId, String)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut seen = HashSet::new();
        let rows: Vec<_> = claims
            .iter()
            .filter(|(_, path)| seen.insert(path.as_str()))
            .collect();
        let changed = self
            .update_leased_rows(
                leased_rows!("path"),
                concat!(
                    ") UPDATE files SET path = v.path, path_claimed = 1",
                    leased_from!(),
                    " AND NOT EXISTS (SELECT 1 FROM files o JOIN jobs oj ON oj.id = o.job_id \
                     WHERE o.path = v.path AND o.id <> v.fid AND ",
                    owns_destination!("o", "oj"),
                    ") RETURNING id"
                ),
                &rows,
                |row| (job, owner, row.0),
                |mut values, row| {
                    values.push_bind(row.1.clone());
                },
            )
            .await?;
        if changed.len() < claims.len() {
            check_lease(&self.pool, job, owner).await?;
        }
        Ok(claims
            .iter()
            .map(|(file, _)| changed.contains(&file.to_string()))
            .collect())
    }

    /// Records where a file ended up (a cached file, or an alternative name taken at the
    /// final rename). Nothing is written there any more, so no ownership is checked.
    pub async fn record_path(
        &self,
        job: JobId,
        owner: &str,
        file: FileId,
        path: &str,
    ) -> Result<(), StoreError> {
        let query = sqlx::query(concat!(
            "UPDATE files SET path = ?, path_claimed = 1 WHERE id = ?",
            leased!()
        ))
        .bind(path)
        .bind(file.to_string());
        self.leased_once(job, owner, query).await?;
        Ok(())
    }

    /// Starts a file (over): records size and validators and replaces its segments with
    /// `segments`, whose `written` counts are what is already on disk.
    pub async fn reset_file(
        &self,
        job: JobId,
        owner: &str,
        file: FileId,
        meta: &FileMeta,
        segments: &[Segment],
    ) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = begin_owned_write(&mut writer, job, owner).await?;
        let key = file.to_string();
        let done: u64 = segments.iter().map(|s| s.written).sum();
        sqlx::query(
            "UPDATE files SET bytes_total = ?, etag = ?, last_modified = ?, bytes_done = ?, \
             status = 'downloading' WHERE id = ?",
        )
        .bind(meta.total.map(to_i64))
        .bind(&meta.etag)
        .bind(&meta.last_modified)
        .bind(to_i64(done))
        .bind(&key)
        .execute(&mut *tx)
        .await?;
        replace_segments(&mut tx, &key, segments).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Saves the progress of several files in one transaction: each file's plan as it is now
    /// (ranges split since the last checkpoint included). The caller has fsynced the data the
    /// counts describe.
    pub async fn checkpoint(
        &self,
        job: JobId,
        owner: &str,
        files: &[FileCheckpoint],
    ) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = begin_owned_write(&mut writer, job, owner).await?;
        for file in files {
            let key = file.file_id.to_string();
            replace_segments(&mut tx, &key, &file.segments).await?;
            sqlx::query("UPDATE files SET bytes_done = ? WHERE id = ?")
                .bind(to_i64(file.bytes_done()))
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a file's status (and, when it ended, its final size, `cached` flag or error).
    pub async fn set_file_status(
        &self,
        job: JobId,
        owner: &str,
        file: FileId,
        update: &FileStatusUpdate<'_>,
    ) -> Result<(), StoreError> {
        let query = sqlx::query(concat!(
            "UPDATE files SET status = ?, bytes_done = COALESCE(?, bytes_done), \
             bytes_total = COALESCE(?, bytes_total), cached = ?, error_type = ?, \
             error_message = ?, error_http_status = ? WHERE id = ?",
            leased!()
        ))
        .bind(update.status.as_str())
        .bind(update.bytes.map(to_i64))
        .bind(update.bytes.map(to_i64))
        .bind(update.cached)
        .bind(update.error.map(|e| e.kind.clone()))
        .bind(update.error.map(|e| e.message.clone()))
        .bind(update.error.and_then(|e| e.http_status))
        .bind(file.to_string());
        self.leased_once(job, owner, query).await?;
        Ok(())
    }

    /// Marks files (of any jobs) as being verified and put in place: after a crash, a file in
    /// this state whose `.part` is gone and whose final file is right was placed. Returns the
    /// jobs whose lease was lost: their files are unchanged.
    pub async fn mark_verifying(&self, files: &[Verifying<'_>]) -> Result<Vec<JobId>, StoreError> {
        let changed = self
            .update_leased_rows(
                leased_rows!("total"),
                concat!(
                    ") UPDATE files SET status = 'verifying', bytes_done = v.total, \
                     bytes_total = v.total",
                    leased_from!(),
                    " RETURNING id"
                ),
                files,
                Verifying::key,
                |mut values, f| {
                    values.push_bind(to_i64(f.total));
                },
            )
            .await?;
        self.lost_leases(files.iter().map(Verifying::key), &changed)
            .await
    }

    /// Records files (of any jobs) that reached their end (complete or skipped), with where
    /// they ended up when that is not their planned path; and ends the `finishing` jobs as
    /// completed when that leaves none of their files unfinished, in the same round trip (a
    /// one-file job so ends with its file). Returns the jobs whose lease was lost (their files
    /// are unchanged) and the jobs it ended.
    pub async fn complete_files(
        &self,
        files: &[Completion<'_>],
        finishing: &[(JobId, &str)],
    ) -> Result<Completed, StoreError> {
        const SQL: (&str, &str) = (
            leased_rows!("status, bytes, path"),
            concat!(
                ") UPDATE files SET status = v.status, bytes_done = v.bytes, \
                 bytes_total = v.bytes, path = COALESCE(v.path, files.path)",
                leased_from!(),
                " RETURNING id"
            ),
        );
        let key = Completion::key;
        let mut values = |mut values: Separated<'_, Sqlite, &'static str>, f: &Completion<'_>| {
            values
                .push_bind(f.status.as_str())
                .push_bind(to_i64(f.bytes))
                .push_bind(f.path.clone());
        };
        let (mut changed, mut finished) = (HashSet::new(), Vec::new());
        if files.len() > ROWS_PER_STATEMENT || files.is_empty() {
            changed = self
                .update_leased_rows(SQL.0, SQL.1, files, key, values)
                .await?;
        } else {
            let mut sql = QueryBuilder::new("");
            push_leased_rows(&mut sql, SQL, files, &key, &mut values);
            if !finishing.is_empty() {
                sql.push("; ");
                push_finish_completed(&mut sql, finishing);
            }
            rows_by_statement(&mut *self.writer().await?, sql.build(), |statement, row| {
                let id = row.try_get::<String, _>(0)?;
                if statement == 0 {
                    changed.insert(id);
                } else {
                    finished.push((parse_job_id(&id)?, ByteTotals::from_row(&row)?));
                }
                Ok(())
            })
            .await?;
        }
        let lost = self.lost_leases(files.iter().map(key), &changed).await?;
        Ok(Completed { lost, finished })
    }

    /// Runs a [`leased_rows!`] update, `head` + one row per item + `tail`, in statements of at
    /// most [`ROWS_PER_STATEMENT`] rows. Returns the ids of the files it changed.
    async fn update_leased_rows<'r, T>(
        &self,
        head: &'static str,
        tail: &'static str,
        rows: &'r [T],
        key: impl Fn(&T) -> (JobId, &'r str, FileId),
        mut values: impl FnMut(Separated<'_, Sqlite, &'static str>, &'r T),
    ) -> Result<HashSet<String>, StoreError> {
        let mut changed = HashSet::with_capacity(rows.len());
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut sql = QueryBuilder::new("");
            push_leased_rows(&mut sql, (head, tail), chunk, &key, &mut values);
            let ids: Vec<String> = sql
                .build_query_scalar()
                .fetch_all(&mut *self.writer().await?)
                .await?;
            changed.extend(ids);
        }
        Ok(changed)
    }

    /// The jobs among `rows` that `changed` left out because their lease is not held.
    async fn lost_leases<'r>(
        &self,
        rows: impl Iterator<Item = (JobId, &'r str, FileId)>,
        changed: &HashSet<String>,
    ) -> Result<Vec<JobId>, StoreError> {
        let mut lost = Vec::new();
        for (job, owner, file) in rows {
            if changed.contains(&file.to_string()) || lost.contains(&job) {
                continue;
            }
            if let Err(StoreError::LeaseLost(_)) = check_lease(&self.pool, job, owner).await {
                lost.push(job);
            }
        }
        Ok(lost)
    }

    /// Destinations (relative to the root) of the job's unfinished files whose `.part` no
    /// other file owns: what cancelling or forgetting the job may remove.
    pub async fn partial_paths(&self, job: JobId) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(unowned_partials!("f.job_id = ?"))
            .bind(job.to_string())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Runs one statement guarded by [`leased!`] on its own (binding the lease): a
    /// single statement is its own transaction, so the lease check and the change are one
    /// atomic step, in one round trip instead of four. Returns whether it changed a row;
    /// `LeaseLost` when it did not because `owner` no longer holds the lease.
    async fn leased_once<'q>(
        &self,
        job: JobId,
        owner: &'q str,
        query: Query<'q, Sqlite, SqliteArguments>,
    ) -> Result<bool, StoreError> {
        let done = with_lease(query, job, owner)
            .execute(&mut *self.writer().await?)
            .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        check_lease(&self.pool, job, owner).await?;
        Ok(false)
    }
}

/// Runs the statements of one call and hands each row to `each` with the index of the
/// statement that returned it (a call's rows come statement by statement, each statement's
/// followed by its summary).
async fn rows_by_statement<'q>(
    conn: &mut SqliteConnection,
    query: Query<'q, Sqlite, SqliteArguments>,
    mut each: impl FnMut(usize, SqliteRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut results = conn.fetch_many(query);
    let mut statement = 0;
    while let Some(item) = results.try_next().await? {
        match item {
            Either::Left(_) => statement += 1,
            Either::Right(row) => each(statement, row)?,
        }
    }
    Ok(())
}

/// A write transaction that proceeds only while `owner` holds the job's lease.
async fn begin_owned_write<'c>(
    writer: &'c mut SqliteConnection,
    job: JobId,
    owner: &str,
) -> Result<Transaction<'c, Sqlite>, StoreError> {
    let mut tx = begin_write(writer).await?;
    check_lease(&mut *tx, job, owner).await?;
    Ok(tx)
}

/// Appends a [`leased_rows!`] update: `head`, one row per item, `tail`.
fn push_leased_rows<'r, T>(
    sql: &mut QueryBuilder<Sqlite>,
    (head, tail): (&'static str, &'static str),
    rows: &'r [T],
    key: &impl Fn(&T) -> (JobId, &'r str, FileId),
    values: &mut impl FnMut(Separated<'_, Sqlite, &'static str>, &'r T),
) {
    sql.push(head);
    sql.push_values(rows, |mut row, item| {
        let (job, owner, file) = key(item);
        row.push_bind(file.to_string())
            .push_bind(job.to_string())
            .push_bind(owner);
        values(row, item);
    });
    sql.push(tail);
}

/// Appends the statement that ends these jobs as completed, each only while its lease is held,
/// it is running, and every one of its files is complete or skipped. Returns each job ended
/// with its byte totals.
fn push_finish_completed(sql: &mut QueryBuilder<Sqlite>, jobs: &[(JobId, &str)]) {
    let now = now_ms();
    sql.push("WITH v(jid, owner) AS (");
    sql.push_values(jobs, |mut row, (job, owner)| {
        row.push_bind(job.to_string()).push_bind(owner.to_string());
    });
    sql.push(") UPDATE jobs SET status = 'completed', finished_at = MAX(")
        .push_bind(now)
        .push(", started_at), updated_at = MAX(")
        .push_bind(now)
        .push(concat!(
            ", updated_at), error_type = NULL, error_message = NULL, error_http_status = NULL, \
             lease_owner = NULL, lease_expires_at = NULL \
             FROM v WHERE jobs.id = v.jid AND jobs.lease_owner = v.owner \
             AND jobs.status = 'running' AND NOT EXISTS (SELECT 1 FROM files f \
             WHERE f.job_id = jobs.id AND f.status NOT IN ('complete', 'skipped')) RETURNING id, ",
            byte_totals!("jobs.id")
        ));
}

/// Binds the job and the owner a [`leased!`] guard asks for.
fn with_lease<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    job: JobId,
    owner: &'q str,
) -> Query<'q, Sqlite, SqliteArguments> {
    query.bind(job.to_string()).bind(owner)
}

/// Fails with `LeaseLost` unless `owner` holds the job's lease.
async fn check_lease(
    executor: impl SqliteExecutor<'_>,
    job: JobId,
    owner: &str,
) -> Result<(), StoreError> {
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = ?")
            .bind(job.to_string())
            .fetch_optional(executor)
            .await?;
    if holder.flatten().as_deref() == Some(owner) {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(job))
    }
}

/// Replaces a file's segments with `segments`.
async fn replace_segments(
    tx: &mut sqlx::SqliteConnection,
    file: &str,
    segments: &[Segment],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM segments WHERE file_id = ?")
        .bind(file)
        .execute(&mut *tx)
        .await?;
    for segment in segments {
        sqlx::query(
            "INSERT INTO segments (file_id, idx, range_start, range_end, written) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(file)
        .bind(i64::from(segment.index))
        .bind(to_i64(segment.start))
        .bind(segment.end.map(to_i64))
        .bind(to_i64(segment.written))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A file about to be verified and put in place, under its job's lease.
#[derive(Debug, Clone, Copy)]
pub struct Verifying<'a> {
    pub job: JobId,
    pub owner: &'a str,
    pub file: FileId,
    pub total: u64,
}

/// A file that reached its end, under its job's lease.
#[derive(Debug, Clone)]
pub struct Completion<'a> {
    pub job: JobId,
    pub owner: &'a str,
    pub file: FileId,
    pub status: FileStatus,
    pub bytes: u64,
    /// The path it ended up at, when not the planned one.
    pub path: Option<String>,
}

impl<'a> Verifying<'a> {
    /// The file, its job and the lease it is written under.
    fn key(&self) -> (JobId, &'a str, FileId) {
        (self.job, self.owner, self.file)
    }
}

impl<'a> Completion<'a> {
    /// The file, its job and the lease it is written under.
    fn key(&self) -> (JobId, &'a str, FileId) {
        (self.job, self.owner, self.file)
    }
}

/// What [`Store::complete_files`] did besides recording the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completed {
    /// Jobs whose lease was lost: their files are unchanged.
    pub lost: Vec<JobId>,
    /// Jobs ended as completed, with their byte totals.
    pub finished: Vec<(JobId, ByteTotals)>,
}

/// A change of one file's status.
#[derive(Debug, Clone, Copy)]
pub struct FileStatusUpdate<'a> {
    pub status: FileStatus,
    /// When set, both `bytes_done` and `bytes_total` become this (a file that ended complete).
    pub bytes: Option<u64>,
    pub cached: bool,
    pub error: Option<&'a JobError>,
}
