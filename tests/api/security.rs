//! API security: scoped tokens, the `Host` and `Origin` checks (DNS rebinding, CSRF), the
//! header and body limits, and the per-client rate limit on submissions.

use std::time::Duration;

use haul::api::scope::Scope;
use haul::config::{Secret, Settings, TokenRule};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::contract::{MISSING, Reply, assert_problem, job_ids, origin};
use crate::helpers::{DEADLINE, TestApp, secret};

const ROOT: &str = "root-token-with-every-scope";
const READER: &str = "reader-token";
const SUBMITTER: &str = "submitter-token";
const ADMIN: &str = "admin-token";

fn token(name: &str, value: &str, scopes: &[Scope]) -> TokenRule {
    TokenRule {
        name: Some(name.to_owned()),
        token: Secret::new(value),
        scopes: scopes.to_vec(),
    }
}

/// `api_token` (which the helpers send) and one token per scope.
fn scoped(s: &mut Settings) {
    s.api_token = secret(ROOT);
    s.tokens = vec![
        token("reader", READER, &[Scope::Read]),
        token("submitter", SUBMITTER, &[Scope::Submit]),
        token("admin", ADMIN, &[Scope::Admin]),
    ];
}

/// A request with exactly the headers given (no token unless one is given).
fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut request = app.http.request(method, app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

/// Sends and keeps status, headers and body; an event stream's body is not read.
async fn answer(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let streaming = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = if streaming {
        String::new()
    } else {
        response.text().await.unwrap()
    };
    Reply {
        status,
        headers,
        text,
    }
}

/// Every `/v1` operation with the scope it needs and a body that it accepts.
fn operations(id: &str) -> Vec<(Method, String, Scope, Option<Value>)> {
    let job = format!("/v1/jobs/{id}");
    let read = |path: String| (Method::GET, path, Scope::Read, None);
    let submit = |method, path: String, body| (method, path, Scope::Submit, body);
    let admin = |method, path: &str, body| (method, path.to_owned(), Scope::Admin, body);
    vec![
        read("/v1/jobs".to_owned()),
        read(job.clone()),
        read(format!("{job}/wait?timeout=0")),
        read(format!("{job}/events")),
        read(format!("{job}/deliveries")),
        read("/v1/events".to_owned()),
        read("/v1/stats".to_owned()),
        read("/v1/limits".to_owned()),
        submit(
            Method::POST,
            "/v1/jobs".to_owned(),
            Some(json!({ "url": "http://h/x" })),
        ),
        submit(Method::PATCH, job.clone(), Some(json!({ "priority": 3 }))),
        submit(Method::POST, format!("{job}/pause"), None),
        submit(Method::POST, format!("{job}/resume"), None),
        submit(Method::POST, format!("{job}/retry"), None),
        submit(Method::POST, format!("{job}/cancel"), None),
        submit(Method::DELETE, job.clone(), None),
        admin(
            Method::PUT,
            "/v1/limits",
            Some(json!({ "max_bytes_per_second": null })),
        ),
        admin(Method::POST, "/v1/jobs/cancel-all", None),
        admin(Method::POST, "/v1/jobs/prune", None),
    ]
}

async fn call(
    app: &TestApp,
    bearer: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let mut request = raw(app, method, path, &[]).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    answer(request).await
}

#[tokio::test]
async fn a_token_without_the_scope_gets_403_naming_it_and_changes_nothing() {
    let app = TestApp::spawn_with(scoped).await;
    let origin = origin().await;
    let id = app.add(&origin.url(MISSING)).await;
    app.wait_for(&id, "failed").await;
    for (bearer, has) in [(READER, Scope::Read), (SUBMITTER, Scope::Submit)] {
        for (method, path, needs, body) in operations(&id) {
            if needs == has {
                continue;
            }
            let reply = call(&app, bearer, method.clone(), &path, body.as_ref()).await;
            let problem = assert_problem(&reply, 403, "forbidden");
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("`{needs}`")),
                "{method} {path}: {detail}"
            );
            assert!(
                !reply.text.contains(bearer),
                "the token is echoed: {}",
                reply.text
            );
        }
    }
    // Nothing was submitted, changed, retried, cancelled, deleted or pruned.
    assert_eq!(job_ids(&app).await, vec![id.clone()]);
    let job = app.job(&id).await;
    assert_eq!(
        (&job["status"], &job["priority"]),
        (&json!("failed"), &json!(10))
    );
}

