//! Attempts: the immutable log of every try of a delivery.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A row of `attempts`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub number: i32,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
    /// The dispatcher replica that made it (its lease owner).
    pub worker: Option<String>,
}

/// Every attempt of the given deliveries, in (delivery, number) order.
pub async fn for_deliveries(
    pool: &PgPool,
    delivery_ids: &[String],
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, number",
    )
    .bind(delivery_ids)
    .fetch_all(pool)
    .await
}

/// How many attempts of `delivery_id` numbered above `after` ended with `error` (the
/// primary key's range, no scan beyond the delivery's own rows).
pub async fn count_with_error(
    pool: &PgPool,
    delivery_id: &str,
    after: i32,
    error: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE delivery_id = $1 AND number > $2 AND error = $3",
    )
    .bind(delivery_id)
    .bind(after)
    .bind(error)
    .fetch_one(pool)
    .await
}
