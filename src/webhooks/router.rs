//! The router: reads the event bus and puts each event on the queue of every receiver that
//! wants it: the global subscriptions whose filter it passes, and the job's own callback.
//!
//! It never waits for a receiver: a full queue drops the delivery (recorded as `dropped`).
//! A job's callback URL is read from the store at the job's first event and cached until the
//! job finishes or pauses; as long as no job has one, nothing is read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::delivery::{self, Outgoing, Target};
use crate::config::Secret;
use crate::domain::{DeliveryStatus, DeliveryTarget, JobId, JobStatus};
use crate::events::{EventBus, EventKind, JobEvent};
use crate::store::{Store, StoreError};
use crate::telemetry::redact_url;

/// A global subscription and the events it wants (`None`: all).
pub(super) struct Subscription {
    pub target: Arc<Target>,
    pub events: Option<Vec<EventKind>>,
}

/// Which queue a delivery goes on.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Subscription(usize),
    Callback(url::Url),
}

/// A receiver's queue, as the router holds it.
struct Queue {
    target: Arc<Target>,
    sender: mpsc::Sender<Outgoing>,
    /// Fired when the queue's delivery task has ended: a queue opened after this one (it
    /// closed when idle) waits for it, so deliveries to a receiver stay one at a time, in order.
    ended: CancellationToken,
    /// Deliveries dropped because the queue was full, for the log.
    dropped: u64,
}

/// The task between the bus and the receivers' queues; see the module documentation.
pub(super) struct Router {
    ctx: Arc<Context>,
    store: Store,
    subscriptions: Vec<Subscription>,
    /// Signs deliveries to callback URLs.
    callback_secret: Secret,
    /// False while no job has a callback URL: no store lookups then.
    callbacks_exist: Arc<AtomicBool>,
    queues: HashMap<Key, Queue>,
    /// Each active job's callback URL (or none), read once per run of the job.
    callbacks: HashMap<JobId, Option<url::Url>>,
}

impl Router {
    pub fn new(
        ctx: Arc<Context>,
        store: Store,
        subscriptions: Vec<Subscription>,
        callback_secret: Secret,
        callbacks_exist: Arc<AtomicBool>,
    ) -> Self {
        Self {
            ctx,
            store,
            subscriptions,
            callback_secret,
            callbacks_exist,
            queues: HashMap::new(),
            callbacks: HashMap::new(),
        }
    }

