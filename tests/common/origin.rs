//! A test origin server on `127.0.0.1:0` that speaks single ranges, ETag, Last-Modified and
//! If-Range, and misbehaves on purpose when told to. It logs every request so tests can prove
//! which bytes were fetched.

#![allow(dead_code)] // Each test binary uses a different part of it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Deterministic pseudo-random content: the same `(seed, len)` always gives the same bytes.
pub fn content(seed: u64, len: usize) -> Bytes {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
    Bytes::from(out)
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Ways a resource can misbehave. All default to "behave".
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Close the connection after sending this many body bytes, on the next `drop_times`
    /// responses (0 means every response).
    pub drop_after: Option<u64>,
    pub drop_times: u32,
    /// Send a range response this many bytes shorter than its `Content-Range` says, ending
    /// the body cleanly (its `Content-Length` matches what is sent), on the next
    /// `short_times` 206 responses (0 means every one).
    pub short_by: Option<u64>,
    pub short_times: u32,
    /// Statuses to answer, in order, before serving normally: `(status, Retry-After)`.
    pub statuses: VecDeque<(u16, Option<String>)>,
    /// Answer every request with 200 and the whole body, ignoring `Range`.
    pub ignore_range: bool,
    /// Send the body chunked, without `Content-Length` (and with `*` as the size in
    /// `Content-Range`).
    pub no_content_length: bool,
    /// Send neither ETag nor Last-Modified.
    pub no_validators: bool,
    /// Send this many bytes per second at most (in 16 KiB steps).
    pub rate: Option<u64>,
    /// After sending this many body bytes, stop sending but keep the connection open.
    pub stall_after: Option<u64>,
    /// After sending this many body bytes, wait until [`Origin::release`] is called for the
    /// path, then go on (a stall the test ends). Each response counts its own bytes.
    pub hold_after: Option<u64>,
    /// Take every `If-Range` for stale and answer with 200 and the whole body (as a load
    /// balancer does whose servers give the same file different ETags).
    pub stale_if_range: bool,
    /// Serve the asked range even when `If-Range` no longer matches (a server that ignores
    /// `If-Range`, so a client must check the validators of a 206 itself).
    pub ignore_if_range: bool,
    /// The first response that gets to this byte of the file stops sending there for good
    /// (a connection that hangs mid-file); later responses pass it.
    pub stall_once_at: Option<u64>,
    /// Answer `302 Found` with this `Location` (absolute or relative) instead of the body.
    pub redirect_to: Option<String>,
    /// Answer `403 Forbidden` unless the request's query is exactly this (a signed link: a
    /// test moves it on to expire the old signature).
    pub require_query: Option<String>,
    /// Send this `Content-Disposition` (raw: UTF-8 goes out as bytes, as some servers do).
    pub content_disposition: Option<String>,
    /// Answer a range this many bytes later than asked (`Content-Range` and body agree with
    /// each other, not with the request), on the next `shift_times` 206 responses (0: every
    /// one).
    pub shift_range: Option<u64>,
    pub shift_times: u32,
    /// Send this many bytes of junk after the asked range of a 206 (counted in its
    /// `Content-Length`; the `Content-Range` stays what was asked): more bytes than asked.
    pub extra_bytes: Option<u64>,
    /// Announce a `Content-Length` this many bytes longer than the body sent: the body ends
    /// early and the connection closes.
    pub long_by: Option<u64>,
    /// Announce the file as this many bytes (a 200's `Content-Length`, a 206's `Content-Range`
    /// total and end) while sending only the bytes it has (say 1 PB for a small file).
    pub announce_len: Option<u64>,
    /// Send this `Content-Encoding` with the body as it was put (see [`gzip`]), whatever the
    /// request's `Accept-Encoding`.
    pub content_encoding: Option<String>,
    /// After a response has sent this many bytes, the resource becomes these bytes (a new
    /// version, with a new ETag) and that response breaks off: a deployment mid-download.
    /// The first response to get there makes the change; the switch is then cleared.
    pub replace_after: Option<(u64, Bytes)>,
    /// Send at most this many bytes at a time, waiting this long before each piece.
    pub trickle: Option<(usize, Duration)>,
}

