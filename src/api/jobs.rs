//! Job routes: submit, list, read, change, forget.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppState;
use super::dto::{Count, JobList, JobPatch, JobView, ListParams};
use super::extract::{AppJson, AppQuery, IdempotencyHeader, JobIdPath, Submission};
use super::problem::{ApiError, ErrorCode, ProblemDetails};
use crate::domain::manifest::ManifestOptions;
use crate::domain::request::MAX_LIMIT;
use crate::domain::{
    IdempotencyKey, JobChanges, JobId, JobRequest, JobStatus, KeyedJob, NewJob, Priority,
    Transition,
};
use crate::events::{EventKind, JobEvent};
use crate::fetch::AddressPolicy;
use crate::store::{ListQuery, Submitted};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// Submit a job: JSON, or a `text/plain` manifest (one URL per line, indented `sha256=`,
/// `out=`, `dir=` options below a URL; job options as query parameters). With an
/// `Idempotency-Key`, sending the same request again answers 200 with the job it created.
#[utoipa::path(
    post, path = "/v1/jobs", operation_id = "create_job", tag = "jobs",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Names this submission (1 to 255 printable ASCII characters): the same key with the same request answers 200 with the job it created (as long as that job is known), with another request 409"),
        ManifestOptions,
    ),
    request_body(
        description = "The job as JSON, or a manifest as text: one URL per line, options indented below it (`sha256=<hex>`, `out=<path>`, `dir=<dir>`), blank lines and `#` comments ignored",
        content(
            (JobRequest = "application/json"),
            (String = "text/plain", example = "https://example.com/a.bin\n  sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n  out=weights/a.bin\n"),
        ),
    ),
    responses(
        (status = 200, description = "The `Idempotency-Key` already created this job (with the same request): the job now; nothing new is queued", body = JobView,
            headers(("Location" = String, description = "/v1/jobs/{id}"))),
        (status = 201, description = "Queued; `Location` names the new job", body = JobView,
            headers(("Location" = String, description = "/v1/jobs/{id}"))),
        (status = 400, description = "The body is not JSON, a query parameter or the `Idempotency-Key` is malformed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` came with another request", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "The body is neither `application/json` nor `text/plain`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "The request, its `url_template` or its manifest is invalid (see `code`)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "The queue is full; retry after `Retry-After` seconds", body = ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn create_job(
    State(state): State<AppState>,
    IdempotencyHeader(key): IdempotencyHeader,
    Submission(request): Submission,
) -> Result<Response, ApiError> {
    let key = key
        .map(|key| IdempotencyKey::new(&key, &request))
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidIdempotencyKey, e.to_string()))?;
    // A replay is answered without parsing again or counting against a full queue.
    if let Some(key) = &key
        && let Some(keyed) = state.store.find_key(key).await?
    {
        return replay(&state, keyed).await;
    }
    let api = state.api.clone();
    // Parsing checks the disk (existing directories, symlinks): keep it off the async threads.
    let parsed =
        tokio::task::spawn_blocking(move || request.parse(&api.root, api.max_files_per_job))
            .await
            .map_err(ApiError::internal)?;
    let new_job = parsed?;
    check_addresses(state.api.address_policy, &new_job)?;
    if new_job.callback_url.is_some() {
        state.webhooks.expect_callbacks();
    }
    let max_queued = state.api.max_queued_jobs;
    let job = match &key {
        None => state.store.insert_job(&new_job, max_queued).await?,
        Some(key) => match state
            .store
            .insert_job_once(&new_job, max_queued, key)
            .await?
        {
            Submitted::Created(job) => *job,
            // An identical request committed first: this one is its replay.
            Submitted::Existing(keyed) => return replay(&state, keyed).await,
        },
    };
    tracing::info!(job.id = %job.id, files = job.file_count, "queued job {}", job.id);
    state
        .events
        .publish(JobEvent::about(EventKind::Queued, &job));
    state.engine.wake();
    Ok(with_location(
        StatusCode::CREATED,
        JobView::new(job, None, true),
    ))
}

/// Refuses at once a job whose URLs (files, mirrors, callback, proxy) name an IP address the
/// policy denies: it could only fail. A host name is judged when it is resolved.
fn check_addresses(policy: AddressPolicy, job: &NewJob) -> Result<(), ApiError> {
    let proxy = job.proxy.as_deref().and_then(|p| url::Url::parse(p).ok());
    let files = job.files.iter().flat_map(|f| {
        std::iter::once(("url", &f.url)).chain(f.mirrors.iter().map(|m| ("mirror", m)))
    });
    let urls = files
        .chain(job.callback_url.iter().map(|u| ("callback_url", u)))
        .chain(proxy.iter().map(|u| ("proxy", u)));
    for (what, url) in urls {
        policy.check_url(url).map_err(|denied| {
            ApiError::new(ErrorCode::AddressDenied, format!("{what}: {denied}"))
        })?;
    }
    Ok(())
}

