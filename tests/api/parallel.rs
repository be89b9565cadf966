//! The parallel engine through the API: a large file goes down several ranges at once, each
//! resuming from its own offset; anything but exactly the bytes asked for restarts the file from
//! a fresh probe; the per-host budget, `Retry-After` and rate limits hold; pause and restart
//! resume range by range.
//!
//! Origin responses are throttled (`RATE` each), so a second connection really doubles the
//! throughput and the engine keeps adding them; files of a few MB with 64 KiB segments split.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use serde_json::{Value, json};

use crate::contract::{assert_problem, request, send};
use crate::helpers::{TestApp, test_settings};
use crate::origin::{Faults, Origin, Seen, content, sha256_hex};
use crate::plan::{assert_plan, assert_resumed_range_by_range, saved_segments};
use crate::support::{Events, assert_absent, assert_file, eventually, id_of};

/// The smallest segment the API allows, so files of a few MB split into many.
const MIN_SEGMENT: u64 = 65_536;

/// Bytes per second of each origin response.
const RATE: u64 = 1_000_000;

fn throttled() -> Faults {
    Faults {
        rate: Some(RATE),
        ..Faults::default()
    }
}

/// Serves `len` bytes of content `seed` at `path`, each response throttled to [`RATE`].
fn serve(origin: &Origin, path: &str, seed: u64, len: usize) -> Bytes {
    let body = content(seed, len);
    origin.put(path, body.clone());
    origin.set_faults(path, throttled());
    body
}

