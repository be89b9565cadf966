//! The client commands of the real binary against a running daemon: output, effects (checked
//! through the API) and exit codes.

use serde_json::{Value, json};

use crate::client::{Run, haul};
use crate::daemon::{DEADLINE, Daemon, Launch, eventually};
use crate::origin::{Faults, Origin, content, sha256_hex};

/// A running daemon and a way to run client commands against it.
struct Setup {
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(Launch::in_dir(dir.path())).await;
        Setup { dir, daemon }
    }

    async fn haul(&self, args: &[&str]) -> Run {
        haul(self.dir.path(), &self.daemon.base, None, args).await
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.haul(args).await;
        assert_eq!(
            run.code,
            0,
            "haul {args:?}: {run:?}\n--- daemon log ---\n{}",
            self.daemon.log()
        );
        run.stdout
    }

    fn downloads(&self) -> std::path::PathBuf {
        self.dir.path().join("downloads")
    }
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_wait_prints_the_completed_job() {
    let origin = Origin::start().await;
    let body = content(21, 200_000);
    origin.put("a/one.bin", body.clone());
    origin.put("a/two.bin", content(22, 50_000));
    let s = Setup::start().await;

    let url = origin.url("a/one.bin");
    let sha = sha256_hex(&body);
    let out = s.ok(&["add", &url, "--wait", "--sha256", &sha]).await;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("job"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no job line in {out}"));
    assert!(out.contains("completed"), "{out}");
    let job = s.daemon.job(id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(std::fs::read(s.downloads().join("one.bin")).unwrap(), body);

    let out = s
        .ok(&[
            "--json",
            "add",
            &origin.url("a/two.bin"),
            "--wait",
            "--dest",
            "sub/",
        ])
        .await;
    let job = parse_json(&out);
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["bytes_done"], 50_000);
    assert_eq!(job["files"][0]["path"], "sub/two.bin");
    let id = job["id"].as_str().unwrap();
    assert_eq!(s.daemon.job(id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_have_their_exit_codes() {
    let origin = Origin::start().await;
    let s = Setup::start().await;

    let missing = s.haul(&["add", &origin.url("missing.bin"), "--wait"]).await;
    assert_eq!(missing.code, 6, "{missing:?}");
    assert!(missing.stderr.contains("failed"), "{missing:?}");
    let failed = s.daemon.jobs().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status"], "failed");
    // Once the file is there, `haul retry` gets it; a job that has not failed cannot be retried.
    let id = failed[0]["id"].as_str().unwrap().to_owned();
    origin.put("missing.bin", content(12, 3_000));
    s.ok(&["retry", &id]).await;
    s.daemon.wait_for(&id, "completed").await;
    let again = s.haul(&["retry", &id]).await;
    assert_eq!(again.code, 4, "{again:?}");
    assert!(again.stderr.contains("retried"), "{again:?}");

    let ftp = s.haul(&["add", "ftp://x"]).await;
    assert_eq!(ftp.code, 4, "{ftp:?}");
    assert!(
        ftp.stderr.contains("\"ftp\"") && ftp.stderr.contains("not supported"),
        "the problem's detail is shown: {ftp:?}"
    );
    assert_eq!(s.daemon.jobs().await.len(), 1, "nothing was queued");

    let show = s.haul(&["show", "not-a-uuid"]).await;
    assert_eq!(show.code, 4, "{show:?}");
    assert!(!show.stderr.is_empty());
    let unknown = s
        .haul(&["show", "0193a7d2-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(unknown.code, 4, "{unknown:?}");

    let usage = s
        .haul(&["add", "--sha256", "ab", "http://h/1", "http://h/2"])
        .await;
    assert_eq!(usage.code, 2, "{usage:?}");
    let usage = s.haul(&["frobnicate"]).await;
    assert_eq!(usage.code, 2, "{usage:?}");
}

#[tokio::test]
async fn without_a_daemon_the_exit_code_is_3_and_openapi_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = haul(dir.path(), "http://127.0.0.1:1", None, &["ls"]).await;
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(
        unreachable.stderr.contains("cannot reach"),
        "{unreachable:?}"
    );
    let add = haul(
        dir.path(),
        "http://127.0.0.1:1",
        None,
        &["add", "http://h/x", "--wait"],
    )
    .await;
    assert_eq!(add.code, 3, "{add:?}");

    let openapi = haul(dir.path(), "http://127.0.0.1:1", None, &["openapi"]).await;
    assert_eq!(openapi.code, 0, "{openapi:?}");
    assert!(openapi.stdout.starts_with("openapi:"), "{}", openapi.stdout);
    assert!(openapi.stdout.contains("/v1/jobs"));
}

/// Serves a file slowly enough that its job stays running for the whole test (8 s), yet
/// fast enough that its first bytes are on disk soon (the daemon writes in 256 KiB batches).
fn slow(origin: &Origin, path: &str, seed: u64) {
    origin.put(path, content(seed, 4 * 1024 * 1024));
    origin.set_faults(
        path,
        Faults {
            rate: Some(512 * 1024),
            ..Faults::default()
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_show_pause_resume_cancel_and_prune() {
    let origin = Origin::start().await;
    for (n, path) in ["s1.bin", "s2.bin", "s3.bin"].iter().enumerate() {
        slow(&origin, path, 30 + n as u64);
    }
    let s = Setup::start().await;

    let job = parse_json(
        &s.ok(&[
            "--json",
            "add",
            &origin.url("s1.bin"),
            "--description",
            "first",
        ])
        .await,
    );
    let id = job["id"].as_str().unwrap().to_owned();
    s.daemon
        .wait_until(&id, "bytes arriving", |job| {
            job["status"] == "running" && job["bytes_done"].as_u64() > Some(0)
        })
        .await;

    let ls = s.ok(&["ls"]).await;
    assert!(
        ls.contains(&id) && ls.contains("running") && ls.contains("first"),
        "{ls}"
    );
    let show = s.ok(&["show", &id]).await;
    assert!(show.contains(&id) && show.contains("running"), "{show}");
    let shown = parse_json(&s.ok(&["--json", "show", &id]).await);
    assert_eq!(shown["files"][0]["path"], "s1.bin");

    let paused = s.ok(&["pause", &id]).await;
    assert!(paused.contains("paused"), "{paused}");
    let kept = s.daemon.wait_for(&id, "paused").await["bytes_done"]
        .as_u64()
        .unwrap();
    let part = s.downloads().join("s1.bin.part");
    assert!(kept > 0 && part.exists(), "pausing keeps the partial file");
    let listed = parse_json(&s.ok(&["--json", "ls", "--status", "paused"]).await);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["jobs"][0]["id"], id.as_str());

    s.ok(&["resume", &id]).await;
    s.daemon.wait_for(&id, "running").await;
    eventually("a second request", || origin.requests("s1.bin").len() >= 2).await;
    let resumed = origin.requests("s1.bin")[1]
        .range
        .clone()
        .unwrap_or_default();
    let from: u64 = resumed
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("resuming continues with a Range request: {resumed:?}"));
    // The pause's last checkpoint may land just after the job reads as paused.
    assert!(
        from >= kept,
        "resumed from {from}, below the {kept} bytes kept"
    );

    let cancelled = s.ok(&["cancel", &id]).await;
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    s.daemon.wait_for(&id, "cancelled").await;
    eventually("the partial file to be removed", || !part.exists()).await;

    let second = s.daemon.add(json!({ "url": origin.url("s2.bin") })).await;
    let third = s.daemon.add(json!({ "url": origin.url("s3.bin") })).await;
    let all = s.ok(&["cancel", "--all"]).await;
    assert_eq!(all.trim(), "cancelled 2 jobs");
    for id in [&second, &third] {
        assert_eq!(s.daemon.job(id).await["status"], "cancelled");
    }
    let parts = ["s2.bin.part", "s3.bin.part"].map(|p| s.downloads().join(p));
    eventually("partial files to be removed", || {
        parts.iter().all(|p| !p.exists())
    })
    .await;

    let pruned = s.ok(&["prune"]).await;
    assert_eq!(pruned.trim(), "pruned 3 finished jobs");
    assert!(s.daemon.jobs().await.is_empty());
    let ls = s.ok(&["ls"]).await;
    assert!(ls.contains("(no jobs)"), "{ls}");

    let stats = parse_json(&s.ok(&["--json", "stats"]).await);
    assert!(stats.is_object(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_for_a_completed_job_and_6_for_a_cancelled_one() {
    let origin = Origin::start().await;
    origin.put("done.bin", content(40, 10_000));
    slow(&origin, "slow.bin", 41);
    let s = Setup::start().await;

    let done = s.daemon.add(json!({ "url": origin.url("done.bin") })).await;
    let out = s.ok(&["wait", &done]).await;
    assert!(out.contains(&done) && out.contains("completed"), "{out}");
    let job = parse_json(&s.ok(&["--json", "wait", &done]).await);
    assert_eq!(job["status"], "completed", "{job:#}");

    // `add --wait` on a job that gets cancelled while the client waits.
    let (cwd, base) = (s.dir.path().to_owned(), s.daemon.base.clone());
    let url = origin.url("slow.bin");
    let waiting =
        tokio::spawn(async move { haul(&cwd, &base, None, &["add", &url, "--wait"]).await });
    let id = submitted(&s.daemon, &done).await;
    s.daemon.wait_for(&id, "running").await;
    let (status, job) = s
        .daemon
        .call(
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let run = waiting.await.unwrap();
    assert_eq!(run.code, 6, "{run:?}");
    assert!(run.stderr.contains("cancelled"), "{run:?}");
    let again = s.haul(&["wait", &id]).await;
    assert_eq!(again.code, 6, "{again:?}");
}

/// The id of the first job other than `known` to show up in the daemon's list.
async fn submitted(daemon: &Daemon, known: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let jobs = daemon.jobs().await;
        if let Some(job) = jobs.iter().find(|job| job["id"] != known) {
            return job["id"].as_str().unwrap().to_owned();
        }
        assert!(started.elapsed() < DEADLINE, "no job was submitted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
