//! Crashes and restarts: `kill -9` loses at most a checkpoint interval, SIGTERM loses nothing
//! and exits 0 quickly, queued jobs survive a restart.

use std::time::Duration;

use serde_json::json;

use crate::crash::{Mix, Rng, large_sent};
use crate::daemon::{CHECKPOINT_MS, Daemon, Launch};
use crate::origin::{Faults, Origin, Seen, content, sha256_hex};
use crate::plan::{assert_plan, assert_resumed_range_by_range, saved_segments};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Bytes the daemon gathers before one write; a checkpoint follows a write, so the bytes of the
/// batch being gathered are never checkpointed (mirrors `BATCH_BYTES` in `src/fetch/connection.rs`).
const DAEMON_BATCH: u64 = 256 * KIB;

/// Bytes the origin may count as sent that were still in socket buffers when the daemon
/// stopped reading (a few of its 16 KiB steps).
const IN_FLIGHT: u64 = 96 * KIB;

/// The `N` of a request's `Range: bytes=N-`.
fn range_start(seen: &Seen) -> u64 {
    let range = seen.range.as_deref().expect("a Range header");
    range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an open-ended byte range: {range}"))
}

/// Checks the first request after a restart resumed the file, and returns where from.
fn resumed_from(origin: &Origin, path: &str, before_restart: usize) -> u64 {
    let requests = origin.requests(path);
    assert_eq!(
        requests[0].range.as_deref(),
        Some("bytes=0-"),
        "the first request probes the whole file: {requests:?}"
    );
    let after = requests
        .get(before_restart)
        .unwrap_or_else(|| panic!("no request after the restart: {requests:?}"));
    assert_eq!(
        after.if_range.as_deref(),
        Some(origin.etag(path).as_str()),
        "a resumed request carries If-Range with the ETag: {requests:?}"
    );
    let start = range_start(after);
    assert!(start > 0, "the restart resumed from byte 0: {requests:?}");
    start
}

fn bytes_done(job: &serde_json::Value) -> u64 {
    job["bytes_done"].as_u64().unwrap_or(0)
}

