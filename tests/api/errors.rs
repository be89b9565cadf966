//! Every client error through the real API: its status, an `application/problem+json` body with
//! a stable `code`, and — for submissions — that bad input changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::contract::{
    SMALL, assert_problem, job_ids, one_slot, origin, queued_job, request, running_job, send,
};
use crate::helpers::TestApp;

/// Names of the entries of a directory, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Posts a raw body to `/v1/jobs`, expects the problem, and checks that no job was added and
/// nothing appeared in the download root.
async fn refused_raw(
    app: &TestApp,
    body: impl Into<reqwest::Body>,
    content_type: Option<&str>,
    status: u16,
    code: &str,
) -> Value {
    let (jobs_before, files_before) = (job_ids(app).await, entries(&app.root));
    let mut post = request(app, Method::POST, "/v1/jobs").body(body);
    if let Some(kind) = content_type {
        post = post.header("content-type", kind);
    }
    let problem = assert_problem(&send(post).await, status, code);
    assert_eq!(job_ids(app).await, jobs_before, "a refused job was stored");
    assert_eq!(
        entries(&app.root),
        files_before,
        "a refused job touched the disk"
    );
    problem
}

/// Submits `body` as JSON and expects the problem (see [`refused_raw`]).
async fn refused(app: &TestApp, body: Value, status: u16, code: &str) -> Value {
    let text = serde_json::to_vec(&body).unwrap();
    let problem = refused_raw(app, text, Some("application/json"), status, code).await;
    assert!(problem["detail"].is_string(), "{body}: {problem}");
    problem
}

