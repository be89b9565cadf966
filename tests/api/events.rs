//! Server-Sent Events: the global stream follows a download from `job.queued` to
//! `job.completed`; a job's own stream starts with a snapshot and ends after its final event.

use reqwest::Method;
use serde_json::{Value, json};

use crate::contract::{
    MISSING, SMALL, SMALL_LEN, SseEvent, SseReader, assert_problem, completed_job, origin, request,
    running_job, send, submit,
};
use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content};

/// A resource that takes about a second: long enough for progress events.
const STEADY: &str = "steady.bin";
const STEADY_LEN: usize = 1024 * 1024;

fn steady(origin: &Origin) {
    origin.put(STEADY, content(9, STEADY_LEN));
    let rate = Some(1024 * 1024);
    origin.set_faults(
        STEADY,
        Faults {
            rate,
            ..Faults::default()
        },
    );
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// Every event is well formed: `event:` is the data's type, `id:` its sequence number, and
/// the ids increase strictly.
fn assert_well_formed(events: &[SseEvent], job: &str) {
    for event in events {
        assert_eq!(event.data["type"], event.event, "{event:?}");
        assert_eq!(event.data["job_id"], job, "{event:?}");
        assert_eq!(event.id, event.data["seq"].as_u64(), "{event:?}");
        assert!(event.data["at"].is_string(), "{event:?}");
    }
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("an id")).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase: {ids:?}"
    );
}

#[tokio::test]
async fn the_global_stream_follows_a_download_from_queued_to_completed() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    steady(&origin);
    let mut stream = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, STEADY).await;
    let events = stream.until(|e| e.event == "job.completed").await;
    assert_well_formed(&events, &id);
    let kinds = kinds(&events);
    assert_eq!(kinds[..2], ["job.queued", "job.started"], "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"job.completed"));
    let progress: Vec<&SseEvent> = events
        .iter()
        .filter(|e| e.event == "job.progress")
        .collect();
    assert!(!progress.is_empty(), "no progress in {kinds:?}");
    assert_eq!(
        progress.len(),
        kinds.len() - 3,
        "unexpected events: {kinds:?}"
    );
    let done: Vec<u64> = progress
        .iter()
        .map(|e| e.data["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "progress goes forward: {done:?}"
    );
    assert!(
        done[0] > 0 && *done.last().unwrap() <= STEADY_LEN as u64,
        "{done:?}"
    );
    for event in &progress {
        assert_eq!(event.data["status"], "running");
        assert_eq!(event.data["bytes_total"], STEADY_LEN);
        assert!(event.data["bytes_per_second"].is_u64(), "{event:?}");
    }
    let statuses: Vec<&Value> = events.iter().map(|e| &e.data["status"]).collect();
    assert_eq!(statuses[..2], [&json!("queued"), &json!("running")]);
    let completed = &events.last().unwrap().data;
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        (&completed["bytes_done"], &completed["bytes_total"]),
        (&json!(STEADY_LEN), &json!(STEADY_LEN))
    );
}

#[tokio::test]
async fn the_global_stream_reports_a_failure_with_its_error() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut stream = SseReader::open(&app, "/v1/events").await;
    let id = submit(&app, &origin, MISSING).await;
    let events = stream.until(|e| e.event == "job.failed").await;
    assert_well_formed(&events, &id);
    assert_eq!(kinds(&events), ["job.queued", "job.started", "job.failed"]);
    let failed = &events[2].data;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["http_status"], 404, "{failed}");
    assert_eq!(failed["error"]["type"], "http-status", "{failed}");
}

