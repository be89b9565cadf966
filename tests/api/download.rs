//! Downloads through the API: what lands on disk, how the job ends, and what the origin saw.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content, sha256_hex};
use crate::support::{Events, assert_absent, assert_file, id_of, part, requests_seen};

#[tokio::test]
async fn a_plain_download_is_complete_and_fetched_once() {
    let origin = Origin::start().await;
    let body = content(11, 500_000);
    origin.put("plain.bin", body.clone());
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("plain.bin")).await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_done"], 500_000);
    assert_eq!(job["bytes_total"], 500_000);
    assert_eq!(job["progress"], 1.0);
    assert!(job["error"].is_null());
    let file = &job["files"][0];
    assert_eq!(file["status"], "complete");
    assert_eq!(file["cached"], false);
    assert_eq!(file["bytes_done"], 500_000);
    assert_file(&app.file("plain.bin"), &body);
    assert_absent(&part(&app, "plain.bin"));
    let seen = origin.requests("plain.bin");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].range.as_deref(),
        Some("bytes=0-"),
        "the first request probes for ranges"
    );
}

#[tokio::test]
async fn an_unknown_length_download_learns_its_size_at_the_end() {
    let origin = Origin::start().await;
    let body = content(12, 600_000);
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
    // Halfway through, the size is still unknown: no total, no percentage.
    let running = app
        .wait_until(&id, "bytes on disk", |job| {
            job["files"][0]["bytes_done"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(running["status"], "running");
    assert!(running["bytes_total"].is_null(), "{running:#}");
    assert!(running["progress"].is_null(), "{running:#}");
    assert!(running["files"][0]["bytes_total"].is_null());
    origin.release("chunked.bin");
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_total"], 600_000);
    assert_eq!(job["files"][0]["bytes_total"], 600_000);
    assert_eq!(job["bytes_done"], 600_000);
    assert_file(&app.file("chunked.bin"), &body);
    assert_eq!(origin.requests("chunked.bin").len(), 1);
}

#[tokio::test]
async fn empty_files_complete_with_or_without_a_length() {
    let origin = Origin::start().await;
    origin.put("empty.bin", content(23, 0));
    origin.put("empty-chunked.bin", content(23, 0));
    origin.set_faults(
        "empty-chunked.bin",
        Faults {
            no_content_length: true,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    for name in ["empty.bin", "empty-chunked.bin"] {
        let job = app
            .create_job(json!({ "url": origin.url(name), "sha256": sha256_hex(b"") }))
            .await;
        let job = app.wait_for(&id_of(&job), "completed").await;
        assert_eq!(job["bytes_total"], 0, "{job:#}");
        assert_eq!(job["progress"], 1.0);
        assert_file(&app.file(name), b"");
        assert_absent(&part(&app, name));
    }
}

#[tokio::test]
async fn without_validators_a_broken_download_starts_over_instead_of_resuming() {
    let origin = Origin::start().await;
    let body = content(13, 700_000);
    origin.put("plain.bin", body.clone());
    origin.set_faults(
        "plain.bin",
        Faults {
            no_validators: true,
            drop_after: Some(300_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app
        .create_job(json!({ "url": origin.url("plain.bin"), "sha256": sha256_hex(&body) }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["bytes_done"], 700_000);
    assert_file(&app.file("plain.bin"), &body);
    let seen = origin.requests("plain.bin");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].status, 206);
    // Nothing identifies the version: resuming would risk stitching two versions together,
    // so the second request starts from byte 0 again.
    assert_eq!(seen[1].range.as_deref(), Some("bytes=0-"));
    assert_eq!(seen[1].if_range, None);
    assert_eq!(seen[1].status, 206);
}

#[tokio::test]
async fn a_multi_file_job_puts_every_file_in_its_directory() {
    let origin = Origin::start().await;
    let one = content(14, 300_000);
    let two = content(15, 200_000);
    let three = content(16, 1);
    origin.put("a/one.bin", one.clone());
    origin.put("b/two.bin", two.clone());
    origin.put("c/three", three.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({
            "dest": "set",
            "files": [
                { "url": origin.url("a/one.bin"), "path": "nested/first.bin", "sha256": sha256_hex(&one) },
                { "url": origin.url("b/two.bin") },
                { "url": origin.url("c/three"), "sha256": sha256_hex(&three) },
            ],
        }))
        .await;
    assert_eq!(job["file_count"], 3);
    let job = app.wait_for(&id_of(&job), "completed").await;
    let paths: Vec<_> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            ("set/nested/first.bin", "complete"),
            ("set/two.bin", "complete"),
            ("set/three", "complete"),
        ]
    );
    assert_eq!(job["bytes_done"], 500_001);
    assert_eq!(job["bytes_total"], 500_001);
    assert_file(&app.file("set/nested/first.bin"), &one);
    assert_file(&app.file("set/two.bin"), &two);
    assert_file(&app.file("set/three"), &three);
    assert_eq!(
        crate::support::files_below(&app.root),
        ["set/nested/first.bin", "set/three", "set/two.bin"]
    );
}

#[tokio::test]
async fn one_failing_file_fails_the_job_but_the_others_complete() {
    let origin = Origin::start().await;
    let good = content(17, 100_000);
    origin.put("good.bin", good.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({
            "files": [{ "url": origin.url("missing.bin") }, { "url": origin.url("good.bin") }],
        }))
        .await;
    let job = app.wait_for(&id_of(&job), "failed").await;
    assert_eq!(job["error"]["type"], "files-failed", "{job:#}");
    assert_eq!(job["files"][0]["status"], "failed");
    assert_eq!(job["files"][0]["error"]["http_status"], 404);
    assert_eq!(job["files"][1]["status"], "complete");
    assert_file(&app.file("good.bin"), &good);
    assert_absent(&app.file("missing.bin"));
}

#[tokio::test]
async fn a_404_fails_at_once_without_retries() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("nowhere/gone.bin")).await;
    let job = app.wait_for(&id, "failed").await;
    assert_eq!(job["error"]["type"], "http-status", "{job:#}");
    assert_eq!(job["error"]["http_status"], 404);
    assert_eq!(job["files"][0]["status"], "failed");
    assert!(!job["finished_at"].is_null());
    assert_eq!(origin.requests("nowhere/gone.bin").len(), 1);
    assert_absent(&app.file("gone.bin"));
    assert_absent(&part(&app, "gone.bin"));
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_no_sooner_than_asked() {
    let origin = Origin::start().await;
    let body = content(18, 200_000);
    origin.put("busy.bin", body.clone());
    origin.set_faults(
        "busy.bin",
        Faults {
            statuses: [(503, Some("1".into())), (503, Some("1".into()))].into(),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let events = Events::subscribe(&app).await;
    let id = app.add(&origin.url("busy.bin")).await;
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("busy.bin"), &body);

    let seen = origin.requests("busy.bin");
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 206]);
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    }
    let retrying = events.kind(&id, "job.retrying");
    assert_eq!(retrying.len(), 2, "{retrying:#?}");
    for event in retrying {
        assert_eq!(event["error"]["http_status"], 503);
        assert!(event["retry_in_ms"].as_u64().unwrap() >= 1000, "{event}");
    }
}

#[tokio::test]
async fn a_persistent_500_fails_after_the_configured_attempts() {
    let origin = Origin::start().await;
    origin.put("broken.bin", content(19, 10_000));
    origin.set_faults(
        "broken.bin",
        Faults {
            statuses: std::iter::repeat_n((500, None), 10).collect(),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.retry_attempts = 3).await;
    let id = app.add(&origin.url("broken.bin")).await;
    let job = app.wait_for(&id, "failed").await;
    assert_eq!(job["error"]["type"], "http-status", "{job:#}");
    assert_eq!(job["error"]["http_status"], 500);
    assert_eq!(origin.requests("broken.bin").len(), 3);
    assert_absent(&app.file("broken.bin"));
    assert_absent(&part(&app, "broken.bin"));
}

#[tokio::test]
async fn a_checksum_mismatch_fails_and_leaves_nothing() {
    let origin = Origin::start().await;
    let body = content(20, 400_000);
    origin.put("wrong.bin", body.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({
            "url": origin.url("wrong.bin"),
            "sha256": sha256_hex(b"something else"),
        }))
        .await;
    let job = app.wait_for(&id_of(&job), "failed").await;
    assert_eq!(job["error"]["type"], "checksum-mismatch", "{job:#}");
    assert!(job["error"]["http_status"].is_null());
    assert_eq!(job["files"][0]["status"], "failed");
    assert_absent(&app.file("wrong.bin"));
    assert_absent(&part(&app, "wrong.bin"));
    assert_eq!(
        origin.requests("wrong.bin").len(),
        1,
        "a wrong checksum is not retried"
    );
}

#[tokio::test]
async fn with_one_slot_jobs_run_by_priority_then_age() {
    let origin = Origin::start().await;
    origin.put("blocker.bin", content(21, 200_000));
    origin.set_faults(
        "blocker.bin",
        Faults {
            hold_after: Some(50_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.max_concurrent_jobs = 1).await;
    let blocker = app.add(&origin.url("blocker.bin")).await;
    requests_seen(&origin, "blocker.bin", 1).await;

    // (name, priority) in submission order; lower numbers first, ties by age.
    let queued = [
        ("default-older", 10),
        ("urgent", -5),
        ("five-first", 5),
        ("default-newer", 10),
        ("five-second", 5),
        ("one", 1),
    ];
    let mut ids = Vec::new();
    for (name, priority) in queued {
        origin.put(name, content(22, 1000));
        let job = app
            .create_job(json!({ "url": origin.url(name), "priority": priority }))
            .await;
        assert_eq!(job["status"], "queued");
        ids.push(id_of(&job));
    }
    assert_eq!(
        app.job(&ids[0]).await["status"],
        "queued",
        "the slot is taken"
    );
    // A new priority counts for the queue order: the newest 10 moves ahead of the 1.
    let (status, patched) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/jobs/{}", ids[3]),
            Some(json!({ "priority": 0 })),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["priority"], 0, "{patched}");
    origin.release("blocker.bin");
    app.wait_for(&blocker, "completed").await;
    let mut started = Vec::new();
    for id in &ids {
        let job = app.wait_for(id, "completed").await;
        let at = job["started_at"].as_str().unwrap();
        started.push(chrono::DateTime::parse_from_rfc3339(at).unwrap());
    }

    let order: Vec<String> = origin
        .all_requests()
        .iter()
        .map(|s| s.path.trim_start_matches('/').to_owned())
        .collect();
    assert_eq!(
        order,
        [
            "blocker.bin",
            "urgent",
            "default-newer",
            "one",
            "five-first",
            "five-second",
            "default-older",
        ]
    );
    // started_at agrees: indexes into `queued` in the expected order.
    let expected = [1, 3, 5, 2, 4, 0];
    for pair in expected.windows(2) {
        assert!(started[pair[0]] <= started[pair[1]], "{started:?}");
    }
}

#[tokio::test]
async fn a_download_longer_than_its_lease_keeps_it_by_heartbeat() {
    let origin = Origin::start().await;
    let body = content(24, 1_500_000);
    origin.put("long.bin", body.clone());
    origin.set_faults(
        "long.bin",
        Faults {
            rate: Some(1_000_000),
            ..Faults::default()
        },
    );
    // A 1 s lease (below what the config file allows, to keep the test short) renewed every
    // third of a second, and requeue sweeps every half second: a missed renewal would requeue
    // the job and start a second run.
    let app = TestApp::spawn_with(|s| s.lease_secs = 1).await;
    let id = app.add(&origin.url("long.bin")).await;
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_file(&app.file("long.bin"), &body);
    assert_eq!(origin.requests("long.bin").len(), 1);
}
