//! The `plangrep.orchestrator.v1.JobOrchestrator` gRPC service: a thin transport over the
//! store and the lifecycle. Errors map to `tonic::Status` in one place ([`crate::error`]).

use std::time::Duration;

use plangrep_core::id::{JobId, OrgId, ProjectId};
use plangrep_core::validate::{ExternalId, ProjectName};
use plangrep_core::webhook::WebhookSecret;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus};
use plangrep_proto::orchestrator::job_orchestrator_server::JobOrchestrator;
use plangrep_proto::orchestrator::{
    CancelJobRequest, CreateJobRequest, CreateJobResponse, CreateProjectRequest,
    CreateProjectResponse, GetJobRequest, GetProjectRequest, GetWebhookTargetRequest, Job, Project,
    WebhookTarget,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::crypto::SecretsKey;
use crate::error::Error;
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

impl OrchestratorService {
    /// A service over `pool`.
    pub fn new(pool: PgPool, secrets_key: SecretsKey, job_ttl: Duration) -> Self {
        Self {
            pool,
            secrets_key,
            job_ttl,
        }
    }

    #[tracing::instrument(skip_all, fields(org_id = %org_id))]
    async fn create_project(&self, org_id: OrgId, name: ProjectName) -> Result<ProjectRow, Error> {
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
        let mut tx = self.pool.begin().await?;
        projects::insert(&mut tx, &row).await?;
        lifecycle::record_project_created(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(row)
    }

    #[tracing::instrument(skip_all, fields(org_id = %org_id, project_id = %project_id))]
    async fn create_job(
        &self,
        org_id: OrgId,
        project_id: ProjectId,
        external_id: Option<ExternalId>,
        webhook_url: Option<String>,
    ) -> Result<(JobRow, Option<WebhookSecret>), Error> {
        let mut tx = self.pool.begin().await?;
        let project = projects::get(&mut tx, &org_id.to_string(), &project_id.to_string()).await?;
        if project.status()? != ProjectStatus::Ready {
            return Err(Error::ProjectNotReady);
        }
        let job_id = JobId::generate();
        let secret = webhook_url.as_ref().map(|_| WebhookSecret::generate());
        let now = store::now();
        let row = JobRow {
            id: job_id.to_string(),
            org_id: org_id.to_string(),
            project_id: project.id,
            external_id: external_id.map(|e| e.as_str().to_owned()),
            status: JobStatus::Provisioning.as_str().to_owned(),
            version: 1,
            last_sequence: 1,
            webhook_url,
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
        jobs::insert(&mut tx, &row).await?;
        lifecycle::record_job_created(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(job_id = %row.id, "job created");
        Ok((row, secret))
    }
}

impl OrchestratorService {
    /// Cancels a job of `org_id`. A concurrent status change (version race) is retried a
    /// few times; a terminal job is `InvalidJobState`.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    async fn cancel_job(&self, org_id: &str, job_id: &str) -> Result<JobRow, Error> {
        let mut attempts_left = 3;
        loop {
            let mut tx = self.pool.begin().await?;
            jobs::get(&mut tx, org_id, job_id).await?;
            match lifecycle::apply_job_event(&mut tx, job_id, None, JobEvent::CancelRequested).await
            {
                Ok(Some(row)) => {
                    tx.commit().await?;
                    tracing::info!("job cancelled");
                    return Ok(row);
                }
                // `None` only happens with an expected status; treat it like a lost race.
                Ok(None) | Err(Error::Conflict) if attempts_left > 0 => attempts_left -= 1,
                Ok(None) => return Err(Error::Conflict),
                Err(error) => return Err(error),
            }
        }
    }
}

fn parse_org(raw: &str) -> Result<OrgId, Error> {
    raw.parse().map_err(|_| Error::NotFound("organization"))
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
        let row = OrchestratorService::create_project(self, org_id, name).await?;
        Ok(Response::new(CreateProjectResponse {
            project: Some(row.to_proto()),
        }))
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
        let org_id = parse_org(&request.org_id)?;
        let project_id: ProjectId = request
            .project_id
            .parse()
            .map_err(|_| Error::NotFound("project"))?;
        // The gateway validated these; re-checking the cheap invariants keeps the table
        // clean whoever the caller is.
        let external_id = request
            .external_id
            .as_deref()
            .map(ExternalId::parse)
            .transpose()
            .map_err(Error::from)?;
        let (row, secret) = OrchestratorService::create_job(
            self,
            org_id,
            project_id,
            external_id,
            request.webhook_url,
        )
        .await?;
        Ok(Response::new(CreateJobResponse {
            job: Some(row.to_proto()),
            webhook_signing_secret: secret.map(|s| s.expose()),
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
        let row = OrchestratorService::cancel_job(self, &request.org_id, &request.job_id).await?;
        Ok(Response::new(row.to_proto()))
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
}
