//! Provisioning: a new project or job gets its storage, then becomes usable.
//!
//! Allocation writes a marker object under the resource's prefix, which proves the
//! store accepts writes there. The jobs whose storage was allocated meanwhile move on
//! together: one transaction records all their `→ awaiting_uploads` changes (ADR 0018).
//! A project whose storage cannot be allocated after a few attempts ends `failed` (and
//! says so) instead of retrying forever; a job keeps its message retrying (bounded by the
//! queue's delivery limit) and is expired by its TTL.

use std::sync::Arc;

use bytes::Bytes;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus};
use plangrep_service::batch::{Batcher, MAX_BATCH, WRITERS};
use sqlx::PgPool;
use tracing::Instrument;

use super::{Pipeline, allocation_backoff};
use crate::error::Error;
use crate::grpc::storage_error;
use crate::lifecycle::{self, Advanced, Step};

/// Records jobs whose storage is allocated, many in one transaction under load.
pub(super) type AllocatedJobs = Batcher<Step, Advanced, Error>;

/// The writer of [`AllocatedJobs`] over `pool`.
pub(super) fn allocated_jobs(pool: PgPool) -> AllocatedJobs {
    Batcher::spawn(WRITERS, MAX_BATCH, move |steps: Arc<[Step]>| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let advanced = lifecycle::advance_jobs(
                &mut tx,
                &steps,
                JobStatus::Provisioning,
                JobEvent::StorageAllocated,
            )
            .await?;
            tx.commit().await?;
            Ok(advanced)
        }
    })
}

/// Allocates a job's storage: `provisioning → awaiting_uploads`.
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
pub async fn job(pipeline: &Pipeline, job_id: &str) -> Result<(), Error> {
    pipeline
        .storage
        .put(&format!("jobs/{job_id}/.allocated"), Bytes::new())
        .await
        .map_err(storage_error)?;
    // The event's trace continues from this span, as a single change's would.
    let advanced = async {
        let step = Step {
            job_id: job_id.to_owned(),
            traceparent: plangrep_telemetry::trace::next_hop(),
        };
        pipeline.allocated_jobs.submit(step).await
    }
    .instrument(tracing::info_span!("outbox append", %job_id))
    .await?;
    match advanced {
        Advanced::Moved => tracing::info!("job storage allocated"),
        Advanced::Elsewhere => {}
        Advanced::Missing => return Err(Error::NotFound("job")),
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
