//! Operations routes: liveness, readiness, totals, the OpenAPI document, request ids.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::contract::{
    Reply, cancelled_job, completed_job, eventually, failed_job, one_slot, paused_job, queued_job,
    request, running_job, send,
};
use crate::helpers::TestApp;

#[tokio::test]
async fn healthz_and_readyz_answer_ok() {
    let app = TestApp::spawn().await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let reply = send(request(&app, Method::GET, path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json(), json!({ "status": status }));
    }
}

async fn stats(app: &TestApp) -> Value {
    let (status, stats) = app.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["bytes_per_second"].is_u64(), "{stats}");
    assert!(stats["connections_open"].is_u64(), "{stats}");
    stats
}

fn counts(stats: &Value) -> BTreeMap<String, u64> {
    let jobs = stats["jobs"].as_object().unwrap();
    jobs.iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn expected(pairs: [(&str, u64); 6]) -> BTreeMap<String, u64> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[tokio::test]
async fn stats_count_every_status_and_show_live_throughput() {
    let (app, origin) = one_slot().await;
    let empty = stats(&app).await;
    let zero = [
        ("queued", 0),
        ("running", 0),
        ("paused", 0),
        ("completed", 0),
        ("failed", 0),
        ("cancelled", 0),
    ];
    assert_eq!(counts(&empty), expected(zero));
    assert_eq!(
        (&empty["bytes_per_second"], &empty["connections_open"]),
        (&json!(0), &json!(0))
    );
    completed_job(&app, &origin).await;
    failed_job(&app, &origin).await;
    running_job(&app, &origin).await;
    queued_job(&app, &origin).await;
    queued_job(&app, &origin).await;
    paused_job(&app, &origin).await;
    cancelled_job(&app, &origin).await;
    let now = stats(&app).await;
    let each = [
        ("queued", 2),
        ("running", 1),
        ("paused", 1),
        ("completed", 1),
        ("failed", 1),
        ("cancelled", 1),
    ];
    assert_eq!(counts(&now), expected(each));
    eventually("a download rate and an open connection", async || {
        let now = stats(&app).await;
        now["bytes_per_second"].as_u64() > Some(0) && now["connections_open"] == 1
    })
    .await;
    app.post("/v1/jobs/cancel-all", json!(null)).await;
    let after = [
        ("queued", 0),
        ("running", 0),
        ("paused", 0),
        ("completed", 1),
        ("failed", 1),
        ("cancelled", 5),
    ];
    assert_eq!(counts(&stats(&app).await), expected(after));
    eventually("the connection to close", async || {
        let now = stats(&app).await;
        now["bytes_per_second"] == 0 && now["connections_open"] == 0
    })
    .await;
}

/// Every route the daemon serves, with its methods.
fn routes() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    BTreeMap::from([
        ("/v1/jobs", BTreeSet::from(["get", "post"])),
        ("/v1/jobs/{id}", BTreeSet::from(["get", "patch", "delete"])),
        ("/v1/jobs/{id}/cancel", BTreeSet::from(["post"])),
        ("/v1/jobs/{id}/pause", BTreeSet::from(["post"])),
        ("/v1/jobs/{id}/resume", BTreeSet::from(["post"])),
        ("/v1/jobs/{id}/retry", BTreeSet::from(["post"])),
        ("/v1/jobs/{id}/events", BTreeSet::from(["get"])),
        ("/v1/jobs/{id}/wait", BTreeSet::from(["get"])),
        ("/v1/jobs/cancel-all", BTreeSet::from(["post"])),
        ("/v1/jobs/prune", BTreeSet::from(["post"])),
        ("/v1/jobs/{id}/deliveries", BTreeSet::from(["get"])),
        ("/v1/events", BTreeSet::from(["get"])),
        ("/v1/stats", BTreeSet::from(["get"])),
        ("/v1/limits", BTreeSet::from(["get", "put"])),
        ("/healthz", BTreeSet::from(["get"])),
        ("/readyz", BTreeSet::from(["get"])),
        ("/openapi.json", BTreeSet::from(["get"])),
    ])
}

async fn document(app: &TestApp) -> Value {
    let reply = send(request(app, Method::GET, "/openapi.json")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc: Value = serde_json::from_str(&reply.text).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["version"].is_string());
    doc
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_nothing_else() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeMap<&str, BTreeSet<&str>> = paths
        .iter()
        .map(|(path, item)| {
            let methods = item.as_object().unwrap().keys().map(String::as_str);
            let methods = methods.filter(|m| ["get", "post", "put", "patch", "delete"].contains(m));
            (path.as_str(), methods.collect())
        })
        .collect();
    assert_eq!(documented, routes());
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            assert_eq!(
                operation["security"].is_array(),
                path.starts_with("/v1"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    for (path, methods) in routes() {
        let path = path.replace("{id}", &id);
        for method in methods {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Status and headers only: some of these are endless event streams.
            let response = request(&app, method.clone(), &path).send().await.unwrap();
            let status = response.status();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status}"
            );
            if status == StatusCode::NOT_FOUND {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "job-not-found", "{method} {path}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn the_openapi_document_names_every_error_code() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "invalid-json",
        "invalid-query",
        "invalid-cursor",
        "invalid-regex",
        "invalid-job-id",
        "invalid-last-event-id",
        "unauthorized",
        "job-not-found",
        "not-found",
        "method-not-allowed",
        "invalid-transition",
        "idempotency-key-reused",
        "invalid-idempotency-key",
        "payload-too-large",
        "unsupported-media-type",
        "unknown-field",
        "invalid-body",
        "invalid-source",
        "invalid-url-template",
        "invalid-manifest",
        "invalid-file-count",
        "invalid-url",
        "unsupported-scheme",
        "dest-escapes-root",
        "invalid-path",
        "duplicate-path",
        "invalid-priority",
        "invalid-sha256",
        "invalid-header",
        "invalid-description",
        "queue-full",
        "store-unavailable",
        "internal",
    ] {
        assert!(codes.contains(code), "{code} is not documented: {codes:?}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Job and file errors are classes of `error.type`, documented on the schema.
    let classes = doc["components"]["schemas"]["JobError"]["properties"]["type"]["description"]
        .as_str()
        .expect("JobError.type is described");
    for class in ["http-status", "io", "path-busy", "insufficient-storage"] {
        assert!(
            classes.contains(class),
            "{class} is not documented: {classes}"
        );
    }
}

fn request_id(reply: &Reply) -> String {
    reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned()
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let ok = send(request(&app, Method::GET, "/v1/jobs")).await;
    let problem = send(request(&app, Method::GET, "/v1/jobs/nope")).await;
    let (a, b) = (request_id(&ok), request_id(&problem));
    assert!(!a.is_empty() && a != b, "{a} {b}");
    let given =
        send(request(&app, Method::GET, "/healthz").header("x-request-id", "trace-me-42")).await;
    assert_eq!(request_id(&given), "trace-me-42");
}
