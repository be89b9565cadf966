//! `GET /v1/jobs/{id}/wait`: answers when the job ends, or with the job as it is when the
//! timeout passes; a paused job does not end a wait.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::contract::{
    assert_problem, completed_job, failed_job, one_slot, origin, paused_job, request, running_job,
    send,
};
use crate::helpers::TestApp;
use crate::origin::{Faults, content};

/// Waits on job `id` with `query`; returns the job and how long the answer took.
async fn wait(app: &TestApp, id: &str, query: &str) -> (Value, Duration) {
    let started = Instant::now();
    let reply = send(request(
        app,
        Method::GET,
        &format!("/v1/jobs/{id}/wait{query}"),
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    (reply.json(), started.elapsed())
}

#[tokio::test]
async fn a_wait_answers_when_the_job_completes() {
    let app = TestApp::spawn().await;
    let origin = crate::origin::Origin::start().await;
    let body = content(41, 200_000);
    origin.put("held.bin", body);
    let held = Faults {
        hold_after: Some(50_000),
        ..Faults::default()
    };
    origin.set_faults("held.bin", held);
    let id = app.add(&origin.url("held.bin")).await;
    app.wait_until(&id, "bytes on disk", |job| {
        job["status"] == "running" && job["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let waiting = {
        let (base, http, token) = (app.base.clone(), app.http.clone(), app.token.clone());
        let path = format!("{base}/v1/jobs/{id}/wait?timeout=60");
        tokio::spawn(async move {
            let started = Instant::now();
            let mut request = http.get(path);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let job: Value = response.json().await.unwrap();
            (status, job, started.elapsed())
        })
    };
    origin.release("held.bin");
    let (status, job, took) = waiting.await.unwrap();
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["bytes_done"], 200_000);
    assert_eq!(
        job["files"][0]["status"], "complete",
        "the same body as GET /v1/jobs/{{id}}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[tokio::test]
async fn a_finished_job_is_answered_at_once() {
    let (app, origin) = one_slot().await;
    let completed = completed_job(&app, &origin).await;
    let failed = failed_job(&app, &origin).await;
    for (id, status) in [(completed, "completed"), (failed, "failed")] {
        let (job, took) = wait(&app, &id, "?timeout=300").await;
        assert_eq!(job["status"], status, "{job:#}");
        assert!(took < Duration::from_secs(20), "{took:?}");
        assert_eq!(
            job,
            app.job(&id).await,
            "the same body as GET /v1/jobs/{{id}}"
        );
    }
}

#[tokio::test]
async fn a_paused_job_is_answered_as_it_is_when_the_timeout_passes() {
    let (app, origin) = one_slot().await;
    running_job(&app, &origin).await;
    let id = paused_job(&app, &origin).await;
    let (job, took) = wait(&app, &id, "?timeout=0").await;
    assert_eq!(job["status"], "paused");
    assert!(took < Duration::from_secs(1), "0 answers at once: {took:?}");
    let (job, took) = wait(&app, &id, "?timeout=1").await;
    assert_eq!(job["status"], "paused", "pausing does not end a wait");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// The router answers requests that take longer than `request_timeout_secs` with 503; a wait
/// may be longer.
#[tokio::test]
async fn a_wait_is_not_cut_by_the_request_timeout() {
    let app = TestApp::spawn_with(|s| {
        s.max_concurrent_jobs = 1;
        s.request_timeout_secs = 1;
    })
    .await;
    let origin = origin().await;
    running_job(&app, &origin).await;
    let id = paused_job(&app, &origin).await;
    let (job, took) = wait(&app, &id, "?timeout=2").await;
    assert_eq!(job["status"], "paused");
    assert!(took >= Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_cancelled_job_ends_a_wait_and_bad_requests_are_problems() {
    let (app, origin) = one_slot().await;
    let running = running_job(&app, &origin).await;
    let waiting = {
        let request = request(&app, Method::GET, &format!("/v1/jobs/{running}/wait"));
        tokio::spawn(send(request))
    };
    let (status, _) = app.action(&running, "cancel").await;
    assert_eq!(status, 200);
    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["status"], "cancelled");

    let unknown = format!("/v1/jobs/{}/wait", uuid::Uuid::new_v4());
    assert_problem(
        &send(request(&app, Method::GET, &unknown)).await,
        404,
        "job-not-found",
    );
    let malformed = "/v1/jobs/not-a-uuid/wait";
    assert_problem(
        &send(request(&app, Method::GET, malformed)).await,
        400,
        "invalid-job-id",
    );
    for bad in ["abc", "-1", "301", "1.5"] {
        let path = format!("/v1/jobs/{running}/wait?timeout={bad}");
        let problem = assert_problem(
            &send(request(&app, Method::GET, &path)).await,
            400,
            "invalid-query",
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("timeout"),
            "{bad}: {problem}"
        );
    }
}
