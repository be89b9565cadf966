//! Time as the store keeps it: milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, TimeZone, Utc};

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Converts stored milliseconds back to a UTC time; out-of-range values become the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
