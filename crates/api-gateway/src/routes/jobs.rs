//! Jobs: create, read, list per project, status history, cancel and resume.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use plangrep_core::JobStatus;
use plangrep_core::api::JobView;
use plangrep_core::id::{JobId, ProjectId};
use plangrep_core::validate::{ExternalId, FieldError};
use plangrep_proto::orchestrator::{
    CancelJobRequest, CreateJobRequest, GetJobRequest, ListJobEventsRequest, ListJobsRequest,
    ResumeJobRequest,
};
use plangrep_proto::time::from_timestamp;
use plangrep_proto::views::job_view;
use serde::{Deserialize, Serialize};

use super::PathId;
use crate::auth::ApiKey;
use crate::destination;
use crate::error::ApiError;
use crate::idempotency::{IdempotencyKey, is_replay};
use crate::json::ApiJson;
use crate::query::{ApiQuery, PageQuery};
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

/// Which user-requested transition to apply.
enum Transition {
    Cancel,
    Resume,
}

async fn transition(
    state: AppState,
    key: ApiKey,
    job_id: JobId,
    idempotency: IdempotencyKey,
    transition: Transition,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    key.require("jobs:write")?;
    let (org_id, job_id, idempotency) = (
        key.org_id.to_string(),
        job_id.to_string(),
        idempotency.scope(""),
    );
    let mut orchestrator = state.orchestrator.clone();
    let response = match transition {
        Transition::Cancel => {
            orchestrator
                .cancel_job(CancelJobRequest {
                    org_id,
                    job_id,
                    idempotency,
                })
                .await?
        }
        Transition::Resume => {
            orchestrator
                .resume_job(ResumeJobRequest {
                    org_id,
                    job_id,
                    idempotency,
                })
                .await?
        }
    };
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

/// Cancels a non-terminal job (202); a terminal one is 409 `invalid_job_state`.
pub async fn cancel(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    transition(state, key, job_id, idempotency, Transition::Cancel).await
}

/// Resumes a job blocked on credits (202); any other status is 409 `invalid_job_state`.
pub async fn resume(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    transition(state, key, job_id, idempotency, Transition::Resume).await
}

/// `?limit=&cursor=&status=&externalId=` of a job list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    status: Option<String>,
    external_id: Option<String>,
}

/// `{"jobs": […], "nextCursor", "hasMore"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    jobs: Vec<JobView>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// Lists a project's jobs, newest first, optionally filtered.
pub async fn list(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(project_id): PathId<ProjectId>,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<JobList>, ApiError> {
    key.require("jobs:read")?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .to_request()?;
    let mut invalid = Vec::new();
    if let Some(status) = &query.status
        && status.parse::<JobStatus>().is_err()
    {
        invalid.push(FieldError::new("status", "is not a job status"));
    }
    if let Some(external_id) = &query.external_id
        && let Err(error) = ExternalId::parse(external_id)
    {
        invalid.push(error);
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid_fields(invalid));
    }
    let response = state
        .orchestrator
        .clone()
        .list_jobs(ListJobsRequest {
            org_id: key.org_id.to_string(),
            project_id: project_id.to_string(),
            page: Some(page),
            status: query.status,
            external_id: query.external_id,
        })
        .await?
        .into_inner();
    let page = response.page.unwrap_or_default();
    Ok(Json(JobList {
        jobs: response
            .jobs
            .iter()
            .map(job_view)
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)?,
        next_cursor: page.next_cursor,
        has_more: page.has_more,
    }))
}

/// One entry of a job's status history.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEventView {
    id: String,
    sequence: u32,
    status: String,
    previous_status: Option<String>,
    #[serde(with = "plangrep_core::api::timestamp::option")]
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `{"events": […]}`.
#[derive(Debug, Serialize)]
pub struct JobEventList {
    events: Vec<JobEventView>,
}

/// The job's status history, oldest first.
pub async fn events(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
) -> Result<Json<JobEventList>, ApiError> {
    key.require("jobs:read")?;
    let response = state
        .orchestrator
        .clone()
        .list_job_events(ListJobEventsRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(Json(JobEventList {
        events: response
            .events
            .into_iter()
            .map(|event| JobEventView {
                id: event.id,
                sequence: event.sequence,
                status: event.status,
                previous_status: event.previous_status,
                occurred_at: event.occurred_at.as_ref().and_then(from_timestamp),
            })
            .collect(),
    }))
}
