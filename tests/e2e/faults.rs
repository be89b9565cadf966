//! The fault matrix: every way the test origin can misbehave, through the real binary. Each
//! test ends with the file's SHA-256 checked on disk, or with a clear terminal error on the
//! job and no file under its final name.
//!
//! Each test runs its own daemon (quick retries, a 1 s stall timeout, three attempts, no
//! free-space margin) against its own origin, so a failure names its fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::daemon::{Daemon, Launch};
use crate::origin::{Faults, Origin, Seen, content, sha256_hex};

const KIB: usize = 1024;

/// A job's own segment floor that lets a file of a few hundred KiB go down several ranges.
const SMALL_SEGMENTS: u64 = 64 * 1024;

/// Slow enough that a file of 1 MiB is still running when the engine adds connections (on
/// loopback it would otherwise be done before the first is judged).
const PARALLEL_RATE: u64 = 4 * 1024 * 1024;

/// Bounded ranges asked for `path` (the probe's `bytes=0-` is open-ended).
fn bounded_ranges(origin: &Origin, path: &str) -> usize {
    origin
        .requests(path)
        .iter()
        .filter(|s| s.bounds().is_some())
        .count()
}

/// The daemon's stall timeout in these tests.
const STALL: Duration = Duration::from_secs(1);

struct Bed {
    origin: Origin,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch::in_dir(dir.path())
            .env("HAUL_STALL_TIMEOUT_SECS", STALL.as_secs().to_string())
            .env("HAUL_RETRY_ATTEMPTS", "3")
            .env("HAUL_MIN_FREE_SPACE", "0");
        Bed {
            origin: Origin::start().await,
            daemon: Daemon::start(launch).await,
            dir,
        }
    }

    /// Serves `len` pseudo-random bytes at `path` with `faults`.
    fn serve(&self, path: &str, seed: u64, len: usize, faults: Faults) -> Bytes {
        let body = content(seed, len);
        self.origin.put(path, body.clone());
        self.origin.set_faults(path, faults);
        body
    }

    fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// Submits `path` with the job options in `extra`; returns the job id.
    async fn submit(&self, path: &str, extra: Value) -> String {
        let mut body = json!({ "url": self.origin.url(path) });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.daemon.add(body).await
    }

    /// Submits `path` and waits for it to complete as exactly `expected`: the job's size and
    /// checksum, the bytes on disk, and no `.part` left.
    async fn completes(&self, path: &str, expected: &[u8], extra: Value) -> Value {
        let id = self.submit(path, extra).await;
        let job = self.daemon.wait_for(&id, "completed").await;
        assert_eq!(job["bytes_total"], expected.len(), "{job:#}");
        let on_disk = std::fs::read(self.downloads().join(path)).unwrap();
        assert_eq!(on_disk.len(), expected.len());
        assert_eq!(sha256_hex(&on_disk), sha256_hex(expected));
        assert!(!part_of(&self.downloads().join(path)).exists());
        job
    }

    /// Submits `path` and waits for it to fail with error type `kind`; checks nothing has the
    /// final name. Returns the job.
    async fn fails(&self, path: &str, kind: &str, extra: Value) -> Value {
        let id = self.submit(path, extra).await;
        let job = self.daemon.wait_for(&id, "failed").await;
        assert_eq!(job["error"]["type"], kind, "{job:#}");
        assert_eq!(job["files"][0]["status"], "failed", "{job:#}");
        assert_eq!(job["files"][0]["error"]["type"], kind, "{job:#}");
        assert!(
            !self.downloads().join(path).exists(),
            "a failed download has no file under its final name"
        );
        job
    }

    /// A failed file that received bytes keeps its `.part` (for a retry, as documented);
    /// forgetting the job removes it.
    async fn forget_keeps_nothing(&self, job: &Value, path: &str) {
        assert!(self.has_part(path), "kept for a retry: {job:#}");
        let id = job["id"].as_str().unwrap();
        let (status, body) = self
            .daemon
            .call(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"), None)
            .await;
        assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");
        assert!(!self.has_part(path), "forgetting the job removes its .part");
        assert!(!self.downloads().join(path).exists());
    }

    /// Whether the partial file of `path` is still there.
    fn has_part(&self, path: &str) -> bool {
        part_of(&self.downloads().join(path)).exists()
    }
}

fn part_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_owned();
    name.push(".part");
    path.with_file_name(name)
}

/// Requests that opened a file afresh (no `If-Range`: the first request, or a restart).
fn fresh_starts(requests: &[Seen]) -> usize {
    requests.iter().filter(|s| s.if_range.is_none()).count()
}

