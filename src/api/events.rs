//! Server-Sent Events: every job event (`/v1/events`), or one job's (`/v1/jobs/{id}/events`).
//!
//! Every event carries its id (`id:`). A client that reconnects with `Last-Event-ID` first
//! gets the buffered events after that id, then live ones, without a gap or a repeat: the
//! replay and the live subscription are taken together under the bus's lock, and live events
//! not above the last one sent are skipped. What the buffer no longer has is announced with
//! an `events.lost` event. A connection that falls behind the live channel catches up the same
//! way. Streams end when the daemon shuts down, so they never hold up a graceful shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::extract::{JobIdPath, LastEventId};
use super::problem::{ApiError, ProblemDetails};
use crate::domain::{Job, JobId};
use crate::events::{CatchUp, EventBus, EventKind, EventsLost, JobEvent, Resumed};

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

/// The loss marker. It has no `id:`, so a client that drops right after it reconnects with
/// the same `Last-Event-ID` and is told again.
fn lost_event(lost: &EventsLost) -> Event {
    Event::default()
        .event("events.lost")
        .json_data(lost)
        .unwrap_or_else(|_| Event::default().comment("events lost"))
}

/// One connection's events: those queued at its start (loss marker, replay, snapshot), then
/// live ones.
struct Feed {
    receiver: Receiver<Arc<JobEvent>>,
    bus: EventBus,
    /// Only this job's events, and the stream ends after its final one.
    only: Option<JobId>,
    /// Every event up to this id has been sent or passed over.
    last: u64,
    queued: VecDeque<Event>,
    /// Nothing follows the queued events.
    ended: bool,
}

impl Feed {
    /// A feed that starts with what `resumed` replays.
    fn new(bus: EventBus, resumed: Resumed, only: Option<JobId>) -> Self {
        let mut feed = Self {
            receiver: resumed.receiver,
            bus,
            only,
            last: 0,
            queued: VecDeque::new(),
            ended: false,
        };
        feed.queue_catch_up(resumed.catch_up);
        feed
    }

    fn queue_catch_up(&mut self, catch_up: CatchUp) {
        if let Some(lost) = &catch_up.lost {
            self.queued.push_back(lost_event(lost));
        }
        for event in &catch_up.events {
            if self.ended {
                break;
            }
            if let Some(sse) = self.accept(event) {
                self.queued.push_back(sse);
            }
        }
        self.last = self.last.max(catch_up.last_id);
    }

    /// The SSE form of `event` if this feed sends it; ends a job's feed after its final event.
    fn accept(&mut self, event: &JobEvent) -> Option<Event> {
        // Already sent from the replay buffer.
        if event.seq <= self.last {
            return None;
        }
        self.last = event.seq;
        if self.only.is_some_and(|id| id != event.job_id) {
            return None;
        }
        self.ended = self.only.is_some() && event.status.is_finished();
        Some(sse_event(event))
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.receiver.recv().await {
                Ok(event) => {
                    if let Some(sse) = self.accept(&event) {
                        return Some(sse);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let catch_up = self.bus.catch_up(self.last, self.only);
                    // A job's stream that lost events may have lost its end: it ends, and
                    // the client reconnects to a fresh snapshot.
                    self.ended = self.only.is_some() && catch_up.lost.is_some();
                    self.queue_catch_up(catch_up);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn respond(self, shutdown: CancellationToken) -> Response {
        let events = stream::unfold(self, |mut feed| async move {
            feed.next()
                .await
                .map(|event| (Ok::<_, Infallible>(event), feed))
        })
        .take_until(shutdown.cancelled_owned());
        Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response()
    }
}

/// Every job event, as it happens.
#[utoipa::path(
    get, path = "/v1/events", operation_id = "stream_events", tag = "events",
    params(
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this event id: first the buffered events after it (an `events.lost` event first if some are gone), then live ones"),
        ("last_event_id" = Option<u64>, Query, description = "The same, for clients that cannot set the header; the header wins"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`; each `data:` is a JobEvent, `event:` its type, `id:` its id. After a `Last-Event-ID` whose events are no longer all buffered, the first event is `events.lost` (an EventsLost, without `id:`)", body = JobEvent, content_type = "text/event-stream"),
        (status = 400, description = "`Last-Event-ID` is not a number", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn stream_events(
    State(state): State<AppState>,
    LastEventId(after): LastEventId,
) -> Response {
    let resumed = state.events.resume(after, None);
    Feed::new(state.events.clone(), resumed, None).respond(state.shutdown.clone())
}

/// One job's events: first a `job.snapshot` of its current state, then its events until it
/// completes, fails or is cancelled. With `Last-Event-ID`: the job's buffered events after that
/// id, then live ones; a snapshot comes after them only if some were lost or the job ended.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", operation_id = "stream_job_events", tag = "events",
    params(
        ("id" = uuid::Uuid, Path, description = "Job id (UUID)"),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this event id (see `/v1/events`)"),
        ("last_event_id" = Option<u64>, Query, description = "The same, for clients that cannot set the header; the header wins"),
    ),
    responses(
        (status = 200, description = "A `text/event-stream` of JobEvents, ending after the job's final event; `events.lost` (an EventsLost) first when a `Last-Event-ID` asks for events no longer buffered", body = JobEvent, content_type = "text/event-stream"),
        (status = 400, description = "The id is not a UUID, or `Last-Event-ID` not a number", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn stream_job_events(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
    LastEventId(after): LastEventId,
) -> Result<Response, ApiError> {
    // Subscribe before reading the snapshot, so nothing between the two is missed; the
    // snapshot carries the last id before the subscription, so every event that follows it
    // has a higher one (though the snapshot may already show its effect).
    let resumed = state.events.resume(after, Some(id));
    let before = resumed.catch_up.last_id;
    let lost = resumed.catch_up.lost.is_some();
    let job = state.store.get_job(id).await?;
    let mut feed = Feed::new(state.events.clone(), resumed, Some(id));
    // A client that resumes knows the job's state unless it lost events; a finished job's
    // stream ends with its state even when its final event was sent before.
    if !feed.ended && (after.is_none() || lost || job.status.is_finished()) {
        feed.queued
            .push_back(sse_event(&snapshot(&state, &job, before)));
    }
    feed.ended |= job.status.is_finished();
    Ok(feed.respond(state.shutdown.clone()))
}

fn snapshot(state: &AppState, job: &Job, before: u64) -> JobEvent {
    let mut snapshot = JobEvent::about(EventKind::Snapshot, job);
    if let Some(run) = state
        .engine
        .live(job.id)
        .filter(|_| !job.status.is_finished())
    {
        (snapshot.bytes_done, snapshot.bytes_total) = run.live.totals();
    }
    snapshot.seq = before;
    snapshot
}
