//! The status machine through the API: which actions each status allows (and what they do),
//! bulk cancel and prune, priority changes, listing with cursors and filters, and secrets that
//! never come back out.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::contract::{
    MISSING, Reply, SLOW, SMALL, SseReader, all_jobs, assert_problem, cancelled_job, completed_job,
    eventually, failed_job, job_ids, listed, one_slot, origin, paused_job, queued_job, request,
    running_job, send, submit,
};
use crate::helpers::TestApp;

/// What a user can do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Pause,
    Resume,
    Cancel,
    Delete,
    /// `PATCH` with `{"priority": 3}`.
    Patch,
}

const ALL: [Act; 5] = [
    Act::Pause,
    Act::Resume,
    Act::Cancel,
    Act::Delete,
    Act::Patch,
];

async fn act(app: &TestApp, id: &str, act: Act) -> Reply {
    let path = format!("/v1/jobs/{id}");
    let call = match act {
        Act::Pause => request(app, Method::POST, &format!("{path}/pause")),
        Act::Resume => request(app, Method::POST, &format!("{path}/resume")),
        Act::Cancel => request(app, Method::POST, &format!("{path}/cancel")),
        Act::Delete => request(app, Method::DELETE, &path),
        Act::Patch => request(app, Method::PATCH, &path).json(&json!({ "priority": 3 })),
    };
    send(call).await
}

/// Applies `what`, expects 200, and returns the job the API answered with.
async fn allowed(app: &TestApp, id: &str, what: Act) -> Value {
    let reply = act(app, id, what).await;
    assert_eq!(reply.status, StatusCode::OK, "{what:?}: {}", reply.text);
    let job = reply.json();
    assert_eq!(job["id"], id);
    assert!(
        job["files"].is_array(),
        "a changed job comes back whole: {job}"
    );
    job
}

/// Expects `409 invalid-transition` and checks that the job did not change.
async fn refused(app: &TestApp, id: &str, what: Act, status: &str) {
    let before = app.job(id).await;
    let problem = assert_problem(&act(app, id, what).await, 409, "invalid-transition");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(status) && detail.contains(id),
        "{what:?}: {detail}"
    );
    let after = app.job(id).await;
    assert_eq!(after["status"], status, "{what:?}");
    assert_eq!(after["priority"], before["priority"], "{what:?}");
    assert_eq!(after["updated_at"], before["updated_at"], "{what:?}");
}

/// Deleting forgets the job: 204 with no body, then 404 for every later call.
async fn forgotten(app: &TestApp, id: &str) {
    let reply = act(app, id, Act::Delete).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(reply.text.is_empty());
    let (status, _) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_problem(&act(app, id, Act::Delete).await, 404, "job-not-found");
    assert!(!job_ids(app).await.contains(&id.to_owned()));
}

#[tokio::test]
async fn a_queued_job_can_be_paused_cancelled_and_reprioritised_but_not_deleted() {
    let (app, origin) = one_slot().await;
    running_job(&app, &origin).await;
    let id = queued_job(&app, &origin).await;
    assert_eq!(allowed(&app, &id, Act::Pause).await["status"], "paused");
    let id = queued_job(&app, &origin).await;
    let before = app.job(&id).await;
    let same = allowed(&app, &id, Act::Resume).await;
    assert_eq!(
        same["status"], "queued",
        "resuming a queued job changes nothing"
    );
    assert_eq!(same["updated_at"], before["updated_at"]);
    assert_eq!(allowed(&app, &id, Act::Cancel).await["status"], "cancelled");
    let id = queued_job(&app, &origin).await;
    let patched = allowed(&app, &id, Act::Patch).await;
    assert_eq!(
        (&patched["status"], &patched["priority"]),
        (&json!("queued"), &json!(3))
    );
    refused(&app, &id, Act::Delete, "queued").await;
}

