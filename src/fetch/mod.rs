//! Fetching one file into its `.part`: the HTTP requests, the writer, retries, checkpoints.
//!
//! [`Fetcher::fetch_file`] is the boundary the engine calls: `file` coordinates one file's
//! connections (probe, parallel ranges, work stealing, racing, restarts, checkpoints),
//! `connection` runs one range, `http` sends its requests (through `plain` for plain-HTTP
//! URLs without a proxy), `writer` owns the `.part`, `space` checks free space and
//! preallocates, `limits` holds the bandwidth and per-host budgets every download shares, and
//! `place` puts verified files in place. The fetch layer knows nothing of the store: it reports
//! through a [`Journal`] the worker implements.

pub mod address_policy;
mod clients;
mod connection;
mod credentials;
pub mod disposition;
mod error;
mod file;
mod http;
pub mod limits;
mod mirrors;
pub mod place;
mod plain;
pub mod plan;
mod retry;
mod small;
mod source;
pub mod space;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;

pub use address_policy::AddressPolicy;
pub use clients::Clients;
pub use credentials::CredentialRules;
pub use error::FetchError;
pub use file::{FileLimits, Opening};
pub use http::{ClientSettings, Follow, HttpClient, build_client, parse_proxy, request_headers};
pub use limits::{Hosts, Throttle};
pub use retry::RetryPolicy;

use crate::domain::{FileStatus, Segment};
use crate::store::FileMeta;

/// Where the fetch layer records progress (implemented by the worker over the store).
pub trait Journal: Send + Sync {
    /// The file starts (over) with these validators and segments.
    fn restart(
        &self,
        meta: &FileMeta,
        segments: &[Segment],
    ) -> impl Future<Output = Result<(), FetchError>> + Send;

    /// These bytes are fsynced: record them.
    fn save(&self, segments: &[Segment]) -> impl Future<Output = Result<(), FetchError>> + Send;

    /// A transient failure; the next attempt starts after `delay`.
    fn retrying(&self, error: &FetchError, delay: Duration);
}

/// What to fetch and where, with what is already known about it.
#[derive(Debug, Clone)]
pub struct FileTask {
    pub url: url::Url,
    /// Other URLs serving the same bytes; ranges are spread over them and `url`.
    pub mirrors: Vec<url::Url>,
    /// The job's headers and bearer token, and a credential rule's (sensitive values).
    pub headers: HeaderMap,
    /// The client to fetch with: the shared one, or the job's proxy's.
    pub client: HttpClient,
    /// The download root, and the destination's path in it, whose `.part` is written.
    pub root: crate::domain::paths::DownloadRoot,
    pub rel: String,
    /// Validators and size saved from an earlier run.
    pub meta: FileMeta,
    /// Segments saved from an earlier run; empty for a fresh file.
    pub segments: Vec<Segment>,
    /// Compute the SHA-256 while writing (when the job gives one to check).
    pub hash: bool,
    /// Connections and segment size for this file.
    pub limits: FileLimits,
    /// The job's bandwidth limit (shared by its files).
    pub throttle: Arc<Throttle>,
}

impl FileTask {
    /// The `.part` file written, for messages: it is opened through its directory's checked
    /// descriptor ([`place::open_part`]).
    pub fn part(&self) -> PathBuf {
        self.root.part(&self.rel)
    }
}

/// A file whose bytes have all arrived, not yet durable: committing it writes what is still in
/// memory, syncs and renames it.
#[derive(Debug)]
pub struct Fetched {
    pub data: Data,
    pub total: u64,
    /// SHA-256 of the whole file, when it could be computed while writing.
    pub digest: Option<[u8; 32]>,
}

/// Where a fetched file's bytes are.
#[derive(Debug)]
pub enum Data {
    /// Written into the `.part`.
    Part(std::fs::File),
    /// A small file, whole in memory: it is written when it is committed, with others, so a
    /// job of many small files pays for one blocking step and one sync per group.
    Memory(bytes::Bytes),
}

impl Data {
    /// Bytes held in memory.
    pub fn in_memory(&self) -> u64 {
        match self {
            Self::Part(_) => 0,
            Self::Memory(body) => body.len() as u64,
        }
    }
}

