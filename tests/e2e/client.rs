//! The binary as a one-shot client (`haul --server URL COMMAND…`).

use std::path::Path;
use std::process::Stdio;

use crate::daemon::{DEADLINE, command};

/// The output of one client command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `haul ARGS…` as a client of `server` (with `HAUL_TOKEN` when given); fails the test
/// if it takes longer than [`DEADLINE`].
pub async fn haul(cwd: &Path, server: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::from(command(cwd));
    command
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("HAUL_TOKEN", token);
    }
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("haul {args:?} did not finish in time"))
        .unwrap();
    Run {
        code: output.status.code().expect("the client exits, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