/// A job for `path` whose file may split into 64 KiB segments, with `extra` fields.
fn spec(origin: &Origin, path: &str, extra: Value) -> Value {
    let mut spec = json!({ "url": origin.url(path), "min_segment_size": MIN_SEGMENT });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

fn finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

/// Connections open for the job's first file now.
fn connections(job: &Value) -> u64 {
    job["files"][0]["connections"].as_u64().unwrap_or(0)
}

fn bytes_done(job: &Value) -> u64 {
    job["bytes_done"].as_u64().unwrap()
}

/// A fresh probe: the whole file asked for as a range, with nothing to guard.
fn is_probe(seen: &Seen) -> bool {
    seen.range.as_deref() == Some("bytes=0-") && seen.if_range.is_none()
}

#[tokio::test]
async fn a_large_file_goes_down_several_ranges_at_once() {
    let origin = Origin::start().await;
    let body = serve(&origin, "big.bin", 601, 3_000_000);
    let app = TestApp::spawn().await;
    let id = id_of(
        &app.create_job(spec(
            &origin,
            "big.bin",
            json!({ "sha256": sha256_hex(&body) }),
        ))
        .await,
    );
    // What the API shows while it runs.
    let (mut most_file, mut most_daemon) = (0, 0);
    loop {
        let job = app.job(&id).await;
        if finished(&job) {
            break;
        }
        most_file = most_file.max(connections(&job));
        let (_, stats) = app.get("/v1/stats").await;
        most_daemon = most_daemon.max(stats["connections_open"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let job = app.wait_for(&id, "completed").await;
    assert_file(&app.file("big.bin"), &body);
    assert_eq!(job["attempt"], 1);
    assert_eq!(connections(&job), 0, "nothing left open: {job:#}");
    assert!(
        most_file > 1,
        "the file showed at most {most_file} connections"
    );
    assert!(most_daemon > 1, "/v1/stats showed at most {most_daemon}");

    let seen = origin.requests("big.bin");
    let etag = origin.etag("big.bin");
    assert!(is_probe(&seen[0]), "{:?}", seen[0]);
    assert_eq!(seen[0].status, 206);
    let mut starts = BTreeSet::new();
    for later in &seen[1..] {
        let (first, end) = later
            .bounds()
            .unwrap_or_else(|| panic!("not bounded: {later:?}"));
        assert!(first > 0 && end <= 3_000_000, "{later:?}");
        assert_eq!(later.if_range.as_deref(), Some(etag.as_str()), "{later:?}");
        assert_eq!(later.status, 206);
        starts.insert(first);
    }
    assert!(starts.len() >= 2, "several ranges: {seen:#?}");
    let most = origin.max_open_responses("big.bin");
    assert!(most >= 2, "at most {most} responses were open at once");
    let sent = origin.bytes_sent("big.bin");
    assert!(
        sent < 3_000_000 + 300_000,
        "split ranges refetched bytes: {sent}"
    );
}

#[tokio::test]
async fn a_job_capped_at_one_connection_never_opens_a_second() {
    let origin = Origin::start().await;
    let body = serve(&origin, "one.bin", 602, 1_500_000);
    let app = TestApp::spawn().await;
    let job = app
        .create_job(spec(&origin, "one.bin", json!({ "max_connections": 1 })))
        .await;
    assert_eq!(job["max_connections"], 1);
    let id = id_of(&job);
    loop {
        let job = app.job(&id).await;
        assert!(connections(&job) <= 1, "{job:#}");
        assert!(origin.open_responses("one.bin") <= 1);
        if finished(&job) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("one.bin"), &body);
    assert_eq!(origin.max_open_responses("one.bin"), 1);
    let seen = origin.requests("one.bin");
    assert_eq!(seen.len(), 1, "one stream: {seen:#?}");
    assert!(is_probe(&seen[0]));
}

#[tokio::test]
async fn a_file_under_two_minimum_segments_goes_down_one_stream() {
    let origin = Origin::start().await;
    // 1.5 MB with 1 MiB segments: two halves would not both reach the minimum.
    let body = serve(&origin, "small.bin", 603, 1_500_000);
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url": origin.url("small.bin"), "min_segment_size": 1 << 20 }))
        .await;
    app.wait_for(&id_of(&job), "completed").await;
    assert_file(&app.file("small.bin"), &body);
    let seen = origin.requests("small.bin");
    assert_eq!(seen.len(), 1, "one stream: {seen:#?}");
    assert!(is_probe(&seen[0]));
    assert_eq!(origin.max_open_responses("small.bin"), 1);
}

#[tokio::test]
async fn a_dropped_range_resumes_from_its_own_offset() {
    let origin = Origin::start().await;
    let body = serve(&origin, "drop.bin", 604, 3_000_000);
    // The probe goes through; the next response (the first range split off) breaks off.
    origin.set_faults_after(
        "drop.bin",
        1,
        Faults {
            drop_after: Some(200_000),
            drop_times: 1,
            ..throttled()
        },
    );
    let app = TestApp::spawn().await;
    let job = app.create_job(spec(&origin, "drop.bin", json!({}))).await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["attempt"], 1, "recovered inside the same run");
    assert_file(&app.file("drop.bin"), &body);

    let seen = origin.requests("drop.bin");
    let etag = origin.etag("drop.bin");
    let at = seen.iter().position(|s| s.cut_at.is_some()).unwrap();
    assert_eq!(at, 1, "{seen:#?}");
    let (first, end) = seen[1].bounds().expect("a bounded range broke off");
    assert!(first > 0);
    let resumed: Vec<&Seen> = seen[2..]
        .iter()
        .filter(|s| s.range_start() == first + 200_000)
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "the range continues where it broke off: {seen:#?}"
    );
    let (_, resumed_end) = resumed[0].bounds().unwrap();
    assert!(resumed_end <= end, "within the range: {:?}", resumed[0]);
    assert_eq!(resumed[0].if_range.as_deref(), Some(etag.as_str()));
    assert_eq!(resumed[0].status, 206);
    assert!(
        seen[2..].iter().all(|s| s.range_start() != first),
        "the range is not fetched again from its start: {seen:#?}"
    );
    let sent = origin.bytes_sent("drop.bin");
    assert!(sent < 3_000_000 + 300_000, "{sent}");
}

#[tokio::test]
async fn a_200_to_a_range_is_not_written_and_the_file_starts_over() {
    let origin = Origin::start().await;
    let body = serve(&origin, "norange.bin", 605, 2_000_000);
    // After the probe, the server stops honouring ranges and sends the whole file.
    origin.set_faults_after(
        "norange.bin",
        1,
        Faults {
            ignore_range: true,
            ..throttled()
        },
    );
    let app = TestApp::spawn().await;
    let job = app
        .create_job(spec(&origin, "norange.bin", json!({})))
        .await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["attempt"], 1);
    assert_file(&app.file("norange.bin"), &body);

    let seen = origin.requests("norange.bin");
    // Every range asked after the probe (several connections may have gone out together) was
    // answered with the whole file; none of that was written: the file started over from a
    // fresh probe, the last request, and went down one stream since ranges no longer work.
    let (last, ranges) = seen[1..].split_last().expect("more than the probe");
    assert!(!ranges.is_empty(), "{seen:#?}");
    for range in ranges {
        assert!(
            range.bounds().is_some_and(|(first, _)| first > 0),
            "{seen:#?}"
        );
        assert_eq!(
            range.status, 200,
            "the range was answered with the whole file"
        );
    }
    assert!(is_probe(last), "{seen:#?}");
    assert_eq!(last.status, 200);
}

/// Waits until `id` has at least two connections and `bytes` bytes.
async fn wait_for_ranges(app: &TestApp, id: &str, bytes: u64) -> Value {
    let job = app
        .wait_until(id, "several ranges under way", |job| {
            finished(job) || (connections(job) >= 2 && bytes_done(job) >= bytes)
        })
        .await;
    assert_eq!(job["status"], "running", "{job:#}");
    job
}

#[tokio::test]
async fn a_file_changed_mid_download_ends_as_the_new_version_never_mixed() {
    let origin = Origin::start().await;
    serve(&origin, "moving.bin", 606, 3_000_000);
    let new = content(607, 2_500_000);
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(spec(&origin, "moving.bin", json!({}))).await);
    wait_for_ranges(&app, &id, 500_000).await;
    let old_etag = origin.etag("moving.bin");
    let before = origin.requests("moving.bin").len();
    // The file changes; the ranges in flight break off and ask again with the old validator.
    origin.put("moving.bin", new.clone());
    origin.cut_open("moving.bin");

    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_total"], 2_500_000);
    assert_file(&app.file("moving.bin"), &new);
    let seen = origin.requests("moving.bin");
    let refused = seen[before..]
        .iter()
        .position(|s| s.if_range.as_deref() == Some(old_etag.as_str()) && s.status == 200)
        .unwrap_or_else(|| panic!("no range was refused with a 200: {seen:#?}"));
    let probe = seen[before + refused..]
        .iter()
        .position(is_probe)
        .unwrap_or_else(|| panic!("no fresh probe after the 200: {seen:#?}"));
    assert_eq!(seen[before + refused + probe].status, 206);
}

