//! Jobs: create, read, list per project, status history, cancel and resume.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use plangrep_core::JobStatus;
use plangrep_core::api::JobView;
use plangrep_core::id::{JobId, ProjectId};
use plangrep_core::validate::{ExternalId, FieldError};
use plangrep_proto::orchestrator::{
    CancelJobRequest, CompleteUploadsRequest, CreateJobRequest, GetJobRequest, GetJobResultRequest,
    ListJobEventsRequest, ListJobsRequest, ResumeJobRequest,
};
use plangrep_proto::time::from_timestamp;
use plangrep_proto::views::job_view;
use serde::{Deserialize, Serialize};

use super::PathId;
use crate::auth::ApiKey;
use crate::destination;
use crate::error::ApiError;
use crate::idempotency::{IdempotencyKey, is_replay};
use crate::json::{ApiJson, CheckedJson, Refused};
use crate::query::{ApiQuery, PageQuery};
use crate::startup::AppState;

/// Body of `POST /projects/{projectId}/jobs`; every field optional, unknown ones refused.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateJobBody {
    /// The customer's own reference: any string of at most 180 characters but U+0000,
    /// stored and echoed as is (not unique).
    #[schema(max_length = 180, pattern = r"^[^\u0000]*$")]
    external_id: Option<String>,
    /// Absolute `https` URL of a public host; receives every status change, signed.
    #[schema(format = "uri", max_length = 2048, pattern = "^https://")]
    webhook_url: Option<String>,
}

/// `{"job": …, "webhookSigningSecret"?: …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedJob {
    job: JobView,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_signing_secret: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent: bool,
}

/// `{"job": …}` (+ `"idempotent": true` on a replay).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobEnvelope {
    job: JobView,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent: bool,
}