/// `data` as a gzip member of stored (uncompressed) deflate blocks: a valid `gzip` body
/// without a compression library (random test content would not shrink anyway).
pub fn gzip(data: &[u8]) -> Bytes {
    // Magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut blocks = data.chunks(0xffff).peekable();
    if data.is_empty() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = u16::try_from(block.len()).unwrap();
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    Bytes::from(out)
}

/// CRC-32 (IEEE), as gzip's trailer has it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The query string, if the request had one.
    pub query: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Body bytes this response was going to send (before any fault cut it short).
    pub planned_bytes: u64,
    /// Where the body was set to break off (`drop_after`), if it was.
    pub cut_at: Option<u64>,
    /// Every request header.
    pub headers: HeaderMap,
    /// When the request arrived.
    pub at: Instant,
}

impl Seen {
    /// A request header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first byte asked for by `Range: bytes=N-…` (0 without a `Range`).
    pub fn range_start(&self) -> u64 {
        self.range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .map_or(0, |n| n.parse().expect("a numeric range start"))
    }

    /// `[first, end)` of a bounded `Range: bytes=N-M`; `None` for `bytes=N-` or no range.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        let spec = self.range.as_deref()?.strip_prefix("bytes=")?;
        let (first, last) = spec.split_once('-')?;
        Some((first.parse().ok()?, last.parse::<u64>().ok()? + 1))
    }
}

struct Resource {
    body: Bytes,
    etag: String,
    last_modified: String,
    version: u32,
    faults: Faults,
    /// Opened by [`Origin::release`]; responses held by `hold_after` wait for it.
    gate: tokio::sync::watch::Sender<bool>,
    /// Bumped by [`Origin::cut_open`]: responses started before break off.
    cuts: Arc<AtomicU64>,
    /// Whether [`Faults::stall_once_at`] is still to hang a response (taken by the first).
    stall_armed: Arc<AtomicBool>,
    /// Faults that replace `faults` after this many more requests
    /// ([`Origin::set_faults_after`]).
    next_faults: Option<(u32, Faults)>,
}

impl Resource {
    /// Counts a request towards a pending change of faults, making it once it is due.
    fn advance(&mut self) {
        match self.next_faults.take() {
            Some((0, faults)) => self.faults = faults,
            Some((after, faults)) => self.next_faults = Some((after - 1, faults)),
            None => {}
        }
    }
}

#[derive(Default)]
struct Shared {
    resources: Mutex<HashMap<String, Resource>>,
    seen: Mutex<Vec<Seen>>,
    /// Bytes actually handed to the network per path.
    sent: Mutex<HashMap<String, u64>>,
    /// Response bodies still alive (being sent) per path.
    open: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// The most response bodies alive at once, per path.
    max_open: Mutex<HashMap<String, usize>>,
    /// Response bodies alive over every path, and the most at once.
    open_all: Arc<AtomicUsize>,
    max_open_all: AtomicUsize,
}

/// A running origin. Stops when dropped.
pub struct Origin {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Origin {
    /// Starts an origin on a free loopback port.
    pub async fn start() -> Origin {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(serve))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Origin { addr, shared, stop }
    }

    /// The URL of a path on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Serves `body` at `path` (replacing any earlier version, with a new ETag).
    pub fn put(&self, path: &str, body: Bytes) {
        store(&self.shared, path, body);
    }

    /// Serves `len` pseudo-random bytes (from `seed`) at `path`, at most `rate` bytes a second;
    /// returns them.
    pub fn put_throttled(&self, path: &str, seed: u64, len: u64, rate: u64) -> Bytes {
        let body = content(
            seed,
            usize::try_from(len).expect("a length that fits in memory"),
        );
        self.put(path, body.clone());
        self.set_faults(
            path,
            Faults {
                rate: Some(rate),
                ..Faults::default()
            },
        );
        body
    }

    /// Serves `plain` gzip-encoded at `path` (`Content-Encoding: gzip`, the encoded bytes on
    /// the wire, ranges over them); returns the encoded bytes.
    pub fn put_gzip(&self, path: &str, plain: &[u8]) -> Bytes {
        let encoded = gzip(plain);
        self.put(path, encoded.clone());
        self.update_faults(path, |f| f.content_encoding = Some("gzip".into()));
        encoded
    }
}

