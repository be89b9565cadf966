//! The address policy (SSRF) and the schemes a download may use: IP literals refused at
//! submission, names judged when they are resolved, every redirect hop judged before it is
//! requested, and only http(s) followed.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::contract::{assert_problem, job_ids, request, send};
use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, content};
use crate::proxy::Proxy;
use crate::receiver::Receiver;
use crate::support::{files_below, id_of};
use haul::config::WebhookSubscription;

/// Far below the connect timeout (15 s): a refusal, not a connection that timed out.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// Posts `body`, expects a 422 problem with `code`, and checks no job was stored.
async fn refused(app: &TestApp, body: Value, code: &str) -> Value {
    let before = job_ids(app).await;
    let post = request(app, Method::POST, "/v1/jobs").json(&body);
    let problem = assert_problem(&send(post).await, 422, code);
    assert_eq!(
        job_ids(app).await,
        before,
        "a refused job was stored: {body}"
    );
    problem
}

/// An origin whose `hop` redirects to `location`.
async fn redirecting(location: &str) -> Origin {
    let origin = Origin::start().await;
    origin.put("hop", content(1, 1));
    origin.set_faults(
        "hop",
        Faults {
            redirect_to: Some(location.to_owned()),
            ..Faults::default()
        },
    );
    origin
}

/// Submits `url`, waits for the job to fail, and returns it with the time it took.
async fn failed_job(app: &TestApp, url: &str) -> (Value, Duration) {
    let started = Instant::now();
    let job = app.create_job(json!({ "url": url })).await;
    let failed = app.wait_for(&id_of(&job), "failed").await;
    (failed, started.elapsed())
}

#[tokio::test]
async fn denied_ip_literals_are_refused_at_submission_wherever_they_appear() {
    let app = TestApp::spawn().await;
    let metadata = "http://169.254.169.254/latest/meta-data/";
    let problem = refused(&app, json!({ "url": metadata }), "address-denied").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("169.254.169.254"), "{detail}");
    assert!(detail.contains("allow_metadata"), "{detail}");
    let proxied = json!({ "url": "http://example.invalid/x", "proxy": "http://[fe80::1]:3128" });
    let problem = refused(&app, proxied, "address-denied").await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("proxy: "),
        "{problem}"
    );
    let fine = "http://example.invalid/x";
    for body in [
        json!({ "url": "http://[fe80::1]/x" }),
        json!({ "url": "http://[fd00:ec2::254]/x" }),
        json!({ "url": "http://[::ffff:169.254.169.254]/x" }),
        json!({ "url": "http://0.0.0.0:8080/x" }),
        json!({ "url": "http://224.0.0.1/x" }),
        json!({ "files": [{ "url": fine }, { "url": "http://169.254.1.1/y" }] }),
        json!({ "url": fine, "mirrors": ["http://169.254.169.254/x"] }),
        json!({ "files": [{ "url": fine, "mirrors": ["http://[fe80::2]/x"] }] }),
        json!({ "url_template": "http://169.254.169.254/{1..2}" }),
        json!({ "url": fine, "callback_url": "http://169.254.169.254/hook" }),
        json!({ "url": fine, "proxy": "http://169.254.169.254:3128" }),
    ] {
        refused(&app, body, "address-denied").await;
    }
    // Loopback and private literals are allowed by default.
    let job = app
        .create_job(json!({ "url": "http://10.0.0.1/x", "mirrors": ["http://127.0.0.1:9/x"] }))
        .await;
    assert_eq!(job["status"], "queued", "{job}");
}

#[tokio::test]
async fn settings_deny_loopback_and_private_literals_in_any_spelling() {
    let app = TestApp::spawn_with(|s| {
        s.allow_loopback = false;
        s.allow_private = false;
    })
    .await;
    for url in [
        "http://127.0.0.1/x",
        "http://2130706433/x",
        "http://0x7f.1/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://100.64.0.1/x",
        "http://[fd12::1]/x",
    ] {
        let problem = refused(&app, json!({ "url": url }), "address-denied").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("allow_loopback") || detail.contains("allow_private"),
            "{url}: {detail}"
        );
    }
}

