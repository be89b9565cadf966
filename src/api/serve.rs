//! The HTTP server loop: what `axum::serve` does, plus the connection settings it hides.
//!
//! hyper buffers a request head up to a limit before the router sees it; `axum::serve` leaves
//! that at hyper's ~400 KiB. Here it follows `max_header_bytes` (twice it: up to the limit, the
//! guard answers 431 with a problem body; beyond twice, hyper answers a bare 431 and closes),
//! and a head must arrive within [`HEADER_READ_TIMEOUT`] (slow-loris clients). Each connection's
//! peer address is given to the handlers as `ConnectInfo` (the rate limit's client).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Longest a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper refuses a read buffer smaller than this.
const MIN_BUFFER: usize = 8 * 1024;
/// Pause after a failed `accept` (out of file descriptors, most often) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` fires, then lets open connections finish
/// their requests (event streams end on the same signal) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_header_bytes: usize,
    shutdown: CancellationToken,
) {
    let builder = builder(max_header_bytes);
    let graceful = GracefulShutdown::new();
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error.message = %err, "cannot accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = router
            .clone()
            .map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tasks.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(peer = %peer, error.message = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    tasks.close();
    tasks.wait().await;
}

fn builder(max_header_bytes: usize) -> Builder<TokioExecutor> {
    let limit = max_header_bytes.saturating_mul(2).max(MIN_BUFFER);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(limit);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limit).unwrap_or(u32::MAX));
    builder
}
