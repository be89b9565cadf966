//! Files on disk: names, destinations, conflicts, cached files, cancellation clean-up, and
//! what the origin is sent.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content, sha256_hex};
use crate::support::{
    assert_absent, assert_file, eventually, files_below, id_of, part, requests_seen,
};

/// Submits `body` and waits for the job to end as `status`; returns the job.
async fn run(app: &TestApp, body: serde_json::Value, status: &str) -> serde_json::Value {
    let job = app.create_job(body).await;
    app.wait_for(&id_of(&job), status).await
}

#[tokio::test]
async fn names_come_from_the_url_percent_decoded() {
    let origin = Origin::start().await;
    let body = content(51, 20_000);
    // The origin sees the decoded path; the URL carries it encoded.
    origin.put("d/café menu.txt", body.clone());
    let app = TestApp::spawn().await;
    let url = origin.url("d/caf%C3%A9%20menu.txt");
    let job = run(&app, json!({ "url": url }), "completed").await;
    assert_eq!(job["files"][0]["path"], "café menu.txt");
    assert_file(&app.file("café menu.txt"), &body);

    // A query string is not part of the name.
    origin.put("d/q.bin", body.clone());
    let url = format!("{}?token=abc&x=1", origin.url("d/q.bin"));
    let job = run(&app, json!({ "url": url }), "completed").await;
    assert_eq!(job["files"][0]["path"], "q.bin");
    assert_file(&app.file("q.bin"), &body);
}

#[tokio::test]
async fn an_encoded_traversal_in_the_url_stays_inside_the_root() {
    let origin = Origin::start().await;
    let body = content(52, 10_000);
    origin.put("x/../../etc/passwd", body.clone());
    let app = TestApp::spawn().await;
    let url = format!("http://{}/x/..%2f..%2fetc%2fpasswd", origin.addr);
    let job = run(&app, json!({ "url": url }), "completed").await;
    assert_eq!(origin.requests("x/../../etc/passwd").len(), 1);
    let path = job["files"][0]["path"].as_str().unwrap();
    assert!(!path.contains('/') && path != ".." && path != ".", "{path}");
    let written = app.file(path);
    assert_eq!(
        written.canonicalize().unwrap().parent(),
        Some(app.root.as_path())
    );
    assert_file(&written, &body);
    // Nothing else anywhere in the daemon's directory, let alone outside it.
    assert_eq!(files_below(&app.root), [path]);
    assert!(!app.dir.path().join("etc").exists());
    assert!(!app.root.join("../../etc/passwd").exists());
}

#[tokio::test]
async fn dest_names_a_file_or_with_a_slash_a_directory() {
    let origin = Origin::start().await;
    let body = content(53, 30_000);
    origin.put("src/model.bin", body.clone());
    let app = TestApp::spawn().await;
    let url = origin.url("src/model.bin");

    let job = run(
        &app,
        json!({ "url": url, "dest": "out/renamed.dat" }),
        "completed",
    )
    .await;
    assert_eq!(job["files"][0]["path"], "out/renamed.dat");
    assert_file(&app.file("out/renamed.dat"), &body);

    let job = run(&app, json!({ "url": url, "dest": "sub/" }), "completed").await;
    assert_eq!(job["files"][0]["path"], "sub/model.bin");
    assert_file(&app.file("sub/model.bin"), &body);

    // An existing directory is a directory even without the slash.
    let job = run(&app, json!({ "url": url, "dest": "out" }), "completed").await;
    assert_eq!(job["files"][0]["path"], "out/model.bin");
    assert_eq!(
        files_below(&app.root),
        ["out/model.bin", "out/renamed.dat", "sub/model.bin"]
    );
}

