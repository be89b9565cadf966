//! HTTP details: the shared client, request headers, and what a response tells us.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::proxy::matcher::Matcher;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::FetchError;
use super::address_policy::{AddressPolicy, Category, Denied, PolicyResolver, denied_cause};
use super::plain::PlainClient;
use super::retry::parse_retry_after;
use crate::store::FileMeta;
use crate::telemetry::redact_url;

/// Settings of the shared HTTP client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub user_agent: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_redirects: usize,
    /// Hosts reached without a proxy (`NO_PROXY` syntax); `None`: the environment's
    /// `NO_PROXY` / `no_proxy`.
    pub no_proxy: Option<String>,
    /// Which addresses downloads may connect to.
    pub policy: AddressPolicy,
}

/// How requests follow redirects: how many, and which addresses each hop may lead to.
#[derive(Debug, Clone)]
pub struct Follow {
    pub max_redirects: usize,
    pub policy: AddressPolicy,
    /// The daemon's proxy, if any: a hop named like it is judged by [`get_following`].
    /// (Also for a job with its own proxy, whose client trusts no name: then the check is
    /// only redundant, or refuses a name the job's HTTP proxy would have resolved itself.)
    pub trusted: Option<Arc<TrustedProxy>>,
}

/// The daemon's proxy, whose host name the shared client's resolver does not judge (see
/// [`build_client`]). That resolver sees only a name, not what it is resolved for, so a
/// download URL with the same host would pass unjudged whenever haul itself resolves it:
/// through a `socks5://` proxy (haul resolves targets), or directly when `no_proxy` exempts
/// it. [`get_following`] judges such a hop itself.
#[derive(Debug)]
pub struct TrustedProxy {
    host: String,
    /// `socks5`: haul resolves the target's name (`socks5h`, `http`, `https`: the proxy does).
    resolves_here: bool,
    /// Which targets the proxy carries: the same proxy and `no_proxy` list as the client's.
    routes: Matcher,
}

impl TrustedProxy {
    /// The daemon's proxy `proxy` with the settings' (or the environment's) `no_proxy`.
    pub fn new(settings: &ClientSettings, proxy: &str) -> Option<Self> {
        let url = url::Url::parse(proxy).ok()?;
        let no_proxy = match &settings.no_proxy {
            Some(list) => list.clone(),
            // What `reqwest::NoProxy::from_env` reads.
            None => std::env::var("NO_PROXY")
                .or_else(|_| std::env::var("no_proxy"))
                .unwrap_or_default(),
        };
        Some(Self {
            host: url.host_str()?.to_owned(),
            resolves_here: url.scheme() == "socks5",
            routes: Matcher::builder().all(proxy).no(no_proxy).build(),
        })
    }

    /// Whether `url`'s host is the proxy's name and haul resolves it for the connection.
    fn resolved_here(&self, url: &url::Url) -> bool {
        let Some(host) = url.domain() else {
            return false;
        };
        if !host.eq_ignore_ascii_case(&self.host) {
            return false;
        }
        // An unparsable URI counts as direct: judged, the safe side.
        self.resolves_here
            || url
                .as_str()
                .parse::<http::Uri>()
                .map_or(true, |uri| self.routes.intercept(&uri).is_none())
    }

    /// Judges a hop named like the proxy, when haul resolves it: a lookup of its own, and a
    /// refusal unless the policy allows every address. Every, not any: the client's
    /// resolver hands this name's addresses on unfiltered, so the connection may go to any of
    /// them. (The two lookups are separate, but the name is the operator's proxy's.)
    async fn judge(&self, url: &url::Url, policy: AddressPolicy) -> Result<(), FetchError> {
        if !self.resolved_here(url) {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| FetchError::Network {
                url: redact_url(url),
                message: format!("cannot resolve {host}: {e}"),
            })?
            .collect();
        match addrs
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| !policy.allows(*ip))
        {
            Some(address) => Err(FetchError::AddressDenied(Denied {
                host: host.to_owned(),
                address,
                category: Category::of(address),
            })),
            None => Ok(()),
        }
    }
}

