//! End-to-end tests of the real `haul` binary (`CARGO_BIN_EXE_haul`) started as a process:
//! crash and restart, clean shutdown, start-up settings, the client commands, and the fault
//! matrix (every misbehaviour of the test origin, one test each).
// Helpers outside `#[test]` functions (the harness, the shared origin) fail tests by panicking
// too: there, an unwrap is an assertion.
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

mod cli;
mod client;
mod crash;
mod daemon;
mod env_proxy;
mod faults;
mod load;
mod restart;
mod secrets;
mod security;
mod settings;
mod store_faults;
