//! The pipeline stages, as consumers of the orchestrator's own events.
//!
//! Each [`Stage`] declares the statuses it acts on (typed, see
//! [`plangrep_messaging::topology`]), owns a queue and a concurrency setting, and runs in
//! every orchestrator replica as a competing consumer, so slow processing never starves
//! provisioning. Each handler is idempotent: it re-reads the job (under its row lock
//! when it writes) and acts only while the job is still in the status the event
//! announced, so a redelivered or duplicated event does nothing twice.
//!
//! - [`provision`]: a new project or job gets its storage (`→ ready` / `→ awaiting_uploads`);
//! - [`preflight`]: every file inspected, pages counted and classified, credits reserved;
//! - [`process`]: every page read, debited one by one, the result written;
//! - [`result`]: the v1 result document.

mod preflight;
mod process;
mod provision;
mod result;
mod scratch;

use std::time::Duration;

use plangrep_core::{JobStatus, ProjectStatus};
use plangrep_messaging::topology::{PREFLIGHT_STAGE, PROCESS_STAGE, PROVISION_STAGE};
use plangrep_messaging::{HandleError, Incoming, StatusEvent, WorkQueue};
use plangrep_proto::events::{JobStatusChanged, ProjectStatusChanged};
use plangrep_storage::Storage;
use prost::Message;
use sqlx::PgPool;

use crate::error::Error;
use crate::pdf::Inspector;
use crate::store::documents::{self, DocumentRow};
use crate::store::jobs::{self, JobRow};

/// A pipeline stage: a queue, the statuses bound to it and a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// New projects and jobs get their storage.
    Provision,
    /// Completed uploads are inspected and credits reserved.
    Preflight,
    /// Reserved jobs are processed page by page.
    Process,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 3] = [Stage::Provision, Stage::Preflight, Stage::Process];

    /// The stage's queue and its bindings.
    pub const fn queue(self) -> WorkQueue {
        match self {
            Stage::Provision => PROVISION_STAGE,
            Stage::Preflight => PREFLIGHT_STAGE,
            Stage::Process => PROCESS_STAGE,
        }
    }

    /// A short name for logs and consumer tags.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Provision => "provision",
            Stage::Preflight => "preflight",
            Stage::Process => "process",
        }
    }
}

/// What the stages share.
#[derive(Clone)]
pub struct Pipeline {
    pool: PgPool,
    storage: Storage,
    inspector: Inspector,
    /// How often provisioning tries to allocate storage before the project fails.
    allocation_attempts: u32,
    /// Records jobs whose storage is allocated.
    allocated_jobs: provision::AllocatedJobs,
}

/// An event this stage does not act on (never bound, or a foreign message).
#[derive(Debug, thiserror::Error)]
#[error("stage {stage} does not act on {routing_key:?}")]
struct NotThisStage {
    stage: &'static str,
    routing_key: String,
}

impl Pipeline {
    /// Stages over `pool`, storing in `storage`, parsing PDFs with `inspector`. Starts
    /// provisioning's writer tasks, so it runs inside the runtime.
    pub fn new(
        pool: PgPool,
        storage: Storage,
        inspector: Inspector,
        allocation_attempts: u32,
    ) -> Self {
        Self {
            allocated_jobs: provision::allocated_jobs(pool.clone()),
            pool,
            storage,
            inspector,
            allocation_attempts,
        }
    }

    /// Handles one message of `stage`'s queue.
    pub async fn handle(&self, stage: Stage, message: Incoming) -> Result<(), HandleError> {
        let not_this_stage = || {
            HandleError::DeadLetter(Box::new(NotThisStage {
                stage: stage.name(),
                routing_key: message.routing_key.clone(),
            }))
        };
        let event = StatusEvent::parse(&message.routing_key).ok_or_else(not_this_stage)?;
        let outcome = match (stage, event) {
            (Stage::Provision, StatusEvent::Job(JobStatus::Provisioning)) => {
                let job_id = job_id(&message)?;
                provision::job(self, &job_id).await
            }
            (Stage::Provision, StatusEvent::Project(ProjectStatus::Provisioning)) => {
                let event = ProjectStatusChanged::decode(message.payload.as_slice())
                    .map_err(|e| HandleError::DeadLetter(Box::new(e)))?;
                let project_id = event.project.map(|p| p.id).unwrap_or_default();
                provision::project(self, &project_id).await
            }
            (Stage::Preflight, StatusEvent::Job(JobStatus::Preflighting)) => {
                preflight::run(self, &job_id(&message)?).await
            }
            (Stage::Process, StatusEvent::Job(JobStatus::Processing)) => {
                process::run(self, &job_id(&message)?).await
            }
            _ => return Err(not_this_stage()),
        };
        outcome.map_err(|error| match error {
            // The resource vanished (its database was reset): nothing to do, ever.
            Error::NotFound(_) => HandleError::DeadLetter(Box::new(error)),
            // Outages, races and bugs alike: retried a bounded number of times, then the
            // broker's delivery limit dead-letters the message.
            error => HandleError::Retry(Box::new(error)),
        })
    }
}

/// The job and its documents while the job is in `status` (the event is still current);
/// `None` when it moved on.
async fn current_job(
    pipeline: &Pipeline,
    job_id: &str,
    status: JobStatus,
) -> Result<Option<(JobRow, Vec<DocumentRow>)>, Error> {
    let mut conn = pipeline.pool.acquire().await?;
    let Some(job) = jobs::get_any(&mut conn, job_id).await? else {
        return Err(Error::NotFound("job"));
    };
    if job.status != status {
        return Ok(None);
    }
    let files = documents::for_job(&mut conn, job_id).await?;
    Ok(Some((job, files)))
}

/// The job id of a job event.
fn job_id(message: &Incoming) -> Result<String, HandleError> {
    let event = JobStatusChanged::decode(message.payload.as_slice())
        .map_err(|e| HandleError::DeadLetter(Box::new(e)))?;
    Ok(event.job.map(|job| job.id).unwrap_or_default())
}

/// Pause between allocation attempts: 200 ms, doubling.
fn allocation_backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
}
