//! The replay buffer: the last events the bus published, so that a client reconnecting with
//! `Last-Event-ID` gets what it missed, and the marker it gets when some of that is gone.
//!
//! Ids are consecutive, so the buffer finds the first event after an id by arithmetic; it
//! holds `Arc`s shared with the live channel, so keeping an event costs a pointer.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::JobEvent;
use crate::domain::JobId;

/// The last `capacity` events, oldest first.
#[derive(Debug)]
pub(super) struct Ring {
    events: VecDeque<Arc<JobEvent>>,
    capacity: usize,
}

impl Ring {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            // Grows as events come rather than reserving the whole ring at start-up.
            events: VecDeque::new(),
            capacity,
        }
    }

    /// Keeps `event`, forgetting the oldest one when the ring is full.
    pub(super) fn push(&mut self, event: Arc<JobEvent>) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The id of the oldest event kept.
    pub(super) fn first_id(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// Every kept event with an id above `after` (of job `only`, when given), oldest first.
    pub(super) fn after(&self, after: u64, only: Option<JobId>) -> Vec<Arc<JobEvent>> {
        let Some(first) = self.first_id() else {
            return Vec::new();
        };
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.events
            .iter()
            .skip(skip)
            .filter(|e| only.is_none_or(|id| id == e.job_id))
            .cloned()
            .collect()
    }
}

/// Why some events after the id a client gave cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LostReason {
    /// They are older than the replay buffer reaches (`event_replay_buffer`), or the
    /// connection fell that far behind.
    Evicted,
    /// The id is from before the daemon started: every event of that time is gone.
    Restarted,
    /// This daemon never gave out that id (it is above the last one).
    Unknown,
}

/// The SSE `type` of the marker: always `events.lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum LostKind {
    #[serde(rename = "events.lost")]
    EventsLost,
}

/// Sent (as `event: events.lost`, without an `id:`) before whatever could still be replayed,
/// when events after the client's `Last-Event-ID` are gone. The client should refresh the
/// state it keeps (`GET /v1/jobs`, or the `job.snapshot` a job's stream sends next).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventsLost {
    #[serde(rename = "type")]
    pub kind: LostKind,
    pub reason: LostReason,
    /// The id the client asked to continue after.
    pub last_event_id: u64,
    /// The oldest event the daemon could still send; events between `last_event_id` and this
    /// one are lost.
    pub first_available_id: u64,
    pub at: DateTime<Utc>,
}

/// The bus's numbering as a replay sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Numbering {
    /// The id of this daemon's first event.
    pub first_of_life: u64,
    /// The id of the oldest event still buffered (the next id when nothing is).
    pub oldest_kept: u64,
    /// The id of the last event published.
    pub last: u64,
}

impl Numbering {
    /// What is lost for a client that has seen every event up to `after`, if anything.
    pub(super) fn lost_after(self, after: u64) -> Option<EventsLost> {
        let reason = if after > self.last {
            LostReason::Unknown
        } else if after.saturating_add(1) >= self.oldest_kept {
            return None;
        } else if after.saturating_add(1) < self.first_of_life {
            LostReason::Restarted
        } else {
            LostReason::Evicted
        };
        Some(EventsLost {
            kind: LostKind::EventsLost,
            reason,
            last_event_id: after,
            first_available_id: self.oldest_kept,
            at: Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobStatus;

    fn event(seq: u64, job_id: JobId) -> Arc<JobEvent> {
        let mut event = JobEvent::progress(job_id, seq, None);
        event.seq = seq;
        event.status = JobStatus::Running;
        Arc::new(event)
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_finds_those_after_an_id() {
        let (a, b) = (JobId::new(), JobId::new());
        let mut ring = Ring::new(3);
        for seq in 11..=15 {
            ring.push(event(seq, if seq % 2 == 0 { a } else { b }));
        }
        let ids = |events: Vec<Arc<JobEvent>>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(ring.first_id(), Some(13));
        assert_eq!(ids(ring.after(0, None)), [13, 14, 15]);
        assert_eq!(ids(ring.after(13, None)), [14, 15]);
        assert_eq!(ids(ring.after(15, None)), Vec::<u64>::new());
        assert_eq!(ids(ring.after(u64::MAX, None)), Vec::<u64>::new());
        assert_eq!(ids(ring.after(12, Some(a))), [14]);
        let mut none = Ring::new(0);
        none.push(event(1, a));
        assert_eq!(none.first_id(), None);
        assert!(none.after(0, None).is_empty());
    }

    #[test]
    fn loss_is_told_apart_from_a_complete_replay() {
        let numbering = Numbering {
            first_of_life: 1_000,
            oldest_kept: 1_100,
            last: 1_200,
        };
        let reason = |after| numbering.lost_after(after).map(|l| l.reason);
        assert_eq!(reason(1_099), None, "the next event is still kept");
        assert_eq!(reason(1_200), None, "nothing happened since");
        assert_eq!(reason(1_098), Some(LostReason::Evicted));
        assert_eq!(
            reason(999),
            Some(LostReason::Evicted),
            "the first event is gone"
        );
        assert_eq!(reason(998), Some(LostReason::Restarted));
        assert_eq!(reason(1_201), Some(LostReason::Unknown));
        let lost = numbering.lost_after(5).unwrap();
        assert_eq!((lost.last_event_id, lost.first_available_id), (5, 1_100));
        let json = serde_json::to_value(&lost).unwrap();
        assert_eq!(json["type"], "events.lost");
        assert_eq!(json["reason"], "restarted");
    }
}