/// Puts `body` at `path`: a new version (a new ETag and Last-Modified), keeping its faults.
fn store(shared: &Shared, path: &str, body: Bytes) {
    let path = &key(path);
    let mut resources = shared.resources.lock().unwrap();
    let version = resources.get(path).map_or(1, |r| r.version + 1);
    let (faults, gate, cuts, stall_armed, next_faults) = match resources.remove(path) {
        Some(old) => (
            old.faults,
            old.gate,
            old.cuts,
            old.stall_armed,
            old.next_faults,
        ),
        None => (
            Faults::default(),
            tokio::sync::watch::Sender::new(false),
            Arc::default(),
            Arc::new(AtomicBool::new(true)),
            None,
        ),
    };
    let etag = format!("\"{}-v{version}\"", &sha256_hex(&body)[..16]);
    let last_modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(version)),
    );
    resources.insert(
        path.to_owned(),
        Resource {
            body,
            etag,
            last_modified,
            version,
            faults,
            gate,
            cuts,
            stall_armed,
            next_faults,
        },
    );
}

impl Origin {
    /// Serves the next `requests` requests for `path` with its faults as they are, and every
    /// later one with `faults` (to let, say, the first request through and hit the second).
    pub fn set_faults_after(&self, path: &str, requests: u32, faults: Faults) {
        let mut resources = self.shared.resources.lock().unwrap();
        let resource = resources
            .get_mut(&key(path))
            .expect("put the resource first");
        resource.next_faults = Some((requests, faults));
    }

    /// Breaks off every response for `path` in flight now (as a dropped connection, at its
    /// next chunk); later responses are not affected.
    pub fn cut_open(&self, path: &str) {
        let resources = self.shared.resources.lock().unwrap();
        let resource = resources.get(&key(path)).expect("put the resource first");
        resource.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// The most response bodies for `path` that were being sent at the same time.
    pub fn max_open_responses(&self, path: &str) -> usize {
        self.shared
            .max_open
            .lock()
            .unwrap()
            .get(&key(path))
            .copied()
            .unwrap_or(0)
    }

    /// The most response bodies (over every path) that were being sent at the same time.
    pub fn max_open_all(&self) -> usize {
        self.shared.max_open_all.load(Ordering::SeqCst)
    }

    /// Sets how `path` misbehaves (closing its gate again: see [`Faults::hold_after`]).
    pub fn set_faults(&self, path: &str, faults: Faults) {
        let mut resources = self.shared.resources.lock().unwrap();
        let resource = resources
            .get_mut(&key(path))
            .expect("put the resource first");
        resource.faults = faults;
        resource.gate.send_replace(false);
        resource.stall_armed.store(true, Ordering::SeqCst);
    }

    /// Lets responses held by [`Faults::hold_after`] go on, and stops holding new ones.
    pub fn release(&self, path: &str) {
        let mut resources = self.shared.resources.lock().unwrap();
        let resource = resources
            .get_mut(&key(path))
            .expect("put the resource first");
        resource.faults.hold_after = None;
        resource.gate.send_replace(true);
    }

    /// Response bodies for `path` still being sent (0 once every connection has ended).
    pub fn open_responses(&self, path: &str) -> usize {
        self.shared
            .open
            .lock()
            .unwrap()
            .get(&key(path))
            .map_or(0, |n| n.load(Ordering::SeqCst))
    }

    /// Changes `path`'s faults in place.
    pub fn update_faults(&self, path: &str, change: impl FnOnce(&mut Faults)) {
        change(
            &mut self
                .shared
                .resources
                .lock()
                .unwrap()
                .get_mut(&key(path))
                .expect("put the resource first")
                .faults,
        );
    }

    /// The current ETag of `path`.
    pub fn etag(&self, path: &str) -> String {
        self.shared.resources.lock().unwrap()[&key(path)]
            .etag
            .clone()
    }

    /// Every request for `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        let wanted = key(path);
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == wanted)
            .cloned()
            .collect()
    }

    /// Every request the origin saw.
    pub fn all_requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Body bytes actually sent for `path`, over all responses.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.shared
            .sent
            .lock()
            .unwrap()
            .get(&key(path))
            .copied()
            .unwrap_or(0)
    }
}

