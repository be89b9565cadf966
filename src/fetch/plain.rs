//! The client for plain `http://` downloads that no proxy stands between: hyper's own HTTP/1.1
//! client, reading up to [`READ_BUFFER`] bytes per `recv`.
//!
//! reqwest sends everything else (TLS, proxies), but it keeps hyper's default read buffer,
//! which caps a `recv` at about 400 KiB. At full speed the read size is a large part of the
//! kernel's cost: draining the socket in 1 MiB reads took about a tenth less CPU per GiB than
//! in 400 KiB ones, in haul (bench case 1 A/B) as in a bare recv-and-write loop. The answer is
//! handed on as a `reqwest::Response`, so the rest of the engine sees no difference.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::ResponseBuilderExt as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::time::{Instant, Sleep};

use super::address_policy::PolicyResolver;
use super::http::{ClientSettings, request_target};

/// The most one read of a connection takes from its socket. The connection's read buffer
/// grows to it only while reads fill the buffer (a fast link); a slow one keeps small reads.
const READ_BUFFER: usize = 1 << 20;

/// Idle pooled connections are closed after this long (as the reqwest client's are).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// TCP keepalive, as reqwest sets it: a dead peer of a pooled connection is found without a
/// request failing on it.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;

/// An HTTP/1.1 client for `http://` URLs, with the address policy's resolver.
#[derive(Clone)]
pub struct PlainClient {
    inner: Client<HttpConnector<PolicyResolver>, Empty<Bytes>>,
    user_agent: HeaderValue,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl std::fmt::Debug for PlainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainClient").finish_non_exhaustive()
    }
}

/// Why a plain request failed; its cause chain says what happened, as reqwest's errors do.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    #[error("error sending request")]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("an invalid request")]
    Request(#[source] http::Error),
}

/// No bytes arrived for the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("no bytes within {0:?}")]
struct ReadTimedOut(Duration);

impl PlainClient {
    pub fn new(settings: &ClientSettings, resolver: PolicyResolver) -> Result<Self, String> {
        let user_agent = HeaderValue::from_str(&settings.user_agent)
            .map_err(|_| "the user agent is not a valid header value".to_owned())?;
        let mut connector = HttpConnector::new_with_resolver(resolver);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(KEEPALIVE));
        connector.set_keepalive_interval(Some(KEEPALIVE));
        connector.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        // Without a pool timer idle connections are closed only when next taken.
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_max_buf_size(READ_BUFFER)
            .build(connector);
        Ok(Self {
            inner,
            user_agent,
            connect_timeout: settings.connect_timeout,
            read_timeout: settings.read_timeout,
        })
    }

    /// GETs `url` with `headers`, plus what reqwest's requests carry where they do not say
    /// otherwise: the user agent, `Accept: */*` and `Accept-Encoding: identity`. The head must
    /// arrive within the connect timeout plus the read timeout, and each wait for body bytes
    /// within the read timeout.
    pub async fn get(
        &self,
        url: &url::Url,
        mut headers: HeaderMap,
    ) -> Result<reqwest::Response, PlainError> {
        headers
            .entry(header::USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        headers
            .entry(header::ACCEPT_ENCODING)
            .or_insert(HeaderValue::from_static("identity"));
        // As reqwest does: a URL's user and password become Basic credentials, and neither
        // they nor the fragment go on the request line.
        if let Some(credentials) = basic_auth(url) {
            headers.entry(header::AUTHORIZATION).or_insert(credentials);
        }
        let mut request = http::Request::get(request_target(url).as_str())
            .body(Empty::new())
            .map_err(PlainError::Request)?;
        *request.headers_mut() = headers;
        // Connecting has its own timeout; the head then has the read timeout to arrive.
        let within = self.connect_timeout + self.read_timeout;
        let response = tokio::time::timeout(within, self.inner.request(request))
            .await
            .map_err(|_| PlainError::Timeout(within))?
            .map_err(PlainError::Send)?;
        let (parts, body) = response.into_parts();
        let mut builder = http::Response::builder()
            .status(parts.status)
            .version(parts.version)
            .url(url.clone());
        if let Some(headers) = builder.headers_mut() {
            *headers = parts.headers;
        }
        let body = reqwest::Body::wrap(IdleTimeout::new(body, self.read_timeout));
        let response = builder.body(body).map_err(PlainError::Request)?;
        Ok(reqwest::Response::from(response))
    }
}

/// `Authorization: Basic` from the user and password of `url`, if it has either.
fn basic_auth(url: &url::Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    let decode = |raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned()
    };
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// A response body that fails when a read waits `idle` for its next frame. The clock runs only
/// while a read waits, so a body not read for a while (its head judged first) is not failed.
struct IdleTimeout {
    inner: Incoming,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Whether `deadline` is set for the wait under way.
    waiting: bool,
}

