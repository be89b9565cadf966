//! Webhooks against real receivers: a receiver that fails at first still gets every event of
//! a job, signed; a dead or hanging receiver does not hold a job up; the delivery log shows
//! the attempts; secrets never travel in a payload.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::contract::{
    SMALL, SseReader, assert_problem, eventually, job_ids, origin, request, send,
};
use crate::helpers::TestApp;
use crate::receiver::{Hook, Receiver, refusing_url};
use haul::config::{Secret, WebhookSubscription};

const SUBSCRIPTION_SECRET: &str = "subscription-secret";
const CALLBACK_SECRET: &str = "callback-secret";
const ACCESS_TOKEN: &str = "ACCESS-TOKEN-never-sent";
const COOKIE: &str = "session=COOKIE-never-sent";

fn subscription(url: &str, secret: &str) -> WebhookSubscription {
    WebhookSubscription {
        url: url.to_owned(),
        secret: Secret::new(secret),
        events: None,
    }
}

/// The job's deliveries as the API lists them.
async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/v1/jobs/{id}/deliveries")).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

/// The receiver's requests about job `id`, each delivery once (its first request), in order.
fn distinct_deliveries(hooks: &[Hook], id: &str) -> Vec<Value> {
    let mut seen = HashSet::new();
    hooks
        .iter()
        .filter(|hook| hook.json()["job_id"] == id)
        .filter(|hook| seen.insert(hook.header("x-haul-delivery").to_owned()))
        .map(Hook::json)
        .collect()
}

fn assert_signed_and_clean(hooks: &[Hook], secret: &str) {
    for hook in hooks {
        assert!(hook.signed_with(secret), "bad signature: {hook:?}");
        assert_eq!(hook.header("content-type"), "application/json");
        assert_eq!(hook.header("x-haul-event"), hook.json()["type"]);
        assert!(
            uuid::Uuid::parse_str(hook.header("x-haul-delivery")).is_ok(),
            "{hook:?}"
        );
        let text = String::from_utf8_lossy(&hook.body);
        for secret in [
            ACCESS_TOKEN,
            COOKIE,
            "COOKIE-never-sent",
            SUBSCRIPTION_SECRET,
            CALLBACK_SECRET,
        ] {
            assert!(!text.contains(secret), "{secret} in a payload: {text}");
        }
        for (name, value) in &hook.headers {
            let value = value.to_str().unwrap_or("");
            assert!(
                !value.contains(ACCESS_TOKEN) && !value.contains("COOKIE-never-sent"),
                "{name}: {value}"
            );
        }
    }
}

