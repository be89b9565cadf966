//! Integration tests through the HTTP API against a real daemon (in-process, port 0, fresh
//! SQLite file) and a real origin server.

#[path = "../common/origin.rs"]
mod origin;

mod helpers;
mod smoke;
