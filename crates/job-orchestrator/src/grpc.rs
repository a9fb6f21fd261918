//! The `plangrep.orchestrator.v1.JobOrchestrator` gRPC service: a thin transport over the
//! store and the lifecycle. Mutations run through [`idempotency::run`] (one transaction,
//! replayable); errors map to `tonic::Status` in one place ([`crate::error`]).

use std::time::Duration;

use plangrep_core::id::{JobId, OrgId, ProjectId};
use plangrep_core::pagination::Cursor;
use plangrep_core::validate::{ExternalId, ProjectName};
use plangrep_core::webhook::WebhookSecret;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus};
use plangrep_proto::orchestrator::job_orchestrator_server::JobOrchestrator;
use plangrep_proto::orchestrator::{
    CancelJobRequest, CreateJobRequest, CreateJobResponse, CreateProjectRequest,
    CreateProjectResponse, CreditBalance, GetCreditBalanceRequest, GetJobRequest,
    GetProjectRequest, GetWebhookTargetRequest, GrantCreditsRequest, Job, ListJobEventsRequest,
    ListJobEventsResponse, ListJobsRequest, ListJobsResponse, ListProjectsRequest,
    ListProjectsResponse, PageInfo, PageRequest, Project, ResumeJobRequest, WebhookTarget,
};
use plangrep_proto::time::to_timestamp;
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};

use crate::crypto::SecretsKey;
use crate::error::Error;
use crate::idempotency::{self, Key};
use crate::lifecycle;
use crate::store;
use crate::store::jobs::{self, JobRow};
use crate::store::projects::{self, ProjectRow};

/// The gRPC service state.
#[derive(Clone)]
pub struct OrchestratorService {
    pool: PgPool,
    secrets_key: SecretsKey,
    job_ttl: Duration,
}

fn parse_org(raw: &str) -> Result<OrgId, Error> {
    raw.parse().map_err(|_| Error::NotFound("organization"))
}

impl OrchestratorService {
    /// A service over `pool`.
    pub fn new(pool: PgPool, secrets_key: SecretsKey, job_ttl: Duration) -> Self {
        Self {
            pool,
            secrets_key,
            job_ttl,
        }
    }
}

/// Inserts a `provisioning` project and announces it.
async fn create_project(
    conn: &mut PgConnection,
    org_id: OrgId,
    name: ProjectName,
) -> Result<CreateProjectResponse, Error> {
    let now = store::now();
    let row = ProjectRow {
        id: ProjectId::generate().to_string(),
        org_id: org_id.to_string(),
        name: name.as_str().to_owned(),
        status: ProjectStatus::Provisioning.as_str().to_owned(),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    projects::insert(conn, &row).await?;
    lifecycle::record_project_created(conn, &row).await?;
    tracing::info!(project_id = %row.id, "project created");
    Ok(CreateProjectResponse {
        project: Some(row.to_proto()),
    })
}

/// What a new job is made of, validated.
struct NewJob {
    org_id: OrgId,
    project_id: ProjectId,
    external_id: Option<ExternalId>,
    webhook_url: Option<String>,
}

impl OrchestratorService {
    /// Inserts a `provisioning` job (with its sealed secret) and announces it.
    async fn create_job(
        &self,
        conn: &mut PgConnection,
        new: NewJob,
    ) -> Result<CreateJobResponse, Error> {
        let project =
            projects::get(conn, &new.org_id.to_string(), &new.project_id.to_string()).await?;
        if project.status()? != ProjectStatus::Ready {
            return Err(Error::ProjectNotReady);
        }
        let job_id = JobId::generate();
        let secret = new.webhook_url.as_ref().map(|_| WebhookSecret::generate());
        let now = store::now();
        let row = JobRow {
            id: job_id.to_string(),
            org_id: new.org_id.to_string(),
            project_id: project.id,
            external_id: new.external_id.map(|e| e.as_str().to_owned()),
            status: JobStatus::Provisioning.as_str().to_owned(),
            version: 1,
            last_sequence: 1,
            webhook_url: new.webhook_url,
            webhook_secret_sealed: secret.as_ref().map(|s| self.secrets_key.seal(job_id, s)),
            page_count: 0,
            successful_page_count: 0,
            credits_reserved: 0,
            credits_debited: 0,
            error_code: None,
            error_message: None,
            result_available: false,
            created_at: now,
            updated_at: now,
            completed_at: None,
            expires_at: now + self.job_ttl,
        };
        jobs::insert(conn, &row).await?;
        lifecycle::record_job_created(conn, &row).await?;
        tracing::info!(job_id = %row.id, "job created");
        Ok(CreateJobResponse {
            job: Some(row.to_proto()),
            webhook_signing_secret: secret.map(|s| s.expose()),
        })
    }
}

/// Resumes a job blocked on credits (→ preflighting); any other status is a 409.
async fn resume_job(conn: &mut PgConnection, org_id: &str, job_id: &str) -> Result<Job, Error> {
    lock_job(conn, org_id, job_id).await?;
    let row = lifecycle::apply_job_event(conn, job_id, None, JobEvent::Resumed)
        .await?
        .ok_or(Error::Conflict)?;
    tracing::info!(job_id, "job resumed");
    Ok(row.to_proto())
}

/// Locks a job of `org_id` for the rest of the transaction (or `NotFound`).
async fn lock_job(conn: &mut PgConnection, org_id: &str, job_id: &str) -> Result<(), Error> {
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 AND org_id = $2 FOR UPDATE")
        .bind(job_id)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound("job"))?;
    Ok(())
}