#[tokio::test]
async fn rename_keeps_the_existing_file_and_numbers_the_new_one() {
    let origin = Origin::start().await;
    let body = content(54, 40_000);
    origin.put("name.ext", body.clone());
    let app = TestApp::spawn().await;
    std::fs::write(app.file("name.ext"), b"mine").unwrap();
    let job = run(&app, json!({ "url": origin.url("name.ext") }), "completed").await;
    assert_eq!(job["on_conflict"], "rename");
    assert_eq!(job["files"][0]["path"], "name (1).ext");
    assert_file(&app.file("name (1).ext"), &body);
    assert_eq!(std::fs::read(app.file("name.ext")).unwrap(), b"mine");
    // A second time, the next free number.
    let job = run(&app, json!({ "url": origin.url("name.ext") }), "completed").await;
    assert_eq!(job["files"][0]["path"], "name (2).ext");
    assert_file(&app.file("name (2).ext"), &body);
    assert_eq!(std::fs::read(app.file("name.ext")).unwrap(), b"mine");
}

#[tokio::test]
async fn overwrite_replaces_the_existing_file() {
    let origin = Origin::start().await;
    let body = content(55, 40_000);
    origin.put("over.bin", body.clone());
    let app = TestApp::spawn().await;
    std::fs::write(app.file("over.bin"), b"old bytes, longer or shorter").unwrap();
    let job = run(
        &app,
        json!({ "url": origin.url("over.bin"), "on_conflict": "overwrite" }),
        "completed",
    )
    .await;
    assert_eq!(job["files"][0]["path"], "over.bin");
    assert_file(&app.file("over.bin"), &body);
    assert_eq!(files_below(&app.root), ["over.bin"]);
}

#[tokio::test]
async fn skip_leaves_the_existing_file_untouched_and_fetches_nothing() {
    let origin = Origin::start().await;
    origin.put("keep.txt", content(56, 40_000));
    let app = TestApp::spawn().await;
    std::fs::write(app.file("keep.txt"), b"mine").unwrap();
    let job = run(
        &app,
        json!({ "url": origin.url("keep.txt"), "on_conflict": "skip" }),
        "completed",
    )
    .await;
    assert_eq!(job["files"][0]["status"], "skipped");
    assert_eq!(job["files"][0]["cached"], false);
    assert_eq!(std::fs::read(app.file("keep.txt")).unwrap(), b"mine");
    assert_eq!(files_below(&app.root), ["keep.txt"]);
    assert!(origin.requests("keep.txt").is_empty());
}

#[tokio::test]
async fn an_existing_file_with_the_checksum_is_cached_and_not_fetched() {
    let origin = Origin::start().await;
    let body = content(57, 300_000);
    origin.put("model.bin", body.clone());
    let app = TestApp::spawn().await;
    std::fs::write(app.file("model.bin"), &body).unwrap();
    let job = run(
        &app,
        json!({ "url": origin.url("model.bin"), "sha256": sha256_hex(&body) }),
        "completed",
    )
    .await;
    let file = &job["files"][0];
    assert_eq!(file["cached"], true, "{job:#}");
    assert_eq!(file["status"], "complete");
    assert_eq!(file["path"], "model.bin");
    assert_eq!(file["bytes_done"], 300_000);
    assert_eq!(job["bytes_done"], 300_000);
    assert!(
        origin.requests("model.bin").is_empty(),
        "nothing was fetched"
    );
    assert_eq!(files_below(&app.root), ["model.bin"]);

    // A file there with other bytes is not the one we want: download beside it.
    std::fs::write(app.file("model.bin"), b"other").unwrap();
    let job = run(
        &app,
        json!({ "url": origin.url("model.bin"), "sha256": sha256_hex(&body) }),
        "completed",
    )
    .await;
    assert_eq!(job["files"][0]["cached"], false);
    assert_eq!(job["files"][0]["path"], "model (1).bin");
    assert_file(&app.file("model (1).bin"), &body);
    assert_eq!(origin.requests("model.bin").len(), 1);
}

