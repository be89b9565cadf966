//! One connection fetching one segment of a file: the request, the checks on the response,
//! the body into the writer, and retries from the segment's own offset.
//!
//! A response is used only if it is exactly what was asked: a 206 whose `Content-Range` starts
//! at our offset and ends where we asked, with the size and validator we know; or, for the
//! first request of a file, a 206 for the whole file or a plain 200. Anything else is reported
//! as [`Outcome::Restart`] and never written: the coordinator starts the file over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{
    CONTENT_RANGE, ETAG, HeaderMap, HeaderValue, IF_RANGE, LAST_MODIFIED, RANGE,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::http::{
    Follow, HttpClient, get_following, if_range_value, network_error, parse_content_range,
    response_meta, status_error,
};
use super::limits::{HostPermit, Hosts, Throttle};
use super::source::Source;
use super::writer::Sink;
use super::{ConnectionGuard, FetchError, LiveFile, RetryPolicy};
use crate::store::FileMeta;
use crate::telemetry::redact_url;

/// Bytes a file's connections gather between them before handing them to the writer: fewer,
/// larger positional writes. Batches of 1 MiB instead of 256 KiB made a fast download faster
/// and cheaper (fewer writes, wake-ups and queue hops); sharing the budget keeps a file's
/// memory bounded however many connections it has.
const BATCH_BUDGET: usize = 4 * 1024 * 1024;

/// A connection's batch, whatever its share of the budget.
const BATCH_MIN: usize = 256 * 1024;
const BATCH_MAX: usize = 1024 * 1024;

/// The batch of one of `connections` connections to a file.
fn batch_bytes(connections: u32) -> usize {
    let connections = usize::try_from(connections.max(1)).unwrap_or(usize::MAX);
    (BATCH_BUDGET / connections).clamp(BATCH_MIN, BATCH_MAX)
}

/// Longest time received bytes wait in a batch before they are handed to the writer.
const BATCH_MAX_AGE: Duration = Duration::from_millis(100);

/// Under a rate limit, received bytes go on in slices of at most this, each paid for first.
const PAID_SLICE: usize = 16 * 1024;

/// A byte range of the file as connections and the coordinator share it.
#[derive(Debug)]
pub struct Range {
    pub start: u64,
    /// Exclusive; `u64::MAX` while the file's length is unknown. Shrinks when the coordinator
    /// gives the second half to another connection.
    pub end: AtomicU64,
    /// The next byte to receive: everything before it was received (and is with the writer,
    /// or in the batch about to go to it).
    pub next: AtomicU64,
}

impl Range {
    /// A range with `done` bytes already on disk.
    pub fn new(start: u64, end: Option<u64>, done: u64) -> Arc<Self> {
        Arc::new(Self {
            start,
            end: AtomicU64::new(end.unwrap_or(u64::MAX)),
            next: AtomicU64::new(start + done),
        })
    }

    pub fn end(&self) -> Option<u64> {
        Some(self.end.load(Ordering::Acquire)).filter(|e| *e != u64::MAX)
    }

    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    pub fn is_done(&self) -> bool {
        self.end().is_some_and(|end| self.next() >= end)
    }
}

/// Attempts a connection to a mirror makes before it gives up, when other URLs can take over.
const MIRROR_ATTEMPTS: u32 = 2;

/// What every connection of a file shares.
pub struct Env {
    pub client: HttpClient,
    /// The file's URL first, then its mirrors.
    pub sources: Vec<Source>,
    pub follow: Follow,
    pub retry: RetryPolicy,
    pub hosts: Hosts,
    pub global: Arc<Throttle>,
    pub job: Arc<Throttle>,
    pub live: Arc<LiveFile>,
    pub open: Arc<AtomicU64>,
    pub sink: Sink,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a connection tells the coordinator while it runs.
#[derive(Debug)]
pub enum Event {
    /// The first response of a fresh file: what it is, and whether ranges work.
    Probed { meta: FileMeta, ranged: bool },
    /// A transient failure; the connection tries again after `delay`.
    Retrying { error: FetchError, delay: Duration },
}

/// How a connection's work on its range ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every byte of the range is with the writer. For a file of unknown length, `size` is
    /// where the body ended.
    Done { size: Option<u64> },
    /// The server no longer serves the file we started: start it over.
    Restart(&'static str),
    /// Failed for good (or out of retries).
    Failed(FetchError),
    /// The connection's stop token fired.
    Stopped,
}

/// The kind of request a connection makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The first request of a fresh file: `Range: bytes=0-`, any 206 or 200 accepted.
    Probe,
    /// One segment of a ranged file: `Range: bytes=N-M` with `If-Range`.
    Segment,
    /// The rest of a file fetched over one stream: `Range: bytes=N-` with `If-Range`.
    Rest,
    /// A file whose server ignores ranges: it can only be fetched whole, from byte 0.
    Whole,
}

