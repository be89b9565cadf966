//! Checks that run before authentication, so that a web page in a browser cannot drive a
//! daemon it can reach (aria2's RPC was used that way to overwrite `~/.ssh/authorized_keys`):
//!
//! - the request head (request line and headers) is at most `max_header_bytes` (431);
//! - the `Host` names the daemon (421): a DNS-rebinding page has its own name in `Host`;
//! - an `Origin`, when sent, is the daemon's own or an allowed one (403): a cross-site form or
//!   `fetch` carries the page's origin, also for `text/plain` bodies, which need no preflight;
//! - a state-changing request without `Origin` that the browser marks `Sec-Fetch-Site:
//!   cross-site` (or `same-site`) is refused (403);
//! - preflights (`OPTIONS`) of allowed origins are answered here, and their responses carry
//!   CORS headers; nothing else gets CORS headers.
//!
//! `/healthz` and `/readyz` skip the `Host` and `Origin` checks: probes often name the daemon
//! by an address it cannot know, and they reveal nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::{ApiError, ErrorCode};

/// Host names every daemon answers to, besides its listen address.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
/// What an allowed origin's scripts may send, and read, across origins.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, last-event-id";
const EXPOSE_HEADERS: &str = "location, retry-after, x-request-id";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// A web origin, normalised: lower-case scheme and host, the port always explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The host of a `Host` header or `host[:port]` setting, normalised (lower case, no trailing
/// dot, IPv6 in brackets); `None` when it is not one.
pub fn parse_host(text: &str) -> Option<String> {
    host_and_port(text).map(|(host, _)| host)
}

fn host_and_port(text: &str) -> Option<(String, Option<u16>)> {
    // An authority may carry user-info; a `Host` may not.
    if text.contains('@') {
        return None;
    }
    let authority: Authority = text.parse().ok()?;
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, authority.port_u16()))
}

/// An `Origin` header or `allowed_origins` entry (`scheme://host[:port]`, http or https).
pub fn parse_origin(text: &str) -> Option<Origin> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return None;
    }
    let (host, port) = host_and_port(rest)?;
    Some(Origin {
        scheme,
        host,
        port: port.unwrap_or(default_port),
    })
}

/// The settings of the checks, compiled.
pub struct Guard {
    /// Every host answered to: the loopback names, the listen address, `allowed_hosts`.
    hosts: Vec<String>,
    /// `allowed_hosts` alone: pages served under these names (any port) may call the API.
    configured_hosts: Vec<String>,
    any_host: bool,
    origins: Vec<Origin>,
    max_header_bytes: usize,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: Vec<String> = self.origins.iter().map(ToString::to_string).collect();
        f.debug_struct("Guard")
            .field("hosts", &self.hosts)
            .field("any_host", &self.any_host)
            .field("origins", &origins)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish()
    }
}

impl Guard {
    /// The checks for a daemon bound to `listen`. Entries that do not parse are skipped (the
    /// settings were validated).
    pub fn new(
        listen: SocketAddr,
        allowed_hosts: &[String],
        allowed_origins: &[String],
        max_header_bytes: usize,
    ) -> Guard {
        let configured_hosts: Vec<String> = allowed_hosts
            .iter()
            .filter(|h| *h != "*")
            .filter_map(|h| parse_host(h))
            .collect();
        let listen_host = match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut hosts: Vec<String> = LOOPBACK_NAMES.map(str::to_owned).to_vec();
        hosts.push(listen_host);
        hosts.extend(configured_hosts.iter().cloned());
        Guard {
            hosts,
            configured_hosts,
            any_host: allowed_hosts.iter().any(|h| h == "*"),
            origins: allowed_origins
                .iter()
                .filter_map(|o| parse_origin(o))
                .collect(),
            max_header_bytes,
        }
    }

    /// Whether the daemon answers to no name but loopback ones and its own address: worth a
    /// warning when it listens on a public address, where clients use some other name.
    pub fn only_default_hosts(&self) -> bool {
        self.configured_hosts.is_empty() && !self.any_host
    }

    fn origin_allowed(&self, origin: &Origin, host: Option<&(String, Option<u16>)>) -> bool {
        let default_port = if origin.scheme == "https" { 443 } else { 80 };
        let same_origin = host.is_some_and(|(name, port)| {
            *name == origin.host && port.unwrap_or(default_port) == origin.port
        });
        same_origin || self.origins.contains(origin) || self.configured_hosts.contains(&origin.host)
    }

