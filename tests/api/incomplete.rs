//! `incomplete_root`: partial files live there, at their destination's relative path, and only
//! finished files appear in the download root. It must share the root's filesystem.

use serde_json::json;

use crate::helpers::{TestApp, test_settings};
use crate::origin::{Faults, Origin, content};
use crate::support::{assert_file, eventually, files_below, id_of};

#[tokio::test]
async fn partial_files_stay_out_of_the_download_folder() {
    let origin = Origin::start().await;
    let body = content(90, 1_500_000);
    origin.put("big.bin", body.clone());
    origin.set_faults(
        "big.bin",
        Faults {
            hold_after: Some(300_000),
            ..Faults::default()
        },
    );
    let small: Vec<_> = (0..5).map(|i| content(91 + i, 2_000)).collect();
    for (i, body) in small.iter().enumerate() {
        origin.put(&format!("s/{i}.txt"), body.clone());
    }
    let app = TestApp::spawn_with(|s| {
        s.incomplete_root = Some(s.data_dir.parent().unwrap().join("incomplete"));
    })
    .await;
    let incomplete = app.dir.path().join("incomplete");

    let job = app
        .create_job(json!({ "url": origin.url("big.bin"), "dest": "sub/" }))
        .await;
    let id = id_of(&job);
    eventually("the held download to write its first bytes", || {
        std::fs::metadata(incomplete.join("sub/big.bin.part")).is_ok_and(|m| m.len() > 0)
    })
    .await;
    assert_eq!(files_below(&app.root), Vec::<String>::new());
    origin.release("big.bin");
    app.wait_for(&id, "completed").await;
    assert_file(&app.file("sub/big.bin"), &body);

    // Many small files of one job (claimed in a batch, committed in a group) too.
    let files: Vec<_> = (0..5)
        .map(|i| json!({ "url": origin.url(&format!("s/{i}.txt")) }))
        .collect();
    let job = app
        .create_job(json!({ "files": files, "dest": "many" }))
        .await;
    app.wait_for(&id_of(&job), "completed").await;
    for (i, body) in small.iter().enumerate() {
        assert_file(&app.file(&format!("many/{i}.txt")), body);
    }
    assert_eq!(files_below(&incomplete), Vec::<String>::new());
    assert_eq!(files_below(&app.root).len(), 6);
}

#[tokio::test]
async fn a_cancelled_job_leaves_nothing_in_the_incomplete_root() {
    let origin = Origin::start().await;
    origin.put("c.bin", content(97, 1_000_000));
    origin.set_faults(
        "c.bin",
        Faults {
            hold_after: Some(100_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| {
        s.incomplete_root = Some(s.data_dir.parent().unwrap().join("incomplete"));
    })
    .await;
    let incomplete = app.dir.path().join("incomplete");
    let id = id_of(&app.create_job(json!({ "url": origin.url("c.bin") })).await);
    eventually("the partial file", || {
        incomplete.join("c.bin.part").exists()
    })
    .await;
    let (status, _) = app.action(&id, "cancel").await;
    assert_eq!(status, 200);
    origin.release("c.bin");
    assert_eq!(files_below(&incomplete), Vec::<String>::new());
    assert_eq!(files_below(&app.root), Vec::<String>::new());
}

#[tokio::test]
async fn an_incomplete_root_elsewhere_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // Inside the download root: partial files would show among finished ones.
    let mut settings = test_settings(&dir);
    settings.incomplete_root = Some(settings.download_root.join("partial"));
    let err = haul::app::App::build(settings).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(message.contains("incomplete_root"), "{message}");
    assert!(message.contains("must not contain each other"), "{message}");

    // On another filesystem: no atomic rename into place. (/dev/shm is a tmpfs.)
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIPPED the other-filesystem case: no /dev/shm");
        return;
    }
    let other = tempfile::tempdir_in(shm).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&dir);
    settings.incomplete_root = Some(other.path().join("partial"));
    let err = haul::app::App::build(settings).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(message.contains("another filesystem"), "{message}");
}
