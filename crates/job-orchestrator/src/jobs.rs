//! The job commands: create, register uploaded documents, complete uploads, cancel and
//! resume. Each runs inside the caller's transaction (the gRPC layer wraps it in
//! [`idempotency::run`](crate::idempotency::run) where the SPEC asks for it) and changes
//! a status only through [`lifecycle`]; the gRPC service only translates.

use std::sync::Arc;
use std::time::Duration;

use plangrep_core::id::{JobId, OrgId, ProjectId};
use plangrep_core::validate::ExternalId;
use plangrep_core::webhook::WebhookSecret;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus};
use plangrep_proto::orchestrator::{CreateJobResponse, Job, UploadedDocument};
use plangrep_service::batch::{Batcher, MAX_BATCH, WRITERS};
use sqlx::{PgConnection, PgPool};

use crate::crypto::Keyring;
use crate::error::Error;
use crate::idempotency::{self, Key, Settled};
use crate::lifecycle;
use crate::store;
use crate::store::documents;
use crate::store::jobs::{self, JobRow, MAX_DECLARED_BYTES, MAX_FILES};
use crate::store::projects;

/// What a new job is made of, validated, and the trace its `created` event continues.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub org_id: OrgId,
    pub project_id: ProjectId,
    pub external_id: Option<ExternalId>,
    pub webhook_url: Option<String>,
    pub traceparent: Option<String>,
}

/// One create request for [`Creations`]: its job and, if it carried one, its
/// idempotency key.
#[derive(Debug, Clone)]
pub struct Creation {
    pub job: NewJob,
    pub key: Option<Key>,
}

/// What [`Creations`] answers one request.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per request, through its reply channel"
)]
pub enum Created {
    /// Its job, or why not (stored with its key, if any, for replays).
    Answer(Result<CreateJobResponse, tonic::Status>),
    /// Its key was taken (a retry, or the same key twice in one batch): the request runs
    /// on its own through [`idempotency::run`], which replays or refuses it.
    Alone,
}

/// Creates the jobs of requests that arrive together in one transaction, with or
/// without an idempotency key (ADRs 0022, 0023).
pub type Creations = Batcher<Creation, Created, Error>;

/// The writer of [`Creations`] over `pool`.
pub fn creations(pool: PgPool, secrets_key: Keyring, job_ttl: Duration) -> Creations {
    Batcher::spawn(WRITERS, MAX_BATCH, move |requests: Arc<[Creation]>| {
        let (pool, secrets_key) = (pool.clone(), secrets_key.clone());
        async move {
            let mut tx = pool.begin().await?;
            let answers = create_together(&mut tx, &secrets_key, job_ttl, &requests).await?;
            if let Err(error) = tx.commit().await {
                // The commit may have been applied before the connection failed: every
                // request gets the error rather than be written again one by one (a
                // batch that failed earlier is), which could create its job twice.
                tracing::warn!(%error, jobs = requests.len(), "committing created jobs failed");
                let failed = || Created::Answer(Err(commit_failed(&error).into()));
                return Ok(requests.iter().map(|_| failed()).collect());
            }
            Ok(answers)
        }
    })
}