/// Splits `rows` (fetched with one extra) into a page and its `PageInfo`.
fn paginate<T>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> Cursor,
) -> (Vec<T>, PageInfo) {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|last| cursor_of(last).encode())
    } else {
        None
    };
    (
        rows,
        PageInfo {
            next_cursor,
            has_more,
        },
    )
}

/// The validated limit and cursor of a page request.
fn page_bounds(page: Option<PageRequest>) -> Result<(u32, Option<Cursor>), Error> {
    let page = page.unwrap_or_default();
    let limit = if page.limit == 0 {
        plangrep_core::pagination::DEFAULT_LIMIT
    } else {
        page.limit.min(plangrep_core::pagination::MAX_LIMIT)
    };
    let cursor = page.cursor.as_deref().map(Cursor::decode).transpose()?;
    Ok((limit, cursor))
}

/// Cancels a non-terminal job. The row is locked first, so a pipeline stage moving the
/// job at the same moment loses its version check instead of this request.
async fn cancel_job(conn: &mut PgConnection, org_id: &str, job_id: &str) -> Result<Job, Error> {
    lock_job(conn, org_id, job_id).await?;
    let row = lifecycle::apply_job_event(conn, job_id, None, JobEvent::CancelRequested)
        .await?
        .ok_or(Error::Conflict)?;
    tracing::info!(job_id, "job cancelled");
    Ok(row.to_proto())
}

