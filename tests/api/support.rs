//! Helpers shared by the download, resume and file tests: polling waits with a deadline, a
//! collector of the daemon's Server-Sent Events, and file checks.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{DEADLINE, TestApp};
use crate::origin::{Origin, Seen, sha256_hex};

/// Polls `done` until it holds, or fails the test after [`DEADLINE`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the origin has seen at least `n` requests for `path`; returns them all.
pub async fn requests_seen(origin: &Origin, path: &str, n: usize) -> Vec<Seen> {
    eventually(&format!("{n} requests for {path}"), || {
        origin.requests(path).len() >= n
    })
    .await;
    origin.requests(path)
}

/// The job's id as text.
pub fn id_of(job: &Value) -> String {
    match job["id"].as_str() {
        Some(id) => id.to_owned(),
        None => panic!("not a job: {job}"),
    }
}

/// Asserts `path` holds exactly `expected` (compared by SHA-256, so a failure stays readable).
pub fn assert_file(path: &Path, expected: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        (got.len(), sha256_hex(&got)),
        (expected.len(), sha256_hex(expected)),
        "{} differs from the origin's content",
        path.display()
    );
}

/// Asserts nothing exists at `path`.
pub fn assert_absent(path: &Path) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{} should not exist",
        path.display()
    );
}

/// The `.part` beside a root-relative destination.
pub fn part(app: &TestApp, rel: &str) -> std::path::PathBuf {
    app.file(&format!("{rel}.part"))
}

/// Every regular file below `dir`, as paths relative to it, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let fail = |e: std::io::Error| -> std::fs::DirEntry { panic!("{}: {e}", dir.display()) };
    while let Some(next) = stack.pop() {
        let entries =
            std::fs::read_dir(&next).unwrap_or_else(|e| panic!("{}: {e}", next.display()));
        for entry in entries.map(|e| e.unwrap_or_else(fail)) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Every event of `/v1/events` from the moment [`Events::subscribe`] returns.
pub struct Events {
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    /// Subscribes; once this returns, the daemon delivers every later event to it.
    pub async fn subscribe(app: &TestApp) -> Events {
        let mut request = app.http.get(app.url("/v1/events"));
        if let Some(token) = &app.token {
            request = request.bearer_auth(token);
        }
        // The handler subscribes to the bus before it answers, so the headers mean "listening".
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot subscribe to events: {e}"));
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(data) = line.strip_prefix("data:") {
                            let event: Value = serde_json::from_str(data.trim())
                                .unwrap_or_else(|e| panic!("bad event {data}: {e}"));
                            lock(&sink).push(event);
                        }
                    }
                }
            }
        });
        Events { seen, task }
    }

    /// The events about job `id` so far, oldest first.
    pub fn of(&self, id: &str) -> Vec<Value> {
        lock(&self.seen)
            .iter()
            .filter(|e| e["job_id"] == id)
            .cloned()
            .collect()
    }

    /// The events of type `kind` about job `id` so far.
    pub fn kind(&self, id: &str, kind: &str) -> Vec<Value> {
        self.of(id)
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

/// Locks the event list (a panicking collector leaves it readable).
fn lock(seen: &Mutex<Vec<Value>>) -> std::sync::MutexGuard<'_, Vec<Value>> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