#[tokio::test]
async fn a_job_stream_starts_with_a_snapshot_and_ends_after_completion() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    steady(&origin);
    let id = submit(&app, &origin, STEADY).await;
    let mut stream = SseReader::open(&app, &format!("/v1/jobs/{id}/events")).await;
    let snapshot = stream.next().await.expect("a snapshot");
    assert_eq!(snapshot.event, "job.snapshot");
    assert_eq!(snapshot.data["job_id"], id.as_str());
    let status = snapshot.data["status"].as_str().unwrap();
    assert!(["queued", "running"].contains(&status), "{snapshot:?}");
    let rest = stream.rest().await;
    assert_eq!(
        rest.last().map(|e| e.event.as_str()),
        Some("job.completed"),
        "{:?}",
        kinds(&rest)
    );
    assert!(
        kinds(&rest)
            .iter()
            .all(|k| ["job.started", "job.progress", "job.completed"].contains(k)),
        "{:?}",
        kinds(&rest)
    );
    assert_well_formed(&rest, &id);
    assert_eq!(
        snapshot.id, None,
        "a snapshot is no bus event and has no id to resume from"
    );
    assert!(
        snapshot.data["seq"].as_u64() < rest[0].id,
        "the snapshot reflects the bus before the events that follow it: {snapshot:?} {:?}",
        rest[0]
    );
    assert_eq!(app.job(&id).await["status"], "completed");
}

/// Reads on, past progress, to the next event that is not `job.progress`.
async fn next_change(stream: &mut SseReader) -> SseEvent {
    loop {
        let event = stream.next().await.expect("the stream ended early");
        if event.event != "job.progress" {
            return event;
        }
    }
}

#[tokio::test]
async fn a_job_stream_lives_through_pause_and_resume_and_ends_at_cancel() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let id = running_job(&app, &origin).await;
    let mut stream = SseReader::open(&app, &format!("/v1/jobs/{id}/events")).await;
    let snapshot = stream.next().await.unwrap();
    assert_eq!(
        (snapshot.event.as_str(), &snapshot.data["status"]),
        ("job.snapshot", &json!("running"))
    );
    app.action(&id, "pause").await;
    let mut paused = next_change(&mut stream).await;
    if paused.event == "job.started" {
        // The store says `running` from the claim on; the worker announces the start just
        // after. A stream opened in between sees the announcement after its snapshot.
        paused = next_change(&mut stream).await;
    }
    assert_eq!(
        (paused.event.as_str(), &paused.data["status"]),
        ("job.paused", &json!("paused"))
    );
    app.action(&id, "resume").await;
    assert_eq!(next_change(&mut stream).await.event, "job.queued");
    assert_eq!(next_change(&mut stream).await.event, "job.started");
    app.action(&id, "cancel").await;
    let cancelled = next_change(&mut stream).await;
    assert_eq!(
        (cancelled.event.as_str(), &cancelled.data["status"]),
        ("job.cancelled", &json!("cancelled"))
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the final event"
    );
}

#[tokio::test]
async fn a_finished_job_stream_is_its_snapshot_and_nothing_more() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let id = completed_job(&app, &origin).await;
    let events = SseReader::open(&app, &format!("/v1/jobs/{id}/events"))
        .await
        .rest()
        .await;
    assert_eq!(kinds(&events), ["job.snapshot"]);
    let snapshot = &events[0].data;
    assert_eq!(snapshot["status"], "completed");
    assert_eq!(
        (&snapshot["bytes_done"], &snapshot["bytes_total"]),
        (&json!(SMALL_LEN), &json!(SMALL_LEN))
    );
    assert!(app.file(SMALL).exists());
}

#[tokio::test]
async fn the_stream_of_an_unknown_or_malformed_id_is_a_problem() {
    let app = TestApp::spawn().await;
    let unknown = format!("/v1/jobs/{}/events", uuid::Uuid::new_v4());
    assert_problem(
        &send(request(&app, Method::GET, &unknown)).await,
        404,
        "job-not-found",
    );
    let malformed = "/v1/jobs/not-a-uuid/events";
    assert_problem(
        &send(request(&app, Method::GET, malformed)).await,
        400,
        "invalid-job-id",
    );
}
