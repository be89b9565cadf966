//! `TestApp`: the real daemon (`App::build` + `App::run`) on port 0 with a fresh SQLite file
//! and download root, plus typed helpers to drive it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use haul::app::App;
use haul::config::{Secret, Settings};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub token: Option<String>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for tests: port 0, temp dirs, quick checkpoints and retries.
pub fn test_settings(dir: &tempfile::TempDir) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        download_root: dir.path().join("downloads"),
        checkpoint_interval_ms: 200,
        retry_base_delay_ms: 50,
        retry_max_delay_ms: 200,
        stall_timeout_secs: 5,
        ..Settings::default()
    }
}

impl TestApp {
    /// A daemon with the test settings.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A daemon with test settings changed by `change`.
    pub async fn spawn_with(change: impl FnOnce(&mut Settings)) -> TestApp {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(&dir);
        change(&mut settings);
        Self::start(dir, settings).await
    }

    /// Starts a daemon over an existing directory (to restart on the same store).
    pub async fn start(dir: tempfile::TempDir, settings: Settings) -> TestApp {
        assert_eq!(settings.listen.port(), 0, "tests must bind port 0");
        let token = settings.api_token.as_ref().map(|t| t.expose().to_owned());
        let root = settings.download_root.clone();
        let app = App::build(settings).await.expect("the app builds");
        let addr = app.local_addr().unwrap();
        let stop = CancellationToken::new();
        let wait = stop.clone();
        let task = tokio::spawn(app.run(async move { wait.cancelled().await }));
        TestApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            dir,
            root: std::fs::canonicalize(root).unwrap(),
            token,
            stop,
            task: Some(task),
        }
    }

    /// Shuts the daemon down cleanly and returns its directory (for a restart).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and returns status and JSON body (`Null` for an empty body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.authed(self.http.request(method, self.url(path)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Submits a job; panics unless it is accepted. Returns the job.
    pub async fn create_job(&self, body: Value) -> Value {
        let (status, job) = self.post("/v1/jobs", body).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        job
    }

    /// Submits a single URL.
    pub async fn add(&self, url: &str) -> String {
        self.create_job(json!({ "url": url })).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        job
    }

    pub async fn action(&self, id: &str, action: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/{action}"),
            None,
        )
        .await
    }

    /// Polls the job until `done(job)` holds, or fails the test after [`DEADLINE`].
    pub async fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {what}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the job to reach `status`; fails at once if it ends in another status.
    pub async fn wait_for(&self, id: &str, status: &str) -> Value {
        let job = self
            .wait_until(id, &format!("status {status}"), |job| {
                job["status"] == status
                    || ["completed", "failed", "cancelled"]
                        .contains(&job["status"].as_str().unwrap_or(""))
            })
            .await;
        assert_eq!(job["status"], status, "{job:#}");
        job
    }

    /// A file under the download root.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Logs go to the test output only with `TEST_LOG=1`.
fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        haul::telemetry::init(haul::config::LogFormat::Text);
    }
}

/// A token for auth tests.
pub fn secret(token: &str) -> Option<Secret> {
    Some(Secret::new(token))
}
