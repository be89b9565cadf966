//! Secrets stay secret with the real binary logging at `debug`: a job's token and cookie, a
//! credential rule's token and key, and a proxy's password appear in no log line and in no
//! API answer about the jobs that used them, while the origins prove they were sent where they
//! belong (and not to another port a redirect led to).

use serde_json::json;

use crate::daemon::{Daemon, Launch};
use crate::origin::{Faults, Origin, content};

const SECRETS: [&str; 5] = [
    "JOB-TOKEN-e2e",
    "JOB-COOKIE-e2e",
    "RULE-TOKEN-e2e",
    "RULE-KEY-e2e",
    "PROXY-PW-e2e",
];

#[tokio::test]
async fn no_secret_reaches_the_log_or_the_api() {
    let (named, other) = (Origin::start().await, Origin::start().await);
    let body = content(701, 2_000_000);
    other.put("x.bin", body.clone());
    named.put("x.bin", content(0, 1));
    named.set_faults(
        "x.bin",
        Faults {
            redirect_to: Some(other.url("x.bin")),
            ..Faults::default()
        },
    );
    named.put("ruled.bin", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haul.toml");
    std::fs::write(
        &config,
        "[[credentials]]\nurl_regex = '/ruled\\.bin$'\ntoken = \"RULE-TOKEN-e2e\"\n\
         headers = { \"X-Api-Key\" = \"RULE-KEY-e2e\" }\n",
    )
    .unwrap();
    let launch = Launch::in_dir(dir.path())
        .env("RUST_LOG", "debug")
        .arg("--config")
        .arg(&config);
    let daemon = Daemon::start(launch).await;
    let redirected = daemon
        .add(json!({
            "url": named.url("x.bin"),
            "access_token": "JOB-TOKEN-e2e",
            "headers": { "Cookie": "session=JOB-COOKIE-e2e" },
            "min_segment_size": 65_536,
        }))
        .await;
    let ruled = daemon.add(json!({ "url": named.url("ruled.bin") })).await;
    // A proxy that refuses connections: the job fails, and its error names no password.
    let proxied = daemon
        .add(json!({
            "url": named.url("ruled.bin"),
            "dest": "proxied.bin",
            "proxy": "http://user:PROXY-PW-e2e@127.0.0.1:9",
        }))
        .await;
    daemon.wait_for(&redirected, "completed").await;
    daemon.wait_for(&ruled, "completed").await;
    daemon.wait_for(&proxied, "failed").await;

    assert_eq!(
        named.requests("x.bin")[0].authorization.as_deref(),
        Some("Bearer JOB-TOKEN-e2e")
    );
    assert!(
        other
            .requests("x.bin")
            .iter()
            .all(|s| s.authorization.is_none() && s.header("cookie").is_none()),
        "nothing secret reached the other port"
    );
    assert_eq!(
        named.requests("ruled.bin")[0].header("x-api-key"),
        Some("RULE-KEY-e2e")
    );
    let mut answers = vec![daemon.get("/v1/jobs").await.1.to_string()];
    for id in [&redirected, &ruled, &proxied] {
        answers.extend(answers_about(&daemon, id).await);
    }
    let log = daemon.log();
    assert!(log.contains("DEBUG"), "the daemon logged at debug:\n{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "an answer shows {secret}: {answer}"
            );
        }
    }
}

/// What the API answers about a finished job: the job, its delivery log and its event stream
/// (a snapshot, then the end).
async fn answers_about(daemon: &Daemon, id: &str) -> Vec<String> {
    let events = reqwest::get(format!("{}/v1/jobs/{id}/events", daemon.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("job.snapshot"), "{events}");
    let deliveries = daemon.get(&format!("/v1/jobs/{id}/deliveries")).await.1;
    vec![
        daemon.job(id).await.to_string(),
        deliveries.to_string(),
        events,
    ]
}
