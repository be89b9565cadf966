//! The in-process event bus. Whoever changes a job's status publishes the matching event; the
//! API streams them as Server-Sent Events.
//!
//! Publishing never blocks and never fails: a subscriber that falls more than the channel's
//! capacity behind catches up from the replay buffer, or is told what it lost, rather than
//! slowing a download. Every event gets an id one above the last; the last
//! `event_replay_buffer` events are kept so a client can resume after the id it saw last.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Job, JobError, JobId, JobStatus};

mod bus;
mod replay;

pub use bus::{CatchUp, DEFAULT_REPLAY, EventBus, Resumed};
pub use replay::{EventsLost, LostKind, LostReason};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventKind {
    /// The current state of a job, sent first on a per-job stream.
    #[serde(rename = "job.snapshot")]
    Snapshot,
    /// Submitted, or put back in the queue by a resume.
    #[serde(rename = "job.queued")]
    Queued,
    /// A worker claimed it and began.
    #[serde(rename = "job.started")]
    Started,
    /// Bytes arrived (at most a few events per second per job).
    #[serde(rename = "job.progress")]
    Progress,
    /// A transient failure; the worker tries again after `retry_in_ms`.
    #[serde(rename = "job.retrying")]
    Retrying,
    /// Paused by a user.
    #[serde(rename = "job.paused")]
    Paused,
    /// Every file is in place and verified.
    #[serde(rename = "job.completed")]
    Completed,
    /// Failed for good; see `error`.
    #[serde(rename = "job.failed")]
    Failed,
    /// Cancelled by a user.
    #[serde(rename = "job.cancelled")]
    Cancelled,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Snapshot => "job.snapshot",
            Self::Queued => "job.queued",
            Self::Started => "job.started",
            Self::Progress => "job.progress",
            Self::Retrying => "job.retrying",
            Self::Paused => "job.paused",
            Self::Completed => "job.completed",
            Self::Failed => "job.failed",
            Self::Cancelled => "job.cancelled",
        }
    }

    /// The event that announces a job reaching `status`.
    pub fn for_status(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Started,
            JobStatus::Paused => Self::Paused,
            JobStatus::Completed => Self::Completed,
            JobStatus::Failed => Self::Failed,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// One event: the SSE `data:` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// The event's id, the SSE `id:`: one above the previous event's, over every job. Ids
    /// of a restarted daemon start above the previous run's.
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[schema(value_type = String, format = Uuid)]
    pub job_id: JobId,
    pub status: JobStatus,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Recent download rate, on progress events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// On `job.retrying`: how long until the next attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    pub at: DateTime<Utc>,
}

impl JobEvent {
    /// An event describing `job` as it is now.
    pub fn about(kind: EventKind, job: &Job) -> Self {
        Self {
            seq: 0,
            kind,
            job_id: job.id,
            status: job.status,
            bytes_done: job.bytes_done,
            bytes_total: job.bytes_total,
            bytes_per_second: None,
            error: job.error.clone(),
            retry_in_ms: None,
            at: Utc::now(),
        }
    }
}

impl JobEvent {
    /// The event of a job that reached `status` (completed, failed…) with these byte totals.
    pub fn ended(
        job_id: JobId,
        status: JobStatus,
        bytes_done: u64,
        bytes_total: Option<u64>,
        error: Option<JobError>,
    ) -> Self {
        Self {
            kind: EventKind::for_status(status),
            status,
            error,
            ..Self::progress(job_id, bytes_done, bytes_total)
        }
    }

    /// A `job.progress` event of a running job.
    pub fn progress(job_id: JobId, bytes_done: u64, bytes_total: Option<u64>) -> Self {
        Self {
            seq: 0,
            kind: EventKind::Progress,
            job_id,
            status: JobStatus::Running,
            bytes_done,
            bytes_total,
            bytes_per_second: None,
            error: None,
            retry_in_ms: None,
            at: Utc::now(),
        }
    }
}
