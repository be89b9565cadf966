//! API security through the real binary: scoped tokens and allowed hosts from the environment,
//! a foreign `Host` refused before any token is looked at.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::daemon::{Daemon, Launch};

const READER: &str = "e2e-reader-TOKEN";
const SUBMITTER: &str = "e2e-submitter-TOKEN";

/// Sends a request with the token and `Host` given; returns the status and the JSON body.
async fn send(
    daemon: &Daemon,
    method: Method,
    path: &str,
    token: Option<&str>,
    host: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = daemon
        .http
        .request(method.clone(), format!("{}{path}", daemon.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(host) = host {
        request = request.header("host", host);
    }
    if method == Method::POST {
        request = request.json(&json!({ "url": "http://127.0.0.1:9/x.bin" }));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn scoped_tokens_and_allowed_hosts_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!(
        "[{{name=\"reader\",token=\"{READER}\",scopes=[\"read\"]}},\
         {{name=\"submitter\",token=\"{SUBMITTER}\",scopes=[\"submit\"]}}]"
    );
    let launch = Launch::in_dir(dir.path())
        .env("HAUL_TOKENS", tokens)
        .env("HAUL_ALLOWED_HOSTS", "[\"haul.test\"]");
    let daemon = Daemon::start(launch).await;
    let get = |token, host| send(&daemon, Method::GET, "/v1/jobs", token, host);
    let post = |token| send(&daemon, Method::POST, "/v1/jobs", token, None);
    assert_eq!(get(Some(READER), None).await.0, StatusCode::OK);
    assert_eq!(
        get(Some(READER), Some("haul.test:7070")).await.0,
        StatusCode::OK
    );
    let (status, problem) = get(None, None).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
    );
    let (status, problem) = post(Some(READER)).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden")),
        "{problem}"
    );
    let (status, job) = post(Some(SUBMITTER)).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let (status, problem) = get(Some(SUBMITTER), None).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    // A DNS-rebinding page names its own host: refused, whatever the token.
    for token in [None, Some(READER)] {
        let (status, problem) = get(token, Some("rebind.example")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{problem}");
        assert_eq!(problem["code"], "host-not-allowed");
    }
    let (_, page) = get(Some(READER), None).await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1), "{page}");
    let log = daemon.log();
    assert!(
        !log.contains(READER) && !log.contains(SUBMITTER),
        "a token was logged:\n{log}"
    );
    assert!(
        log.contains("reader"),
        "the refusal names the token:\n{log}"
    );
}
