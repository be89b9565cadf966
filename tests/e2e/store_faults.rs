//! Store faults through the real binary: the database locked by another process, its
//! filesystem full or read-only, and a database file that is not haul's. A daemon whose store
//! fails says so on `/readyz` and in `503 store-unavailable` problems, keeps serving reads and
//! every job it had, lets running downloads finish without damage, and recovers by itself when
//! the fault clears. A file it must not use is refused at start, byte for byte untouched.
//!
//! The full and read-only cases mount a small tmpfs for the data directory (root needed;
//! `HAUL_TEST_NO_MOUNT=1` skips them, as in `tests/api/disk.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection};

use crate::daemon::{DEADLINE, Daemon, Launch, eventually};
use crate::origin::{Origin, content, sha256_hex};
use crate::tmpfs::Tmpfs;

const KIB: u64 = 1024;

/// Remounts a tmpfs `ro` or `rw`.
fn remount(path: &Path, mode: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "remount {mode}");
}

/// A daemon with its data directory at `data` and its downloads under `dir`.
fn launch(dir: &Path, data: &Path) -> Launch {
    Launch::bare(dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data)
        .arg("--download-root")
        .arg(dir.join("downloads"))
}

/// A response's status, `Content-Type`, `Retry-After` and JSON body.
struct Answer {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

async fn send(daemon: &Daemon, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
    let mut request = daemon
        .http
        .request(method, format!("{}{path}", daemon.base));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let retry_after = header(reqwest::header::RETRY_AFTER);
    let status = response.status();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        retry_after,
        body,
    }
}

/// Checks a `503 store-unavailable` problem whose detail names `fault`.
fn assert_unavailable(answer: &Answer, fault: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["code"], "store-unavailable", "{}", answer.body);
    assert!(answer.retry_after.is_some(), "503 without Retry-After");
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(fault), "{detail:?} does not name {fault:?}");
}

