//! Small files in one go. A fresh file's first request is made here: when the answer says the
//! whole file is small, its body is read into memory and hashed — no writer thread, no
//! connection task, no checkpoint. It is written when it is committed, together with the
//! other files finished meanwhile (see the worker's `commit`). Anything
//! else (a large file, an error status, a failure on the way) goes to the coordinator, with
//! the response when there is one, so nothing is asked twice.

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::http::{get_following, parse_content_range};
use super::limits::HostPermit;
use super::{Data, FetchError, Fetched, Fetcher, FileTask, LiveFile};

/// Files up to this size are fetched in memory in one request.
pub const SMALL_FILE: u64 = 256 * 1024;

/// What the first request of a fresh file gave.
pub enum First {
    /// A small file, whole in memory.
    Done(Fetched),
    /// Anything else: the response, for the coordinator to carry on with, and its host slot.
    Response(reqwest::Response, HostPermit),
    /// Nothing usable (the request failed): the coordinator starts from scratch, with retries.
    Nothing,
}

/// Makes the first request of a fresh file and finishes it at once if it is small. Also
/// returns the name the response suggests (`Content-Disposition`), raw: callers sanitise it.
pub async fn first_request(
    fetcher: &Fetcher,
    task: &FileTask,
    live: &LiveFile,
    stop: &CancellationToken,
) -> Result<(First, Option<String>), FetchError> {
    let host = task.url.host_str().unwrap_or_default();
    let headers = fetcher.credentials.headers_for(&task.url, &task.headers);
    let permit = tokio::select! {
        biased;
        () = stop.cancelled() => return Err(FetchError::Stopped),
        permit = fetcher.hosts.acquire(host) => permit,
    };
    let mut range = HeaderMap::new();
    range.insert(RANGE, HeaderValue::from_static("bytes=0-"));
    let sent = get_following(
        &task.client,
        (&task.url, &task.url),
        &headers,
        &range,
        &fetcher.follow,
    );
    let response = tokio::select! {
        biased;
        () = stop.cancelled() => return Err(FetchError::Stopped),
        sent = sent => match sent {
            Ok(response) => response,
            // Worth another try: the coordinator makes it, with its backoff (or, with
            // mirrors, from another URL).
            Err(error) if error.is_retryable() || !task.mirrors.is_empty() => {
                return Ok((First::Nothing, None));
            }
            Err(error) => return Err(error),
        },
    };
    let name = suggested_name(&response);
    // An error status goes to the coordinator too: with mirrors, another may serve the file.
    let failed = !response.status().is_success() && !task.mirrors.is_empty();
    let Some(size) = whole_and_small(&response).filter(|_| !failed) else {
        return Ok((First::Response(response, permit), name));
    };
    let Some(body) = read_all(fetcher, task, response, size, stop).await? else {
        return Ok((First::Nothing, name));
    };
    drop(permit);
    let digest = task.hash.then(|| sha2::Sha256::digest(&body).into());
    live.set(size, Some(size));
    let fetched = Fetched {
        data: Data::Memory(body),
        total: size,
        digest,
    };
    Ok((First::Done(fetched), name))
}

/// The file name a successful response suggests. A header that is not valid UTF-8 (a server
/// sending raw bytes in `filename="…"`) is read leniently: the sanitiser decides what stays.
fn suggested_name(response: &reqwest::Response) -> Option<String> {
    if !response.status().is_success() {
        return None;
    }
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)?;
    super::disposition::filename(&String::from_utf8_lossy(value.as_bytes()))
}

/// The size of a response that is the whole file and small: a 200 with a length, or a 206
/// for all of it.
fn whole_and_small(response: &reqwest::Response) -> Option<u64> {
    let size = match response.status().as_u16() {
        200 => response.content_length()?,
        206 => {
            let value = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)?
                .to_str()
                .ok()?;
            let range = parse_content_range(value)?;
            let total = range.total?;
            (range.start == 0 && range.end_inclusive + 1 == total).then_some(total)?
        }
        _ => return None,
    };
    (size <= SMALL_FILE).then_some(size)
}

/// The whole body, exactly `size` bytes; `None` if it broke off (the coordinator retries).
async fn read_all(
    fetcher: &Fetcher,
    task: &FileTask,
    mut response: reqwest::Response,
    size: u64,
    stop: &CancellationToken,
) -> Result<Option<Bytes>, FetchError> {
    let mut body = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    loop {
        let chunk = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(FetchError::Stopped),
            chunk = response.chunk() => chunk,
        };
        match chunk {
            Ok(Some(bytes)) => {
                let len = bytes.len() as u64;
                super::limits::pay(&fetcher.throttle, &task.throttle, len, stop).await?;
                body.extend_from_slice(&bytes);
            }
            Ok(None) => break,
            Err(_) => return Ok(None),
        }
        if body.len() as u64 > size {
            return Ok(None);
        }
    }
    Ok((body.len() as u64 == size).then(|| body.freeze()))
}
