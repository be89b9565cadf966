//! What contract fuzzing (`scripts/contract-fuzz`, schemathesis against `openapi.yaml`) found,
//! kept as regular tests: requests the document calls valid that the daemon refused, and ones
//! it calls invalid that the daemon took.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::contract::{assert_problem, one_slot, request, running_job, send};
use crate::helpers::TestApp;

/// JSON Schema counts `222.0` and `3e0` as integers, so the document's `integer` fields
/// accept them: they were refused with 422 `invalid-body` (serde's integer types take no
/// float). A fraction is still no integer.
#[tokio::test]
async fn numbers_without_a_fraction_are_integers() {
    let (app, origin) = one_slot().await;
    let job = app
        .create_job(
            json!({"url": origin.url("small.bin"), "priority": 3e0, "max_connections": 2.0}),
        )
        .await;
    assert_eq!(
        (job["priority"].clone(), job["max_connections"].clone()),
        (json!(3), json!(2))
    );

    let id = running_job(&app, &origin).await;
    let (status, job) = app
        .call(
            Method::PATCH,
            &format!("/v1/jobs/{id}"),
            Some(json!({"priority": 5.0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["priority"], 5);

    let fraction =
        request(&app, Method::PATCH, &format!("/v1/jobs/{id}")).json(&json!({"priority": 1.5}));
    assert_problem(&send(fraction).await, 422, "invalid-body");
}

/// The document says `int64`, and the store keeps limits as signed 64-bit integers: a rate or
/// segment size past 2^63-1 was taken and silently became 2^63-1.
#[tokio::test]
async fn limits_past_int64_are_refused() {
    let app = TestApp::spawn().await;
    let too_large = json!(9_223_372_036_854_775_808_u64);
    let put =
        request(&app, Method::PUT, "/v1/limits").json(&json!({"max_bytes_per_second": too_large}));
    assert_problem(&send(put).await, 422, "invalid-limit");
    assert_eq!(
        app.get("/v1/limits").await.1["max_bytes_per_second"],
        json!(null)
    );

    for field in ["max_bytes_per_second", "min_segment_size"] {
        let body = json!({"url": "http://127.0.0.1:9/a.bin", field: too_large});
        let post = request(&app, Method::POST, "/v1/jobs").json(&body);
        assert_problem(&send(post).await, 422, "invalid-limit");
    }
    let largest = json!({"url": "http://127.0.0.1:9/a.bin", "max_bytes_per_second": i64::MAX});
    let job = app.create_job(largest).await;
    assert_eq!(job["max_bytes_per_second"], i64::MAX);
}

/// A job always has a priority: `PATCH` with `"priority": null` was taken as "no change"
/// although the document (now) says the field is an integer; the body must name a change.
#[tokio::test]
async fn a_patch_cannot_null_the_priority() {
    let (app, origin) = one_slot().await;
    let id = running_job(&app, &origin).await;
    let path = format!("/v1/jobs/{id}");
    let null = request(&app, Method::PATCH, &path)
        .json(&json!({"priority": null, "max_bytes_per_second": 1000}));
    assert_problem(&send(null).await, 422, "invalid-body");
    let empty = request(&app, Method::PATCH, &path).json(&json!({}));
    assert_problem(&send(empty).await, 422, "invalid-body");
    assert_eq!(app.job(&id).await["max_bytes_per_second"], json!(null));
}
