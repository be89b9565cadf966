//! Shared limits: bandwidth (token buckets, global and per job) and connections per host.
//!
//! Both are shared by every connection that touches them, across files and jobs, and both can
//! change while downloads run: a new rate from the API, a host that answered 429/503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::FetchError;

/// A token bucket: at most `rate` bytes per second on average, with a burst of a tenth of a
/// second (at least 64 KiB). A rate of 0 means no limit.
#[derive(Debug)]
pub struct Throttle {
    rate: AtomicU64,
    /// Tokens and when they were counted (tokio's clock, so tests can pause time).
    bucket: Mutex<(f64, tokio::time::Instant)>,
}

impl Throttle {
    /// A bucket with `rate` bytes per second (`None` or 0: unlimited).
    pub fn new(rate: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            rate: AtomicU64::new(rate.unwrap_or(0)),
            bucket: Mutex::new((0.0, tokio::time::Instant::now())),
        })
    }

    /// The limit in bytes per second, if any.
    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// Changes the limit; connections follow at their next chunk.
    pub fn set_rate(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    /// Takes `bytes` from the bucket, waiting as long as that overdraws it.
    pub async fn consume(&self, bytes: u64) {
        let Some(rate) = self.rate() else { return };
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let (tokens, at) = &mut *bucket;
            let now = tokio::time::Instant::now();
            let burst = (rate as f64 / 10.0).max(64.0 * 1024.0);
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate as f64).min(burst);
            *at = now;
            *tokens -= bytes as f64;
            (*tokens < 0.0).then(|| Duration::from_secs_f64(-*tokens / rate as f64))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Pays `bytes` to the daemon's and the job's buckets at once, unless `stop` fires first.
pub async fn pay(
    global: &Throttle,
    job: &Throttle,
    bytes: u64,
    stop: &CancellationToken,
) -> Result<(), FetchError> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(FetchError::Stopped),
        _ = async { tokio::join!(global.consume(bytes), job.consume(bytes)) } => Ok(()),
    }
}

/// How a host is doing.
#[derive(Debug)]
struct Host {
    /// Connections allowed now: the configured budget, halved on each 429/503.
    limit: usize,
    in_use: usize,
    /// No new connection before this (a `Retry-After`).
    paused_until: Option<Instant>,
    /// When the host last pushed back; the limit grows again after a quiet while.
    last_pushback: Option<Instant>,
}

/// Connections per host, shared by all jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hosts {
    inner: Arc<HostsInner>,
}

#[derive(Debug)]
struct HostsInner {
    budget: usize,
    hosts: Mutex<HashMap<String, Host>>,
    freed: Notify,
}

/// A connection slot on a host; freed when dropped.
#[derive(Debug)]
pub struct HostPermit {
    hosts: Hosts,
    host: String,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        if let Some(host) = self.hosts.lock().get_mut(&self.host) {
            host.in_use = host.in_use.saturating_sub(1);
        }
        self.hosts.inner.freed.notify_waiters();
    }
}

/// How long a host must stay quiet after a 429/503 before its budget grows by one.
const RECOVERY: Duration = Duration::from_secs(5);

impl Hosts {
    /// A budget of `per_host` connections for each host.
    pub fn new(per_host: usize) -> Self {
        Self {
            inner: Arc::new(HostsInner {
                budget: per_host.max(1),
                hosts: Mutex::new(HashMap::new()),
                freed: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Host>> {
        self.inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot on `host` if one is free now (and the host is not paused).
    pub fn try_acquire(&self, host: &str) -> Option<HostPermit> {
        let mut hosts = self.lock();
        let budget = self.inner.budget;
        let state = hosts.entry(host.to_owned()).or_insert(Host {
            limit: budget,
            in_use: 0,
            paused_until: None,
            last_pushback: None,
        });
        let now = Instant::now();
        if state.paused_until.is_some_and(|until| until > now) {
            return None;
        }
        if state.limit < budget && state.last_pushback.is_none_or(|at| now - at >= RECOVERY) {
            state.limit += 1;
            state.last_pushback = Some(now);
        }
        (state.in_use < state.limit).then(|| {
            state.in_use += 1;
            HostPermit {
                hosts: self.clone(),
                host: host.to_owned(),
            }
        })
    }

    /// Waits for a slot on `host`.
    pub async fn acquire(&self, host: &str) -> HostPermit {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(permit) = self.try_acquire(host) {
                return permit;
            }
            let pause = self.lock().get(host).and_then(|h| h.paused_until);
            // A paused host frees no slot: wake up when the pause ends, or at least now and then.
            let wake = pause.map_or(Duration::from_millis(500), |until| {
                until.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// The host answered 429 or 503: halve its budget and honour `Retry-After`.
    pub fn push_back(&self, host: &str, retry_after: Option<Duration>) {
        let mut hosts = self.lock();
        if let Some(state) = hosts.get_mut(host) {
            let now = Instant::now();
            state.limit = (state.limit / 2).max(1);
            state.last_pushback = Some(now);
            state.paused_until = retry_after.map(|wait| now + wait);
            tracing::info!(
                host,
                limit = state.limit,
                "{host} pushed back; using at most {} connections",
                state.limit
            );
        }
    }

    /// Connections allowed on `host` now.
    pub fn limit(&self, host: &str) -> usize {
        self.lock().get(host).map_or(self.inner.budget, |h| h.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate() {
        let throttle = Throttle::new(Some(1_000_000));
        let started = tokio::time::Instant::now();
        for _ in 0..100 {
            throttle.consume(50_000).await;
        }
        // 5 MB at 1 MB/s, less the initial burst of 100 KB.
        let took = started.elapsed().as_secs_f64();
        assert!((4.8..5.1).contains(&took), "{took}");
        throttle.set_rate(None);
        let before = tokio::time::Instant::now();
        throttle.consume(u64::MAX / 2).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[test]
    fn hosts_share_a_budget_and_back_off() {
        let hosts = Hosts::new(4);
        let permits: Vec<_> = (0..4).map(|_| hosts.try_acquire("a").unwrap()).collect();
        assert!(hosts.try_acquire("a").is_none(), "the budget is per host");
        assert!(
            hosts.try_acquire("b").is_some(),
            "other hosts are not affected"
        );
        hosts.push_back("a", None);
        assert_eq!(hosts.limit("a"), 2);
        drop(permits);
        let again: Vec<_> = (0..2).filter_map(|_| hosts.try_acquire("a")).collect();
        assert_eq!(again.len(), 2);
        assert!(hosts.try_acquire("a").is_none(), "halved after a push back");
        hosts.push_back("a", Some(Duration::from_secs(60)));
        drop(again);
        assert!(
            hosts.try_acquire("a").is_none(),
            "paused while Retry-After runs"
        );
    }

    #[tokio::test]
    async fn a_waiter_gets_the_freed_slot() {
        let hosts = Hosts::new(1);
        let held = hosts.try_acquire("a").unwrap();
        let waiter = tokio::spawn({
            let hosts = hosts.clone();
            async move { hosts.acquire("a").await }
        });
        tokio::task::yield_now().await;
        drop(held);
        let permit = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        drop(permit);
    }
}
