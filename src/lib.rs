//! haul: a download-manager daemon.
//!
//! # Layout
//!
//! ```text
//!  HTTP client ──> api ──> store (SQLite) <── engine: dispatcher ──> workers ──> fetch
//!                   ^                                  │                │
//!                   └──────── events (SSE) <───────────┴────────────────┘
//! ```
//!
//! - [`app`]: builds the daemon from [`config::Settings`] and runs it until shutdown.
//! - [`api`]: axum routes, validation, RFC 9457 problems, the OpenAPI document; the server loop
//!   and its guards (tokens and scopes, `Host`/`Origin` checks, size and rate limits).
//! - [`domain`]: jobs, files, segments, statuses, path rules, URL templates, manifests and
//!   idempotency keys; no I/O but the path checks.
//! - [`store`]: the single source of truth (SQLite through sqlx); all SQL lives here.
//! - [`engine`]: claims queued jobs with leases and runs them on workers.
//! - [`fetch`]: one file's bytes: requests, resume, retries, writer, verification, placement.
//! - [`events`]: the in-process bus behind Server-Sent Events, with its replay buffer.
//! - [`webhooks`]: the bus's events POSTed, signed, to subscriptions and job callbacks.
//! - [`cli`]: the same binary as a client of the API.
//! - [`config`], [`telemetry`]: settings and logging.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod events;
pub mod fetch;
pub mod store;
pub mod telemetry;
pub mod webhooks;
