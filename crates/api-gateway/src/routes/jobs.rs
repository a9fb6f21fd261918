//! `POST /projects/{projectId}/jobs`, `GET /jobs/{jobId}`, `POST /jobs/{jobId}/cancel`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use plangrep_core::api::JobView;
use plangrep_core::id::{JobId, ProjectId};
use plangrep_core::validate::{ExternalId, FieldError};
use plangrep_proto::orchestrator::{CancelJobRequest, CreateJobRequest, GetJobRequest};
use plangrep_proto::views::job_view;
use serde::{Deserialize, Serialize};

use super::PathId;
use crate::auth::ApiKey;
use crate::destination;
use crate::error::ApiError;
use crate::idempotency::{IdempotencyKey, is_replay};
use crate::json::ApiJson;
use crate::startup::AppState;

/// Body of `POST /projects/{projectId}/jobs`; every field optional, unknown ones refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateJobBody {
    external_id: Option<String>,
    webhook_url: Option<String>,
}

/// `{"job": …, "webhookSigningSecret"?: …}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedJob {
    job: JobView,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_signing_secret: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent: bool,
}

/// `{"job": …}` (+ `"idempotent": true` on a replay).
#[derive(Debug, Serialize)]
pub struct JobEnvelope {
    job: JobView,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent: bool,
}

/// Creates a job in a ready project.
pub async fn create(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(project_id): PathId<ProjectId>,
    idempotency: IdempotencyKey,
    ApiJson { body, canonical }: ApiJson<CreateJobBody>,
) -> Result<(StatusCode, Json<CreatedJob>), ApiError> {
    key.require("jobs:write")?;
    let mut invalid: Vec<FieldError> = Vec::new();
    let external_id = match body
        .external_id
        .as_deref()
        .map(ExternalId::parse)
        .transpose()
    {
        Ok(external_id) => external_id,
        Err(error) => {
            invalid.push(error);
            None
        }
    };
    let webhook_url = match body.webhook_url.as_deref() {
        None => None,
        Some(raw) => match destination::validate(raw, state.config.destination_policy).await {
            Ok(url) => Some(url),
            Err(error) => {
                invalid.push(error);
                None
            }
        },
    };
    if !invalid.is_empty() {
        return Err(ApiError::invalid_fields(invalid));
    }
    let response = state
        .orchestrator
        .clone()
        .create_job(CreateJobRequest {
            org_id: key.org_id.to_string(),
            project_id: project_id.to_string(),
            external_id: external_id.map(|e| e.as_str().to_owned()),
            webhook_url: webhook_url.map(|u| u.as_str().to_owned()),
            idempotency: idempotency.scope(&canonical),
        })
        .await?;
    let idempotent = is_replay(response.metadata());
    let response = response.into_inner();
    let job = response
        .job
        .ok_or_else(|| ApiError::internal("CreateJob returned no job"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CreatedJob {
            job: job_view(&job).map_err(ApiError::internal)?,
            webhook_signing_secret: response.webhook_signing_secret,
            idempotent,
        }),
    ))
}

/// Reads a job.
pub async fn get(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
) -> Result<Json<JobEnvelope>, ApiError> {
    key.require("jobs:read")?;
    let job = state
        .orchestrator
        .clone()
        .get_job(GetJobRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(Json(JobEnvelope {
        job: job_view(&job).map_err(ApiError::internal)?,
        idempotent: false,
    }))
}

/// Cancels a non-terminal job (202); a terminal one is 409 `invalid_job_state`.
pub async fn cancel(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    key.require("jobs:write")?;
    let response = state
        .orchestrator
        .clone()
        .cancel_job(CancelJobRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
            idempotency: idempotency.scope(""),
        })
        .await?;
    let idempotent = is_replay(response.metadata());
    let job = response.into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(JobEnvelope {
            job: job_view(&job).map_err(ApiError::internal)?,
            idempotent,
        }),
    ))
}
