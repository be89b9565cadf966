//! Long-polling for a job's end: `GET /v1/jobs/{id}/wait` answers once the job is completed,
//! failed or cancelled, or when its timeout passes, with the job as it is then.
//!
//! `paused` does not end a wait: a paused job is expected to be resumed. The route is not
//! under the router's 30 s request timeout (see `api::router`); it bounds itself with
//! [`MAX_WAIT_SECS`] and ends at shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use serde::Deserialize;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::AppState;
use super::dto::JobView;
use super::extract::{AppQuery, JobIdPath};
use super::problem::{ApiError, ErrorCode, ProblemDetails};
use crate::domain::JobId;
use crate::events::JobEvent;

/// How long a wait lasts when the request does not say.
const DEFAULT_WAIT_SECS: u64 = 30;
/// The longest wait a request may ask for.
pub const MAX_WAIT_SECS: u64 = 300;

/// Query parameters of `GET /v1/jobs/{id}/wait`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Longest wait in seconds, 0 to 300; default 30. 0 answers at once.
    #[param(maximum = 300)]
    pub timeout: Option<u64>,
}

/// Wait until a job is completed, failed or cancelled, or the timeout passes; then the job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/wait", operation_id = "wait_job", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)"), WaitParams),
    responses(
        (status = 200, description = "The job, once it is completed, failed or cancelled, or as it is when the timeout passes or the daemon shuts down (look at `status`); `paused` does not end the wait", body = JobView),
        (status = 400, description = "The id is not a UUID, or `timeout` not a number from 0 to 300", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn wait_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
    AppQuery(params): AppQuery<WaitParams>,
) -> Result<axum::Json<JobView>, ApiError> {
    let timeout = wait_timeout(params.timeout)?;
    // Subscribe before reading the job: an end between the read and the wait is then in
    // the receiver, not lost.
    let mut events = state.events.subscribe();
    let mut job = state.store.get_job(id).await?;
    if !job.status.is_finished() && !timeout.is_zero() {
        until_finished(&state, &mut events, id, timeout).await?;
        job = state.store.get_job(id).await?;
    }
    Ok(axum::Json(JobView::single(job, &state.engine)))
}

fn wait_timeout(secs: Option<u64>) -> Result<Duration, ApiError> {
    match secs.unwrap_or(DEFAULT_WAIT_SECS) {
        secs @ 0..=MAX_WAIT_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("timeout must be between 0 and {MAX_WAIT_SECS} seconds"),
        )),
    }
}

/// Returns when job `id`'s final event arrives, `timeout` passes or the daemon shuts down.
async fn until_finished(
    state: &AppState,
    events: &mut Receiver<Arc<JobEvent>>,
    id: JobId,
    timeout: Duration,
) -> Result<(), ApiError> {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return Ok(()),
            () = state.shutdown.cancelled() => return Ok(()),
            received = events.recv() => match received {
                Ok(event) if event.job_id == id && event.status.is_finished() => return Ok(()),
                Ok(_) => {}
                // The skipped events may have held the end: the store knows.
                Err(RecvError::Lagged(_)) => {
                    if state.store.get_job(id).await?.status.is_finished() {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_defaults_to_30_s_and_is_bounded() {
        assert_eq!(wait_timeout(None).unwrap(), Duration::from_secs(30));
        assert_eq!(wait_timeout(Some(0)).unwrap(), Duration::ZERO);
        assert_eq!(wait_timeout(Some(300)).unwrap(), Duration::from_secs(300));
        assert_eq!(
            wait_timeout(Some(301)).unwrap_err().code,
            ErrorCode::InvalidQuery
        );
    }
}
