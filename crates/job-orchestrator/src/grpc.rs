//! The `plangrep.orchestrator.v1.JobOrchestrator` gRPC service: a thin transport over the
//! store and the lifecycle. Mutations run through [`idempotency::run`] (one transaction,
//! replayable); errors map to `tonic::Status` in one place ([`crate::error`]). Every
//! request is checked first ([`crate::request`]): malformed input is INVALID_ARGUMENT.

use std::collections::HashMap;
use std::time::Duration;

use plangrep_core::ProjectStatus;
use plangrep_core::id::{JobId, OrgId, ProjectId};
use plangrep_core::pagination::Cursor;
use plangrep_core::validate::{ExternalId, ProjectName};
use plangrep_proto::orchestrator::job_orchestrator_server::JobOrchestrator;
use plangrep_proto::orchestrator::webhook_target_result::Outcome;
use plangrep_proto::orchestrator::{
    CancelJobRequest, CompleteUploadsRequest, CreateJobRequest, CreateJobResponse,
    CreateProjectRequest, CreateProjectResponse, CreditBalance, CreditRates,
    GetCreditBalanceRequest, GetCreditRatesRequest, GetJobRequest, GetJobResultRequest,
    GetProjectRequest, GetWebhookTargetRequest, GetWebhookTargetsRequest,
    GetWebhookTargetsResponse, GrantCreditsRequest, Job, JobResult, ListJobEventsRequest,
    ListJobEventsResponse, ListJobsRequest, ListJobsResponse, ListProjectsRequest,
    ListProjectsResponse, PageInfo, PageRequest, Project, RegisterDocumentsRequest,
    ResumeJobRequest, RotateWebhookSecretRequest, RotateWebhookSecretResponse,
    SetCreditRatesRequest, WebhookTarget, WebhookTargetResult,
};
use plangrep_proto::orchestrator::{
    ListDeadLettersRequest, ListDeadLettersResponse, RedriveDeadLettersRequest,
    RedriveDeadLettersResponse,
};
use plangrep_proto::time::to_timestamp;
use plangrep_storage::{Storage, StorageError, keys};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};

use crate::crypto::Keyring;
use crate::dead_letters::{self, DeadLetters};
use crate::error::Error;
use crate::idempotency::{self, Key};
use crate::jobs::{self as commands, NewJob};
use crate::lifecycle;
use crate::request;
use crate::store;
use crate::store::jobs;
use crate::store::projects::{self, ProjectRow};

/// The gRPC service state.
#[derive(Clone)]
pub struct OrchestratorService {
    pool: PgPool,
    secrets_key: Keyring,
    job_ttl: Duration,
    storage: Storage,
    /// How long a rotated-out webhook secret keeps signing (`PLANGREP_WEBHOOK_SECRET_OVERLAP`).
    webhook_secret_overlap: Duration,
    /// The admin view of the broker's dead-letter queues, when a broker is configured.
    dead_letters: Option<DeadLetters>,
    /// Writes the creates that arrive together in one transaction, with or without an
    /// `Idempotency-Key` (a taken key runs alone).
    creations: commands::Creations,
}

impl OrchestratorService {
    /// A service over `pool`, reading results from `storage`.
    pub fn new(pool: PgPool, secrets_key: Keyring, job_ttl: Duration, storage: Storage) -> Self {
        Self {
            creations: commands::creations(pool.clone(), secrets_key.clone(), job_ttl),
            pool,
            secrets_key,
            job_ttl,
            storage,
            webhook_secret_overlap: Duration::from_secs(24 * 3600),
            dead_letters: None,
        }
    }

    /// The same service with another webhook secret overlap.
    pub fn with_webhook_secret_overlap(mut self, overlap: Duration) -> Self {
        self.webhook_secret_overlap = overlap;
        self
    }

