//! The bus itself: numbering, the replay buffer and the live channel, under one lock.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::JobEvent;
use super::replay::{EventsLost, Numbering, Ring};
use crate::domain::JobId;

/// How many events a slow subscriber may fall behind before it must catch up from the
/// replay buffer.
const CAPACITY: usize = 4096;

/// Events kept for replay unless the settings say otherwise (`event_replay_buffer`).
pub const DEFAULT_REPLAY: usize = 4096;

/// Fan-out of events to every subscriber, with the last ones kept for replay. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    /// Numbering, buffering and sending happen under one lock, so subscribers see ids in
    /// order even when several tasks publish at once, and a subscription taken with a replay
    /// neither misses nor repeats an event (sending never blocks).
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<Arc<JobEvent>>,
    /// The id of the last event published (the id before the first one, at first).
    last: u64,
    /// The id of this daemon's first event.
    first_of_life: u64,
    ring: Ring,
}

impl Inner {
    fn numbering(&self) -> Numbering {
        Numbering {
            first_of_life: self.first_of_life,
            oldest_kept: self.ring.first_id().unwrap_or(self.last + 1),
            last: self.last,
        }
    }

    fn catch_up(&self, after: Option<u64>, only: Option<JobId>) -> CatchUp {
        let Some(after) = after else {
            return CatchUp {
                events: Vec::new(),
                lost: None,
                last_id: self.last,
            };
        };
        CatchUp {
            events: self.ring.after(after, only),
            lost: self.numbering().lost_after(after),
            last_id: self.last,
        }
    }
}

/// What a client that has seen the events up to some id missed since.
#[derive(Debug)]
pub struct CatchUp {
    /// The buffered events after that id (of one job, when asked), oldest first.
    pub events: Vec<Arc<JobEvent>>,
    /// Set when some events after that id are no longer buffered.
    pub lost: Option<EventsLost>,
    /// The id of the last event published when the catch-up was taken: a subscription taken
    /// with it receives exactly the events after this one.
    pub last_id: u64,
}

/// A live subscription and what came before it.
#[derive(Debug)]
pub struct Resumed {
    pub receiver: broadcast::Receiver<Arc<JobEvent>>,
    pub catch_up: CatchUp,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY)
    }
}

impl EventBus {
    /// A bus that keeps the last `replay` events for clients that reconnect.
    ///
    /// Ids start above any id a previous run of the daemon can have given out: the first is
    /// the start time in microseconds since the epoch. So an id from before a restart is
    /// recognised as such (at a million events a second a run would have to outpace the
    /// clock to break this; a few thousand a second is the real peak).
    pub fn new(replay: usize) -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Self::starting_after(micros, replay)
    }

    /// A bus whose first event gets the id `last + 1`.
    pub fn starting_after(last: u64, replay: usize) -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        let inner = Inner {
            sender,
            last,
            first_of_life: last + 1,
            ring: Ring::new(replay),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stamps the event with the next id, keeps it for replay and sends it to every
    /// subscriber.
    pub fn publish(&self, mut event: JobEvent) {
        let mut inner = self.lock();
        inner.last += 1;
        event.seq = inner.last;
        let event = Arc::new(event);
        inner.ring.push(event.clone());
        // No subscriber is not an error: events are for whoever is listening now.
        let _ = inner.sender.send(event);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobEvent>> {
        self.lock().sender.subscribe()
    }

    /// A receiver of every event published from now on, with the buffered events after
    /// `after` (none when `None`) and whether some are lost. The receiver gets exactly the
    /// events after `catch_up.last_id`: nothing falls between the replay and it.
    pub fn resume(&self, after: Option<u64>, only: Option<JobId>) -> Resumed {
        let inner = self.lock();
        Resumed {
            receiver: inner.sender.subscribe(),
            catch_up: inner.catch_up(after, only),
        }
    }

    /// The buffered events after `after`, for a receiver that fell behind.
    pub fn catch_up(&self, after: u64, only: Option<JobId>) -> CatchUp {
        self.lock().catch_up(Some(after), only)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::JobStatus;
    use crate::events::{EventKind, LostReason};

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
        let bus = EventBus::starting_after(0, 16);
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
        let bus = EventBus::starting_after(0, 16);
        bus.publish(event(EventKind::Queued));
        bus.publish(event(EventKind::Started));
        let Resumed {
            mut receiver,
            catch_up,
        } = bus.resume(None, None);
        assert_eq!(catch_up.last_id, 2);
        assert!(catch_up.events.is_empty() && catch_up.lost.is_none());
        bus.publish(event(EventKind::Completed));
        let next = receiver.recv().await.unwrap();
        assert_eq!((next.kind, next.seq), (EventKind::Completed, 3));
    }

    #[tokio::test]
    async fn a_resumed_subscription_replays_what_was_missed_without_overlap() {
        let bus = EventBus::starting_after(100, 3);
        let job = event(EventKind::Queued);
        let id = job.job_id;
        bus.publish(job.clone());
        bus.publish(event(EventKind::Queued));
        bus.publish(JobEvent {
            kind: EventKind::Started,
            ..job.clone()
        });
        let resumed = bus.resume(Some(101), Some(id));
        let seqs: Vec<u64> = resumed.catch_up.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [103], "only the job's events after 101");
        assert!(resumed.catch_up.lost.is_none());
        bus.publish(event(EventKind::Completed));
        let mut receiver = resumed.receiver;
        assert_eq!(receiver.recv().await.unwrap().seq, 104);
        // 101 fell out of the ring of three; after 100 it is lost, after 99 (before the
        // first id of this bus) the daemon must have restarted.
        let lost = |after| bus.catch_up(after, None).lost.map(|l| l.reason);
        assert_eq!(lost(101), None);
        assert_eq!(lost(100), Some(LostReason::Evicted));
        assert_eq!(lost(99), Some(LostReason::Restarted));
        assert_eq!(lost(105), Some(LostReason::Unknown));
        assert_eq!(bus.catch_up(100, None).events.len(), 3);
    }
}