#[tonic::async_trait]
impl JobOrchestrator for OrchestratorService {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<CreateProjectResponse>, Status> {
        let request = request.into_inner();
        let org_id = parse_org(&request.org_id)?;
        let name = ProjectName::parse(&request.name).map_err(Error::from)?;
        let key = Key::from_request(&request.org_id, request.idempotency);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            create_project(conn, org_id, name).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let request = request.into_inner();
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = projects::get(&mut conn, &request.org_id, &request.project_id).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn create_job(
        &self,
        request: Request<CreateJobRequest>,
    ) -> Result<Response<CreateJobResponse>, Status> {
        let request = request.into_inner();
        // The gateway validated these; re-checking the cheap invariants keeps the table
        // clean whoever the caller is.
        let new = NewJob {
            org_id: parse_org(&request.org_id)?,
            project_id: request
                .project_id
                .parse()
                .map_err(|_| Error::NotFound("project"))?,
            external_id: request
                .external_id
                .as_deref()
                .map(ExternalId::parse)
                .transpose()
                .map_err(Error::from)?,
            webhook_url: request.webhook_url,
        };
        let key = Key::from_request(&request.org_id, request.idempotency);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            self.create_job(conn, new).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let request = request.into_inner();
        let (limit, cursor) = page_bounds(request.page)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let rows = projects::list(&mut conn, &request.org_id, limit, cursor.as_ref()).await?;
        let (rows, page) = paginate(rows, limit, |row| Cursor {
            created_at: row.created_at,
            id: row.id.clone(),
        });
        Ok(Response::new(ListProjectsResponse {
            projects: rows.iter().map(ProjectRow::to_proto).collect(),
            page: Some(page),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let request = request.into_inner();
        let (limit, cursor) = page_bounds(request.page)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        projects::get(&mut conn, &request.org_id, &request.project_id).await?;
        let filter = jobs::JobFilter {
            status: request.status,
            external_id: request.external_id,
        };
        let rows = jobs::list(
            &mut conn,
            &request.project_id,
            &filter,
            limit,
            cursor.as_ref(),
        )
        .await?;
        let (rows, page) = paginate(rows, limit, |row| Cursor {
            created_at: row.created_at,
            id: row.id.clone(),
        });
        Ok(Response::new(ListJobsResponse {
            jobs: rows.iter().map(JobRow::to_proto).collect(),
            page: Some(page),
        }))
    }

    async fn list_job_events(
        &self,
        request: Request<ListJobEventsRequest>,
    ) -> Result<Response<ListJobEventsResponse>, Status> {
        let request = request.into_inner();
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        jobs::get(&mut conn, &request.org_id, &request.job_id).await?;
        let events = jobs::events(&mut conn, &request.job_id).await?;
        Ok(Response::new(ListJobEventsResponse {
            events: events
                .into_iter()
                .map(|event| plangrep_proto::orchestrator::JobEvent {
                    id: event.id,
                    sequence: u32::try_from(event.sequence).unwrap_or_default(),
                    status: event.status,
                    previous_status: event.previous_status,
                    occurred_at: Some(to_timestamp(event.occurred_at)),
                })
                .collect(),
        }))
    }

    async fn resume_job(
        &self,
        request: Request<ResumeJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        let key = Key::from_request(&request.org_id, request.idempotency);
        let (org_id, job_id) = (request.org_id, request.job_id);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            resume_job(conn, &org_id, &job_id).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn grant_credits(
        &self,
        request: Request<GrantCreditsRequest>,
    ) -> Result<Response<CreditBalance>, Status> {
        let request = request.into_inner();
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let balance =
            crate::store::credits::grant(&mut tx, &request.org_id, request.amount, &request.reason)
                .await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(CreditBalance {
            org_id: request.org_id,
            balance,
        }))
    }

    async fn get_credit_balance(
        &self,
        request: Request<GetCreditBalanceRequest>,
    ) -> Result<Response<CreditBalance>, Status> {
        let request = request.into_inner();
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let balance = crate::store::credits::balance(&mut conn, &request.org_id).await?;
        Ok(Response::new(CreditBalance {
            org_id: request.org_id,
            balance,
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = jobs::get(&mut conn, &request.org_id, &request.job_id).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        let key = Key::from_request(&request.org_id, request.idempotency);
        let (org_id, job_id) = (request.org_id, request.job_id);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            cancel_job(conn, &org_id, &job_id).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn get_webhook_target(
        &self,
        request: Request<GetWebhookTargetRequest>,
    ) -> Result<Response<WebhookTarget>, Status> {
        let request = request.into_inner();
        let job_id: JobId = request.job_id.parse().map_err(|_| Error::NotFound("job"))?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = jobs::get_any(&mut conn, &request.job_id)
            .await?
            .ok_or(Error::NotFound("job"))?;
        let (Some(url), Some(sealed)) = (row.webhook_url, row.webhook_secret_sealed) else {
            return Err(Error::NotFound("webhook target").into());
        };
        let secret = self
            .secrets_key
            .unseal(job_id, &sealed)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(Response::new(WebhookTarget {
            job_id: row.id,
            url,
            signing_secret: secret.expose(),
        }))
    }

    async fn register_documents(
        &self,
        _request: Request<plangrep_proto::orchestrator::RegisterDocumentsRequest>,
    ) -> Result<Response<Job>, Status> {
        Err(Status::unimplemented("register_documents"))
    }

    async fn complete_uploads(
        &self,
        _request: Request<plangrep_proto::orchestrator::CompleteUploadsRequest>,
    ) -> Result<Response<Job>, Status> {
        Err(Status::unimplemented("complete_uploads"))
    }

    async fn get_job_result(
        &self,
        _request: Request<plangrep_proto::orchestrator::GetJobResultRequest>,
    ) -> Result<Response<plangrep_proto::orchestrator::JobResult>, Status> {
        Err(Status::unimplemented("get_job_result"))
    }

    async fn set_credit_rates(
        &self,
        _request: Request<plangrep_proto::orchestrator::SetCreditRatesRequest>,
    ) -> Result<Response<plangrep_proto::orchestrator::CreditRates>, Status> {
        Err(Status::unimplemented("set_credit_rates"))
    }

    async fn get_credit_rates(
        &self,
        _request: Request<plangrep_proto::orchestrator::GetCreditRatesRequest>,
    ) -> Result<Response<plangrep_proto::orchestrator::CreditRates>, Status> {
        Err(Status::unimplemented("get_credit_rates"))
    }
}
