//! When to try again: exponential backoff with full jitter, honouring `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// The longest a server's `Retry-After` can make us wait.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How many times and how patiently a file is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Consecutive failed attempts (without progress) before giving up.
    pub attempts: u32,
    /// Delay ceiling after the first failure; doubles each time.
    pub base: Duration,
    /// Largest delay we choose ourselves.
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `failures + 1`: a random duration up to `base * 2^(failures-1)`
    /// (capped at `max`), but never less than what the server asked for (capped at an hour).
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.max);
        let jittered = rand::rng().random_range(Duration::ZERO..=ceiling);
        match retry_after {
            Some(asked) => asked.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        }
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        attempts: 5,
        base: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    #[test]
    fn delays_grow_but_stay_under_the_cap() {
        for failures in 1..40 {
            let ceiling =
                Duration::from_millis(100 * (1u64 << (failures - 1).min(30))).min(POLICY.max);
            for _ in 0..20 {
                assert!(POLICY.delay(failures, None) <= ceiling);
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let asked = Duration::from_secs(7);
        assert!(POLICY.delay(1, Some(asked)) >= asked);
        assert_eq!(
            POLICY.delay(1, Some(Duration::from_secs(99_999))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