/// One connection's assignment.
pub struct Assignment {
    pub index: usize,
    /// Which of the file's sources it fetches from.
    pub source: usize,
    pub range: Arc<Range>,
    pub ask: Ask,
    /// Size and validator known so far (none for a probe).
    pub meta: FileMeta,
    /// A slot on the host, if the coordinator took one for it.
    pub permit: Option<HostPermit>,
    /// The response to the first request, when it was made before the connection started.
    pub first: Option<reqwest::Response>,
}

/// Runs an assignment to its end, retrying transient failures from its own offset.
pub async fn run(env: Arc<Env>, mut work: Assignment, stop: CancellationToken) -> Outcome {
    let mut failures = 0u32;
    let Some(source) = env.sources.get(work.source) else {
        return Outcome::Failed(FetchError::Store("no such source".into()));
    };
    // With mirrors, a failing URL gives up sooner: another takes its ranges over.
    let attempts = if env.sources.len() > 1 {
        env.retry.attempts.min(MIRROR_ATTEMPTS)
    } else {
        env.retry.attempts
    };
    loop {
        if stop.is_cancelled() {
            return Outcome::Stopped;
        }
        if work.range.is_done() {
            return Outcome::Done { size: None };
        }
        let permit = match work.permit.take() {
            Some(permit) => permit,
            None => tokio::select! {
                biased;
                () = stop.cancelled() => return Outcome::Stopped,
                permit = env.hosts.acquire(&source.host) => permit,
            },
        };
        let before = work.range.next();
        let attempt = Attempt {
            env: &env,
            work: &mut work,
            stop: &stop,
            permit,
        };
        let error = match attempt.run().await {
            Ok(outcome) => return outcome,
            Err(FetchError::Stopped) => return Outcome::Stopped,
            Err(error) if !error.is_retryable() => return Outcome::Failed(error),
            Err(error) => error,
        };
        // A failure that comes with a stop (a pause cutting the response) is no retry.
        if stop.is_cancelled() {
            return Outcome::Stopped;
        }
        if let FetchError::Status {
            status: 429 | 503,
            retry_after,
            ..
        } = &error
        {
            env.hosts.push_back(&source.host, *retry_after);
        }
        if work.range.next() > before {
            failures = 0;
        }
        failures += 1;
        if failures >= attempts {
            return Outcome::Failed(error);
        }
        let delay = env.retry.delay(failures, error.retry_after());
        let _ = env.events.send(Event::Retrying { error, delay });
        tokio::select! {
            biased;
            () = stop.cancelled() => return Outcome::Stopped,
            () = tokio::time::sleep(delay) => {}
        }
        if work.ask == Ask::Whole {
            // Asking for the rest is pointless: start over, from a fresh probe (after the
            // same backoff).
            return Outcome::Restart("the server cannot resume this file");
        }
    }
}

/// One request and its body.
struct Attempt<'a> {
    env: &'a Env,
    work: &'a mut Assignment,
    stop: &'a CancellationToken,
    permit: HostPermit,
}

