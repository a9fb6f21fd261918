//! Provisioning: a new project or job gets its storage, then becomes usable.
//!
//! Allocation writes a marker object under the resource's prefix, which proves the
//! store accepts writes there. A project whose storage cannot be allocated after a few
//! attempts ends `failed` (and says so) instead of retrying forever; a job keeps its
//! message retrying (bounded by the queue's delivery limit) and is expired by its TTL.

use bytes::Bytes;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus};

use super::{Pipeline, allocation_backoff};
use crate::error::Error;
use crate::grpc::storage_error;
use crate::lifecycle;

/// Allocates a job's storage: `provisioning → awaiting_uploads`.
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
pub async fn job(pipeline: &Pipeline, job_id: &str) -> Result<(), Error> {
    pipeline
        .storage
        .put(&format!("jobs/{job_id}/.allocated"), Bytes::new())
        .await
        .map_err(storage_error)?;
    let mut tx = pipeline.pool.begin().await?;
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

/// Allocates a project's storage: `provisioning → ready`, or `→ failed` when the store
/// keeps refusing.
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
pub async fn project(pipeline: &Pipeline, project_id: &str) -> Result<(), Error> {
    let marker = format!("projects/{project_id}/.allocated");
    let mut attempt = 1;
    let to = loop {
        match pipeline.storage.put(&marker, Bytes::new()).await {
            Ok(()) => break ProjectStatus::Ready,
            Err(error) if attempt >= pipeline.allocation_attempts => {
                tracing::error!(%error, attempt, "project storage cannot be allocated; the project fails");
                break ProjectStatus::Failed;
            }
            Err(error) => {
                tracing::warn!(%error, attempt, "project storage allocation failed; retrying");
                tokio::time::sleep(allocation_backoff(attempt)).await;
                attempt += 1;
            }
        }
    };
    let mut tx = pipeline.pool.begin().await?;
    let moved =
        lifecycle::move_project(&mut tx, project_id, ProjectStatus::Provisioning, to).await?;
    tx.commit().await?;
    if moved.is_some() {
        tracing::info!(status = %to, "project provisioned");
    }
    Ok(())
}
