//! Row shapes as SQLite returns them, and their conversion into domain types.

use sqlx::FromRow;

use super::StoreError;
use crate::domain::time::from_ms;
use crate::domain::{
    FileRecord, FileStatus, Job, JobError, JobId, JobLimits, JobStatus, OnConflict, Priority,
    Segment, Sha256,
};

/// The job columns shared by every query that reads jobs, plus the per-job file aggregates.
/// A macro rather than a const so that queries built from it stay `&'static str`.
macro_rules! job_columns {
    () => {
        concat!(
        "j.seq, j.id, j.status, j.priority, j.description, j.dest, \
         j.on_conflict, j.headers, j.access_token IS NOT NULL AS has_access_token, j.created_at, \
         j.updated_at, j.started_at, j.finished_at, j.error_type, j.error_message, \
         j.error_http_status, j.attempt, j.max_connections, j.min_segment_size, \
         j.max_bytes_per_second, \
         (SELECT COUNT(*) FROM files f WHERE f.job_id = j.id) AS file_count, ",
        byte_totals!("j.id")
        )
    };
}

/// A job's bytes done and its total size (NULL while a file's size is unknown), over its
/// files; `$job` names the job's id column.
macro_rules! byte_totals {
    ($job:literal) => {
        concat!(
            "(SELECT COALESCE(SUM(f.bytes_done), 0) FROM files f WHERE f.job_id = ",
            $job,
            ") AS bytes_done, \
             (SELECT CASE WHEN COUNT(f.bytes_total) = COUNT(*) THEN SUM(f.bytes_total) END \
             FROM files f WHERE f.job_id = ",
            $job,
            ") AS bytes_total"
        )
    };
}

/// `SELECT <job columns> FROM jobs j <tail>`.
macro_rules! concat_job_query {
    ($tail:literal) => {
        concat!("SELECT ", job_columns!(), " FROM jobs j ", $tail)
    };
}

macro_rules! file_columns {
    () => {
        "id, idx, url, path, path_claimed, auto_name, status, sha256, bytes_done, bytes_total, \
         etag, last_modified, cached, error_type, error_message, error_http_status, mirrors, \
         headers"
    };
}

/// `SELECT <file columns> FROM files <tail>`.
macro_rules! concat_file_query {
    ($tail:literal) => {
        concat!("SELECT ", file_columns!(), " FROM files ", $tail)
    };
}

/// `f` (a file row) owns a destination: it may have, or be writing, that `.part`. True for
/// unfinished files of active jobs, and of failed jobs that kept bytes for a resume.
macro_rules! owns_destination {
    ($f:literal, $j:literal) => {
        concat!(
            $f,
            ".path_claimed = 1 AND ",
            $f,
            ".status NOT IN ('complete', 'skipped') AND (",
            $j,
            ".status IN ('queued', 'running', 'paused') OR (",
            $j,
            ".status = 'failed' AND ",
            $f,
            ".bytes_done > 0))"
        )
    };
}

/// Selects the `.part` destinations of `f` rows that no other file owns, so removing a
/// forgotten job's partial file can never remove another job's.
macro_rules! unowned_partials {
    ($where:literal) => {
        concat!(
            "SELECT f.path FROM files f JOIN jobs j ON j.id = f.job_id WHERE ",
            $where,
            " AND f.path_claimed = 1 AND f.status NOT IN ('complete', 'skipped') \
             AND NOT EXISTS (SELECT 1 FROM files o JOIN jobs oj ON oj.id = o.job_id \
             WHERE o.path = f.path AND o.id <> f.id AND ",
            owns_destination!("o", "oj"),
            ")"
        )
    };
}

pub(super) const JOB_COLUMNS: &str = job_columns!();

#[derive(FromRow)]
pub(super) struct JobRow {
    pub seq: i64,
    id: String,
    status: String,
    priority: i64,
    description: Option<String>,
    dest: Option<String>,
    on_conflict: String,
    headers: String,
    has_access_token: bool,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    error_type: Option<String>,
    error_message: Option<String>,
    error_http_status: Option<i64>,
    attempt: i64,
    max_connections: Option<i64>,
    min_segment_size: Option<i64>,
    max_bytes_per_second: Option<i64>,
    file_count: i64,
    bytes_done: i64,
    bytes_total: Option<i64>,
}

#[derive(FromRow)]
pub(super) struct FileRow {
    id: String,
    idx: i64,
    url: String,
    path: String,
    path_claimed: bool,
    auto_name: bool,
    status: String,
    sha256: Option<String>,
    bytes_done: i64,
    bytes_total: Option<i64>,
    etag: Option<String>,
    last_modified: Option<String>,
    cached: bool,
    error_type: Option<String>,
    error_message: Option<String>,
    error_http_status: Option<i64>,
    mirrors: Option<String>,
    headers: Option<String>,
}

