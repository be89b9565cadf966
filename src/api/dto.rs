//! The JSON shapes of the API: jobs and files as clients see them, with live progress.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::{
    Delivery, DeliveryStatus, DeliveryTarget, FileRecord, FileStatus, Job, JobError, JobStatus,
    OnConflict,
};
use crate::engine::Run;

/// A job. `files` is present on single-job responses and left out of listings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    pub id: crate::domain::JobId,
    pub status: JobStatus,
    /// Lower runs first.
    #[schema(value_type = i32)]
    pub priority: crate::domain::Priority,
    pub description: Option<String>,
    /// The requested destination, relative to the download root.
    pub dest: Option<String>,
    pub on_conflict: OnConflict,
    /// The job's own connection limit per file, if it set one.
    pub max_connections: Option<u32>,
    /// The job's own minimum segment size, if it set one.
    pub min_segment_size: Option<u64>,
    /// The job's download rate limit, if it has one.
    pub max_bytes_per_second: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many times a worker has started the job.
    pub attempt: u32,
    pub error: Option<JobError>,
    /// Names of the extra request headers; their values are never returned.
    pub headers: Vec<String>,
    /// Whether an access token is stored; the token itself is never returned.
    pub has_access_token: bool,
    pub file_count: u32,
    pub bytes_done: u64,
    /// `null` while the size of any file is unknown.
    pub bytes_total: Option<u64>,
    /// `bytes_done / bytes_total` when the size is known.
    pub progress: Option<f64>,
    /// Current download rate while running.
    pub bytes_per_second: Option<u64>,
    /// Bytes not downloaded because a file with the expected SHA-256 was already in place
    /// (its files are `cached`). On single-job responses, like `files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_bytes: Option<u64>,
    /// About how long downloading the cached files would have taken, at the rate this
    /// daemon's recent downloads ran (an estimate; absent before any download, or when
    /// nothing was cached). On single-job responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_seconds_saved: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileView>>,
}

/// One file of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileView {
    #[schema(value_type = String, format = Uuid)]
    pub id: crate::domain::FileId,
    pub index: u32,
    /// The source URL, without any user-info.
    pub url: String,
    /// Destination relative to the download root. In a directory `dest` it is the URL's name
    /// until the first response names the file (`Content-Disposition`); final once bytes are
    /// written (or an alternative `name (1).ext` the conflict policy chose).
    pub path: String,
    pub status: FileStatus,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Expected SHA-256, when given.
    pub sha256: Option<String>,
    /// True when an existing file already had `sha256` and nothing was downloaded.
    pub cached: bool,
    pub error: Option<JobError>,
    /// Connections open for this file now.
    pub connections: u32,
}

impl JobView {
    /// The view of `job`, with live counters from its run in this process, if any.
    pub fn new(job: Job, run: Option<&Run>, with_files: bool) -> Self {
        let (mut bytes_done, mut bytes_total) = (job.bytes_done, job.bytes_total);
        let mut bytes_per_second = None;
        if let Some(run) = run.filter(|_| job.status == JobStatus::Running) {
            (bytes_done, bytes_total) = run.live.totals();
            bytes_per_second = Some(run.live.rate());
        }
        let files: Option<Vec<FileView>> = with_files.then(|| {
            job.files
                .into_iter()
                .map(|f| FileView::new(f, run))
                .collect()
        });
        let cached_bytes = files.as_ref().map(|files| {
            files
                .iter()
                .filter(|f| f.cached)
                .filter_map(|f| f.bytes_total)
                .sum()
        });
        Self {
            id: job.id,
            status: job.status,
            priority: job.priority,
            description: job.description,
            dest: job.dest,
            on_conflict: job.on_conflict,
            max_connections: job.limits.max_connections,
            min_segment_size: job.limits.min_segment_size,
            max_bytes_per_second: job.limits.max_bytes_per_second,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            attempt: job.attempt,
            error: job.error,
            headers: job.header_names,
            has_access_token: job.has_access_token,
            file_count: job.file_count,
            bytes_done,
            bytes_total,
            progress: progress(bytes_done, bytes_total),
            bytes_per_second,
            cached_bytes,
            cached_seconds_saved: None,
            files,
        }
    }

