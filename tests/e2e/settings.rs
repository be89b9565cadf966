//! Start-up settings as the real binary reads them: the config file, `HAUL_*` variables and
//! flags, in that order of precedence; invalid settings stop the daemon before it listens.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::client::haul;
use crate::daemon::{Daemon, Exited, Launch};
use crate::origin::{Origin, content};

/// Starts a daemon that must refuse to start; returns how it exited.
async fn refused(launch: Launch) -> Exited {
    match Daemon::try_start(launch).await {
        Ok(daemon) => panic!(
            "the daemon started on {} but should have refused:\n{}",
            daemon.listening,
            daemon.log()
        ),
        Err(exited) => {
            assert!(
                !exited.status.success(),
                "a refusal exits non-zero:\n{}",
                exited.log
            );
            exited
        }
    }
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("haul.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn an_unknown_key_in_the_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "checkpoint_interval_ms = 500\nmax_concurent_jobs = 2\n",
    );
    let exited = refused(Launch::in_dir(dir.path()).arg("--config").arg(config)).await;
    assert!(exited.log.contains("max_concurent_jobs"), "{}", exited.log);
}

#[tokio::test]
async fn a_missing_config_file_or_an_invalid_value_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let exited = refused(Launch::in_dir(dir.path()).arg("--config").arg(&missing)).await;
    assert!(exited.log.contains("nope.toml"), "{}", exited.log);

    let exited = refused(Launch::in_dir(dir.path()).env("HAUL_MAX_CONCURRENT_JOBS", "0")).await;
    assert!(exited.log.contains("max_concurrent_jobs"), "{}", exited.log);
}

#[tokio::test]
async fn listening_beyond_loopback_requires_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let exited = refused(
        Launch::bare(dir.path())
            .arg("--listen")
            .arg("0.0.0.0:0")
            .arg("--data-dir")
            .arg(dir.path().join("data")),
    )
    .await;
    assert!(
        exited.log.contains("HAUL_API_TOKEN") && exited.log.contains("0.0.0.0"),
        "the refusal says why and what to set:\n{}",
        exited.log
    );
    assert!(!dir.path().join("data/haul.db").exists());

    let mut daemon = Daemon::start(
        Launch::bare(dir.path())
            .arg("--listen")
            .arg("0.0.0.0:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("HAUL_API_TOKEN", "s3cret-token"),
    )
    .await;
    assert_eq!(daemon.listening.ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert!(!daemon.log().contains("s3cret-token"), "{}", daemon.log());

    let (status, problem) = daemon.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    daemon.token = Some("wrong".into());
    assert_eq!(daemon.get("/v1/jobs").await.0, StatusCode::UNAUTHORIZED);
    daemon.token = Some("s3cret-token".into());
    assert_eq!(daemon.get("/v1/jobs").await.0, StatusCode::OK);
    daemon.token = None;
    assert_eq!(daemon.get("/healthz").await.0, StatusCode::OK);

    let denied = haul(dir.path(), &daemon.base, None, &["ls"]).await;
    assert_eq!(denied.code, 4, "{denied:?}");
    let allowed = haul(dir.path(), &daemon.base, Some("s3cret-token"), &["ls"]).await;
    assert_eq!(allowed.code, 0, "{allowed:?}");
}

/// Starts a daemon, downloads one small file, and returns where it listened; stops it after.
async fn run_once(launch: Launch, origin: &Origin) -> IpAddr {
    let mut daemon = Daemon::start(launch).await;
    let id = daemon
        .add(json!({ "url": origin.url("small.bin"), "dest": "got/" }))
        .await;
    daemon.wait_for(&id, "completed").await;
    let (status, _) = daemon.terminate().await;
    assert!(status.success(), "{}", daemon.log());
    daemon.listening.ip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_override_the_environment_which_overrides_the_file() {
    let origin = Origin::start().await;
    let body = content(7, 10_000);
    origin.put("small.bin", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        &format!(
            "listen = \"127.0.0.2:0\"\ndata_dir = {:?}\ndownload_root = {:?}\n",
            d.join("data"),
            d.join("from-file"),
        ),
    );
    let from_file = Launch::bare(d).arg("--config").arg(&config);
    let from_env = from_file
        .clone()
        .env("HAUL_LISTEN", "127.0.0.3:0")
        .env("HAUL_DOWNLOAD_ROOT", d.join("from-env").to_str().unwrap());
    let from_flags = from_env
        .clone()
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--download-root")
        .arg(d.join("from-flags"));

    let landed = |root: &str| std::fs::read(d.join(root).join("got/small.bin")).ok();
    assert_eq!(
        run_once(from_file, &origin).await,
        IpAddr::from([127, 0, 0, 2])
    );
    assert_eq!(landed("from-file").as_deref(), Some(&body[..]));
    assert!(
        d.join("data/haul.db").exists(),
        "data_dir comes from the file"
    );

    assert_eq!(
        run_once(from_env, &origin).await,
        IpAddr::from([127, 0, 0, 3])
    );
    assert_eq!(landed("from-env").as_deref(), Some(&body[..]));

    assert_eq!(
        run_once(from_flags, &origin).await,
        IpAddr::from([127, 0, 0, 1])
    );
    assert_eq!(landed("from-flags").as_deref(), Some(&body[..]));
    assert!(!d.join("haul-data").exists() && !d.join("downloads").exists());
}

/// `HAUL_ALLOW_LOOPBACK=false` reaches the address policy of the real binary: a loopback
/// literal is refused at submission (422 `address-denied`), and a name that resolves to
/// loopback fails its job with `address-denied` without a request reaching the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_can_deny_loopback_downloads() {
    let origin = Origin::start().await;
    origin.put("small.bin", content(8, 1_000));
    let dir = tempfile::tempdir().unwrap();
    let daemon =
        Daemon::start(Launch::in_dir(dir.path()).env("HAUL_ALLOW_LOOPBACK", "false")).await;
    let (status, problem) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(json!({ "url": origin.url("small.bin") })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "address-denied", "{problem}");
    let url = format!("http://localhost:{}/small.bin", origin.addr.port());
    let id = daemon.add(json!({ "url": url })).await;
    let failed = daemon.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["type"], "address-denied", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("allow_loopback")),
        "{failed}"
    );
    assert!(origin.all_requests().is_empty(), "the origin saw a request");
}
