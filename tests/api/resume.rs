//! Resuming: after a dropped connection, a pause or a restart the download continues from the
//! bytes it has, and only when the origin proves it is still the same file.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, test_settings};
use crate::origin::{Faults, Origin, content, sha256_hex};
use crate::support::{Events, assert_absent, assert_file, eventually, id_of, part, requests_seen};

#[tokio::test]
async fn a_dropped_connection_resumes_from_the_bytes_received() {
    let origin = Origin::start().await;
    let body = content(31, 800_000);
    origin.put("drop.bin", body.clone());
    origin.set_faults(
        "drop.bin",
        Faults {
            drop_after: Some(300_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url": origin.url("drop.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["bytes_done"], 800_000);
    assert_eq!(job["attempt"], 1, "recovered inside the same run");
    assert_file(&app.file("drop.bin"), &body);
    assert!(!part(&app, "drop.bin").exists());

    let seen = origin.requests("drop.bin");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        seen[0].range.as_deref(),
        Some("bytes=0-"),
        "the first request probes for ranges"
    );
    // Every byte that arrived before the drop was kept: the rest is asked for, guarded by
    // the ETag, and nothing is fetched twice.
    assert_eq!(seen[1].range.as_deref(), Some("bytes=300000-799999"));
    assert_eq!(
        seen[1].if_range.as_deref(),
        Some(origin.etag("drop.bin").as_str())
    );
    assert_eq!(seen[1].status, 206);
    assert_eq!(origin.bytes_sent("drop.bin"), 800_000);
}

#[tokio::test]
async fn a_dropped_chunked_body_resumes_too() {
    let origin = Origin::start().await;
    let body = content(32, 700_000);
    origin.put("chunked.bin", body.clone());
    origin.set_faults(
        "chunked.bin",
        Faults {
            no_content_length: true,
            drop_after: Some(400_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("chunked.bin")).await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_total"], 700_000);
    assert_file(&app.file("chunked.bin"), &body);
    let seen = origin.requests("chunked.bin");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].range_start(), 400_000);
    assert_eq!(seen[1].status, 206);
}

#[tokio::test]
async fn a_changed_etag_between_attempts_restarts_from_zero_with_the_new_content() {
    let origin = Origin::start().await;
    let old = content(33, 800_000);
    let new = content(34, 500_000);
    origin.put("moving.bin", old);
    // The first response stops at 300 000 bytes until released, then drops.
    origin.set_faults(
        "moving.bin",
        Faults {
            hold_after: Some(300_000),
            drop_after: Some(300_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let old_etag = origin.etag("moving.bin");
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("moving.bin")).await;
    eventually("the first response to reach the hold", || {
        origin.bytes_sent("moving.bin") == 300_000
    })
    .await;
    origin.put("moving.bin", new.clone());
    origin.release("moving.bin");

    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_done"], 500_000);
    assert_eq!(job["bytes_total"], 500_000);
    assert_file(&app.file("moving.bin"), &new);
    let seen = origin.requests("moving.bin");
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[1].range_start(), 300_000, "it tried to resume");
    assert_eq!(seen[1].if_range.as_deref(), Some(old_etag.as_str()));
    assert_eq!(seen[1].status, 200, "the origin sent the new version whole");
    assert_eq!(
        seen[2].range.as_deref(),
        Some("bytes=0-"),
        "a fresh probe, not that 200"
    );
    assert_eq!(seen[2].status, 206);
}

#[tokio::test]
async fn a_206_of_a_changed_file_is_not_stitched_onto_the_old_bytes() {
    let origin = Origin::start().await;
    // Same size: only the ETag tells the versions apart.
    let old = content(35, 800_000);
    let new = content(36, 800_000);
    origin.put("moving.bin", old);
    origin.set_faults(
        "moving.bin",
        Faults {
            hold_after: Some(300_000),
            drop_after: Some(300_000),
            drop_times: 1,
            // A server that ignores If-Range: it answers the range from the new version.
            ignore_if_range: true,
            ..Faults::default()
        },
    );
    let old_etag = origin.etag("moving.bin");
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url": origin.url("moving.bin"), "sha256": sha256_hex(&new) }))
        .await;
    eventually("the first response to reach the hold", || {
        origin.bytes_sent("moving.bin") == 300_000
    })
    .await;
    origin.put("moving.bin", new.clone());
    origin.release("moving.bin");

    app.wait_for(&id_of(&job), "completed").await;
    assert_file(&app.file("moving.bin"), &new);
    let seen = origin.requests("moving.bin");
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[1].if_range.as_deref(), Some(old_etag.as_str()));
    assert_eq!(seen[1].status, 206, "the origin answered the stale range");
    assert_eq!(
        seen[2].range.as_deref(),
        Some("bytes=0-"),
        "the file started over"
    );
    assert_eq!(seen[2].status, 206);
}

#[tokio::test]
async fn a_server_ignoring_range_on_resume_makes_it_start_over() {
    let origin = Origin::start().await;
    let body = content(37, 600_000);
    origin.put("norange.bin", body.clone());
    origin.set_faults(
        "norange.bin",
        Faults {
            ignore_range: true,
            drop_after: Some(350_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("norange.bin")).await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_done"], 600_000);
    assert_file(&app.file("norange.bin"), &body);
    let seen = origin.requests("norange.bin");
    // The probe showed that ranges do not work: the retry starts over at once instead of
    // asking for the rest.
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].status, 200, "the probe's answer: no ranges");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=0-"));
    assert_eq!(seen[1].status, 200);
}

#[tokio::test]
async fn pause_and_resume_continue_from_the_checkpoint() {
    let origin = Origin::start().await;
    let body = content(38, 2_000_000);
    origin.put("slow.bin", body.clone());
    origin.set_faults(
        "slow.bin",
        Faults {
            rate: Some(1_000_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    // With a checksum: the resumed run must hash the bytes already on disk too.
    let job = app
        .create_job(json!({ "url": origin.url("slow.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let id = id_of(&job);
    app.wait_until(&id, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;

    let (status, paused) = app.action(&id, "pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    // The worker has stopped: what GET shows now is the saved checkpoint.
    let job = app.job(&id).await;
    assert_eq!(job["status"], "paused");
    let checkpoint = job["files"][0]["bytes_done"].as_u64().unwrap();
    assert!(checkpoint > 0 && checkpoint < 2_000_000, "{checkpoint}");
    assert_eq!(job["bytes_done"], checkpoint);
    let on_disk = std::fs::metadata(part(&app, "slow.bin")).unwrap().len();
    assert_eq!(
        on_disk, checkpoint,
        "the .part holds exactly the checkpoint"
    );
    eventually("the paused download's connection to close", || {
        origin.open_responses("slow.bin") == 0
    })
    .await;
    assert_eq!(origin.requests("slow.bin").len(), 1);

    origin.update_faults("slow.bin", |f| f.rate = None);
    let (status, resumed) = app.action(&id, "resume").await;
    assert_eq!(status, 200, "{resumed}");
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("slow.bin"), &body);
    let seen = origin.requests("slow.bin");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].range, Some(format!("bytes={checkpoint}-")));
    assert_eq!(
        seen[1].if_range.as_deref(),
        Some(origin.etag("slow.bin").as_str())
    );
    assert_eq!(seen[1].status, 206);
}

#[tokio::test]
async fn a_restart_continues_the_running_download_and_keeps_the_queue() {
    let origin = Origin::start().await;
    let big = content(39, 2_000_000);
    let (q1, q2) = (content(40, 100_000), content(41, 150_000));
    origin.put("big.bin", big.clone());
    origin.put("q1.bin", q1.clone());
    origin.put("q2.bin", q2.clone());
    origin.set_faults(
        "big.bin",
        Faults {
            rate: Some(1_000_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.max_concurrent_jobs = 1).await;
    let big_id = id_of(
        &app.create_job(json!({ "url": origin.url("big.bin"), "sha256": sha256_hex(&big) }))
            .await,
    );
    app.wait_until(&big_id, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let q1_id = app.add(&origin.url("q1.bin")).await;
    let q2_id = app.add(&origin.url("q2.bin")).await;
    let part_path = part(&app, "big.bin");

    let dir = app.stop().await;
    let kept = std::fs::metadata(&part_path).unwrap().len();
    assert!(kept > 0 && kept < 2_000_000, "{kept}");
    assert_eq!(origin.requests("big.bin").len(), 1);
    assert!(origin.requests("q1.bin").is_empty());

    origin.update_faults("big.bin", |f| f.rate = None);
    let mut settings = test_settings(&dir);
    settings.max_concurrent_jobs = 1;
    let app = TestApp::start(dir, settings).await;
    let job = app.wait_for(&big_id, "completed").await;
    assert_eq!(job["attempt"], 2);
    assert_file(&app.file("big.bin"), &big);
    for (id, name, body) in [(&q1_id, "q1.bin", &q1), (&q2_id, "q2.bin", &q2)] {
        app.wait_for(id, "completed").await;
        assert_file(&app.file(name), body);
        assert_eq!(origin.requests(name).len(), 1);
    }
    let seen = requests_seen(&origin, "big.bin", 2).await;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        seen[1].range,
        Some(format!("bytes={kept}-")),
        "the restart resumes at the checkpoint saved on shutdown"
    );
    assert_eq!(seen[1].status, 206);
}

#[tokio::test]
async fn progress_resets_the_retry_budget_so_a_flaky_origin_still_completes() {
    let origin = Origin::start().await;
    let body = content(42, 900_000);
    origin.put("flaky.bin", body.clone());
    // Every response drops after 200 000 bytes; each attempt still makes progress.
    origin.set_faults(
        "flaky.bin",
        Faults {
            drop_after: Some(200_000),
            drop_times: 0,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.retry_attempts = 2).await;
    let job = app
        .create_job(json!({ "url": origin.url("flaky.bin"), "sha256": sha256_hex(&body) }))
        .await;
    app.wait_for(&id_of(&job), "completed").await;
    assert_file(&app.file("flaky.bin"), &body);
    let starts: Vec<u64> = origin
        .requests("flaky.bin")
        .iter()
        .map(|s| s.range_start())
        .collect();
    assert_eq!(starts, [0, 200_000, 400_000, 600_000, 800_000]);
    assert_eq!(origin.bytes_sent("flaky.bin"), 900_000);
}

#[tokio::test]
async fn a_stalled_connection_times_out_and_resumes() {
    let origin = Origin::start().await;
    let body = content(43, 700_000);
    origin.put("stall.bin", body.clone());
    origin.set_faults(
        "stall.bin",
        Faults {
            stall_after: Some(300_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.stall_timeout_secs = 1).await;
    let id = app.add(&origin.url("stall.bin")).await;
    eventually("the first response to stall", || {
        origin.bytes_sent("stall.bin") == 300_000
    })
    .await;
    // Later responses behave; the stalled one stays stalled.
    origin.update_faults("stall.bin", |f| f.stall_after = None);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("stall.bin"), &body);
    let seen = origin.requests("stall.bin");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=300000-699999"));
}

#[tokio::test]
async fn a_failed_job_resumed_continues_from_its_checkpoint() {
    let origin = Origin::start().await;
    let body = content(44, 800_000);
    origin.put("retry.bin", body.clone());
    origin.set_faults(
        "retry.bin",
        Faults {
            hold_after: Some(300_000),
            drop_after: Some(300_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.retry_attempts = 3).await;
    let job = app
        .create_job(json!({ "url": origin.url("retry.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let id = id_of(&job);
    eventually("the first response to be held", || {
        origin.bytes_sent("retry.bin") == 300_000
    })
    .await;
    // After the drop, the origin fails until the job gives up: the drop made progress, so
    // the two 500s are the second and third failed attempts.
    origin.update_faults("retry.bin", |f| {
        f.statuses = std::iter::repeat_n((500, None), 2).collect();
    });
    origin.release("retry.bin");
    let failed = app.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["http_status"], 500, "{failed:#}");
    assert_eq!(failed["files"][0]["bytes_done"], 300_000);
    assert_eq!(origin.requests("retry.bin").len(), 3);
    assert_absent(&app.file("retry.bin"));
    let kept = std::fs::metadata(part(&app, "retry.bin")).unwrap().len();
    assert_eq!(kept, 300_000, "a failed job keeps its bytes for a resume");

    let (status, resumed) = app.action(&id, "resume").await;
    assert_eq!(status, 200, "{resumed}");
    // Queued again (the dispatcher may already have claimed it), with the error cleared.
    assert!(
        ["queued", "running", "completed"].contains(&resumed["status"].as_str().unwrap()),
        "{resumed}"
    );
    assert!(resumed["error"].is_null());
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["attempt"], 2);
    assert_file(&app.file("retry.bin"), &body);
    let seen = origin.requests("retry.bin");
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(seen[3].status, 206);
}

#[tokio::test]
async fn pausing_a_multi_file_job_keeps_its_finished_files() {
    let origin = Origin::start().await;
    let (first, second) = (content(45, 200_000), content(46, 1_500_000));
    origin.put("first.bin", first.clone());
    origin.put("second.bin", second.clone());
    origin.set_faults(
        "second.bin",
        Faults {
            hold_after: Some(600_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({
            "files": [
                { "url": origin.url("first.bin"), "sha256": sha256_hex(&first) },
                { "url": origin.url("second.bin"), "sha256": sha256_hex(&second) },
            ],
        }))
        .await;
    let id = id_of(&job);
    eventually("the second file to be held", || {
        origin.bytes_sent("second.bin") == 600_000
    })
    .await;
    app.wait_until(&id, "bytes of the second file", |job| {
        job["files"][1]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let (status, paused) = app.action(&id, "pause").await;
    assert_eq!(status, 200, "{paused}");
    let job = app.job(&id).await;
    assert_eq!(job["files"][0]["status"], "complete");
    let checkpoint = job["files"][1]["bytes_done"].as_u64().unwrap();
    assert!(checkpoint > 0);
    assert_file(&app.file("first.bin"), &first);

    origin.release("second.bin");
    app.action(&id, "resume").await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_done"], 1_700_000);
    assert_file(&app.file("first.bin"), &first);
    assert_file(&app.file("second.bin"), &second);
    assert_eq!(origin.requests("first.bin").len(), 1, "not fetched again");
    let seen = origin.requests("second.bin");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range, Some(format!("bytes={checkpoint}-")));
}

#[tokio::test]
async fn a_pause_during_a_retry_after_is_immediate_and_the_host_wait_is_still_honoured() {
    let origin = Origin::start().await;
    let body = content(47, 100_000);
    origin.put("later.bin", body.clone());
    origin.set_faults(
        "later.bin",
        Faults {
            statuses: [(503, Some("2".into()))].into(),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let events = Events::subscribe(&app).await;
    let id = app.add(&origin.url("later.bin")).await;
    eventually("the worker to start waiting", || {
        !events.kind(&id, "job.retrying").is_empty()
    })
    .await;
    assert!(events.kind(&id, "job.retrying")[0]["retry_in_ms"].as_u64() >= Some(2_000));
    let asked = Instant::now();
    let (status, paused) = app.action(&id, "pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "the pause does not wait"
    );
    // The host asked for 2 s: a resume does not hammer it sooner (the wait is per host).
    app.action(&id, "resume").await;
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("later.bin"), &body);
    let seen = origin.requests("later.bin");
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_secs(2),
        "{:?}",
        seen[1].at - seen[0].at
    );
}

#[tokio::test]
async fn a_paused_download_of_unknown_length_resumes() {
    let origin = Origin::start().await;
    let body = content(48, 700_000);
    origin.put("chunked.bin", body.clone());
    origin.set_faults(
        "chunked.bin",
        Faults {
            no_content_length: true,
            hold_after: Some(400_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("chunked.bin")).await;
    eventually("the response to be held", || {
        origin.bytes_sent("chunked.bin") == 400_000
    })
    .await;
    app.wait_until(&id, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let (status, _) = app.action(&id, "pause").await;
    assert_eq!(status, 200);
    let job = app.job(&id).await;
    // Everything received was kept, and the size is still unknown.
    assert_eq!(job["files"][0]["bytes_done"], 400_000, "{job:#}");
    assert!(job["bytes_total"].is_null());

    origin.release("chunked.bin");
    app.action(&id, "resume").await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_total"], 700_000);
    assert_file(&app.file("chunked.bin"), &body);
    let seen = origin.requests("chunked.bin");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=400000-"));
}
