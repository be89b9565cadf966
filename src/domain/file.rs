//! Files of a job: status, conflict policy, checksums.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{FileId, JobError};

/// A file fails for the same reasons a job does, and is shown the same way.
pub type FileError = JobError;

/// Where one file of a job is. `preparing` and `hashing_existing` last as long as a directory
/// creation or a read of an existing file: they are shown while the job runs in this daemon but
/// never stored (the store keeps `queued` until the file's first checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Not started yet.
    Queued,
    /// Its destination is being settled: directories, the conflict policy, claims.
    Preparing,
    /// A file already at the destination is being hashed: if it has the job's `sha256`, it
    /// is the download (`complete`, `cached: true`).
    HashingExisting,
    /// Bytes are being fetched (into `NAME.part`, or into memory for a small file).
    Downloading,
    /// Size and checksum are being checked before the final rename.
    Verifying,
    /// In place with its final name (or found already there: see `cached`).
    Complete,
    /// Left alone because a file already had its name and `on_conflict` is `skip`.
    Skipped,
    /// Failed for good; `error` says why.
    Failed,
}

impl FileStatus {
    /// The lowercase name used in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Preparing => "preparing",
            Self::HashingExisting => "hashing_existing",
            Self::Downloading => "downloading",
            Self::Verifying => "verifying",
            Self::Complete => "complete",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }

    /// Every status, in the order a file goes through them.
    pub const ALL: [Self; 8] = [
        Self::Queued,
        Self::Preparing,
        Self::HashingExisting,
        Self::Downloading,
        Self::Verifying,
        Self::Complete,
        Self::Skipped,
        Self::Failed,
    ];

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// True while the file is on its way (what the live phase of a running file refines).
    pub fn is_under_way(self) -> bool {
        matches!(
            self,
            Self::Queued
                | Self::Preparing
                | Self::HashingExisting
                | Self::Downloading
                | Self::Verifying
        )
    }

    /// True when the worker has nothing more to do for this file.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Complete | Self::Skipped)
    }
}

/// What to do when a file already exists where a download would land.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Pick a free name: `name (1).ext`, `name (2).ext`, …
    #[default]
    Rename,
    /// Replace the existing file (atomically, at the final rename).
    Overwrite,
    /// Leave the existing file and mark this one `skipped`.
    Skip,
}

impl OnConflict {
    /// The lowercase name used in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rename => "rename",
            Self::Overwrite => "overwrite",
            Self::Skip => "skip",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Rename, Self::Overwrite, Self::Skip]
            .into_iter()
            .find(|policy| policy.as_str() == s)
    }
}

/// A SHA-256 digest, held as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha256(String);

impl Sha256 {
    /// Accepts 64 hex digits in either case.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(s.to_ascii_lowercase()))
    }

    /// From a computed digest.
    pub fn from_digest(bytes: &[u8]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file of a job as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: FileId,
    /// Position within the job, from 0.
    pub index: u32,
    pub url: String,
    /// Destination relative to the download root. Fixed once `path_claimed` is true, except
    /// that an `auto_name` file takes the name its first response gives (once, before a byte
    /// of it is written).
    pub path: String,
    /// True once the worker has applied the conflict policy and owns `path` (and `path.part`).
    pub path_claimed: bool,
    /// The name was not given: the server may name the file (`Content-Disposition`).
    pub auto_name: bool,
    pub status: FileStatus,
    pub sha256: Option<Sha256>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// The validator seen at the first response, used for `If-Range` on resume.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// True when an existing file already had the expected checksum and nothing was fetched.
    pub cached: bool,
    pub error: Option<FileError>,
    /// Other URLs serving the same bytes (used by workers; not part of the API's file).
    pub mirrors: Vec<String>,
    /// The file's own extra request headers, over the job's: secrets, used by workers and
    /// never part of the API's file.
    pub headers: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_accepts_only_64_hex_digits() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(
            Sha256::parse(upper).unwrap().as_str(),
            upper.to_ascii_lowercase()
        );
        assert!(Sha256::parse(&upper[1..]).is_none());
        assert!(Sha256::parse(&format!("{}g", &upper[1..])).is_none());
    }

    #[test]
    fn names_round_trip() {
        for p in [OnConflict::Rename, OnConflict::Overwrite, OnConflict::Skip] {
            assert_eq!(OnConflict::parse(p.as_str()), Some(p));
        }
        assert_eq!(FileStatus::parse("complete"), Some(FileStatus::Complete));
        assert_eq!(FileStatus::parse("bogus"), None);
    }
}
