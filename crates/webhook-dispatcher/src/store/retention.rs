//! Retention and the figures behind the gauges: finished deliveries (succeeded, failed,
//! stopped) older than the retention are deleted with their attempts, in batches; the
//! backlog and failed counts read partial indexes only, on the housekeeping schedule
//! rather than per `/metrics` scrape.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Deletes up to `batch` finished deliveries last changed before `cutoff`, with their
/// attempts, in one statement. Returns how many deliveries went.
pub async fn delete_finished_batch(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    // The foreign key of `attempts` is checked at the end of the statement, when both
    // deletes are done.
    let deleted = sqlx::query(
        "WITH doomed AS ( \
           SELECT id FROM deliveries \
           WHERE state IN ('succeeded', 'failed', 'stopped') AND updated_at < $1 \
           ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
         gone_attempts AS ( \
           DELETE FROM attempts a USING doomed WHERE a.delivery_id = doomed.id) \
         DELETE FROM deliveries d USING doomed WHERE d.id = doomed.id",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Deletes every finished delivery last changed before `cutoff` (with its attempts),
/// `batch` at a time so no statement holds many locks. Returns how many went.
pub async fn delete_finished_before(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = delete_finished_batch(pool, cutoff, batch).await?;
        total += deleted;
        if deleted < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// Deliveries not finished yet (pending or waiting), and deliveries that gave up
/// (failed, within the retention), each counted on its partial index.
pub async fn open_and_failed_counts(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM deliveries WHERE state = 'pending') \
              + (SELECT count(*) FROM deliveries WHERE state = 'waiting'), \
                (SELECT count(*) FROM deliveries WHERE state = 'failed')",
    )
    .fetch_one(pool)
    .await
}