/// The time between the first request and the next one.
fn first_gap(requests: &[Seen]) -> Duration {
    assert!(requests.len() >= 2, "{requests:?}");
    requests[1].at.duration_since(requests[0].at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_once_resumes_from_where_it_broke() {
    let bed = Bed::start().await;
    let faults = Faults {
        drop_after: Some(300_000),
        drop_times: 1,
        ..Faults::default()
    };
    let body = bed.serve("once.bin", 1, 1024 * KIB, faults);
    bed.completes("once.bin", &body, json!({})).await;
    let requests = bed.origin.requests("once.bin");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].cut_at, Some(300_000));
    let resumed = requests[1].range_start();
    assert!(
        resumed > 0 && resumed <= 300_000,
        "resumed at {resumed}: {requests:?}"
    );
    assert_eq!(fresh_starts(&requests), 1, "resumed, not restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_on_every_response_still_completes() {
    let bed = Bed::start().await;
    // Every response breaks off after 100 KB: each attempt makes progress, so the retry
    // budget (three attempts without progress) is never used up.
    let faults = Faults {
        drop_after: Some(100_000),
        drop_times: 0,
        ..Faults::default()
    };
    let body = bed.serve("often.bin", 2, 600 * KIB, faults);
    bed.completes("often.bin", &body, json!({})).await;
    let requests = bed.origin.requests("often.bin");
    let cut = requests.iter().filter(|s| s.cut_at.is_some()).count();
    assert!(cut >= 6, "{cut} responses broke off: {requests:?}");
    assert_eq!(
        fresh_starts(&requests),
        1,
        "resumed each time, never restarted"
    );
    let starts: Vec<u64> = requests.iter().map(Seen::range_start).collect();
    assert!(
        starts.windows(2).all(|w| w[1] > w[0]),
        "each attempt goes on from where the last stopped: {starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_segment_dropped_resumes_each_from_its_own_offset() {
    let bed = Bed::start().await;
    let faults = Faults {
        drop_after: Some(40_000),
        drop_times: 0,
        ..Faults::default()
    };
    let body = bed.serve("segments.bin", 3, 1024 * KIB, faults);
    bed.completes(
        "segments.bin",
        &body,
        json!({ "min_segment_size": SMALL_SEGMENTS }),
    )
    .await;
    let requests = bed.origin.requests("segments.bin");
    // Bounded ranges other than the probe's: the file went down several segments.
    let segments: std::collections::BTreeSet<u64> = requests
        .iter()
        .filter_map(|s| s.bounds().map(|(_, end)| end))
        .collect();
    assert!(segments.len() >= 3, "{segments:?}: {requests:?}");
    // Every response long enough to reach the cut was cut, and every one resumed.
    for seen in &requests {
        if seen.planned_bytes > 40_000 {
            assert_eq!(seen.cut_at, Some(40_000), "{seen:?}");
        }
    }
    assert_eq!(
        fresh_starts(&requests),
        1,
        "no segment started the file over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_in_seconds_or_as_a_date_is_honoured() {
    let bed = Bed::start().await;
    let seconds = Faults {
        statuses: [(503, Some("1".to_owned()))].into(),
        ..Faults::default()
    };
    let a = bed.serve("seconds.bin", 4, 300 * KIB, seconds);
    bed.completes("seconds.bin", &a, json!({})).await;
    let requests = bed.origin.requests("seconds.bin");
    assert_eq!(requests[0].status, 503);
    assert!(
        first_gap(&requests) >= Duration::from_secs(1),
        "retried {:?} after a Retry-After of 1 s",
        first_gap(&requests)
    );

    // An HTTP date about two seconds ahead: no request may come before it.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    let until = httpdate::parse_http_date(&date)
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    let not_before = std::time::Instant::now() + until;
    let faults = Faults {
        statuses: [(503, Some(date))].into(),
        ..Faults::default()
    };
    let b = bed.serve("date.bin", 5, 300 * KIB, faults);
    bed.completes("date.bin", &b, json!({})).await;
    let requests = bed.origin.requests("date.bin");
    assert_eq!(requests[0].status, 503);
    // The daemon's clock and ours are the same; allow for rounding of the two readings.
    assert!(
        requests[1].at + Duration::from_millis(20) >= not_before,
        "retried {:?} before the Retry-After date",
        not_before - requests[1].at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_or_503_without_retry_after_is_retried_soon() {
    let bed = Bed::start().await;
    let faults = Faults {
        statuses: [(503, None), (500, None)].into(),
        ..Faults::default()
    };
    let body = bed.serve("soon.bin", 6, 300 * KIB, faults);
    bed.completes("soon.bin", &body, json!({})).await;
    let requests = bed.origin.requests("soon.bin");
    let statuses: Vec<u16> = requests.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 500, 206], "{requests:?}");
    // The retry delay is the daemon's own (at most 200 ms here), not a second of Retry-After.
    let took = requests[2].at.duration_since(requests[0].at);
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_500_fails_with_its_status_and_leaves_no_file() {
    let bed = Bed::start().await;
    let faults = Faults {
        statuses: std::iter::repeat_n((500, None), 20).collect(),
        ..Faults::default()
    };
    bed.serve("broken.bin", 7, 300 * KIB, faults);
    let job = bed.fails("broken.bin", "http-status", json!({})).await;
    assert_eq!(job["error"]["http_status"], 500, "{job:#}");
    assert!(!bed.has_part("broken.bin"), "nothing was written");
    // The first request, then three attempts of the connection.
    let requests = bed.origin.requests("broken.bin").len();
    assert!(requests <= 4, "{requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_for_its_retry_after_and_without_one_is_retried_soon() {
    let bed = Bed::start().await;
    let told = Faults {
        statuses: [(429, Some("1".to_owned()))].into(),
        ..Faults::default()
    };
    let a = bed.serve("told.bin", 8, 300 * KIB, told);
    bed.completes("told.bin", &a, json!({})).await;
    let requests = bed.origin.requests("told.bin");
    assert_eq!(requests[0].status, 429);
    assert!(
        first_gap(&requests) >= Duration::from_secs(1),
        "{requests:?}"
    );

    let untold = Faults {
        statuses: [(429, None)].into(),
        ..Faults::default()
    };
    let b = bed.serve("untold.bin", 9, 300 * KIB, untold);
    bed.completes("untold.bin", &b, json!({})).await;
    let requests = bed.origin.requests("untold.bin");
    assert_eq!(requests[0].status, 429);
    assert!(
        first_gap(&requests) < Duration::from_millis(900),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_after_the_headers_times_out_and_resumes() {
    let bed = Bed::start().await;
    let stall = Faults {
        stall_after: Some(0),
        ..Faults::default()
    };
    let body = bed.serve("stall.bin", 10, 300 * KIB, stall);
    // Only the first response stalls.
    bed.origin
        .set_faults_after("stall.bin", 1, Faults::default());
    bed.completes("stall.bin", &body, json!({})).await;
    let requests = bed.origin.requests("stall.bin");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        first_gap(&requests) >= STALL,
        "given up on after {:?}, before the stall timeout",
        first_gap(&requests)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_always_stalls_fails_with_a_network_error() {
    let bed = Bed::start().await;
    let stall = Faults {
        stall_after: Some(0),
        ..Faults::default()
    };
    bed.serve("hung.bin", 11, 300 * KIB, stall);
    let job = bed.fails("hung.bin", "network", json!({})).await;
    assert!(!bed.has_part("hung.bin"), "nothing was written: {job:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_slow_but_not_a_stall() {
    let bed = Bed::start().await;
    // 300 bytes every 100 ms: more often than the stall timeout, for 1.5 s in all.
    let faults = Faults {
        trickle: Some((300, Duration::from_millis(100))),
        ..Faults::default()
    };
    let body = bed.serve("trickle.bin", 12, 4_500, faults);
    bed.completes("trickle.bin", &body, json!({})).await;
    let requests = bed.origin.requests("trickle.bin");
    assert_eq!(requests.len(), 1, "never given up on: {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_range_sends_it_whole_and_a_drop_starts_it_over() {
    let bed = Bed::start().await;
    let faults = Faults {
        ignore_range: true,
        drop_after: Some(200_000),
        drop_times: 1,
        ..Faults::default()
    };
    let body = bed.serve("whole.bin", 13, 600 * KIB, faults);
    bed.completes(
        "whole.bin",
        &body,
        json!({ "min_segment_size": SMALL_SEGMENTS }),
    )
    .await;
    let requests = bed.origin.requests("whole.bin");
    let statuses: Vec<u16> = requests.iter().map(|s| s.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        requests.len(),
        2,
        "one broken copy, one whole: {requests:?}"
    );
    assert_eq!(
        requests[1].range.as_deref(),
        Some("bytes=0-"),
        "from the start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shifted_content_range_is_never_written() {
    let bed = Bed::start().await;
    // The first response breaks off; the range asked for then comes back shifted by 1000
    // bytes, once: nothing of it is written, and the file starts over from a fresh probe.
    let drop = Faults {
        drop_after: Some(300_000),
        drop_times: 1,
        ..Faults::default()
    };
    let body = bed.serve("shift.bin", 14, 1024 * KIB, drop);
    let shift = Faults {
        shift_range: Some(1_000),
        shift_times: 1,
        ..Faults::default()
    };
    bed.origin.set_faults_after("shift.bin", 1, shift);
    bed.completes("shift.bin", &body, json!({})).await;
    let requests = bed.origin.requests("shift.bin");
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[1].range_start() > 0, "{requests:?}");
    assert_eq!(requests[2].range.as_deref(), Some("bytes=0-"));
    assert!(
        requests[2].if_range.is_none(),
        "a fresh probe: {requests:?}"
    );

    // A server that always shifts never gets a file written.
    let always = Faults {
        shift_range: Some(1_000),
        shift_times: 0,
        ..Faults::default()
    };
    bed.serve("shifty.bin", 15, 1024 * KIB, always);
    let job = bed.fails("shifty.bin", "invalid-response", json!({})).await;
    assert!(!bed.has_part("shifty.bin"), "{job:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_beyond_the_asked_range_are_never_written() {
    let bed = Bed::start().await;
    // Junk after every range: written anywhere, it would change the checksum.
    let faults = Faults {
        extra_bytes: Some(4_096),
        ..Faults::default()
    };
    let one = bed.serve("extra.bin", 16, 600 * KIB, faults.clone());
    bed.completes("extra.bin", &one, json!({})).await;
    let many = bed.serve(
        "extras.bin",
        17,
        1024 * KIB,
        Faults {
            rate: Some(PARALLEL_RATE),
            ..faults
        },
    );
    bed.completes(
        "extras.bin",
        &many,
        json!({ "min_segment_size": SMALL_SEGMENTS }),
    )
    .await;
    let ranges = bounded_ranges(&bed.origin, "extras.bin");
    assert!(ranges >= 2, "{ranges} ranges had junk after them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_longer_than_a_range_is_read_only_as_far_as_the_range() {
    let bed = Bed::start().await;
    // Each 206 announces 1000 bytes more than its range and breaks off after the range.
    let faults = Faults {
        long_by: Some(1_000),
        rate: Some(PARALLEL_RATE),
        ..Faults::default()
    };
    let body = bed.serve("long.bin", 18, 1024 * KIB, faults);
    bed.completes(
        "long.bin",
        &body,
        json!({ "min_segment_size": SMALL_SEGMENTS }),
    )
    .await;
    let requests = bed.origin.requests("long.bin");
    assert_eq!(fresh_starts(&requests), 1, "{requests:?}");
    assert!(bounded_ranges(&bed.origin, "long.bin") >= 2, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_body_always_shorter_than_its_content_length_fails_instead_of_looping() {
    let bed = Bed::start().await;
    // No ranges, and every body ends 1000 bytes short of its Content-Length: the file can
    // never be had. Each try restarts from byte 0 and gets no further than the last.
    let faults = Faults {
        ignore_range: true,
        long_by: Some(1_000),
        ..Faults::default()
    };
    bed.serve("short.bin", 19, 300 * KIB, faults);
    let job = bed.fails("short.bin", "invalid-response", json!({})).await;
    let requests = bed.origin.requests("short.bin").len();
    assert!(requests <= 8, "{requests} requests: {job:#}");
    bed.forget_keeps_nothing(&job, "short.bin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_without_content_length_complete_and_resume() {
    let bed = Bed::start().await;
    let faults = Faults {
        no_content_length: true,
        drop_after: Some(200_000),
        drop_times: 1,
        ..Faults::default()
    };
    let body = bed.serve("chunked.bin", 20, 600 * KIB, faults);
    let job = bed.completes("chunked.bin", &body, json!({})).await;
    assert_eq!(job["files"][0]["bytes_total"], body.len(), "{job:#}");
    let requests = bed.origin.requests("chunked.bin");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[1].range_start() > 0, "resumed: {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_mid_download_ends_as_the_new_version_never_a_mix() {
    let bed = Bed::start().await;
    for (path, extra) in [
        ("deploy.bin", json!({})),
        ("deploys.bin", json!({ "min_segment_size": SMALL_SEGMENTS })),
    ] {
        let newer = content(22, 900 * KIB);
        let faults = Faults {
            replace_after: Some((300_000, newer.clone())),
            ..Faults::default()
        };
        let old = bed.serve(path, 21, 1024 * KIB, faults);
        let old_etag = bed.origin.etag(path);
        bed.completes(path, &newer, extra).await;
        assert_ne!(sha256_hex(&old), sha256_hex(&newer));
        let requests = bed.origin.requests(path);
        assert!(
            requests
                .iter()
                .any(|s| s.if_range.as_deref() == Some(old_etag.as_str())),
            "a resume guarded by the old ETag was refused: {requests:?}"
        );
        assert_ne!(
            bed.origin.etag(path),
            old_etag,
            "the origin served a new version"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_chain_is_followed_and_ranges_go_straight_to_its_end() {
    let bed = Bed::start().await;
    for (from, to) in [("a.bin", "b.bin"), ("b.bin", "c.bin")] {
        bed.serve(
            from,
            0,
            1,
            Faults {
                redirect_to: Some(bed.origin.url(to)),
                ..Faults::default()
            },
        );
    }
    let throttled = Faults {
        rate: Some(PARALLEL_RATE),
        ..Faults::default()
    };
    let body = bed.serve("c.bin", 23, 1024 * KIB, throttled);
    // The name is the submitted URL's; no file appears under the others.
    bed.completes(
        "a.bin",
        &body,
        json!({ "min_segment_size": SMALL_SEGMENTS }),
    )
    .await;
    assert_eq!(bed.origin.requests("a.bin").len(), 1);
    assert_eq!(bed.origin.requests("b.bin").len(), 1);
    let ranges = bed.origin.requests("c.bin").len();
    assert!(
        ranges >= 2,
        "{ranges} requests reached the end of the chain"
    );
    assert!(!bed.downloads().join("c.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_fails_with_too_many_redirects_and_is_not_retried() {
    let bed = Bed::start().await;
    for (from, to) in [("ping.bin", "pong.bin"), ("pong.bin", "ping.bin")] {
        bed.serve(
            from,
            0,
            1,
            Faults {
                redirect_to: Some(bed.origin.url(to)),
                ..Faults::default()
            },
        );
    }
    let job = bed.fails("ping.bin", "too-many-redirects", json!({})).await;
    assert!(!bed.has_part("ping.bin"), "{job:#}");
    // max_redirects (10) followed once: eleven requests, no retry.
    let requests = bed.origin.requests("ping.bin").len() + bed.origin.requests("pong.bin").len();
    assert_eq!(requests, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_stored_as_the_encoded_bytes_across_ranges_and_resumes() {
    let bed = Bed::start().await;
    let plain = content(24, 1024 * KIB);
    let encoded = bed.origin.put_gzip("data.gz", &plain);
    bed.origin.update_faults("data.gz", |f| {
        f.drop_after = Some(100_000);
        f.drop_times = 2;
        f.rate = Some(PARALLEL_RATE);
    });
    let job = bed
        .completes(
            "data.gz",
            &encoded,
            json!({ "min_segment_size": SMALL_SEGMENTS }),
        )
        .await;
    assert_ne!(job["bytes_total"], plain.len());
    let requests = bed.origin.requests("data.gz");
    assert!(
        requests.len() >= 3,
        "several ranges and resumes: {requests:?}"
    );
    assert!(bounded_ranges(&bed.origin, "data.gz") >= 2, "{requests:?}");
    for seen in &requests {
        assert_eq!(
            seen.header("accept-encoding"),
            Some("identity"),
            "haul asks for the bytes as they are: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_petabyte_content_length_fails_at_once_as_file_too_large() {
    let bed = Bed::start().await;
    let faults = Faults {
        announce_len: Some(1 << 50),
        ..Faults::default()
    };
    bed.serve("huge.bin", 25, 300 * KIB, faults);
    let job = bed.fails("huge.bin", "file-too-large", json!({})).await;
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("1125899906842624"), "{message}");
    assert!(
        !bed.has_part("huge.bin"),
        "nothing kept for a file that cannot fit"
    );
    assert_eq!(bed.origin.requests("huge.bin").len(), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_reaches_its_announced_size_is_never_complete() {
    let bed = Bed::start().await;
    // 100 KB more announced than there is: the ranges past the real end are unsatisfiable.
    let len = 300 * KIB;
    let faults = Faults {
        announce_len: Some(len as u64 + 100_000),
        ..Faults::default()
    };
    bed.serve("phantom.bin", 26, len, faults);
    let job = bed
        .fails("phantom.bin", "invalid-response", json!({}))
        .await;
    assert!(
        job["bytes_total"] != len,
        "the size stays what was announced: {job:#}"
    );
    bed.forget_keeps_nothing(&job, "phantom.bin").await;
}
