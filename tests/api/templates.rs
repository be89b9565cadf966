//! `url_template`: brace expressions expanded on the server, one file per URL; malformed and
//! too large templates are refused whole.

use reqwest::Method;
use serde_json::json;

use crate::contract::{all_jobs, assert_problem, request, send};
use crate::helpers::TestApp;
use crate::origin::{Origin, content};
use crate::support::{assert_file, id_of};

/// The bytes the origin serves for shard `n` (sizes differ so a mix-up cannot go unseen).
fn shard(n: u64) -> bytes::Bytes {
    content(1000 + n, 500 + (n as usize % 97) * 13)
}

#[tokio::test]
async fn a_template_of_a_thousand_files_downloads_every_one() {
    let origin = Origin::start().await;
    for n in 1..=1000 {
        origin.put(&format!("shards/part-{n:04}.bin"), shard(n));
    }
    let app = TestApp::spawn().await;
    let template = origin.url("shards/part-{0001..1000}.bin");
    let job = app
        .create_job(json!({ "url_template": template, "dest": "set" }))
        .await;
    let files = job["files"].as_array().unwrap();
    assert_eq!(files.len(), 1000);
    assert_eq!(files[0]["path"], "set/part-0001.bin");
    assert_eq!(files[999]["url"], origin.url("shards/part-1000.bin"));
    let done = app.wait_for(&id_of(&job), "completed").await;
    for (i, file) in done["files"].as_array().unwrap().iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(file["status"], "complete", "{file}");
        assert_eq!(file["path"], format!("set/part-{n:04}.bin"));
        assert_file(&app.file(&format!("set/part-{n:04}.bin")), &shard(n));
        let requests = origin.requests(&format!("shards/part-{n:04}.bin"));
        assert!(!requests.is_empty(), "part {n} was never fetched");
    }
}

#[tokio::test]
async fn lists_steps_and_products_expand_in_order() {
    let origin = Origin::start().await;
    for name in [
        "a-00.bin", "a-10.bin", "a-20.bin", "b-00.bin", "b-10.bin", "b-20.bin",
    ] {
        origin.put(
            name,
            content(name.len() as u64 + u64::from(name.as_bytes()[0]), 1000),
        );
    }
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url_template": origin.url("{a,b}-{00..20..10}.bin") }))
        .await;
    let paths: Vec<&str> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "a-00.bin", "a-10.bin", "a-20.bin", "b-00.bin", "b-10.bin", "b-20.bin"
        ]
    );
    app.wait_for(&id_of(&job), "completed").await;
}

#[tokio::test]
async fn malformed_or_too_large_templates_are_refused_and_nothing_is_queued() {
    let app = TestApp::spawn_with(|s| s.max_files_per_job = 100).await;
    let cases = [
        ("http://h/{1..3.bin", "invalid-url-template", "character 10"),
        ("http://h/1..3}.bin", "invalid-url-template", "character 14"),
        ("http://h/{a..3}.bin", "invalid-url-template", "\"a\""),
        ("http://h/{1..3..0}.bin", "invalid-url-template", "step"),
        ("http://h/{}.bin", "invalid-url-template", "empty list"),
        ("http://h/{1..101}.bin", "invalid-file-count", "101"),
        ("http://h/{1..10}{1..11}", "invalid-file-count", "110"),
        ("ftp://h/{1..3}", "unsupported-scheme", "ftp"),
    ];
    for (template, code, says) in cases {
        let reply = send(
            request(&app, Method::POST, "/v1/jobs").json(&json!({ "url_template": template })),
        )
        .await;
        let problem = assert_problem(&reply, 422, code);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{template}: {detail}");
    }
    for both in [
        json!({ "url_template": "http://h/{1..2}", "url": "http://h/x" }),
        json!({ "url_template": "http://h/{1..2}", "files": [{ "url": "http://h/x" }] }),
    ] {
        let reply = send(request(&app, Method::POST, "/v1/jobs").json(&both)).await;
        assert_problem(&reply, 422, "invalid-source");
    }
    let reply = send(
        request(&app, Method::POST, "/v1/jobs")
            .json(&json!({ "url_template": "http://h/{1..2}", "sha256": "a".repeat(64) })),
    )
    .await;
    assert_problem(&reply, 422, "invalid-sha256");
    assert!(all_jobs(&app).await.is_empty(), "nothing may be queued");
}
