//! A webhook receiver on `127.0.0.1:0` that records every request it gets, and misbehaves on
//! purpose: it can answer 500 to its first requests, or never answer at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use tokio_util::sync::CancellationToken;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered (0: it never answered).
    pub answered: u16,
}

impl Hook {
    /// A header as text ("" when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Whether `X-Haul-Signature` is the HMAC-SHA256 of the exact body under `secret`,
    /// checked in constant time as a receiver should.
    pub fn signed_with(&self, secret: &str) -> bool {
        let Some(hex_mac) = self.header("x-haul-signature").strip_prefix("sha256=") else {
            return false;
        };
        let Ok(given) = hex::decode(hex_mac) else {
            return false;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        mac.verify_slice(&given).is_ok()
    }
}

#[derive(Default)]
struct Shared {
    hooks: Mutex<Vec<Hook>>,
    /// Requests still to be answered with 500.
    failures_left: AtomicUsize,
    /// Never answer.
    hang: bool,
}

/// A running receiver. Stops when dropped.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    /// A receiver that answers 500 to its first `failures` requests, then 200.
    pub async fn failing_first(failures: usize) -> Receiver {
        Self::start(Shared {
            failures_left: AtomicUsize::new(failures),
            ..Shared::default()
        })
        .await
    }

    /// A receiver that accepts requests and never answers them.
    pub async fn hanging() -> Receiver {
        Self::start(Shared {
            hang: true,
            ..Shared::default()
        })
        .await
    }

    async fn start(shared: Shared) -> Receiver {
        let shared = Arc::new(shared);
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            // Dropping the server drops its connections, hanging ones included.
            tokio::select! {
                served = axum::serve(listener, app) => served.unwrap(),
                () = token.cancelled() => {}
            }
        });
        Receiver { addr, shared, stop }
    }

    /// The URL of a path on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Every request so far, in arrival order.
    pub fn hooks(&self) -> Vec<Hook> {
        self.shared.hooks.lock().unwrap().clone()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let fail = shared
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answer = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let answered = if shared.hang { 0 } else { answer.as_u16() };
    shared.hooks.lock().unwrap().push(Hook {
        headers,
        body,
        answered,
    });
    if shared.hang {
        std::future::pending::<()>().await;
    }
    answer
}

/// A loopback address where nothing listens: connections are refused.
pub async fn refusing_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hooks")
}
