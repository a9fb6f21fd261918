//! `GET /jobs/{jobId}/webhook-deliveries` and `POST /webhook-deliveries/{id}/redeliver`:
//! the delivery log kept by the dispatcher.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use plangrep_core::api::timestamp;
use plangrep_core::id::{DeliveryId, JobId};
use plangrep_proto::dispatcher::{self, ListDeliveriesRequest, RedeliverRequest};
use plangrep_proto::orchestrator::GetJobRequest;
use plangrep_proto::time::from_timestamp;
use serde::Serialize;

use super::PathId;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::startup::AppState;

/// One attempt of a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    number: u32,
    trigger: String,
    #[serde(with = "timestamp::option")]
    started_at: Option<DateTime<Utc>>,
    duration_ms: u32,
    status_code: Option<u32>,
    error: Option<String>,
    response_snippet: Option<String>,
}

/// One delivery with its attempts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    id: String,
    event_id: String,
    sequence: u32,
    job_status: String,
    state: String,
    attempts: Vec<AttemptView>,
    #[serde(with = "timestamp::option")]
    next_attempt_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp::option")]
    created_at: Option<DateTime<Utc>>,
}

impl From<dispatcher::Delivery> for DeliveryView {
    fn from(delivery: dispatcher::Delivery) -> Self {
        Self {
            id: delivery.id,
            event_id: delivery.event_id,
            sequence: delivery.sequence,
            job_status: delivery.job_status,
            state: delivery.state,
            attempts: delivery
                .attempts
                .into_iter()
                .map(|attempt| AttemptView {
                    number: attempt.number,
                    trigger: attempt.trigger,
                    started_at: attempt.started_at.as_ref().and_then(from_timestamp),
                    duration_ms: attempt.duration_ms,
                    status_code: attempt.status_code,
                    error: attempt.error,
                    response_snippet: attempt.response_snippet,
                })
                .collect(),
            next_attempt_at: delivery.next_attempt_at.as_ref().and_then(from_timestamp),
            created_at: delivery.created_at.as_ref().and_then(from_timestamp),
        }
    }
}

/// `{"deliveries": […]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
}

/// `{"delivery": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryEnvelope {
    delivery: DeliveryView,
}

/// Every delivery of a job, oldest event first.
#[utoipa::path(
    operation_id = "listWebhookDeliveries",
    get,
    path = "/api/open/v1/jobs/{job_id}/webhook-deliveries",
    tag = "webhooks",
    summary = "The job's webhook deliveries and their attempts",
    params(("job_id" = String, Path, description = "A `job_` id")),
    responses((status = 200, description = "Every delivery, oldest event first", body = DeliveryList))
)]
pub async fn list(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
) -> Result<Json<DeliveryList>, ApiError> {
    // The job must exist for this organization: an unknown job is a 404, not an empty list.
    state
        .orchestrator
        .clone()
        .get_job(GetJobRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
        })
        .await?;
    let response = state
        .dispatcher
        .clone()
        .list_deliveries(ListDeliveriesRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(Json(DeliveryList {
        deliveries: response.deliveries.into_iter().map(Into::into).collect(),
    }))
}

/// Schedules a fresh attempt of a delivery now (same `webhook-id`).
#[utoipa::path(
    operation_id = "redeliverWebhook",
    post,
    path = "/api/open/v1/webhook-deliveries/{delivery_id}/redeliver",
    tag = "webhooks",
    summary = "Send a delivery again now (same webhook-id)",
    params(("delivery_id" = String, Path, description = "A `dlv_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 202, description = "The delivery, pending", body = DeliveryEnvelope))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(delivery_id): PathId<DeliveryId>,
) -> Result<(StatusCode, Json<DeliveryEnvelope>), ApiError> {
    let delivery = state
        .dispatcher
        .clone()
        .redeliver(RedeliverRequest {
            org_id: key.org_id.to_string(),
            delivery_id: delivery_id.to_string(),
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(DeliveryEnvelope {
            delivery: delivery.into(),
        }),
    ))
}
