//! Shared pieces of the API contract tests (`errors`, `lifecycle`, `auth`, `events`, `ops`):
//! raw requests that keep the headers, problem assertions, an SSE reader, and a daemon whose
//! only job slot is held by a slow download so that other jobs stay where a test puts them.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{DEADLINE, TestApp};
use crate::origin::{Faults, Origin, content};

/// A resource that takes about 16 s to download: a job on it stays `running` for the test.
pub const SLOW: &str = "slow.bin";
/// A resource that downloads at once.
pub const SMALL: &str = "small.bin";
/// A path the origin answers with 404: a job on it fails at once.
pub const MISSING: &str = "missing.bin";
/// Size of [`SMALL`].
pub const SMALL_LEN: usize = 4_000;

/// A response with its status, headers and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request to the app, with its bearer token when it has one.
pub fn request(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    let request = app.http.request(method, app.url(path));
    match &app.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Sends a request and keeps everything about the answer.
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// Asserts an RFC 9457 problem response with this status and code, and returns its body.
pub fn assert_problem(reply: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "expected {code}: {}",
        reply.text
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{code}: {}",
        reply.text
    );
    let body = reply.json();
    let reason = StatusCode::from_u16(status).unwrap().canonical_reason();
    assert_eq!(body["type"], format!("urn:haul:problem:{code}"), "{body}");
    assert_eq!(body["title"].as_str(), reason, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty()),
        "a problem explains itself: {body}"
    );
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["code", "detail", "status", "title", "type"]),
        "{body}"
    );
    body
}

/// Every job the API lists (following cursors), newest first.
pub async fn all_jobs(app: &TestApp) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut path = "/v1/jobs?limit=1000".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=1000&cursor={cursor}"),
            None => return jobs,
        }
    }
}

/// The ids of every job, newest first.
pub async fn job_ids(app: &TestApp) -> Vec<String> {
    all_jobs(app)
        .await
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of the jobs a list query returns (one page).
pub async fn listed(app: &TestApp, query: &str) -> Vec<String> {
    let (status, page) = app.get(&format!("/v1/jobs?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect()
}

/// An origin serving [`SLOW`] and [`SMALL`] (and nothing at [`MISSING`]).
pub async fn origin() -> Origin {
    let origin = Origin::start().await;
    origin.put(SLOW, content(7, 4 * 1024 * 1024));
    origin.set_faults(
        SLOW,
        Faults {
            rate: Some(256 * 1024),
            ..Faults::default()
        },
    );
    origin.put(SMALL, content(8, SMALL_LEN));
    origin
}

/// A daemon with one job slot and an origin: the usual set-up for status tests.
pub async fn one_slot() -> (TestApp, Origin) {
    let app = TestApp::spawn_with(|s| s.max_concurrent_jobs = 1).await;
    (app, origin().await)
}

/// Submits a download of `path` on the origin and returns the job's id.
pub async fn submit(app: &TestApp, origin: &Origin, path: &str) -> String {
    app.add(&origin.url(path)).await
}

/// Submits a slow download and waits until it runs (and so holds a slot).
pub async fn running_job(app: &TestApp, origin: &Origin) -> String {
    let id = submit(app, origin, SLOW).await;
    app.wait_for(&id, "running").await;
    id
}

/// Submits a download that completes, and waits for it.
pub async fn completed_job(app: &TestApp, origin: &Origin) -> String {
    let id = submit(app, origin, SMALL).await;
    app.wait_for(&id, "completed").await;
    id
}

/// Submits a download the origin answers with 404, and waits until it has failed.
pub async fn failed_job(app: &TestApp, origin: &Origin) -> String {
    let id = submit(app, origin, MISSING).await;
    let job = app.wait_for(&id, "failed").await;
    assert_eq!(job["error"]["http_status"], 404, "{job:#}");
    id
}

/// Submits a job that cannot start because every slot is taken; checks that it is queued.
pub async fn queued_job(app: &TestApp, origin: &Origin) -> String {
    let id = submit(app, origin, SMALL).await;
    assert_eq!(app.job(&id).await["status"], "queued");
    id
}

/// A queued job (see [`queued_job`]), then paused.
pub async fn paused_job(app: &TestApp, origin: &Origin) -> String {
    let id = queued_job(app, origin).await;
    let (status, job) = app.action(&id, "pause").await;
    assert_eq!((status, &job["status"]), (StatusCode::OK, &json!("paused")));
    id
}

/// A queued job (see [`queued_job`]), then cancelled.
pub async fn cancelled_job(app: &TestApp, origin: &Origin) -> String {
    let id = queued_job(app, origin).await;
    let (status, job) = app.action(&id, "cancel").await;
    assert_eq!(
        (status, &job["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    id
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: Value,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Reads an SSE response event by event, never waiting past [`DEADLINE`] in all.
pub struct SseReader {
    stream: ByteStream,
    buffer: String,
    deadline: Instant,
}

impl SseReader {
    /// Opens `path` as an event stream; fails unless the answer is a 200 `text/event-stream`.
    pub async fn open(app: &TestApp, path: &str) -> SseReader {
        Self::send(request(app, Method::GET, path), path).await
    }

    /// Opens `path` with a `Last-Event-ID` header.
    pub async fn resume(app: &TestApp, path: &str, last_event_id: u64) -> SseReader {
        let request = request(app, Method::GET, path).header("last-event-id", last_event_id);
        Self::send(request, path).await
    }

    /// Sends `request` and reads its answer as an event stream (`path` names it in failures).
    pub async fn send(request: reqwest::RequestBuilder, path: &str) -> SseReader {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let kind = response.headers()[CONTENT_TYPE].to_str().unwrap();
        assert!(kind.starts_with("text/event-stream"), "{path}: {kind}");
        SseReader {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
            deadline: Instant::now() + DEADLINE,
        }
    }

    /// The next event (comments and keep-alives skipped), or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(self.deadline, self.stream.next())
                .await
                .expect("the event stream stalled past the test deadline");
            match chunk {
                Some(bytes) => self
                    .buffer
                    .push_str(std::str::from_utf8(&bytes.unwrap()).unwrap()),
                None => {
                    assert!(self.buffer.trim().is_empty(), "cut off: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// Events up to and including the first for which `last` holds; fails if the stream ends.
    pub async fn until(&mut self, last: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let event = event.unwrap_or_else(|| panic!("the stream ended early: {events:#?}"));
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Every remaining event, until the server ends the stream.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// Parses one `\n\n`-terminated block; `None` for a block of comments only.
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.parse().expect("numeric SSE id")),
            "data" => data.push(value.to_owned()),
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".to_owned()),
        id,
        data: serde_json::from_str(&data.join("\n")).expect("JSON event data"),
    })
}
