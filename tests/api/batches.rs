//! Batches beyond `url` and `files`: `text/plain` manifests, retrying a failed job's failed
//! files, and `Idempotency-Key` replays.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::contract::{Reply, all_jobs, assert_problem, request, send};
use crate::helpers::TestApp;
use crate::origin::{Origin, content, sha256_hex};
use crate::support::{Events, assert_file, eventually as until, id_of};

/// POSTs a manifest to `/v1/jobs` (with `query`, if any).
async fn submit_manifest(app: &TestApp, query: &str, text: &str) -> Reply {
    let post = request(app, Method::POST, &format!("/v1/jobs{query}"))
        .header("content-type", "text/plain; charset=utf-8")
        .body(text.to_owned());
    send(post).await
}

/// POSTs `body` with an `Idempotency-Key`.
async fn submit_keyed(app: &TestApp, key: &str, body: &Value) -> Reply {
    let post = request(app, Method::POST, "/v1/jobs")
        .header("idempotency-key", key)
        .json(body);
    send(post).await
}

#[tokio::test]
async fn a_manifest_with_checksums_and_names_completes() {
    let origin = Origin::start().await;
    let (a, b, c) = (content(81, 40_000), content(82, 3_000), content(83, 9_000));
    origin.put("m/a.bin", a.clone());
    origin.put("m/b.bin", b.clone());
    origin.put("m/deep/c.bin", c.clone());
    let app = TestApp::spawn().await;
    let text = format!(
        "# three files\n{}\n  sha256={}\n  out=weights/first.bin\n\n{}\n\tdir=extra\n{}\n",
        origin.url("m/a.bin"),
        sha256_hex(&a),
        origin.url("m/b.bin"),
        origin.url("m/deep/c.bin"),
    );
    let reply = submit_manifest(
        &app,
        "?dest=set&priority=3&description=from+a+manifest",
        &text,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let job = reply.json();
    assert_eq!(
        reply.header("location"),
        Some(&*format!("/v1/jobs/{}", id_of(&job)))
    );
    assert_eq!(
        (&job["priority"], &job["description"]),
        (&json!(3), &json!("from a manifest"))
    );
    assert_eq!(job["files"][0]["sha256"], sha256_hex(&a));
    let done = app.wait_for(&id_of(&job), "completed").await;
    let paths: Vec<&str> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["set/weights/first.bin", "set/extra/b.bin", "set/c.bin"]
    );
    assert_file(&app.file("set/weights/first.bin"), &a);
    assert_file(&app.file("set/extra/b.bin"), &b);
    assert_file(&app.file("set/c.bin"), &c);
}

#[tokio::test]
async fn a_bad_manifest_names_its_line_and_queues_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "http://h/a\n  sha256=abc\n",
            422,
            "invalid-manifest",
            "line 2",
        ),
        (
            "# c\n\nhttp://h/a\nftp://h/b\n",
            422,
            "invalid-manifest",
            "line 4",
        ),
        ("  out=x\nhttp://h/a\n", 422, "invalid-manifest", "line 1"),
        (
            "http://h/a\n  colour=red\n",
            422,
            "invalid-manifest",
            "unknown option",
        ),
        (
            "http://h/a\n  out=../../etc/x\n",
            422,
            "invalid-manifest",
            "relative",
        ),
        ("# nothing\n", 422, "invalid-manifest", "no URL"),
        ("http://h/a\nhttp://g/a\n", 422, "duplicate-path", "a"),
    ];
    for (text, status, code, says) in cases {
        let problem = assert_problem(&submit_manifest(&app, "", text).await, status, code);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{text:?}: {detail}");
    }
    let bad_query = submit_manifest(&app, "?colour=red", "http://h/a\n").await;
    assert_problem(&bad_query, 400, "invalid-query");
    let bad_priority = submit_manifest(&app, "?priority=high", "http://h/a\n").await;
    assert_problem(&bad_priority, 400, "invalid-query");
    // A JSON body carries its options itself: a query would be silently ignored.
    let json_with_query =
        request(&app, Method::POST, "/v1/jobs?dest=x").json(&json!({ "url": "http://h/a" }));
    assert_problem(&send(json_with_query).await, 400, "invalid-query");
    let xml = request(&app, Method::POST, "/v1/jobs")
        .header("content-type", "application/xml")
        .body("<job/>");
    assert_problem(&send(xml).await, 415, "unsupported-media-type");
    assert!(all_jobs(&app).await.is_empty(), "nothing may be queued");
}

