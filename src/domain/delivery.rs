//! Webhook deliveries as the delivery log records them: one per event and receiver, updated
//! after each attempt.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::JobId;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// An attempt failed and another one is scheduled.
    Retrying,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; haul gave up.
    Failed,
    /// The receiver's queue was full: the event was never sent.
    Dropped,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Retrying, Self::Delivered, Self::Failed, Self::Dropped];

    /// The lowercase name used in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of receiver a delivery went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryTarget {
    /// The job's own `callback_url`.
    Callback,
    /// A global subscription from the daemon's settings.
    Subscription,
}

impl DeliveryTarget {
    /// The lowercase name used in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Callback => "callback",
            Self::Subscription => "subscription",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Callback, Self::Subscription]
            .into_iter()
            .find(|target| target.as_str() == s)
    }
}

/// One delivery of one event to one receiver, as last recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Also sent as `X-Haul-Delivery`; the same on every attempt of this delivery.
    pub id: uuid::Uuid,
    pub job_id: JobId,
    /// The event's sequence number on the bus.
    pub event_seq: u64,
    /// `job.completed`, …
    pub event_type: String,
    /// The receiver's URL, redacted (no user-info, no query).
    pub url: String,
    pub target: DeliveryTarget,
    pub status: DeliveryStatus,
    /// Attempts made so far (0 for a dropped delivery).
    pub attempts: u32,
    /// The status of the last answer, if there was one.
    pub http_status: Option<u16>,
    /// Why the last attempt failed, redacted.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
        for target in [DeliveryTarget::Callback, DeliveryTarget::Subscription] {
            assert_eq!(DeliveryTarget::parse(target.as_str()), Some(target));
        }
    }
}
