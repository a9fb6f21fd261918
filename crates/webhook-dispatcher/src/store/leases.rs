//! Leases: how a worker takes a delivery for one attempt without holding a transaction,
//! a row lock or a pooled connection while it talks HTTP.
//!
//! [`claim`] is one short statement: it locks due `pending` rows (`FOR UPDATE SKIP
//! LOCKED`, so replicas never take the same row), stamps a lease (owner, token, expiry)
//! and moves `next_attempt_at` to the expiry. A leased delivery is therefore simply not
//! due until its lease runs out, and a crashed worker's delivery is claimed again by the
//! same index range as any other (same event, same `webhook-id`). The outcome is written
//! by [`record`] only while the token still matches; a worker that lost its lease gets
//! `false` and its result is discarded.
//!
//! The claim is an index range scan on `deliveries_claim_idx` (`next_attempt_at WHERE
//! state = 'pending'`), bounded by a window of `window` rows whatever the backlog; inside
//! the window the picks round-robin across organizations (each org's oldest first, then
//! each org's second, …), destinations at their concurrency cap are skipped and no
//! destination gets more rows than its cap. A destination that cannot be reached has its
//! due deliveries deferred together ([`defer_destination`]) instead of failing each.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use super::attempts::AttemptRow;
use super::deliveries::DeliveryRow;

/// The claim statement (public so a test can `EXPLAIN` exactly it). Whether the job's
/// webhook is stopped is a scalar subquery: a primary-key probe per claimed row, where an
/// `EXISTS` may be planned as a hash of the whole `stopped_webhooks` table.
///
/// `$1` now, `$2` saturated destinations, `$3` window, `$4` how many to take,
/// `$5` owner, `$6` token, `$7` lease expiry, `$8` how many of one destination.
pub const CLAIM_SQL: &str = "\
WITH candidates AS ( \
    SELECT id, org_id, destination, next_attempt_at FROM deliveries \
    WHERE state = 'pending' AND next_attempt_at <= $1 AND destination <> ALL($2) \
    ORDER BY next_attempt_at \
    LIMIT $3 \
    FOR UPDATE SKIP LOCKED), \
ranked AS ( \
    SELECT id, next_attempt_at, \
        row_number() OVER (PARTITION BY org_id ORDER BY next_attempt_at) AS org_rank, \
        row_number() OVER (PARTITION BY destination ORDER BY next_attempt_at) AS destination_rank \
    FROM candidates), \
picked AS ( \
    SELECT id, next_attempt_at AS due_at FROM ranked \
    WHERE destination_rank <= $8 \
    ORDER BY org_rank, next_attempt_at \
    LIMIT $4) \
UPDATE deliveries d \
SET lease_owner = $5, lease_token = $6, lease_expires_at = $7, next_attempt_at = $7 \
FROM picked WHERE d.id = picked.id \
RETURNING d.*, picked.due_at, \
    coalesce((SELECT true FROM stopped_webhooks s WHERE s.job_id = d.job_id), false) AS job_stopped";

/// A delivery taken for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(flatten)]
    pub delivery: DeliveryRow,
    /// When it was due before the claim (restored when the claim is handed back).
    pub due_at: DateTime<Utc>,
    /// Whether the job's webhook was stopped (410 Gone) when it was claimed.
    pub job_stopped: bool,
}

impl Claimed {
    /// The claim's token.
    pub fn token(&self) -> &str {
        self.delivery.lease_token.as_deref().unwrap_or_default()
    }
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The claiming replica.
    pub owner: &'a str,
    /// A fresh token for this claim.
    pub token: &'a str,
    /// How many deliveries to take at most.
    pub limit: i64,
    /// How many due rows to look at (the fairness window; at least `limit`).
    pub window: i64,
    /// Destinations at their concurrency cap: not taken.
    pub saturated: &'a [String],
    /// At most this many of one destination (its concurrency cap), so a backlog for one
    /// receiver is not claimed only to be handed back.
    pub per_destination: i64,
    /// Now.
    pub now: DateTime<Utc>,
    /// When the lease runs out.
    pub lease_expires_at: DateTime<Utc>,
}

/// Leases up to `request.limit` due deliveries (see the module docs).
pub async fn claim(pool: &PgPool, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(CLAIM_SQL)
        .bind(request.now)
        .bind(request.saturated)
        .bind(request.window.max(request.limit))
        .bind(request.limit)
        .bind(request.owner)
        .bind(request.token)
        .bind(request.lease_expires_at)
        .bind(request.per_destination.max(1))
        .fetch_all(pool)
        .await
}

/// The outcome of an attempt, written under the lease.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub state: &'a str,
    pub attempt_count: i32,
    pub window_started_at: DateTime<Utc>,
    /// `None` once finished.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Writes `outcome`, ends the lease and appends `attempt`, in one statement, if the
/// lease `token` still holds the delivery. `false` when it does not (it expired and
/// another worker claimed it, or a manual redelivery or a 410 changed the row): nothing
/// is written.
pub async fn record<'c>(
    executor: impl PgExecutor<'c>,
    id: &str,
    token: &str,
    outcome: &Outcome<'_>,
    attempt: &AttemptRow,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "WITH recorded AS ( \
           UPDATE deliveries SET state = $3, attempt_count = $4, window_started_at = $5, \
             next_attempt_at = $6, manual_requested = false, updated_at = $7, \
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
           WHERE id = $1 AND lease_token = $2 AND state = 'pending' \
           RETURNING id) \
         INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, \
           status_code, error, response_snippet, worker) \
         SELECT id, $8, $9, $10, $11, $12, $13, $14, $15 FROM recorded",
    )
    .bind(id)
    .bind(token)
    .bind(outcome.state)
    .bind(outcome.attempt_count)
    .bind(outcome.window_started_at)
    .bind(outcome.next_attempt_at)
    .bind(outcome.now)
    .bind(attempt.number)
    .bind(&attempt.trigger)
    .bind(attempt.started_at)
    .bind(attempt.duration_ms)
    .bind(attempt.status_code)
    .bind(&attempt.error)
    .bind(&attempt.response_snippet)
    .bind(&attempt.worker)
    .execute(executor)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Defers every due, unleased delivery to `destination` until `until`: it refused the
/// connection or did not answer, so attempting its other deliveries now would only fail
/// the same way (each keeps its own retry schedule once it is attempted again). Returns
/// how many were deferred.
pub async fn defer_destination(
    pool: &PgPool,
    destination: &str,
    until: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let deferred = sqlx::query(
        "UPDATE deliveries SET next_attempt_at = $2 \
         WHERE state = 'pending' AND destination = $1 AND next_attempt_at < $2 \
           AND lease_token IS NULL",
    )
    .bind(destination)
    .bind(until)
    .execute(pool)
    .await?;
    Ok(deferred.rows_affected())
}

/// Hands a claimed delivery back without an attempt (its destination is busy, the
/// orchestrator is unreachable): due again at `due_at`. `false` when the lease was lost.
pub async fn release(
    pool: &PgPool,
    id: &str,
    token: &str,
    due_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE deliveries SET next_attempt_at = $3, \
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_token = $2 AND state = 'pending'",
    )
    .bind(id)
    .bind(token)
    .bind(due_at)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}