impl Attempt<'_> {
    async fn run(self) -> Result<Outcome, FetchError> {
        let from = self.work.range.next();
        // The range may shrink while the request is out (its second half given to another
        // connection): the response must match what was asked, and streaming stops at the
        // range's end as it is then.
        let asked_end = self.work.range.end();
        let Some(headers) = self.range_headers(from, asked_end) else {
            return Ok(Outcome::Restart("no validator to resume safely"));
        };
        let response = match self.work.first.take() {
            Some(response) => {
                self.source().learn(response.url());
                response
            }
            None => self.send(&headers).await?,
        };
        match (self.work.ask, response.status().as_u16()) {
            (Ask::Probe, 206 | 200) => self.probed(response).await,
            (_, 206) => match self.mismatch(&response, from, asked_end) {
                Some(reason) => Ok(Outcome::Restart(reason)),
                None => self.stream(response, from).await,
            },
            // A 200 to a range: the file changed (If-Range) or ranges are ignored.
            (_, 200) => Ok(Outcome::Restart(
                "the server sent the whole file instead of a range",
            )),
            (Ask::Probe, 416) if unsatisfied_size(&response) == Some(0) => {
                // An empty file: nothing to fetch, and no validator needed.
                let meta = FileMeta {
                    total: Some(0),
                    ..response_meta(&response)
                };
                let _ = self.env.events.send(Event::Probed {
                    meta,
                    ranged: false,
                });
                self.work.range.end.store(0, Ordering::Release);
                Ok(Outcome::Done { size: Some(0) })
            }
            // Asking for the bytes after the last one: the range was complete already (its
            // size known from before, or told now by `Content-Range: bytes */SIZE`).
            (Ask::Rest, 416) => {
                let size = self.work.meta.total.or_else(|| unsatisfied_size(&response));
                match size {
                    Some(size) if size == from => Ok(Outcome::Done { size: Some(size) }),
                    _ => Ok(Outcome::Restart("the saved range is not satisfiable")),
                }
            }
            (_, 416) => Ok(Outcome::Restart("the saved range is not satisfiable")),
            (_, status) if (200..300).contains(&status) => Err(FetchError::InvalidResponse {
                url: redact_url(response.url()),
                reason: format!("unexpected status {status}"),
            }),
            _ => Err(status_error(&response)),
        }
    }

    fn source(&self) -> &Source {
        &self.env.sources[self.work.source]
    }

    /// Sends the request: to where the URL's redirects led last, if they did, and from the URL
    /// again if that location now refuses (403 or 410: an expired signed link). The answer
    /// from the new location is checked like any other: a different size or validator means a
    /// restart, never a mix of two versions.
    async fn send(&self, headers: &HeaderMap) -> Result<reqwest::Response, FetchError> {
        let source = self.source();
        let location = source.location();
        let response = self
            .get(
                (location.as_ref().unwrap_or(&source.url), &source.url),
                headers,
            )
            .await?;
        if location.is_none() || !matches!(response.status().as_u16(), 403 | 410) {
            source.learn(response.url());
            return Ok(response);
        }
        tracing::info!(
            url = %redact_url(&source.url),
            http.status = response.status().as_u16(),
            "the location a redirect led to refuses now (an expired link?); resolving the URL again"
        );
        source.forget();
        let response = self.get((&source.url, &source.url), headers).await?;
        source.learn(response.url());
        Ok(response)
    }

    async fn get(
        &self,
        urls: (&url::Url, &url::Url),
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, FetchError> {
        let env = self.env;
        let sent = get_following(
            &env.client,
            urls,
            &self.source().secret,
            headers,
            &env.follow,
        );
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Err(FetchError::Stopped),
            sent = sent => sent,
        }
    }

    /// `Range` (and `If-Range`) for this request; `None` when resuming is unsafe.
    fn range_headers(&self, from: u64, end: Option<u64>) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        let spec = match (self.work.ask, end) {
            (Ask::Probe, _) => "bytes=0-".to_owned(),
            (Ask::Segment, Some(end)) => format!("bytes={from}-{}", end - 1),
            (Ask::Segment | Ask::Rest | Ask::Whole, _) => format!("bytes={from}-"),
        };
        if self.work.ask != Ask::Probe {
            let validator = HeaderValue::from_str(if_range_value(&self.work.meta)?).ok()?;
            headers.insert(IF_RANGE, validator);
        }
        headers.insert(RANGE, HeaderValue::from_str(&spec).ok()?);
        Some(headers)
    }

    /// The first response of a fresh file: learn what it is, tell the coordinator, stream it.
    async fn probed(self, response: reqwest::Response) -> Result<Outcome, FetchError> {
        let ranged = response.status().as_u16() == 206;
        if ranged {
            let range = content_range(&response);
            if range
                .is_none_or(|r| r.start != 0 || r.total.is_some_and(|t| r.end_inclusive + 1 != t))
            {
                return Ok(Outcome::Restart(
                    "a 206 that is not the whole file, to bytes=0-",
                ));
            }
        }
        let meta = response_meta(&response);
        self.work
            .range
            .end
            .store(meta.total.unwrap_or(u64::MAX), Ordering::Release);
        self.work.meta = meta.clone();
        // Should this body break off, the retry continues it: with a bounded range where
        // ranges work, else by asking for the rest (a server without ranges answers that with
        // a 200, and the file starts over).
        self.work.ask = match (ranged, meta.total) {
            (true, Some(_)) => Ask::Segment,
            (true, None) => Ask::Rest,
            (false, _) => Ask::Whole,
        };
        let _ = self.env.events.send(Event::Probed { meta, ranged });
        self.stream(response, 0).await
    }

    /// Why a 206 cannot continue our range, if it cannot.
    fn mismatch(
        &self,
        response: &reqwest::Response,
        from: u64,
        asked_end: Option<u64>,
    ) -> Option<&'static str> {
        let Some(range) = content_range(response) else {
            return Some("a 206 without a usable Content-Range");
        };
        let meta = &self.work.meta;
        if range.start != from {
            return Some("the server sent a different range than asked");
        }
        if let (Ask::Segment, Some(end)) = (self.work.ask, asked_end)
            && range.end_inclusive + 1 != end
        {
            return Some("the server sent a different range than asked");
        }
        if meta.total.is_some() && range.total != meta.total {
            return Some("the file's size changed");
        }
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok());
        if let (Some(now), Some(saved)) = (etag, meta.etag.as_deref())
            && now != saved
        {
            return Some("the file's ETag changed");
        }
        // A mirror must show it serves the probed version: one that sends no validator (and
        // so may have ignored If-Range) could be another version of the same size.
        let last_modified = response
            .headers()
            .get(LAST_MODIFIED)
            .and_then(|v| v.to_str().ok());
        let mirror = self.work.source != 0;
        if mirror && meta.etag.is_some() && etag.is_none() {
            return Some("the mirror sent no ETag to compare");
        }
        if mirror && meta.etag.is_none() && meta.last_modified.is_some() {
            if last_modified.is_none() {
                return Some("the mirror sent no Last-Modified to compare");
            }
            if last_modified != meta.last_modified.as_deref() {
                return Some("the mirror's Last-Modified differs");
            }
        }
        None
    }

    /// Streams the body from `from` into the writer, up to the range's end (which may shrink
    /// while it runs).
    async fn stream(
        self,
        mut response: reqwest::Response,
        from: u64,
    ) -> Result<Outcome, FetchError> {
        let env = self.env;
        let range = &self.work.range;
        // A range learns its end from a 206 when the file's length was unknown before.
        if range.end().is_none()
            && let Some(total) = content_range(&response).and_then(|r| r.total)
        {
            range.end.store(total, Ordering::Release);
        }
        let _connection = ConnectionGuard::new(&env.live, &env.open);
        let _permit = self.permit;
        let (mut next, mut batch_at) = (from, from);
        // Chunks are handed over as received (no copy) and written with one vectored write.
        let (mut batch, mut batched) = (Vec::new(), 0usize);
        let mut flushed = Instant::now();
        // Received and not yet paid for (a read can bring hundreds of KiB at once).
        let mut unpaid = Bytes::new();
        let result = loop {
            // Bytes received are written within `BATCH_MAX_AGE` even if the connection goes
            // quiet: they count as done, and a stall costs nothing already received.
            let flush_by = (!batch.is_empty()).then(|| flushed + BATCH_MAX_AGE);
            let mut bytes = match paid_chunk(
                env,
                self.work.source,
                self.stop,
                &mut response,
                &mut unpaid,
                flush_by,
            )
            .await
            {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let end = range.end.load(Ordering::Acquire);
            if next + bytes.len() as u64 > end {
                // Another connection owns what follows (or the server sent too much).
                bytes.truncate(usize::try_from(end.saturating_sub(next)).unwrap_or(0));
            }
            let received = bytes.len() as u64;
            next += received;
            batched += bytes.len();
            if !bytes.is_empty() {
                batch.push(bytes);
            }
            range.next.store(next, Ordering::Release);
            let full = next >= end;
            let batch_bytes = batch_bytes(env.live.connections.load(Ordering::Relaxed));
            if full || batched >= batch_bytes || flushed.elapsed() >= BATCH_MAX_AGE {
                // A slow disk fills the writer's queue; a stop must not wait for it.
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => {
                        // The batch went with the abandoned write.
                        range.next.store(batch_at, Ordering::Release);
                        break Err(FetchError::Stopped);
                    }
                    written = env.sink.write(self.work.index, batch_at, std::mem::take(&mut batch)) => written?,
                }
                (batch_at, flushed, batched) = (next, Instant::now(), 0);
            }
            if full {
                break Ok(());
            }
        };
        // Bytes received before a failure are good: keep them. After a stop, keep them only
        // if the writer's queue has room now: a stop does not wait for a slow disk.
        if !batch.is_empty() {
            if matches!(result, Err(FetchError::Stopped)) {
                if !env.sink.try_write(self.work.index, batch_at, batch) {
                    range.next.store(batch_at, Ordering::Release);
                }
            } else {
                env.sink.write(self.work.index, batch_at, batch).await?;
            }
        }
        result?;
        match range.end() {
            Some(end) if next < end => Err(FetchError::Truncated {
                expected: end,
                got: next,
            }),
            Some(_) => Ok(Outcome::Done { size: None }),
            // Unknown length: the end of the body is the end of the file.
            None => {
                range.end.store(next, Ordering::Release);
                Ok(Outcome::Done { size: Some(next) })
            }
        }
    }
}

