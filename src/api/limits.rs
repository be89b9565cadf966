//! The daemon-wide limits that can change while it runs.

use axum::extract::State;

use super::AppState;
use super::dto::Limits;
use super::extract::AppJson;
use super::problem::{ApiError, ErrorCode, ProblemDetails};
use crate::domain::request::MAX_LIMIT;

/// The daemon-wide limits in force now.
#[utoipa::path(
    get, path = "/v1/limits", operation_id = "get_limits", tag = "ops",
    responses(
        (status = 200, description = "The limits in force", body = Limits),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_limits(State(state): State<AppState>) -> axum::Json<Limits> {
    axum::Json(Limits {
        max_bytes_per_second: state.engine.global_rate(),
    })
}

/// Changes the daemon-wide limits at once, for every running download, until the next start
/// (the settings apply again then).
#[utoipa::path(
    put, path = "/v1/limits", operation_id = "set_limits", tag = "ops",
    request_body = Limits,
    responses(
        (status = 200, description = "The limits now in force", body = Limits),
        (status = 400, description = "The body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A limit is out of range", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn set_limits(
    State(state): State<AppState>,
    AppJson(limits): AppJson<Limits>,
) -> Result<axum::Json<Limits>, ApiError> {
    // Above 2^63-1 is outside the documented `int64`, as for a job's own limit.
    if limits
        .max_bytes_per_second
        .is_some_and(|rate| !(1..=MAX_LIMIT).contains(&rate))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            "max_bytes_per_second must be between 1 and 2^63-1 (null for no limit)",
        ));
    }
    state.engine.set_global_rate(limits.max_bytes_per_second);
    tracing::info!(max_bytes_per_second = ?limits.max_bytes_per_second, "global rate limit changed");
    Ok(axum::Json(Limits {
        max_bytes_per_second: state.engine.global_rate(),
    }))
}
