//! Credential rules from the settings, and credentials across redirects: a rule's token and
//! headers reach the URLs it matches; a job's own win; nothing secret reaches another origin
//! (another port of the same host included), on the first request or on any range; and an
//! expired signed link a redirect led to is resolved again from the original URL.

use haul::config::{CredentialRule, Secret};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::origin::{Faults, Origin, Seen, content};
use crate::support::{assert_file, id_of};

const RULE_TOKEN: &str = "RULE-TOKEN-7f3a";
const RULE_KEY: &str = "RULE-KEY-19c2";

fn rule(host: Option<&str>, regex: Option<&str>) -> CredentialRule {
    CredentialRule {
        host: host.map(str::to_owned),
        url_regex: regex.map(str::to_owned),
        token: Some(Secret::new(RULE_TOKEN)),
        headers: [("X-Api-Key".to_owned(), Secret::new(RULE_KEY))].into(),
    }
}

async fn run(app: &TestApp, body: Value) -> Value {
    let job = app.create_job(body).await;
    app.wait_for(&id_of(&job), "completed").await
}

/// The secret headers a request carried.
fn carried(seen: &Seen) -> (Option<String>, Option<String>, Option<String>) {
    (
        seen.authorization.clone(),
        seen.header("x-api-key").map(str::to_owned),
        seen.header("cookie").map(str::to_owned),
    )
}

#[tokio::test]
async fn a_rule_attaches_its_token_to_matching_urls_only() {
    let origin = Origin::start().await;
    let body = content(301, 20_000);
    for path in ["private/a.bin", "public/b.bin"] {
        origin.put(path, body.clone());
    }
    let app = TestApp::spawn_with(|s| {
        s.credentials = vec![rule(None, Some(r"^http://127\.0\.0\.1:\d+/private/"))];
    })
    .await;
    run(&app, json!({ "url": origin.url("private/a.bin") })).await;
    run(&app, json!({ "url": origin.url("public/b.bin") })).await;
    assert_file(&app.file("a.bin"), &body);
    assert_eq!(
        carried(&origin.requests("private/a.bin")[0]),
        (
            Some(format!("Bearer {RULE_TOKEN}")),
            Some(RULE_KEY.into()),
            None
        )
    );
    assert_eq!(
        carried(&origin.requests("public/b.bin")[0]),
        (None, None, None),
        "a URL no rule matches gets nothing"
    );
}

#[tokio::test]
async fn a_jobs_own_token_and_headers_win_over_the_rules() {
    let origin = Origin::start().await;
    origin.put("a.bin", content(302, 10_000));
    let app = TestApp::spawn_with(|s| s.credentials = vec![rule(Some("127.0.0.1"), None)]).await;
    let job = json!({
        "url": origin.url("a.bin"),
        "access_token": "JOB-TOKEN",
        "headers": { "Cookie": "session=JOB" },
    });
    run(&app, job).await;
    assert_eq!(
        carried(&origin.requests("a.bin")[0]),
        (
            Some("Bearer JOB-TOKEN".into()),
            Some(RULE_KEY.into()),
            Some("session=JOB".into())
        ),
        "the job's token replaces the rule's; the rule's other headers stay"
    );
}

/// A large file behind a redirect to another port of the same host: the rule matches that host
/// too, yet neither the rule's credentials nor the job's cookie reach the other port, on the
/// probe or on any of the ranges that go straight to the redirect's target.
#[tokio::test]
async fn nothing_secret_follows_a_redirect_to_another_port() {
    let (named, other) = (Origin::start().await, Origin::start().await);
    assert_ne!(named.addr.port(), other.addr.port());
    let body = content(303, 3_000_000);
    other.put("x.bin", body.clone());
    // Throttled responses: more connections pay, so the file goes down several ranges.
    other.set_faults(
        "x.bin",
        Faults {
            rate: Some(4_000_000),
            ..Faults::default()
        },
    );
    named.put("x.bin", content(0, 1));
    named.set_faults(
        "x.bin",
        Faults {
            redirect_to: Some(other.url("x.bin")),
            ..Faults::default()
        },
    );
    let app = TestApp::spawn_with(|s| s.credentials = vec![rule(Some("127.0.0.1"), None)]).await;
    let job = json!({
        "url": named.url("x.bin"),
        "headers": { "Cookie": "session=JOB-COOKIE" },
        "min_segment_size": 65_536,
    });
    let done = run(&app, job).await;
    assert_file(&app.file("x.bin"), &body);
    assert_eq!(
        carried(&named.requests("x.bin")[0]),
        (
            Some(format!("Bearer {RULE_TOKEN}")),
            Some(RULE_KEY.into()),
            Some("session=JOB-COOKIE".into())
        )
    );
    let ranges = other.requests("x.bin");
    assert!(ranges.len() > 1, "the file went down several ranges");
    for seen in &ranges {
        assert_eq!(carried(seen), (None, None, None), "{seen:?}");
    }
    // The redirect is resolved once: ranges go straight to its target.
    assert!(named.requests("x.bin").len() < ranges.len());
    // No API answer about the job shows a secret.
    let id = id_of(&done);
    for path in [format!("/v1/jobs/{id}"), "/v1/jobs".to_owned()] {
        let text = app.get(&path).await.1.to_string();
        for secret in [RULE_TOKEN, RULE_KEY, "JOB-COOKIE"] {
            assert!(!text.contains(secret), "{path} shows a secret: {text}");
        }
    }
}

/// `/signed` redirects to `/blob?sig=1`; after a few ranges that signature expires (403) and
/// `/signed` hands out `sig=2`. The ranges left are fetched from the new location and the file
/// is whole.
#[tokio::test]
async fn an_expired_signed_link_is_resolved_again() {
    let origin = Origin::start().await;
    let body = content(304, 3_000_000);
    origin.put("blob", body.clone());
    origin.put("signed", content(0, 1));
    let signed = |sig: u32| Faults {
        redirect_to: Some(format!("/blob?sig={sig}")),
        ..Faults::default()
    };
    let blob = |sig: u32| Faults {
        require_query: Some(format!("sig={sig}")),
        // Slow enough that the file needs many ranges, and some are still to come.
        rate: Some(4_000_000),
        ..Faults::default()
    };
    origin.set_faults("signed", signed(1));
    origin.set_faults_after("signed", 1, signed(2));
    origin.set_faults("blob", blob(1));
    origin.set_faults_after("blob", 3, blob(2));
    let app = TestApp::spawn().await;
    let job = json!({ "url": origin.url("signed"), "min_segment_size": 65_536 });
    run(&app, job).await;
    assert_file(&app.file("signed"), &body);
    let blobs = origin.requests("blob");
    let refused = blobs.iter().filter(|s| s.status == 403).count();
    let fresh = blobs
        .iter()
        .filter(|s| s.query.as_deref() == Some("sig=2") && s.status == 206)
        .count();
    assert!(refused >= 1, "the old signature expired: {blobs:?}");
    assert!(fresh >= 1, "ranges went on from the new location");
    let resolutions = origin.requests("signed").len();
    assert!(
        (2..blobs.len()).contains(&resolutions),
        "resolved at the start and again after the 403, not per range: {resolutions} of {}",
        blobs.len()
    );
}
