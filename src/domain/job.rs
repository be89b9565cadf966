//! Jobs: their status machine, priority and the read model the API shows.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{FileRecord, JobId, OnConflict};

/// Where a job is in its life. `completed`, `failed` and `cancelled` are final, though a failed
/// job can be resumed (retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in the store for a free slot.
    Queued,
    /// Claimed by a worker, which holds a lease on it.
    Running,
    /// Stopped by a user; partial files and their progress are kept.
    Paused,
    /// Every file is in place and verified.
    Completed,
    /// At least one file failed for good; `error` says why.
    Failed,
    /// Cancelled by a user; partial files were removed.
    Cancelled,
}

impl JobStatus {
    /// Every status, in the order the API documents them.
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The lowercase name used in JSON, SQL and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// True once nothing more will happen to the job without a user asking.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change a user asks for. The status machine lives in [`Transition::apply`], and only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Stop for good and remove partial files.
    Cancel,
    /// Stop, keeping partial files and progress.
    Pause,
    /// Put a paused (or failed) job back in the queue.
    Resume,
    /// Put a failed job back in the queue to fetch its failed files again; complete files
    /// stay as they are.
    Retry,
    /// Change the priority or limits of a job that has not finished.
    Update,
    /// Forget a finished job.
    Forget,
}

/// What applying a transition to a status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The job moves to this status.
    MoveTo(JobStatus),
    /// The job is already where the user wants it; nothing changes (requests are idempotent).
    Unchanged,
    /// The job is removed from the store.
    Remove,
}

impl Transition {
    /// The verb used in error messages ("job … is completed; it cannot be paused").
    pub fn past_participle(self) -> &'static str {
        match self {
            Self::Cancel => "cancelled",
            Self::Pause => "paused",
            Self::Resume => "resumed",
            Self::Retry => "retried (only a failed job can be)",
            Self::Update => "changed",
            Self::Forget => "deleted",
        }
    }

    /// The status machine. `None` means the transition is illegal from `from` (HTTP 409).
    pub fn apply(self, from: JobStatus) -> Option<Outcome> {
        use JobStatus::*;
        match (self, from) {
            (Self::Cancel, Queued | Running | Paused) => Some(Outcome::MoveTo(Cancelled)),
            (Self::Pause, Queued | Running) => Some(Outcome::MoveTo(Paused)),
            (Self::Pause, Paused) => Some(Outcome::Unchanged),
            (Self::Resume, Paused | Failed) => Some(Outcome::MoveTo(Queued)),
            (Self::Resume, Queued | Running) => Some(Outcome::Unchanged),
            // Not idempotent on purpose: retrying a job that is no longer failed is a mistake
            // worth a 409 (two clients retrying the same job, one of them sees it).
            (Self::Retry, Failed) => Some(Outcome::MoveTo(Queued)),
            (Self::Update, Queued | Running | Paused) => Some(Outcome::Unchanged),
            (Self::Forget, Completed | Failed | Cancelled) => Some(Outcome::Remove),
            _ => None,
        }
    }
}

/// Scheduling priority: lower numbers run first; ties run oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Priority(i32);

impl Priority {
    /// The priority a job gets when the request names none.
    pub const DEFAULT: Priority = Priority(10);
    /// The smallest accepted priority.
    pub const MIN: i32 = -1_000_000;
    /// The largest accepted priority.
    pub const MAX: i32 = 1_000_000;

    /// Accepts `MIN..=MAX`.
    pub fn new(value: i64) -> Option<Self> {
        (i64::from(Self::MIN)..=i64::from(Self::MAX))
            .contains(&value)
            .then_some(Self(value as i32))
    }

    /// The number itself.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A job's own limits; `None` leaves the daemon's setting in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobLimits {
    /// Connections per file at most.
    pub max_connections: Option<u32>,
    /// Smallest range worth another connection, in bytes.
    pub min_segment_size: Option<u64>,
    /// The job's download rate limit, bytes per second.
    pub max_bytes_per_second: Option<u64>,
}

