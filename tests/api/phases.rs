//! Per-file phases as the API shows them: `hashing_existing` while an existing file is
//! compared with the job's checksum (and `cached` after), `downloading` while bytes arrive —
//! also for a small file fetched into memory, which the store records only once it is done.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp};
use crate::origin::{Faults, Origin, content, sha256_hex};
use crate::support::{assert_file, id_of};

/// Polls the job until `done` holds, collecting every status its first file showed.
async fn watch_file(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    loop {
        let job = app.job(id).await;
        seen.insert(job["files"][0]["status"].as_str().unwrap().to_owned());
        if done(&job) {
            return seen;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out; saw {seen:?}: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn an_existing_file_is_hashed_and_found_cached() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    // Large enough that hashing it takes a while to watch.
    let body = bytes::Bytes::from(vec![42u8; 16 << 20]);
    std::fs::write(app.file("have.bin"), &body).unwrap();
    origin.put("have.bin", body.clone());
    let job = app
        .create_job(json!({ "url": origin.url("have.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let id = id_of(&job);
    let seen = watch_file(&app, &id, |job| job["status"] == "completed").await;
    assert!(seen.contains("hashing_existing"), "{seen:?}");
    let job = app.job(&id).await;
    assert_eq!(job["files"][0]["status"], "complete");
    assert_eq!(job["files"][0]["cached"], true);
    assert_eq!(job["cached_bytes"], body.len());
    assert!(
        origin.requests("have.bin").is_empty(),
        "nothing was fetched"
    );
    // Nothing downloaded yet: no rate to estimate the time saved with.
    assert!(job.get("cached_seconds_saved").is_none(), "{job}");
    // Listings leave the per-file figures out.
    let (_, list) = app.get("/v1/jobs").await;
    assert!(list["jobs"][0].get("cached_bytes").is_none(), "{list}");
    // Once something was downloaded, a cached file's saved time is estimated at that rate.
    origin.put("fetched.bin", content(81, 2_000_000));
    let fetched = app
        .create_job(json!({ "url": origin.url("fetched.bin") }))
        .await;
    app.wait_for(&id_of(&fetched), "completed").await;
    std::fs::write(app.file("again.bin"), &body).unwrap();
    let again = app
        .create_job(json!({
            "url": origin.url("have.bin"), "dest": "again.bin", "sha256": sha256_hex(&body)
        }))
        .await;
    let again = app.wait_for(&id_of(&again), "completed").await;
    let saved = again["cached_seconds_saved"].as_f64();
    assert!(saved.is_some_and(|s| s > 0.0 && s.is_finite()), "{again}");
}

#[tokio::test]
async fn a_file_shows_downloading_while_its_bytes_arrive() {
    let origin = Origin::start().await;
    let app = TestApp::spawn().await;
    // A small file, fetched into memory: only the live phase says it is downloading.
    let body = content(80, 100_000);
    origin.put("small.bin", body.clone());
    origin.set_faults(
        "small.bin",
        Faults {
            hold_after: Some(40_000),
            ..Faults::default()
        },
    );
    let job = app
        .create_job(json!({ "url": origin.url("small.bin") }))
        .await;
    let id = id_of(&job);
    let seen = watch_file(&app, &id, |job| job["files"][0]["status"] == "downloading").await;
    assert!(!seen.contains("hashing_existing"), "{seen:?}");
    origin.release("small.bin");
    let job = app.wait_for(&id, "completed").await;
    assert_eq!(job["files"][0]["status"], "complete");
    assert_eq!(job["files"][0]["cached"], false);
    assert_eq!(job["cached_bytes"], 0);
    assert_file(&app.file("small.bin"), &body);
}
