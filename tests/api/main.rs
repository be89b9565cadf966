//! Integration tests through the HTTP API against a real daemon (in-process, port 0, fresh
//! SQLite file) and a real origin server.

// Helpers outside `#[test]` functions (the harness, the shared origin) fail tests by panicking
// too: there, an unwrap is an assertion. (The same attributes as `tests/e2e/main.rs`.)
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers assert by unwrapping"
)]

#[path = "../common/origin.rs"]
#[expect(
    clippy::result_large_err,
    reason = "the origin returns ready-made error responses"
)]
mod origin;

#[path = "../common/plan.rs"]
mod plan;

#[path = "../common/tmpfs.rs"]
mod tmpfs;

mod auth;
mod batches;
mod contract;
mod credentials;
mod disk;
mod download;
mod errors;
mod events;
mod files;
mod fuzzed;
mod helpers;
mod incomplete;
mod lifecycle;
mod mirrors;
mod names;
mod ops;
mod origin_checks;
mod parallel;
mod phases;
mod proxy;
mod receiver;
mod replay;
mod resume;
mod retention;
mod security;
mod smoke;
mod ssrf;
mod support;
mod templates;
mod wait;
mod webhooks;