/// The answer to a submission whose `Idempotency-Key` names a job already.
async fn replay(state: &AppState, keyed: KeyedJob) -> Result<Response, ApiError> {
    if !keyed.same_request {
        // The key is not echoed: clients may build it from something private.
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            format!(
                "this Idempotency-Key created job {} from another request; use a new key for a \
                 new job",
                keyed.job
            ),
        ));
    }
    let job = state.store.get_job(keyed.job).await?;
    tracing::info!(job.id = %job.id, "submission of job {} replayed", job.id);
    Ok(with_location(
        StatusCode::OK,
        JobView::single(job, &state.engine),
    ))
}

fn with_location(status: StatusCode, view: JobView) -> Response {
    let location = format!("/v1/jobs/{}", view.id);
    (status, [(header::LOCATION, location)], axum::Json(view)).into_response()
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs (without their files)", body = JobList),
        (status = 400, description = "A malformed filter, limit or cursor", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<ListParams>,
) -> Result<axum::Json<JobList>, ApiError> {
    let query = list_query(params)?;
    let page = state.store.list_jobs(&query).await?;
    let jobs = page
        .jobs
        .into_iter()
        .map(|job| {
            let run = state.engine.live(job.id);
            JobView::new(job, run.as_deref(), false)
        })
        .collect();
    Ok(axum::Json(JobList {
        jobs,
        next_cursor: page.next.map(encode_cursor),
    }))
}

fn list_query(params: ListParams) -> Result<ListQuery, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let mut statuses = Vec::new();
    for name in params
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let status = JobStatus::parse(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("unknown status {name:?}; use {}", status_names()),
            )
        })?;
        statuses.push(status);
    }
    if let Some(q) = &params.q {
        regex::RegexBuilder::new(q)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRegex,
                    format!("q is not a valid regular expression: {e}"),
                )
            })?;
    }
    let before = params.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok(ListQuery {
        statuses,
        description_regex: params.q,
        limit,
        before,
    })
}

fn status_names() -> String {
    JobStatus::ALL.map(JobStatus::as_str).join(", ")
}

fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("before:{seq}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("before:")?.parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "cursor is not a `next_cursor` from a previous page",
            )
        })
}

/// One job with its files and live progress.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "The id is not a UUID", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = state.store.get_job(id).await?;
    Ok(axum::Json(JobView::single(job, &state.engine)))
}

/// Applies a transition, tells the engine, publishes the event, and returns the job.
async fn transition(
    state: &AppState,
    id: JobId,
    action: Transition,
    changes: JobChanges,
) -> Result<Option<JobView>, ApiError> {
    // Announce the change before anything can act on it: `job.queued` precedes the
    // `job.started` a resume leads to, even if the dispatcher is awake already.
    let claims = match action {
        Transition::Resume | Transition::Retry => Some(state.engine.hold_claims().await),
        _ => None,
    };
    let (before, job) = state.store.transition(id, action, changes).await?;
    if let Some(job) = job.as_ref().filter(|job| job.status != before) {
        tracing::info!(job.id = %id, "job {id}: {before} -> {}", job.status);
        let event = JobEvent::about(EventKind::for_status(job.status), job);
        state.events.publish(event);
    }
    drop(claims);
    state.engine.after_transition(id, before, action).await;
    if job.is_none() {
        return Ok(None);
    }
    // Re-read after the engine acted, so the answer shows where the job really is.
    let job = state.store.get_job(id).await?;
    Ok(Some(JobView::single(job, &state.engine)))
}

fn found(view: Option<JobView>, id: JobId) -> Result<axum::Json<JobView>, ApiError> {
    view.map(axum::Json)
        .ok_or_else(|| ApiError::new(ErrorCode::JobNotFound, format!("job {id} not found")))
}

