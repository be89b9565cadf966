//! Event ids and replay: a client that reconnects with `Last-Event-ID` gets exactly the events
//! it missed, then live ones; what the buffer no longer holds is announced with `events.lost`.

use reqwest::Method;
use serde_json::Value;

use crate::contract::{
    SLOW, SMALL, SseEvent, SseReader, assert_problem, origin, request, running_job, send, submit,
};
use crate::helpers::{TestApp, test_settings};

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e.id.unwrap_or_else(|| panic!("an event without an id: {e:?}"))
        })
        .collect()
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// The events of `events` after `id` (by position: ids increase).
fn after(events: &[SseEvent], id: u64) -> Vec<SseEvent> {
    events
        .iter()
        .filter(|e| e.id.is_some_and(|i| i > id))
        .cloned()
        .collect()
}

fn completed(job: &str) -> impl Fn(&SseEvent) -> bool + '_ {
    move |e| e.event == "job.completed" && e.data["job_id"] == job
}

#[tokio::test]
async fn ids_increase_and_a_reconnect_gets_exactly_the_missed_events_then_live_ones() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let first = submit(&app, &origin, SMALL).await;
    let seen = all.until(completed(&first)).await;
    let seen_ids = ids(&seen);
    assert!(
        seen_ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids go up by one: {seen_ids:?}"
    );
    for event in &seen {
        assert_eq!(event.id, event.data["seq"].as_u64(), "{event:?}");
    }
    // A client that saw only the first event comes back; then another job runs.
    let mut resumed = SseReader::resume(&app, "/v1/events", seen_ids[0]).await;
    let second = submit(&app, &origin, SMALL).await;
    let later = all.until(completed(&second)).await;
    let got = resumed.until(completed(&second)).await;
    let expected: Vec<u64> = seen_ids[1..].iter().copied().chain(ids(&later)).collect();
    assert_eq!(ids(&got), expected, "{:?}", kinds(&got));
    assert_eq!(got[0].event, seen[1].event);
}

#[tokio::test]
async fn the_query_parameter_resumes_too_and_the_header_wins() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, SMALL).await;
    let seen = ids(&all.until(completed(&id)).await);
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    let path = format!("/v1/events?last_event_id={first}");
    let mut by_query = SseReader::open(&app, &path).await;
    let replayed = by_query.until(|e| e.id == Some(last)).await;
    assert_eq!(ids(&replayed), seen[1..]);
    let both = request(&app, Method::GET, &path).header("last-event-id", seen[1]);
    let mut by_header = SseReader::send(both, &path).await;
    let replayed = by_header.until(|e| e.id == Some(last)).await;
    assert_eq!(ids(&replayed), seen[2..], "the header wins");
}

#[tokio::test]
async fn a_job_stream_resumes_with_the_jobs_missed_events_and_no_snapshot() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let id = running_job(&app, &origin).await;
    // Another job's events fall in between and must not show on this job's stream.
    let other = submit(&app, &origin, SMALL).await;
    all.until(completed(&other)).await;
    let (status, _) = app.action(&id, "pause").await;
    assert_eq!(status, 200);
    let before_pause = all
        .until(|e| e.event == "job.paused")
        .await
        .into_iter()
        .filter(|e| e.data["job_id"] == id.as_str())
        .collect::<Vec<_>>();
    let from = before_pause[0].id.unwrap();
    let path = format!("/v1/jobs/{id}/events");
    let mut resumed = SseReader::resume(&app, &path, from).await;
    app.action(&id, "cancel").await;
    let live = all.until(|e| e.event == "job.cancelled").await;
    let got = resumed.rest().await;
    let mut expected: Vec<SseEvent> = after(&before_pause, from);
    expected.extend(live.into_iter().filter(|e| e.data["job_id"] == id.as_str()));
    assert_eq!(ids(&got), ids(&expected), "{:?}", kinds(&got));
    assert_eq!(kinds(&got).last(), Some(&"job.cancelled"));
    assert!(got.iter().all(|e| e.data["job_id"] == id.as_str()));
}

#[tokio::test]
async fn a_finished_jobs_stream_resumed_after_its_end_is_its_snapshot() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, SMALL).await;
    let seen = all.until(completed(&id)).await;
    let path = format!("/v1/jobs/{id}/events");
    let last = seen.last().and_then(|e| e.id).unwrap();
    let events = SseReader::resume(&app, &path, last).await.rest().await;
    assert_eq!(kinds(&events), ["job.snapshot"]);
    assert_eq!(events[0].data["status"], "completed");
    let before_end = last - 1;
    let events = SseReader::resume(&app, &path, before_end)
        .await
        .rest()
        .await;
    assert_eq!(
        ids(&events),
        [last],
        "the end is replayed, and the stream ends"
    );
}

