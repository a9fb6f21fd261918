//! A job's webhook signing secrets: the current one and, after a rotation, the previous
//! one with the instant it stops signing (SPEC §4 `webhook-secret/rotate`, ADR 0011).
//! Both are sealed with the keyring, the job id as associated data.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Error;

/// The webhook columns of one job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookSecrets {
    pub id: String,
    pub webhook_url: Option<String>,
    pub webhook_secret_sealed: Option<Vec<u8>>,
    pub previous_webhook_secret_sealed: Option<Vec<u8>>,
    pub previous_webhook_secret_expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, webhook_url, webhook_secret_sealed, previous_webhook_secret_sealed, \
     previous_webhook_secret_expires_at";

/// The webhook columns of any job (the dispatcher's lookup), `None` when it does not exist.
pub async fn get_any(conn: &mut PgConnection, id: &str) -> Result<Option<WebhookSecrets>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The webhook columns of those of `ids` that exist (the dispatcher's batched lookup).
pub async fn get_many<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    ids: &[String],
) -> Result<Vec<WebhookSecrets>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(executor)
    .await?)
}

/// Locks a job of `org_id` for the rest of the transaction (or `NotFound`).
pub async fn lock(
    conn: &mut PgConnection,
    org_id: &str,
    id: &str,
) -> Result<WebhookSecrets, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = $1 AND org_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("job"))
}

/// Makes `current` the job's secret; `previous` signs beside it until `expires_at`.
pub async fn rotate(
    conn: &mut PgConnection,
    id: &str,
    current: &[u8],
    previous: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE jobs SET webhook_secret_sealed = $2, previous_webhook_secret_sealed = $3, \
           previous_webhook_secret_expires_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(current)
    .bind(previous)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}