    /// The same service, answering the dead-letter admin calls from `dead_letters`.
    pub fn with_dead_letters(self, dead_letters: DeadLetters) -> Self {
        Self {
            dead_letters: Some(dead_letters),
            ..self
        }
    }

    fn dead_letters(&self) -> Result<&DeadLetters, Error> {
        self.dead_letters
            .as_ref()
            .ok_or_else(|| Error::BrokerUnavailable("no broker configured".to_owned()))
    }

    /// The webhook target of a job's row at `now`; `None` when the job has no webhook.
    fn webhook_target(
        &self,
        job_id: JobId,
        row: &crate::store::webhook_secrets::WebhookSecrets,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<WebhookTarget>, Error> {
        let (Some(url), Some(sealed)) = (&row.webhook_url, &row.webhook_secret_sealed) else {
            return Ok(None);
        };
        let signing_secrets =
            crate::rotation::signing_secrets(&self.secrets_key, job_id, row, sealed, now)?;
        Ok(Some(WebhookTarget {
            job_id: row.id.clone(),
            url: url.clone(),
            signing_secret: signing_secrets[0].secret.clone(),
            signing_secrets,
        }))
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
        status: ProjectStatus::Provisioning,
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

/// Answers a request the gateway refused: the response already stored under its
/// Idempotency-Key if there is one (so a retry never loses a created resource, whatever
/// the gateway's checks say today), else the refusal, stored like any 4xx.
async fn reject<T: prost::Message + Default>(
    service: &OrchestratorService,
    org_id: &str,
    idempotency: Option<plangrep_proto::orchestrator::Idempotency>,
    rejection: plangrep_proto::orchestrator::Rejection,
) -> Result<Response<T>, Status> {
    let key = Key::from_request(org_id, idempotency);
    let error = Error::rejected(rejection);
    let outcome = idempotency::run(&service.pool, &service.secrets_key, key, async |_| {
        Err::<T, _>(error)
    })
    .await?;
    Ok(outcome.into_response())
}

#[tonic::async_trait]
impl JobOrchestrator for OrchestratorService {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<CreateProjectResponse>, Status> {
        let request = request.into_inner();
        let org_id = request::org_id(&request.org_id)?;
        request::idempotency(request.idempotency.as_ref())?;
        if let Some(rejection) = request.rejection {
            return reject(self, &request.org_id, request.idempotency, rejection).await;
        }
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
        request::org_id(&request.org_id)?;
        request::project_id(&request.project_id)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = projects::get(&mut conn, &request.org_id, &request.project_id).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn create_job(
        &self,
        request: Request<CreateJobRequest>,
    ) -> Result<Response<CreateJobResponse>, Status> {
        let request = request.into_inner();
        let org_id = request::org_id(&request.org_id)?;
        request::idempotency(request.idempotency.as_ref())?;
        if let Some(rejection) = request.rejection {
            return reject(self, &request.org_id, request.idempotency, rejection).await;
        }
        // The gateway validated these; re-checking the cheap invariants keeps the table
        // clean whoever the caller is.
        request::webhook_url(request.webhook_url.as_deref())?;
        let new = NewJob {
            org_id,
            project_id: request::project_id(&request.project_id)?,
            external_id: request
                .external_id
                .as_deref()
                .map(ExternalId::parse)
                .transpose()
                .map_err(Error::from)?,
            webhook_url: request.webhook_url,
            // The event's trace continues from here, as a single change's would.
            traceparent: tracing::info_span!("outbox append")
                .in_scope(plangrep_telemetry::trace::next_hop),
        };
        // It shares a transaction with the creates that arrive meanwhile, unless its key
        // is taken: then it runs alone, to be replayed or refused.
        let key = Key::from_request(&request.org_id, request.idempotency);
        let creation = commands::Creation {
            job: new.clone(),
            key: key.clone(),
        };
        match self.creations.submit(creation).await? {
            commands::Created::Answer(answer) => Ok(Response::new(answer?)),
            commands::Created::Alone => {
                let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
                    commands::create(conn, &self.secrets_key, self.job_ttl, new).await
                })
                .await?;
                Ok(outcome.into_response())
            }
        }
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let request = request.into_inner();
        request::org_id(&request.org_id)?;
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
        request::org_id(&request.org_id)?;
        request::project_id(&request.project_id)?;
        request::job_filters(request.status.as_deref(), request.external_id.as_deref())?;
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
            jobs: jobs::views(&mut conn, &rows).await?,
            page: Some(page),
        }))
    }

    async fn list_job_events(
        &self,
        request: Request<ListJobEventsRequest>,
    ) -> Result<Response<ListJobEventsResponse>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
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
        request::org_and_job(&request.org_id, &request.job_id)?;
        request::idempotency(request.idempotency.as_ref())?;
        let key = Key::from_request(&request.org_id, request.idempotency);
        let (org_id, job_id) = (request.org_id, request.job_id);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            commands::resume(conn, &org_id, &job_id).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn grant_credits(
        &self,
        request: Request<GrantCreditsRequest>,
    ) -> Result<Response<CreditBalance>, Status> {
        let request = request.into_inner();
        request::org_id(&request.org_id)?;
        let (amount, reason) = request::grant(request.amount, &request.reason)?;
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let balance =
            crate::store::credits::grant(&mut tx, &request.org_id, amount, reason).await?;
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
        request::org_id(&request.org_id)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let balance = crate::store::credits::balance(&mut conn, &request.org_id).await?;
        Ok(Response::new(CreditBalance {
            org_id: request.org_id,
            balance,
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = jobs::get(&mut conn, &request.org_id, &request.job_id).await?;
        Ok(Response::new(jobs::view(&mut conn, &row).await?))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
        request::idempotency(request.idempotency.as_ref())?;
        let key = Key::from_request(&request.org_id, request.idempotency);
        let (org_id, job_id) = (request.org_id, request.job_id);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            commands::cancel(conn, &org_id, &job_id).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn get_webhook_target(
        &self,
        request: Request<GetWebhookTargetRequest>,
    ) -> Result<Response<WebhookTarget>, Status> {
        let request = request.into_inner();
        let job_id = request::job_id(&request.job_id)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = crate::store::webhook_secrets::get_any(&mut conn, &request.job_id)
            .await?
            .ok_or(Error::NotFound("job"))?;
        let target = self
            .webhook_target(job_id, &row, crate::store::now())?
            .ok_or(Error::NotFound("webhook target"))?;
        Ok(Response::new(target))
    }

    async fn get_webhook_targets(
        &self,
        request: Request<GetWebhookTargetsRequest>,
    ) -> Result<Response<GetWebhookTargetsResponse>, Status> {
        let request = request.into_inner();
        let job_ids = request::job_ids(&request.job_ids)?;
        let rows = crate::store::webhook_secrets::get_many(&self.pool, &request.job_ids).await?;
        let rows: HashMap<&str, _> = rows.iter().map(|row| (row.id.as_str(), row)).collect();
        let now = crate::store::now();
        let results = request
            .job_ids
            .iter()
            .zip(job_ids)
            .map(|(raw, job_id)| {
                let target = match rows.get(raw.as_str()) {
                    Some(row) => self.webhook_target(job_id, row, now),
                    None => Ok(None),
                };
                let outcome = match target {
                    Ok(Some(target)) => Outcome::Target(target),
                    Ok(None) => Outcome::NotFound(true),
                    Err(error) => {
                        tracing::error!(%error, %job_id, "webhook target unusable");
                        Outcome::Broken(error.to_string())
                    }
                };
                WebhookTargetResult {
                    job_id: raw.clone(),
                    outcome: Some(outcome),
                }
            })
            .collect();
        Ok(Response::new(GetWebhookTargetsResponse { results }))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
        request::idempotency(request.idempotency.as_ref())?;
        let key = Key::from_request(&request.org_id, request.idempotency);
        let (org_id, job_id) = (request.org_id, request.job_id);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            crate::rotation::rotate(
                conn,
                &self.secrets_key,
                &org_id,
                &job_id,
                self.webhook_secret_overlap,
            )
            .await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn register_documents(
        &self,
        request: Request<RegisterDocumentsRequest>,
    ) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
        request::documents(&request.documents)?;
        let mut tx = self.pool.begin().await.map_err(Error::from)?;
        let job = commands::register_documents(
            &mut tx,
            &request.org_id,
            &request.job_id,
            &request.documents,
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(job))
    }

    async fn complete_uploads(
        &self,
        request: Request<CompleteUploadsRequest>,
    ) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
        request::idempotency(request.idempotency.as_ref())?;
        let key = Key::from_request(&request.org_id, request.idempotency);
        let (org_id, job_id) = (request.org_id, request.job_id);
        let outcome = idempotency::run(&self.pool, &self.secrets_key, key, async |conn| {
            commands::complete_uploads(conn, &org_id, &job_id).await
        })
        .await?;
        Ok(outcome.into_response())
    }

    async fn get_job_result(
        &self,
        request: Request<GetJobResultRequest>,
    ) -> Result<Response<JobResult>, Status> {
        let request = request.into_inner();
        request::org_and_job(&request.org_id, &request.job_id)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let row = jobs::get(&mut conn, &request.org_id, &request.job_id).await?;
        drop(conn);
        let status = row.status;
        if !row.result_available {
            return Err(Error::ResultNotAvailable(status).into());
        }
        let bytes = self
            .storage
            .get(&keys::result(&row.id))
            .await
            .map_err(storage_error)?;
        let json = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Corrupt(format!("result of {} is not UTF-8", row.id)))?;
        Ok(Response::new(JobResult { json }))
    }

    async fn set_credit_rates(
        &self,
        request: Request<SetCreditRatesRequest>,
    ) -> Result<Response<CreditRates>, Status> {
        let request = request.into_inner();
        request::org_id(&request.org_id)?;
        request::rates(request.drawing_page_rate, request.document_page_rate)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let rates = store::credits::set_rates(
            &mut conn,
            &request.org_id,
            request.drawing_page_rate,
            request.document_page_rate,
        )
        .await?;
        Ok(Response::new(CreditRates {
            org_id: request.org_id,
            drawing_page_rate: rates.drawing,
            document_page_rate: rates.document,
        }))
    }

    async fn get_credit_rates(
        &self,
        request: Request<GetCreditRatesRequest>,
    ) -> Result<Response<CreditRates>, Status> {
        let request = request.into_inner();
        request::org_id(&request.org_id)?;
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        let rates = store::credits::rates(&mut conn, &request.org_id).await?;
        Ok(Response::new(CreditRates {
            org_id: request.org_id,
            drawing_page_rate: rates.drawing,
            document_page_rate: rates.document,
        }))
    }

    async fn list_dead_letters(
        &self,
        _request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let queues = self.dead_letters()?.counts().await?;
        Ok(Response::new(ListDeadLettersResponse { queues }))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<RedriveDeadLettersRequest>,
    ) -> Result<Response<RedriveDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let queue = request
            .queue
            .as_deref()
            .map(dead_letters::parse_queue)
            .transpose()
            .map_err(Error::from)?;
        let limit = dead_letters::parse_limit(request.limit).map_err(Error::from)?;
        let redriven = self.dead_letters()?.redrive(queue, limit).await?;
        Ok(Response::new(RedriveDeadLettersResponse { redriven }))
    }
}

/// A storage failure as the orchestrator reports it.
pub fn storage_error(error: StorageError) -> Error {
    match error {
        StorageError::Unavailable(_) => Error::StorageUnavailable(error.to_string()),
        other => Error::Storage(other.to_string()),
    }
}
