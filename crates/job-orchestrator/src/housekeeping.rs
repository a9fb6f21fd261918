//! Housekeeping: periodically deletes what has served its purpose, in batches so no
//! statement holds locks for long: expired idempotency records (after 24 h) and outbox
//! rows published longer ago than the retention period.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::idempotency;
use crate::store::outbox;

/// Runs every `interval` until `shutdown`.
pub async fn housekeeping_loop(
    pool: PgPool,
    interval: Duration,
    outbox_retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match idempotency::reap_expired(&pool).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "expired idempotency records deleted"),
            Err(error) => tracing::warn!(%error, "idempotency reaping failed"),
        }
        match outbox::prune_published(&pool, outbox_retention).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "published outbox rows pruned"),
            Err(error) => tracing::warn!(%error, "outbox pruning failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
