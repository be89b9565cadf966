//! Human-readable output of the client commands (`--json` prints the API's JSON instead).

use std::fmt::Write as _;

use serde::Serialize;

use crate::api::dto::{JobView, Stats};
use crate::events::JobEvent;

/// Prints `value` as JSON, or the human text `text()` makes.
pub fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot print JSON: {e}"),
        }
    } else {
        println!("{}", text());
    }
}

/// `1.5 GiB` style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn done_of(done: u64, total: Option<u64>) -> String {
    match total {
        Some(total) => format!(
            "{} / {} ({:.0}%)",
            bytes(done),
            bytes(total),
            percent(done, total)
        ),
        None => bytes(done),
    }
}

fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

/// One line announcing a submitted job.
pub fn queued(job: &JobView) -> String {
    let first = job
        .files
        .as_ref()
        .and_then(|f| f.first())
        .map(|f| f.path.as_str())
        .unwrap_or("");
    let more = if job.file_count > 1 {
        format!(" (+{} more)", job.file_count - 1)
    } else {
        String::new()
    };
    format!("queued {} → {first}{more}", job.id)
}

/// A table of jobs.
pub fn job_table(jobs: &[JobView]) -> String {
    let mut out = format!(
        "{:<36}  {:<9}  {:>8}  {:<28}  {}\n",
        "ID", "STATUS", "PRIORITY", "PROGRESS", "DESCRIPTION"
    );
    for job in jobs {
        let _ = writeln!(
            out,
            "{:<36}  {:<9}  {:>8}  {:<28}  {}",
            job.id,
            job.status.as_str(),
            job.priority.get(),
            done_of(job.bytes_done, job.bytes_total),
            job.description.as_deref().unwrap_or("")
        );
    }
    if jobs.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out.trim_end().to_owned()
}

/// Everything about one job.
pub fn job_details(job: &JobView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "job       {}", job.id);
    let _ = writeln!(out, "status    {}", job.status.as_str());
    let _ = writeln!(out, "priority  {}", job.priority.get());
    if let Some(d) = &job.description {
        let _ = writeln!(out, "about     {d}");
    }
    let _ = writeln!(
        out,
        "progress  {}",
        done_of(job.bytes_done, job.bytes_total)
    );
    if let Some(rate) = job.bytes_per_second {
        let _ = writeln!(out, "speed     {}/s", bytes(rate));
    }
    let _ = writeln!(out, "created   {}", job.created_at.to_rfc3339());
    if let Some(at) = job.finished_at {
        let _ = writeln!(out, "finished  {}", at.to_rfc3339());
    }
    if let Some(e) = &job.error {
        let _ = writeln!(out, "error     {}: {}", e.kind, e.message);
    }
    for file in job.files.iter().flatten() {
        let cached = if file.cached { " (cached)" } else { "" };
        let _ = writeln!(
            out,
            "  {:<11} {}{cached}  {}",
            file.status_name(),
            file.path,
            done_of(file.bytes_done, file.bytes_total)
        );
        if let Some(e) = &file.error {
            let _ = writeln!(out, "              {}: {}", e.kind, e.message);
        }
    }
    out.trim_end().to_owned()
}

/// Totals for `haul stats`.
pub fn stats(stats: &Stats) -> String {
    let jobs: Vec<String> = stats
        .jobs
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect();
    format!(
        "jobs        {}\nspeed       {}/s\nconnections {}",
        jobs.join(", "),
        bytes(stats.bytes_per_second),
        stats.connections_open
    )
}

/// One line per event for `haul watch`.
pub fn event_line(event: &JobEvent) -> String {
    let mut line = format!(
        "{} {:<14} {} {}",
        event.at.format("%H:%M:%S"),
        event.kind.name(),
        event.job_id,
        done_of(event.bytes_done, event.bytes_total)
    );
    if let Some(rate) = event.bytes_per_second {
        let _ = write!(line, " {}/s", bytes(rate));
    }
    if let Some(e) = &event.error {
        let _ = write!(line, " {}: {}", e.kind, e.message);
    }
    line
}

/// Rewrites the progress line on a terminal.
pub fn progress_line(done: u64, total: Option<u64>, rate: Option<u64>) {
    let rate = rate.map(|r| format!(" {}/s", bytes(r))).unwrap_or_default();
    eprint!("\r\x1b[2K{}{rate}", done_of(done, total));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(done_of(50, Some(200)), "50 B / 200 B (25%)");
    }
}