#[tokio::test]
async fn a_running_job_can_be_paused_cancelled_and_reprioritised_but_not_deleted() {
    let app = TestApp::spawn_with(|s| s.max_concurrent_jobs = 8).await;
    let origin = origin().await;
    let id = running_job(&app, &origin).await;
    app.wait_until(&id, "some bytes", |j| j["bytes_done"].as_u64() > Some(0))
        .await;
    let paused = allowed(&app, &id, Act::Pause).await;
    assert_eq!(paused["status"], "paused");
    assert!(
        paused["bytes_done"].as_u64() > Some(0),
        "pausing keeps progress: {paused}"
    );
    let id = running_job(&app, &origin).await;
    let same = allowed(&app, &id, Act::Resume).await;
    assert_eq!(
        same["status"], "running",
        "resuming a running job changes nothing"
    );
    let patched = allowed(&app, &id, Act::Patch).await;
    assert_eq!(
        (&patched["status"], &patched["priority"]),
        (&json!("running"), &json!(3))
    );
    refused(&app, &id, Act::Delete, "running").await;
    app.wait_until(&id, "some bytes", |j| j["bytes_done"].as_u64() > Some(0))
        .await;
    let part = app.file(&format!(
        "{}.part",
        app.job(&id).await["files"][0]["path"].as_str().unwrap()
    ));
    assert!(part.exists(), "{}", part.display());
    assert_eq!(allowed(&app, &id, Act::Cancel).await["status"], "cancelled");
    eventually("the partial file to go", async || !part.exists()).await;
}

#[tokio::test]
async fn a_paused_job_can_be_resumed_cancelled_and_reprioritised_but_not_deleted() {
    let (app, origin) = one_slot().await;
    running_job(&app, &origin).await;
    let id = paused_job(&app, &origin).await;
    let before = app.job(&id).await;
    let same = allowed(&app, &id, Act::Pause).await;
    assert_eq!(
        same["status"], "paused",
        "pausing a paused job changes nothing"
    );
    assert_eq!(same["updated_at"], before["updated_at"]);
    let patched = allowed(&app, &id, Act::Patch).await;
    assert_eq!(
        (&patched["status"], &patched["priority"]),
        (&json!("paused"), &json!(3))
    );
    refused(&app, &id, Act::Delete, "paused").await;
    assert_eq!(allowed(&app, &id, Act::Resume).await["status"], "queued");
    let id = paused_job(&app, &origin).await;
    assert_eq!(allowed(&app, &id, Act::Cancel).await["status"], "cancelled");
}

#[tokio::test]
async fn a_completed_job_can_only_be_deleted_and_its_file_stays() {
    let (app, origin) = one_slot().await;
    let id = completed_job(&app, &origin).await;
    for what in [Act::Pause, Act::Resume, Act::Cancel, Act::Patch] {
        refused(&app, &id, what, "completed").await;
    }
    forgotten(&app, &id).await;
    assert!(app.file(SMALL).exists(), "forgetting a job keeps its file");
}

#[tokio::test]
async fn a_failed_job_can_be_resumed_or_deleted_only() {
    let (app, origin) = one_slot().await;
    let retried = failed_job(&app, &origin).await;
    let id = failed_job(&app, &origin).await;
    let blocker = running_job(&app, &origin).await; // the retry waits in the queue
    for what in [Act::Pause, Act::Cancel, Act::Patch] {
        refused(&app, &id, what, "failed").await;
    }
    forgotten(&app, &id).await;
    let again = allowed(&app, &retried, Act::Resume).await;
    assert_eq!(again["status"], "queued");
    assert!(
        again["error"].is_null(),
        "a retry clears the error: {again}"
    );
    assert!(again["finished_at"].is_null(), "{again}");
    app.action(&blocker, "cancel").await;
    let failed_again = app.wait_for(&retried, "failed").await;
    assert_eq!(failed_again["attempt"], 2, "{failed_again:#}");
}

#[tokio::test]
async fn a_cancelled_job_can_only_be_deleted() {
    let (app, origin) = one_slot().await;
    running_job(&app, &origin).await;
    let id = cancelled_job(&app, &origin).await;
    assert!(app.job(&id).await["finished_at"].is_string());
    for what in ALL.into_iter().filter(|a| *a != Act::Delete) {
        refused(&app, &id, what, "cancelled").await;
    }
    forgotten(&app, &id).await;
}