/// The one client every download shares (connection pool, TLS sessions), through `proxy` if
/// one is given.
///
/// No transparent decompression: the bytes stored are the bytes served, so lengths, ranges and
/// checksums all refer to the same thing. Every request says `Accept-Encoding: identity`; a
/// server that encodes anyway has its encoded bytes stored as sent. Redirects are followed
/// by [`get_following`], not by the client, so credentials never leave their origin. Without a
/// proxy, none is taken from the environment: a daemon's proxy is its configuration's choice.
///
/// Every name the client resolves — the URL's host, the host of a `socks5://` proxy's target,
/// the proxy's own host — goes through the address policy, except the host of a `trusted`
/// proxy (the daemon's, chosen by the operator; a target of the same name is judged by
/// [`TrustedProxy`]). A job's proxy is not trusted.
pub fn build_client(
    settings: &ClientSettings,
    proxy: Option<&str>,
    trusted: bool,
) -> Result<HttpClient, FetchError> {
    // Said outright: a request without Accept-Encoding accepts any coding (RFC 9110
    // §12.5.3), and a server may gzip what it would otherwise send as is.
    let mut identity = HeaderMap::new();
    identity.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let trusted_host = proxy
        .filter(|_| trusted)
        .and_then(|p| url::Url::parse(p).ok())
        .and_then(|p| p.host_str().map(str::to_owned));
    let resolver = PolicyResolver::new(settings.policy, trusted_host.into_iter().collect());
    let cannot = |reason: String| FetchError::InvalidResponse {
        url: String::new(),
        reason: format!("cannot build an HTTP client: {reason}"),
    };
    // With a proxy every request goes through reqwest, which knows how to reach it.
    let plain = match proxy {
        None => Some(PlainClient::new(settings, resolver.clone()).map_err(cannot)?),
        Some(_) => None,
    };
    let builder = reqwest::Client::builder()
        .dns_resolver(resolver)
        .user_agent(&settings.user_agent)
        .default_headers(identity)
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30));
    let builder = match proxy {
        None => builder.no_proxy(),
        Some(proxy) => {
            let no_proxy = match &settings.no_proxy {
                Some(list) => reqwest::NoProxy::from_string(list),
                None => reqwest::NoProxy::from_env(),
            };
            let proxy = parse_proxy(proxy).map_err(|reason| FetchError::InvalidResponse {
                url: String::new(),
                reason: format!("the proxy: {reason}"),
            })?;
            builder.proxy(proxy.no_proxy(no_proxy))
        }
    };
    let reqwest = builder.build().map_err(|e| cannot(e.to_string()))?;
    Ok(HttpClient { reqwest, plain })
}

/// A download client: reqwest, and for plain `http://` URLs without a proxy hyper's own
/// client with larger reads ([`PlainClient`]). Cheap to clone: both share their pools.
#[derive(Debug, Clone)]
pub struct HttpClient {
    reqwest: reqwest::Client,
    plain: Option<PlainClient>,
}

