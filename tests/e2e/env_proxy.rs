//! Proxy variables in the daemon's environment (`HTTP_PROXY`, `ALL_PROXY`, …) carry nothing:
//! a proxy would resolve a callback's name itself, out of the address policy's sight. Only a
//! process can show it: the variables are read from the environment when a client is built.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::{DEADLINE, Daemon, Launch};

/// A listener that answers every HTTP request with `status` and counts the requests.
struct Answering {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Answering {
    async fn start(status: &'static str) -> Answering {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // Read what arrives first (the head, usually the body too), then answer
                    // and close: enough for one request per connection.
                    let mut buf = vec![0; 64 * 1024];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
                    let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Answering { addr, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The job's callback delivery of `event` once it is final (delivered or failed).
async fn final_callback(daemon: &Daemon, id: &str, event: &str) -> Value {
    let path = format!("/v1/jobs/{id}/deliveries");
    let started = Instant::now();
    loop {
        let (_, body) = daemon.get(&path).await;
        let found = body["deliveries"].as_array().and_then(|all| {
            all.iter()
                .find(|d| d["target"] == "callback" && d["event_type"] == event)
                .cloned()
        });
        if let Some(delivery) = found.filter(|d| d["status"] != "retrying") {
            return delivery;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no final {event} callback: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With every proxy variable pointing at a listener that answers 502, a job's callback to
/// `127.0.0.1` is still delivered directly, and the listener sees nothing.
#[tokio::test]
async fn callbacks_do_not_go_through_the_environments_proxy() {
    let proxy = Answering::start("502 Bad Gateway").await;
    let receiver = Answering::start("200 OK").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy_url = format!("http://{}", proxy.addr);
    let mut launch = Launch::in_dir(dir.path()).env("HAUL_WEBHOOK_MAX_ATTEMPTS", "1");
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        launch = launch.env(name, proxy_url.clone());
    }
    // An inherited exemption for 127.0.0.1 would hide the proxy.
    launch = launch.env("NO_PROXY", "").env("no_proxy", "");
    let daemon = Daemon::start(launch).await;
    let id = daemon
        .add(json!({
            "url": "http://127.0.0.1:9/x.bin",
            "callback_url": format!("http://{}/cb", receiver.addr),
        }))
        .await;
    daemon.wait_for(&id, "failed").await;
    let delivery = final_callback(&daemon, &id, "job.failed").await;
    assert_eq!(proxy.requests(), 0, "the environment's proxy was used");
    assert_eq!(delivery["status"], "delivered", "{delivery:#}");
    assert!(receiver.requests() > 0);
}