/// Paths are kept with one leading slash, as requests carry them.
fn key(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// A parsed single `Range: bytes=…`, resolved against the length.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multiple ranges: serve the whole body
    }
    let (start, end) = spec.split_once('-')?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (start, "") => (start.parse().ok()?, len.saturating_sub(1)),
        (start, end) => (
            start.parse().ok()?,
            end.parse::<u64>().ok()?.min(len.saturating_sub(1)),
        ),
    };
    if range.0 >= len || range.0 > range.1 {
        return Some(Err(()));
    }
    Some(Ok(range))
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/{path}");
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = Seen {
        path: path.clone(),
        query,
        range: text(header::RANGE),
        if_range: text(header::IF_RANGE),
        authorization: text(header::AUTHORIZATION),
        status: 200,
        planned_bytes: 0,
        cut_at: None,
        headers: headers.clone(),
        at: Instant::now(),
    };
    let prepared = {
        let mut resources = shared.resources.lock().unwrap();
        match resources.get_mut(&path) {
            None => Err(StatusCode::NOT_FOUND.into_response()),
            Some(resource) => {
                resource.advance();
                prepare(resource, &seen)
            }
        }
    };
    let response = match prepared {
        Err(response) => response,
        Ok(plan) => {
            seen.planned_bytes = plan.body.len() as u64;
            seen.cut_at = plan.faults.drop_after.filter(|_| plan.drop_now);
            respond(plan, shared.clone(), path.clone())
        }
    };
    seen.status = response.status().as_u16();
    shared.seen.lock().unwrap().push(seen);
    response
}

struct Plan {
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    /// Bytes the `Content-Length` announces beyond the body sent.
    length_extra: u64,
    body: Bytes,
    faults: Faults,
    drop_now: bool,
    gate: tokio::sync::watch::Receiver<bool>,
    /// The resource's cut counter, and its value when this response started.
    cuts: (Arc<AtomicU64>, u64),
    /// Where in this body [`Faults::stall_once_at`] falls, and whether it is still armed.
    stall_once: Option<(usize, Arc<AtomicBool>)>,
}

/// A redirect or an error status the faults answer with instead of the body, if any.
fn canned(resource: &mut Resource) -> Option<Response> {
    if let Some(location) = &resource.faults.redirect_to {
        let mut response = StatusCode::FOUND.into_response();
        let location = HeaderValue::from_str(location).unwrap();
        response.headers_mut().insert(header::LOCATION, location);
        return Some(response);
    }
    let (status, retry_after) = resource.faults.statuses.pop_front()?;
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(value) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
    }
    Some(response)
}

/// The headers every answer with a body carries.
fn headers_of(resource: &Resource, faults: &Faults) -> Vec<(header::HeaderName, String)> {
    let mut headers = vec![(header::ACCEPT_RANGES, "bytes".to_owned())];
    if !faults.no_validators {
        headers.push((header::ETAG, resource.etag.clone()));
        headers.push((header::LAST_MODIFIED, resource.last_modified.clone()));
    }
    if let Some(disposition) = &faults.content_disposition {
        headers.push((header::CONTENT_DISPOSITION, disposition.clone()));
    }
    if let Some(encoding) = &faults.content_encoding {
        headers.push((header::CONTENT_ENCODING, encoding.clone()));
    }
    headers
}

/// A 206 for the `asked` range, with the faults that bend it: its first byte, its body, and
/// whether it reaches the file's real end. Pushes its `Content-Range`.
fn partial(
    resource: &mut Resource,
    asked: (u64, u64),
    headers: &mut Vec<(header::HeaderName, String)>,
) -> (u64, Bytes, bool) {
    let faults = resource.faults.clone();
    let len = resource.body.len() as u64;
    let phantom = faults.announce_len.map_or(0, |n| n.saturating_sub(len));
    let (start, end) = shifted(resource, asked, len);
    // A server that does not say how long the body is does not know the size either.
    let total = if faults.no_content_length {
        "*".to_owned()
    } else {
        (len + phantom).to_string()
    };
    // An announced size stretches a range that reaches the real end.
    let reaches_end = end + 1 == len;
    let shown_end = if reaches_end { end + phantom } else { end };
    headers.push((
        header::CONTENT_RANGE,
        format!("bytes {start}-{shown_end}/{total}"),
    ));
    let mut body = resource.body.slice(start as usize..=end as usize);
    if let Some(extra) = faults.extra_bytes {
        let mut more = body.to_vec();
        more.resize(body.len() + extra as usize, 0xAA);
        body = Bytes::from(more);
    }
    if let Some(short) = faults.short_by
        && applies(
            &mut resource.faults.short_by,
            &mut resource.faults.short_times,
        )
    {
        body.truncate(body.len().saturating_sub(short as usize));
    }
    (start, body, reaches_end)
}