#[tokio::test]
async fn other_schemes_are_refused_at_submission_everywhere_a_url_goes() {
    let app = TestApp::spawn().await;
    let fine = "http://example.invalid/x";
    for bad in [
        "file:///etc/passwd",
        "ftp://example.invalid/x",
        "gopher://example.invalid/x",
        "data:text/plain,hello",
        "javascript:alert(1)",
        "ws://example.invalid/x",
    ] {
        refused(&app, json!({ "url": bad }), "unsupported-scheme").await;
        refused(
            &app,
            json!({ "files": [{ "url": bad }] }),
            "unsupported-scheme",
        )
        .await;
        refused(
            &app,
            json!({ "url": fine, "mirrors": [bad] }),
            "unsupported-scheme",
        )
        .await;
        let in_files = json!({ "files": [{ "url": fine, "mirrors": [bad] }] });
        refused(&app, in_files, "unsupported-scheme").await;
    }
    refused(
        &app,
        json!({ "url_template": "file:///etc/{a,b}" }),
        "unsupported-scheme",
    )
    .await;
}

/// With `allow_loopback = false`, a name that resolves to loopback only (`localhost`) gets no
/// connection: the file fails at once with `address-denied`, not retried, and the origin
/// never sees a request.
#[tokio::test]
async fn a_name_resolving_to_a_denied_address_fails_without_a_request() {
    let origin = Origin::start().await;
    origin.put("x.bin", content(2, 1_000));
    let app = TestApp::spawn_with(|s| s.allow_loopback = false).await;
    let url = format!("http://localhost:{}/x.bin", origin.addr.port());
    let (failed, took) = failed_job(&app, &url).await;
    assert_eq!(failed["error"]["type"], "address-denied", "{failed:#}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("allow_loopback"), "{message}");
    assert!(took < REFUSED_WITHIN, "took {took:?}: retried or timed out");
    assert!(origin.all_requests().is_empty(), "the origin saw a request");
    assert!(files_below(&app.root).is_empty());
    // The literal is refused before it becomes a job.
    refused(
        &app,
        json!({ "url": origin.url("x.bin") }),
        "address-denied",
    )
    .await;
}

/// Default settings: a redirect to the metadata service, by IPv4 or IPv6, fails the file with
/// `address-denied` at once — judged before any connection, so no connect timeout.
#[tokio::test]
async fn a_redirect_to_the_metadata_service_is_refused_without_connecting() {
    let app = TestApp::spawn().await;
    for location in [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[fd00:ec2::254]/latest/",
        "http://[::ffff:a9fe:a9fe]/latest/",
    ] {
        let origin = redirecting(location).await;
        let (failed, took) = failed_job(&app, &origin.url("hop")).await;
        assert_eq!(
            failed["error"]["type"], "address-denied",
            "{location}: {failed:#}"
        );
        let message = failed["error"]["message"].as_str().unwrap();
        assert!(message.contains("allow_metadata"), "{message}");
        assert!(took < REFUSED_WITHIN, "{location}: took {took:?}");
        assert_eq!(origin.requests("hop").len(), 1, "the hop is not retried");
    }
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_when_private_is_denied() {
    let app = TestApp::spawn_with(|s| s.allow_private = false).await;
    for location in ["http://10.0.0.1/x", "http://192.168.1.1:8080/x"] {
        let origin = redirecting(location).await;
        let (failed, took) = failed_job(&app, &origin.url("hop")).await;
        assert_eq!(failed["error"]["type"], "address-denied", "{failed:#}");
        let message = failed["error"]["message"].as_str().unwrap();
        assert!(message.contains("allow_private"), "{message}");
        assert!(took < REFUSED_WITHIN, "{location}: took {took:?}");
    }
}

/// A redirect to a `file:` URL (or any non-http scheme) fails the file for good, naming the
/// scheme; nothing is read from the local disk.
#[tokio::test]
async fn a_redirect_to_another_scheme_fails_the_file() {
    let app = TestApp::spawn().await;
    for location in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1/x",
    ] {
        let origin = redirecting(location).await;
        let (failed, took) = failed_job(&app, &origin.url("hop")).await;
        assert_eq!(failed["error"]["type"], "invalid-response", "{failed:#}");
        let message = failed["error"]["message"].as_str().unwrap();
        let scheme = location.split(':').next().unwrap();
        assert!(
            message.contains(&format!("a redirect to a {scheme}: URL")),
            "{message}"
        );
        assert!(took < REFUSED_WITHIN, "took {took:?}");
        assert_eq!(origin.requests("hop").len(), 1, "not retried");
        assert!(files_below(&app.root).is_empty());
    }
}

/// The settings allow what they say: with link-local allowed, a link-local literal is
/// accepted at submission (the metadata address is still refused).
#[tokio::test]
async fn allowing_link_local_does_not_open_the_metadata_service() {
    let app = TestApp::spawn_with(|s| s.allow_link_local = true).await;
    let job = app
        .create_job(json!({ "url": "http://169.254.1.1/x" }))
        .await;
    assert_eq!(job["status"], "queued", "{job}");
    app.action(&id_of(&job), "cancel").await;
    refused(
        &app,
        json!({ "url": "http://169.254.169.254/x" }),
        "address-denied",
    )
    .await;
}

/// Moves the job's directory `dir` aside (the open `.part` goes with it) and puts a symlink to
/// `outside` in its place, as someone with write access to the download root could.
fn swap_for_symlink(app: &TestApp, dir: &str, outside: &std::path::Path) {
    std::fs::rename(app.file(dir), app.file(&format!("{dir}.moved"))).unwrap();
    std::os::unix::fs::symlink(outside, app.file(dir)).unwrap();
}

/// Destination confinement is checked again when the file gets its name: a directory of the
/// destination that became a symlink out of the root after the `.part` was written and before
/// the rename fails the file, and nothing lands outside the root — neither the file nor its
/// `.part`.
#[tokio::test]
async fn a_symlink_planted_before_the_rename_does_not_carry_the_file_out() {
    let (origin, app, id) = held_halfway_in_sub().await;
    let outside = tempfile::tempdir().unwrap();
    swap_for_symlink(&app, "sub", outside.path());
    origin.release("big.bin");

    let failed = app.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["type"], "invalid-destination", "{failed:#}");
    assert!(
        files_below(outside.path()).is_empty(),
        "written outside the root"
    );
    assert!(
        !app.file("sub.moved/big.bin").exists(),
        "no final name given"
    );
}

