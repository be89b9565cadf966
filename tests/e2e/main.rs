//! End-to-end tests of the real `haul` binary (`CARGO_BIN_EXE_haul`) started as a process:
//! crash and restart, clean shutdown, start-up settings, and the client commands.
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

mod cli;
mod client;
mod crash;
mod daemon;
mod restart;
mod secrets;
mod settings;
mod store_faults;