#[tokio::test]
async fn prune_forgets_finished_jobs_and_keeps_active_ones() {
    let (app, origin) = one_slot().await;
    completed_job(&app, &origin).await;
    failed_job(&app, &origin).await;
    let running = running_job(&app, &origin).await;
    let queued = queued_job(&app, &origin).await;
    let paused = paused_job(&app, &origin).await;
    cancelled_job(&app, &origin).await;
    let (status, count) = app.post("/v1/jobs/prune", json!(null)).await;
    assert_eq!((status, count), (StatusCode::OK, json!({ "count": 3 })));
    let left: BTreeSet<String> = job_ids(&app).await.into_iter().collect();
    assert_eq!(left, BTreeSet::from([running.clone(), queued, paused]));
    assert_eq!(app.job(&running).await["status"], "running");
    let (_, count) = app.post("/v1/jobs/prune", json!(null)).await;
    assert_eq!(count, json!({ "count": 0 }));
}

#[tokio::test]
async fn cancel_all_stops_running_queued_and_paused_jobs() {
    let (app, origin) = one_slot().await;
    let done = completed_job(&app, &origin).await;
    let running = running_job(&app, &origin).await;
    app.wait_until(&running, "some bytes", |j| {
        j["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let part = app.file(&format!("{SLOW}.part"));
    assert!(part.exists());
    let queued = queued_job(&app, &origin).await;
    let paused = paused_job(&app, &origin).await;
    let (status, count) = app.post("/v1/jobs/cancel-all", json!(null)).await;
    assert_eq!((status, count), (StatusCode::OK, json!({ "count": 3 })));
    for id in [&running, &queued, &paused] {
        assert_eq!(app.job(id).await["status"], "cancelled", "{id}");
    }
    assert_eq!(app.job(&done).await["status"], "completed");
    eventually("the partial file to go", async || !part.exists()).await;
    let (_, count) = app.post("/v1/jobs/cancel-all", json!(null)).await;
    assert_eq!(count, json!({ "count": 0 }));
    // The slot is free again: a new job runs to the end.
    completed_job(&app, &origin).await;
}

#[tokio::test]
async fn patch_checks_the_new_priority() {
    let (app, origin) = one_slot().await;
    running_job(&app, &origin).await;
    let id = queued_job(&app, &origin).await;
    let before = app.job(&id).await;
    let path = format!("/v1/jobs/{id}");
    let patch = |body: Value| request(&app, Method::PATCH, &path).json(&body);
    for (body, code) in [
        (json!({}), "invalid-body"),
        (json!({ "priority": null }), "invalid-body"),
        (json!({ "priority": "high" }), "invalid-body"),
        (json!({ "priority": 1_000_001 }), "invalid-priority"),
        (json!({ "priority": -1_000_001 }), "invalid-priority"),
        (
            json!({ "priority": 1, "status": "paused" }),
            "unknown-field",
        ),
    ] {
        assert_problem(&send(patch(body)).await, 422, code);
    }
    let raw = request(&app, Method::PATCH, &path).body(r#"{"priority":1}"#);
    assert_problem(&send(raw).await, 415, "unsupported-media-type");
    let after = app.job(&id).await;
    assert_eq!(
        (&after["priority"], &after["updated_at"]),
        (&before["priority"], &before["updated_at"])
    );
    let reply = send(patch(json!({ "priority": -1_000_000 }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(app.job(&id).await["priority"], -1_000_000);
    assert_eq!(
        all_jobs(&app)
            .await
            .iter()
            .find(|j| j["id"] == id.as_str())
            .unwrap()["priority"],
        -1_000_000
    );
}

/// Waits until exactly one of `ids` runs and returns it.
async fn next_to_run(app: &TestApp, ids: &[&str]) -> String {
    let mut found = None;
    eventually("a job to start", async || {
        for id in ids {
            if app.job(id).await["status"] == "running" {
                found = Some((*id).to_owned());
                return true;
            }
        }
        false
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn a_lower_priority_number_runs_first_and_ties_run_oldest_first() {
    let (app, origin) = one_slot().await;
    let blocker = running_job(&app, &origin).await;
    let a = submit(&app, &origin, SLOW).await;
    let b = submit(&app, &origin, SLOW).await;
    let c = submit(&app, &origin, SLOW).await;
    let reply = act(&app, &c, Act::Patch).await; // 3, ahead of the default 10
    assert_eq!(reply.status, StatusCode::OK);
    app.action(&blocker, "cancel").await;
    assert_eq!(next_to_run(&app, &[&a, &b, &c]).await, c);
    app.action(&c, "cancel").await;
    assert_eq!(next_to_run(&app, &[&a, &b]).await, a);
    assert_eq!(app.job(&b).await["status"], "queued");
}

#[tokio::test]
async fn pages_walk_every_job_newest_first_without_gaps_or_repeats() {
    let (app, origin) = one_slot().await;
    let mut created = vec![running_job(&app, &origin).await];
    for _ in 0..7 {
        created.push(queued_job(&app, &origin).await);
    }
    created.reverse();
    let (mut seen, mut pages, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/jobs?limit=3&cursor={c}"),
            None => "/v1/jobs?limit=3".to_owned(),
        };
        let (status, page) = app.get(&query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        assert!(
            jobs.iter().all(|j| j.get("files").is_none()),
            "listings leave files out"
        );
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        pages.push(jobs.len());
        if pages.len() == 1 {
            // Jobs added after the first page do not shift the pages that follow.
            queued_job(&app, &origin).await;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, vec![3, 3, 2]);
    assert_eq!(seen, created);
    assert_eq!(job_ids(&app).await.len(), 9);
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

#[tokio::test]
async fn the_status_filter_takes_a_comma_separated_list() {
    let (app, origin) = one_slot().await;
    let completed = completed_job(&app, &origin).await;
    let running = running_job(&app, &origin).await;
    let queued = queued_job(&app, &origin).await;
    let paused = paused_job(&app, &origin).await;
    let cancelled = cancelled_job(&app, &origin).await;
    let pick =
        async |query: &str| -> BTreeSet<String> { listed(&app, query).await.into_iter().collect() };
    assert_eq!(pick("status=queued,paused").await, set(&[&queued, &paused]));
    assert_eq!(pick("status=running").await, set(&[&running]));
    assert_eq!(
        pick("status=completed,%20cancelled").await,
        set(&[&completed, &cancelled])
    );
    assert_eq!(pick("status=failed").await, set(&[]));
    assert_eq!(pick("status=").await.len(), 5);
    let (_, page) = app.get("/v1/jobs?status=queued,paused&limit=1").await;
    assert_eq!(page["jobs"][0]["id"], paused.as_str());
    let next = page["next_cursor"].as_str().unwrap();
    let rest = listed(&app, &format!("status=queued,paused&limit=1&cursor={next}")).await;
    assert_eq!(rest, vec![queued]);
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn q_filters_descriptions_by_regular_expression() {
    let (app, origin) = one_slot().await;
    let blocker = running_job(&app, &origin).await; // no description: never matches
    let mut ids = Vec::new();
    for description in ["alpha model weights", "beta dataset", "Alpha upper"] {
        let job = app
            .create_job(json!({ "url": origin.url(SMALL), "description": description }))
            .await;
        assert_eq!(job["description"], description);
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let pick = async |q: &str| -> BTreeSet<String> {
        listed(&app, &format!("q={}", encoded(q)))
            .await
            .into_iter()
            .collect()
    };
    assert_eq!(pick("^alpha").await, set(&[&ids[0]]));
    assert_eq!(pick("model|dataset").await, set(&[&ids[0], &ids[1]]));
    assert_eq!(pick("(?i)^alpha").await, set(&[&ids[0], &ids[2]]));
    assert_eq!(pick(".").await, set(&[&ids[0], &ids[1], &ids[2]]));
    assert_eq!(pick("gamma").await, set(&[]));
    app.action(&ids[1], "pause").await;
    let both = listed(&app, &format!("status=paused&q={}", encoded("a"))).await;
    assert_eq!(both, vec![ids[1].clone()]);
    assert!(!pick(".*").await.contains(&blocker));
}

#[tokio::test]
async fn a_new_job_is_201_with_its_location() {
    let (app, origin) = one_slot().await;
    // With the only slot taken the new job cannot start, so the 201 shows it queued. (With a
    // free slot it may already show `running`: the body is the job as it is by then.)
    running_job(&app, &origin).await;
    let post = request(&app, Method::POST, "/v1/jobs").json(&json!({ "url": origin.url(SMALL) }));
    let reply = send(post).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let job = reply.json();
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["priority"], 10);
    assert_eq!(job["on_conflict"], "rename");
    let location = reply.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    let (status, found) = app.get(&location).await;
    assert_eq!((status, &found["id"]), (StatusCode::OK, &job["id"]));
}

const SECRETS: [&str; 5] = [
    "tok-SECRET-a1",
    "hdr-SECRET-b2",
    "cookie-SECRET-c3",
    "key-SECRET-d4",
    "pw-SECRET-e5",
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

#[tokio::test]
async fn secrets_go_to_the_origin_but_never_come_back_out() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let mut events = SseReader::open(&app, "/v1/events").await;
    let body = json!({
        "url": origin.url(SMALL),
        "access_token": SECRETS[0],
        "headers": {
            "Authorization": format!("Bearer {}", SECRETS[1]),
            "Cookie": format!("session={}", SECRETS[2]),
            "X-Api-Key": SECRETS[3],
        },
    });
    let created = send(request(&app, Method::POST, "/v1/jobs").json(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_no_secret("the 201", &created.text);
    let job = created.json();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["has_access_token"], true);
    assert_eq!(
        job["headers"],
        json!(["authorization", "cookie", "x-api-key"])
    );
    let with_password = origin
        .url(MISSING)
        .replacen("://", &format!("://user:{}@", SECRETS[4]), 1);
    let failing = app.add(&with_password).await;
    app.wait_for(&id, "completed").await;
    app.wait_for(&failing, "failed").await;
    let sent = origin.requests(SMALL)[0]
        .authorization
        .clone()
        .unwrap_or_default();
    assert!(
        sent.contains("SECRET"),
        "the origin got no credentials: {sent:?}"
    );
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{failing}"),
        "/v1/jobs".to_owned(),
        format!("/v1/jobs?q={}", encoded("SECRET")),
        format!("/v1/jobs/{id}/events"),
        format!("/v1/jobs/{failing}/events"),
    ] {
        assert_no_secret(&path, &send(request(&app, Method::GET, &path)).await.text);
    }
    let seen = events
        .until(|e| e.data["job_id"] == failing.as_str() && e.event == "job.failed")
        .await;
    assert_no_secret("/v1/events", &format!("{seen:?}"));
}

fn time(job: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    let text = job[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} unset: {job}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn timestamps_and_attempts_follow_the_job() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let job = app.create_job(json!({ "url": origin.url(SMALL) })).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["created_at"], job["updated_at"]);
    assert!(job["finished_at"].is_null());
    let done = app.wait_for(id, "completed").await;
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["created_at"], job["created_at"]);
    let (created, started) = (time(&done, "created_at"), time(&done, "started_at"));
    let finished = time(&done, "finished_at");
    assert!(created <= started && started <= finished, "{done:#}");
    assert!(time(&done, "updated_at") >= finished, "{done:#}");
    assert_eq!(
        (&done["bytes_done"], &done["progress"]),
        (&json!(crate::contract::SMALL_LEN), &json!(1.0))
    );
}

#[tokio::test]
async fn pausing_keeps_the_partial_file_and_cancelling_removes_it() {
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let id = running_job(&app, &origin).await;
    let running = app
        .wait_until(&id, "some bytes", |j| j["bytes_done"].as_u64() > Some(0))
        .await;
    assert!(running["bytes_per_second"].is_u64(), "{running:#}");
    let part = app.file(&format!("{SLOW}.part"));
    let paused = allowed(&app, &id, Act::Pause).await;
    assert!(paused["bytes_per_second"].is_null(), "{paused:#}");
    assert!(part.exists(), "a paused job keeps its partial file");
    assert_eq!(allowed(&app, &id, Act::Cancel).await["status"], "cancelled");
    eventually("the partial file to go", async || !part.exists()).await;
    assert!(!app.file(SLOW).exists());
}
