//! A full disk: a job that does not fit pauses with `insufficient-storage` instead of failing,
//! keeps what it wrote, and completes once space is freed and it is resumed. The download
//! root is a small tmpfs each test mounts (and unmounts) itself.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content, sha256_hex};
use crate::support::{assert_file, id_of, part, requests_seen};
use crate::tmpfs::Tmpfs;

/// Writes `filler` until the filesystem is full, or until `limit` bytes; returns its path.
fn fill(dir: &Path, limit: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0;
    while written < limit {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    path
}

async fn app_on(tmpfs: &Tmpfs) -> TestApp {
    let root = tmpfs.path().to_path_buf();
    TestApp::spawn_with(|s| {
        s.download_root = root;
        s.min_free_space = 256 * 1024;
    })
    .await
}

#[tokio::test]
async fn a_file_that_does_not_fit_pauses_the_job_until_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let app = app_on(&tmpfs).await;
    let origin = Origin::start().await;
    let body = content(70, 4 << 20);
    origin.put("big.bin", body.clone());
    let filler = fill(&app.root, 6 << 20);

    let job = app
        .create_job(json!({ "url": origin.url("big.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let id = id_of(&job);
    let job = app.wait_for(&id, "paused").await;
    assert_eq!(job["error"]["type"], "insufficient-storage", "{job}");
    assert!(job["finished_at"].is_null(), "{job}");
    assert!(part(&app, "big.bin").exists(), "the job keeps its name");

    std::fs::remove_file(filler).unwrap();
    let (status, resumed) = app.action(&id, "resume").await;
    assert_eq!(status, 200, "{resumed}");
    let job = app.wait_for(&id, "completed").await;
    assert!(job["error"].is_null(), "{job}");
    assert_file(&app.file("big.bin"), &body);
    drop(app);
    drop(tmpfs);
}

#[tokio::test]
async fn a_disk_that_fills_up_mid_download_pauses_the_job_and_keeps_its_bytes() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let app = app_on(&tmpfs).await;
    let origin = Origin::start().await;
    let body = content(71, 5 << 20);
    origin.put("grow.bin", body.clone());
    // No length: nothing can be checked or reserved up front, so the disk fills mid-way.
    origin.set_faults(
        "grow.bin",
        Faults {
            no_content_length: true,
            rate: Some(2_000_000),
            ..Faults::default()
        },
    );
    let job = app
        .create_job(json!({ "url": origin.url("grow.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let id = id_of(&job);
    app.wait_until(&id, "bytes on disk past a checkpoint", |job| {
        job["files"][0]["bytes_done"].as_u64() > Some(700_000)
    })
    .await;
    let filler = fill(&app.root, u64::MAX);

    let job = app.wait_for(&id, "paused").await;
    assert_eq!(job["error"]["type"], "insufficient-storage", "{job}");
    let checkpoint = job["files"][0]["bytes_done"].as_u64().unwrap();
    assert!(checkpoint > 0, "{job}");
    let on_disk = std::fs::metadata(part(&app, "grow.bin")).unwrap().len();
    assert!(on_disk >= checkpoint, "{on_disk} < {checkpoint}");

    std::fs::remove_file(filler).unwrap();
    origin.update_faults("grow.bin", |f| f.rate = None);
    let before = origin.requests("grow.bin").len();
    let (status, resumed) = app.action(&id, "resume").await;
    assert_eq!(status, 200, "{resumed}");
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("grow.bin"), &body);
    let seen = requests_seen(&origin, "grow.bin", before + 1).await;
    assert_eq!(
        seen[before].range,
        Some(format!("bytes={checkpoint}-")),
        "the resume continues from the checkpoint"
    );
    drop(app);
    drop(tmpfs);
}
