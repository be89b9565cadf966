//! One receiver's queue: its deliveries are sent one at a time, in event order, each retried
//! with exponential backoff and jitter until it succeeds or runs out of attempts. A delivery
//! the address policy refuses fails at once: every retry would be refused too.
//!
//! A queue runs in its own task, so a slow or dead receiver holds up only its own queue; the
//! router never waits for it (a full queue drops deliveries instead). A queue with nothing to
//! do for a while closes itself; the router opens a new one when the next event comes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::signature::sign;
use crate::config::Secret;
use crate::domain::{Delivery, DeliveryStatus, DeliveryTarget};
use crate::events::JobEvent;
use crate::fetch::address_policy::{Denied, denied_cause};
use crate::telemetry::redact_text;

/// How long a queue waits for work before it closes.
const IDLE: Duration = Duration::from_secs(60);

/// A receiver of deliveries.
pub(super) struct Target {
    pub url: url::Url,
    /// The URL as logs and the delivery log show it (no user-info, no query).
    pub shown: String,
    pub secret: Secret,
    pub kind: DeliveryTarget,
}

/// An event on its way to one receiver.
pub(super) struct Outgoing {
    /// The `X-Haul-Delivery` id: the same on every attempt.
    pub id: uuid::Uuid,
    pub event: Arc<JobEvent>,
    /// The event as JSON, exactly the bytes that are signed and sent.
    pub body: Bytes,
}

impl Outgoing {
    /// The delivery log's first record of this delivery, before any attempt.
    pub fn record(&self, target: &Target, status: DeliveryStatus) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: self.id,
            job_id: self.event.job_id,
            event_seq: self.event.seq,
            event_type: self.event.kind.name().to_owned(),
            url: target.shown.clone(),
            target: target.kind,
            status,
            attempts: 0,
            http_status: None,
            error: None,
            created_at: now,
            updated_at: now,
            delivered_at: None,
        }
    }
}

/// Why an attempt failed.
struct Failure {
    http_status: Option<u16>,
    message: String,
    /// The address policy refused the receiver: another attempt would be refused too.
    denied: bool,
}

impl Failure {
    fn denied(denied: &Denied) -> Self {
        Self {
            http_status: None,
            message: format!("not sent: {denied}"),
            denied: true,
        }
    }
}

/// Delivers what arrives on `queue` until it closes or the daemon shuts down.
pub(super) async fn run(
    ctx: Arc<Context>,
    target: Arc<Target>,
    mut queue: mpsc::Receiver<Outgoing>,
    (after, ended): (Option<CancellationToken>, CancellationToken),
) {
    let _ended = ended.drop_guard();
    if let Some(previous) = after {
        // The receiver's previous queue may still be sending what it had: not alongside it.
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = previous.cancelled() => {}
        }
    }
    loop {
        let next = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return,
            next = queue.recv() => next,
            // Closing refuses new deliveries but keeps those already queued: they are sent
            // before `recv` reports the end.
            () = tokio::time::sleep(IDLE) => {
                queue.close();
                continue;
            }
        };
        let Some(outgoing) = next else { return };
        deliver(&ctx, &target, outgoing).await;
    }
}

/// Sends one delivery until it succeeds, runs out of attempts, or the daemon shuts down,
/// recording its state after every attempt.
async fn deliver(ctx: &Context, target: &Target, outgoing: Outgoing) {
    let mut state = outgoing.record(target, DeliveryStatus::Retrying);
    let signature = sign(target.secret.expose().as_bytes(), &outgoing.body);
    for attempt in 1..=ctx.retry.attempts {
        let result = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            result = attempt_once(ctx, target, &outgoing, &signature) => result,
        };
        state.attempts = attempt;
        state.updated_at = Utc::now();
        let mut last = attempt == ctx.retry.attempts;
        match result {
            Ok(status) => {
                state.status = DeliveryStatus::Delivered;
                state.http_status = Some(status);
                state.error = None;
                state.delivered_at = Some(state.updated_at);
                ctx.record(state).await;
                return;
            }
            Err(failure) => {
                last |= failure.denied;
                state.http_status = failure.http_status;
                state.error = Some(failure.message);
            }
        }
        if last {
            tracing::warn!(
                job.id = %state.job_id,
                delivery.id = %state.id,
                webhook.url = %target.shown,
                attempts = attempt,
                error.message = state.error.as_deref().unwrap_or(""),
                "gave up delivering {} to {} after {attempt} attempts",
                state.event_type,
                target.shown
            );
            state.status = DeliveryStatus::Failed;
            ctx.record(state).await;
            return;
        }
        ctx.record(state.clone()).await;
        let delay = ctx.retry.delay(attempt, None);
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One POST; `Ok` with the status when the receiver answered 2xx.
async fn attempt_once(
    ctx: &Context,
    target: &Target,
    outgoing: &Outgoing,
    signature: &str,
) -> Result<u16, Failure> {
    let client = match target.kind {
        DeliveryTarget::Subscription => &ctx.clients.subscriptions,
        DeliveryTarget::Callback => {
            ctx.policy
                .check_url(&target.url)
                .map_err(|denied| Failure::denied(&denied))?;
            &ctx.clients.callbacks
        }
    };
    let request = client
        .post(target.url.clone())
        .timeout(ctx.timeout)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("x-haul-event", outgoing.event.kind.name())
        .header("x-haul-delivery", outgoing.id.to_string())
        .header("x-haul-signature", signature)
        .body(outgoing.body.clone());
    let response = request
        .send()
        .await
        .map_err(|err| match denied_cause(&err) {
            // The resolver refused every address of the callback's name.
            Some(denied) => Failure::denied(denied),
            None => Failure {
                http_status: None,
                // reqwest quotes the URL, whose query may carry a token.
                message: redact_text(&error_chain(&err)),
                denied: false,
            },
        })?;
    let status = response.status();
    tracing::debug!(
        job.id = %outgoing.event.job_id,
        delivery.id = %outgoing.id,
        webhook.url = %target.shown,
        http.status = status.as_u16(),
        "webhook answered {status}"
    );
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(Failure {
            http_status: Some(status.as_u16()),
            message: format!("the receiver answered {status}"),
            denied: false,
        })
    }
}

/// The error and its causes on one line ("connection refused" hides in the sources).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