/// Creates a job in a ready project.
#[utoipa::path(
    operation_id = "createJob",
    post,
    path = "/api/open/v1/projects/{project_id}/jobs",
    tag = "jobs",
    summary = "Create a job in a ready project",
    request_body(content = Option<CreateJobBody>, description = "Every field is optional; `{}` and an empty body are valid"),
    params(("project_id" = String, Path, description = "A `proj_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 202, description = "The job, provisioning; the signing secret when a webhookUrl was given", body = CreatedJob))
)]
pub async fn create(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(project_id): PathId<ProjectId>,
    idempotency: IdempotencyKey,
    CheckedJson(body): CheckedJson<CreateJobBody>,
) -> Result<(StatusCode, Json<CreatedJob>), ApiError> {
    // A refused body is answered through the orchestrator too (below), so that under an
    // Idempotency-Key it is stored and replayed like any 4xx.
    let (body, canonical, refused) = match body {
        Ok(ApiJson { body, canonical }) => (body, canonical, None),
        Err(Refused { error, canonical }) => (CreateJobBody::default(), canonical, Some(error)),
    };
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
    // A refusal with an Idempotency-Key still goes to the orchestrator: what is stored
    // under the key wins (a retry whose host now resolves elsewhere replays the job and
    // its secret), and otherwise the refusal itself is stored (SPEC §2).
    let rejection = match refused {
        Some(error) => Some(idempotency.reject(error)?),
        None if invalid.is_empty() => None,
        None => Some(idempotency.reject(ApiError::invalid_fields(invalid))?),
    };
    let response = state
        .orchestrator
        .clone()
        .create_job(CreateJobRequest {
            org_id: key.org_id.to_string(),
            project_id: project_id.to_string(),
            external_id: external_id.map(|e| e.as_str().to_owned()),
            webhook_url: webhook_url.map(|u| u.as_str().to_owned()),
            idempotency: idempotency.scope(&canonical),
            rejection,
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
#[utoipa::path(
    operation_id = "getJob",
    get,
    path = "/api/open/v1/jobs/{job_id}",
    tag = "jobs",
    summary = "Read a job",
    params(("job_id" = String, Path, description = "A `job_` id")),
    responses((status = 200, description = "The job", body = JobEnvelope))
)]
pub async fn get(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
) -> Result<Json<JobEnvelope>, ApiError> {
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
    CompleteUploads,
}

async fn transition(
    state: AppState,
    key: ApiKey,
    job_id: JobId,
    idempotency: IdempotencyKey,
    transition: Transition,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
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
        Transition::CompleteUploads => {
            orchestrator
                .complete_uploads(CompleteUploadsRequest {
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
#[utoipa::path(
    operation_id = "cancelJob",
    post,
    path = "/api/open/v1/jobs/{job_id}/cancel",
    tag = "jobs",
    summary = "Cancel a non-terminal job",
    params(("job_id" = String, Path, description = "A `job_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 202, description = "The cancelled job", body = JobEnvelope))
)]
pub async fn cancel(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    transition(state, key, job_id, idempotency, Transition::Cancel).await
}

/// Resumes a job blocked on credits (202); any other status is 409 `invalid_job_state`.
#[utoipa::path(
    operation_id = "resumeJob",
    post,
    path = "/api/open/v1/jobs/{job_id}/resume",
    tag = "jobs",
    summary = "Resume a job blocked on credits",
    params(("job_id" = String, Path, description = "A `job_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 202, description = "The job, preflighting again", body = JobEnvelope))
)]
pub async fn resume(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    transition(state, key, job_id, idempotency, Transition::Resume).await
}

/// Closes the upload window (202, `preflighting`); a job without files is 409 `no_files`.
#[utoipa::path(
    operation_id = "completeUploads",
    post,
    path = "/api/open/v1/jobs/{job_id}/uploads/complete",
    tag = "jobs",
    summary = "Close the upload window and start preflight",
    params(("job_id" = String, Path, description = "A `job_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 202, description = "The job, preflighting", body = JobEnvelope))
)]
pub async fn complete_uploads(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
) -> Result<(StatusCode, Json<JobEnvelope>), ApiError> {
    transition(state, key, job_id, idempotency, Transition::CompleteUploads).await
}

/// The v1 result of a job that completed (with or without errors); immutable.
#[utoipa::path(
    operation_id = "getJobResult",
    get,
    path = "/api/open/v1/jobs/{job_id}/result",
    tag = "jobs",
    summary = "The job's result (v1)",
    params(("job_id" = String, Path, description = "A `job_` id")),
    responses(
        (status = 200, description = "The result document", body = plangrep_core::api::JobResultView),
        (status = 409, description = "`result_not_available`: the job has not completed (yet)", body = crate::error::ErrorResponse)
    )
)]
pub async fn result(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
) -> Result<axum::response::Response, ApiError> {
    let result = state
        .orchestrator
        .clone()
        .get_job_result(GetJobResultRequest {
            org_id: key.org_id.to_string(),
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    // Served as stored: the document was serialized once, when the job completed.
    Ok((
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        result.json,
    )
        .into_response())
}

/// `?limit=&cursor=&status=&externalId=` of a job list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobListQuery {
    /// Page size, 1 to 500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `nextCursor` of the previous page.
    #[param(max_length = 200)]
    cursor: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<plangrep_core::JobStatus>)]
    status: Option<String>,
    /// Only jobs with this external id.
    #[param(max_length = 180, pattern = r"^[^\u0000]*$")]
    external_id: Option<String>,
}

/// `{"jobs": […], "nextCursor", "hasMore"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    jobs: Vec<JobView>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// Lists a project's jobs, newest first, optionally filtered.
#[utoipa::path(
    operation_id = "listJobs",
    get,
    path = "/api/open/v1/projects/{project_id}/jobs",
    tag = "jobs",
    summary = "List a project's jobs, newest first",
    params(("project_id" = String, Path, description = "A `proj_` id"), JobListQuery),
    responses((status = 200, description = "A page of jobs", body = JobList))
)]
pub async fn list(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(project_id): PathId<ProjectId>,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<JobList>, ApiError> {
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobEventList {
    events: Vec<JobEventView>,
}

/// The job's status history, oldest first.
#[utoipa::path(
    operation_id = "listJobEvents",
    get,
    path = "/api/open/v1/jobs/{job_id}/events",
    tag = "jobs",
    summary = "The job's status history, oldest first",
    params(("job_id" = String, Path, description = "A `job_` id")),
    responses((status = 200, description = "Every status change", body = JobEventList))
)]
pub async fn events(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
) -> Result<Json<JobEventList>, ApiError> {
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