impl HttpClient {
    /// GETs `url` with `headers`, following no redirect.
    async fn get(
        &self,
        url: &url::Url,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, FetchError> {
        match &self.plain {
            Some(plain) if url.scheme() == "http" => plain
                .get(url, headers)
                .await
                .map_err(|e| network_error(&e, url)),
            _ => {
                let request = self.reqwest.get(url.clone()).headers(headers);
                request.send().await.map_err(|e| reqwest_error(&e, url))
            }
        }
    }
}

/// `url` as it reaches the server: without the user and password (sent as a header, if at
/// all) and the fragment (never sent).
pub fn request_target(url: &url::Url) -> url::Url {
    let mut target = crate::telemetry::without_userinfo(url);
    target.set_fragment(None);
    target
}

/// A proxy URL: `http`, `https`, `socks5` (names resolved here) or `socks5h` (names resolved
/// by the proxy), with a host. The error never repeats the URL (it may carry a password).
pub fn parse_proxy(raw: &str) -> Result<reqwest::Proxy, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
        return Err(format!(
            "scheme {:?} is not supported; use http, https, socks5 or socks5h",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it has no host".into());
    }
    reqwest::Proxy::all(url).map_err(|_| "not a usable proxy URL".to_owned())
}

/// A job's extra headers plus its bearer token, ready to send.
pub fn request_headers(
    extra: &[(String, String)],
    access_token: Option<&str>,
) -> Result<HeaderMap, FetchError> {
    let mut headers = HeaderMap::new();
    for (name, value) in extra {
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(FetchError::InvalidResponse {
                url: String::new(),
                reason: format!("stored header {name:?} is not valid"),
            });
        };
        value.set_sensitive(true);
        headers.append(name, value);
    }
    if let Some(token) = access_token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            FetchError::InvalidResponse {
                url: String::new(),
                reason: "the access token contains characters not allowed in a header".into(),
            }
        })?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// GETs `start`, following up to `max_redirects` redirects. `secret` (the job's headers and
/// token, or a credential rule's) is sent only to the origin — scheme, host and port — of
/// `url`, the URL the credentials belong to: a redirect to another host or port, or from https
/// to http, loses them, whatever their names (`Authorization`, `Cookie`, `X-Api-Key`, …).
/// `start` is `url` itself or where its redirects led before. `always` (Range, If-Range) goes
/// everywhere.
///
/// Each hop's URL is checked before it is requested: an IP literal the address policy denies
/// fails with `address-denied` without a connection (names are judged by the client's
/// resolver, a name it trusts by [`TrustedProxy`]), and a redirect to anything but http(s)
/// fails the request.
pub async fn get_following(
    client: &HttpClient,
    (start, url): (&url::Url, &url::Url),
    secret: &HeaderMap,
    always: &HeaderMap,
    follow: &Follow,
) -> Result<reqwest::Response, FetchError> {
    let mut current = start.clone();
    for _ in 0..=follow.max_redirects {
        follow
            .policy
            .check_url(&current)
            .map_err(FetchError::AddressDenied)?;
        if let Some(trusted) = &follow.trusted {
            trusted.judge(&current, follow.policy).await?;
        }
        let mut headers = always.clone();
        if !secret.is_empty() && current.origin() == url.origin() {
            headers.extend(secret.clone());
        }
        let response = client.get(&current, headers).await?;
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok());
        let (true, Some(location)) = (response.status().is_redirection(), location) else {
            return Ok(response);
        };
        let next = current
            .join(location)
            .map_err(|e| FetchError::InvalidResponse {
                url: redact_url(&current),
                reason: format!("a redirect to an invalid location: {e}"),
            })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(FetchError::InvalidResponse {
                url: redact_url(&current),
                reason: format!(
                    "a redirect to a {}: URL; only http and https are followed",
                    next.scheme()
                ),
            });
        }
        current = next;
    }
    Err(FetchError::TooManyRedirects {
        url: redact_url(url),
    })
}

/// `Content-Range: bytes START-END/TOTAL` (END inclusive; TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end_inclusive: u64,
    pub total: Option<u64>,
}

/// Parses a satisfied byte range; `None` for anything else (including `bytes */N`).
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end_inclusive: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let fits = end_inclusive >= start && total.is_none_or(|t| end_inclusive < t);
    fits.then_some(ContentRange {
        start,
        end_inclusive,
        total,
    })
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The validators and length a response declares.
pub fn response_meta(response: &reqwest::Response) -> FileMeta {
    let headers = response.headers();
    FileMeta {
        total: match response.status().as_u16() {
            206 => header_str(headers, header::CONTENT_RANGE)
                .and_then(|v| parse_content_range(&v))
                .and_then(|r| r.total),
            _ => response.content_length(),
        },
        etag: header_str(headers, header::ETAG),
        last_modified: header_str(headers, header::LAST_MODIFIED),
    }
}

