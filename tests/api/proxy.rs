//! Proxies: the daemon's (`proxy`), a job's own (`proxy` in the request), and `no_proxy`. The
//! proxies are written here: a plain-HTTP forwarding proxy (absolute-form requests) and a
//! SOCKS5 server; both record what they were asked for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestApp;
use crate::origin::{Origin, content};
use crate::support::{assert_file, id_of};

/// A recording proxy on a free loopback port. Stops when dropped.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    /// What each connection asked for: the request target (HTTP) or `host:port` (SOCKS5).
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub(crate) async fn start(socks: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = if socks {
                        socks5(client, log).await
                    } else {
                        forward(client, log).await
                    };
                });
            }
        });
        Proxy { addr, seen, task }
    }

    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// One absolute-form request (`GET http://host:port/path HTTP/1.1`), sent on to its origin in
/// origin form with `Connection: close` (so the next request comes on a new connection and is
/// recorded too), and the answer relayed back.
async fn forward(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    log.lock().unwrap().push(target.to_owned());
    let url = url::Url::parse(target).map_err(std::io::Error::other)?;
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or(80)
    );
    let mut upstream = TcpStream::connect(&authority).await?;
    let path = &target[url.origin().ascii_serialization().len()..];
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "keep-alive"
        ) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A SOCKS5 server without authentication: greeting, CONNECT (by domain name, as `socks5h`
/// asks, or by IPv4 address), then a relay.
async fn socks5(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    assert_eq!(greeting[0], 5, "SOCKS version 5");
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    assert_eq!(request[..2], [5, 1], "a CONNECT");
    let host = match request[3] {
        3 => {
            let len = usize::from(client.read_u8().await?);
            let mut name = vec![0u8; len];
            client.read_exact(&mut name).await?;
            format!("name:{}", String::from_utf8_lossy(&name))
        }
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            format!("ip:{}", std::net::Ipv4Addr::from(ip))
        }
        other => panic!("address type {other} not handled"),
    };
    let port = client.read_u16().await?;
    log.lock().unwrap().push(format!("{host}:{port}"));
    let target = host.split_once(':').map_or("", |(_, h)| h).to_owned();
    let mut upstream = TcpStream::connect((target.as_str(), port)).await?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn fetch(app: &TestApp, body: serde_json::Value) {
    let job = app.create_job(body).await;
    app.wait_for(&id_of(&job), "completed").await;
}

/// The daemon's proxy carries every download, except to hosts in `no_proxy`.
#[tokio::test]
async fn the_daemons_proxy_carries_downloads_except_to_no_proxy_hosts() {
    let origin = Origin::start().await;
    let body = content(401, 40_000);
    for path in ["via.bin", "direct.bin"] {
        origin.put(path, body.clone());
    }
    let proxy = Proxy::start(false).await;
    let proxy_url = format!("http://{}", proxy.addr);
    let app = TestApp::spawn_with(|s| {
        s.proxy = Some(haul::config::Secret::new(proxy_url));
        s.no_proxy = Some("localhost".into());
    })
    .await;
    fetch(&app, json!({ "url": origin.url("via.bin") })).await;
    let port = origin.addr.port();
    let direct = format!("http://localhost:{port}/direct.bin");
    fetch(&app, json!({ "url": direct })).await;
    assert_file(&app.file("via.bin"), &body);
    assert_file(&app.file("direct.bin"), &body);
    assert_eq!(
        proxy.seen(),
        vec![origin.url("via.bin")],
        "only via.bin went through it"
    );
    assert_eq!(origin.requests("direct.bin").len(), 1);
}

/// A job's own proxy carries that job only; the others keep going direct.
#[tokio::test]
async fn a_jobs_proxy_carries_that_job_only() {
    let origin = Origin::start().await;
    let body = content(402, 40_000);
    for path in ["mine.bin", "theirs.bin"] {
        origin.put(path, body.clone());
    }
    let proxy = Proxy::start(false).await;
    let app = TestApp::spawn().await;
    let proxied =
        json!({ "url": origin.url("mine.bin"), "proxy": format!("http://{}", proxy.addr) });
    fetch(&app, proxied).await;
    fetch(&app, json!({ "url": origin.url("theirs.bin") })).await;
    assert_file(&app.file("mine.bin"), &body);
    assert_eq!(proxy.seen(), vec![origin.url("mine.bin")]);
    // The proxy URL is stored for the worker but never shown.
    let listing = app.get("/v1/jobs").await.1.to_string();
    assert!(!listing.contains(&proxy.addr.to_string()), "{listing}");
}

/// `socks5h`: the proxy gets the host name and resolves it itself.
#[tokio::test]
async fn socks5h_hands_the_host_name_to_the_proxy() {
    let origin = Origin::start().await;
    let body = content(403, 600_000);
    origin.put("s.bin", body.clone());
    let socks = Proxy::start(true).await;
    let app = TestApp::spawn().await;
    let port = origin.addr.port();
    let job = json!({
        "url": format!("http://localhost:{port}/s.bin"),
        "proxy": format!("socks5h://{}", socks.addr),
    });
    fetch(&app, job).await;
    assert_file(&app.file("s.bin"), &body);
    let seen = socks.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| *s == format!("name:localhost:{port}")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_proxy_that_is_not_a_proxy_url_is_refused() {
    let app = TestApp::spawn().await;
    for bad in ["ftp://p:21", "not a url", "socks4://127.0.0.1:1080"] {
        let (status, problem) = app
            .post("/v1/jobs", json!({ "url": "http://h/x", "proxy": bad }))
            .await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert_eq!(problem["code"], "invalid-proxy");
    }
}
