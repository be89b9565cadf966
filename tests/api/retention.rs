//! History retention: the background task forgets finished jobs once they are older than the
//! retention, and leaves active ones alone.

use crate::contract::{SLOW, SMALL, eventually, origin, submit};
use crate::helpers::TestApp;

#[tokio::test]
async fn finished_jobs_are_forgotten_after_the_retention_and_active_ones_kept() {
    let app = TestApp::spawn_with(|s| s.history_retention_secs = 1).await;
    let origin = origin().await;
    let running = submit(&app, &origin, SLOW).await;
    let finished = submit(&app, &origin, SMALL).await;
    app.wait_for(&finished, "completed").await;
    app.wait_for(&running, "running").await;
    eventually("the finished job to be forgotten", async || {
        app.get(&format!("/v1/jobs/{finished}")).await.0 == reqwest::StatusCode::NOT_FOUND
    })
    .await;
    assert!(app.file(SMALL).exists(), "its file stays on disk");
    assert_eq!(app.job(&running).await["status"], "running");
}