/// Polls `/readyz` until it answers `status`; returns that answer.
async fn readyz_until(daemon: &Daemon, status: StatusCode) -> Answer {
    let started = Instant::now();
    loop {
        let answer = send(daemon, reqwest::Method::GET, "/readyz", None).await;
        if answer.status == status {
            return answer;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "/readyz never answered {status}: {}\n{}",
            answer.body,
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks a job completed with the file's bytes on disk.
async fn assert_completed(daemon: &Daemon, id: &str, downloads: &Path, name: &str, sha: &str) {
    let job = daemon.wait_for(id, "completed").await;
    assert!(job["error"].is_null(), "{job:#}");
    let on_disk = std::fs::read(downloads.join(name)).unwrap();
    assert_eq!(sha256_hex(&on_disk), sha, "{name}");
    assert!(!downloads.join(format!("{name}.part")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_locked_by_another_process_answers_503_and_recovers_when_released() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let downloads = dir.path().join("downloads");
    let daemon = Daemon::start(launch(dir.path(), &data)).await;
    let large_sha = sha256_hex(&origin.put_throttled("large.bin", 1, 1024 * KIB, 256 * KIB));
    let large = daemon.add(json!({ "url": origin.url("large.bin") })).await;
    // A small file that finishes while the lock is held: its completion must wait for the
    // store, not fail.
    let small_sha = sha256_hex(&origin.put_throttled("small.bin", 2, 48 * KIB, 24 * KIB));
    let small = daemon.add(json!({ "url": origin.url("small.bin") })).await;
    daemon
        .wait_until(&large, "the large file downloading", |j| {
            j["bytes_done"].as_u64() > Some(0)
        })
        .await;

    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("haul.db"))
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let ready = readyz_until(&daemon, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_unavailable(&ready, "lock");
    let started = Instant::now();
    let refused = send(
        &daemon,
        reqwest::Method::POST,
        "/v1/jobs",
        Some(json!({ "url": origin.url("small.bin"), "dest": "again.bin" })),
    )
    .await;
    assert_unavailable(&refused, "lock");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a write waited {:?} for the lock",
        started.elapsed()
    );
    // Reads go on: WAL readers do not wait for the writer's lock.
    assert_eq!(daemon.jobs().await.len(), 2);
    assert_eq!(daemon.job(&large).await["status"], "running");
    eventually("the small file waiting for the store", || {
        daemon.log().contains("retrying until the store is back")
    })
    .await;

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let ready = readyz_until(&daemon, StatusCode::OK).await;
    assert_eq!(ready.body["status"], "ready");
    let again = daemon
        .add(json!({ "url": origin.url("small.bin"), "dest": "again.bin" }))
        .await;
    assert_completed(&daemon, &small, &downloads, "small.bin", &small_sha).await;
    assert_completed(&daemon, &again, &downloads, "again.bin", &small_sha).await;
    assert_completed(&daemon, &large, &downloads, "large.bin", &large_sha).await;
    assert_eq!(daemon.jobs().await.len(), 3);
}

/// Writes `filler` until the filesystem is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 16 * 1024];
    while let Ok(n) = file.write(&chunk) {
        if n == 0 {
            break;
        }
    }
    // The last bytes a page at a time: nothing may be left for one more page of the WAL.
    while let Ok(n) = file.write(&chunk[..512]) {
        if n == 0 {
            break;
        }
    }
    path
}

/// Submits jobs until one is refused; returns the accepted ids and the refusal.
async fn submit_until_refused(daemon: &Daemon, origin: &Origin) -> (Vec<String>, Answer) {
    let mut accepted = Vec::new();
    for n in 0..200 {
        let body = json!({ "url": origin.url("small.bin"), "dest": format!("more-{n}.bin"),
            "description": "x".repeat(900) });
        let answer = send(daemon, reqwest::Method::POST, "/v1/jobs", Some(body)).await;
        if answer.status != StatusCode::CREATED {
            return (accepted, answer);
        }
        accepted.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    panic!(
        "200 submissions were accepted on a full filesystem:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_under_the_store_answers_503_keeps_every_job_and_recovers() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("downloads");
    let daemon = Daemon::start(launch(dir.path(), tmpfs.path())).await;
    let large_sha = sha256_hex(&origin.put_throttled("large.bin", 3, 1024 * KIB, 256 * KIB));
    let large = daemon.add(json!({ "url": origin.url("large.bin") })).await;
    let small_sha = sha256_hex(&origin.put_throttled("small.bin", 4, 8 * KIB, 1024 * KIB));
    daemon
        .wait_until(&large, "the large file downloading", |j| {
            j["bytes_done"].as_u64() > Some(0)
        })
        .await;

    let filler = fill(tmpfs.path());
    let (accepted, refused) = submit_until_refused(&daemon, &origin).await;
    assert_unavailable(&refused, "full");
    let ready = readyz_until(&daemon, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_unavailable(&ready, "full");
    assert_eq!(daemon.jobs().await.len(), 1 + accepted.len());

    std::fs::remove_file(filler).unwrap();
    readyz_until(&daemon, StatusCode::OK).await;
    let after = daemon
        .add(json!({ "url": origin.url("small.bin"), "dest": "after.bin" }))
        .await;
    assert_completed(&daemon, &large, &downloads, "large.bin", &large_sha).await;
    assert_completed(&daemon, &after, &downloads, "after.bin", &small_sha).await;
    for (n, id) in accepted.iter().enumerate() {
        assert_completed(
            &daemon,
            id,
            &downloads,
            &format!("more-{n}.bin"),
            &small_sha,
        )
        .await;
    }
    assert_eq!(daemon.jobs().await.len(), 2 + accepted.len());
    drop(daemon);
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_stops_the_start_untouched_and_a_writable_one_resumes() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("downloads");
    let mut daemon = Daemon::start(launch(dir.path(), tmpfs.path())).await;
    let sha = sha256_hex(&origin.put_throttled("large.bin", 5, 512 * KIB, 256 * KIB));
    let id = daemon.add(json!({ "url": origin.url("large.bin") })).await;
    let (status, _) = daemon.terminate().await;
    assert!(status.success(), "{}", daemon.log());
    // Linux refuses to make a filesystem read-only while a process has files on it open for
    // writing, as the daemon has its database: read-only storage meets haul at start-up.
    remount(tmpfs.path(), "ro");
    let db = tmpfs.path().join("haul.db");
    let before = sha256_hex(&std::fs::read(&db).unwrap());
    let exited = Daemon::try_start(launch(dir.path(), tmpfs.path()))
        .await
        .err()
        .expect("a daemon on a read-only data directory does not start");
    assert_eq!(exited.status.code(), Some(1), "{}", exited.log);
    assert!(
        exited.log.contains("Read-only file system"),
        "{}",
        exited.log
    );
    assert_eq!(sha256_hex(&std::fs::read(&db).unwrap()), before);

    remount(tmpfs.path(), "rw");
    daemon.restart().await;
    assert_completed(&daemon, &id, &downloads, "large.bin", &sha).await;
    drop(daemon);
    drop(tmpfs);
}

/// Starts a daemon on `data`, which must refuse the database: exit code 7, a message
/// containing `says`, and the file byte for byte as it was.
async fn assert_refused(dir: &Path, data: &Path, says: &str) {
    let db = data.join("haul.db");
    let before = sha256_hex(&std::fs::read(&db).unwrap());
    let exited = Daemon::try_start(launch(dir, data))
        .await
        .err()
        .expect("the daemon refuses the database");
    assert_eq!(exited.status.code(), Some(7), "{}", exited.log);
    assert!(
        exited.log.contains(says),
        "{says:?} not in:\n{}",
        exited.log
    );
    assert_eq!(
        sha256_hex(&std::fs::read(&db).unwrap()),
        before,
        "the database file changed"
    );
}

/// Runs SQL on a database file with a connection of the test's own (another application).
async fn sql(db: &Path, statements: &'static str) {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(statements).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_foreign_or_newer_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let damaged = dir.path().join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("haul.db"), content(9, 64 * 1024)).unwrap();
    assert_refused(
        dir.path(),
        &damaged,
        "is not a SQLite database, or is damaged",
    )
    .await;

    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    sql(
        &foreign.join("haul.db"),
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO contacts (name) VALUES ('Ada');",
    )
    .await;
    assert_refused(
        dir.path(),
        &foreign,
        "another application's database (tables: contacts)",
    )
    .await;

    let newer = dir.path().join("newer");
    let mut daemon = Daemon::start(launch(dir.path(), &newer)).await;
    let (status, _) = daemon.terminate().await;
    assert!(status.success(), "{}", daemon.log());
    sql(
        &newer.join("haul.db"),
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', TRUE, X'00', 0);",
    )
    .await;
    assert_refused(
        dir.path(),
        &newer,
        "written by a newer haul (schema version 9999",
    )
    .await;
}
