//! The command line: `haul serve` runs the daemon; every other command is a client of it.

mod client;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::api::dto::JobView;
use crate::domain::{JobStatus, OnConflict};
use client::Client;

/// Seconds each `--wait` request waits at most: the daemon's maximum.
const WAIT_SECS: u64 = 300;

/// haul: a download-manager daemon and its client.
#[derive(Debug, Parser)]
#[command(name = "haul", version, about)]
pub struct Cli {
    /// The daemon to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "HAUL_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// Print the API's JSON instead of text (client commands).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Print the OpenAPI document (YAML).
    Openapi,
    /// Submit a download: one URL is one file; several URLs make one job of several files.
    Add(AddArgs),
    /// List jobs, newest first.
    Ls(LsArgs),
    /// Show one job and its files.
    Show { id: String },
    /// Cancel a job (or every active job with --all); partial files are removed.
    Cancel {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Pause a job, keeping its partial files.
    Pause { id: String },
    /// Resume a paused job, or retry a failed one.
    Resume { id: String },
    /// Retry a failed job: its failed files are fetched again, complete ones kept.
    Retry { id: String },
    /// Forget every finished job.
    Prune,
    /// Wait until a job is completed, failed or cancelled; exit 6 unless it completed.
    Wait { id: String },
    /// Print events as they happen (of one job, or of all).
    Watch { id: Option<String> },
    /// Show totals: jobs per status, download rate, open connections.
    Stats,
}

/// Flags of `haul serve`. Each overrides the `HAUL_*` variable and the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML settings file (see config/haul.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory of the store and lock file [default: ./haul-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Every download lands inside this directory [default: ./downloads].
    #[arg(long)]
    pub download_root: Option<PathBuf>,
    /// Jobs downloading at once [default: 4].
    #[arg(long)]
    pub max_concurrent_jobs: Option<usize>,
}

/// Flags of `haul add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// http or https URLs.
    #[arg(required = true)]
    pub urls: Vec<String>,
    /// Destination below the download root (a directory if it ends in `/`).
    #[arg(long)]
    pub dest: Option<String>,
    /// Lower runs first [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Expected SHA-256 of the (single) file.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Free text, searchable with `haul ls -q`.
    #[arg(long)]
    pub description: Option<String>,
    /// rename (default), overwrite or skip.
    #[arg(long, value_parser = parse_on_conflict)]
    pub on_conflict: Option<OnConflict>,
    /// Wait until the job ends; exit 6 unless it completed.
    #[arg(long)]
    pub wait: bool,
}

/// Flags of `haul ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only these statuses (comma-separated).
    #[arg(long)]
    pub status: Option<String>,
    /// Regular expression on the description.
    #[arg(short = 'q', long = "query")]
    pub query: Option<String>,
    /// Most jobs to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

fn parse_on_conflict(s: &str) -> Result<OnConflict, String> {
    OnConflict::parse(s).ok_or_else(|| "expected rename, overwrite or skip".to_owned())
}

/// Why a client command failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The daemon could not be reached (exit 3).
    #[error("cannot reach the daemon at {0}: {1}")]
    Unreachable(String, String),
    /// The daemon refused or failed the request (exit 4 for 4xx, 5 for 5xx).
    #[error("{detail}")]
    Api {
        status: u16,
        code: String,
        detail: String,
    },
    /// `--wait` or `haul wait`: the job ended without completing (exit 6).
    #[error("job {id} ended {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    JobNotCompleted {
        id: String,
        status: JobStatus,
        message: Option<String>,
    },
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code scripts can rely on.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Other(_) => 1,
            Self::Usage(_) => 2,
            Self::Unreachable(..) => 3,
            Self::Api { status, .. } if *status >= 500 => 5,
            Self::Api { .. } => 4,
            Self::JobNotCompleted { .. } => 6,
        }
    }
}

