//! The delivery log writer: deliveries' states arrive on a bounded channel and are written to
//! the store in batches, one transaction per batch, so webhook traffic costs the store a few
//! short writes instead of one per attempt.
//!
//! The log is best effort: a batch the store refuses is logged and dropped, never retried
//! in a loop that could hold up deliveries.

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::domain::Delivery;
use crate::store::Store;

/// Most states written in one transaction.
const BATCH: usize = 256;

/// Writes until every sender is gone (the router and its queues have stopped), then returns.
pub(super) async fn run(store: Store, mut states: mpsc::Receiver<Delivery>) {
    let mut batch = Vec::with_capacity(BATCH);
    while states.recv_many(&mut batch, BATCH).await > 0 {
        let latest = latest_states(std::mem::take(&mut batch));
        if let Err(err) = store.record_deliveries(&latest).await {
            tracing::warn!(
                deliveries = latest.len(),
                error.message = %err,
                error.cause_chain = ?err,
                "cannot record {} webhook deliveries in the delivery log",
                latest.len()
            );
        }
    }
    tracing::debug!("webhook delivery log stopped");
}

/// Keeps only the last state of each delivery, in the order the deliveries first appeared.
fn latest_states(states: Vec<Delivery>) -> Vec<Delivery> {
    let mut at: HashMap<uuid::Uuid, usize> = HashMap::with_capacity(states.len());
    let mut out: Vec<Delivery> = Vec::with_capacity(states.len());
    for state in states {
        match at.get(&state.id) {
            Some(&i) => out[i] = state,
            None => {
                at.insert(state.id, out.len());
                out.push(state);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeliveryStatus, DeliveryTarget, JobId};

    fn state(id: uuid::Uuid, status: DeliveryStatus, attempts: u32) -> Delivery {
        let now = chrono::Utc::now();
        Delivery {
            id,
            job_id: JobId::new(),
            event_seq: 1,
            event_type: "job.queued".into(),
            url: "http://h/".into(),
            target: DeliveryTarget::Callback,
            status,
            attempts,
            http_status: None,
            error: None,
            created_at: now,
            updated_at: now,
            delivered_at: None,
        }
    }

    #[test]
    fn a_batch_keeps_each_deliverys_last_state_in_first_seen_order() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let latest = latest_states(vec![
            state(a, DeliveryStatus::Retrying, 1),
            state(b, DeliveryStatus::Delivered, 1),
            state(a, DeliveryStatus::Delivered, 2),
        ]);
        let got: Vec<_> = latest
            .iter()
            .map(|d| (d.id, d.status, d.attempts))
            .collect();
        assert_eq!(
            got,
            vec![
                (a, DeliveryStatus::Delivered, 2),
                (b, DeliveryStatus::Delivered, 1)
            ]
        );
    }
}