macro_rules! action_route {
    ($name:ident, $path:literal, $action:expr, $summary:literal, $conflict:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            post, path = $path, operation_id = stringify!($name), tag = "jobs",
            params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
            responses(
                (status = 200, description = "The job after the change", body = JobView),
                (status = 400, description = "The id is not a UUID", body = ProblemDetails, content_type = "application/problem+json"),
                (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
                (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
                (status = 409, description = $conflict, body = ProblemDetails, content_type = "application/problem+json"),
                (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
            )
        )]
        pub async fn $name(State(state): State<AppState>, JobIdPath(id): JobIdPath) -> Result<axum::Json<JobView>, ApiError> {
            found(transition(&state, id, $action, JobChanges::default()).await?, id)
        }
    };
}

action_route!(
    cancel_job,
    "/v1/jobs/{id}/cancel",
    Transition::Cancel,
    "Cancel a queued, paused or running job; its partial files are removed.",
    "The job has already finished"
);
action_route!(
    pause_job,
    "/v1/jobs/{id}/pause",
    Transition::Pause,
    "Pause a queued or running job, keeping its partial files and progress (idempotent).",
    "The job has finished"
);
action_route!(
    resume_job,
    "/v1/jobs/{id}/resume",
    Transition::Resume,
    "Queue a paused job again, or retry a failed one; it continues from its checkpoint.",
    "The job is completed or cancelled"
);
action_route!(
    retry_job,
    "/v1/jobs/{id}/retry",
    Transition::Retry,
    "Queue a failed job again to fetch its failed files anew; complete files are kept, not fetched again.",
    "The job is not failed"
);

/// Change a job's priority or its download rate limit.
#[utoipa::path(
    patch, path = "/v1/jobs/{id}", operation_id = "update_job", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    request_body = JobPatch,
    responses(
        (status = 200, description = "The job after the change", body = JobView),
        (status = 400, description = "The id is not a UUID or the body not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The job has finished", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or empty change", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn update_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
    AppJson(patch): AppJson<JobPatch>,
) -> Result<axum::Json<JobView>, ApiError> {
    let changes = job_changes(&patch)?;
    let view = transition(&state, id, Transition::Update, changes).await?;
    if let Some(rate) = changes.max_bytes_per_second {
        state.engine.set_job_rate(id, rate);
    }
    found(view, id)
}

fn job_changes(patch: &JobPatch) -> Result<JobChanges, ApiError> {
    if patch.priority.is_none() && patch.max_bytes_per_second.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "nothing to change: give `priority` or `max_bytes_per_second`",
        ));
    }
    let priority = match patch.priority {
        Some(p) => Some(Priority::new(p).ok_or_else(|| {
            let detail = format!(
                "priority must be between {} and {}",
                Priority::MIN,
                Priority::MAX
            );
            ApiError::new(ErrorCode::InvalidPriority, detail)
        })?),
        None => None,
    };
    if let Some(Some(rate)) = patch.max_bytes_per_second
        && !(1..=MAX_LIMIT).contains(&rate)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            "max_bytes_per_second must be between 1 and 2^63-1 (null for no limit)",
        ));
    }
    Ok(JobChanges {
        priority,
        max_bytes_per_second: patch.max_bytes_per_second,
    })
}

/// Forget a finished job. Its downloaded files stay on disk; partial files are removed.
#[utoipa::path(
    delete, path = "/v1/jobs/{id}", operation_id = "delete_job", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 400, description = "The id is not a UUID", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The job is still queued, running or paused", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn delete_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<StatusCode, ApiError> {
    // A failed job may keep partial files for a resume; once forgotten, nothing can use them.
    let partials = state.store.partial_paths(id).await?;
    transition(&state, id, Transition::Forget, JobChanges::default()).await?;
    state.engine.discard_paths(partials).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel every queued, paused and running job.
#[utoipa::path(
    post, path = "/v1/jobs/cancel-all", operation_id = "cancel_all_jobs", tag = "jobs",
    responses(
        (status = 200, description = "How many jobs were cancelled", body = Count),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_all_jobs(State(state): State<AppState>) -> Result<axum::Json<Count>, ApiError> {
    let cancelled = state.store.cancel_all().await?;
    let running = cancelled
        .jobs
        .iter()
        .filter(|j| j.status == JobStatus::Running)
        .map(|j| j.id);
    state.engine.stop_running(running.collect::<Vec<_>>()).await;
    state.engine.discard_paths(cancelled.partials).await;
    for mut job in cancelled.jobs.iter().cloned() {
        job.status = JobStatus::Cancelled;
        state
            .events
            .publish(JobEvent::about(EventKind::Cancelled, &job));
    }
    let count = cancelled.jobs.len() as u64;
    tracing::info!(jobs = count, "cancelled {count} jobs");
    Ok(axum::Json(Count { count }))
}

/// Forget every finished job (completed, failed, cancelled), removing their partial files.
#[utoipa::path(
    post, path = "/v1/jobs/prune", operation_id = "prune_jobs", tag = "jobs",
    responses(
        (status = 200, description = "How many jobs were forgotten", body = Count),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn prune_jobs(State(state): State<AppState>) -> Result<axum::Json<Count>, ApiError> {
    let (pruned, partials) = state.store.prune().await?;
    state.engine.discard_paths(partials).await;
    tracing::info!(jobs = pruned, "pruned {pruned} finished jobs");
    Ok(axum::Json(Count { count: pruned }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert_eq!(
            decode_cursor("bm9wZQ").unwrap_err().code,
            ErrorCode::InvalidCursor
        );
        assert_eq!(
            decode_cursor("!!").unwrap_err().code,
            ErrorCode::InvalidCursor
        );
    }

    #[test]
    fn list_parameters_are_checked() {
        let params = |status: &str, limit: u32| ListParams {
            status: Some(status.into()),
            limit: Some(limit),
            ..Default::default()
        };
        assert_eq!(
            list_query(params("queued, running", 10)).unwrap().statuses,
            vec![JobStatus::Queued, JobStatus::Running]
        );
        assert_eq!(
            list_query(params("done", 10)).unwrap_err().code,
            ErrorCode::InvalidQuery
        );
        assert_eq!(
            list_query(params("", 0)).unwrap_err().code,
            ErrorCode::InvalidQuery
        );
        let bad_regex = ListParams {
            q: Some("(".into()),
            ..Default::default()
        };
        assert_eq!(
            list_query(bad_regex).unwrap_err().code,
            ErrorCode::InvalidRegex
        );
    }
}