    /// The refusal of a request, if it is refused; else its allowed `Origin`, if any.
    fn check(&self, request: &Request) -> Result<Option<HeaderValue>, ApiError> {
        let size = head_bytes(request);
        if size > self.max_header_bytes {
            return Err(ApiError::new(
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request line and headers take {size} bytes; at most {} are accepted",
                    self.max_header_bytes
                ),
            ));
        }
        if matches!(request.uri().path(), "/healthz" | "/readyz") {
            return Ok(None);
        }
        let host = request_host(request);
        if !self.any_host && !host.as_ref().is_some_and(|(h, _)| self.hosts.contains(h)) {
            let shown = host.as_ref().map_or("nothing", |(h, _)| h.as_str());
            tracing::info!(
                http.host = shown,
                "refused a request for host {shown}: not an allowed host"
            );
            return Err(ApiError::new(
                ErrorCode::HostNotAllowed,
                format!(
                    "this daemon does not answer to the host {shown:?}; its operator can add \
                     the name to allowed_hosts"
                ),
            ));
        }
        let headers = request.headers();
        let Some(value) = headers.get(header::ORIGIN) else {
            return cross_site_without_origin(request.method(), headers).map(|()| None);
        };
        let origin = value.to_str().ok().and_then(parse_origin);
        if origin.is_some_and(|o| self.origin_allowed(&o, host.as_ref())) {
            return Ok(Some(value.clone()));
        }
        let shown = String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(200)
            .collect::<String>();
        tracing::info!(http.origin = %shown, "refused a request from origin {shown}: not allowed");
        Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            "requests from this web origin are not allowed; its operator can add it to \
             allowed_origins",
        ))
    }
}

/// Browsers send `Origin` with every state-changing request; when one comes without it but
/// marked as from another site, it is refused all the same.
fn cross_site_without_origin(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS].contains(method);
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.as_bytes().to_ascii_lowercase());
    let foreign = site.is_some_and(|s| s == b"cross-site" || s == b"same-site");
    if safe || !foreign {
        return Ok(());
    }
    tracing::info!(http.method = %method, "refused a cross-site request without an Origin");
    Err(ApiError::new(
        ErrorCode::OriginNotAllowed,
        "state-changing requests from another site are not allowed",
    ))
}

/// The host the request names: its `Host` header, or the URI's authority (HTTP/2).
fn request_host(request: &Request) -> Option<(String, Option<u16>)> {
    match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok().and_then(host_and_port),
        None => request
            .uri()
            .authority()
            .and_then(|a| host_and_port(a.as_str())),
    }
}

/// About the size of the request head as sent: request line and header lines.
fn head_bytes(request: &Request) -> usize {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    request.method().as_str().len() + target + headers + 12
}

/// Applies the checks; answers the preflights of allowed origins and marks their responses.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = match state.api.guard.check(&request) {
        Ok(origin) => origin,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        preflight_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

fn preflight_response() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins_are_normalised() {
        assert_eq!(parse_host("LocalHost.:7070").as_deref(), Some("localhost"));
        assert_eq!(parse_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(parse_host("user@evil"), None);
        assert_eq!(parse_host(""), None);
        assert_eq!(parse_host("a b"), None);
        let origin = parse_origin("HTTPS://UI.example/").unwrap();
        assert_eq!(origin.to_string(), "https://ui.example:443");
        assert_eq!(
            parse_origin("http://ui.example:80"),
            parse_origin("http://ui.example")
        );
        for bad in [
            "null",
            "file://",
            "ftp://h",
            "https://h/path",
            "h:80",
            "https://u@h",
        ] {
            assert!(parse_origin(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_origin_is_allowed_when_it_is_the_daemons_own_or_configured() {
        let guard = Guard::new(
            "127.0.0.1:7070".parse().unwrap(),
            &["haul.example".to_owned()],
            &["https://ui.example".to_owned()],
            16 * 1024,
        );
        let host = Some(("127.0.0.1".to_owned(), Some(7070)));
        let allowed = |o: &str| guard.origin_allowed(&parse_origin(o).unwrap(), host.as_ref());
        assert!(allowed("http://127.0.0.1:7070"));
        assert!(allowed("https://ui.example"));
        assert!(allowed("https://haul.example:8443"));
        assert!(
            !allowed("http://127.0.0.1:3000"),
            "another port is another origin"
        );
        assert!(
            !allowed("http://localhost:7070"),
            "another name is another origin"
        );
        assert!(
            !allowed("http://ui.example"),
            "another scheme is another origin"
        );
        assert!(!allowed("https://evil.example"));
        assert!(!guard.only_default_hosts());
        let any = Guard::new(
            "0.0.0.0:7070".parse().unwrap(),
            &["*".to_owned()],
            &[],
            16 * 1024,
        );
        assert!(any.any_host && any.configured_hosts.is_empty());
        let evil = Some(("evil.example".to_owned(), None));
        let from = |o: &str| any.origin_allowed(&parse_origin(o).unwrap(), evil.as_ref());
        assert!(
            !from("http://*") && !from("https://ui.example"),
            "any host is not any origin"
        );
        assert!(
            from("http://evil.example"),
            "the origin of the host asked for"
        );
    }
}