#[tokio::test]
async fn cancelling_a_running_job_removes_its_part_file() {
    let origin = Origin::start().await;
    origin.put("big.bin", content(58, 800_000));
    origin.set_faults(
        "big.bin",
        Faults {
            hold_after: Some(300_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("big.bin")).await;
    app.wait_until(&id, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let part = part(&app, "big.bin");
    assert!(part.exists());

    let (status, job) = app.action(&id, "cancel").await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    eventually("the .part to be removed", || !part.exists()).await;
    assert_absent(&app.file("big.bin"));
    assert!(
        files_below(&app.root).is_empty(),
        "{:?}",
        files_below(&app.root)
    );
    assert_eq!(app.job(&id).await["status"], "cancelled");
}

#[tokio::test]
async fn cancel_reaches_a_running_download_at_once() {
    let origin = Origin::start().await;
    origin.put("slow.bin", content(59, 4_000_000));
    origin.set_faults(
        "slow.bin",
        Faults {
            rate: Some(1_000_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("slow.bin")).await;
    app.wait_until(&id, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(origin.open_responses("slow.bin"), 1);

    let asked = Instant::now();
    let (status, job) = app.action(&id, "cancel").await;
    let answered = asked.elapsed();
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    // The cancel waits for the worker to stop (up to a few seconds if it cannot be reached).
    assert!(
        answered < Duration::from_secs(2),
        "cancel took {answered:?}"
    );
    // The connection is gone: the origin stops sending (it counts bytes only while a response
    // is open, so once none is, `bytes_sent` is final).
    let sent_at_answer = origin.bytes_sent("slow.bin");
    let closing = Instant::now();
    while origin.open_responses("slow.bin") > 0 {
        assert!(
            closing.elapsed() < Duration::from_secs(2),
            "the origin is still sending"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = origin.bytes_sent("slow.bin");
    assert!(sent < 4_000_000, "the whole file was sent: {sent}");
    assert!(
        sent - sent_at_answer <= 256 * 1024,
        "{} bytes went out after the cancel returned",
        sent - sent_at_answer
    );
    assert_eq!(
        origin.requests("slow.bin").len(),
        1,
        "and nothing was retried"
    );
    assert_absent(&part(&app, "slow.bin"));
    assert_absent(&app.file("slow.bin"));
}

#[tokio::test]
async fn the_access_token_and_headers_reach_the_origin_on_every_request() {
    let origin = Origin::start().await;
    let body = content(60, 500_000);
    origin.put("private.bin", body.clone());
    origin.set_faults(
        "private.bin",
        Faults {
            drop_after: Some(200_000),
            drop_times: 1,
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({
            "url": origin.url("private.bin"),
            "access_token": "s3cret-token",
            "headers": { "X-Api-Key": "key-1", "Cookie": "session=abc" },
        }))
        .await;
    // The API says they exist but never shows the values.
    assert_eq!(job["has_access_token"], true);
    let shown = job.to_string();
    assert!(
        !shown.contains("s3cret-token")
            && !shown.contains("key-1")
            && !shown.contains("session=abc")
    );

    app.wait_for(&id_of(&job), "completed").await;
    assert_file(&app.file("private.bin"), &body);
    let seen = requests_seen(&origin, "private.bin", 2).await;
    assert_eq!(seen.len(), 2, "the drop was resumed");
    for request in &seen {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer s3cret-token")
        );
        assert_eq!(request.header("x-api-key"), Some("key-1"));
        assert_eq!(request.header("cookie"), Some("session=abc"));
    }
    assert!(seen[1].range_start() > 0);
}

#[tokio::test]
async fn cancelling_a_paused_job_removes_its_part_file() {
    let origin = Origin::start().await;
    origin.put("paused.bin", content(61, 800_000));
    origin.set_faults(
        "paused.bin",
        Faults {
            hold_after: Some(300_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let id = app.add(&origin.url("paused.bin")).await;
    app.wait_until(&id, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    let (status, _) = app.action(&id, "pause").await;
    assert_eq!(status, 200);
    let part = part(&app, "paused.bin");
    assert!(part.exists(), "a pause keeps the .part");

    let (status, job) = app.action(&id, "cancel").await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    eventually("the .part to be removed", || !part.exists()).await;
    assert!(files_below(&app.root).is_empty());
}

#[tokio::test]
async fn two_running_jobs_never_share_a_destination() {
    let origin = Origin::start().await;
    let (a, b) = (content(62, 400_000), content(63, 500_000));
    origin.put("a/same.bin", a.clone());
    origin.put("b/same.bin", b.clone());
    for path in ["a/same.bin", "b/same.bin"] {
        origin.set_faults(
            path,
            Faults {
                hold_after: Some(100_000),
                ..Faults::default()
            },
        );
    }
    let app = TestApp::spawn().await;
    let first = app.add(&origin.url("a/same.bin")).await;
    requests_seen(&origin, "a/same.bin", 1).await;
    let second = app.add(&origin.url("b/same.bin")).await;
    requests_seen(&origin, "b/same.bin", 1).await;
    origin.release("a/same.bin");
    origin.release("b/same.bin");
    let first = app.wait_for(&first, "completed").await;
    let second = app.wait_for(&second, "completed").await;
    assert_eq!(first["files"][0]["path"], "same.bin");
    assert_eq!(second["files"][0]["path"], "same (1).bin");
    assert_file(&app.file("same.bin"), &a);
    assert_file(&app.file("same (1).bin"), &b);
    assert_eq!(files_below(&app.root), ["same (1).bin", "same.bin"]);
}

#[tokio::test]
async fn a_download_that_fails_before_any_byte_leaves_the_name_free() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let failed = app.add(&origin.url("data.bin")).await;
    app.wait_for(&failed, "failed").await;
    // No empty `.part` is left to outlive the job and take the name.
    assert!(
        files_below(&app.root).is_empty(),
        "{:?}",
        files_below(&app.root)
    );
    let (status, _) = app
        .call(reqwest::Method::DELETE, &format!("/v1/jobs/{failed}"), None)
        .await;
    assert_eq!(status, 204);

    let body = content(64, 5_000);
    origin.put("data.bin", body.clone());
    let job = run(&app, json!({ "url": origin.url("data.bin") }), "completed").await;
    assert_eq!(job["files"][0]["path"], "data.bin");
    assert_file(&app.file("data.bin"), &body);
    assert_eq!(files_below(&app.root), ["data.bin"]);
}

#[tokio::test]
async fn a_symlink_planted_after_submission_is_not_followed() {
    let origin = Origin::start().await;
    origin.put("blocker.bin", content(65, 100_000));
    origin.set_faults(
        "blocker.bin",
        Faults {
            hold_after: Some(10_000),
            ..Faults::default()
        },
    );
    origin.put("x.bin", content(66, 10_000));
    let app = TestApp::spawn_with(|s| s.max_concurrent_jobs = 1).await;
    let blocker = app.add(&origin.url("blocker.bin")).await;
    requests_seen(&origin, "blocker.bin", 1).await;
    let job = app
        .create_job(json!({ "url": origin.url("x.bin"), "dest": "planted/" }))
        .await;
    assert_eq!(job["files"][0]["path"], "planted/x.bin");
    // While the job waits, its directory becomes a link to outside the root.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), app.file("planted")).unwrap();
    origin.release("blocker.bin");
    app.wait_for(&blocker, "completed").await;

    let failed = app.wait_for(&id_of(&job), "failed").await;
    assert_eq!(failed["error"]["type"], "invalid-destination", "{failed:#}");
    assert!(origin.requests("x.bin").is_empty(), "nothing was fetched");
    assert!(files_below(outside.path()).is_empty());
}

/// A paused job owns its destination and `.part`: another job for the same name never
/// writes into it. With `overwrite` (or `skip`) it fails with `path-busy`; with `rename` it
/// takes `x (1).bin`. The paused job then resumes on its own bytes only.
#[tokio::test]
async fn a_paused_jobs_partial_file_is_not_taken_by_another_job() {
    let origin = Origin::start().await;
    let (a, b) = (content(67, 800_000), content(68, 800_000));
    origin.put("a/x.bin", a.clone());
    origin.put("b/x.bin", b.clone());
    let hold = Faults {
        hold_after: Some(300_000),
        ..Faults::default()
    };
    origin.set_faults("a/x.bin", hold);
    let app = TestApp::spawn().await;
    let first = app.add(&origin.url("a/x.bin")).await;
    app.wait_until(&first, "bytes on disk", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    app.action(&first, "pause").await;
    let overwrite = app
        .create_job(json!({ "url": origin.url("b/x.bin"), "on_conflict": "overwrite" }))
        .await;
    let failed = app.wait_for(&id_of(&overwrite), "failed").await;
    assert_eq!(failed["error"]["type"], "path-busy", "{failed:#}");
    assert!(
        origin.requests("b/x.bin").is_empty(),
        "nothing was fetched for it"
    );
    let renamed = app
        .create_job(json!({ "url": origin.url("b/x.bin") }))
        .await;
    let renamed = app.wait_for(&id_of(&renamed), "completed").await;
    assert_eq!(renamed["files"][0]["path"], "x (1).bin");
    assert_file(&app.file("x (1).bin"), &b);
    origin.release("a/x.bin");
    app.action(&first, "resume").await;
    let first = app.wait_for(&first, "completed").await;
    let path = first["files"][0]["path"].as_str().unwrap();
    assert_eq!(path, "x.bin");
    assert_file(&app.file(path), &a);
}

/// A user's file that happens to be named like another download's `.part` is never opened,
/// emptied, renamed or deleted by that download.
#[tokio::test]
async fn a_file_named_like_a_partial_file_is_never_touched() {
    let origin = Origin::start().await;
    let mine = content(81, 50_000);
    let app = TestApp::spawn().await;
    // Put there by another program: haul itself never names a download `*.part`.
    std::fs::write(app.file("model.bin.part"), &mine).unwrap();
    let refused = app
        .post(
            "/v1/jobs",
            json!({ "url": origin.url("a.bin"), "dest": "x.part" }),
        )
        .await;
    assert_eq!(refused.0, 422, "{}", refused.1);
    // A failing download of `model.bin` with `skip`: it must not delete `model.bin.part`.
    let failed = run(
        &app,
        json!({ "url": origin.url("missing/model.bin"), "on_conflict": "skip" }),
        "failed",
    )
    .await;
    assert_eq!(failed["error"]["type"], "path-busy", "{failed:#}");
    assert_file(&app.file("model.bin.part"), &mine);
    // A working one with `overwrite` fails the same way; with `rename` it picks another name.
    origin.put("b/model.bin", content(82, 40_000));
    let url = origin.url("b/model.bin");
    let failed = run(
        &app,
        json!({ "url": url, "on_conflict": "overwrite" }),
        "failed",
    )
    .await;
    assert_eq!(failed["error"]["type"], "path-busy", "{failed:#}");
    let renamed = run(&app, json!({ "url": url }), "completed").await;
    assert_eq!(renamed["files"][0]["path"], "model (1).bin");
    assert_file(&app.file("model.bin.part"), &mine);
    assert!(!app.file("model.bin").exists());
}

/// A failed job that kept nothing gives its name up. Resumed later, it does not take it back
/// from the job that owns it now (which is paused with bytes in the `.part`): it downloads to
/// another name, and the owner completes with only its own bytes.
#[tokio::test]
async fn a_resumed_failed_job_does_not_take_back_a_name_another_job_owns() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let j = id_of(
        &app.create_job(json!({ "url": origin.url("j.bin"), "dest": "x.bin" }))
            .await,
    );
    app.wait_for(&j, "failed").await;
    let k_body = content(83, 2_000_000);
    origin.put("k.bin", k_body.clone());
    let hold = Faults {
        hold_after: Some(300_000),
        ..Faults::default()
    };
    origin.set_faults("k.bin", hold);
    let k = id_of(
        &app.create_job(json!({ "url": origin.url("k.bin"), "dest": "x.bin" }))
            .await,
    );
    app.wait_until(&k, "K's first bytes", |job| {
        job["files"][0]["bytes_done"].as_u64() >= Some(300_000)
    })
    .await;
    app.action(&k, "pause").await;
    let j_body = content(84, 1_000_000);
    origin.put("j.bin", j_body.clone());
    app.action(&j, "resume").await;
    let j_done = app.wait_for(&j, "completed").await;
    assert_eq!(j_done["files"][0]["path"], "x (1).bin", "{j_done:#}");
    assert_file(&app.file("x (1).bin"), &j_body);
    origin.release("k.bin");
    app.action(&k, "resume").await;
    let k_done = app.wait_for(&k, "completed").await;
    assert_eq!(k_done["files"][0]["path"], "x.bin");
    assert_file(&app.file("x.bin"), &k_body);
}

/// Redirects are followed, but the job's credentials (its token and its headers) go only to
/// the origin the job named: not to another host, port or scheme it is redirected to.
#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    let (named, other) = (Origin::start().await, Origin::start().await);
    let body = content(85, 30_000);
    other.put("x.bin", body.clone());
    named.put("x.bin", body.clone());
    for (path, target) in [("away", other.url("x.bin")), ("home", "/x.bin".to_owned())] {
        named.put(path, content(0, 1));
        let redirect = Faults {
            redirect_to: Some(target),
            ..Faults::default()
        };
        named.set_faults(path, redirect);
    }
    let app = TestApp::spawn().await;
    let secret = json!({ "access_token": "TOKEN-1", "headers": { "X-Api-Key": "KEY-1" } });
    for (path, dest) in [("away", "away.bin"), ("home", "home.bin")] {
        let mut job = secret.clone();
        job["url"] = json!(named.url(path));
        job["dest"] = json!(dest);
        run(&app, job, "completed").await;
        assert_file(&app.file(dest), &body);
    }
    let carried = |seen: &crate::origin::Seen| {
        (
            seen.authorization.clone(),
            seen.header("x-api-key").map(str::to_owned),
        )
    };
    let first_hop = &named.requests("away")[0];
    assert_eq!(
        carried(first_hop),
        (Some("Bearer TOKEN-1".into()), Some("KEY-1".into()))
    );
    let other_hop = &other.requests("x.bin")[0];
    assert_eq!(
        carried(other_hop),
        (None, None),
        "nothing secret reaches another origin"
    );
    let same_origin_hop = &named.requests("x.bin")[0];
    assert_eq!(
        carried(same_origin_hop),
        (Some("Bearer TOKEN-1".into()), Some("KEY-1".into())),
        "a redirect within the origin keeps them"
    );
}

/// A redirect loop ends the job with `too-many-redirects`, without a file.
#[tokio::test]
async fn a_redirect_loop_fails_cleanly() {
    let origin = Origin::start().await;
    origin.put("loop", content(0, 1));
    let redirect = Faults {
        redirect_to: Some("/loop".into()),
        ..Faults::default()
    };
    origin.set_faults("loop", redirect);
    let app = TestApp::spawn().await;
    let failed = run(&app, json!({ "url": origin.url("loop") }), "failed").await;
    assert_eq!(failed["error"]["type"], "too-many-redirects", "{failed:#}");
    assert_eq!(
        origin.requests("loop").len(),
        11,
        "the first request and 10 redirects"
    );
    assert!(
        files_below(&app.root).is_empty(),
        "{:?}",
        files_below(&app.root)
    );
}

#[tokio::test]
async fn a_files_own_headers_go_with_it_over_the_jobs_and_are_never_shown() {
    let origin = Origin::start().await;
    let (one, two) = (content(61, 10_000), content(62, 10_000));
    origin.put("one.bin", one.clone());
    origin.put("two.bin", two.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({
            "files": [
                {
                    "url": origin.url("one.bin"),
                    "headers": { "X-File": "file-one", "Cookie": "session=file-cookie" },
                },
                { "url": origin.url("two.bin") },
            ],
            "headers": { "X-Job": "job-wide", "Cookie": "session=job-cookie" },
        }))
        .await;
    let id = id_of(&job);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("one.bin"), &one);
    assert_file(&app.file("two.bin"), &two);
    let first = &requests_seen(&origin, "one.bin", 1).await[0];
    assert_eq!(first.header("x-file"), Some("file-one"));
    assert_eq!(first.header("cookie"), Some("session=file-cookie"));
    assert_eq!(first.header("x-job"), Some("job-wide"));
    let second = &requests_seen(&origin, "two.bin", 1).await[0];
    assert_eq!(second.header("x-file"), None);
    assert_eq!(second.header("cookie"), Some("session=job-cookie"));
    // Neither the submission's answer nor the job as read later shows a value.
    let (_, read) = app.get(&format!("/v1/jobs/{id}")).await;
    for shown in [job.to_string(), read.to_string()] {
        assert!(
            !shown.contains("file-one") && !shown.contains("file-cookie"),
            "{shown}"
        );
    }
}
