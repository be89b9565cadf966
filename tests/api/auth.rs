//! Bearer-token authentication: with `api_token` set, every `/v1` route needs the token, and
//! the probes and the OpenAPI document stay open.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::contract::{MISSING, Reply, assert_problem, job_ids, origin, send};
use crate::helpers::{TestApp, secret};

const TOKEN: &str = "s3cret-token-for-tests";

async fn guarded() -> TestApp {
    TestApp::spawn_with(|s| s.api_token = secret(TOKEN)).await
}

/// A request carrying exactly the `Authorization` header given (or none).
async fn with_auth(app: &TestApp, method: Method, path: &str, auth: Option<&str>) -> Reply {
    let mut request = app.http.request(method, app.url(path));
    if let Some(value) = auth {
        request = request.header("authorization", value);
    }
    if path == "/v1/jobs" {
        request = request.json(&json!({ "url": "http://h/x" }));
    }
    if path == "/v1/events" {
        // An endless stream: the status and headers are all there is to check.
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let text = if status.is_success() {
            String::new()
        } else {
            response.text().await.unwrap()
        };
        return Reply {
            status,
            headers,
            text,
        };
    }
    send(request).await
}

fn assert_unauthorized(reply: &Reply) -> String {
    let problem = assert_problem(reply, 401, "unauthorized");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer"),
        "{}",
        reply.text
    );
    problem["detail"].as_str().unwrap().to_owned()
}

/// Every `/v1` route, with a real job id where one is needed.
fn v1_routes(id: &str) -> Vec<(Method, String)> {
    let job = format!("/v1/jobs/{id}");
    vec![
        (Method::GET, "/v1/jobs".to_owned()),
        (Method::POST, "/v1/jobs".to_owned()),
        (Method::GET, job.clone()),
        (Method::PATCH, job.clone()),
        (Method::DELETE, job.clone()),
        (Method::POST, format!("{job}/cancel")),
        (Method::POST, format!("{job}/pause")),
        (Method::POST, format!("{job}/resume")),
        (Method::GET, format!("{job}/events")),
        (Method::GET, format!("{job}/deliveries")),
        (Method::POST, "/v1/jobs/cancel-all".to_owned()),
        (Method::POST, "/v1/jobs/prune".to_owned()),
        (Method::GET, "/v1/events".to_owned()),
        (Method::GET, "/v1/stats".to_owned()),
        (Method::GET, "/v1/no-such-route".to_owned()),
    ]
}

#[tokio::test]
async fn v1_without_a_token_is_401_and_changes_nothing() {
    let app = guarded().await;
    let origin = origin().await;
    let id = app.add(&origin.url(MISSING)).await;
    app.wait_for(&id, "failed").await;
    for (method, path) in v1_routes(&id) {
        let detail = assert_unauthorized(&with_auth(&app, method.clone(), &path, None).await);
        assert!(detail.contains("Bearer"), "{method} {path}: {detail}");
    }
    // Neither the submission, nor the delete, nor the prune happened.
    assert_eq!(job_ids(&app).await, vec![id.clone()]);
    assert_eq!(app.job(&id).await["status"], "failed");
}

#[tokio::test]
async fn a_wrong_token_is_401_and_not_echoed() {
    let app = guarded().await;
    let near = &TOKEN[..TOKEN.len() - 1];
    for auth in [
        "Bearer wrong-guess".to_owned(),
        format!("Bearer {near}"),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {TOKEN}{TOKEN}"),
        "Bearer ".to_owned(),
        TOKEN.to_owned(),
        format!("Basic {TOKEN}"),
        format!("Token {TOKEN}"),
    ] {
        for (method, path) in [(Method::GET, "/v1/jobs"), (Method::POST, "/v1/jobs")] {
            let reply = with_auth(&app, method, path, Some(&auth)).await;
            assert_unauthorized(&reply);
            assert!(
                !reply.text.contains(near),
                "the token is echoed: {}",
                reply.text
            );
        }
    }
    assert!(job_ids(&app).await.is_empty());
}

#[tokio::test]
async fn the_right_token_opens_every_v1_route() {
    let app = guarded().await;
    let origin = origin().await;
    let id = app.add(&origin.url(MISSING)).await; // the helpers send the token
    app.wait_for(&id, "failed").await;
    let bearer = format!("Bearer {TOKEN}");
    for (method, path) in v1_routes(&id) {
        let reply = with_auth(&app, method.clone(), &path, Some(&bearer)).await;
        assert_ne!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            reply.text
        );
        assert!(reply.headers.get("www-authenticate").is_none());
    }
    let (status, stats) = app.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
}

#[tokio::test]
async fn probes_and_the_openapi_document_need_no_token() {
    let app = guarded().await;
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let reply = with_auth(&app, Method::GET, path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        let wrong = with_auth(&app, Method::GET, path, Some("Bearer wrong")).await;
        assert_eq!(wrong.status, StatusCode::OK, "{path} with a wrong token");
    }
    let outside = with_auth(&app, Method::GET, "/not-v1", None).await;
    assert_problem(&outside, 404, "not-found");
}

#[tokio::test]
async fn spelling_a_v1_path_differently_does_not_get_past_the_check() {
    let app = guarded().await;
    for path in [
        "/%761/jobs",
        "/v1%2Fjobs",
        "/v1/%6Aobs",
        "/v1/jobs/",
        "//v1/jobs",
        "/V1/jobs",
    ] {
        let reply = with_auth(&app, Method::GET, path, None).await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::NOT_FOUND].contains(&reply.status),
            "{path}: {} {}",
            reply.status,
            reply.text
        );
        assert!(
            reply.json()["jobs"].is_null(),
            "{path} listed jobs without a token"
        );
    }
}

#[tokio::test]
async fn without_a_configured_token_no_token_is_needed() {
    let app = TestApp::spawn().await;
    let reply = with_auth(&app, Method::GET, "/v1/jobs", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let any = with_auth(&app, Method::GET, "/v1/stats", Some("Bearer whatever")).await;
    assert_eq!(any.status, StatusCode::OK, "{}", any.text);
}
