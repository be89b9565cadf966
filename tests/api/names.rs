//! Names a server gives (`Content-Disposition`): sanitised into one safe component inside the
//! download root, `filename*` first; the URL's name without one; racing jobs under `rename`.

use serde_json::json;

use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content};
use crate::support::{assert_file, files_below, id_of};

/// Serves `body` at `path` with this `Content-Disposition`.
fn serve_named(origin: &Origin, path: &str, body: &bytes::Bytes, disposition: &str) {
    origin.put(path, body.clone());
    origin.set_faults(
        path,
        Faults {
            content_disposition: Some(disposition.to_owned()),
            ..Faults::default()
        },
    );
}

#[tokio::test]
async fn hostile_server_names_become_safe_names_inside_the_root() {
    let long = format!("{}.txt", "n".repeat(300));
    let cases: Vec<(String, String)> = vec![
        (
            "attachment; filename=\"../../etc/passwd\"".into(),
            "passwd".into(),
        ),
        (
            "attachment; filename=\"/etc/shadow\"".into(),
            "shadow".into(),
        ),
        (
            "attachment; filename=\"C:\\\\Windows\\\\evil.exe\"".into(),
            "evil.exe".into(),
        ),
        (
            "attachment; filename*=UTF-8''nul%00byte.txt".into(),
            "nul_byte.txt".into(),
        ),
        (
            "attachment; filename*=UTF-8''line%0Abreak.txt".into(),
            "line_break.txt".into(),
        ),
        (
            format!("attachment; filename=\"{long}\""),
            format!("{}.txt", "n".repeat(196)),
        ),
        (
            "attachment; filename*=UTF-8''%E2%82%AC%20rates.txt".into(),
            "€ rates.txt".into(),
        ),
        (
            "attachment; filename=\"plain.txt\"; filename*=UTF-8''star.txt".into(),
            "star.txt".into(),
        ),
        (
            "attachment; filename=\"naïve.txt\"".into(),
            "naïve.txt".into(),
        ),
        ("attachment; filename=\".hidden\"".into(), "hidden".into()),
        ("attachment; filename=\"CON.txt\"".into(), "_CON.txt".into()),
        // Never a partial file's name, which may be another download's `.part`.
        (
            "attachment; filename=\"other.bin.part\"".into(),
            "other.bin.part_".into(),
        ),
        // Nothing usable: the URL's name stands.
        (
            "attachment; filename=\"..\"".into(),
            "url-name-12.bin".into(),
        ),
    ];
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let mut expected = Vec::new();
    for (i, (disposition, name)) in cases.iter().enumerate() {
        // One of them large enough to go down the ranged path rather than in memory.
        let len = if i == 6 { 700_000 } else { 3_000 + i };
        let body = content(900 + i as u64, len);
        let path = format!("s/url-name-{i}.bin");
        serve_named(&origin, &path, &body, disposition);
        let job = app
            .create_job(json!({ "url": origin.url(&path), "dest": "got/" }))
            .await;
        let job = app.wait_for(&id_of(&job), "completed").await;
        let want = format!("got/{name}");
        assert_eq!(job["files"][0]["path"], want.as_str(), "{disposition}");
        assert_file(&app.file(&want), &body);
        expected.push(want);
    }
    // Nothing else anywhere below the root (no leftover `.part` under the URL's name either),
    // and nothing outside it.
    expected.sort();
    assert_eq!(files_below(&app.root), expected);
    assert!(!app.dir.path().join("etc").exists());
}

#[tokio::test]
async fn a_directory_dest_without_a_server_name_uses_the_url() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let body = content(950, 5_000);
    origin.put("u/r%C3%A9sum%C3%A9 v2.pdf", body.clone());
    origin.put("u/résumé v2.pdf", body.clone());
    origin.put("u/", body.clone());
    std::fs::create_dir_all(app.root.join("existing")).unwrap();
    for (url, dest, want) in [
        (
            origin.url("u/r%C3%A9sum%C3%A9%20v2.pdf"),
            "in/",
            "in/résumé v2.pdf",
        ),
        (origin.url("u/"), "existing", "existing/download"),
    ] {
        let job = app.create_job(json!({ "url": url, "dest": dest })).await;
        let job = app.wait_for(&id_of(&job), "completed").await;
        assert_eq!(job["files"][0]["path"], want);
        assert_file(&app.file(want), &body);
    }
}

