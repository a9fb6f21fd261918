//! Deliveries: one row per event of a job with a webhook.
//!
//! Per-job ordering lives in [`claim_due`]: a delivery is claimable only when it is due
//! and the job's previous event has finished (succeeded, failed or stopped), so event
//! N+1 never overtakes event N, whichever replica or worker looks. A previous event that
//! never arrived at all (dead-lettered upstream) is given up after a grace period, so one
//! lost message cannot hold a job's later webhooks forever.
//!
//! A 410 Gone stops the job's webhook (a row in `stopped_webhooks`): unfinished and future
//! deliveries of the job become `stopped` without being sent. A manual redelivery
//! revives the webhook: the row goes, the redelivered event is attempted, and later
//! events are delivered again.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// A delivery's state as the API shows it.
pub mod state {
    /// Due (now or at `next_attempt_at`).
    pub const PENDING: &str = "pending";
    /// Held until the job's previous event finishes.
    pub const WAITING: &str = "waiting";
    /// A 2xx arrived.
    pub const SUCCEEDED: &str = "succeeded";
    /// Retries exhausted.
    pub const FAILED: &str = "failed";
    /// The receiver answered 410 Gone for this job.
    pub const STOPPED: &str = "stopped";
}

/// A row of `deliveries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub org_id: String,
    pub job_id: String,
    pub sequence: i32,
    pub job_status: String,
    pub payload: Vec<u8>,
    pub state: String,
    pub attempt_count: i32,
    pub window_started_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub manual_requested: bool,
    pub event_occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub window_start_attempt: i32,
}

/// A delivery to record for a newly received event.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub event_id: String,
    pub org_id: String,
    pub job_id: String,
    pub sequence: i32,
    pub job_status: String,
    pub payload: Vec<u8>,
    pub event_occurred_at: DateTime<Utc>,
    pub traceparent: Option<String>,
}

/// Records a delivery unless its event is already recorded (a redelivered message).
/// Returns whether a row was inserted. Its initial state says whether it can go now
/// (`pending`), must wait for its predecessor (`waiting`), or will never be sent because
/// the receiver said 410 Gone for this job (`stopped`).
pub async fn insert_if_new(
    pool: &PgPool,
    new: &NewDelivery,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO deliveries (id, event_id, org_id, job_id, sequence, job_status, payload, \
           state, next_attempt_at, event_occurred_at, created_at, updated_at, traceparent) \
         SELECT $1, $2, $3, $4, $5, $6, $7, \
           CASE \
             WHEN EXISTS (SELECT 1 FROM stopped_webhooks s WHERE s.job_id = $4) \
               THEN 'stopped' \
             WHEN $5 = 1 OR EXISTS (SELECT 1 FROM deliveries p WHERE p.job_id = $4 \
               AND p.sequence = $5 - 1 AND p.state IN ('succeeded', 'failed', 'stopped')) \
               THEN 'pending' \
             ELSE 'waiting' \
           END, \
           $9, $8, $9, $9, $10 \
         ON CONFLICT DO NOTHING",
    )
    .bind(&new.id)
    .bind(&new.event_id)
    .bind(&new.org_id)
    .bind(&new.job_id)
    .bind(new.sequence)
    .bind(&new.job_status)
    .bind(&new.payload)
    .bind(new.event_occurred_at)
    .bind(now)
    .bind(&new.traceparent)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Locks the next due delivery whose predecessor has finished (or never arrived within
/// `missing_grace`), skipping rows other workers hold. The lock lasts for the caller's
/// transaction (the whole attempt).
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    missing_grace: std::time::Duration,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let missing_since = now - chrono::Duration::from_std(missing_grace).unwrap_or_default();
    sqlx::query_as(
        "SELECT d.* FROM deliveries d \
         WHERE d.state IN ('pending', 'waiting') AND d.next_attempt_at <= $1 \
           AND (d.sequence = 1 \
             OR EXISTS (SELECT 1 FROM deliveries p WHERE p.job_id = d.job_id \
               AND p.sequence = d.sequence - 1 AND p.state IN ('succeeded', 'failed', 'stopped')) \
             OR (d.created_at <= $2 AND NOT EXISTS (SELECT 1 FROM deliveries p \
               WHERE p.job_id = d.job_id AND p.sequence = d.sequence - 1))) \
         ORDER BY d.next_attempt_at \
         LIMIT 1 \
         FOR UPDATE OF d SKIP LOCKED",
    )
    .bind(now)
    .bind(missing_since)
    .fetch_optional(conn)
    .await
}

