//! Housekeeping, on a timer: releases `waiting` deliveries whose predecessor never
//! arrived (after `PLANGREP_WEBHOOK_ORDER_GRACE`), deletes finished deliveries and their
//! attempts past `PLANGREP_DELIVERY_RETENTION` (in batches), and refreshes the backlog and
//! failed gauges, so `/metrics` itself never counts rows. Every replica runs it; each step
//! is idempotent and the deletes skip rows another replica holds.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::DeliveryMetrics;
use crate::store::{self, deliveries, retention};

/// Deliveries deleted per statement.
const RETENTION_BATCH: i64 = 500;

/// What one housekeeping pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Waiting deliveries made claimable.
    pub released: u64,
    /// Finished deliveries deleted (with their attempts).
    pub deleted: u64,
}

/// The housekeeping task.
#[derive(Clone)]
pub struct Housekeeping {
    pub pool: PgPool,
    pub metrics: DeliveryMetrics,
    /// Woken when deliveries were released.
    pub wake: Arc<Notify>,
    /// How long finished deliveries are kept.
    pub retention: Duration,
    /// How long a delivery waits for a predecessor that was never recorded.
    pub missing_predecessor_grace: Duration,
    /// Time between passes.
    pub interval: Duration,
}

impl Housekeeping {
    /// One pass.
    pub async fn run_once(&self) -> Result<Pass, sqlx::Error> {
        let now = store::now();
        let released =
            deliveries::release_stranded(&self.pool, now, self.missing_predecessor_grace).await?;
        if released > 0 {
            tracing::info!(released, "waiting deliveries released");
            self.wake.notify_waiters();
        }
        let cutoff =
            now - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let deleted =
            retention::delete_finished_before(&self.pool, cutoff, RETENTION_BATCH).await?;
        if deleted > 0 {
            tracing::info!(deleted, "finished deliveries past retention deleted");
        }
        let (open, failed) = retention::open_and_failed_counts(&self.pool).await?;
        self.metrics.set_backlog(open, failed);
        Ok(Pass { released, deleted })
    }

    /// Runs a pass every `interval` until `shutdown`.
    pub async fn housekeeping_loop(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.run_once().await {
                tracing::warn!(%error, "dispatcher housekeeping failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
