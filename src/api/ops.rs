//! Operations routes: liveness, readiness, totals, and the OpenAPI document.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::dto::{Health, Stats};
use super::problem::{ApiError, ProblemDetails};
use crate::domain::JobStatus;

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", operation_id = "get_health", tag = "ops",
    responses((status = 200, description = "The daemon is alive", body = Health))
)]
pub async fn get_health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers a read and takes a write.
///
/// A 503 names the fault in its detail: a full disk, a read-only file, another process's
/// lock, a damaged file.
#[utoipa::path(
    get, path = "/readyz", operation_id = "get_readiness", tag = "ops",
    responses(
        (status = 200, description = "Ready to take work", body = Health),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_readiness(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    state.store.probe().await?;
    Ok(axum::Json(Health {
        status: "ready".into(),
    }))
}

/// Totals: jobs per status, download rate, open connections.
#[utoipa::path(
    get, path = "/v1/stats", operation_id = "get_stats", tag = "ops",
    responses(
        (status = 200, description = "Totals", body = Stats),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_stats(State(state): State<AppState>) -> Result<axum::Json<Stats>, ApiError> {
    let mut jobs: std::collections::BTreeMap<String, u64> = JobStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, count) in state.store.count_by_status().await? {
        jobs.insert(status.as_str().to_owned(), count);
    }
    let (bytes_per_second, connections_open) = state.engine.throughput();
    Ok(axum::Json(Stats {
        jobs,
        bytes_per_second,
        connections_open,
    }))
}

/// The OpenAPI document, as JSON.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "get_openapi", tag = "ops",
    responses((status = 200, description = "This API's OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn get_openapi() -> impl IntoResponse {
    match super::openapi::document().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(err) => ApiError::internal(err).into_response(),
    }
}
