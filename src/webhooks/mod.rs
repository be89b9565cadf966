//! Webhooks: every event of the bus, POSTed as JSON to the global subscriptions of the
//! settings and to each job's own `callback_url`, signed with HMAC-SHA256
//! (`X-Haul-Signature: sha256=<hex>` over the exact body bytes).
//!
//! Delivery is at least once while the daemon runs: each receiver has its own bounded queue
//! and task ([`delivery`]), which retries a failed attempt (connection error, timeout,
//! non-2xx) with exponential backoff and jitter up to `webhook_max_attempts`; the receiver
//! de-duplicates by `X-Haul-Delivery`. Nothing here can slow a download or the bus: the
//! [`router`] only ever `try_send`s, and a full queue drops the delivery, recording it as
//! `dropped`. Every delivery's state goes to the delivery log ([`recorder`]); deliveries still
//! queued or waiting for a retry at shutdown are lost.

mod delivery;
mod recorder;
mod router;
pub mod secret;
pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Secret, WebhookSubscription};
use crate::domain::{Delivery, DeliveryTarget};
use crate::events::{EventBus, EventKind};
use crate::fetch::RetryPolicy;
use crate::fetch::{AddressPolicy, address_policy::PolicyResolver};
use crate::store::Store;
use crate::telemetry::redact_url;

/// Delivery states that may wait for the delivery log before a queue is held up.
const RECORDER_CAPACITY: usize = 4096;

/// The event type of a name as the bus publishes it (`job.completed`, …); `None` for an
/// unknown name and for `job.snapshot`, which only per-job streams send.
pub fn event_kind(name: &str) -> Option<EventKind> {
    serde_json::from_value(serde_json::Value::from(name))
        .ok()
        .filter(|kind| *kind != EventKind::Snapshot)
}

/// What the webhooks need from the settings.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub subscriptions: Vec<WebhookSubscription>,
    /// Signs deliveries to `callback_url`s.
    pub callback_secret: Secret,
    /// Time allowed for one request, connecting included.
    pub timeout: Duration,
    /// Attempts per delivery and the backoff between them.
    pub retry: RetryPolicy,
    /// Deliveries waiting per receiver.
    pub queue_capacity: usize,
    /// `User-Agent` of the requests, the same as towards origins.
    pub user_agent: String,
    /// The downloads' address policy. A job's `callback_url` is chosen by whoever submits
    /// the job, like a download URL, so it is judged by it (its name when resolved, an IP
    /// literal before every attempt); the global subscriptions are the operator's choice
    /// and are not.
    pub policy: AddressPolicy,
}

/// The clients deliveries go out on. Two, because one resolver cannot tell a subscription's
/// host from a callback's of the same name: a callback to `localhost` must not be trusted
/// because the operator put a subscription there.
#[derive(Clone)]
struct Clients {
    /// For the global subscriptions: names not judged.
    subscriptions: reqwest::Client,
    /// For jobs' callback URLs: every name judged by the address policy, none trusted.
    callbacks: reqwest::Client,
}

impl Clients {
    /// Neither takes a proxy from the environment (`HTTP_PROXY`, `ALL_PROXY`, …): a proxy
    /// would resolve a callback's name itself, out of the policy's sight, and the downloads
    /// do not use one either — a daemon's proxies are its configuration's choice.
    fn new(settings: &WebhookSettings) -> reqwest::Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(&settings.user_agent)
                .connect_timeout(settings.timeout)
                .no_proxy()
                // A receiver that redirects is misconfigured; following it could post events
                // (and their signatures) somewhere nobody chose.
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Self {
            subscriptions: builder().build()?,
            callbacks: builder()
                .dns_resolver(PolicyResolver::new(settings.policy, Vec::new()))
                .build()?,
        })
    }
}

/// What every queue shares.
struct Context {
    clients: Clients,
    /// Judges a callback URL's IP literal before every attempt: the job may have been stored
    /// under a looser policy than the one the daemon runs with now.
    policy: AddressPolicy,
    timeout: Duration,
    retry: RetryPolicy,
    queue_capacity: usize,
    recorder: mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Context {
    /// Hands a delivery's state to the log; waits if the log is behind (holding up only this
    /// queue), and gives up silently once the log has stopped at shutdown.
    async fn record(&self, state: Delivery) {
        let _ = self.recorder.send(state).await;
    }
}

/// The webhook sender. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    settings: WebhookSettings,
    /// Whether any job may have a callback URL: until one does, the router does not look
    /// callbacks up in the store at all (the common case costs nothing per job).
    callbacks: Arc<AtomicBool>,
    clients: Clients,
    store: Store,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Webhooks {
    /// Webhooks that do nothing until [`Webhooks::start`]. `callbacks` says whether the
    /// store holds jobs with a callback URL already.
    pub fn new(
        settings: WebhookSettings,
        store: Store,
        callbacks: bool,
        shutdown: CancellationToken,
    ) -> reqwest::Result<Self> {
        let clients = Clients::new(&settings)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                callbacks: Arc::new(AtomicBool::new(callbacks)),
                clients,
                store,
                shutdown,
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// Subscribes to `events` now (every event published from here on is delivered) and
    /// starts the router and the delivery log. They stop when the shutdown token fires.
    pub fn start(&self, events: &EventBus) {
        let inner = &self.inner;
        let (recorder, states) = mpsc::channel(RECORDER_CAPACITY);
        let ctx = Arc::new(Context {
            clients: inner.clients.clone(),
            policy: inner.settings.policy,
            timeout: inner.settings.timeout,
            retry: inner.settings.retry,
            queue_capacity: inner.settings.queue_capacity,
            recorder,
            shutdown: inner.shutdown.clone(),
            tracker: inner.tracker.clone(),
        });
        let router = router::Router::new(
            ctx,
            inner.store.clone(),
            subscriptions(&inner.settings.subscriptions),
            inner.settings.callback_secret.clone(),
            inner.callbacks.clone(),
        );
        let live = events.resume(None, None);
        inner
            .tracker
            .spawn(router.run(events.clone(), live.receiver, live.catch_up.last_id));
        inner
            .tracker
            .spawn(recorder::run(inner.store.clone(), states));
    }

    /// Tells the router that jobs with a callback URL exist now. Call it before the job's
    /// first event is published.
    pub fn expect_callbacks(&self) {
        self.inner.callbacks.store(true, Ordering::Release);
    }

    /// Waits until the router, every queue and the delivery log have stopped, at most
    /// `grace`. Returns how many tasks were still running when it ended.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.inner.tracker.close();
        match tokio::time::timeout(grace, self.inner.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.inner.tracker.len(),
        }
    }
}

/// The subscriptions of the settings as receivers (the settings validated their URLs).
fn subscriptions(configured: &[WebhookSubscription]) -> Vec<router::Subscription> {
    configured
        .iter()
        .filter_map(|hook| {
            let url = url::Url::parse(&hook.url).ok()?;
            let events = hook
                .events
                .as_ref()
                .map(|names| names.iter().filter_map(|n| event_kind(n)).collect());
            Some(router::Subscription {
                target: Arc::new(delivery::Target {
                    shown: redact_url(&url),
                    url,
                    secret: hook.secret.clone(),
                    kind: DeliveryTarget::Subscription,
                }),
                events,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_those_of_the_bus() {
        assert_eq!(event_kind("job.completed"), Some(EventKind::Completed));
        assert_eq!(event_kind("job.progress"), Some(EventKind::Progress));
        assert_eq!(event_kind("job.snapshot"), None);
        assert_eq!(event_kind("completed"), None);
    }
}