#[tokio::test]
async fn a_given_name_is_not_replaced_by_the_servers() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let body = content(951, 4_000);
    serve_named(
        &origin,
        "g/a.bin",
        &body,
        "attachment; filename=\"server.bin\"",
    );
    let job = app
        .create_job(json!({ "files": [{ "url": origin.url("g/a.bin"), "path": "mine.bin" }] }))
        .await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["files"][0]["path"], "mine.bin");
    let job = app
        .create_job(json!({ "url": origin.url("g/a.bin"), "dest": "file.bin" }))
        .await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["files"][0]["path"], "file.bin");
    assert_eq!(files_below(&app.root), ["file.bin", "mine.bin"]);
}

#[tokio::test]
async fn jobs_racing_for_one_server_name_both_land_under_different_names() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let mut bodies = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4u64 {
        let body = content(960 + i, 300_000 + i as usize);
        let path = format!("r/{i}.bin");
        serve_named(&origin, &path, &body, "attachment; filename=\"same.bin\"");
        bodies.push(body);
    }
    for i in 0..4 {
        let job = app
            .create_job(
                json!({ "url": origin.url(&format!("r/{i}.bin")), "on_conflict": "rename" }),
            )
            .await;
        ids.push(id_of(&job));
    }
    let mut names = Vec::new();
    for (id, body) in ids.iter().zip(&bodies) {
        let job = app.wait_for(id, "completed").await;
        let path = job["files"][0]["path"].as_str().unwrap().to_owned();
        assert_file(&app.file(&path), body);
        names.push(path);
    }
    names.sort();
    assert_eq!(
        names,
        ["same (1).bin", "same (2).bin", "same (3).bin", "same.bin"]
    );
    assert_eq!(files_below(&app.root), names);
}

#[tokio::test]
async fn a_file_already_under_the_servers_name_is_cached() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    let body = content(970, 6_000);
    std::fs::write(app.file("named.bin"), &body).unwrap();
    serve_named(
        &origin,
        "c/url.bin",
        &body,
        "attachment; filename=\"named.bin\"",
    );
    let job = app
        .create_job(
            json!({ "url": origin.url("c/url.bin"), "sha256": crate::origin::sha256_hex(&body) }),
        )
        .await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["files"][0]["path"], "named.bin");
    assert_eq!(job["files"][0]["cached"], true);
    assert_eq!(files_below(&app.root), ["named.bin"]);
}

#[tokio::test]
async fn a_retried_file_keeps_the_alternative_name_it_was_given() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    std::fs::write(app.file("same.bin"), b"someone else's").unwrap();
    let good = content(971, 5_000);
    // First served wrong: the checksum fails the file after it was named.
    serve_named(
        &origin,
        "t/u.bin",
        &content(972, 5_000),
        "attachment; filename=\"same.bin\"",
    );
    let job = app
        .create_job(
            json!({ "url": origin.url("t/u.bin"), "sha256": crate::origin::sha256_hex(&good) }),
        )
        .await;
    let id = id_of(&job);
    let job = app.wait_for(&id, "failed").await;
    assert_eq!(job["files"][0]["path"], "same (1).bin", "{job}");
    serve_named(
        &origin,
        "t/u.bin",
        &good,
        "attachment; filename=\"same.bin\"",
    );
    let (status, _) = app.action(&id, "resume").await;
    assert_eq!(status, 200);
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["files"][0]["path"], "same (1).bin", "{job}");
    assert_file(&app.file("same (1).bin"), &good);
    assert_eq!(files_below(&app.root), ["same (1).bin", "same.bin"]);
}

#[tokio::test]
async fn a_server_name_that_exists_is_skipped_under_skip() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    std::fs::write(app.file("taken.bin"), b"mine").unwrap();
    serve_named(
        &origin,
        "k/u.bin",
        &content(973, 3_000),
        "attachment; filename=\"taken.bin\"",
    );
    let job = app
        .create_job(json!({ "url": origin.url("k/u.bin"), "on_conflict": "skip" }))
        .await;
    let job = app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(job["files"][0]["status"], "skipped");
    assert_eq!(job["files"][0]["path"], "taken.bin");
    assert_eq!(files_below(&app.root), ["taken.bin"]);
    assert_eq!(std::fs::read(app.file("taken.bin")).unwrap(), b"mine");
}
