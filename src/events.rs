//! The in-process event bus. Whoever changes a job's status publishes the matching event; the
//! API streams them as Server-Sent Events.
//!
//! Publishing never blocks and never fails: a subscriber that falls more than the channel's
//! capacity behind misses events (and is told so), rather than slowing a download.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::domain::{Job, JobError, JobId, JobStatus};

/// How many events a slow subscriber may fall behind before it misses some.
const CAPACITY: usize = 4096;

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
    /// Increases by one with every event this daemon publishes; the SSE `id:`.
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

/// Fan-out of events to every subscriber. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    /// Numbering and sending happen under one lock, so subscribers see ids in order even
    /// when several tasks publish at once (sending never blocks).
    sender: Arc<Mutex<broadcast::Sender<Arc<JobEvent>>>>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscribers yet.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self {
            sender: Arc::new(Mutex::new(sender)),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Stamps the event with the next sequence number and sends it to every subscriber.
    pub fn publish(&self, mut event: JobEvent) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        event.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // No subscriber is not an error: events are for whoever is listening now.
        let _ = sender.send(Arc::new(event));
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobEvent>> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subscribe()
    }

    /// A receiver of every event published from now on, and the sequence number of the last
    /// event published before it: every event it receives has a higher one.
    pub fn subscribe_after(&self) -> (broadcast::Receiver<Arc<JobEvent>>, u64) {
        // `publish` stamps and sends under the same lock: nothing falls between the two.
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        (sender.subscribe(), self.seq.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> JobEvent {
        JobEvent {
            seq: 0,
            kind,
            job_id: JobId::new(),
            status: JobStatus::Queued,
            bytes_done: 0,
            bytes_total: None,
            bytes_per_second: None,
            error: None,
            retry_in_ms: None,
            at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn subscribers_see_events_in_order_with_increasing_ids() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        bus.publish(event(EventKind::Queued));
        bus.publish(event(EventKind::Started));
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!((first.kind, first.seq), (EventKind::Queued, 1));
        assert_eq!((second.kind, second.seq), (EventKind::Started, 2));
        let json = serde_json::to_value(&*first).unwrap();
        assert_eq!(json["type"], "job.queued");
    }

    #[tokio::test]
    async fn a_subscription_knows_the_last_event_before_it() {
        let bus = EventBus::new();
        bus.publish(event(EventKind::Queued));
        bus.publish(event(EventKind::Started));
        let (mut rx, before) = bus.subscribe_after();
        assert_eq!(before, 2);
        bus.publish(event(EventKind::Completed));
        let next = rx.recv().await.unwrap();
        assert_eq!((next.kind, next.seq), (EventKind::Completed, 3));
    }
}