#[derive(FromRow)]
pub(super) struct SegmentRow {
    idx: i64,
    range_start: i64,
    range_end: Option<i64>,
    written: i64,
}

fn corrupt(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value}"))
}

/// Stored integers are never negative; a negative one is corruption, not a value to wrap.
pub(super) fn to_u64(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(what, value))
}

/// u64 → INTEGER; sizes beyond i64::MAX do not exist on any real filesystem.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn error(kind: Option<String>, message: Option<String>, status: Option<i64>) -> Option<JobError> {
    kind.map(|kind| JobError {
        kind,
        message: message.unwrap_or_default(),
        http_status: status.and_then(|s| u16::try_from(s).ok()),
    })
}

pub(super) fn parse_job_id(s: &str) -> Result<JobId, StoreError> {
    s.parse().map_err(|_| corrupt("job id", s))
}

pub(super) fn parse_status(s: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(s).ok_or_else(|| corrupt("job status", s))
}

impl JobRow {
    /// The job's extra request headers, values included (secrets: for workers only).
    pub(super) fn headers(&self) -> Result<Vec<(String, String)>, StoreError> {
        serde_json::from_str(&self.headers).map_err(|e| corrupt("headers", e))
    }

    pub(super) fn into_job(self, files: Vec<FileRecord>) -> Result<Job, StoreError> {
        let headers = self.headers()?;
        Ok(Job {
            id: parse_job_id(&self.id)?,
            status: parse_status(&self.status)?,
            priority: Priority::new(self.priority)
                .ok_or_else(|| corrupt("priority", self.priority))?,
            description: self.description,
            dest: self.dest,
            on_conflict: OnConflict::parse(&self.on_conflict)
                .ok_or_else(|| corrupt("on_conflict", &self.on_conflict))?,
            limits: JobLimits {
                max_connections: self.max_connections.and_then(|n| u32::try_from(n).ok()),
                min_segment_size: self
                    .min_segment_size
                    .map(|n| to_u64("min_segment_size", n))
                    .transpose()?,
                max_bytes_per_second: self
                    .max_bytes_per_second
                    .map(|n| to_u64("max_bytes_per_second", n))
                    .transpose()?,
            },
            created_at: from_ms(self.created_at),
            updated_at: from_ms(self.updated_at),
            started_at: self.started_at.map(from_ms),
            finished_at: self.finished_at.map(from_ms),
            attempt: u32::try_from(self.attempt).unwrap_or(u32::MAX),
            error: error(self.error_type, self.error_message, self.error_http_status),
            header_names: headers.into_iter().map(|(name, _)| name).collect(),
            has_access_token: self.has_access_token,
            file_count: u32::try_from(self.file_count).unwrap_or(u32::MAX),
            bytes_done: to_u64("bytes_done", self.bytes_done)?,
            bytes_total: self
                .bytes_total
                .map(|t| to_u64("bytes_total", t))
                .transpose()?,
            files,
        })
    }
}

impl TryFrom<FileRow> for FileRecord {
    type Error = StoreError;

    fn try_from(row: FileRow) -> Result<Self, StoreError> {
        Ok(FileRecord {
            id: row.id.parse().map_err(|_| corrupt("file id", &row.id))?,
            index: u32::try_from(row.idx).map_err(|_| corrupt("file index", row.idx))?,
            url: row.url,
            path: row.path,
            path_claimed: row.path_claimed,
            auto_name: row.auto_name,
            status: FileStatus::parse(&row.status)
                .ok_or_else(|| corrupt("file status", &row.status))?,
            sha256: row
                .sha256
                .map(|s| Sha256::parse(&s).ok_or_else(|| corrupt("sha256", s)))
                .transpose()?,
            bytes_done: to_u64("bytes_done", row.bytes_done)?,
            bytes_total: row
                .bytes_total
                .map(|t| to_u64("bytes_total", t))
                .transpose()?,
            etag: row.etag,
            last_modified: row.last_modified,
            cached: row.cached,
            error: error(row.error_type, row.error_message, row.error_http_status),
            mirrors: match row.mirrors {
                Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("mirrors", text))?,
                None => Vec::new(),
            },
            headers: match row.headers {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|_| corrupt("headers", "(not shown: secret)"))?,
                None => Vec::new(),
            },
        })
    }
}

impl TryFrom<SegmentRow> for Segment {
    type Error = StoreError;

    fn try_from(row: SegmentRow) -> Result<Self, StoreError> {
        Ok(Segment {
            index: u32::try_from(row.idx).map_err(|_| corrupt("segment index", row.idx))?,
            start: to_u64("range_start", row.range_start)?,
            end: row.range_end.map(|e| to_u64("range_end", e)).transpose()?,
            written: to_u64("written", row.written)?,
        })
    }
}
