//! The real `haul` binary as a child process: start it (port 0, temp dirs), learn its address
//! from the `listening on http://…` line, talk to it over HTTP, `kill -9` it, `SIGTERM` it,
//! and start it again on the same directories.
//!
//! Its stderr is drained by a thread into a buffer for the whole life of the process, so the
//! pipe never fills, and the log is shown when a test fails.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The checkpoint interval every test daemon runs with.
pub const CHECKPOINT_MS: u64 = 200;

/// How often waits poll.
const POLL: Duration = Duration::from_millis(20);

/// The line the daemon logs once it accepts connections.
const LISTENING: &str = "listening on http://";

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_haul")
}

/// A `haul` command with no inherited `HAUL_*` variables (the developer's own settings must not
/// leak into a test), run in `cwd` so relative defaults stay inside the test's directory.
pub fn command(cwd: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HAUL_") {
            command.env_remove(name);
        }
    }
    command.current_dir(cwd);
    command
}

/// How to start a daemon: arguments after `serve`, and environment variables.
#[derive(Debug, Clone)]
pub struct Launch {
    pub cwd: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// `serve` with nothing but the test defaults (info logs, quick checkpoints).
    pub fn bare(cwd: &Path) -> Launch {
        Launch {
            cwd: cwd.to_owned(),
            args: Vec::new(),
            env: vec![
                ("RUST_LOG".into(), "info".into()),
                (
                    "HAUL_CHECKPOINT_INTERVAL_MS".into(),
                    CHECKPOINT_MS.to_string(),
                ),
                ("HAUL_RETRY_BASE_DELAY_MS".into(), "50".into()),
                ("HAUL_RETRY_MAX_DELAY_MS".into(), "200".into()),
            ],
        }
    }

    /// `serve --listen 127.0.0.1:0 --data-dir DIR/data --download-root DIR/downloads`.
    pub fn in_dir(dir: &Path) -> Launch {
        Launch::bare(dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--download-root")
            .arg(dir.join("downloads"))
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Launch {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    fn spawn(&self, log: &Arc<Mutex<String>>) -> (Child, std::thread::JoinHandle<()>) {
        let mut command = command(&self.cwd);
        command
            .arg("serve")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the haul binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = log.clone();
        let drain = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        (child, drain)
    }
}

/// A daemon that exited before it started listening.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub log: String,
}

/// A running (or stopped, awaiting restart) `haul serve` process.
pub struct Daemon {
    launch: Launch,
    child: Option<Child>,
    drain: Option<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<String>>,
    /// The address as the daemon logged it (may be `0.0.0.0:PORT`).
    pub listening: SocketAddr,
    /// `http://ADDR`: where to connect (loopback when the daemon listens on every address).
    pub base: String,
    /// Sent as the bearer token on every API call, when set.
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemon {
    /// Starts a daemon and waits until it listens; fails the test if it does not.
    pub async fn start(launch: Launch) -> Daemon {
        match Daemon::try_start(launch).await {
            Ok(daemon) => daemon,
            Err(exited) => panic!(
                "the daemon exited with {} before listening:\n{}",
                exited.status, exited.log
            ),
        }
    }

    /// Starts a daemon; `Err` if it exits before it listens (with its status and log).
    pub async fn try_start(launch: Launch) -> Result<Daemon, Exited> {
        let mut daemon = Daemon {
            launch,
            child: None,
            drain: None,
            log: Arc::default(),
            listening: SocketAddr::from(([0, 0, 0, 0], 0)),
            base: String::new(),
            token: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        daemon.boot().await?;
        Ok(daemon)
    }

    /// Spawns the process and waits for its `listening on` line.
    async fn boot(&mut self) -> Result<(), Exited> {
        let skip = self.log.lock().unwrap().len();
        let (child, drain) = self.launch.spawn(&self.log);
        self.child = Some(child);
        self.drain = Some(drain);
        let started = Instant::now();
        loop {
            let found = self.log.lock().unwrap()[skip..]
                .lines()
                .find_map(|line| line.split_once(LISTENING).map(|(_, rest)| rest.to_owned()));
            if let Some(rest) = found {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                self.listening = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address {addr:?} in the log: {e}"));
                let mut connect = self.listening;
                if connect.ip().is_unspecified() {
                    connect.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                self.base = format!("http://{connect}");
                return Ok(());
            }
            if let Some(status) = self.child_mut().try_wait().unwrap() {
                self.child = None;
                self.join_drain();
                return Err(Exited {
                    status,
                    log: self.log(),
                });
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the daemon did not log {LISTENING:?} in time:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon is running")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Waits for the stderr thread (after the process ended, it reaches end of file).
    fn join_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.join().unwrap();
        }
    }

    /// Everything the daemon (and its earlier runs) wrote to stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9`: no chance to checkpoint or release anything.
    pub async fn kill9(&mut self) {
        self.child_mut().kill().unwrap();
        let status = self.wait_exit().await;
        assert!(!status.success(), "a killed process cannot succeed");
    }

    /// Sends SIGTERM; returns the exit status and how long the exit took.
    pub async fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let status = self.wait_exit().await;
        (status, started.elapsed())
    }

    /// Polls until the process exits; fails the test after [`DEADLINE`].
    async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child_mut().try_wait().unwrap() {
                self.child = None;
                self.join_drain();
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the daemon did not exit in time:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the same command again, on the same directories (a new port).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon before restarting it");
        self.log.lock().unwrap().push_str("----- restart -----\n");
        if let Err(exited) = self.boot().await {
            panic!(
                "the daemon exited with {} on restart:\n{}",
                exited.status, exited.log
            );
        }
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty or not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to the daemon failed: {e}\n{}", self.log()));
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Submits a job; fails the test unless it is accepted. Returns its id.
    pub async fn add(&self, body: Value) -> String {
        let (status, job) = self
            .call(reqwest::Method::POST, "/v1/jobs", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }

    /// One job, with its files.
    pub async fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        job
    }

    /// Every job the daemon knows (one page is plenty in tests).
    pub async fn jobs(&self) -> Vec<Value> {
        let (status, list) = self.get("/v1/jobs?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["jobs"].as_array().unwrap().clone()
    }

    /// Polls the job until `done(job)` holds; fails the test after [`DEADLINE`].
    pub async fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {what}: {job:#}\n--- daemon log ---\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the job to reach `status`; fails at once if it ends in another one.
    pub async fn wait_for(&self, id: &str, status: &str) -> Value {
        let job = self
            .wait_until(id, &format!("status {status}"), |job| {
                job["status"] == status
                    || ["completed", "failed", "cancelled"]
                        .contains(&job["status"].as_str().unwrap_or(""))
            })
            .await;
        assert_eq!(
            job["status"],
            status,
            "{job:#}\n--- daemon log ---\n{}",
            self.log()
        );
        job
    }
}

/// Polls `check` until it holds; fails the test with `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
