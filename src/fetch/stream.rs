//! The single-stream engine: one GET per file, resumed with `Range` + `If-Range`.
//!
//! A response is used only if it continues exactly where the file stopped (a 206 whose
//! `Content-Range` starts at our offset and whose validator and size match) or starts it over
//! (a 200, after which the `.part` is emptied). Anything else restarts the file cleanly, so a
//! file is never stitched together from two versions.

use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, HeaderValue, IF_RANGE, RANGE};
use tokio_util::sync::CancellationToken;

use super::http::{
    get_following, if_range_value, network_error, parse_content_range, response_meta, status_error,
};
use super::writer::Writer;
use super::{ConnectionGuard, FetchError, Fetched, Fetcher, FileTask, Journal, LiveFile};
use crate::domain::Segment;
use crate::store::FileMeta;
use crate::telemetry::redact_url;

/// Bytes gathered before handing them to the writer: fewer, larger positional writes.
const BATCH_BYTES: usize = 256 * 1024;

/// Longest time received bytes wait in a batch before they are handed to the writer.
const BATCH_MAX_AGE: Duration = Duration::from_millis(100);

/// Clean restarts (changed validator, ignored range) without a byte received in between,
/// before giving up.
const MAX_RESTARTS: u32 = 3;

/// How an attempt ended, when it did not fail.
enum Attempt {
    /// Every byte is written.
    Done,
    /// The saved progress cannot be continued; start from zero.
    Restart(&'static str),
}

struct Run<'a, J> {
    fetcher: &'a Fetcher,
    task: &'a FileTask,
    journal: &'a J,
    live: &'a LiveFile,
    stop: &'a CancellationToken,
    writer: Writer,
    meta: FileMeta,
    /// `None` until a response has told us what we are fetching.
    segment: Option<Segment>,
    last_checkpoint: Instant,
    /// Bytes received over all attempts, to tell a flaky but progressing server from a broken one.
    received: u64,
}

impl Fetcher {
    /// Fetches `task` into its `.part` (resuming saved progress when it is safe), retrying
    /// transient failures. Returns once every byte is written and fsynced; on `Stopped` the
    /// progress so far is checkpointed and the `.part` kept.
    pub async fn fetch_file(
        &self,
        task: &FileTask,
        journal: &impl Journal,
        live: &LiveFile,
        stop: &CancellationToken,
    ) -> Result<Fetched, FetchError> {
        let (file, on_disk) = open_part(task.part.clone()).await?;
        // Trust saved progress only when its bytes are really on disk and form one stream.
        let saved = match task.segments.as_slice() {
            [only] if only.start == 0 && only.written <= on_disk => Some(*only),
            _ => None,
        };
        let written = saved.map_or(0, |s| s.written);
        let writer = Writer::spawn(
            file,
            task.part.clone(),
            vec![written],
            task.hash,
            live.bytes_done.clone(),
        );
        live.set(written, saved.and_then(|s| s.end));
        let mut run = Run {
            fetcher: self,
            task,
            journal,
            live,
            stop,
            writer,
            meta: if saved.is_some() {
                task.meta.clone()
            } else {
                FileMeta::default()
            },
            segment: saved,
            last_checkpoint: Instant::now(),
            received: 0,
        };
        match run.drive().await {
            Ok(total) => {
                let finished = run.writer.finish().await?;
                let written: u64 = finished.written.iter().sum();
                if written != total {
                    return Err(FetchError::SizeMismatch {
                        expected: total,
                        actual: written,
                    });
                }
                let digest = finished.digest.filter(|(_, n)| *n == total).map(|(d, _)| d);
                Ok(Fetched {
                    file: finished.file,
                    total,
                    digest,
                })
            }
            Err(err) => {
                run.writer.close().await;
                if run.segment.is_none_or(|s| s.written == 0) {
                    discard_empty_part(&task.part, &err).await;
                }
                Err(err)
            }
        }
    }
}

/// Removes the `.part` of a file that failed for good without keeping a byte: an empty one
/// helps no resume, outlives its job, and would push the next download of this name to an
/// alternative ("NAME (1)"). A stop keeps it, because the job still owns the name.
async fn discard_empty_part(part: &std::path::Path, err: &FetchError) {
    if matches!(err, FetchError::Stopped | FetchError::LeaseLost) {
        return;
    }
    match tokio::fs::remove_file(part).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            path = %part.display(),
            error.message = %e,
            "cannot remove an empty partial file"
        ),
    }
}

