//! The webhook delivery log of a job.

use axum::extract::State;

use super::AppState;
use super::dto::{DeliveryList, DeliveryView};
use super::extract::JobIdPath;
use super::problem::{ApiError, ProblemDetails};

/// The job's webhook deliveries: one per event and receiver, with its attempts and outcome.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/deliveries", operation_id = "list_job_deliveries", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The deliveries, in event order", body = DeliveryList),
        (status = 400, description = "The id is not a UUID", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn list_job_deliveries(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<axum::Json<DeliveryList>, ApiError> {
    let deliveries = state.store.deliveries_of(id).await?;
    Ok(axum::Json(DeliveryList {
        deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
    }))
}
