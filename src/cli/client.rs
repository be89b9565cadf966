//! A typed client for the daemon's `/v1` API, shared by every client command.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use crate::api::dto::{Count, JobList, JobView, Stats};
use crate::api::problem::ProblemDetails;
use crate::events::JobEvent;

/// Talks to one daemon.
pub struct Client {
    base: url::Url,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client for the daemon at `server` (e.g. `http://127.0.0.1:7070`).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = url::Url::parse(server)
            .map_err(|e| CliError::Usage(format!("--server {server:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Other(e.to_string()))?;
        Ok(Self { base, http, token })
    }

    fn request(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, CliError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let response = request
            .send()
            .await
            .map_err(|e| CliError::Unreachable(self.base.to_string(), e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CliError::Unreachable(self.base.to_string(), e.to_string()))?;
        if status.is_success() {
            let body = if body.is_empty() {
                &b"null"[..]
            } else {
                &body[..]
            };
            return serde_json::from_slice(body)
                .map_err(|e| CliError::Other(format!("unexpected answer: {e}")));
        }
        Err(problem(status, &body))
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, CliError> {
        self.send(self.request(method, path)?).await
    }

    async fn call_with<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.request(method, path)?.json(body)).await
    }

    /// `POST /v1/jobs`.
    pub async fn create_job(&self, request: &serde_json::Value) -> Result<JobView, CliError> {
        self.call_with(Method::POST, "/v1/jobs", request).await
    }

    /// `GET /v1/jobs` with a query string.
    pub async fn list_jobs(&self, query: &[(&str, String)]) -> Result<JobList, CliError> {
        let mut url = self
            .base
            .join("/v1/jobs")
            .map_err(|e| CliError::Usage(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(query);
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn get_job(&self, id: &str) -> Result<JobView, CliError> {
        self.call(Method::GET, &format!("/v1/jobs/{}", segment(id)))
            .await
    }

    /// `GET /v1/jobs/{id}/wait?timeout=SECS`: the job once it has ended, or after `secs`.
    pub async fn wait_job(&self, id: &str, secs: u64) -> Result<JobView, CliError> {
        let path = format!("/v1/jobs/{}/wait?timeout={secs}", segment(id));
        self.call(Method::GET, &path).await
    }

    /// `POST /v1/jobs/{id}/{action}` for cancel, pause, resume and retry.
    pub async fn act(&self, id: &str, action: &str) -> Result<JobView, CliError> {
        self.call(Method::POST, &format!("/v1/jobs/{}/{action}", segment(id)))
            .await
    }

    /// `POST /v1/jobs/cancel-all`.
    pub async fn cancel_all(&self) -> Result<Count, CliError> {
        self.call(Method::POST, "/v1/jobs/cancel-all").await
    }

    /// `POST /v1/jobs/prune`.
    pub async fn prune(&self) -> Result<Count, CliError> {
        self.call(Method::POST, "/v1/jobs/prune").await
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self) -> Result<Stats, CliError> {
        self.call(Method::GET, "/v1/stats").await
    }

    /// Follows an SSE stream, calling `on_event` for each event until it returns false or
    /// the stream ends.
    pub async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(JobEvent) -> bool,
    ) -> Result<(), CliError> {
        let request = self
            .request(Method::GET, path)?
            .header("accept", "text/event-stream");
        let response = request
            .send()
            .await
            .map_err(|e| CliError::Unreachable(self.base.to_string(), e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(problem(status, &body));
        }
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| CliError::Unreachable(self.base.to_string(), e.to_string()))?;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(event) = parse_sse_block(&block) else {
                    continue;
                };
                if !on_event(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn problem(status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ProblemDetails>(body) {
        Ok(problem) => CliError::Api {
            status: status.as_u16(),
            code: problem.code.as_str(),
            detail: problem.detail,
        },
        Err(_) => CliError::Api {
            status: status.as_u16(),
            code: String::new(),
            detail: format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
        },
    }
}

fn parse_sse_block(block: &str) -> Option<JobEvent> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_into_events_and_comments_are_skipped() {
        let block = "event: job.queued\nid: 3\ndata: {\"seq\":3,\"type\":\"job.queued\",\"job_id\":\"0193a7d2-0000-7000-8000-000000000000\",\"status\":\"queued\",\"bytes_done\":0,\"bytes_total\":null,\"at\":\"2026-11-24T00:00:00Z\"}\n\n";
        let event = parse_sse_block(block).unwrap();
        assert_eq!(event.seq, 3);
        assert!(parse_sse_block(": keep-alive\n\n").is_none());
    }
}