/// Changes to a job that has not finished (`PATCH /v1/jobs/{id}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobChanges {
    pub priority: Option<Priority>,
    /// `Some(None)` removes the job's rate limit.
    pub max_bytes_per_second: Option<Option<u64>>,
}

/// Why a job or file failed, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// A stable kebab-case class: `http-status`, `network`, `checksum-mismatch`, `size-mismatch`,
    /// `invalid-response`, `too-many-redirects`, `file-too-large`, `io`, `path-busy`,
    /// `invalid-destination`, `store`, `files-failed`, `internal`; and `insufficient-storage`
    /// on a job paused for want of disk space (resume it once space is freed).
    #[serde(rename = "type")]
    pub kind: String,
    /// A human-readable explanation. Never contains secrets.
    pub message: String,
    /// The HTTP status that caused the failure, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// A job as the store knows it, with its files. Secrets are not part of it: they are loaded
/// separately by the worker that needs them, so they can never leak through this type.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub status: JobStatus,
    pub priority: Priority,
    pub description: Option<String>,
    /// The `dest` given at submission, relative to the download root.
    pub dest: Option<String>,
    pub on_conflict: OnConflict,
    pub limits: JobLimits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many times a worker has claimed this job.
    pub attempt: u32,
    pub error: Option<JobError>,
    /// Names of the extra request headers (values are secret).
    pub header_names: Vec<String>,
    pub has_access_token: bool,
    pub file_count: u32,
    pub bytes_done: u64,
    /// `None` while the size of any file is unknown.
    pub bytes_total: Option<u64>,
    /// Empty in listings, which carry only the totals above.
    pub files: Vec<FileRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn finished_jobs_cannot_be_cancelled_paused_or_reprioritised() {
        for from in [JobStatus::Completed, JobStatus::Cancelled] {
            for t in [
                Transition::Cancel,
                Transition::Pause,
                Transition::Resume,
                Transition::Update,
            ] {
                assert_eq!(t.apply(from), None, "{t:?} from {from}");
            }
        }
        assert_eq!(Transition::Cancel.apply(JobStatus::Failed), None);
    }

    #[test]
    fn active_jobs_cannot_be_forgotten() {
        for from in [JobStatus::Queued, JobStatus::Running, JobStatus::Paused] {
            assert_eq!(Transition::Forget.apply(from), None);
        }
        assert_eq!(
            Transition::Forget.apply(JobStatus::Failed),
            Some(Outcome::Remove)
        );
    }

    #[test]
    fn pause_and_resume_are_idempotent() {
        assert_eq!(
            Transition::Pause.apply(JobStatus::Paused),
            Some(Outcome::Unchanged)
        );
        assert_eq!(
            Transition::Resume.apply(JobStatus::Queued),
            Some(Outcome::Unchanged)
        );
        assert_eq!(
            Transition::Pause.apply(JobStatus::Running),
            Some(Outcome::MoveTo(JobStatus::Paused))
        );
        assert_eq!(
            Transition::Resume.apply(JobStatus::Failed),
            Some(Outcome::MoveTo(JobStatus::Queued))
        );
    }

    #[test]
    fn only_a_failed_job_can_be_retried() {
        for from in JobStatus::ALL {
            let expected =
                (from == JobStatus::Failed).then_some(Outcome::MoveTo(JobStatus::Queued));
            assert_eq!(Transition::Retry.apply(from), expected, "{from}");
        }
    }

    #[test]
    fn priority_range_is_enforced() {
        assert!(Priority::new(0).is_some());
        assert!(Priority::new(i64::from(Priority::MIN)).is_some());
        assert!(Priority::new(i64::from(Priority::MAX) + 1).is_none());
        assert!(Priority::new(i64::MIN).is_none());
    }
}