#[tokio::test]
async fn a_receiver_that_fails_twice_still_gets_every_event_in_order_signed() {
    let subscribed = Receiver::failing_first(2).await;
    let called_back = Receiver::failing_first(2).await;
    let hook_url = subscribed.url("/sub");
    let app = TestApp::spawn_with(|s| {
        s.webhooks = vec![subscription(&hook_url, SUBSCRIPTION_SECRET)];
        s.webhook_secret = Some(Secret::new(CALLBACK_SECRET));
        s.webhook_retry_base_delay_ms = 10;
        s.webhook_retry_max_delay_ms = 50;
        s.webhook_max_attempts = 4;
    })
    .await;
    let origin = origin().await;
    let mut stream = SseReader::open(&app, "/v1/events").await;
    let job = app
        .create_job(json!({
            "url": origin.url(SMALL),
            "callback_url": called_back.url("/cb?token=RECEIVER-TOKEN"),
            "access_token": ACCESS_TOKEN,
            "headers": {"Cookie": COOKIE},
        }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(
        !job.to_string().contains("RECEIVER-TOKEN"),
        "the callback URL is never returned: {job}"
    );
    let events: Vec<Value> = stream
        .until(|e| e.event == "job.completed")
        .await
        .into_iter()
        .map(|e| e.data)
        .filter(|data| data["job_id"] == id.as_str())
        .collect();
    app.wait_for(&id, "completed").await;
    let kinds: Vec<&Value> = events.iter().map(|e| &e["type"]).collect();
    assert!(kinds.len() >= 3, "queued, started, …, completed: {kinds:?}");
    for (receiver, secret) in [
        (&subscribed, SUBSCRIPTION_SECRET),
        (&called_back, CALLBACK_SECRET),
    ] {
        assert_got_every_event(receiver, secret, &id, &events).await;
    }
    assert_delivery_log(&app, &id, &events).await;
}

/// Each event reached the receiver, signed, and after de-duplication by `X-Haul-Delivery`
/// the receiver saw exactly `events`, in order; its first delivery needed three attempts.
async fn assert_got_every_event(receiver: &Receiver, secret: &str, id: &str, events: &[Value]) {
    eventually("every event delivered", async || {
        let hooks = receiver.hooks();
        let delivered: HashSet<&str> = hooks
            .iter()
            .filter(|h| h.answered == 200)
            .map(|h| h.header("x-haul-delivery"))
            .collect();
        let all: HashSet<&str> = hooks.iter().map(|h| h.header("x-haul-delivery")).collect();
        all.len() >= events.len() && delivered == all
    })
    .await;
    let hooks = receiver.hooks();
    assert_signed_and_clean(&hooks, secret);
    assert_eq!(
        distinct_deliveries(&hooks, id),
        events,
        "exactly the job's events, in order, as the event stream carried them"
    );
    // The first delivery was tried three times, with the same id and the same bytes.
    let first = hooks[0].header("x-haul-delivery");
    let tries: Vec<&Hook> = hooks
        .iter()
        .filter(|h| h.header("x-haul-delivery") == first)
        .collect();
    assert_eq!(
        tries.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(tries.iter().all(|h| h.body == tries[0].body));
}

/// The delivery log: each event once per receiver, delivered, the first after three attempts.
async fn assert_delivery_log(app: &TestApp, id: &str, events: &[Value]) {
    eventually("the delivery log to be complete", async || {
        let log = deliveries(app, id).await;
        log.len() == 2 * events.len() && log.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let log = deliveries(app, id).await;
    let text = Value::from(log.clone()).to_string();
    assert!(
        !text.contains("RECEIVER-TOKEN"),
        "URLs are redacted: {text}"
    );
    for target in ["subscription", "callback"] {
        let mine: Vec<&Value> = log.iter().filter(|d| d["target"] == target).collect();
        let seqs: Vec<&Value> = mine.iter().map(|d| &d["event_seq"]).collect();
        let expected: Vec<&Value> = events.iter().map(|e| &e["seq"]).collect();
        assert_eq!(seqs, expected, "{target}");
        assert_eq!(
            (&mine[0]["attempts"], &mine[0]["http_status"]),
            (&json!(3), &json!(200)),
            "{:#}",
            mine[0]
        );
        assert!(mine[1..].iter().all(|d| d["attempts"] == 1), "{mine:#?}");
        assert!(mine.iter().all(|d| d["delivered_at"].is_string()));
    }
}

#[tokio::test]
async fn a_dead_or_hanging_receiver_does_not_hold_a_job_up() {
    let hanging = Receiver::hanging().await;
    let refused = refusing_url().await;
    let hanging_url = hanging.url("/hang");
    let dead_url = refused.clone();
    let app = TestApp::spawn_with(|s| {
        s.webhooks = vec![
            subscription(&dead_url, SUBSCRIPTION_SECRET),
            subscription(&hanging_url, SUBSCRIPTION_SECRET),
        ];
        // Far longer than the job takes: a webhook that held it up would show.
        s.webhook_timeout_secs = 60;
        s.webhook_queue_capacity = 1;
    })
    .await;
    let origin = origin().await;
    let started = Instant::now();
    let id = app
        .create_job(json!({"url": origin.url(SMALL), "callback_url": refused}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for(&id, "completed").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the job took {:?}",
        started.elapsed()
    );
    eventually("the hanging receiver to be called", async || {
        !hanging.hooks().is_empty()
    })
    .await;
    // The log shows a failed attempt on the dead receiver, and the deliveries a full queue
    // turned away (one in flight, one queued: the job has more events than that).
    eventually("the delivery log to show the failures", async || {
        let log = deliveries(&app, &id).await;
        let retried = log.iter().any(|d| {
            d["status"] == "retrying"
                && d["attempts"].as_u64() >= Some(1)
                && d["http_status"].is_null()
                && d["error"].as_str().is_some_and(|e| !e.is_empty())
        });
        let dropped = |url: &str| {
            log.iter().any(|d| {
                d["status"] == "dropped"
                    && d["attempts"] == 0
                    && d["url"] == url
                    && d["error"].as_str().is_some_and(|e| e.contains("waiting"))
            })
        };
        retried && dropped(&hanging_url) && dropped(&refused)
    })
    .await;
}

#[tokio::test]
async fn a_callback_url_must_be_http_or_https() {
    let app = TestApp::spawn().await;
    let reply =
        send(request(&app, Method::POST, "/v1/jobs").json(
            &json!({"url": "http://127.0.0.1:9/x", "callback_url": "ftp://hooks.example/in"}),
        ))
        .await;
    let problem = assert_problem(&reply, 422, "invalid-callback-url");
    assert!(
        problem["detail"].as_str().unwrap().contains("callback_url"),
        "{problem}"
    );
    assert!(job_ids(&app).await.is_empty(), "nothing was queued");
}

#[tokio::test]
async fn the_deliveries_of_an_unknown_or_malformed_id_are_a_problem() {
    let app = TestApp::spawn().await;
    let unknown = format!("/v1/jobs/{}/deliveries", uuid::Uuid::new_v4());
    assert_problem(
        &send(request(&app, Method::GET, &unknown)).await,
        404,
        "job-not-found",
    );
    assert_problem(
        &send(request(&app, Method::GET, "/v1/jobs/nope/deliveries")).await,
        400,
        "invalid-job-id",
    );
}

#[tokio::test]
async fn without_a_configured_secret_callbacks_are_signed_with_the_generated_one() {
    let receiver = Receiver::failing_first(0).await;
    let app = TestApp::spawn().await;
    let origin = origin().await;
    let id = app
        .create_job(json!({"url": origin.url(SMALL), "callback_url": receiver.url("/cb")}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for(&id, "completed").await;
    eventually("the completion to be called back", async || {
        receiver
            .hooks()
            .iter()
            .any(|h| h.json()["type"] == "job.completed")
    })
    .await;
    let path = app.dir.path().join("data").join("webhook-secret");
    let secret = std::fs::read_to_string(&path).unwrap();
    let hooks = receiver.hooks();
    assert!(
        hooks.iter().all(|h| h.signed_with(secret.trim())),
        "{hooks:?}"
    );
}

#[tokio::test]
async fn a_subscription_gets_only_the_event_types_it_asked_for() {
    let receiver = Receiver::failing_first(0).await;
    let url = receiver.url("/done");
    let app = TestApp::spawn_with(|s| {
        s.webhooks = vec![WebhookSubscription {
            events: Some(vec!["job.completed".into(), "job.failed".into()]),
            ..subscription(&url, SUBSCRIPTION_SECRET)
        }];
    })
    .await;
    let origin = origin().await;
    let id = app.add(&origin.url(SMALL)).await;
    app.wait_for(&id, "completed").await;
    eventually("the completion to be delivered", async || {
        !receiver.hooks().is_empty()
    })
    .await;
    let kinds: Vec<String> = distinct_deliveries(&receiver.hooks(), &id)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["job.completed"]);
}