#[tokio::test]
async fn a_changed_etag_on_a_206_restarts_the_file_with_the_new_content() {
    let origin = Origin::start().await;
    // Same size, so only the ETag tells the versions apart; and a server that ignores
    // If-Range, so the ranges asked again are served from the new version.
    let old = serve(&origin, "etag.bin", 608, 3_000_000);
    let new = content(609, 3_000_000);
    origin.update_faults("etag.bin", |f| f.ignore_if_range = true);
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(spec(&origin, "etag.bin", json!({}))).await);
    wait_for_ranges(&app, &id, 500_000).await;
    let old_etag = origin.etag("etag.bin");
    let before = origin.requests("etag.bin").len();
    origin.put("etag.bin", new.clone());
    origin.cut_open("etag.bin");

    app.wait_for(&id, "completed").await;
    assert_ne!(old, new);
    assert_file(&app.file("etag.bin"), &new);
    let seen = origin.requests("etag.bin");
    let stale = seen[before..]
        .iter()
        .position(|s| s.if_range.as_deref() == Some(old_etag.as_str()) && s.status == 206)
        .unwrap_or_else(|| panic!("no range of the new version under the old ETag: {seen:#?}"));
    assert!(
        seen[before + stale..].iter().any(is_probe),
        "no fresh probe after the new ETag: {seen:#?}"
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_content_range_is_continued_not_completed() {
    let origin = Origin::start().await;
    let body = serve(&origin, "short.bin", 610, 2_000_000);
    // The first range split off ends cleanly 100 000 bytes before its Content-Range says.
    origin.set_faults_after(
        "short.bin",
        1,
        Faults {
            short_by: Some(100_000),
            short_times: 1,
            ..throttled()
        },
    );
    let app = TestApp::spawn().await;
    // Two connections: the short range is not split again before its body ends.
    let job = app
        .create_job(spec(&origin, "short.bin", json!({ "max_connections": 2 })))
        .await;
    app.wait_for(&id_of(&job), "completed").await;
    assert_file(&app.file("short.bin"), &body);
    let seen = origin.requests("short.bin");
    let (first, end) = seen[1].bounds().expect("a bounded range");
    assert_eq!(seen[1].planned_bytes, end - first - 100_000, "{seen:#?}");
    let got = first + seen[1].planned_bytes;
    let rest = seen[2..]
        .iter()
        .find(|s| s.range_start() == got)
        .unwrap_or_else(|| panic!("the short range is not continued at {got}: {seen:#?}"));
    assert!(
        rest.bounds().is_some_and(|(_, e)| e <= end),
        "within the range: {rest:?}"
    );
}

#[tokio::test]
async fn ranges_that_always_come_short_fail_the_file_without_a_final_file() {
    let origin = Origin::start().await;
    serve(&origin, "shorter.bin", 611, 1_500_000);
    origin.update_faults("shorter.bin", |f| f.short_by = Some(50_000));
    let app = TestApp::spawn().await;
    let job = app
        .create_job(spec(&origin, "shorter.bin", json!({})))
        .await;
    let job = app.wait_for(&id_of(&job), "failed").await;
    let file = &job["files"][0];
    assert_eq!(file["status"], "failed", "{job:#}");
    assert_eq!(file["error"]["type"], "size-mismatch", "{job:#}");
    assert!(bytes_done(&job) < 1_500_000, "{job:#}");
    assert_absent(&app.file("shorter.bin"));
    let seen = origin.requests("shorter.bin");
    assert!(seen.len() > 2, "the short ranges were retried: {seen:#?}");
    assert!(seen.iter().all(|s| s.status == 206));
}

#[tokio::test]
async fn the_host_budget_holds_across_two_jobs() {
    let origin = Origin::start().await;
    let a = serve(&origin, "a.bin", 612, 2_500_000);
    let b = serve(&origin, "b.bin", 613, 2_500_000);
    let app = TestApp::spawn_with(|s| s.max_connections_per_host = 3).await;
    let ja = id_of(&app.create_job(spec(&origin, "a.bin", json!({}))).await);
    let jb = id_of(&app.create_job(spec(&origin, "b.bin", json!({}))).await);
    loop {
        let (_, stats) = app.get("/v1/stats").await;
        let open = stats["connections_open"].as_u64().unwrap();
        assert!(open <= 3, "{stats}");
        if finished(&app.job(&ja).await) && finished(&app.job(&jb).await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for(&ja, "completed").await;
    app.wait_for(&jb, "completed").await;
    assert_file(&app.file("a.bin"), &a);
    assert_file(&app.file("b.bin"), &b);
    assert_eq!(
        origin.max_open_all(),
        3,
        "the budget is used and never exceeded"
    );
}

#[tokio::test]
async fn a_connection_that_hangs_near_the_end_is_raced_and_the_loser_cancelled() {
    const SIZE: usize = 6 * 1024 * 1024;
    const HANG_AT: u64 = SIZE as u64 - 768 * 1024;
    let origin = Origin::start().await;
    let body = content(611, SIZE);
    origin.put("tail.bin", body.clone());
    origin.set_faults(
        "tail.bin",
        Faults {
            stall_once_at: Some(HANG_AT),
            ..throttled()
        },
    );
    // A stall timeout far beyond the test's deadline: only a race can finish the file in time.
    let app = TestApp::spawn_with(|s| s.stall_timeout_secs = 600).await;
    let id = id_of(
        &app.create_job(json!({
            "url": origin.url("tail.bin"),
            "sha256": sha256_hex(&body),
            "max_connections": 4,
            "min_segment_size": 1024 * 1024,
        }))
        .await,
    );
    let job = app.wait_for(&id, "completed").await;
    assert_file(&app.file("tail.bin"), &body);
    assert_eq!(job["attempt"], 1);

    // Two requests asked for the hung byte: the one that hung, then the race of its tail.
    let seen = origin.requests("tail.bin");
    let covering: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            let (first, end) = s.bounds().unwrap_or((0, SIZE as u64));
            first <= HANG_AT && HANG_AT < end
        })
        .collect();
    let [.., hung, race] = covering[..] else {
        panic!("the hung range was never raced: {seen:#?}");
    };
    let (hung_first, hung_end) = hung.bounds().unwrap_or((0, SIZE as u64));
    let (race_first, race_end) = race.bounds().expect("a race asks for a bounded range");
    assert!(
        hung_first < race_first && race_end <= hung_end,
        "the race takes over the hung range's tail: {hung:?} then {race:?}"
    );
    // The loser is cancelled: nothing is left hanging on the origin.
    eventually("the hung response to be dropped", || {
        origin.open_responses("tail.bin") == 0
    })
    .await;
    let sent = origin.bytes_sent("tail.bin");
    assert!(
        sent < SIZE as u64 + 1024 * 1024,
        "{sent} bytes sent for {SIZE}: more than the raced tail was fetched twice"
    );
}

#[tokio::test]
async fn a_503_with_retry_after_holds_new_connections_back() {
    let origin = Origin::start().await;
    let body = serve(&origin, "busy.bin", 614, 2_500_000);
    origin.set_faults_after(
        "busy.bin",
        1,
        Faults {
            statuses: [(503, Some("1".to_owned()))].into(),
            ..throttled()
        },
    );
    let app = TestApp::spawn().await;
    let events = Events::subscribe(&app).await;
    let id = id_of(&app.create_job(spec(&origin, "busy.bin", json!({}))).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("busy.bin"), &body);

    let seen = origin.requests("busy.bin");
    assert_eq!(seen[1].status, 503, "{seen:#?}");
    assert!(seen.len() > 2, "{seen:#?}");
    // Connections the engine opened together with the refused one were on their way already;
    // every request sent after the 503 arrived waits for its Retry-After.
    let in_flight = Duration::from_millis(100);
    let later: Vec<_> = seen[2..]
        .iter()
        .filter(|s| s.at - seen[1].at > in_flight)
        .collect();
    assert!(!later.is_empty(), "{seen:#?}");
    for request in later {
        let waited = request.at - seen[1].at;
        assert!(
            waited >= Duration::from_secs(1),
            "a request {waited:?} after the 503: {request:?}"
        );
    }
    let retrying = events.kind(&id, "job.retrying");
    assert!(
        retrying
            .iter()
            .any(|e| e["retry_in_ms"].as_u64().is_some_and(|ms| ms >= 1_000)),
        "{retrying:#?}"
    );
}

/// The slope of a least-squares line through `(seconds, bytes)`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

/// The job's download rate over `window`: the slope of its `bytes_done`, sampled every 50 ms.
async fn measure_rate(app: &TestApp, id: &str, window: Duration) -> f64 {
    let started = Instant::now();
    let mut points = Vec::new();
    while started.elapsed() < window {
        let job = app.job(id).await;
        assert_eq!(job["status"], "running", "ended while measured: {job:#}");
        points.push((started.elapsed().as_secs_f64(), bytes_done(&job) as f64));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slope(&points)
}

fn assert_near(rate: f64, limit: u64) {
    let limit = limit as f64;
    assert!(
        (rate - limit).abs() <= limit * 0.1,
        "{rate:.0} B/s is not within 10% of {limit:.0}"
    );
}

#[tokio::test]
async fn the_global_limit_holds_and_can_be_lifted() {
    let origin = Origin::start().await;
    let body = content(615, 4_000_000);
    origin.put("global.bin", body.clone());
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/v1/limits").await.1,
        json!({ "max_bytes_per_second": null })
    );
    let limit = json!({ "max_bytes_per_second": 600_000 });
    let (status, set) = app
        .call(Method::PUT, "/v1/limits", Some(limit.clone()))
        .await;
    assert_eq!((status.as_u16(), &set), (200, &limit));
    assert_eq!(app.get("/v1/limits").await.1, limit);

    let id = id_of(&app.create_job(spec(&origin, "global.bin", json!({}))).await);
    app.wait_until(&id, "the download to get going", |job| {
        bytes_done(job) >= 200_000
    })
    .await;
    assert_near(
        measure_rate(&app, &id, Duration::from_secs(3)).await,
        600_000,
    );
    let job = app.job(&id).await;
    assert!(
        job["bytes_per_second"].as_u64().is_some_and(|r| r > 0),
        "{job:#}"
    );

    // Lifted: the rest comes at once.
    let none = json!({ "max_bytes_per_second": null });
    let (status, set) = app
        .call(Method::PUT, "/v1/limits", Some(none.clone()))
        .await;
    assert_eq!((status.as_u16(), &set), (200, &none));
    assert_eq!(app.get("/v1/limits").await.1, none);
    let lifted = Instant::now();
    app.wait_for(&id, "completed").await;
    assert!(
        lifted.elapsed() < Duration::from_secs(2),
        "{:?}",
        lifted.elapsed()
    );
    assert_file(&app.file("global.bin"), &body);
}

#[tokio::test]
async fn a_job_limit_holds_and_a_patch_changes_it_while_running() {
    let origin = Origin::start().await;
    let body = content(616, 4_000_000);
    origin.put("job.bin", body.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(spec(
            &origin,
            "job.bin",
            json!({ "max_bytes_per_second": 500_000 }),
        ))
        .await;
    assert_eq!(job["max_bytes_per_second"], 500_000);
    let id = id_of(&job);
    app.wait_until(&id, "the download to get going", |job| {
        bytes_done(job) >= 150_000
    })
    .await;
    assert_near(
        measure_rate(&app, &id, Duration::from_millis(1500)).await,
        500_000,
    );

    let patch = json!({ "max_bytes_per_second": 1_000_000 });
    let path = format!("/v1/jobs/{id}");
    let (status, job) = app.call(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status.as_u16(), 200, "{job}");
    assert_eq!(job["max_bytes_per_second"], 1_000_000);
    // Connections already waiting finish their waits at the old rate first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_near(
        measure_rate(&app, &id, Duration::from_millis(1500)).await,
        1_000_000,
    );

    let patch = json!({ "max_bytes_per_second": null });
    let (status, job) = app.call(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status.as_u16(), 200, "{job}");
    assert_eq!(job["max_bytes_per_second"], Value::Null);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("job.bin"), &body);
}

