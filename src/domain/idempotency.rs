//! `Idempotency-Key`: a client's name for one submission, so that sending it again (after a
//! timeout, a lost answer) returns the job it created instead of creating another.

use sha2::{Digest, Sha256};

use super::{JobId, JobRequest};

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A valid key, with the hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    request_hash: String,
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters (no control \
     characters, not only spaces)"
)]
pub struct InvalidKey;

impl IdempotencyKey {
    /// Checks `key` and hashes `request`. The hash is of the parsed request written out again
    /// (fields in a fixed order, `null` and absent alike, headers sorted), so requests that
    /// differ only in how their JSON was spelled count as the same; a manifest is hashed as
    /// the request it was parsed into, with its query parameters.
    pub fn new(key: &str, request: &JobRequest) -> Result<Self, InvalidKey> {
        let printable = key.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if key.len() > MAX_KEY_LEN || !printable || key.trim().is_empty() {
            return Err(InvalidKey);
        }
        // Cannot fail (strings, numbers and string-keyed maps only); were it to, refusing the
        // key is safer than hashing nothing.
        let canonical = serde_json::to_vec(request).map_err(|_| InvalidKey)?;
        Ok(Self {
            key: key.to_owned(),
            request_hash: hex::encode(Sha256::digest(&canonical)),
        })
    }

    /// The key as the client sent it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Hex SHA-256 of the normalized request.
    pub fn request_hash(&self) -> &str {
        &self.request_hash
    }
}

/// The job a key already names, and whether it came with the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedJob {
    pub job: JobId,
    pub same_request: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> JobRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn keys_are_printable_ascii_of_bounded_length() {
        let req = JobRequest::default();
        assert!(IdempotencyKey::new("order-42 retry", &req).is_ok());
        assert!(IdempotencyKey::new(&"k".repeat(MAX_KEY_LEN), &req).is_ok());
        for bad in ["", "   ", "tab\there", "é", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert_eq!(IdempotencyKey::new(bad, &req), Err(InvalidKey), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_ignores_spelling_but_not_content() {
        let hash = |json: &str| {
            IdempotencyKey::new("k", &request(json))
                .unwrap()
                .request_hash
        };
        let a = hash(r#"{"url": "http://h/a", "priority": 3}"#);
        assert_eq!(
            a,
            hash(r#"{ "priority": 3, "url": "http://h/a", "dest": null }"#)
        );
        assert_ne!(a, hash(r#"{"url": "http://h/a", "priority": 4}"#));
        assert_ne!(a, hash(r#"{"url": "http://h/b", "priority": 3}"#));
    }
}
