//! Extractors whose rejections are problem responses, not axum's plain-text ones.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::problem::{ApiError, ErrorCode};
use crate::domain::manifest::{self, ManifestOptions};
use crate::domain::{JobId, JobRequest, ValidationError};

/// `Json<T>` whose failures become `invalid-json` (400), `unknown-field` / `invalid-body`
/// (422), `unsupported-media-type` (415) or `payload-too-large` (413).
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !matches!(body_kind(req.headers()), Ok(BodyKind::Json)) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let body = body_bytes(req, state).await?;
        from_json(&body).map(Self)
    }
}

/// Deserialises a JSON body, with [`AppJson`]'s rejections.
fn from_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let rewritten = integral_numbers(body);
    axum::Json::<T>::from_bytes(rewritten.as_deref().unwrap_or(body))
        .map(|axum::Json(value)| value)
        .map_err(|rejection| json_rejection(&rejection))
}

/// JSON Schema, and so the OpenAPI document, counts a number without a fraction (`5.0`,
/// `1e3`) as an `integer`; serde's integer types refuse it. Such numbers are written as
/// integers before deserialising: the body again, only when it has one (a body without is
/// deserialised as sent, so its errors name the line and column the client wrote).
fn integral_numbers(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if !rewrite_integral(&mut value) {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// Rewrites the integral floats in `value` as integers; whether there was one.
fn rewrite_integral(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    // 2^63 and 2^64: an f64 at or past 2^64 fits no integer type and stays a float.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && (-I64_END..U64_END).contains(&f) => {
                *value = if f < I64_END {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |seen, v| rewrite_integral(v) | seen),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |seen, v| rewrite_integral(v) | seen),
        _ => false,
    }
}

/// The body, with a problem when it is larger than `max_request_bytes` or cannot be read.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        } else {
            ApiError::new(ErrorCode::InvalidBody, rejection.body_text())
        }
    })
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection {
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        JsonRejection::JsonDataError(_) if detail.contains("unknown field") => {
            ApiError::new(ErrorCode::UnknownField, detail)
        }
        JsonRejection::JsonDataError(_) => ApiError::new(ErrorCode::InvalidBody, detail),
        JsonRejection::JsonSyntaxError(_) => ApiError::new(ErrorCode::InvalidJson, detail),
        _ => ApiError::new(ErrorCode::InvalidJson, detail),
    }
}

/// The body of `POST /v1/jobs`: a JSON [`JobRequest`], or a `text/plain` manifest whose job
/// options come from the query ([`ManifestOptions`]). Failures are those of [`AppJson`], plus
/// `invalid-manifest` (422, naming the line) and `invalid-query` (400: a bad option, or any
/// query parameter with a JSON body, where it would be silently ignored).
pub struct Submission(pub JobRequest);

/// What a body's `Content-Type` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Manifest,
}

impl<S: Send + Sync> FromRequest<S> for Submission {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let kind = body_kind(req.headers())?;
        let uri = req.uri().clone();
        let body = body_bytes(req, state).await?;
        if kind == BodyKind::Json {
            if uri.query().is_some_and(|q| !q.is_empty()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    "query parameters set a text/plain manifest's options; \
                     a JSON body carries its own",
                ));
            }
            return from_json::<JobRequest>(&body).map(Self);
        }
        let axum::extract::Query(options) =
            axum::extract::Query::<ManifestOptions>::try_from_uri(&uri)
                .map_err(|rejection| query_rejection(&rejection))?;
        let text = std::str::from_utf8(&body).map_err(|e| {
            let line = body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            let detail = format!("manifest line {line}: not UTF-8");
            ApiError::new(ErrorCode::InvalidManifest, detail)
        })?;
        let files = manifest::parse(text).map_err(ValidationError::from)?;
        Ok(Self(options.into_request(files)))
    }
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    match essence.as_str() {
        _ if json => Ok(BodyKind::Json),
        "text/plain" => Ok(BodyKind::Manifest),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the job as JSON (`Content-Type: application/json`) or as a manifest, one \
             URL per line (`Content-Type: text/plain`)",
        )),
    }
}

/// The `Idempotency-Key` header, when given once and as text (`invalid-idempotency-key`,
/// 400, otherwise). Its length and characters are checked with the request it names.
pub struct IdempotencyHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            if parts.headers.contains_key("idempotency-key") {
                return Err(ApiError::new(
                    ErrorCode::InvalidIdempotencyKey,
                    "give Idempotency-Key once",
                ));
            }
            return Ok(Self(None));
        };
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key must be printable ASCII",
            )
        })?;
        Ok(Self(Some(text.to_owned())))
    }
}

/// `Query<T>` whose failures become `invalid-query` (400).
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, rejection.body_text())
}

/// The `{id}` path segment as a job id (`invalid-job-id`, 400, when it is not a UUID).
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::new(ErrorCode::InvalidJobId, e.body_text()))?;
        raw.parse().map(Self).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidJobId,
                format!("{raw:?} is not a job id (a UUID)"),
            )
        })
    }
}

/// Where an event stream resumes: the `Last-Event-ID` header (sent by `EventSource` when it
/// reconnects), else the `last_event_id` query parameter (for the first connection of a
/// page that kept an id). The header wins: a reconnecting `EventSource` sends a newer id in
/// it and the page's original URL with the older one. An empty value means none.
pub struct LastEventId(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let header = match parts.headers.get("last-event-id") {
            Some(value) => Some(value.to_str().map_err(|_| bad_event_id("Last-Event-ID"))?),
            None => None,
        };
        let query = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(name, _)| name == "last_event_id")
                .map(|(_, value)| value.into_owned())
        });
        let (name, raw) = match (header, &query) {
            (Some(value), _) => ("Last-Event-ID", value),
            (None, Some(value)) => ("last_event_id", value.as_str()),
            (None, None) => return Ok(Self(None)),
        };
        match raw.trim() {
            "" => Ok(Self(None)),
            text => text
                .parse()
                .map(|id| Self(Some(id)))
                .map_err(|_| bad_event_id(name)),
        }
    }
}

fn bad_event_id(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidLastEventId,
        format!("{name} must be the id of an event (a non-negative integer)"),
    )
}