/// Sends SIGTERM and checks the daemon exits 0 within 5 s.
async fn terminate_quickly(daemon: &mut Daemon) {
    let (status, took) = daemon.terminate().await;
    assert!(
        status.success(),
        "SIGTERM exits 0, got {status}:\n{}",
        daemon.log()
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?}:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_download_resumes_from_its_last_checkpoint() {
    const SIZE: u64 = 3 * MIB;
    const RATE: u64 = MIB;
    let origin = Origin::start().await;
    let body = origin.put_throttled("big.bin", 1, SIZE, RATE);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(Launch::in_dir(dir.path())).await;
    let id = daemon
        .add(json!({ "url": origin.url("big.bin"), "sha256": sha256_hex(&body) }))
        .await;
    // At 1 MiB/s, 1 MiB is five checkpoint intervals' worth.
    let seen = daemon
        .wait_until(&id, "1 MiB downloaded", |job| bytes_done(job) >= MIB)
        .await;
    let done_before_kill = bytes_done(&seen);
    daemon.kill9().await;
    let requests_before = origin.requests("big.bin").len();

    daemon.restart().await;
    let job = daemon.wait_for(&id, "completed").await;
    assert!(
        daemon.log().contains("requeued 1 jobs"),
        "the restart requeues the interrupted job:\n{}",
        daemon.log()
    );
    assert_eq!(job["bytes_done"], SIZE);
    assert_eq!(job["files"][0]["sha256"], sha256_hex(&body));
    let on_disk = std::fs::read(dir.path().join("downloads/big.bin")).unwrap();
    assert_eq!(sha256_hex(&on_disk), sha256_hex(&body));
    assert!(!dir.path().join("downloads/big.bin.part").exists());

    // A kill -9 loses at most what arrived since the last checkpoint.
    let one_interval = RATE * CHECKPOINT_MS / 1000 + DAEMON_BATCH + IN_FLIGHT;
    let start = resumed_from(&origin, "big.bin", requests_before);
    assert!(
        start + one_interval >= done_before_kill,
        "resumed from {start}, but {done_before_kill} bytes were on disk before the kill"
    );
    let sent = origin.bytes_sent("big.bin");
    assert!(
        sent < SIZE + one_interval,
        "the origin sent {sent} bytes for a {SIZE}-byte file: checkpointed bytes were fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_parallel_download_resumes_range_by_range() {
    const SIZE: u64 = 4 * MIB;
    const CONNECTIONS: u64 = 4;
    /// Bytes per second of each response, so four connections move about 1 MB/s.
    const RATE: u64 = 250_000;
    let origin = Origin::start().await;
    let body = origin.put_throttled("split.bin", 4, SIZE, RATE);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(Launch::in_dir(dir.path())).await;
    let id = daemon
        .add(json!({
            "url": origin.url("split.bin"),
            "sha256": sha256_hex(&body),
            "max_connections": CONNECTIONS,
            "min_segment_size": 65_536,
        }))
        .await;
    let seen = daemon
        .wait_until(&id, "2 MiB over several ranges", |job| {
            bytes_done(job) >= 2 * MIB && job["files"][0]["connections"].as_u64() >= Some(2)
        })
        .await;
    daemon.kill9().await;
    let requests_before = origin.requests("split.bin").len();
    let sent_before = origin.bytes_sent("split.bin");

    // What the store kept: a plan tiling the file, several ranges with checkpointed bytes,
    // missing at most the last checkpoint interval of every connection.
    let segments = saved_segments(&dir.path().join("data"), &id).await;
    let saved: u64 = segments.iter().map(|s| s.written).sum();
    assert_plan(&segments, SIZE, saved);
    let one_interval = CONNECTIONS * RATE * (CHECKPOINT_MS + 100) / 1000 + CONNECTIONS * IN_FLIGHT;
    assert!(
        saved + one_interval >= bytes_done(&seen),
        "{saved} bytes checkpointed, but {} were on disk before the kill",
        bytes_done(&seen)
    );

    daemon.restart().await;
    let job = daemon.wait_for(&id, "completed").await;
    assert_eq!(job["files"][0]["sha256"], sha256_hex(&body));
    let on_disk = std::fs::read(dir.path().join("downloads/split.bin")).unwrap();
    assert_eq!(sha256_hex(&on_disk), sha256_hex(&body));
    assert!(!dir.path().join("downloads/split.bin.part").exists());
    // Each unfinished range continued at its own checkpoint: no checkpointed byte came twice.
    assert_resumed_range_by_range(&origin, "split.bin", &segments, requests_before);
    let again = origin.bytes_sent("split.bin") - sent_before;
    assert!(
        again <= SIZE - saved + 128 * KIB,
        "{again} bytes sent after the restart for {} missing",
        SIZE - saved
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_quickly_and_the_download_resumes_where_it_stopped() {
    const SIZE: u64 = 2 * MIB;
    const RATE: u64 = MIB;
    let origin = Origin::start().await;
    let body = origin.put_throttled("file.bin", 2, SIZE, RATE);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(Launch::in_dir(dir.path())).await;
    let id = daemon.add(json!({ "url": origin.url("file.bin") })).await;
    let seen = daemon
        .wait_until(&id, "512 KiB downloaded", |job| {
            bytes_done(job) >= 512 * KIB
        })
        .await;

    terminate_quickly(&mut daemon).await;
    assert!(
        daemon.log().contains("released for a later run"),
        "{}",
        daemon.log()
    );
    let requests_before = origin.requests("file.bin").len();

    daemon.restart().await;
    let job = daemon.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_done"], SIZE);
    let on_disk = std::fs::read(dir.path().join("downloads/file.bin")).unwrap();
    assert_eq!(sha256_hex(&on_disk), sha256_hex(&body));

    // A clean stop checkpoints every byte it received.
    let start = resumed_from(&origin, "file.bin", requests_before);
    assert!(
        start >= bytes_done(&seen),
        "resumed from {start}, but {} bytes were on disk before SIGTERM",
        bytes_done(&seen)
    );
    let sent = origin.bytes_sent("file.bin");
    assert!(
        sent < SIZE + IN_FLIGHT,
        "the origin sent {sent} bytes for a {SIZE}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_survive_a_restart() {
    let origin = Origin::start().await;
    let first = origin.put_throttled("first.bin", 3, MIB, 256 * KIB);
    let dir = tempfile::tempdir().unwrap();
    let launch = Launch::in_dir(dir.path())
        .arg("--max-concurrent-jobs")
        .arg("1");
    let mut daemon = Daemon::start(launch).await;
    let running = daemon.add(json!({ "url": origin.url("first.bin") })).await;
    daemon
        .wait_until(&running, "the first job downloading", |job| {
            job["status"] == "running" && bytes_done(job) > 0
        })
        .await;
    let mut queued = Vec::new();
    for n in 0..3u64 {
        let path = format!("queued-{n}.bin");
        let body = content(10 + n, 64 * 1024);
        origin.put(&path, body.clone());
        let id = daemon.add(json!({ "url": origin.url(&path) })).await;
        queued.push((id, path, body));
    }
    for (id, ..) in &queued {
        assert_eq!(daemon.job(id).await["status"], "queued");
    }
    assert_eq!(daemon.job(&running).await["status"], "running");

    let (status, _) = daemon.terminate().await;
    assert!(status.success(), "{}", daemon.log());
    // The rest of the first file may come at full speed.
    origin.set_faults("first.bin", Faults::default());
    daemon.restart().await;

    daemon.wait_for(&running, "completed").await;
    let first_on_disk = std::fs::read(dir.path().join("downloads/first.bin")).unwrap();
    assert_eq!(sha256_hex(&first_on_disk), sha256_hex(&first));
    for (id, path, body) in &queued {
        daemon.wait_for(id, "completed").await;
        let on_disk = std::fs::read(dir.path().join("downloads").join(path)).unwrap();
        assert_eq!(&on_disk[..], &body[..], "{path}");
    }
    assert_eq!(daemon.jobs().await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_quickly_and_loses_nothing() {
    const LARGE: u64 = 2 * MIB;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let launch = Launch::in_dir(dir.path())
        .arg("--max-concurrent-jobs")
        .arg("8");
    let mut daemon = Daemon::start(launch).await;
    let mut rng = Rng::new(7);
    let mut mix = Mix::default();
    mix.add_large(&daemon, &origin, 2, LARGE).await;
    mix.add_multi(&daemon, &origin, 40, &mut rng).await;
    mix.add_small(&daemon, &origin, 60, &mut rng).await;
    // Under load: every large file downloading, small files completing around them.
    crate::daemon::eventually(
        "the large files downloading and small jobs completing",
        || {
            large_sent(&origin, &mix)
                .iter()
                .all(|sent| *sent > 256 * KIB)
        },
    )
    .await;
    let jobs = daemon.jobs().await;
    let running = jobs.iter().filter(|j| j["status"] == "running").count();
    assert!(running >= 3, "{running} jobs running: {jobs:#?}");

    terminate_quickly(&mut daemon).await;
    assert!(
        !daemon.log().contains("still running at exit"),
        "every worker stopped within the grace period:\n{}",
        daemon.log()
    );
    let sent_at_stop = large_sent(&origin, &mix);

    daemon.restart().await;
    mix.wait_all_completed(&daemon, Duration::from_secs(30))
        .await;
    mix.assert_all_done(&daemon, &dir.path().join("downloads"))
        .await;
    // A clean stop checkpoints every byte it wrote: what comes again is at most what was in
    // flight when the connections closed.
    for (sent, at_stop) in large_sent(&origin, &mix).into_iter().zip(sent_at_stop) {
        assert!(
            at_stop < LARGE,
            "the large file was still downloading at the stop"
        );
        assert!(
            sent <= LARGE + 4 * IN_FLIGHT,
            "{sent} bytes sent for a {LARGE}-byte file after a clean stop"
        );
    }
}
