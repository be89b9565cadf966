use serde_json::json;

use crate::helpers::TestApp;
use crate::origin::{Origin, content, sha256_hex};

#[tokio::test]
async fn a_file_is_downloaded_verified_and_named_from_the_url() {
    let origin = Origin::start().await;
    let body = content(1, 300_000);
    origin.put("data/model.bin", body.clone());
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url": origin.url("data/model.bin"), "sha256": sha256_hex(&body) }))
        .await;
    let id = job["id"].as_str().unwrap();
    let done = app.wait_for(id, "completed").await;
    assert_eq!(done["bytes_done"], 300_000);
    assert_eq!(done["files"][0]["path"], "model.bin");
    assert_eq!(std::fs::read(app.file("model.bin")).unwrap(), body);
    assert!(!app.file("model.bin.part").exists());
}