impl IdleTimeout {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if !std::mem::replace(&mut this.waiting, true) {
                    let deadline = Instant::now() + this.idle;
                    this.deadline.as_mut().reset(deadline);
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ReadTimedOut(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::AddressPolicy;
    use crate::fetch::address_policy::denied_cause;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn client(policy: AddressPolicy, read_timeout: Duration) -> PlainClient {
        let settings = ClientSettings {
            user_agent: "haul-test".into(),
            // Loopback connects at once; the head's deadline is this plus the read timeout.
            connect_timeout: Duration::from_millis(300),
            read_timeout,
            max_redirects: 0,
            no_proxy: None,
            policy,
        };
        PlainClient::new(&settings, PolicyResolver::new(policy, Vec::new())).unwrap()
    }

    /// A server for one connection: reads the request head, hands it over, and writes `answer`;
    /// then keeps the connection open without a byte more until the test ends.
    async fn serve_once(answer: &'static [u8]) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        serve_once_in(vec![(Duration::ZERO, answer)]).await
    }

    /// As [`serve_once`], writing each part of the answer after its delay.
    async fn serve_once_in(
        parts: Vec<(Duration, &'static [u8])>,
    ) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                socket.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8(head).unwrap());
            for (delay, part) in parts {
                tokio::time::sleep(delay).await;
                socket.write_all(part).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        (port, rx)
    }

    fn url(port: u16, path: &str) -> url::Url {
        url::Url::parse(&format!("http://localhost:{port}{path}")).unwrap()
    }

    #[tokio::test]
    async fn a_get_sends_what_reqwest_would_and_reads_the_body() {
        let (port, head) = serve_once(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nContent-Range: bytes 0-4/10\r\n\r\nhello").await;
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-4"));
        let target = url::Url::parse(&format!(
            "http://us%20er:p%40ss@localhost:{port}/f.bin?x=1#top"
        ))
        .unwrap();
        let response = client(AddressPolicy::default(), Duration::from_secs(5))
            .get(&target, headers)
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(response.url(), &target);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes 0-4/10");
        assert_eq!(response.bytes().await.unwrap(), "hello");
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /f.bin?x=1 http/1.1\r\n"), "{head}");
        for line in [
            "range: bytes=0-4",
            "accept-encoding: identity",
            "user-agent: haul-test",
            // base64 of "us er:p@ss"
            "authorization: basic dxmgzxi6cebzcw==",
        ] {
            assert!(head.contains(line), "{line} missing from {head}");
        }
    }

    #[tokio::test]
    async fn a_body_without_bytes_for_the_read_timeout_fails() {
        let (port, _head) =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes.").await;
        let response = client(AddressPolicy::default(), Duration::from_millis(200))
            .get(&url(port, "/"), HeaderMap::new())
            .await
            .unwrap();
        let mut body = response.bytes_stream();
        assert_eq!(body.next().await.unwrap().unwrap(), "ten bytes.");
        let next = tokio::time::timeout(Duration::from_secs(5), body.next()).await;
        let err = next.expect("the read timeout fired").unwrap().unwrap_err();
        let mut chain = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            chain = format!("{chain}: {c}");
            cause = c.source();
        }
        assert!(chain.contains("no bytes within 200ms"), "{chain}");
    }

    #[tokio::test]
    async fn the_read_timeout_runs_only_while_a_read_waits() {
        let (port, _head) = serve_once_in(vec![
            (
                Duration::ZERO,
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            ),
            (Duration::from_millis(500), b"ten bytes."),
        ])
        .await;
        let response = client(AddressPolicy::default(), Duration::from_millis(300))
            .get(&url(port, "/"), HeaderMap::new())
            .await
            .unwrap();
        // Longer than the read timeout without reading; then the read waits about 100 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(response.bytes().await.unwrap(), "ten bytes.");
    }

    #[tokio::test]
    async fn a_head_that_never_comes_times_out() {
        let (port, _head) = serve_once(b"").await;
        let plain = client(AddressPolicy::default(), Duration::from_millis(200));
        let target = url(port, "/");
        let get = plain.get(&target, HeaderMap::new());
        let err = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .expect("the head's deadline fired")
            .unwrap_err();
        assert!(matches!(err, PlainError::Timeout(_)), "{err:?}");
    }

    #[tokio::test]
    async fn names_are_resolved_through_the_address_policy() {
        let (port, _head) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let policy = AddressPolicy {
            allow_loopback: false,
            ..AddressPolicy::default()
        };
        let err = client(policy, Duration::from_secs(5))
            .get(&url(port, "/"), HeaderMap::new())
            .await
            .unwrap_err();
        let denied = denied_cause(&err).expect("the policy's denial in the cause chain");
        assert_eq!(denied.host, "localhost");
    }
}