#[tokio::test]
async fn invalid_limits_are_refused_and_change_nothing() {
    let origin = Origin::start().await;
    origin.put("held.bin", content(617, 100_000));
    origin.set_faults(
        "held.bin",
        Faults {
            hold_after: Some(10_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let put = |body: Value| send(request(&app, Method::PUT, "/v1/limits").json(&body));
    assert_problem(
        &put(json!({ "max_bytes_per_second": 0 })).await,
        422,
        "invalid-limit",
    );
    assert_eq!(
        app.get("/v1/limits").await.1,
        json!({ "max_bytes_per_second": null })
    );
    for bad in [
        json!({ "max_bytes_per_second": 0 }),
        json!({ "min_segment_size": 65_535 }),
        json!({ "max_connections": 0 }),
        json!({ "max_connections": 1025 }),
    ] {
        let mut body = json!({ "url": origin.url("held.bin") });
        body.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let reply = send(request(&app, Method::POST, "/v1/jobs").json(&body)).await;
        assert_problem(&reply, 422, "invalid-limit");
    }
    let id = app.add(&origin.url("held.bin")).await;
    app.wait_for(&id, "running").await;
    let path = format!("/v1/jobs/{id}");
    let patch = json!({ "max_bytes_per_second": 0 });
    let reply = send(request(&app, Method::PATCH, &path).json(&patch)).await;
    assert_problem(&reply, 422, "invalid-limit");
    assert_eq!(app.job(&id).await["max_bytes_per_second"], Value::Null);
    assert_eq!(
        app.get("/v1/jobs").await.1["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    origin.release("held.bin");
}

#[tokio::test]
async fn a_paused_download_resumes_range_by_range() {
    let origin = Origin::start().await;
    let body = content(618, 3_000_000);
    origin.put("pause.bin", body.clone());
    origin.set_faults(
        "pause.bin",
        Faults {
            rate: Some(500_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(spec(&origin, "pause.bin", json!({}))).await);
    wait_for_ranges(&app, &id, 600_000).await;
    let (status, _) = app.action(&id, "pause").await;
    assert_eq!(status.as_u16(), 200);
    let paused = app.wait_for(&id, "paused").await;
    eventually("every response to end", || {
        origin.open_responses("pause.bin") == 0
    })
    .await;
    let segments = saved_segments(&app.dir.path().join("data"), &id).await;
    assert_plan(&segments, 3_000_000, bytes_done(&paused));
    let (before, sent) = (
        origin.requests("pause.bin").len(),
        origin.bytes_sent("pause.bin"),
    );

    let (status, _) = app.action(&id, "resume").await;
    assert_eq!(status.as_u16(), 200);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("pause.bin"), &body);
    assert_resumed_range_by_range(&origin, "pause.bin", &segments, before);
    let missing = 3_000_000 - bytes_done(&paused);
    let again = origin.bytes_sent("pause.bin") - sent;
    assert!(
        again <= missing + 128 * 1024,
        "{again} bytes sent after the resume for {missing} missing"
    );
}

#[tokio::test]
async fn a_restarted_daemon_resumes_range_by_range() {
    let origin = Origin::start().await;
    let body = content(619, 3_000_000);
    origin.put("restart.bin", body.clone());
    origin.set_faults(
        "restart.bin",
        Faults {
            rate: Some(500_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = id_of(
        &app.create_job(spec(&origin, "restart.bin", json!({})))
            .await,
    );
    wait_for_ranges(&app, &id, 600_000).await;
    let dir = app.stop().await;
    eventually("every response to end", || {
        origin.open_responses("restart.bin") == 0
    })
    .await;
    let segments = saved_segments(&dir.path().join("data"), &id).await;
    let done = segments.iter().map(|s| s.written).sum();
    assert_plan(&segments, 3_000_000, done);
    let (before, sent) = (
        origin.requests("restart.bin").len(),
        origin.bytes_sent("restart.bin"),
    );

    let settings = test_settings(&dir);
    let app = TestApp::start(dir, settings).await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["attempt"], 2);
    assert_file(&app.file("restart.bin"), &body);
    assert_resumed_range_by_range(&origin, "restart.bin", &segments, before);
    let again = origin.bytes_sent("restart.bin") - sent;
    assert!(
        again <= 3_000_000 - done + 128 * 1024,
        "{again} bytes sent after the restart for {} missing",
        3_000_000 - done
    );
}

#[tokio::test]
async fn a_throttled_download_pauses_at_once() {
    let origin = Origin::start().await;
    let body = content(620, 4_000_000);
    origin.put("slow.bin", body.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(spec(
            &origin,
            "slow.bin",
            json!({ "max_bytes_per_second": 50_000 }),
        ))
        .await;
    let id = id_of(&job);
    wait_for_ranges(&app, &id, 60_000).await;
    let asked = Instant::now();
    let (status, _) = app.action(&id, "pause").await;
    assert_eq!(status.as_u16(), 200);
    let took = asked.elapsed();
    // Connections waiting for the throttle stop at once too (not when their wait ends).
    assert!(took < Duration::from_millis(600), "the pause took {took:?}");
    app.wait_for(&id, "paused").await;
    eventually("every response to end", || {
        origin.open_responses("slow.bin") == 0
    })
    .await;
    // Without its limit it finishes at once.
    let path = format!("/v1/jobs/{id}");
    let patch = json!({ "max_bytes_per_second": null });
    let (status, _) = app.call(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status.as_u16(), 200);
    let (status, _) = app.action(&id, "resume").await;
    assert_eq!(status.as_u16(), 200);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("slow.bin"), &body);
}

#[tokio::test]
async fn a_server_that_refuses_every_guarded_range_gets_the_file_down_one_stream() {
    let origin = Origin::start().await;
    // The probe (no If-Range) gets its 206; every range asked with If-Range gets the whole
    // file, as from a load balancer whose servers disagree about the ETag.
    let body = content(621, 8_000_000);
    origin.put("lb.bin", body.clone());
    origin.set_faults(
        "lb.bin",
        Faults {
            stale_if_range: true,
            rate: Some(8_000_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(spec(&origin, "lb.bin", json!({}))).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("lb.bin"), &body);
    // It tried ranges once, started over, and then did not split the file again.
    let seen = origin.requests("lb.bin");
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    let (first, rest) = statuses.split_first().expect("a probe");
    let (last, refused) = rest.split_last().expect("more than the probe");
    assert_eq!((*first, *last), (206, 206), "{seen:#?}");
    assert!(
        !refused.is_empty() && refused.iter().all(|s| *s == 200),
        "{seen:#?}"
    );
    assert!(is_probe(seen.last().unwrap()));
}
