//! The pipeline stages, as consumers of the orchestrator's own events.
//!
//! Each handler is idempotent: it re-reads the resource and acts only while it is still
//! in the status the event announced, so a redelivered or duplicated event does nothing.
//! Today's stages: a new project or job gets its storage allocated and moves on
//! (`project: provisioning → ready`, `job: provisioning → awaiting_uploads`).

use std::path::PathBuf;

use plangrep_core::{JobEvent, JobStatus, ProjectStatus};
use plangrep_messaging::{HandleError, Incoming};
use plangrep_proto::events::{JobStatusChanged, ProjectStatusChanged};
use prost::Message;
use sqlx::PgPool;

use crate::error::Error;
use crate::lifecycle;

/// What the pipeline handlers share.
#[derive(Clone)]
pub struct Pipeline {
    pool: PgPool,
    storage_root: PathBuf,
}

impl Pipeline {
    /// Stages over `pool`, allocating storage under `storage_root`.
    pub fn new(pool: PgPool, storage_root: PathBuf) -> Self {
        Self { pool, storage_root }
    }

    /// Handles one event from the pipeline queue.
    pub async fn handle(&self, message: Incoming) -> Result<(), HandleError> {
        let outcome = match message.routing_key.as_str() {
            "job.status_changed.provisioning" => {
                let event = JobStatusChanged::decode(message.payload.as_slice())
                    .map_err(|e| HandleError::Permanent(Box::new(e)))?;
                let job_id = event.job.map(|job| job.id).unwrap_or_default();
                self.provision_job(&job_id).await
            }
            "project.status_changed.provisioning" => {
                let event = ProjectStatusChanged::decode(message.payload.as_slice())
                    .map_err(|e| HandleError::Permanent(Box::new(e)))?;
                let project_id = event.project.map(|p| p.id).unwrap_or_default();
                self.provision_project(&project_id).await
            }
            other => {
                tracing::debug!(routing_key = other, "pipeline ignores this event");
                Ok(())
            }
        };
        outcome.map_err(|error| match error {
            error if error.is_transient() => HandleError::Transient(Box::new(error)),
            // The resource vanished (its database was reset): nothing to do, ever.
            Error::NotFound(_) => HandleError::Permanent(Box::new(error)),
            error => HandleError::Transient(Box::new(error)),
        })
    }

    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    async fn provision_job(&self, job_id: &str) -> Result<(), Error> {
        self.allocate(&["jobs", job_id]).await?;
        let mut tx = self.pool.begin().await?;
        let moved = lifecycle::apply_job_event(
            &mut tx,
            job_id,
            Some(JobStatus::Provisioning),
            JobEvent::StorageAllocated,
        )
        .await?;
        tx.commit().await?;
        if moved.is_some() {
            tracing::info!("job storage allocated");
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(project_id = %project_id))]
    async fn provision_project(&self, project_id: &str) -> Result<(), Error> {
        self.allocate(&["projects", project_id]).await?;
        let mut tx = self.pool.begin().await?;
        let moved = lifecycle::move_project(
            &mut tx,
            project_id,
            ProjectStatus::Provisioning,
            ProjectStatus::Ready,
        )
        .await?;
        tx.commit().await?;
        if moved.is_some() {
            tracing::info!("project ready");
        }
        Ok(())
    }

    /// Creates the storage folder for a resource (idempotent).
    async fn allocate(&self, parts: &[&str]) -> Result<(), Error> {
        let path = parts
            .iter()
            .fold(self.storage_root.clone(), |p, part| p.join(part));
        tokio::fs::create_dir_all(&path).await.map_err(|e| {
            Error::Corrupt(format!(
                "cannot allocate storage at {}: {e}",
                path.display()
            ))
        })
    }
}
