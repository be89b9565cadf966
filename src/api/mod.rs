//! The HTTP API: routes, request validation, problem responses, the OpenAPI document.
//!
//! Handlers are thin: they extract, parse into domain types, call the store or the engine,
//! and map the result to a view. Everything is JSON under `/v1`.

pub mod auth;
mod deliveries;
pub mod dto;
mod events;
mod extract;
pub mod guard;
mod jobs;
mod limits;
pub mod openapi;
mod ops;
pub mod problem;
pub mod rate;
pub mod scope;
pub mod serve;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderName, Request};
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::paths::DownloadRoot;
use crate::engine::Engine;
use crate::events::EventBus;
use crate::store::Store;
use crate::webhooks::Webhooks;
use problem::{ApiError, ErrorCode};

/// What the handlers need from the settings.
#[derive(Debug)]
pub struct ApiSettings {
    pub root: DownloadRoot,
    pub max_queued_jobs: u64,
    pub max_files_per_job: usize,
    pub max_request_bytes: usize,
    /// Longest a request may take before it is answered with 503. Event streams are not cut
    /// by it (their handlers answer at once; the body streams after), and the long poll of
    /// `/v1/jobs/{id}/wait` is routed around it (it bounds itself).
    pub request_timeout: Duration,
    /// `api_token` and `[[tokens]]`; none means the API is open.
    pub tokens: auth::Tokens,
    /// `Host`, `Origin` and header-size checks.
    pub guard: guard::Guard,
    /// The per-client limit on job submissions.
    pub rate: rate::RateLimiter,
    /// Judges IP literals in submitted URLs (names are judged when they are resolved).
    pub address_policy: crate::fetch::AddressPolicy,
}

/// Shared state of every handler. Cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub store: Store,
    pub engine: Engine,
    pub events: EventBus,
    pub webhooks: Webhooks,
    pub api: Arc<ApiSettings>,
    /// Fired at shutdown; ends event streams.
    pub shutdown: CancellationToken,
}

/// Every route with its OpenAPI annotations.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    timed_routes().merge(long_polls())
}

/// Routes that may wait longer than the request timeout by design.
fn long_polls() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(wait::wait_job))
}

/// Every other route: under the request timeout.
fn timed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job, jobs::update_job, jobs::delete_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::pause_job))
        .routes(routes!(jobs::resume_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::cancel_all_jobs))
        .routes(routes!(jobs::prune_jobs))
        .routes(routes!(deliveries::list_job_deliveries))
        .routes(routes!(events::stream_events))
        .routes(routes!(events::stream_job_events))
        .routes(routes!(ops::get_stats))
        .routes(routes!(limits::get_limits, limits::set_limits))
        .routes(routes!(ops::get_health))
        .routes(routes!(ops::get_readiness))
        .routes(routes!(ops::get_openapi))
}

/// The application's router with its layers.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id, auth.token = tracing::field::Empty)
        })
        .on_response(DefaultOnResponse::new().level(Level::DEBUG));
    let (body_limit, timeout) = (state.api.max_request_bytes, state.api.request_timeout);
    let (timed, _) = timed_routes().split_for_parts();
    let (long_polls, _) = long_polls().split_for_parts();
    // A layer applies to the routes already added: the long polls are merged after it.
    timed
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(timed_out))
                .layer(tower::timeout::TimeoutLayer::new(timeout)),
        )
        .merge(long_polls)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Innermost first: the rate limit needs the caller auth found, and the guard runs
        // before auth so that preflights (which carry no token) and foreign hosts are settled.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate::limit_submissions,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn timed_out(_: tower::BoxError) -> ApiError {
    ApiError::new(ErrorCode::Timeout, "the request took too long; retry")
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}