/// A 600 000-byte download into `sub/`, held by the origin once half of it is in its `.part`.
async fn held_halfway_in_sub() -> (Origin, TestApp, String) {
    let origin = Origin::start().await;
    origin.put("big.bin", content(3, 600_000));
    origin.set_faults(
        "big.bin",
        Faults {
            hold_after: Some(300_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url": origin.url("big.bin"), "dest": "sub/" }))
        .await;
    let id = id_of(&job);
    app.wait_until(&id, "bytes in the .part", |job| {
        job["files"][0]["bytes_done"].as_u64() >= Some(300_000)
    })
    .await;
    (origin, app, id)
}

/// A paused download resumes into its `.part` only inside the root: a directory of its
/// destination swapped for a symlink out of the root while it was paused fails it, and a file
/// named like its `.part` out there is neither taken as progress nor written.
#[tokio::test]
async fn a_resumed_download_never_opens_a_part_behind_a_planted_symlink() {
    let (origin, app, id) = held_halfway_in_sub().await;
    assert_eq!(app.action(&id, "pause").await.0, 200);
    app.wait_for(&id, "paused").await;
    let outside = tempfile::tempdir().unwrap();
    swap_for_symlink(&app, "sub", outside.path());
    let bait = outside.path().join("big.bin.part");
    let junk = content(68, 400_000);
    std::fs::write(&bait, &junk).unwrap();
    origin.release("big.bin");

    assert_eq!(app.action(&id, "resume").await.0, 200);
    let failed = app.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["type"], "invalid-destination", "{failed:#}");
    assert_eq!(
        std::fs::read(&bait).unwrap(),
        junk,
        "written outside the root"
    );
    assert_eq!(files_below(outside.path()), ["big.bin.part"]);
}

/// The same for a small file, which is held in memory and written into its `.part` only when
/// it is committed: a `.part` name planted outside the root behind the symlink is not written.
#[tokio::test]
async fn a_small_file_is_not_written_through_a_symlink_planted_before_its_commit() {
    let origin = Origin::start().await;
    origin.put("small.bin", content(4, 100_000));
    origin.set_faults(
        "small.bin",
        Faults {
            hold_after: Some(50_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let job = app
        .create_job(json!({ "url": origin.url("small.bin"), "dest": "sub/" }))
        .await;
    let id = id_of(&job);
    crate::support::requests_seen(&origin, "small.bin", 1).await;
    crate::support::eventually("the .part to exist", || {
        app.file("sub/small.bin.part").exists()
    })
    .await;
    let outside = tempfile::tempdir().unwrap();
    swap_for_symlink(&app, "sub", outside.path());
    let bait = outside.path().join("small.bin.part");
    std::fs::write(&bait, b"").unwrap();
    origin.release("small.bin");

    let failed = app.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["type"], "invalid-destination", "{failed:#}");
    assert_eq!(
        std::fs::read(&bait).unwrap(),
        b"",
        "written outside the root"
    );
    assert_eq!(files_below(outside.path()), ["small.bin.part"]);
}

/// The daemon's proxy is the operator's choice: named `localhost`, it is used even with
/// loopback denied. Through an HTTP proxy the proxy resolves the target's name, so a name is
/// not judged by haul (the documented caveat): the download goes through.
#[tokio::test]
async fn the_daemons_proxy_is_trusted_and_resolves_names_itself() {
    let origin = Origin::start().await;
    origin.put("via.bin", content(5, 1_000));
    let proxy = Proxy::start(false).await;
    let proxy_url = format!("http://localhost:{}", proxy.addr.port());
    let app = TestApp::spawn_with(|s| {
        s.allow_loopback = false;
        s.proxy = Some(haul::config::Secret::new(proxy_url));
    })
    .await;
    let url = format!("http://localhost:{}/via.bin", origin.addr.port());
    let job = app.create_job(json!({ "url": url })).await;
    app.wait_for(&id_of(&job), "completed").await;
    assert_eq!(proxy.seen(), [url]);
}

/// A job's own proxy is chosen by whoever submits the job: its name is judged like a URL's.
#[tokio::test]
async fn a_jobs_proxy_named_to_a_denied_address_is_not_used() {
    let proxy = Proxy::start(false).await;
    let app = TestApp::spawn_with(|s| s.allow_loopback = false).await;
    let body = json!({
        "url": "http://example.invalid/x",
        "proxy": format!("http://localhost:{}", proxy.addr.port()),
    });
    let job = app.create_job(body).await;
    let failed = app.wait_for(&id_of(&job), "failed").await;
    assert_eq!(failed["error"]["type"], "address-denied", "{failed:#}");
    assert!(proxy.seen().is_empty(), "the proxy was used");
}

/// Through `socks5://` haul resolves the target's name itself, so it is judged: with loopback
/// denied, `localhost` is refused even though the (trusted) proxy would reach it.
#[tokio::test]
async fn a_socks5_target_name_is_judged_here() {
    let origin = Origin::start().await;
    origin.put("s.bin", content(6, 1_000));
    let socks = Proxy::start(true).await;
    let proxy_url = format!("socks5://{}", socks.addr);
    let app = TestApp::spawn_with(|s| {
        s.allow_loopback = false;
        s.proxy = Some(haul::config::Secret::new(proxy_url));
    })
    .await;
    let url = format!("http://localhost:{}/s.bin", origin.addr.port());
    let (failed, took) = failed_job(&app, &url).await;
    assert_eq!(failed["error"]["type"], "address-denied", "{failed:#}");
    assert!(took < REFUSED_WITHIN, "took {took:?}");
    assert!(socks.seen().is_empty(), "{:?}", socks.seen());
    assert!(origin.all_requests().is_empty());
}

/// A URL named like the daemon's proxy is still judged when haul resolves it itself: through a
/// `socks5://` proxy on `localhost`, and directly when `no_proxy` exempts `localhost` from an
/// HTTP proxy there. With loopback denied, `http://localhost:…` fails with `address-denied`
/// and neither the proxy nor the origin sees a request.
#[tokio::test]
async fn a_url_named_like_the_daemons_proxy_is_judged_when_resolved_here() {
    let origin = Origin::start().await;
    origin.put("t.bin", content(7, 1_000));
    for socks in [true, false] {
        let proxy = Proxy::start(socks).await;
        let scheme = if socks { "socks5" } else { "http" };
        let proxy_url = format!("{scheme}://localhost:{}", proxy.addr.port());
        let app = TestApp::spawn_with(|s| {
            s.allow_loopback = false;
            s.proxy = Some(haul::config::Secret::new(proxy_url));
            s.no_proxy = (!socks).then(|| "localhost".to_owned());
        })
        .await;
        let url = format!("http://localhost:{}/t.bin", origin.addr.port());
        let (failed, took) = failed_job(&app, &url).await;
        assert_eq!(
            failed["error"]["type"], "address-denied",
            "{scheme}: {failed:#}"
        );
        let message = failed["error"]["message"].as_str().unwrap();
        assert!(message.contains("allow_loopback"), "{scheme}: {message}");
        assert!(took < REFUSED_WITHIN, "{scheme}: took {took:?}");
        assert!(proxy.seen().is_empty(), "{scheme}: {:?}", proxy.seen());
        assert!(origin.all_requests().is_empty(), "{scheme}: origin reached");
    }
}

/// The job's callback deliveries, once one for `event` has ended `failed`.
async fn refused_callback(app: &TestApp, id: &str, event: &str) -> Value {
    let path = format!("/v1/jobs/{id}/deliveries");
    let started = Instant::now();
    loop {
        let (_, body) = app.get(&path).await;
        let found = body["deliveries"].as_array().and_then(|all| {
            all.iter()
                .find(|d| d["target"] == "callback" && d["event_type"] == event)
                .cloned()
        });
        if let Some(delivery) = found.filter(|d| d["status"] != "retrying") {
            return delivery;
        }
        assert!(
            started.elapsed() < crate::helpers::DEADLINE,
            "no final {event} callback delivery: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `delivery` was refused by the policy at its first attempt, not retried.
fn assert_refused_once(delivery: &Value) {
    assert_eq!(delivery["status"], "failed", "{delivery:#}");
    assert_eq!(delivery["attempts"], 1, "retried: {delivery:#}");
    let error = delivery["error"].as_str().unwrap();
    assert!(error.contains("allow_loopback"), "{error}");
}

/// A global subscription on `localhost` is the operator's choice and is delivered to with
/// loopback denied; that does not make a job's `callback_url` on `localhost` trusted: it is
/// refused, once, and its receiver gets nothing.
#[tokio::test]
async fn a_subscription_on_localhost_does_not_make_a_callback_there_trusted() {
    let global = Receiver::failing_first(0).await;
    let callback = Receiver::failing_first(0).await;
    let hook = format!("http://localhost:{}/h", global.addr.port());
    let app = TestApp::spawn_with(|s| {
        s.allow_loopback = false;
        s.webhooks = vec![WebhookSubscription {
            url: hook,
            secret: haul::config::Secret::new("s"),
            events: None,
        }];
    })
    .await;
    let body = json!({
        "url": "http://localhost:9/x",
        "callback_url": format!("http://localhost:{}/cb", callback.addr.port()),
    });
    let job = app.create_job(body).await;
    let id = id_of(&job);
    app.wait_for(&id, "failed").await;
    assert_refused_once(&refused_callback(&app, &id, "job.failed").await);
    crate::support::eventually("the global subscription to get job.failed", || {
        global
            .hooks()
            .iter()
            .any(|h| h.json()["type"] == "job.failed")
    })
    .await;
    assert!(callback.hooks().is_empty(), "{:?}", callback.hooks());
}

/// A callback URL's IP literal is judged at every delivery, not only at submission: a job
/// stored while loopback was allowed gets no callback on `127.0.0.1` once the daemon runs
/// with loopback denied.
#[tokio::test]
async fn a_stored_callback_literal_is_judged_again_at_delivery() {
    let receiver = Receiver::failing_first(0).await;
    let origin = Origin::start().await;
    origin.put("held.bin", content(8, 100_000));
    origin.set_faults(
        "held.bin",
        Faults {
            hold_after: Some(10_000),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn().await;
    let body = json!({ "url": origin.url("held.bin"), "callback_url": receiver.url("/cb") });
    let id = id_of(&app.create_job(body).await);
    crate::support::requests_seen(&origin, "held.bin", 1).await;
    app.action(&id, "pause").await;
    app.wait_for(&id, "paused").await;
    let dir = app.stop().await;
    let before = receiver.hooks().len();

    let mut settings = crate::helpers::test_settings(&dir);
    settings.allow_loopback = false;
    let app = TestApp::start(dir, settings).await;
    app.action(&id, "resume").await;
    app.wait_for(&id, "failed").await;
    assert_refused_once(&refused_callback(&app, &id, "job.failed").await);
    assert_eq!(receiver.hooks().len(), before, "{:?}", receiver.hooks());
}
