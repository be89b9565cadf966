//! Server-Sent Events: every job event (`/v1/events`), or one job's (`/v1/jobs/{id}/events`).
//!
//! Streams end when the daemon shuts down, so they never hold up a graceful shutdown. A
//! subscriber that falls too far behind is told how many events it missed (an SSE comment).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::extract::JobIdPath;
use super::problem::{ApiError, ProblemDetails};
use crate::domain::JobId;
use crate::events::{EventKind, JobEvent};

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

fn respond(events: Events) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn sse_event(event: &JobEvent) -> Event {
    let mut event_data = Event::default().event(event.kind.name());
    // A snapshot is not an event of the bus: it has no id of its own to resume from.
    if event.kind != EventKind::Snapshot {
        event_data = event_data.id(event.seq.to_string());
    }
    event_data
        .json_data(event)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

/// Turns the bus into SSE events, optionally for one job, ending on shutdown or after that
/// job's final event.
fn forward(
    receiver: Receiver<Arc<JobEvent>>,
    shutdown: CancellationToken,
    only: Option<JobId>,
    first: Option<Event>,
) -> Response {
    let events = stream::unfold((receiver, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok(event) if only.is_none_or(|id| id == event.job_id) => {
                    let last = only.is_some() && is_final(&event);
                    return Some((Ok(sse_event(&event)), (rx, last)));
                }
                Ok(_) => {}
                // A per-job stream that missed events may have missed the final one: end it,
                // and the client reconnects to a fresh snapshot.
                Err(RecvError::Lagged(n)) => {
                    let note = Event::default().comment(format!("missed {n} events; reconnect"));
                    return Some((Ok(note), (rx, only.is_some())));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stream = stream::iter(first.map(Ok))
        .chain(events)
        .take_until(shutdown.cancelled_owned());
    respond(stream.boxed())
}

fn is_final(event: &Arc<JobEvent>) -> bool {
    matches!(
        event.kind,
        EventKind::Completed | EventKind::Failed | EventKind::Cancelled
    )
}

/// Every job event, as it happens.
#[utoipa::path(
    get, path = "/v1/events", operation_id = "stream_events", tag = "events",
    responses(
        (status = 200, description = "An endless `text/event-stream`; each `data:` is a JobEvent, `event:` its type, `id:` its sequence number", body = JobEvent, content_type = "text/event-stream"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn stream_events(State(state): State<AppState>) -> Response {
    forward(state.events.subscribe(), state.shutdown.clone(), None, None)
}

/// One job's events: first a `job.snapshot` of its current state, then its events until it
/// completes, fails or is cancelled.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", operation_id = "stream_job_events", tag = "events",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "A `text/event-stream` of JobEvents, ending after the job's final event", body = JobEvent, content_type = "text/event-stream"),
        (status = 400, description = "The id is not a UUID", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn stream_job_events(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    // Subscribe before reading the snapshot, so nothing between the two is missed; the
    // snapshot carries the last sequence number before the subscription, so every event that
    // follows it has a higher one (though the snapshot may already show its effect).
    let (receiver, seq) = state.events.subscribe_after();
    let job = state.store.get_job(id).await?;
    let mut snapshot = JobEvent::about(EventKind::Snapshot, &job);
    if let Some(run) = state.engine.live(id).filter(|_| !job.status.is_finished()) {
        (snapshot.bytes_done, snapshot.bytes_total) = run.live.totals();
    }
    snapshot.seq = seq;
    if job.status.is_finished() {
        return Ok(respond(stream::iter([Ok(sse_event(&snapshot))]).boxed()));
    }
    Ok(forward(
        receiver,
        state.shutdown.clone(),
        Some(id),
        Some(sse_event(&snapshot)),
    ))
}