fn prepare(resource: &mut Resource, seen: &Seen) -> Result<Plan, Response> {
    if let Some(response) = canned(resource) {
        return Err(response);
    }
    if let Some(required) = &resource.faults.require_query
        && seen.query.as_ref() != Some(required)
    {
        return Err(StatusCode::FORBIDDEN.into_response());
    }
    let len = resource.body.len() as u64;
    let faults = resource.faults.clone();
    let mut headers = headers_of(resource, &faults);
    // Bytes announced beyond the real file (`announce_len`).
    let phantom = faults.announce_len.map_or(0, |n| n.saturating_sub(len));
    let validator_matches = faults.ignore_if_range
        || seen.if_range.as_ref().is_none_or(|v| {
            !faults.stale_if_range && (*v == resource.etag || *v == resource.last_modified)
        });
    let range = seen
        .range
        .as_deref()
        .filter(|_| !faults.ignore_range && validator_matches)
        .and_then(|r| parse_range(r, len));
    let drop_now = applies(
        &mut resource.faults.drop_after,
        &mut resource.faults.drop_times,
    );
    let mut first_byte = 0;
    // A 200, or a 206 reaching the real end, announces the phantom bytes too.
    let mut claimed = phantom;
    let (status, body) = match range {
        Some(Err(())) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
            );
            return Err(response);
        }
        Some(Ok(asked)) => {
            let (start, body, reaches_end) = partial(resource, asked, &mut headers);
            first_byte = start;
            claimed = if reaches_end { phantom } else { 0 };
            (StatusCode::PARTIAL_CONTENT, body)
        }
        None => (StatusCode::OK, resource.body.clone()),
    };
    let stall_once = faults
        .stall_once_at
        .and_then(|at| at.checked_sub(first_byte))
        .map(|at| (at as usize, resource.stall_armed.clone()));
    Ok(Plan {
        status,
        headers,
        length_extra: claimed + faults.long_by.unwrap_or(0),
        body,
        faults,
        drop_now,
        gate: resource.gate.subscribe(),
        cuts: (resource.cuts.clone(), resource.cuts.load(Ordering::SeqCst)),
        stall_once,
    })
}

/// The range to answer with: as asked, or later by `shift_range` while that applies (kept
/// inside the file).
fn shifted(resource: &mut Resource, (start, end): (u64, u64), len: u64) -> (u64, u64) {
    let Some(shift) = resource.faults.shift_range else {
        return (start, end);
    };
    if start + shift >= len
        || !applies(
            &mut resource.faults.shift_range,
            &mut resource.faults.shift_times,
        )
    {
        return (start, end);
    }
    (start + shift, (end + shift).min(len - 1))
}

/// Whether a fault set for `times` more responses (0: every one) applies to this one; counts
/// it down, and clears it after its last.
fn applies(fault: &mut Option<u64>, times: &mut u32) -> bool {
    if fault.is_none() {
        return false;
    }
    if *times > 0 {
        *times -= 1;
        if *times == 0 {
            *fault = None;
        }
    }
    true
}

