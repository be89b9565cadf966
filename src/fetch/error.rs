//! Why fetching a file failed, and whether trying again can help.

use std::time::Duration;

use crate::domain::JobError;

/// Failures of the fetch layer. Messages never contain secrets: URLs are redacted first.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The origin answered with an error status.
    #[error("HTTP {status} from {url}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        url: String,
    },
    /// Connecting, sending or reading failed (reset, refused, timed out, stalled).
    #[error("network error talking to {url}: {message}")]
    Network { url: String, message: String },
    /// The body ended before the length the server declared.
    #[error("the body ended after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    /// The server sent more bytes than it declared or than were asked for.
    #[error("the server sent more than the {expected} bytes it declared")]
    Overflow { expected: u64 },
    /// The address policy refuses the address a URL, a redirect or a name leads to
    /// (`allow_loopback`, `allow_private`, …). Terminal: the address will not change its
    /// category by trying again.
    #[error("{0}")]
    AddressDenied(super::address_policy::Denied),
    /// More than the allowed number of redirects.
    #[error("too many redirects from {url}")]
    TooManyRedirects { url: String },
    /// The server's answer cannot be used (a range it was not asked for, say).
    #[error("unusable response from {url}: {reason}")]
    InvalidResponse { url: String, reason: String },
    /// The finished file does not have the expected SHA-256.
    #[error("SHA-256 mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    /// The finished file does not have the size the server declared.
    #[error("size mismatch: expected {expected} bytes, have {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// Reading or writing the local file failed.
    #[error("disk error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The destination's filesystem has too little free space (checked before a file of known
    /// size starts, or a write met a full disk). The job pauses instead of failing, keeping
    /// what it wrote; a resume once space is freed carries on.
    #[error("not enough free space for {path}: {detail}")]
    InsufficientStorage { path: String, detail: String },
    /// The server announces a file larger than the whole filesystem it would be written to:
    /// no amount of freeing space lets it fit, so, unlike a full disk, it is terminal (a
    /// server claiming a petabyte is broken or hostile).
    #[error(
        "the server announces {size} bytes, more than the {capacity}-byte filesystem of {path} holds"
    )]
    FileTooLarge {
        path: String,
        size: u64,
        capacity: u64,
    },
    /// The destination cannot be used (outside the root, a directory in the way, …).
    #[error("unusable destination {0}")]
    Destination(String),
    /// Another running job is writing to the same destination.
    #[error("{0} is being written by another job")]
    PathBusy(String),
    /// The store could not record the file's progress or outcome.
    #[error("the store failed: {0}")]
    Store(String),
    /// The store is busy or unreachable at a moment the fetch cannot go on without it.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The job's lease was lost: another run owns it now. Stop without touching anything.
    #[error("the job's lease was lost")]
    LeaseLost,
    /// Stopped by cancel, pause or shutdown.
    #[error("stopped")]
    Stopped,
}

impl FetchError {
    /// Transient failures worth another attempt: 5xx, 408, 429, network trouble, truncation.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::Network { .. }
            | Self::Truncated { .. }
            | Self::Overflow { .. }
            | Self::StoreUnavailable(_) => true,
            _ => false,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The stable class shown in the API's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "http-status",
            Self::Network { .. } => "network",
            Self::Truncated { .. } | Self::Overflow { .. } | Self::SizeMismatch { .. } => {
                "size-mismatch"
            }
            Self::TooManyRedirects { .. } => "too-many-redirects",
            Self::AddressDenied(_) => "address-denied",
            Self::InvalidResponse { .. } => "invalid-response",
            Self::ChecksumMismatch { .. } => "checksum-mismatch",
            Self::Io { .. } => "io",
            Self::InsufficientStorage { .. } => "insufficient-storage",
            Self::FileTooLarge { .. } => "file-too-large",
            Self::PathBusy(_) => "path-busy",
            Self::Destination(_) => "invalid-destination",
            Self::Store(_) | Self::StoreUnavailable(_) => "store",
            Self::LeaseLost | Self::Stopped => "stopped",
        }
    }

    /// The error as the API shows it.
    pub fn to_job_error(&self) -> JobError {
        JobError {
            kind: self.kind().to_owned(),
            message: self.to_string(),
            http_status: match self {
                Self::Status { status, .. } => Some(*status),
                _ => None,
            },
        }
    }

    /// Wraps a local I/O error with the path it concerns; a full disk is
    /// [`FetchError::InsufficientStorage`].
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        if super::space::is_full(&source) {
            return Self::InsufficientStorage {
                path: path.display().to_string(),
                detail: source.to_string(),
            };
        }
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> FetchError {
        FetchError::Status {
            status,
            retry_after: None,
            url: "http://h/".into(),
        }
    }

    #[test]
    fn transient_statuses_are_retried_and_client_errors_are_not() {
        for s in [500, 502, 503, 504, 408, 429] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 416] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(
            FetchError::Truncated {
                expected: 2,
                got: 1
            }
            .is_retryable()
        );
        let mismatch = FetchError::ChecksumMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        assert!(!mismatch.is_retryable());
        assert_eq!(status(404).to_job_error().http_status, Some(404));
        let denied = FetchError::AddressDenied(super::super::address_policy::Denied {
            host: "localhost".into(),
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            category: super::super::address_policy::Category::Loopback,
        });
        assert!(!denied.is_retryable());
        assert_eq!(denied.kind(), "address-denied");
    }
}