/// What to send as `If-Range`: a strong ETag, else Last-Modified. Weak ETags are not allowed
/// in `If-Range` (RFC 9110 §13.1.5); with neither, resuming is unsafe.
pub fn if_range_value(meta: &FileMeta) -> Option<&str> {
    match &meta.etag {
        Some(etag) if !etag.starts_with("W/") => Some(etag),
        _ => meta.last_modified.as_deref(),
    }
}

/// The error for a non-success status, with `Retry-After` if given.
pub fn status_error(response: &reqwest::Response) -> FetchError {
    FetchError::Status {
        status: response.status().as_u16(),
        retry_after: header_str(response.headers(), header::RETRY_AFTER)
            .and_then(|v| parse_retry_after(&v)),
        url: redact_url(response.url()),
    }
}

/// Maps a reqwest failure to a fetch error (redirect loops are terminal, the rest as
/// [`network_error`]).
fn reqwest_error(err: &reqwest::Error, url: &url::Url) -> FetchError {
    if err.is_redirect() {
        return FetchError::TooManyRedirects {
            url: redact_url(err.url().unwrap_or(url)),
        };
    }
    network_error(err, err.url().unwrap_or(url))
}

/// A request that failed before its answer arrived, or a body that broke off.
pub fn network_error(err: &(dyn std::error::Error + 'static), url: &url::Url) -> FetchError {
    let url = redact_url(url);
    // The resolver refused every address of the name: not a network failure to retry.
    if let Some(denied) = denied_cause(err) {
        return FetchError::AddressDenied(denied.clone());
    }
    // The cause chain says what actually happened ("connection refused", "operation timed out").
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    FetchError::Network {
        url,
        message: crate::telemetry::redact_text(&message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-19/100"),
            Some(ContentRange {
                start: 10,
                end_inclusive: 19,
                total: Some(100)
            })
        );
        assert_eq!(parse_content_range("bytes 0-0/*").unwrap().total, None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 20-10/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn if_range_prefers_a_strong_etag() {
        let mut meta = FileMeta {
            total: Some(1),
            etag: Some("\"abc\"".into()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
        };
        assert_eq!(if_range_value(&meta), Some("\"abc\""));
        meta.etag = Some("W/\"abc\"".into());
        assert_eq!(if_range_value(&meta), meta.last_modified.as_deref());
        meta.last_modified = None;
        assert_eq!(if_range_value(&meta), None);
    }

    #[test]
    fn tokens_become_sensitive_authorization_headers() {
        let headers = request_headers(&[("x-a".into(), "1".into())], Some("tok")).unwrap();
        assert_eq!(headers[header::AUTHORIZATION], "Bearer tok");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert!(format!("{headers:?}").contains("Sensitive"));
    }
}

#[cfg(test)]
mod content_range_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any satisfied range written out reads back as itself.
        #[test]
        fn a_written_range_reads_back(
            start in any::<u64>(),
            len in any::<u64>(),
            beyond in proptest::option::of(1u64..1 << 20),
        ) {
            let end = start.saturating_add(len);
            let total = beyond.map(|b| end.saturating_add(b)).filter(|&t| t > end);
            let text = match total {
                Some(t) => format!("bytes {start}-{end}/{t}"),
                None => format!("bytes {start}-{end}/*"),
            };
            let parsed = parse_content_range(&text);
            prop_assert_eq!(parsed, Some(ContentRange { start, end_inclusive: end, total }));
        }

        /// Whatever a server sends, parsing never panics, and what it accepts is a range that
        /// fits: start ≤ end < total.
        #[test]
        fn any_header_parses_to_a_range_that_fits_or_nothing(
            value in "(bytes )?[0-9 ]{0,22}-?[0-9 ]{0,22}/?([0-9]{0,22}|\\*)|\\PC{0,40}",
        ) {
            if let Some(range) = parse_content_range(&value) {
                prop_assert!(range.start <= range.end_inclusive);
                prop_assert!(range.total.is_none_or(|t| range.end_inclusive < t));
            }
        }
    }
}