/// The next bytes of the body, once the rate limits allow them: bytes go on to the writer
/// only when paid for, in slices, so that neither large reads nor many connections (each
/// with a read in hand) get ahead of the limits; and a stop does not wait for the throttle.
/// `unpaid` holds what was read and not yet paid for. `None` at the end of the body; an empty
/// chunk when nothing arrived by `flush_by`.
async fn paid_chunk(
    env: &Env,
    source: usize,
    stop: &CancellationToken,
    response: &mut reqwest::Response,
    unpaid: &mut Bytes,
    flush_by: Option<Instant>,
) -> Result<Option<Bytes>, FetchError> {
    if unpaid.is_empty() {
        let flush = async {
            match flush_by {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(FetchError::Stopped),
            chunk = response.chunk() => chunk,
            // Nothing arrived in time: an empty chunk, so the caller writes what it holds.
            () = flush => return Ok(Some(Bytes::new())),
        };
        *unpaid = match chunk {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(network_error(
                    &e,
                    e.url().unwrap_or(&env.sources[source].url),
                ));
            }
        };
    }
    let limited = env.global.rate().is_some() || env.job.rate().is_some();
    let take = if limited { PAID_SLICE } else { usize::MAX };
    let bytes = unpaid.split_to(unpaid.len().min(take));
    let len = bytes.len() as u64;
    super::limits::pay(&env.global, &env.job, len, stop).await?;
    Ok(Some(bytes))
}

fn content_range(response: &reqwest::Response) -> Option<super::http::ContentRange> {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range)
}

/// The size in a 416's `Content-Range: bytes */SIZE`.
fn unsatisfied_size(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_share_the_batch_budget() {
        const KIB: usize = 1024;
        // Few connections (a fast local link): large batches.
        assert_eq!(batch_bytes(0), 1024 * KIB);
        assert_eq!(batch_bytes(1), 1024 * KIB);
        assert_eq!(batch_bytes(4), 1024 * KIB);
        // More: the budget is shared, so a file holds about the same whatever the count.
        assert_eq!(batch_bytes(8), 512 * KIB);
        assert_eq!(batch_bytes(16), 256 * KIB);
        // Never below the floor.
        assert_eq!(batch_bytes(64), 256 * KIB);
        assert_eq!(batch_bytes(u32::MAX), 256 * KIB);
    }
}
