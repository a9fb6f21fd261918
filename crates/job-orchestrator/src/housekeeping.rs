//! Housekeeping: periodically deletes what has served its purpose, in batches so no
//! statement holds locks for long: expired idempotency records (after 24 h), outbox rows
//! published longer ago than the retention period, and orphaned uploads (objects the
//! gateway stored whose registration never committed) once they are older than a grace
//! period that no upload in flight can outlast.

use std::time::Duration;

use plangrep_storage::{Storage, keys};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::grpc::storage_error;
use crate::idempotency;
use crate::store::{documents, outbox};

/// What housekeeping looks after.
pub struct Housekeeping {
    pub pool: PgPool,
    pub storage: Storage,
    /// Time between rounds.
    pub interval: Duration,
    /// How long published outbox rows are kept.
    pub outbox_retention: Duration,
    /// How old an unregistered upload must be before it counts as an orphan.
    pub orphan_grace: Duration,
}

impl Housekeeping {
    /// Runs every `interval` until `shutdown`.
    pub async fn housekeeping_loop(self, shutdown: CancellationToken) {
        let Self {
            pool,
            storage,
            interval,
            outbox_retention,
            orphan_grace,
        } = self;
        loop {
            housekeeping_round(&pool, outbox_retention).await;
            match delete_orphaned_uploads(&pool, &storage, orphan_grace).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "orphaned uploads deleted"),
                Err(error) => tracing::warn!(%error, "orphan clean-up failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Deletes stored documents no `documents` row refers to and that are older than
/// `grace`; returns how many.
pub async fn delete_orphaned_uploads(
    pool: &PgPool,
    storage: &Storage,
    grace: Duration,
) -> Result<usize, Error> {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let candidates = storage
        .list_older_than(keys::DOCUMENTS_ROOT, cutoff)
        .await
        .map_err(storage_error)?;
    let mut deleted = 0;
    let mut conn = pool.acquire().await?;
    for key in candidates.iter().filter(|key| key.contains("/documents/")) {
        if !documents::is_registered(&mut conn, key).await? {
            storage.delete(key).await.map_err(storage_error)?;
            tracing::info!(key, "orphaned upload deleted");
            deleted += 1;
        }
    }
    Ok(deleted)
}

async fn housekeeping_round(pool: &PgPool, outbox_retention: Duration) {
    {
        match idempotency::reap_expired(pool).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "expired idempotency records deleted"),
            Err(error) => tracing::warn!(%error, "idempotency reaping failed"),
        }
        match outbox::prune_published(pool, outbox_retention).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "published outbox rows pruned"),
            Err(error) => tracing::warn!(%error, "outbox pruning failed"),
        }
    }
}