#[tokio::test]
async fn each_scope_opens_its_routes_and_admin_opens_all() {
    let app = TestApp::spawn_with(scoped).await;
    let origin = origin().await;
    for (bearer, opens) in [
        (READER, vec![Scope::Read]),
        (SUBMITTER, vec![Scope::Submit]),
        (ADMIN, vec![Scope::Read, Scope::Submit, Scope::Admin]),
        (ROOT, vec![Scope::Read, Scope::Submit, Scope::Admin]),
    ] {
        let id = app.add(&origin.url(MISSING)).await;
        app.wait_for(&id, "failed").await;
        for (method, path, needs, body) in operations(&id) {
            if !opens.contains(&needs) {
                continue;
            }
            let reply = call(&app, bearer, method.clone(), &path, body.as_ref()).await;
            // Some of these meet a job in a status they refuse (409) or already gone (404):
            // what matters is that the token got past the check.
            assert!(
                reply.status.is_success() || [404, 409].contains(&reply.status.as_u16()),
                "{bearer}: {method} {path}: {} {}",
                reply.status,
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn every_configured_token_is_recognised_and_nothing_near_one_is() {
    let app = TestApp::spawn_with(scoped).await;
    for good in [ROOT, READER, ADMIN] {
        let reply = call(&app, good, Method::GET, "/v1/stats", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{good}: {}", reply.text);
        let near = [
            good[..good.len() - 1].to_owned(),
            format!("{good}x"),
            good.to_uppercase(),
            format!("{good}{READER}"),
        ];
        for wrong in near {
            let reply = call(&app, &wrong, Method::GET, "/v1/stats", None).await;
            assert_problem(&reply, 401, "unauthorized");
        }
    }
    // The submit-only token is known (403, not 401) where it lacks the scope.
    let reply = call(&app, SUBMITTER, Method::GET, "/v1/stats", None).await;
    assert_problem(&reply, 403, "forbidden");
    let reply = raw(&app, Method::GET, "/v1/stats", &[])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_foreign_host_is_421_and_allowed_hosts_are_answered() {
    let app = TestApp::spawn_with(|s| s.allowed_hosts = vec!["haul.example".to_owned()]).await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let submit = json!({ "url": "http://h/x" });
    for host in [
        "evil.example",
        "evil.example:80",
        &format!("rebind.example:{port}"),
        "127.0.0.2",
    ] {
        for (method, path) in [
            (Method::GET, "/v1/jobs"),
            (Method::POST, "/v1/jobs"),
            (Method::GET, "/openapi.json"),
            (Method::GET, "/v1/no-such-route"),
        ] {
            let request = raw(&app, method.clone(), path, &[("host", host)]).json(&submit);
            let reply = answer(request).await;
            let problem = assert_problem(&reply, 421, "host-not-allowed");
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("allowed_hosts")
            );
            assert!(reply.header("access-control-allow-origin").is_none());
        }
        // Probes answer to any host.
        for probe in ["/healthz", "/readyz"] {
            let reply = answer(raw(&app, Method::GET, probe, &[("host", host)])).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{probe} for {host}: {}",
                reply.text
            );
        }
    }
    assert!(
        job_ids(&app).await.is_empty(),
        "a refused submission was queued"
    );
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_owned(),
        format!("[::1]:{port}"),
        "HAUL.example".to_owned(),
        "haul.example:443".to_owned(),
    ] {
        let reply = answer(raw(&app, Method::GET, "/v1/jobs", &[("host", &host)])).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text);
    }
}

/// Sends raw bytes over a new connection and returns what the daemon answers before it closes
/// the connection (it does after answering HTTP/1.0, or a head it would not read whole).
async fn raw_exchange(app: &TestApp, bytes: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the daemon did not close the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_without_a_host_is_421() {
    let app = TestApp::spawn().await;
    let answer = raw_exchange(&app, b"GET /v1/jobs HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 421"), "{answer}");
    assert!(answer.contains("host-not-allowed"), "{answer}");
    let ok = b"GET /v1/jobs HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let answer = raw_exchange(&app, ok).await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

const UI: &str = "https://ui.example";

async fn with_ui_origin() -> TestApp {
    TestApp::spawn_with(|s| s.allowed_origins = vec![UI.to_owned()]).await
}

#[tokio::test]
async fn a_foreign_origin_is_403_on_every_method_and_gets_no_cors_headers() {
    let app = with_ui_origin().await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let submit = json!({ "url": "http://h/x" });
    for origin in [
        "https://evil.example".to_owned(),
        "null".to_owned(),
        "http://ui.example".to_owned(),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() + 1),
        "not an origin".to_owned(),
    ] {
        for (method, path, body) in [
            (Method::GET, "/v1/jobs", Value::Null),
            (Method::POST, "/v1/jobs", submit.clone()),
            (
                Method::PUT,
                "/v1/limits",
                json!({ "max_bytes_per_second": 1000 }),
            ),
        ] {
            let request = raw(&app, method, path, &[("origin", &origin)]).json(&body);
            let reply = answer(request).await;
            assert_problem(&reply, 403, "origin-not-allowed");
            assert!(
                reply.header("access-control-allow-origin").is_none(),
                "{origin}"
            );
        }
        let preflight = raw(
            &app,
            Method::OPTIONS,
            "/v1/jobs",
            &[
                ("origin", &origin),
                ("access-control-request-method", "POST"),
            ],
        );
        let reply = answer(preflight).await;
        assert_problem(&reply, 403, "origin-not-allowed");
        assert!(
            reply.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
    assert!(
        job_ids(&app).await.is_empty(),
        "a refused submission was queued"
    );
    let (status, limits) = app.get("/v1/limits").await;
    assert_eq!(
        (status, &limits["max_bytes_per_second"]),
        (StatusCode::OK, &Value::Null)
    );
}

#[tokio::test]
async fn the_daemons_own_and_allowed_origins_work_and_only_they_get_cors() {
    let app = with_ui_origin().await;
    let own = app.base.clone();
    let plain = answer(raw(&app, Method::GET, "/v1/jobs", &[])).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(
        plain.header("access-control-allow-origin").is_none(),
        "CORS without an Origin"
    );
    for origin in [own.as_str(), UI, "HTTPS://UI.EXAMPLE:443"] {
        let request = raw(&app, Method::POST, "/v1/jobs", &[("origin", origin)]);
        let reply = answer(request.json(&json!({ "url": "http://h/x" }))).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{origin}: {}",
            reply.text
        );
        assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
        assert_eq!(reply.header("vary"), Some("origin"));
        assert!(
            reply
                .header("access-control-expose-headers")
                .unwrap()
                .contains("location")
        );
    }
    let preflight = raw(
        &app,
        Method::OPTIONS,
        "/v1/jobs",
        &[
            ("origin", UI),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    );
    let reply = answer(preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(reply.header("access-control-allow-origin"), Some(UI));
    let methods = reply.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = reply.header("access-control-allow-headers").unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert!(reply.header("access-control-max-age").is_some());
    assert_eq!(job_ids(&app).await.len(), 3);
}

fn manifest_post(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    raw(app, Method::POST, "/v1/jobs", headers)
        .header("content-type", "text/plain")
        .body("http://h/x\n")
}

#[tokio::test]
async fn a_cross_site_text_plain_manifest_is_refused() {
    // What a hidden `<form enctype="text/plain" method="post">` on another site sends: no
    // preflight, a body the daemon would take as a manifest.
    let app = with_ui_origin().await;
    let cross_site = [
        vec![
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("origin", "null"), ("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
    ];
    for headers in &cross_site {
        let reply = answer(manifest_post(&app, headers)).await;
        assert_problem(&reply, 403, "origin-not-allowed");
    }
    assert!(
        job_ids(&app).await.is_empty(),
        "a cross-site manifest was queued"
    );
    // The same manifest from the daemon's own origin, an allowed one or a program is taken.
    let own = app.base.clone();
    for headers in [
        vec![],
        vec![("sec-fetch-site", "none")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![("origin", UI), ("sec-fetch-site", "cross-site")],
    ] {
        let reply = answer(manifest_post(&app, &headers)).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{headers:?}: {}",
            reply.text
        );
    }
    // A cross-site GET is harmless (its answer is unreadable without CORS) and not refused.
    let get = raw(
        &app,
        Method::GET,
        "/v1/jobs",
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(answer(get).await.status, StatusCode::OK);
    assert_eq!(job_ids(&app).await.len(), 4);
}

#[tokio::test]
async fn headers_over_max_header_bytes_get_431() {
    let app = TestApp::spawn_with(|s| s.max_header_bytes = 8 * 1024).await;
    let just_under = "a".repeat(7 * 1024);
    let reply = answer(raw(
        &app,
        Method::GET,
        "/v1/jobs",
        &[("x-filler", &just_under)],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // Over the limit: a problem, also on the probes.
    let over = "a".repeat(9 * 1024);
    for path in ["/v1/jobs", "/healthz"] {
        let reply = answer(raw(&app, Method::GET, path, &[("x-filler", &over)])).await;
        let problem = assert_problem(&reply, 431, "headers-too-large");
        assert!(
            problem["detail"].as_str().unwrap().contains("8192"),
            "{problem}"
        );
    }
    // Spread over many headers, and in the query string, it counts all the same.
    let many: Vec<(String, String)> = (0..20)
        .map(|i| (format!("x-h{i}"), "b".repeat(500)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_problem(
        &answer(raw(&app, Method::GET, "/v1/jobs", &many)).await,
        431,
        "headers-too-large",
    );
    let long_query = format!("/v1/jobs?q={over}");
    assert_problem(
        &answer(raw(&app, Method::GET, &long_query, &[])).await,
        431,
        "headers-too-large",
    );
    // Far over it, hyper stops reading the head: a bare 431, and the connection is closed.
    let huge = "a".repeat(64 * 1024);
    let request = format!("GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: {huge}\r\n\r\n");
    let reply = raw_exchange(&app, request.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    // The daemon still serves.
    let (status, _) = app.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_manifest_over_max_request_bytes_is_413() {
    // (A JSON body over the limit is in `errors`.)
    let app = TestApp::spawn_with(|s| s.max_request_bytes = 1024).await;
    let body = "http://h/x\n".repeat(200);
    let request = raw(
        &app,
        Method::POST,
        "/v1/jobs",
        &[("content-type", "text/plain")],
    )
    .body(body);
    assert_problem(&answer(request).await, 413, "payload-too-large");
    let small = raw(
        &app,
        Method::POST,
        "/v1/jobs",
        &[("content-type", "text/plain")],
    )
    .body("http://h/x\n");
    assert_eq!(answer(small).await.status, StatusCode::CREATED);
}

/// Submits one job as `bearer` (`None`: without a token) and returns the answer.
async fn submit_as(app: &TestApp, bearer: Option<&str>) -> Reply {
    let mut request = raw(app, Method::POST, "/v1/jobs", &[]).json(&json!({ "url": "http://h/x" }));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    answer(request).await
}

fn assert_rate_limited(reply: &Reply) -> u64 {
    assert_problem(reply, 429, "rate-limited");
    let secs: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(secs >= 1, "{secs}");
    secs
}

#[tokio::test]
async fn submissions_over_the_burst_get_429_and_retries_count_too() {
    let app = TestApp::spawn_with(|s| {
        // One submission back every 100 s: none comes back during the test.
        s.submit_rate_per_second = 0.01;
        s.submit_burst = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(submit_as(&app, None).await.status, StatusCode::CREATED);
    }
    let secs = assert_rate_limited(&submit_as(&app, None).await);
    assert!((90..=100).contains(&secs), "{secs}");
    let id = job_ids(&app).await[0].clone();
    // Retrying creates work too; reading and acting on a job do not.
    let retry = answer(raw(
        &app,
        Method::POST,
        &format!("/v1/jobs/{id}/retry"),
        &[],
    ))
    .await;
    assert_rate_limited(&retry);
    assert_eq!(app.get("/v1/jobs").await.0, StatusCode::OK);
    assert_eq!(app.get(&format!("/v1/jobs/{id}")).await.0, StatusCode::OK);
    assert_eq!(app.action(&id, "cancel").await.0, StatusCode::OK);
    assert_eq!(
        job_ids(&app).await.len(),
        2,
        "a refused submission was queued"
    );
}

#[tokio::test]
async fn the_bucket_refills_at_the_rate() {
    let app = TestApp::spawn_with(|s| {
        s.submit_rate_per_second = 2.0;
        s.submit_burst = 1;
    })
    .await;
    let started = Instant::now();
    assert_eq!(submit_as(&app, None).await.status, StatusCode::CREATED);
    // Poll until the next submission is taken: it cannot be before half a second.
    let deadline = started + DEADLINE;
    loop {
        let reply = submit_as(&app, None).await;
        if reply.status == StatusCode::CREATED {
            break;
        }
        assert_eq!(assert_rate_limited(&reply), 1);
        assert!(Instant::now() < deadline, "the bucket never refilled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "refilled after {took:?}"
    );
    assert_eq!(job_ids(&app).await.len(), 2);
}

#[tokio::test]
async fn each_scoped_token_has_its_own_bucket() {
    let app = TestApp::spawn_with(|s| {
        scoped(s);
        s.tokens
            .push(token("other", "other-submitter", &[Scope::Submit]));
        s.submit_rate_per_second = 0.01;
        s.submit_burst = 1;
    })
    .await;
    assert_eq!(
        submit_as(&app, Some(SUBMITTER)).await.status,
        StatusCode::CREATED
    );
    let secs = assert_rate_limited(&submit_as(&app, Some(SUBMITTER)).await);
    assert!(
        (90..=100).contains(&secs),
        "one submission per 100 s: {secs}"
    );
    assert_eq!(
        submit_as(&app, Some("other-submitter")).await.status,
        StatusCode::CREATED
    );
    // The all-scope token counts by address: its own bucket too, used once.
    assert_eq!(
        submit_as(&app, Some(ROOT)).await.status,
        StatusCode::CREATED
    );
    assert_rate_limited(&submit_as(&app, Some(ROOT)).await);
    // Refused submissions queue nothing.
    assert_eq!(job_ids(&app).await.len(), 3);
}

#[tokio::test]
async fn the_contract_names_each_scope_and_the_security_answers() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let scopes =
        |path: &str, method: &str| doc["paths"][path][method]["security"][0]["bearer"].clone();
    assert_eq!(scopes("/v1/jobs", "get"), json!(["read"]));
    assert_eq!(scopes("/v1/jobs", "post"), json!(["submit"]));
    assert_eq!(scopes("/v1/jobs/{id}", "delete"), json!(["submit"]));
    assert_eq!(scopes("/v1/jobs/prune", "post"), json!(["admin"]));
    assert_eq!(scopes("/v1/limits", "put"), json!(["admin"]));
    let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
    for (path, method) in [("/v1/jobs", "post"), ("/v1/jobs/{id}/retry", "post")] {
        let limited = &responses(path, method)["429"];
        assert!(
            limited["description"]
                .as_str()
                .unwrap()
                .contains("rate-limited"),
            "{path}"
        );
        assert!(limited["headers"]["Retry-After"].is_object(), "{path}");
    }
    for status in ["401", "403", "421", "431"] {
        assert!(
            responses("/v1/stats", "get")[status].is_object(),
            "{status}"
        );
    }
    assert!(
        responses("/healthz", "get")["421"].is_null(),
        "probes answer any host"
    );
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"].to_string();
    for code in [
        "forbidden",
        "origin-not-allowed",
        "host-not-allowed",
        "rate-limited",
        "headers-too-large",
    ] {
        assert!(codes.contains(&format!("\"{code}\"")), "{code}");
    }
}