    /// Routes events until the daemon shuts down or the bus closes. Fallen behind the bus
    /// (a slow store lookup, a burst of events), it catches up from the bus's replay buffer,
    /// as an event stream does; only events gone from the buffer too are missed, and logged.
    pub async fn run(
        mut self,
        bus: EventBus,
        mut events: broadcast::Receiver<Arc<JobEvent>>,
        mut last: u64,
    ) {
        loop {
            let received = tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => break,
                received = events.recv() => received,
            };
            match received {
                Ok(event) if event.seq <= last => {}
                Ok(event) => {
                    last = event.seq;
                    self.route(event).await;
                }
                Err(RecvError::Lagged(_)) => {
                    let catch_up = bus.catch_up(last, None);
                    if let Some(lost) = &catch_up.lost {
                        tracing::warn!(
                            after = lost.last_event_id,
                            first_available = lost.first_available_id,
                            "webhooks fell behind the event bus beyond its replay buffer; \
                             events were missed"
                        );
                    }
                    for event in catch_up.events {
                        last = last.max(event.seq);
                        self.route(event).await;
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
        tracing::debug!("webhook router stopped");
    }

    async fn route(&mut self, event: Arc<JobEvent>) {
        let mut targets: Vec<(Key, Arc<Target>)> = self
            .subscriptions
            .iter()
            .enumerate()
            .filter(|(_, sub)| {
                sub.events
                    .as_ref()
                    .is_none_or(|kinds| kinds.contains(&event.kind))
            })
            .map(|(i, sub)| (Key::Subscription(i), sub.target.clone()))
            .collect();
        if let Some(url) = self.callback_of(&event).await {
            let target = Arc::new(Target {
                shown: redact_url(&url),
                url: url.clone(),
                secret: self.callback_secret.clone(),
                kind: DeliveryTarget::Callback,
            });
            targets.push((Key::Callback(url), target));
        }
        if targets.is_empty() {
            return;
        }
        // Serialised once: every receiver gets (and signs) the same bytes.
        let body = match serde_json::to_vec(&*event) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                tracing::warn!(error.message = %err, "cannot serialise an event for webhooks");
                return;
            }
        };
        for (key, target) in targets {
            self.enqueue(key, target, &event, &body);
        }
    }

    /// The job's callback URL, from the cache or the store.
    async fn callback_of(&mut self, event: &JobEvent) -> Option<url::Url> {
        if !self.callbacks_exist.load(Ordering::Acquire) {
            return None;
        }
        let url = match self.callbacks.get(&event.job_id) {
            Some(url) => url.clone(),
            None => match self.store.callback_url(event.job_id).await {
                Ok(raw) => {
                    let url = raw.and_then(|raw| url::Url::parse(&raw).ok());
                    self.callbacks.insert(event.job_id, url.clone());
                    url
                }
                // Forgotten meanwhile: nothing to call back.
                Err(StoreError::NotFound(_)) => None,
                Err(err) => {
                    tracing::warn!(
                        job.id = %event.job_id,
                        error.message = %err,
                        "cannot read the job's callback URL; its {} is not called back",
                        event.kind.name()
                    );
                    return None;
                }
            },
        };
        // Nothing happens to a finished or paused job until a user acts, which starts anew.
        if event.status.is_finished() || event.status == JobStatus::Paused {
            self.callbacks.remove(&event.job_id);
        }
        url
    }

    /// Puts the event on the receiver's queue, opening the queue if it has none (or the old
    /// one closed when idle); records a drop when the queue is full.
    fn enqueue(&mut self, key: Key, target: Arc<Target>, event: &Arc<JobEvent>, body: &Bytes) {
        let outgoing = Outgoing {
            id: uuid::Uuid::now_v7(),
            event: event.clone(),
            body: body.clone(),
        };
        let open = self
            .queues
            .get(&key)
            .is_some_and(|queue| !queue.sender.is_closed());
        if !open {
            let previous = self.queues.get(&key).map(|queue| queue.ended.clone());
            // Forget queues whose tasks have ended, so callbacks of old jobs do not pile up.
            self.queues.retain(|_, queue| !queue.ended.is_cancelled());
            let queue = self.ctx.open_queue(target, previous);
            self.queues.insert(key.clone(), queue);
        }
        let Some(queue) = self.queues.get_mut(&key) else {
            return;
        };
        let outgoing = match queue.sender.try_send(outgoing) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(outgoing)) => outgoing,
            // The queue closed (idle) between the check and the send: open a new one.
            Err(mpsc::error::TrySendError::Closed(outgoing)) => {
                let fresh = self
                    .ctx
                    .open_queue(queue.target.clone(), Some(queue.ended.clone()));
                *queue = fresh;
                match queue.sender.try_send(outgoing) {
                    Ok(()) => return,
                    Err(err) => err.into_inner(),
                }
            }
        };
        queue.dropped += 1;
        if queue.dropped == 1 || queue.dropped % 100 == 0 {
            tracing::warn!(
                job.id = %outgoing.event.job_id,
                webhook.url = %queue.target.shown,
                dropped = queue.dropped,
                "the webhook queue of {} is full; dropped {} deliveries so far",
                queue.target.shown,
                queue.dropped
            );
        }
        let mut record = outgoing.record(&queue.target, DeliveryStatus::Dropped);
        record.error = Some(format!(
            "not sent: {} deliveries were already waiting for this receiver",
            self.ctx.queue_capacity
        ));
        // The log's own queue may be full too: then the drop is only counted above.
        let _ = self.ctx.recorder.try_send(record);
    }
}

impl Context {
    /// Starts a queue task for `target` and returns the router's end of it.
    /// A new queue to `target` and its delivery task, which starts once the task of the
    /// receiver's previous queue (`after`) has ended.
    fn open_queue(
        self: &Arc<Self>,
        target: Arc<Target>,
        after: Option<CancellationToken>,
    ) -> Queue {
        let (sender, receiver) = mpsc::channel(self.queue_capacity);
        let ended = CancellationToken::new();
        let order = (after, ended.clone());
        self.tracker
            .spawn(delivery::run(self.clone(), target.clone(), receiver, order));
        Queue {
            target,
            sender,
            ended,
            dropped: 0,
        }
    }
}
