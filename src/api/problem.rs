//! Errors as the API shows them: RFC 9457 `application/problem+json` with a stable `code`.
//!
//! The codes are part of the contract (listed in the OpenAPI document as [`ErrorCode`]). A 5xx
//! shows the client a generic detail; its cause is logged once, here, where it is turned into
//! a response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::ValidationError;
use crate::domain::paths::PathError;
use crate::domain::template::TemplateError;
use crate::store::StoreError;

/// Every error code the API can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON.
    InvalidJson,
    /// 400: a query parameter is malformed.
    InvalidQuery,
    /// 400: the `cursor` does not come from a previous page.
    InvalidCursor,
    /// 400: `q` is not a valid regular expression.
    InvalidRegex,
    /// 400: the job id in the path is not a UUID.
    InvalidJobId,
    /// 400: `Last-Event-ID` (or `last_event_id`) is not an event id (a number).
    InvalidLastEventId,
    /// 400: `Idempotency-Key` is empty, longer than 255 characters or not printable ASCII.
    InvalidIdempotencyKey,
    /// 401: a bearer token is required and was missing or wrong.
    Unauthorized,
    /// 403: the token is valid but lacks the scope the route needs; the detail names it.
    Forbidden,
    /// 403: the request comes from a web origin (or another site) that may not use the API.
    OriginNotAllowed,
    /// 421: the `Host` header names a host this daemon does not answer to (`allowed_hosts`).
    HostNotAllowed,
    /// 429: this client submits jobs faster than `submit_rate_per_second`; retry after
    /// `Retry-After` seconds.
    RateLimited,
    /// 431: the request line and headers are larger than `max_header_bytes`.
    HeadersTooLarge,
    /// 404: no job has this id.
    JobNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the job's status does not allow this action.
    InvalidTransition,
    /// 409: this `Idempotency-Key` came with another request; use a new key for a new job.
    IdempotencyKeyReused,
    /// 413: the request body is larger than `max_request_bytes`.
    PayloadTooLarge,
    /// 415: the body must be `application/json` (or, to submit a job, a `text/plain` manifest).
    UnsupportedMediaType,
    /// 422: the body has a field the API does not know.
    UnknownField,
    /// 422: a field has the wrong type or a required one is missing.
    InvalidBody,
    /// 422: give exactly one of `url`, `files`, `url_template` (or a `text/plain` manifest).
    InvalidSource,
    /// 422: `url_template` is malformed; the detail names the character where.
    InvalidUrlTemplate,
    /// 422: a `text/plain` manifest does not parse; the detail names the line.
    InvalidManifest,
    /// 422: too many (or zero) files, also when a `url_template` expands to too many.
    InvalidFileCount,
    /// 422: a URL does not parse or has no host.
    InvalidUrl,
    /// 422: only http and https URLs are accepted.
    UnsupportedScheme,
    /// 422: `dest` or a file path would land outside the download root.
    DestEscapesRoot,
    /// 422: a path contains control characters or names nothing.
    InvalidPath,
    /// 422: two files of the job would land on the same path.
    DuplicatePath,
    /// 422: priority out of range.
    InvalidPriority,
    /// 422: not a SHA-256 hex digest, or given where it does not apply.
    InvalidSha256,
    /// 422: a header name or value is invalid or reserved.
    InvalidHeader,
    /// 422: the description is too long.
    InvalidDescription,
    /// 422: a connection, segment or rate limit is out of range.
    InvalidLimit,
    /// 422: `callback_url` is not an http or https URL.
    InvalidCallbackUrl,
    /// 422: `proxy` is not an http, https, socks5 or socks5h URL.
    InvalidProxy,
    /// 422: a URL's host (a file's, a mirror's, `callback_url`'s or `proxy`'s) is an IP
    /// address the address policy denies; the detail names the setting that allows it.
    AddressDenied,
    /// 429: `max_queued_jobs` jobs are waiting; retry after `Retry-After` seconds.
    QueueFull,
    /// 503: the store cannot take writes (a full disk, a read-only file, another process's
    /// lock, an I/O error); the detail names which; retry after `Retry-After`.
    StoreUnavailable,
    /// 503: the request took longer than the daemon allows (30 s); retry.
    Timeout,
    /// 500: a bug or an unexpected failure; the detail is in the daemon's log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidJson
            | InvalidQuery
            | InvalidCursor
            | InvalidRegex
            | InvalidJobId
            | InvalidLastEventId
            | InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden | OriginNotAllowed => StatusCode::FORBIDDEN,
            HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            JobNotFound | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            InvalidTransition | IdempotencyKeyReused => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            QueueFull => StatusCode::TOO_MANY_REQUESTS,
            StoreUnavailable | Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The kebab-case code.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The body of every error response (RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProblemDetails {
    /// `urn:haul:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// The stable code, for programs.
    pub code: ErrorCode,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// The cause of a 5xx, logged and never shown.
    pub internal: Option<String>,
}

impl ApiError {
    /// An error with a client-facing detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            retry_after: None,
            internal: None,
        }
    }

    fn hidden(code: ErrorCode, detail: &str, cause: String, retry_after: Option<u64>) -> Self {
        Self {
            code,
            detail: detail.to_owned(),
            retry_after,
            internal: Some(cause),
        }
    }

    /// An unexpected failure: the client sees a generic message, the log sees `cause`.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::hidden(
            ErrorCode::Internal,
            "an unexpected error occurred; see the daemon's log",
            cause.to_string(),
            None,
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::NotFound(id) => {
                Self::new(ErrorCode::JobNotFound, format!("job {id} not found"))
            }
            StoreError::InvalidTransition { .. } => {
                Self::new(ErrorCode::InvalidTransition, err.to_string())
            }
            StoreError::QueueFull { .. } => {
                let mut e = Self::new(ErrorCode::QueueFull, format!("{err}; retry later"));
                e.retry_after = Some(5);
                e
            }
            StoreError::Unavailable(_) => {
                // The class of the fault is safe to show; the database's own message (paths,
                // statements) is only logged.
                let fault = err.fault().map_or("unknown", |f| f.describe());
                Self::hidden(
                    ErrorCode::StoreUnavailable,
                    &format!("the store is unavailable ({fault}); retry shortly"),
                    format!("{err}: {:?}", std::error::Error::source(&err)),
                    Some(1),
                )
            }
            _ => Self::internal(format!("{err}: {:?}", std::error::Error::source(&err))),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        use ValidationError as V;
        let code = match &err {
            V::MissingSource | V::AmbiguousSource | V::MirrorsWithFiles => ErrorCode::InvalidSource,
            V::Template(TemplateError::Malformed { .. }) => ErrorCode::InvalidUrlTemplate,
            V::Template(TemplateError::TooLarge { .. }) => ErrorCode::InvalidFileCount,
            V::Manifest(_) => ErrorCode::InvalidManifest,
            V::FileCount { .. } => ErrorCode::InvalidFileCount,
            V::InvalidUrl { .. } => ErrorCode::InvalidUrl,
            V::UnsupportedScheme(_) => ErrorCode::UnsupportedScheme,
            V::Path(PathError::EscapesRoot(_)) => ErrorCode::DestEscapesRoot,
            V::Path(PathError::Invalid(_) | PathError::PartialName(_)) => ErrorCode::InvalidPath,
            V::DuplicatePath(_) => ErrorCode::DuplicatePath,
            V::Priority => ErrorCode::InvalidPriority,
            V::Sha256(_) | V::Sha256WithFiles => ErrorCode::InvalidSha256,
            V::Header { .. } => ErrorCode::InvalidHeader,
            V::Description => ErrorCode::InvalidDescription,
            V::Limit(_) => ErrorCode::InvalidLimit,
            V::CallbackUrl(_) => ErrorCode::InvalidCallbackUrl,
            V::Proxy(_) => ErrorCode::InvalidProxy,
        };
        Self::new(code, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if let Some(cause) = self.internal.as_ref().filter(|_| status.is_server_error()) {
            tracing::error!(error.code = %self.code.as_str(), error.message = %cause, "request failed");
        }
        let body = ProblemDetails {
            kind: format!("urn:haul:problem:{}", self.code.as_str()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail,
            code: self.code,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kebab_case_and_statuses_fit() {
        assert_eq!(ErrorCode::DestEscapesRoot.as_str(), "dest-escapes-root");
        assert_eq!(ErrorCode::QueueFull.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            ErrorCode::UnknownField.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(ErrorCode::InvalidJson.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn internal_details_are_not_shown() {
        let response = ApiError::internal("secret database path /x").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