/// Counts a response body as open while alive (for its path and over all paths).
struct OpenGuard(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl OpenGuard {
    fn new(shared: &Shared, path: &str) -> Self {
        let count = shared
            .open
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .clone();
        let now = count.fetch_add(1, Ordering::SeqCst) + 1;
        let all = shared.open_all.fetch_add(1, Ordering::SeqCst) + 1;
        let mut max = shared.max_open.lock().unwrap();
        let max = max.entry(path.to_owned()).or_default();
        *max = (*max).max(now);
        shared.max_open_all.fetch_max(all, Ordering::SeqCst);
        Self(count, shared.open_all.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the chunk from `offset` ends: 16 KiB on at most, and never past a point where a fault
/// acts (those at or before `offset` have acted already).
fn chunk_end(offset: usize, total: usize, stops: [Option<usize>; 5]) -> usize {
    stops
        .into_iter()
        .flatten()
        .filter(|&stop| stop > offset)
        .fold((offset + 16 * 1024).min(total), usize::min)
}

/// Waits as `trickle` and `rate` ask before sending `offset..end`; returns where the piece
/// sent now ends (a trickle sends less).
async fn pace(
    offset: usize,
    end: usize,
    trickle: Option<(usize, Duration)>,
    rate: Option<u64>,
) -> usize {
    let mut end = end;
    if let Some((piece, every)) = trickle {
        end = end.min(offset + piece);
        tokio::time::sleep(every).await;
    }
    if let Some(rate) = rate {
        tokio::time::sleep(Duration::from_secs_f64((end - offset) as f64 / rate as f64)).await;
    }
    end
}

fn respond(plan: Plan, shared: Arc<Shared>, path: String) -> Response {
    let Plan {
        status,
        headers,
        length_extra,
        body,
        faults,
        drop_now,
        gate,
        cuts: (cuts, cut_gen),
        stall_once,
    } = plan;
    let total = body.len();
    let cut = if drop_now {
        faults.drop_after.map(|n| n as usize)
    } else {
        None
    };
    let stall = faults.stall_after.map(|n| n as usize);
    let hold = faults.hold_after.map(|n| n as usize);
    let rate = faults.rate;
    let replace = faults.replace_after.as_ref().map(|(n, _)| *n as usize);
    let trickle = faults.trickle;
    let open = Arc::new(OpenGuard::new(&shared, &path));
    let stream = futures::stream::unfold(0usize, move |offset| {
        let body = body.clone();
        let shared = shared.clone();
        let path = path.clone();
        let mut gate = gate.clone();
        let open = open.clone();
        let cuts = cuts.clone();
        let stall_once = stall_once.clone();
        async move {
            let _open = open;
            let cut_off = || cuts.load(Ordering::SeqCst) != cut_gen;
            if hold.is_some_and(|h| offset >= h) {
                // Released (true) or the origin dropped (error): go on either way.
                let _ = gate.wait_for(|released| *released).await;
            }
            let replaced = replace.is_some_and(|r| offset >= r);
            if replaced {
                replace_now(&shared, &path);
            }
            // A body shorter than its Content-Length breaks off at its end too.
            let short = offset >= total && length_extra > 0;
            if cut.is_some_and(|c| offset >= c) || cut_off() || replaced || short {
                // Let hyper flush what it buffered first: an error in the same poll would
                // close the connection with the head and the earlier chunks still unsent.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return Some((Err(std::io::Error::other("dropped on purpose")), usize::MAX));
            }
            if offset >= total {
                return None;
            }
            let stalls_once = stall_once
                .as_ref()
                .is_some_and(|(at, armed)| offset == *at && armed.swap(false, Ordering::SeqCst));
            if stall.is_some_and(|s| offset >= s) || stalls_once {
                std::future::pending::<()>().await;
            }
            let once = stall_once.as_ref().map(|(at, _)| *at);
            let end = chunk_end(offset, total, [cut, stall, hold, once, replace]);
            let end = pace(offset, end, trickle, rate).await;
            *shared.sent.lock().unwrap().entry(path).or_default() += (end - offset) as u64;
            Some((Ok(body.slice(offset..end)), end))
        }
    })
    .scan(false, |failed, item| {
        // End the stream after the first error (axum aborts the connection on it).
        if *failed {
            return futures::future::ready(None);
        }
        *failed = item.is_err();
        futures::future::ready(Some(item))
    });
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    if !faults.no_content_length {
        let announced = total as u64 + length_extra;
        response = response.header(header::CONTENT_LENGTH, announced.to_string());
    }
    response.body(Body::from_stream(stream)).unwrap()
}

/// Makes the change `replace_after` asks for, if no response has made it yet.
fn replace_now(shared: &Shared, path: &str) {
    let replacement = shared
        .resources
        .lock()
        .unwrap()
        .get_mut(path)
        .and_then(|r| r.faults.replace_after.take());
    if let Some((_, body)) = replacement {
        store(shared, path, body);
    }
}