    /// The view of one job with its files, as single-job responses give it: live counters
    /// from its run here, and the time its cached files saved.
    pub fn single(job: Job, engine: &crate::engine::Engine) -> Self {
        let run = engine.live(job.id);
        let mut view = Self::new(job, run.as_deref(), true);
        view.cached_seconds_saved = match (view.cached_bytes, engine.recent_rate()) {
            (Some(bytes), Some(rate)) if bytes > 0 => Some(bytes as f64 / rate as f64),
            _ => None,
        };
        view
    }
}

fn progress(done: u64, total: Option<u64>) -> Option<f64> {
    match total {
        Some(0) => Some(1.0),
        Some(total) => Some((done as f64 / total as f64).min(1.0)),
        None => None,
    }
}

impl FileView {
    fn new(file: FileRecord, run: Option<&Run>) -> Self {
        let live = run.and_then(|r| r.live.file(file.id));
        let (bytes_done, bytes_total, connections) = match &live {
            Some(live) => (
                live.done(),
                live.total(),
                live.connections.load(std::sync::atomic::Ordering::Relaxed),
            ),
            None => (file.bytes_done, file.bytes_total, 0),
        };
        Self {
            id: file.id,
            index: file.index,
            url: without_userinfo(&file.url),
            path: file.path,
            // A running file's phase, finer than what the store keeps (which wins once the
            // file is done or failed).
            status: live
                .as_ref()
                .and_then(|live| live.phase())
                .filter(|_| file.status.is_under_way())
                .unwrap_or(file.status),
            bytes_done,
            bytes_total,
            sha256: file.sha256.map(|s| s.to_string()),
            cached: file.cached,
            error: file.error,
            connections,
        }
    }
}

impl FileView {
    /// The status as it reads in JSON.
    pub fn status_name(&self) -> &'static str {
        self.status.as_str()
    }
}

fn without_userinfo(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => crate::telemetry::without_userinfo(&url).to_string(),
        Err(_) => raw.to_owned(),
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Query parameters of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Comma-separated statuses to include, e.g. `queued,running`.
    pub status: Option<String>,
    /// Regular expression the description must match.
    pub q: Option<String>,
    /// Page size, 1 to 1000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// The body of `PATCH /v1/jobs/{id}`: at least one change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct JobPatch {
    /// New priority (lower runs first), from -1000000 to 1000000. Not `null`: a job always
    /// has one.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = i64, required = false, minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i64>,
    /// New download rate limit of the job in bytes per second; `null` removes it. Applies at
    /// once to a running job.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub max_bytes_per_second: Option<Option<u64>>,
}

/// A field that may be left out (`None`) but not given as `null` (an error).
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Tells a field given as `null` (`Some(None)`) from a field left out (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::deserialize(deserializer).map(Some)
}

/// The daemon-wide limits that can change at run time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Download rate over all jobs in bytes per second; `null` for none.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub max_bytes_per_second: Option<u64>,
}

/// How many jobs an operation affected.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Count {
    pub count: u64,
}

/// Totals for `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Jobs per status (every status is present).
    pub jobs: std::collections::BTreeMap<String, u64>,
    /// Download rate over all running jobs.
    pub bytes_per_second: u64,
    /// HTTP connections open to origins.
    pub connections_open: u64,
}

/// One webhook delivery of one event of the job to one receiver, as last recorded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Sent as `X-Haul-Delivery`: the same on every attempt, for receivers to de-duplicate.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// The event's `seq`.
    pub event_seq: u64,
    /// The event's `type` (`job.completed`, …).
    pub event_type: String,
    /// The receiver, without user-info or query.
    pub url: String,
    pub target: DeliveryTarget,
    pub status: DeliveryStatus,
    /// Attempts made (0 when the delivery was dropped).
    pub attempts: u32,
    /// The status of the receiver's last answer, if it answered.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_seq: d.event_seq,
            event_type: d.event_type,
            url: d.url,
            target: d.target,
            status: d.status,
            attempts: d.attempts,
            http_status: d.http_status,
            error: d.error,
            created_at: d.created_at,
            updated_at: d.updated_at,
            delivered_at: d.delivered_at,
        }
    }
}

/// A job's webhook deliveries, in event order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// A liveness or readiness answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}
