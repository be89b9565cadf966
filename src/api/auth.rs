//! Bearer-token authentication for `/v1` routes, when a token is configured.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::problem::{ApiError, ErrorCode};

/// Rejects `/v1` requests without the configured token (401). Other routes (`/healthz`,
/// `/readyz`, `/openapi.json`) stay open so probes and generators work without it.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.api.api_token else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/v1") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Constant-time, so response timing does not reveal how much of a guess was right.
    let valid = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.expose().as_bytes())));
    if valid {
        return next.run(request).await;
    }
    let detail = match given {
        None => "this daemon requires `Authorization: Bearer <token>`",
        Some(_) => "the bearer token is not valid",
    };
    ApiError::new(ErrorCode::Unauthorized, detail).into_response()
}