/// Writes the result of an attempt: the new state, the attempt count, the retry window
/// and the next attempt time (`None` once finished).
pub async fn record_outcome(
    conn: &mut PgConnection,
    id: &str,
    state: &str,
    attempt_count: i32,
    window_started_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET state = $2, attempt_count = $3, window_started_at = $4, \
           next_attempt_at = $5, manual_requested = false, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(attempt_count)
    .bind(window_started_at)
    .bind(next_attempt_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Postpones a delivery without counting an attempt (its target could not be had).
pub async fn defer(
    conn: &mut PgConnection,
    id: &str,
    until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deliveries SET next_attempt_at = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(until)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the job's webhook is stopped (a delivery inserted while the 410 was being
/// recorded may have missed the stop).
pub async fn job_stopped(conn: &mut PgConnection, job_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stopped_webhooks WHERE job_id = $1)")
        .bind(job_id)
        .fetch_one(conn)
        .await
}

/// After a 410: the job's webhook is stopped, and every not-yet-finished delivery of the
/// job with it.
pub async fn stop_job(
    conn: &mut PgConnection,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stopped_webhooks (job_id, stopped_at) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(job_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE deliveries SET state = 'stopped', next_attempt_at = NULL, updated_at = $2 \
         WHERE job_id = $1 AND state IN ('pending', 'waiting')",
    )
    .bind(job_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the job's next delivery `pending` once its predecessor finished (display only:
/// [`claim_due`] decides eligibility itself).
pub async fn release_successor(
    conn: &mut PgConnection,
    job_id: &str,
    sequence: i32,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET state = 'pending', updated_at = $3 \
         WHERE job_id = $1 AND sequence = $2 + 1 AND state = 'waiting'",
    )
    .bind(job_id)
    .bind(sequence)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The deliveries of one job of `org_id`, in sequence order.
pub async fn list_for_job(
    pool: &PgPool,
    org_id: &str,
    job_id: &str,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM deliveries WHERE org_id = $1 AND job_id = $2 ORDER BY sequence")
        .bind(org_id)
        .bind(job_id)
        .fetch_all(pool)
        .await
}

/// One delivery of `org_id`.
pub async fn get(
    pool: &PgPool,
    org_id: &str,
    id: &str,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM deliveries WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Schedules a manual redelivery now: the delivery becomes pending with a fresh retry
/// window, whatever state it was in, and a job webhook stopped by a 410 is revived (the
/// customer says the receiver is back). Fails at once with SQLSTATE 55P03 (NOWAIT) while
/// an attempt of it is in flight, instead of waiting for that attempt.
pub async fn request_redelivery(
    pool: &PgPool,
    org_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH target AS ( \
           SELECT id, job_id FROM deliveries WHERE org_id = $1 AND id = $2 FOR UPDATE NOWAIT), \
         revived AS ( \
           DELETE FROM stopped_webhooks s USING target WHERE s.job_id = target.job_id) \
         UPDATE deliveries d SET state = 'pending', next_attempt_at = $3, \
           window_started_at = $3, window_start_attempt = d.attempt_count, \
           manual_requested = true, updated_at = $3 \
         FROM target WHERE d.id = target.id RETURNING d.*",
    )
    .bind(org_id)
    .bind(id)
    .bind(now)
    .fetch_optional(pool)
    .await
}