/// Runs a client command (everything but `serve` and `openapi`).
pub async fn run_client(cli: Cli) -> Result<(), CliError> {
    let token = std::env::var("HAUL_TOKEN").ok().filter(|t| !t.is_empty());
    let client = Client::new(&cli.server, token)?;
    let json = cli.json;
    match cli.command {
        Command::Add(args) => add(&client, args, json).await,
        Command::Ls(args) => {
            let mut query = vec![("limit", args.limit.to_string())];
            query.extend(args.status.map(|s| ("status", s)));
            query.extend(args.query.map(|q| ("q", q)));
            let list = client.list_jobs(&query).await?;
            output::print(json, &list, || output::job_table(&list.jobs));
            Ok(())
        }
        Command::Show { id } => {
            let job = client.get_job(&id).await?;
            output::print(json, &job, || output::job_details(&job));
            Ok(())
        }
        Command::Cancel { all: true, .. } => {
            let count = client.cancel_all().await?;
            output::print(json, &count, || format!("cancelled {} jobs", count.count));
            Ok(())
        }
        Command::Cancel { id, .. } => act(&client, &id.unwrap_or_default(), "cancel", json).await,
        Command::Pause { id } => act(&client, &id, "pause", json).await,
        Command::Resume { id } => act(&client, &id, "resume", json).await,
        Command::Retry { id } => act(&client, &id, "retry", json).await,
        Command::Prune => {
            let count = client.prune().await?;
            output::print(json, &count, || {
                format!("pruned {} finished jobs", count.count)
            });
            Ok(())
        }
        Command::Wait { id } => {
            let job = wait(&client, &id, json).await?;
            output::print(json, &job, || output::job_details(&job));
            completed(job)
        }
        Command::Watch { id } => watch(&client, id, json).await,
        Command::Stats => {
            let stats = client.stats().await?;
            output::print(json, &stats, || output::stats(&stats));
            Ok(())
        }
        Command::Serve(_) | Command::Openapi => Err(CliError::Usage("not a client command".into())),
    }
}

async fn act(client: &Client, id: &str, action: &str, json: bool) -> Result<(), CliError> {
    let job = client.act(id, action).await?;
    output::print(json, &job, || format!("{} {}", job.id, job.status));
    Ok(())
}

async fn add(client: &Client, args: AddArgs, json: bool) -> Result<(), CliError> {
    if args.urls.len() > 1 && args.sha256.is_some() {
        return Err(CliError::Usage("--sha256 applies to a single URL".into()));
    }
    let mut body = serde_json::json!({
        "dest": args.dest,
        "priority": args.priority,
        "sha256": args.sha256,
        "description": args.description,
        "on_conflict": args.on_conflict,
    });
    if let [url] = args.urls.as_slice() {
        body["url"] = url.clone().into();
    } else {
        body["files"] = args
            .urls
            .iter()
            .map(|u| serde_json::json!({ "url": u }))
            .collect();
    }
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let job = client.create_job(&body).await?;
    if !args.wait {
        output::print(json, &job, || output::queued(&job));
        return Ok(());
    }
    if !json {
        eprintln!("{}", output::queued(&job));
    }
    let job = wait(client, &job.id.to_string(), json).await?;
    output::print(json, &job, || output::job_details(&job));
    completed(job)
}

/// Success if the job completed; [`CliError::JobNotCompleted`] (exit 6) otherwise.
fn completed(job: JobView) -> Result<(), CliError> {
    match job.status {
        JobStatus::Completed => Ok(()),
        status => Err(CliError::JobNotCompleted {
            id: job.id.to_string(),
            status,
            message: job.error.map(|e| e.message),
        }),
    }
}

/// Long-polls `GET /v1/jobs/{id}/wait` until the job ends. On a terminal the polls are short,
/// so the progress line moves between them; otherwise each waits as long as the daemon allows.
async fn wait(client: &Client, id: &str, json: bool) -> Result<JobView, CliError> {
    let show = !json && std::io::stderr().is_terminal();
    let secs = if show { 1 } else { WAIT_SECS };
    loop {
        let job = client.wait_job(id, secs).await?;
        if job.status.is_finished() {
            if show {
                eprintln!();
            }
            return Ok(job);
        }
        if show {
            output::progress_line(job.bytes_done, job.bytes_total, job.bytes_per_second);
        }
    }
}

async fn watch(client: &Client, id: Option<String>, json: bool) -> Result<(), CliError> {
    let path = match &id {
        Some(id) => format!("/v1/jobs/{id}/events"),
        None => "/v1/events".to_owned(),
    };
    client
        .follow(&path, |event| {
            output::print(json, &event, || output::event_line(&event));
            true
        })
        .await
}