/// The `events.lost` marker: no id, and what the client asked for and can still have.
fn assert_lost(event: &SseEvent, asked: u64, reason: &str) -> Value {
    assert_eq!(event.event, "events.lost", "{event:?}");
    assert_eq!(event.id, None, "the marker is no event to resume from");
    let data = &event.data;
    assert_eq!(data["type"], "events.lost", "{data}");
    assert_eq!(data["reason"], reason, "{data}");
    assert_eq!(data["last_event_id"], asked, "{data}");
    assert!(data["at"].is_string(), "{data}");
    data.clone()
}

#[tokio::test]
async fn an_id_older_than_the_buffer_gets_the_lost_marker_then_what_is_left() {
    let app = TestApp::spawn_with(|s| s.event_replay_buffer = 2).await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, SMALL).await;
    let seen = ids(&all.until(completed(&id)).await);
    assert!(seen.len() >= 3, "{seen:?}");
    let kept = &seen[seen.len() - 2..];

    // The client saw nothing of the job: its first event is gone.
    let asked = seen[0] - 1;
    let mut global = SseReader::resume(&app, "/v1/events", asked).await;
    let lost = assert_lost(&global.next().await.unwrap(), asked, "evicted");
    assert_eq!(lost["first_available_id"], kept[0]);
    let rest = global.until(|e| e.id == Some(kept[1])).await;
    assert_eq!(ids(&rest), kept);

    let path = format!("/v1/jobs/{id}/events");
    let events = SseReader::resume(&app, &path, asked).await.rest().await;
    assert_lost(&events[0], asked, "evicted");
    assert_eq!(ids(&events[1..]), kept, "{:?}", kinds(&events));
    assert_eq!(events[2].event, "job.completed");
}

#[tokio::test]
async fn a_lost_job_stream_continues_from_a_snapshot() {
    let app = TestApp::spawn_with(|s| s.event_replay_buffer = 1).await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, SLOW).await;
    let seen = ids(&all.until(|e| e.event == "job.started").await);
    let path = format!("/v1/jobs/{id}/events");
    let mut stream = SseReader::resume(&app, &path, seen[0] - 1).await;
    assert_lost(&stream.next().await.unwrap(), seen[0] - 1, "evicted");
    let mut next = stream.next().await.unwrap();
    if next.event != "job.snapshot" {
        // The one event still buffered, when it is this job's.
        assert!(next.id.is_some_and(|i| i > seen[0]), "{next:?}");
        next = stream.next().await.unwrap();
    }
    assert_eq!(next.event, "job.snapshot", "{next:?}");
    assert_eq!(next.data["status"], "running");
    app.action(&id, "cancel").await;
    let rest = stream.rest().await;
    assert_eq!(
        kinds(&rest).last(),
        Some(&"job.cancelled"),
        "{:?}",
        kinds(&rest)
    );
}

#[tokio::test]
async fn ids_from_before_a_restart_or_never_given_out_are_lost_events() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut all = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, SMALL).await;
    let last = all.until(completed(&id)).await.last().unwrap().id.unwrap();
    drop(all);
    let dir = app.stop().await;
    let settings = test_settings(&dir);
    let app = TestApp::start(dir, settings).await;

    let mut stream = SseReader::resume(&app, "/v1/events", last).await;
    let lost = assert_lost(&stream.next().await.unwrap(), last, "restarted");
    assert!(lost["first_available_id"].as_u64() > Some(last), "{lost}");
    let second = submit(&app, &origin, SMALL).await;
    let live = stream.until(completed(&second)).await;
    assert!(ids(&live)[0] > last, "a new run numbers above the old one");

    let unknown = u64::MAX;
    let mut stream = SseReader::resume(&app, "/v1/events", unknown).await;
    assert_lost(&stream.next().await.unwrap(), unknown, "unknown");
    // Every event of this run is after the old id: the job's stream replays them all.
    let path = format!("/v1/jobs/{second}/events");
    let events = SseReader::resume(&app, &path, last).await.rest().await;
    assert_lost(&events[0], last, "restarted");
    assert_eq!(ids(&events[1..]), ids(&live), "{:?}", kinds(&events));
}

#[tokio::test]
async fn a_last_event_id_that_is_not_a_number_is_a_problem() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let id = submit(&app, &origin, SMALL).await;
    for path in ["/v1/events".to_owned(), format!("/v1/jobs/{id}/events")] {
        for bad in ["abc", "-1", "1.5", "18446744073709551616"] {
            let reply = send(request(&app, Method::GET, &path).header("last-event-id", bad)).await;
            let problem = assert_problem(&reply, 400, "invalid-last-event-id");
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Last-Event-ID"),
                "{problem}"
            );
        }
        let query = format!("{path}?last_event_id=x");
        let problem = assert_problem(
            &send(request(&app, Method::GET, &query)).await,
            400,
            "invalid-last-event-id",
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("last_event_id"),
            "{problem}"
        );
    }
}
