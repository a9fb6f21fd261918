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
use sqlx::{PgConnection, PgPool};

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

/// An attempt and the delivery state it leads to, written by [`record`] under the lease.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The claim's token: nothing is written unless it still holds the delivery.
    pub token: String,
    /// The delivery's next state.
    pub state: &'static str,
    pub window_started_at: DateTime<Utc>,
    /// When to try again; `None` once finished.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// The attempt: its `delivery_id` names the delivery and its `number` is the
    /// delivery's new attempt count.
    pub attempt: AttemptRow,
}

/// A recording that was written.
#[derive(sqlx::FromRow)]
struct Recorded {
    id: String,
    token: String,
    job_id: String,
    sequence: i32,
    state: String,
    updated_at: DateTime<Utc>,
}

/// Writes each recording, for as many deliveries as given, in two statements on `conn`
/// (the caller's transaction): the outcome, the end of the lease and the attempt's log
/// row, if the lease token still holds the delivery; then, for each delivery that
/// succeeded or failed, the job's next event becomes `pending`. Answers, per recording in
/// order, whether it was written: `false` when the lease no longer holds (it expired and
/// another worker claimed it, or a manual redelivery or a 410 changed the row), and then
/// nothing of it is written.
///
/// The rows are locked in id order, as intake share-locks predecessors, so the two do not
/// deadlock each other. The successors are released by a second statement because its
/// snapshot is taken after those locks are held: an event that intake inserted while
/// holding a predecessor's lock is visible to it. A `stopped` outcome releases nothing;
/// the caller stops the job in the same transaction.
pub async fn record(
    conn: &mut PgConnection,
    batch: &[Recording],
) -> Result<Vec<bool>, sqlx::Error> {
    let attempts = || batch.iter().map(|r| &r.attempt);
    let recorded: Vec<Recorded> = sqlx::query_as(
        "WITH outcome AS ( \
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], \
             $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::text[], \
             $9::timestamptz[], $10::int4[], $11::int4[], $12::text[], $13::text[], $14::text[]) \
           AS o(id, token, state, number, window_started_at, next_attempt_at, now, trigger, \
             started_at, duration_ms, status_code, error, response_snippet, worker)), \
         leased AS ( \
           SELECT d.id FROM deliveries d JOIN outcome o ON d.id = o.id \
           WHERE d.lease_token = o.token AND d.state = 'pending' \
           ORDER BY d.id FOR UPDATE OF d), \
         recorded AS ( \
           UPDATE deliveries d SET state = o.state, attempt_count = o.number, \
             window_started_at = o.window_started_at, next_attempt_at = o.next_attempt_at, \
             manual_requested = false, updated_at = o.now, \
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
           FROM outcome o JOIN leased l ON l.id = o.id \
           WHERE d.id = o.id AND d.lease_token = o.token AND d.state = 'pending' \
           RETURNING d.id, o.token, d.job_id, d.sequence, d.state, d.updated_at), \
         logged AS ( \
           INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, \
             status_code, error, response_snippet, worker) \
           SELECT o.id, o.number, o.trigger, o.started_at, o.duration_ms, o.status_code, \
             o.error, o.response_snippet, o.worker \
           FROM outcome o JOIN recorded r ON r.id = o.id AND r.token = o.token) \
         SELECT * FROM recorded",
    )
    .bind(
        attempts()
            .map(|a| a.delivery_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|r| r.token.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|r| r.state).collect::<Vec<_>>())
    .bind(attempts().map(|a| a.number).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|r| r.window_started_at)
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>())
    .bind(batch.iter().map(|r| r.now).collect::<Vec<_>>())
    .bind(attempts().map(|a| a.trigger.as_str()).collect::<Vec<_>>())
    .bind(attempts().map(|a| a.started_at).collect::<Vec<_>>())
    .bind(attempts().map(|a| a.duration_ms).collect::<Vec<_>>())
    .bind(attempts().map(|a| a.status_code).collect::<Vec<_>>())
    .bind(attempts().map(|a| a.error.as_deref()).collect::<Vec<_>>())
    .bind(
        attempts()
            .map(|a| a.response_snippet.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(attempts().map(|a| a.worker.as_deref()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let finished: Vec<&Recorded> = recorded
        .iter()
        .filter(|r| r.state == "succeeded" || r.state == "failed")
        .collect();
    if !finished.is_empty() {
        sqlx::query(
            "UPDATE deliveries w SET state = 'pending', updated_at = f.at \
             FROM unnest($1::text[], $2::int4[], $3::timestamptz[]) AS f(job_id, sequence, at) \
             WHERE w.job_id = f.job_id AND w.sequence = f.sequence + 1 AND w.state = 'waiting'",
        )
        .bind(
            finished
                .iter()
                .map(|r| r.job_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(finished.iter().map(|r| r.sequence).collect::<Vec<_>>())
        .bind(finished.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let recorded: std::collections::HashSet<(String, String)> =
        recorded.into_iter().map(|r| (r.id, r.token)).collect();
    Ok(batch
        .iter()
        .map(|r| recorded.contains(&(r.attempt.delivery_id.clone(), r.token.clone())))
        .collect())
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
