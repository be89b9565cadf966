//! Mirrors: a file's ranges are spread over its URLs; a mirror that fails, or serves another
//! version, is dropped and the others finish the file; the file fails only when every URL has.

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content};
use crate::support::{assert_file, id_of};

const LEN: usize = 3_000_000;

/// Throttled responses, so more connections pay and the file goes down many ranges.
fn throttled() -> Faults {
    Faults {
        rate: Some(4_000_000),
        ..Faults::default()
    }
}

/// Two origins serving the same bytes at `/f.bin` (the second with the first's ETag, as
/// mirrors of one release do: the ETag is derived from the bytes).
async fn two_mirrors(seed: u64) -> (Origin, Origin, bytes::Bytes) {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let body = content(seed, LEN);
    for origin in [&a, &b] {
        origin.put("f.bin", body.clone());
        origin.set_faults("f.bin", throttled());
    }
    (a, b, body)
}

fn job(primary: &Origin, mirrors: &[&Origin]) -> Value {
    json!({
        "url": primary.url("f.bin"),
        "mirrors": mirrors.iter().map(|m| m.url("f.bin")).collect::<Vec<_>>(),
        "min_segment_size": 65_536,
    })
}

/// Ranges (206 answers) each origin served.
fn ranges(origin: &Origin) -> usize {
    origin
        .requests("f.bin")
        .iter()
        .filter(|s| s.status == 206)
        .count()
}

#[tokio::test]
async fn ranges_are_spread_over_the_mirrors() {
    let (a, b, body) = two_mirrors(501).await;
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(job(&a, &[&b])).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("f.bin"), &body);
    assert!(ranges(&a) >= 2, "the primary served ranges");
    assert!(ranges(&b) >= 2, "the mirror served ranges too");
}

#[tokio::test]
async fn a_mirror_that_fails_is_dropped_and_the_others_finish() {
    let (a, b, body) = two_mirrors(502).await;
    // The mirror serves a few ranges, then answers 404 for good.
    b.set_faults_after(
        "f.bin",
        2,
        Faults {
            statuses: std::iter::repeat_n((404, None), 1000).collect(),
            ..throttled()
        },
    );
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(job(&a, &[&b])).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("f.bin"), &body);
    let refused = b
        .requests("f.bin")
        .iter()
        .filter(|s| s.status == 404)
        .count();
    assert!(refused >= 1, "the mirror did fail");
}

#[tokio::test]
async fn a_mirror_serving_another_version_is_dropped() {
    let (a, b, body) = two_mirrors(503).await;
    // Same length, other bytes (so another ETag): its ranges must never reach the file.
    b.put("f.bin", content(999, LEN));
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(job(&a, &[&b])).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("f.bin"), &body);
    assert!(!b.requests("f.bin").is_empty(), "the mirror was asked");
    assert_eq!(ranges(&b), 0, "nothing of the other version was used");
}

#[tokio::test]
async fn a_dead_primary_leaves_the_file_to_its_mirror() {
    let (a, b, body) = two_mirrors(504).await;
    let dead = Origin::start().await; // serves nothing: 404
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(job(&dead, &[&b, &a])).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("f.bin"), &body);
    assert!(ranges(&a) + ranges(&b) >= 2);
}

#[tokio::test]
async fn the_file_fails_only_when_every_mirror_has() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_job(job(&a, &[&b])).await);
    let failed = app.wait_for(&id, "failed").await;
    assert_eq!(
        failed["files"][0]["error"]["http_status"], 404,
        "{failed:#}"
    );
    assert!(!a.requests("f.bin").is_empty() && !b.requests("f.bin").is_empty());
}

#[tokio::test]
async fn mirrors_belong_to_a_single_url_or_to_each_file() {
    let app = TestApp::spawn().await;
    let both = json!({ "files": [{ "url": "http://h/a" }], "mirrors": ["http://m/a"] });
    let (status, problem) = app.post("/v1/jobs", both).await;
    assert_eq!(
        (status.as_u16(), &problem["code"]),
        (422, &json!("invalid-source"))
    );
    let bad = json!({ "url": "http://h/a", "mirrors": ["ftp://m/a"] });
    let (status, problem) = app.post("/v1/jobs", bad).await;
    assert_eq!(
        (status.as_u16(), &problem["code"]),
        (422, &json!("unsupported-scheme"))
    );
    let per_file = json!({ "files": [{ "url": "http://h/a", "mirrors": ["http://m/a"] }] });
    app.create_job(per_file).await;
}

#[tokio::test]
async fn a_mirror_on_another_origin_gets_none_of_the_jobs_credentials() {
    let (a, b, body) = two_mirrors(506).await;
    let app = TestApp::spawn().await;
    let mut request = job(&a, &[&b]);
    request["access_token"] = json!("JOB-TOKEN");
    request["headers"] = json!({ "X-Api-Key": "JOB-KEY" });
    let id = id_of(&app.create_job(request).await);
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("f.bin"), &body);
    assert!(ranges(&b) >= 1, "the mirror served ranges");
    // The token is for the job's URL's origin: the mirror (another port) never sees it.
    for seen in a.requests("f.bin") {
        assert_eq!(seen.authorization.as_deref(), Some("Bearer JOB-TOKEN"));
        assert_eq!(seen.header("x-api-key"), Some("JOB-KEY"));
    }
    for seen in b.requests("f.bin") {
        assert_eq!(seen.authorization, None);
        assert_eq!(seen.header("x-api-key"), None);
    }
}
