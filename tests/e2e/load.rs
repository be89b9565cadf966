//! Load: 10 000 jobs submitted at once through the API of the real binary, while downloads
//! run. Every submission is accepted (201) or refused with 429 (`Retry-After`, a problem);
//! the store then holds exactly the accepted jobs — none lost, none twice, none refused — and
//! `GET /v1/jobs/{id}` of a running job keeps answering meanwhile. Latencies are printed, not
//! judged (speed is measured in `bench/`): the test only bounds them well below the timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::daemon::{Daemon, Launch};
use crate::origin::{Faults, Origin, content};

/// Submissions in all.
const TOTAL: usize = 10_000;
/// Clients submitting at the same time.
const CLIENTS: usize = 200;
/// Below the number of submissions, so that some are refused.
const MAX_QUEUED: usize = 6_000;
/// Downloads running throughout (each holds one of the daemon's job slots).
const RUNNING: usize = 2;
/// What any single answer may take before the test fails: far above what it takes, far
/// below the client's timeout, so a stalled API fails here rather than as a timeout.
const ANSWER_BOUND: Duration = Duration::from_secs(10);

/// How one submission was answered.
#[derive(Debug)]
enum Answer {
    Accepted { marker: String, id: String },
    Refused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_submissions_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, daemon) = start(dir.path()).await;
    let running = start_downloads(&daemon, &origin).await;
    let total = TOTAL;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_job(
        daemon.base.clone(),
        running[0].clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    let answers = submit_all(&daemon.base, &origin.url("queued.bin"), total).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = poller.await.unwrap();

    let accepted: BTreeMap<String, String> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Accepted { marker, id } => Some((marker.clone(), id.clone())),
            Answer::Refused => None,
        })
        .collect();
    let refused = answers.len() - accepted.len();
    assert_eq!(answers.len(), total, "every submission has an answer");
    assert_eq!(
        accepted.len() + refused,
        total,
        "an accepted marker came twice"
    );
    assert!(
        refused > 0,
        "the queue limit ({MAX_QUEUED}) never refused a job"
    );
    // Nothing leaves the queue meanwhile (the slow downloads hold every slot), so the limit,
    // checked in each insert's transaction, admits exactly MAX_QUEUED under any concurrency.
    assert_eq!(accepted.len(), MAX_QUEUED, "the queue limit is not exact");

    let stored = stored_jobs(&daemon).await;
    assert_eq!(
        stored, accepted,
        "the store differs from what the API accepted"
    );
    for id in &running {
        assert_eq!(daemon.job(id).await["status"], "running", "{id} stopped");
    }

    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100];
    assert!(!latencies.is_empty(), "the running job was never read");
    println!(
        "load: {total} submissions by {CLIENTS} clients in {took:.1?}: {} accepted, {refused} \
         refused (429); GET /v1/jobs/{{id}} meanwhile: {} answers, p50 {:.1?}, p99 {:.1?}, \
         max {:.1?}",
        accepted.len(),
        latencies.len(),
        pct(50),
        pct(99),
        pct(100),
    );
}

/// An origin with the files the running jobs download (slowly) and the daemon: two job slots,
/// a queue limit below the number of submissions.
async fn start(dir: &std::path::Path) -> (Origin, Daemon) {
    let origin = Origin::start().await;
    for n in 0..RUNNING {
        let path = format!("slow-{n}.bin");
        origin.put(&path, content(n as u64, 64 * 1024 * 1024));
        origin.set_faults(
            &path,
            Faults {
                rate: Some(128 * 1024),
                ..Faults::default()
            },
        );
    }
    origin.put("queued.bin", content(99, 1024));
    let daemon = Daemon::start(
        Launch::in_dir(dir)
            // The "listening on" line, without a line per job.
            .env("RUST_LOG", "warn,haul::app=info")
            .env("HAUL_MAX_CONCURRENT_JOBS", RUNNING.to_string())
            .env("HAUL_MAX_QUEUED_JOBS", MAX_QUEUED.to_string())
            .env("HAUL_MIN_FREE_SPACE", "0")
            // One client at 10 000 submissions would meet the per-client rate limit: this
            // test is about the queue limit and the store, so the rate limit is off.
            .env("HAUL_SUBMIT_RATE_PER_SECOND", "0"),
    )
    .await;
    (origin, daemon)
}