#[tokio::test]
async fn retry_fetches_only_the_failed_files_again() {
    let origin = Origin::start().await;
    let (ok, late) = (content(91, 50_000), content(92, 20_000));
    origin.put("r/ok.bin", ok.clone());
    let app = TestApp::spawn().await;
    let files = json!([{ "url": origin.url("r/ok.bin") }, { "url": origin.url("r/late.bin") }]);
    let id = id_of(&app.create_job(json!({ "files": files })).await);
    let failed = app.wait_for(&id, "failed").await;
    // The job says which files failed and why.
    assert_eq!(failed["error"]["type"], "files-failed", "{failed:#}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("1 of 2 files failed")
    );
    let states: Vec<(&Value, &Value)> = failed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (&f["status"], &f["error"]["http_status"]))
        .collect();
    assert_eq!(
        states,
        [
            (&json!("complete"), &Value::Null),
            (&json!("failed"), &json!(404))
        ]
    );
    let ok_requests = origin.requests("r/ok.bin").len();

    origin.put("r/late.bin", late.clone());
    let events = Events::subscribe(&app).await;
    let (status, job) = app.action(&id, "retry").await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_ne!(job["status"], "failed", "{job}");
    let done = app.wait_for(&id, "completed").await;
    assert!(done["error"].is_null(), "{done:#}");
    assert_file(&app.file("ok.bin"), &ok);
    assert_file(&app.file("late.bin"), &late);
    assert_eq!(
        origin.requests("r/ok.bin").len(),
        ok_requests,
        "a complete file was fetched again"
    );
    until("job.completed after the retry", || {
        !events.kind(&id, "job.completed").is_empty()
    })
    .await;
    let kinds: Vec<Value> = events.of(&id).iter().map(|e| e["type"].clone()).collect();
    let lifecycle: Vec<&Value> = kinds.iter().filter(|k| *k != "job.progress").collect();
    assert_eq!(
        lifecycle,
        [
            &json!("job.queued"),
            &json!("job.started"),
            &json!("job.completed")
        ]
    );

    // Only a failed job can be retried.
    let (status, problem) = app.action(&id, "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "invalid-transition");
    assert!(
        problem["detail"].as_str().unwrap().contains("completed"),
        "{problem}"
    );
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(app.action(unknown, "retry").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_idempotency_key_replays_its_job_and_refuses_another_request() {
    let origin = Origin::start().await;
    origin.put("k/a.bin", content(95, 5_000));
    let app = TestApp::spawn().await;
    let body = json!({ "url": origin.url("k/a.bin"), "priority": 4 });
    let first = submit_keyed(&app, "order-17", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let id = id_of(&first.json());
    app.wait_for(&id, "completed").await;
    // The same request, spelled differently: the same job, as it is now.
    let spelled = request(&app, Method::POST, "/v1/jobs")
        .header("idempotency-key", "order-17")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{ "priority": 4, "dest": null, "url": "{}" }}"#,
            origin.url("k/a.bin")
        ));
    let again = send(spelled).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(id_of(&again.json()), id);
    assert_eq!(again.json()["status"], "completed");
    assert_eq!(again.header("location"), Some(&*format!("/v1/jobs/{id}")));
    let other = json!({ "url": origin.url("k/a.bin"), "priority": 5 });
    assert_problem(
        &submit_keyed(&app, "order-17", &other).await,
        409,
        "idempotency-key-reused",
    );
    assert_eq!(all_jobs(&app).await.len(), 1);
    assert_eq!(
        origin.requests("k/a.bin").len(),
        1,
        "a replay downloads nothing"
    );

    for bad in ["", "   ", &"k".repeat(256)] {
        assert_problem(
            &submit_keyed(&app, bad, &body).await,
            400,
            "invalid-idempotency-key",
        );
    }
    let non_ascii = request(&app, Method::POST, "/v1/jobs")
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .json(&body);
    assert_problem(&send(non_ascii).await, 400, "invalid-idempotency-key");
    assert_eq!(all_jobs(&app).await.len(), 1);

    // A forgotten job takes its key with it.
    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let reborn = submit_keyed(&app, "order-17", &other).await;
    assert_eq!(reborn.status, StatusCode::CREATED, "{}", reborn.text);
    assert_ne!(id_of(&reborn.json()), id);
}

#[tokio::test]
async fn identical_keyed_requests_at_once_make_one_job() {
    let origin = Origin::start().await;
    origin.put("k/race.bin", content(96, 5_000));
    let app = TestApp::spawn().await;
    let body = json!({ "url": origin.url("k/race.bin") });
    let sends = (0..8).map(|_| submit_keyed(&app, "same-key", &body));
    let replies = futures::future::join_all(sends).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 201],
        "{replies:?}"
    );
    let ids: std::collections::BTreeSet<String> =
        replies.iter().map(|r| id_of(&r.json())).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(all_jobs(&app).await.len(), 1);
    // A manifest replays the same way.
    let text = format!("{}\n", origin.url("k/race.bin"));
    let manifest = || {
        request(&app, Method::POST, "/v1/jobs?dest=m")
            .header("idempotency-key", "manifest-key")
            .header("content-type", "text/plain")
            .body(text.clone())
    };
    let first = send(manifest()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let second = send(manifest()).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(id_of(&second.json()), id_of(&first.json()));
}