/// The size in a 416's `Content-Range: bytes */SIZE`.
fn unsatisfied_size(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// Opens (creating) the `.part` without truncating it; returns it with its current length.
async fn open_part(path: std::path::PathBuf) -> Result<(std::fs::File, u64), FetchError> {
    let opened = tokio::task::spawn_blocking(move || {
        // The worker created it with create_new when it claimed the destination; should it have
        // vanished since (a manual clean-up), it is made again. Never through a symlink.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| FetchError::io(&path, e))?;
        let len = file.metadata().map_err(|e| FetchError::io(&path, e))?.len();
        Ok((file, len))
    })
    .await;
    opened.map_err(|e| FetchError::Io {
        path: String::new(),
        source: std::io::Error::other(e),
    })?
}

impl<J: Journal> Run<'_, J> {
    /// Attempts until done, retrying transient failures with backoff. Returns the size.
    async fn drive(&mut self) -> Result<u64, FetchError> {
        let (mut failures, mut restarts, mut received_at_restart) = (0u32, 0u32, 0u64);
        loop {
            let before = self.segment.map_or(0, |s| s.written);
            let outcome = self.attempt().await;
            match outcome {
                Ok(Attempt::Done) => {
                    self.checkpoint().await?;
                    return Ok(self.segment.and_then(|s| s.end).unwrap_or(0));
                }
                Ok(Attempt::Restart(reason)) => {
                    if self.received > received_at_restart {
                        restarts = 0;
                    }
                    (restarts, received_at_restart) = (restarts + 1, self.received);
                    if restarts > MAX_RESTARTS {
                        return Err(FetchError::InvalidResponse {
                            url: redact_url(&self.task.url),
                            reason: format!("gave up after {MAX_RESTARTS} restarts: {reason}"),
                        });
                    }
                    tracing::info!(url = %redact_url(&self.task.url), reason, "starting the file over");
                    self.segment = None;
                    self.meta = FileMeta::default();
                }
                Err(err @ (FetchError::Stopped | FetchError::LeaseLost)) => {
                    if matches!(err, FetchError::Stopped) {
                        let _ = self.checkpoint().await;
                    }
                    return Err(err);
                }
                Err(err) if err.is_retryable() => {
                    self.checkpoint().await?;
                    if self.segment.map_or(0, |s| s.written) > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures >= self.fetcher.retry.attempts {
                        return Err(err);
                    }
                    let delay = self.fetcher.retry.delay(failures, err.retry_after());
                    self.journal.retrying(&err, delay);
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return Err(FetchError::Stopped),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(err) => {
                    let _ = self.checkpoint().await;
                    return Err(err);
                }
            }
        }
    }

    /// One request and, if usable, its body.
    async fn attempt(&mut self) -> Result<Attempt, FetchError> {
        let offset = self.segment.map_or(0, |s| s.next_offset());
        let mut range = HeaderMap::new();
        if offset > 0 {
            let Some(validator) = if_range_value(&self.meta) else {
                return Ok(Attempt::Restart("no validator to resume safely"));
            };
            let (Ok(from), Ok(validator)) = (
                HeaderValue::from_str(&format!("bytes={offset}-")),
                HeaderValue::from_str(validator),
            ) else {
                return Ok(Attempt::Restart(
                    "the saved validator is not a valid header",
                ));
            };
            range.insert(RANGE, from);
            range.insert(IF_RANGE, validator);
        }
        let fetcher = self.fetcher;
        let sent = get_following(
            &fetcher.client,
            &self.task.url,
            &self.task.headers,
            &range,
            fetcher.max_redirects,
        );
        let response = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Err(FetchError::Stopped),
            sent = sent => sent?,
        };
        match response.status().as_u16() {
            206 if offset > 0 => {
                if let Some(reason) = self.range_mismatch(&response, offset) {
                    return Ok(Attempt::Restart(reason));
                }
                self.adopt_size(&response).await?;
                self.stream(response, offset).await
            }
            200 => {
                if offset > 0 {
                    tracing::info!(url = %redact_url(&self.task.url), "the server sent the whole file instead of the rest; starting over");
                }
                self.begin(response_meta(&response)).await?;
                self.stream(response, 0).await
            }
            // Asking for the bytes after the last one: the file was already complete (its size
            // known from before, or told now by `Content-Range: bytes */SIZE`).
            416 if offset > 0
                && self.meta.total.or_else(|| unsatisfied_size(&response)) == Some(offset) =>
            {
                if self.meta.total.is_none() {
                    self.record_size(offset).await?;
                }
                Ok(Attempt::Done)
            }
            416 if offset > 0 => Ok(Attempt::Restart("the saved range is not satisfiable")),
            status if (200..300).contains(&status) => Err(FetchError::InvalidResponse {
                url: redact_url(response.url()),
                reason: format!("unexpected status {status}"),
            }),
            _ => Err(status_error(&response)),
        }
    }

    /// Why a 206 cannot continue our file, if it cannot.
    fn range_mismatch(&self, response: &reqwest::Response, offset: u64) -> Option<&'static str> {
        let range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        let Some(range) = range else {
            return Some("a 206 without a usable Content-Range");
        };
        if range.start != offset {
            return Some("the server sent a different range than asked");
        }
        if self.meta.total.is_some() && range.total != self.meta.total {
            return Some("the file's size changed");
        }
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok());
        if let (Some(now), Some(saved)) = (etag, self.meta.etag.as_deref())
            && now != saved
        {
            return Some("the file's ETag changed");
        }
        None
    }

    /// A file first served without a length learns it from a 206's `Content-Range`, so an
    /// early end of the rest is truncation, not the end of the file.
    async fn adopt_size(&mut self, response: &reqwest::Response) -> Result<(), FetchError> {
        if self.meta.total.is_some() {
            return Ok(());
        }
        let total = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
            .and_then(|range| range.total);
        let (Some(total), Some(segment)) = (total, &mut self.segment) else {
            return Ok(());
        };
        self.meta.total = Some(total);
        segment.end = Some(total);
        let segment = *segment;
        self.journal.restart(&self.meta, &[segment]).await?;
        self.live.set_total(Some(total));
        Ok(())
    }

    /// Starts the file from zero with what a 200 response declares.
    async fn begin(&mut self, meta: FileMeta) -> Result<(), FetchError> {
        self.writer.restart(1).await?;
        let segment = Segment::whole(meta.total);
        self.journal.restart(&meta, &[segment]).await?;
        self.live.set(0, meta.total);
        self.meta = meta;
        self.segment = Some(segment);
        Ok(())
    }

    /// Streams a response body into the writer from `start`.
    async fn stream(
        &mut self,
        mut response: reqwest::Response,
        start: u64,
    ) -> Result<Attempt, FetchError> {
        let _connection = ConnectionGuard::new(self.live, &self.fetcher.connections);
        let total = self.meta.total;
        let (mut next, mut batch_at) = (start, start);
        let mut batch = BytesMut::with_capacity(BATCH_BYTES);
        let mut flushed = Instant::now();
        let result = loop {
            let chunk = tokio::select! {
                biased;
                () = self.stop.cancelled() => break Err(FetchError::Stopped),
                chunk = response.chunk() => chunk,
            };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break Ok(()),
                Err(e) => break Err(network_error(&e, &self.task.url)),
            };
            next += bytes.len() as u64;
            self.received += bytes.len() as u64;
            if let Some(expected) = total.filter(|t| next > *t) {
                break Err(FetchError::Overflow { expected });
            }
            batch.extend_from_slice(&bytes);
            // Full batches keep writes large; the time bound keeps progress and checkpoints
            // moving on slow links.
            if batch.len() >= BATCH_BYTES || flushed.elapsed() >= BATCH_MAX_AGE {
                // A slow disk fills the writer's queue; a stop must not wait for it.
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => break Err(FetchError::Stopped),
                    written = self.writer.write(0, batch_at, batch.split().freeze()) => written?,
                }
                batch_at = next;
                flushed = Instant::now();
                if self.last_checkpoint.elapsed() >= self.fetcher.checkpoint_every {
                    self.checkpoint().await?;
                }
            }
        };
        // Bytes received before a failure are good: keep them. After a stop, keep them only
        // if the writer's queue has room now: a stop does not wait for a slow disk.
        if !batch.is_empty() {
            if matches!(result, Err(FetchError::Stopped)) {
                self.writer.try_write(0, batch_at, batch.freeze());
            } else {
                self.writer.write(0, batch_at, batch.freeze()).await?;
            }
        }
        result?;
        match total {
            Some(expected) if next < expected => Err(FetchError::Truncated {
                expected,
                got: next,
            }),
            Some(_) => Ok(Attempt::Done),
            None => {
                // Unknown length: the end of the body is the end of the file.
                self.record_size(next).await?;
                Ok(Attempt::Done)
            }
        }
    }

    /// Records the size of a file whose length was unknown until its body ended.
    async fn record_size(&mut self, size: u64) -> Result<(), FetchError> {
        self.meta.total = Some(size);
        self.checkpoint().await?;
        if let Some(segment) = &mut self.segment {
            segment.end = Some(size);
            self.journal.restart(&self.meta, &[*segment]).await?;
        }
        self.live.set(size, Some(size));
        Ok(())
    }

    /// Fsyncs what is written and records it.
    async fn checkpoint(&mut self) -> Result<(), FetchError> {
        let counts = self.writer.sync().await?;
        self.last_checkpoint = Instant::now();
        if let (Some(segment), Some(written)) = (&mut self.segment, counts.first()) {
            segment.written = *written;
            self.journal.save(&[*segment]).await?;
        }
        Ok(())
    }
}