/// Submits the slow downloads and waits until they run: they hold every job slot, so the
/// jobs submitted under load stay queued and count against the limit.
async fn start_downloads(daemon: &Daemon, origin: &Origin) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..RUNNING {
        let url = origin.url(&format!("slow-{n}.bin"));
        let id = daemon
            .add(json!({"url": url, "description": "running"}))
            .await;
        daemon.wait_for(&id, "running").await;
        ids.push(id);
    }
    ids
}

/// `total` submissions by [`CLIENTS`] tasks, each with its own marker (`load-N`, in the
/// description and the URL's query). Fails on any answer but 201 and a proper 429.
async fn submit_all(base: &str, url: &str, total: usize) -> Vec<Answer> {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_BOUND)
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, next) = (http.clone(), next.clone());
        let (jobs, url) = (format!("{base}/v1/jobs"), url.to_owned());
        tasks.spawn(async move {
            let mut answers = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return answers;
                }
                answers.push(submit(&http, &jobs, &url, n).await);
            }
        });
    }
    let mut answers = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        answers.extend(done.unwrap());
    }
    answers
}

async fn submit(http: &reqwest::Client, jobs: &str, url: &str, n: usize) -> Answer {
    let marker = format!("load-{n}");
    let body = json!({"url": format!("{url}?n={n}"), "description": marker});
    let response = http.post(jobs).json(&body).send().await;
    let response = response.unwrap_or_else(|e| panic!("submission {n} got no answer: {e}"));
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let content_type = response.headers().get("content-type").cloned();
    let body: Value = response.json().await.unwrap();
    match status {
        StatusCode::CREATED => {
            assert_eq!(body["description"], marker.as_str(), "{body}");
            let id = body["id"].as_str().unwrap().to_owned();
            Answer::Accepted { marker, id }
        }
        StatusCode::TOO_MANY_REQUESTS => {
            assert!(retry_after.is_some(), "a 429 without Retry-After: {body}");
            assert_eq!(
                content_type.as_ref().and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            assert_eq!(body["code"], "queue-full", "{body}");
            Answer::Refused
        }
        other => panic!("submission {n}: {other} {body}"),
    }
}

/// Reads the job `id` over and over until `stop`; returns how long each answer took.
async fn poll_job(base: String, id: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_BOUND)
        .build()
        .unwrap();
    let url = format!("{base}/v1/jobs/{id}");
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let response = http.get(&url).send().await.unwrap();
        let status = response.status();
        let job: Value = response.json().await.unwrap();
        let took = started.elapsed();
        assert_eq!(status, StatusCode::OK, "{job}");
        assert_eq!(job["status"], "running", "{job}");
        assert!(took < ANSWER_BOUND, "GET /v1/jobs/{{id}} took {took:?}");
        latencies.push(took);
        // Paced like a client watching its job, not a second load generator.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies
}

/// Every job the store lists, page by page, but the running ones: description → id. Fails
/// on a job listed twice.
async fn stored_jobs(daemon: &Daemon) -> BTreeMap<String, String> {
    let mut stored = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=1000&cursor={c}"),
            None => "/v1/jobs?limit=1000".to_owned(),
        };
        let (status, page) = daemon.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            let id = job["id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "job {id} listed twice");
            let description = job["description"].as_str().unwrap_or_default().to_owned();
            if description != "running" {
                let earlier = stored.insert(description.clone(), id);
                assert!(earlier.is_none(), "two jobs for {description}");
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return stored,
        }
    }
}