/// Creates the jobs of `requests` in the caller's transaction: claims their keys
/// together, creates the jobs of the requests without a key or whose key it claimed
/// ([`create_many`]), and stores those keys' outcomes, as [`idempotency::run`] does for
/// one request (a 4xx is replayed; any other failure releases the key).
async fn create_together(
    conn: &mut PgConnection,
    secrets_key: &Keyring,
    job_ttl: Duration,
    requests: &[Creation],
) -> Result<Vec<Created>, Error> {
    let keys: Vec<&Key> = requests.iter().filter_map(|r| r.key.as_ref()).collect();
    let mut claimed = if keys.is_empty() {
        Vec::new()
    } else {
        idempotency::claim_many(conn, &keys).await?
    }
    .into_iter();
    let here: Vec<bool> = requests
        .iter()
        .map(|r| r.key.is_none() || claimed.next().expect("an answer per key"))
        .collect();
    let jobs: Vec<NewJob> = requests
        .iter()
        .zip(&here)
        .filter(|(_, here)| **here)
        .map(|(r, _)| r.job.clone())
        .collect();
    let mut created = create_many(conn, secrets_key, job_ttl, &jobs)
        .await?
        .into_iter();
    let answers: Vec<(Created, bool)> = here
        .iter()
        .map(|&here| {
            if !here {
                return (Created::Alone, false);
            }
            let answer = created.next().expect("an answer per job");
            let release = matches!(&answer, Err(error) if !error.is_replayable());
            (
                Created::Answer(answer.map_err(tonic::Status::from)),
                release,
            )
        })
        .collect();
    let settled: Vec<(&Key, Settled<'_, CreateJobResponse>)> = requests
        .iter()
        .zip(&answers)
        .filter_map(|(request, (answer, release))| {
            let key = request.key.as_ref()?;
            match answer {
                Created::Alone => None,
                Created::Answer(_) if *release => Some((key, Settled::Released)),
                Created::Answer(outcome) => Some((key, Settled::of(outcome))),
            }
        })
        .collect();
    if !settled.is_empty() {
        idempotency::record_many(conn, secrets_key, &settled).await?;
    }
    Ok(answers.into_iter().map(|(answer, _)| answer).collect())
}

/// What each request of a batch whose commit failed is told: the database is
/// unavailable (a 503; the SPEC's `Idempotency-Key` makes the retry safe).
fn commit_failed(error: &sqlx::Error) -> Error {
    Error::DatabaseUnavailable(sqlx::Error::Io(std::io::Error::other(error.to_string())))
}

/// Inserts a `provisioning` job (with its sealed secret) and announces it.
pub async fn create(
    conn: &mut PgConnection,
    secrets_key: &Keyring,
    job_ttl: Duration,
    new: NewJob,
) -> Result<CreateJobResponse, Error> {
    create_many(conn, secrets_key, job_ttl, &[new])
        .await?
        .pop()
        .expect("one answer for one job")
}

/// Creates jobs with one statement per table: each is inserted `provisioning` (with its
/// sealed secret) and announced, or answers why not (its project unknown or not ready)
/// without affecting the others. The outer `Err` is the database's and concerns them
/// all; otherwise one answer per job, in order.
pub async fn create_many(
    conn: &mut PgConnection,
    secrets_key: &Keyring,
    job_ttl: Duration,
    new: &[NewJob],
) -> Result<Vec<Result<CreateJobResponse, Error>>, Error> {
    let project_ids: Vec<String> = new.iter().map(|new| new.project_id.to_string()).collect();
    let projects = projects::get_many(conn, &project_ids).await?;
    let now = store::now();
    let mut answers = Vec::with_capacity(new.len());
    let mut rows = Vec::with_capacity(new.len());
    let mut traceparents = Vec::with_capacity(new.len());
    for (new, project_id) in new.iter().zip(&project_ids) {
        let org_id = new.org_id.to_string();
        let project = projects
            .iter()
            .find(|project| project.id == *project_id && project.org_id == org_id);
        answers.push(match project {
            None => Err(Error::NotFound("project")),
            Some(project) if project.status != ProjectStatus::Ready => Err(Error::ProjectNotReady),
            Some(_) => {
                let job_id = JobId::generate();
                let secret = new.webhook_url.as_ref().map(|_| WebhookSecret::generate());
                rows.push(JobRow {
                    id: job_id.to_string(),
                    org_id,
                    project_id: project_id.clone(),
                    external_id: new.external_id.as_ref().map(|e| e.as_str().to_owned()),
                    status: JobStatus::Provisioning,
                    version: 1,
                    last_sequence: 1,
                    webhook_url: new.webhook_url.clone(),
                    webhook_secret_sealed: secret.as_ref().map(|s| secrets_key.seal(job_id, s)),
                    page_count: 0,
                    successful_page_count: 0,
                    credits_reserved: 0,
                    credits_debited: 0,
                    error_code: None,
                    error_message: None,
                    result_available: false,
                    drawing_page_rate: None,
                    document_page_rate: None,
                    created_at: now,
                    updated_at: now,
                    completed_at: None,
                    expires_at: now + job_ttl,
                });
                traceparents.push(new.traceparent.clone());
                Ok(secret)
            }
        });
    }
    jobs::insert_many(conn, &rows).await?;
    let created: Vec<(&JobRow, Option<String>)> = rows.iter().zip(traceparents).collect();
    lifecycle::record_jobs_created(conn, &created).await?;
    let mut rows = rows.iter();
    Ok(answers
        .into_iter()
        .map(|answer| {
            let secret = answer?;
            let row = rows.next().expect("a row for every job created");
            tracing::info!(job_id = %row.id, "job created");
            Ok(CreateJobResponse {
                job: Some(row.to_proto(&[])),
                webhook_signing_secret: secret.map(|s| s.expose()),
            })
        })
        .collect())
}

/// Registers documents the gateway stored. The first one moves the job
/// `awaiting_uploads → uploading`; the per-job limits hold across concurrent uploads
/// because the job row is locked while they are checked.
pub async fn register_documents(
    conn: &mut PgConnection,
    org_id: &str,
    job_id: &str,
    uploaded: &[UploadedDocument],
) -> Result<Job, Error> {
    let job = jobs::lock(conn, org_id, job_id).await?;
    let status = job.status;
    if !matches!(status, JobStatus::AwaitingUploads | JobStatus::Uploading) {
        return Err(Error::InvalidJobState(status));
    }
    let (files, bytes) = documents::totals(conn, job_id).await?;
    let added_bytes = uploaded
        .iter()
        .map(|d| d.size_bytes)
        .fold(0u64, u64::saturating_add);
    if files as usize + uploaded.len() > MAX_FILES as usize {
        return Err(Error::JobLimitExceeded(format!(
            "a job holds at most {MAX_FILES} files; it has {files}"
        )));
    }
    if bytes.saturating_add(added_bytes) > MAX_DECLARED_BYTES {
        return Err(Error::JobLimitExceeded(format!(
            "a job holds at most {MAX_DECLARED_BYTES} bytes; it has {bytes}"
        )));
    }
    documents::insert_uploaded(conn, job_id, uploaded, store::now()).await?;
    let row = if status == JobStatus::AwaitingUploads {
        lifecycle::apply_job_event(conn, job_id, Some(status), JobEvent::FileReceived)
            .await?
            .ok_or(Error::Conflict)?
    } else {
        job
    };
    tracing::info!(job_id, count = uploaded.len(), "documents registered");
    jobs::view(conn, &row).await
}

/// Closes the upload window: `uploading → preflighting`; a job without files is told so
/// (`no_files`) rather than given a generic state error.
pub async fn complete_uploads(
    conn: &mut PgConnection,
    org_id: &str,
    job_id: &str,
) -> Result<Job, Error> {
    let job = jobs::lock(conn, org_id, job_id).await?;
    if job.status == JobStatus::AwaitingUploads {
        return Err(Error::NoFiles);
    }
    let row = lifecycle::apply_job_event(conn, job_id, None, JobEvent::UploadsCompleted)
        .await?
        .ok_or(Error::Conflict)?;
    tracing::info!(job_id, "uploads completed");
    jobs::view(conn, &row).await
}

/// Resumes a job blocked on credits (→ preflighting); any other status is a 409.
pub async fn resume(conn: &mut PgConnection, org_id: &str, job_id: &str) -> Result<Job, Error> {
    jobs::lock(conn, org_id, job_id).await?;
    let row = lifecycle::apply_job_event(conn, job_id, None, JobEvent::Resumed)
        .await?
        .ok_or(Error::Conflict)?;
    tracing::info!(job_id, "job resumed");
    jobs::view(conn, &row).await
}

/// Cancels a non-terminal job. The row is locked first, so a pipeline stage moving the
/// job at the same moment loses its version check instead of this request, and a page
/// being processed sees the cancellation before its debit.
pub async fn cancel(conn: &mut PgConnection, org_id: &str, job_id: &str) -> Result<Job, Error> {
    jobs::lock(conn, org_id, job_id).await?;
    let row = lifecycle::apply_job_event(conn, job_id, None, JobEvent::CancelRequested)
        .await?
        .ok_or(Error::Conflict)?;
    tracing::info!(job_id, "job cancelled");
    jobs::view(conn, &row).await
}
