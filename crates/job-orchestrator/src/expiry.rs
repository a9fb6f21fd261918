//! The expiry sweeper: moves jobs whose `expiresAt` passed while they were not terminal
//! to `expired`, in batches. Several orchestrator replicas sweep at once safely: each
//! batch is claimed with `FOR UPDATE SKIP LOCKED` over the partial index of live jobs, so
//! replicas split the work instead of waiting on (or repeating) each other.

use std::time::Duration;

use plangrep_core::JobEvent;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::lifecycle;

/// Jobs expired per transaction.
const BATCH_SIZE: i64 = 100;

/// Sweeps every `interval` until `shutdown`.
pub async fn expiry_loop(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    loop {
        loop {
            match expire_due(&pool).await {
                Ok(0) => break,
                Ok(count) => tracing::info!(count, "overdue jobs expired"),
                Err(error) => {
                    tracing::warn!(%error, "expiry sweep failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Expires one batch of overdue live jobs; returns how many.
pub async fn expire_due(pool: &PgPool) -> Result<usize, Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs \
         WHERE expires_at <= now() \
           AND status NOT IN ('completed', 'completed_with_errors', 'failed', 'cancelled', 'expired') \
         ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH_SIZE)
    .fetch_all(&mut *tx)
    .await?;
    for job_id in &due {
        lifecycle::apply_job_event(&mut tx, job_id, None, JobEvent::ExpiryReached).await?;
        tracing::info!(job_id, "job expired");
    }
    tx.commit().await?;
    Ok(due.len())
}
