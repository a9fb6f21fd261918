//! `POST /jobs/{jobId}/webhook-secret/rotate` (SPEC §4, ADR 0011): a new signing secret,
//! shown once (and on idempotent replays); the replaced one keeps signing beside it until
//! `previousSecretExpiresAt`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use plangrep_core::api::timestamp;
use plangrep_core::id::JobId;
use plangrep_proto::orchestrator::RotateWebhookSecretRequest;
use plangrep_proto::time::from_timestamp;
use serde::Serialize;

use super::PathId;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::idempotency::{IdempotencyKey, is_replay};
use crate::startup::AppState;

/// `{"webhookSigningSecret": …, "previousSecretExpiresAt": …}` (+ `"idempotent": true` on
/// a replay).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new `whsec_` secret: every delivery is signed with it from now on.
    webhook_signing_secret: String,
    /// Until then deliveries carry a signature with the previous secret too.
    #[serde(with = "timestamp")]
    previous_secret_expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent: bool,
}

/// Rotates a job's webhook signing secret.
#[utoipa::path(
    operation_id = "rotateWebhookSecret",
    post,
    path = "/api/open/v1/jobs/{job_id}/webhook-secret/rotate",
    tag = "jobs",
    summary = "Rotate the job's webhook signing secret (with an overlap)",
    description = "A new secret, shown once (and on idempotent replays). Until `previousSecretExpiresAt` (now + `PLANGREP_WEBHOOK_SECRET_OVERLAP`, default 24 h) every delivery carries one signature per secret, space-separated; after it, only the new one. A job without a `webhookUrl` is 409 `no_webhook`.",
    params(("job_id" = String, Path, description = "A `job_` id"), crate::openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The new secret and when the previous one stops signing", body = RotatedSecret),
        (status = 409, description = "`no_webhook`: the job has no webhookUrl", body = crate::error::ErrorResponse)
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<Json<RotatedSecret>, ApiError> {
    let response = state
        .orchestrator
        .clone()
        .rotate_webhook_secret(RotateWebhookSecretRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
            idempotency: idempotency.scope(""),
        })
        .await?;
    let idempotent = is_replay(response.metadata());
    let rotated = response.into_inner();
    let previous_secret_expires_at = rotated
        .previous_secret_expires_at
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| ApiError::internal("rotation answer without an expiry"))?;
    Ok(Json(RotatedSecret {
        webhook_signing_secret: rotated.webhook_signing_secret,
        previous_secret_expires_at,
        idempotent,
    }))
}
