//! `POST /projects`, `GET /projects`, `GET /projects/{projectId}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use plangrep_core::api::ProjectView;
use plangrep_core::id::ProjectId;
use plangrep_core::validate::ProjectName;
use plangrep_proto::orchestrator::{CreateProjectRequest, GetProjectRequest, ListProjectsRequest};
use plangrep_proto::views::project_view;
use serde::{Deserialize, Serialize};

use super::PathId;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::idempotency::{IdempotencyKey, is_replay};
use crate::json::{ApiJson, CheckedJson, Refused};
use crate::query::{ApiQuery, PageQuery};
use crate::startup::AppState;

/// Body of `POST /projects`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateProjectBody {
    /// 1 to 180 characters, unique within the organization.
    #[schema(
        min_length = 1,
        max_length = 180,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
}

/// `{"project": …}` (+ `"idempotent": true` on a replay).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectEnvelope {
    project: ProjectView,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    idempotent: bool,
}

/// Creates a project (`provisioning`, `ready` within seconds).
#[utoipa::path(
    operation_id = "createProject",
    post,
    path = "/api/open/v1/projects",
    tag = "projects",
    summary = "Create a project",
    request_body = CreateProjectBody,
    params(crate::openapi::IdempotencyHeader),
    responses((status = 202, description = "The project, provisioning", body = ProjectEnvelope))
)]
pub async fn create(
    State(state): State<AppState>,
    key: ApiKey,
    idempotency: IdempotencyKey,
    CheckedJson(body): CheckedJson<CreateProjectBody>,
) -> Result<(StatusCode, Json<ProjectEnvelope>), ApiError> {
    // A refused body or name with an Idempotency-Key is stored like any 4xx (SPEC §2).
    let (body, canonical, refused) = match body {
        Ok(ApiJson { body, canonical }) => (body, canonical, None),
        Err(Refused { error, canonical }) => (CreateProjectBody::default(), canonical, Some(error)),
    };
    let (name, rejection) = match (refused, ProjectName::parse(&body.name)) {
        (Some(error), _) => (String::new(), Some(idempotency.reject(error)?)),
        (None, Ok(name)) => (name.as_str().to_owned(), None),
        (None, Err(error)) => (
            String::new(),
            Some(idempotency.reject(ApiError::from(error))?),
        ),
    };
    let response = state
        .orchestrator
        .clone()
        .create_project(CreateProjectRequest {
            org_id: key.org_id.to_string(),
            name,
            idempotency: idempotency.scope(&canonical),
            rejection,
        })
        .await?;
    let idempotent = is_replay(response.metadata());
    let response = response.into_inner();
    let project = response
        .project
        .ok_or_else(|| ApiError::internal("CreateProject returned no project"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ProjectEnvelope {
            project: project_view(&project).map_err(ApiError::internal)?,
            idempotent,
        }),
    ))
}

/// Reads a project.
#[utoipa::path(
    operation_id = "getProject",
    get,
    path = "/api/open/v1/projects/{project_id}",
    tag = "projects",
    summary = "Read a project",
    params(("project_id" = String, Path, description = "A `proj_` id")),
    responses((status = 200, description = "The project", body = ProjectEnvelope))
)]
pub async fn get(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(project_id): PathId<ProjectId>,
) -> Result<Json<ProjectEnvelope>, ApiError> {
    let project = state
        .orchestrator
        .clone()
        .get_project(GetProjectRequest {
            org_id: key.org_id.to_string(),
            project_id: project_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(Json(ProjectEnvelope {
        project: project_view(&project).map_err(ApiError::internal)?,
        idempotent: false,
    }))
}

/// `{"projects": […], "nextCursor", "hasMore"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectList {
    projects: Vec<ProjectView>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// Lists the organization's projects, newest first.
#[utoipa::path(
    operation_id = "listProjects",
    get,
    path = "/api/open/v1/projects",
    tag = "projects",
    summary = "List projects, newest first",
    params(crate::query::PageQuery),
    responses((status = 200, description = "A page of projects", body = ProjectList))
)]
pub async fn list(
    State(state): State<AppState>,
    key: ApiKey,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ProjectList>, ApiError> {
    let response = state
        .orchestrator
        .clone()
        .list_projects(ListProjectsRequest {
            org_id: key.org_id.to_string(),
            page: Some(query.to_request()?),
        })
        .await?
        .into_inner();
    let page = response.page.unwrap_or_default();
    Ok(Json(ProjectList {
        projects: response
            .projects
            .iter()
            .map(project_view)
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)?,
        next_cursor: page.next_cursor,
        has_more: page.has_more,
    }))
}
