//! Per-client rate limit on the routes that create jobs (`POST /v1/jobs`, retry): a token
//! bucket per client, `submit_burst` deep, refilled at `submit_rate_per_second`.
//!
//! A client is its `[[tokens]]` entry when it used one, else its address (an IPv6 client by
//! its /64, which one machine usually has whole). The table of buckets is bounded: when it is
//! full, buckets that have refilled (and so hold nothing a fresh one would not) go first, then
//! the least recently used.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, ErrorCode};
use super::scope;

/// The longest `Retry-After` given.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Most clients tracked at once (a few dozen bytes each).
const MAX_CLIENTS: usize = 10_000;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Token(Arc<str>),
    Address(IpAddr),
    /// No address known (a request not from a socket): one shared bucket.
    Unknown,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Token(name) => write!(f, "token {name}"),
            Client::Address(ip) => write!(f, "address {ip}"),
            Client::Unknown => f.write_str("an unknown client"),
        }
    }
}

impl Client {
    fn of(request: &Request) -> Client {
        if let Some(caller) = request.extensions().get::<Caller>().filter(|c| c.scoped) {
            return Client::Token(caller.name.clone());
        }
        match request.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => Client::Address(match peer.ip().to_canonical() {
                IpAddr::V6(ip) => {
                    let prefix = u128::from(ip) & !u128::from(u64::MAX);
                    IpAddr::V6(Ipv6Addr::from(prefix))
                }
                v4 => v4,
            }),
            None => Client::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Submissions available at `at`.
    level: f64,
    at: Instant,
}

/// The buckets of every client.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `rate_per_second` 0 disables the limit.
    pub fn new(rate_per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate_per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one submission from the client's bucket; if it is empty, how long until it holds
    /// one again.
    fn take(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            level: self.burst,
            at: now,
        });
        let level = self.level(bucket, now);
        if level >= 1.0 {
            *bucket = Bucket {
                level: level - 1.0,
                at: now,
            };
            return Ok(());
        }
        *bucket = Bucket { level, at: now };
        // A rate tiny enough to overflow a Duration waits a day: Retry-After stays sane.
        Err(Duration::try_from_secs_f64((1.0 - level) / self.rate)
            .map_or(MAX_WAIT, |wait| wait.min(MAX_WAIT)))
    }

    fn level(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.level + elapsed * self.rate).min(self.burst)
    }

    /// Drops full buckets (they hold nothing a new one would not), then, if the table is
    /// still full, the least recently used tenth at once: one pass over the table per
    /// `MAX_CLIENTS / 10` new clients, not per request.
    fn make_room(&self, buckets: &mut HashMap<Client, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.level(b, now) < self.burst);
        if buckets.len() < MAX_CLIENTS {
            return;
        }
        let mut by_age: Vec<(Instant, Client)> =
            buckets.iter().map(|(c, b)| (b.at, c.clone())).collect();
        let drop = (MAX_CLIENTS / 10).max(1).min(by_age.len());
        by_age.select_nth_unstable_by_key(drop - 1, |(at, _)| *at);
        for (_, client) in by_age.drain(..drop) {
            buckets.remove(&client);
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Refuses a job-creating request (429 `rate-limited`, with `Retry-After`) when its client's
/// bucket is empty.
pub async fn limit_submissions(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limiter = &state.api.rate;
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let limited = route.is_some_and(|r| scope::creates_jobs(request.method(), r));
    if !limiter.enabled() || !limited {
        return next.run(request).await;
    }
    let client = Client::of(&request);
    let Err(wait) = limiter.take(client.clone(), Instant::now()) else {
        return next.run(request).await;
    };
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    tracing::info!(
        client = %client,
        retry_after_secs = secs,
        "refused a submission from {client}: over submit_rate_per_second"
    );
    let mut error = ApiError::new(
        ErrorCode::RateLimited,
        "this client submits jobs faster than the daemon allows; retry after `Retry-After` \
         seconds",
    );
    error.retry_after = Some(secs);
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        let me = || Client::Address("10.0.0.1".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(limiter.take(me(), start), Ok(()));
        }
        let wait = limiter.take(me(), start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        assert_eq!(limiter.take(Client::Unknown, start), Ok(()));
        let later = start + Duration::from_millis(499);
        assert!(limiter.take(me(), later).is_err());
        assert_eq!(
            limiter.take(me(), start + Duration::from_millis(500)),
            Ok(())
        );
        // A long pause refills it to the burst, not beyond.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.take(me(), much_later), Ok(()));
        }
        assert!(limiter.take(me(), much_later).is_err());
    }

    #[test]
    fn the_table_of_clients_stays_bounded() {
        let limiter = RateLimiter::new(1.0, 2);
        let start = Instant::now();
        let client = |i: usize| Client::Token(Arc::from(i.to_string()));
        for i in 0..MAX_CLIENTS + 50 {
            // Each bucket is left below full, so nothing can go as "refilled".
            assert_eq!(limiter.take(client(i), start), Ok(()));
            assert!(limiter.clients() <= MAX_CLIENTS);
        }
        // A full table dropped its least recently used tenth at once, the newest stayed.
        assert!(limiter.clients() > MAX_CLIENTS - MAX_CLIENTS / 10);
        assert_eq!(limiter.take(client(MAX_CLIENTS + 49), start), Ok(()));
        assert!(limiter.take(client(MAX_CLIENTS + 49), start).is_err());
        // Once they have refilled, they make room all at once when the table is full again.
        let later = start + Duration::from_secs(10);
        let mut fresh = 0;
        while limiter.clients() < MAX_CLIENTS {
            assert_eq!(limiter.take(client(2 * MAX_CLIENTS + fresh), later), Ok(()));
            fresh += 1;
        }
        assert_eq!(limiter.take(client(usize::MAX), later), Ok(()));
        assert_eq!(limiter.clients(), fresh + 1);
    }

    #[test]
    fn a_tiny_rate_waits_a_day_at_most_and_never_panics() {
        let limiter = RateLimiter::new(1e-30, 1);
        let now = Instant::now();
        let client = Client::Token(Arc::from("slow"));
        assert_eq!(limiter.take(client.clone(), now), Ok(()));
        assert_eq!(limiter.take(client, now), Err(MAX_WAIT));
    }

    #[test]
    fn an_ipv6_client_is_its_64_bit_prefix() {
        let mut request = Request::new(axum::body::Body::empty());
        let peer: SocketAddr = "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:5000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(
            Client::of(&request),
            Client::Address("2001:db8:1:2::".parse().unwrap())
        );
    }
}