/// A submission that must be accepted (the control beside the refusals).
async fn accepted(app: &TestApp, body: Value) -> Value {
    app.create_job(body).await
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_invalid_json() {
    let app = TestApp::spawn().await;
    for body in [
        r#"{"url":"#,
        "not json",
        "",
        r#"{"url":"http://h/x",}"#,
        r#"{"url":"http://h/x"} trailing"#,
    ] {
        refused_raw(&app, body, Some("application/json"), 400, "invalid-json").await;
    }
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    let body = r#"{"url":"http://h/x"}"#;
    refused_raw(&app, body, None, 415, "unsupported-media-type").await;
    // (`text/plain` is a manifest: see `batches`.)
    refused_raw(&app, body, Some("text/html"), 415, "unsupported-media-type").await;
    refused_raw(
        &app,
        body,
        Some("application/x-www-form-urlencoded"),
        415,
        "unsupported-media-type",
    )
    .await;
    // A charset parameter is still JSON.
    let origin = origin().await;
    let post = request(&app, Method::POST, "/v1/jobs")
        .header("content-type", "application/json; charset=utf-8")
        .body(format!(r#"{{"url":"{}"}}"#, origin.url(SMALL)));
    assert_eq!(send(post).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_fields_are_422_unknown_field_and_named() {
    let app = TestApp::spawn().await;
    let top = refused(
        &app,
        json!({ "url": "http://h/x", "colour": "red" }),
        422,
        "unknown-field",
    )
    .await;
    assert!(top["detail"].as_str().unwrap().contains("colour"), "{top}");
    let nested = json!({ "files": [{ "url": "http://h/x", "md5": "00" }] });
    let inner = refused(&app, nested, 422, "unknown-field").await;
    assert!(inner["detail"].as_str().unwrap().contains("md5"), "{inner}");
}

#[tokio::test]
async fn fields_of_the_wrong_type_are_422_invalid_body() {
    let app = TestApp::spawn().await;
    for body in [
        json!({ "url": 5 }),
        json!({ "url": "http://h/x", "priority": "high" }),
        json!({ "url": "http://h/x", "priority": 1.5 }),
        json!({ "url": "http://h/x", "priority": 1e20 }),
        json!({ "url": "http://h/x", "headers": ["Cookie: a"] }),
        json!({ "url": "http://h/x", "on_conflict": "explode" }),
        json!({ "files": "http://h/x" }),
        json!({ "files": [{ "path": "a.bin" }] }),
        json!([1, 2]),
        json!("http://h/x"),
    ] {
        refused(&app, body, 422, "invalid-body").await;
    }
    let twice = r#"{"url":"http://h/x","url":"http://h/y"}"#;
    refused_raw(&app, twice, Some("application/json"), 422, "invalid-body").await;
}

#[tokio::test]
async fn a_job_needs_exactly_one_source() {
    let app = TestApp::spawn().await;
    refused(&app, json!({}), 422, "invalid-source").await;
    refused(
        &app,
        json!({ "dest": "x", "priority": 1 }),
        422,
        "invalid-source",
    )
    .await;
    let both = json!({ "url": "http://h/x", "files": [{ "url": "http://h/y" }] });
    refused(&app, both, 422, "invalid-source").await;
    refused(&app, json!({ "files": [] }), 422, "invalid-file-count").await;
}

#[tokio::test]
async fn more_files_than_max_files_per_job_are_refused() {
    let app = TestApp::spawn_with(|s| s.max_files_per_job = 2).await;
    let files: Vec<Value> = (0..3)
        .map(|i| json!({ "url": format!("http://h/{i}") }))
        .collect();
    let problem = refused(&app, json!({ "files": files }), 422, "invalid-file-count").await;
    assert!(
        problem["detail"].as_str().unwrap().contains('2'),
        "{problem}"
    );
}

#[tokio::test]
async fn urls_must_parse_and_name_a_host() {
    let app = TestApp::spawn().await;
    let long = format!("http://h/{}", "a".repeat(8200));
    for url in [
        "not a url",
        "",
        "https://",
        "http://",
        "/relative/path",
        "http://[::1/x",
        &long,
    ] {
        refused(&app, json!({ "url": url }), 422, "invalid-url").await;
    }
    let files = json!({ "files": [{ "url": "http://h/ok" }, { "url": "nope" }] });
    refused(&app, files, 422, "invalid-url").await;
}

#[tokio::test]
async fn only_http_and_https_urls_are_accepted() {
    let app = TestApp::spawn().await;
    for url in [
        "ftp://h/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,hi",
        "ws://h/x",
    ] {
        let problem = refused(&app, json!({ "url": url }), 422, "unsupported-scheme").await;
        let scheme = url.split(':').next().unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(scheme),
            "{problem}"
        );
    }
    let files = json!({ "files": [{ "url": "gopher://h/x" }] });
    refused(&app, files, 422, "unsupported-scheme").await;
    let origin = origin().await;
    let upper = origin.url(SMALL).replacen("http", "HTTP", 1);
    let job = accepted(&app, json!({ "url": upper })).await;
    assert!(
        job["files"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://"),
        "{job}"
    );
}

#[tokio::test]
async fn dest_outside_the_download_root_is_refused() {
    let app = TestApp::spawn().await;
    let outside = app.root.parent().unwrap().join("elsewhere");
    for dest in [
        "../x".to_owned(),
        "..".to_owned(),
        "/etc/passwd".to_owned(),
        "a/../../x".to_owned(),
        outside.display().to_string(),
        format!("{}/../escaped", app.root.display()),
    ] {
        let body = json!({ "url": "http://h/x", "dest": dest });
        refused(&app, body, 422, "dest-escapes-root").await;
    }
    assert!(!outside.exists());
    // An absolute path inside the root is fine, and is stored relative to it.
    let origin = origin().await;
    let inside = format!("{}/sub/file.bin", app.root.display());
    let job = accepted(&app, json!({ "url": origin.url(SMALL), "dest": inside })).await;
    assert_eq!(job["files"][0]["path"], "sub/file.bin", "{job}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_out_of_the_root_is_not_a_way_out() {
    let app = TestApp::spawn().await;
    let outside = app.root.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, app.root.join("link")).unwrap();
    let body = json!({ "url": "http://h/x", "dest": "link/x.bin" });
    refused(&app, body, 422, "dest-escapes-root").await;
    let files = json!({ "dest": "link", "files": [{ "url": "http://h/x" }] });
    refused(&app, files, 422, "dest-escapes-root").await;
    assert!(entries(&outside).is_empty());
}

#[tokio::test]
async fn file_paths_must_stay_below_dest_and_name_something() {
    let app = TestApp::spawn().await;
    for path in ["../../etc/passwd", "/etc/passwd", "a/../../b", ".."] {
        let body = json!({ "dest": "set", "files": [{ "url": "http://h/x", "path": path }] });
        refused(&app, body, 422, "dest-escapes-root").await;
    }
    for path in [".", "", "a\u{0}b", "tab\there"] {
        let body = json!({ "files": [{ "url": "http://h/x", "path": path }] });
        refused(&app, body, 422, "invalid-path").await;
    }
    refused(
        &app,
        json!({ "url": "http://h/x", "dest": "new\nline" }),
        422,
        "invalid-path",
    )
    .await;
}

#[tokio::test]
async fn two_files_of_a_job_may_not_share_a_path() {
    let app = TestApp::spawn().await;
    let file = |url: &str, path: Option<&str>| json!({ "url": url, "path": path });
    for files in [
        vec![
            file("http://h/a", Some("x.bin")),
            file("http://h/b", Some("x.bin")),
        ],
        vec![file("http://h/a.bin", None), file("http://g/a.bin", None)],
        vec![
            file("http://h/a.bin", None),
            file("http://h/b", Some("a.bin")),
        ],
        vec![
            file("http://h/a", Some("d/./x.bin")),
            file("http://h/b", Some("d/x.bin")),
        ],
    ] {
        let problem = refused(&app, json!({ "files": files }), 422, "duplicate-path").await;
        assert!(
            problem["detail"].as_str().unwrap().contains(".bin"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn priority_must_be_within_plus_or_minus_a_million() {
    let app = TestApp::spawn().await;
    for priority in [1_000_001_i64, -1_000_001, i64::MAX, i64::MIN] {
        let body = json!({ "url": "http://h/x", "priority": priority });
        refused(&app, body, 422, "invalid-priority").await;
    }
    let origin = origin().await;
    for priority in [1_000_000, -1_000_000] {
        let job = accepted(
            &app,
            json!({ "url": origin.url(SMALL), "priority": priority }),
        )
        .await;
        assert_eq!(job["priority"], priority);
    }
}

#[tokio::test]
async fn sha256_must_be_64_hex_digits_of_a_single_url() {
    let app = TestApp::spawn().await;
    let good = "AB".repeat(32);
    for digest in [
        "abc".to_owned(),
        good[1..].to_owned(),
        format!("{good}0"),
        "g".repeat(64),
    ] {
        let body = json!({ "url": "http://h/x", "sha256": digest });
        refused(&app, body, 422, "invalid-sha256").await;
        let files = json!({ "files": [{ "url": "http://h/x", "sha256": digest }] });
        refused(&app, files, 422, "invalid-sha256").await;
    }
    let top_level = json!({ "sha256": good, "files": [{ "url": "http://h/x" }] });
    refused(&app, top_level, 422, "invalid-sha256").await;
    // Either case is a digest; it is kept in lowercase. (The job will fail its check: that is
    // another test's business.)
    let origin = origin().await;
    let job = accepted(&app, json!({ "url": origin.url(SMALL), "sha256": good })).await;
    assert_eq!(job["files"][0]["sha256"], good.to_lowercase());
}

#[tokio::test]
async fn headers_must_be_valid_and_not_ones_haul_sets() {
    let app = TestApp::spawn().await;
    for name in [
        "Range",
        "host",
        "Content-Length",
        "transfer-encoding",
        "If-Range",
        "bad name",
        "",
    ] {
        let body = json!({ "url": "http://h/x", "headers": { name: "v" } });
        refused(&app, body, 422, "invalid-header").await;
    }
    let bad_value = json!({ "url": "http://h/x", "headers": { "X-Key": "hunter2\nX-Evil: 1" } });
    let problem = refused(&app, bad_value, 422, "invalid-header").await;
    assert!(
        !problem.to_string().contains("hunter2"),
        "a header value is echoed: {problem}"
    );
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    refused(
        &app,
        json!({ "url": "http://h/x", "headers": many }),
        422,
        "invalid-header",
    )
    .await;
    let origin = origin().await;
    let job = accepted(
        &app,
        json!({ "url": origin.url(SMALL), "headers": { "X-Trace": "1" } }),
    )
    .await;
    assert_eq!(job["headers"], json!(["x-trace"]));
}

#[tokio::test]
async fn a_description_over_4096_bytes_is_refused() {
    let app = TestApp::spawn().await;
    let body = json!({ "url": "http://h/x", "description": "é".repeat(2049) });
    refused(&app, body, 422, "invalid-description").await;
    let origin = origin().await;
    let fits = "x".repeat(4096);
    let job = accepted(
        &app,
        json!({ "url": origin.url(SMALL), "description": fits }),
    )
    .await;
    assert_eq!(job["description"].as_str().unwrap().len(), 4096);
}

#[tokio::test]
async fn a_body_over_max_request_bytes_is_413() {
    let app = TestApp::spawn_with(|s| s.max_request_bytes = 512).await;
    let body = json!({ "url": "http://h/x", "description": "x".repeat(600) });
    refused(&app, body, 413, "payload-too-large").await;
    let origin = origin().await;
    let job = accepted(
        &app,
        json!({ "url": origin.url(SMALL), "description": "x".repeat(300) }),
    )
    .await;
    assert_eq!(job["description"].as_str().map(str::len), Some(300));
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.max_concurrent_jobs = 1;
        s.max_queued_jobs = 2;
    })
    .await;
    let origin = origin().await;
    running_job(&app, &origin).await; // running jobs do not count
    let first = queued_job(&app, &origin).await;
    queued_job(&app, &origin).await;
    let before = job_ids(&app).await;
    let body = serde_json::to_vec(&json!({ "url": origin.url(SMALL) })).unwrap();
    let post = request(&app, Method::POST, "/v1/jobs")
        .header("content-type", "application/json")
        .body(body.clone());
    let reply = send(post).await;
    assert_problem(&reply, 429, "queue-full");
    let wait: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(wait >= 1, "{wait}");
    assert_eq!(job_ids(&app).await, before);
    // Only queued jobs count: pausing one makes room.
    assert_eq!(app.action(&first, "pause").await.0, StatusCode::OK);
    queued_job(&app, &origin).await;
}

#[tokio::test]
async fn an_unknown_job_is_404_job_not_found_everywhere() {
    let (app, _origin) = one_slot().await;
    let id = uuid::Uuid::new_v4().to_string();
    let path = format!("/v1/jobs/{id}");
    let mut calls = vec![
        request(&app, Method::GET, &path),
        request(&app, Method::DELETE, &path),
        request(&app, Method::PATCH, &path).json(&json!({ "priority": 1 })),
        request(&app, Method::GET, &format!("{path}/events")),
    ];
    for action in ["cancel", "pause", "resume"] {
        calls.push(request(&app, Method::POST, &format!("{path}/{action}")));
    }
    for call in calls {
        let problem = assert_problem(&send(call).await, 404, "job-not-found");
        assert!(
            problem["detail"].as_str().unwrap().contains(&id),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_400_invalid_job_id() {
    let app = TestApp::spawn().await;
    for id in ["nope", "123", "00000000-0000-0000-0000-00000000000g", "%20"] {
        let path = format!("/v1/jobs/{id}");
        for call in [
            request(&app, Method::GET, &path),
            request(&app, Method::DELETE, &path),
            request(&app, Method::PATCH, &path).json(&json!({ "priority": 1 })),
            request(&app, Method::POST, &format!("{path}/cancel")),
            request(&app, Method::GET, &format!("{path}/events")),
        ] {
            assert_problem(&send(call).await, 400, "invalid-job-id");
        }
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_not_found() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    for (method, path) in [
        (Method::GET, "/v1/nope".to_owned()),
        (Method::GET, "/nope".to_owned()),
        (Method::GET, "/".to_owned()),
        (Method::POST, format!("/v1/jobs/{id}/explode")),
        (Method::GET, "/v2/jobs".to_owned()),
    ] {
        assert_problem(&send(request(&app, method, &path)).await, 404, "not-found");
    }
}

#[tokio::test]
async fn a_known_route_with_the_wrong_method_is_405_with_allow() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    for (method, path, allowed) in [
        (Method::PUT, "/v1/jobs".to_owned(), "GET,POST"),
        (Method::DELETE, "/v1/jobs".to_owned(), "GET,POST"),
        (Method::PATCH, "/v1/jobs".to_owned(), "GET,POST"),
        (Method::PUT, format!("/v1/jobs/{id}"), "DELETE,GET,PATCH"),
        (Method::GET, format!("/v1/jobs/{id}/cancel"), "POST"),
        (Method::GET, "/v1/jobs/cancel-all".to_owned(), "POST"),
        (Method::POST, "/v1/stats".to_owned(), "GET"),
        (Method::POST, "/healthz".to_owned(), "GET"),
    ] {
        let reply = send(request(&app, method.clone(), &path)).await;
        assert_problem(&reply, 405, "method-not-allowed");
        let allow = reply
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow"));
        // axum adds HEAD wherever GET is served.
        let mut listed: Vec<&str> = allow
            .split(',')
            .map(str::trim)
            .filter(|m| *m != "HEAD")
            .collect();
        listed.sort_unstable();
        assert_eq!(listed.join(","), allowed, "{method} {path}");
    }
}

#[tokio::test]
async fn malformed_list_queries_are_400() {
    let app = TestApp::spawn().await;
    let cursor = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let cases = [
        ("limit=0".to_owned(), "invalid-query"),
        ("limit=1001".to_owned(), "invalid-query"),
        ("limit=-1".to_owned(), "invalid-query"),
        ("limit=ten".to_owned(), "invalid-query"),
        ("status=done".to_owned(), "invalid-query"),
        ("status=queued,bogus".to_owned(), "invalid-query"),
        ("colour=red".to_owned(), "invalid-query"),
        ("q=(".to_owned(), "invalid-regex"),
        ("q=%5Ba-".to_owned(), "invalid-regex"),
        ("cursor=garbage!!".to_owned(), "invalid-cursor"),
        (format!("cursor={}", cursor("nope")), "invalid-cursor"),
        (format!("cursor={}", cursor("before:x")), "invalid-cursor"),
    ];
    for (query, code) in cases {
        let reply = send(request(&app, Method::GET, &format!("/v1/jobs?{query}"))).await;
        assert_problem(&reply, 400, code);
    }
    for fine in [
        "limit=1",
        "limit=1000",
        "status=",
        "status=queued,%20failed",
        "q=.*",
    ] {
        let (status, body) = app.get(&format!("/v1/jobs?{fine}")).await;
        assert_eq!(status, StatusCode::OK, "{fine}: {body}");
    }
}