/// Live counters of a file being fetched, read by the API and the progress ticker.
#[derive(Debug)]
pub struct LiveFile {
    pub bytes_done: Arc<AtomicU64>,
    bytes_total: AtomicU64,
    pub connections: AtomicU32,
    /// The phase the file is in now (an index into `FileStatus::ALL`; `u8::MAX` for none
    /// yet). Phases that last microseconds live only here, not in the store.
    phase: AtomicU8,
}

impl Default for LiveFile {
    fn default() -> Self {
        Self {
            bytes_done: Arc::default(),
            bytes_total: AtomicU64::new(u64::MAX),
            connections: AtomicU32::new(0),
            phase: AtomicU8::new(u8::MAX),
        }
    }
}

impl LiveFile {
    /// Bytes on disk now.
    pub fn done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }

    /// The size, once known.
    pub fn total(&self) -> Option<u64> {
        let total = self.bytes_total.load(Ordering::Relaxed);
        (total != u64::MAX).then_some(total)
    }

    /// Sets both counters.
    pub fn set(&self, done: u64, total: Option<u64>) {
        self.bytes_done.store(done, Ordering::Relaxed);
        self.set_total(total);
    }

    /// Enters a phase (see [`crate::domain::FileStatus`]).
    pub fn set_phase(&self, phase: FileStatus) {
        let index = FileStatus::ALL.iter().position(|s| *s == phase);
        let index = index.and_then(|i| u8::try_from(i).ok()).unwrap_or(u8::MAX);
        self.phase.store(index, Ordering::Relaxed);
    }

    /// The phase the file is in, once its run has set one.
    pub fn phase(&self) -> Option<FileStatus> {
        FileStatus::ALL
            .get(usize::from(self.phase.load(Ordering::Relaxed)))
            .copied()
    }

    /// Sets the size (`None`: unknown).
    pub fn set_total(&self, total: Option<u64>) {
        self.bytes_total
            .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Counts open connections while alive.
struct ConnectionGuard<'a>(&'a LiveFile, &'a AtomicU64);

impl<'a> ConnectionGuard<'a> {
    fn new(live: &'a LiveFile, global: &'a AtomicU64) -> Self {
        live.connections.fetch_add(1, Ordering::Relaxed);
        global.fetch_add(1, Ordering::Relaxed);
        Self(live, global)
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a [`Fetcher`] is made of.
pub struct FetcherSettings {
    pub clients: Clients,
    pub credentials: CredentialRules,
    pub retry: RetryPolicy,
    pub checkpoint_every: Duration,
    pub max_redirects: usize,
    pub max_connections_per_host: usize,
    pub max_bytes_per_second: Option<u64>,
    /// Bytes to leave free on a destination's filesystem (see [`space`]).
    pub min_free_space: u64,
}

/// The shared machinery every file fetch uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The shared client, and those of jobs' own proxies.
    clients: Clients,
    credentials: CredentialRules,
    retry: RetryPolicy,
    checkpoint_every: Duration,
    /// Redirects followed, and the address policy each hop is judged by.
    follow: Follow,
    /// Bytes to leave free on a destination's filesystem.
    min_free_space: u64,
    /// Connections per host, shared by every job.
    hosts: Hosts,
    /// The daemon-wide bandwidth limit.
    throttle: Arc<Throttle>,
    /// Connections open across all jobs (for `/v1/stats`).
    connections: Arc<AtomicU64>,
}

impl Fetcher {
    /// A fetcher over a shared client.
    pub fn new(settings: FetcherSettings) -> Self {
        let follow = Follow {
            max_redirects: settings.max_redirects,
            policy: settings.clients.policy(),
            trusted: settings.clients.trusted(),
        };
        Self {
            follow,
            clients: settings.clients,
            credentials: settings.credentials,
            retry: settings.retry,
            checkpoint_every: settings.checkpoint_every,
            min_free_space: settings.min_free_space,
            hosts: Hosts::new(settings.max_connections_per_host),
            throttle: Throttle::new(settings.max_bytes_per_second),
            connections: Arc::default(),
        }
    }

    /// The clients downloads use.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The daemon-wide bandwidth limit, changeable at run time.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// Connections open now, across all jobs.
    pub fn open_connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}
