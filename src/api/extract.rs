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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection {
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
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
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::new(ErrorCode::InvalidBody, rejection.body_text())
            }
        })?;
        if kind == BodyKind::Json {
            if uri.query().is_some_and(|q| !q.is_empty()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    "query parameters set a text/plain manifest's options; \
                     a JSON body carries its own",
                ));
            }
            return axum::Json::<JobRequest>::from_bytes(&body)
                .map(|axum::Json(request)| Self(request))
                .map_err(|rejection| json_rejection(&rejection));
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
