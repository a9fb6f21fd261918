//! Deliveries: one row per event of a job with a webhook.
//!
//! Per-job ordering is a row state: only the head of a job (its oldest unfinished event)
//! is `pending`; later events are `waiting` until it finishes and the recording of its
//! outcome ([`super::leases::record`]) makes the next one `pending`. Intake takes a share
//! lock on the predecessor row before inserting, so an event recorded while its
//! predecessor finishes is never left waiting (either intake sees the predecessor
//! finished, or the finisher sees the new row). A predecessor whose row is not committed
//! yet (another intake batch in flight) offers no lock to meet on: intake looks again
//! once its own row has committed ([`release_after_unseen_predecessors`], ADR 0019). A
//! previous event that never arrived at all (dead-lettered upstream) is given up after a
//! grace period by [`release_stranded`] (housekeeping), so one lost message cannot hold a
//! job's later webhooks forever. The claim itself ([`super::leases`]) is then a plain
//! index range over `pending` rows.
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
    /// The replica holding the lease, while an attempt is in flight.
    pub lease_owner: Option<String>,
    /// The claim's token: the outcome is recorded only while it still matches.
    pub lease_token: Option<String>,
    /// When the lease runs out (the delivery is then claimable again).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// `scheme://host:port` of the webhook URL: the unit of the per-destination cap.
    pub destination: String,
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
    /// `scheme://host:port` of the job's webhook URL.
    pub destination: String,
}

/// Leases offered at intake: a delivery is handed to a worker of this replica the moment
/// it is recorded, instead of being claimed later ([`super::leases`]).
#[derive(Debug, Clone)]
pub struct IntakeLease {
    /// The replica taking the deliveries.
    pub owner: String,
    /// When the leases run out (the deliveries are then claimable again).
    pub expires_at: DateTime<Utc>,
    /// A token per delivery of the batch, in order; `None` where no lease is offered.
    pub tokens: Vec<Option<String>>,
}

/// What recording one event did.
#[derive(Debug)]
pub enum Recorded {
    /// The event was recorded before (a redelivered message): nothing was written.
    Already,
    /// A new delivery, left for the claim loop (waiting, stopped, or not offered a lease).
    Stored,
    /// A new delivery `waiting` for a predecessor the statement could not see (its row
    /// not committed yet, or never arrived). That predecessor's outcome may be recorded
    /// before this row commits, and release nothing: once this row has committed,
    /// [`release_after_unseen_predecessors`] looks again. Its id.
    WaitingForUnseen(String),
    /// A new delivery, due now and leased at once under this token.
    Leased(Box<DeliveryRow>),
}

/// Records a delivery per event unless the event is already recorded (a redelivered
/// message), all in one statement; answers, per delivery in order, what it did. Each
/// row's initial state says whether it can go now (`pending`), must wait for its
/// predecessor (`waiting`), or will never be sent because the receiver said 410 Gone for
/// this job (`stopped`). A `pending` row offered a `lease` is leased under its token at
/// once, as a claim would lease it, unless its predecessor ended
/// `stopped`: the 410 that stopped it may have committed while this statement waited for
/// the predecessor's lock, after the snapshot its stop look-up reads, so such a row is
/// left to a claim, which checks the job's stop afresh.
pub async fn insert_new<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    batch: &[NewDelivery],
    lease: Option<&IntakeLease>,
    now: DateTime<Utc>,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let column = |f: fn(&NewDelivery) -> String| batch.iter().map(f).collect::<Vec<_>>();
    let tokens: Vec<Option<String>> = (0..batch.len())
        .map(|i| lease.and_then(|l| l.tokens.get(i).cloned().flatten()))
        .collect();
    // `predecessors` share-locks the previous events' rows first (in id order, as the
    // outcome writer locks them, so the two never deadlock), which serialises with their
    // outcomes being recorded (an UPDATE of those rows); a locking read that waited
    // returns the row as that UPDATE left it, so whichever commits second sees the
    // other's write. An event whose predecessor is in the same batch waits: the
    // predecessor's outcome releases it. A predecessor neither in the table nor in the
    // batch has no lock to meet on: such a row is reported (`recheck`). The look-ups are
    // scalar subqueries: a probe per row, where an `EXISTS` may be planned as a hash of
    // the whole table.
    let inserted: Vec<Inserted> = sqlx::query_as(
        "WITH incoming AS ( \
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], \
             $6::text[], $7::bytea[], $8::timestamptz[], $9::text[], $10::text[], $11::text[]) \
           AS n(id, event_id, org_id, job_id, sequence, job_status, payload, \
             event_occurred_at, traceparent, destination, token)), \
         predecessors AS ( \
           SELECT p.job_id, p.sequence, p.state FROM deliveries p \
           JOIN incoming n ON p.job_id = n.job_id AND p.sequence = n.sequence - 1 \
           ORDER BY p.id FOR SHARE OF p), \
         looked_up AS ( \
           SELECT n.*, \
             (SELECT true FROM stopped_webhooks s WHERE s.job_id = n.job_id) AS job_stopped, \
             (SELECT p.state FROM predecessors p \
               WHERE p.job_id = n.job_id AND p.sequence = n.sequence - 1) AS predecessor \
           FROM incoming n), \
         decided AS ( \
           SELECT l.*, CASE \
             WHEN l.job_stopped THEN 'stopped' \
             WHEN l.sequence = 1 OR l.predecessor IN ('succeeded', 'failed', 'stopped') \
               THEN 'pending' \
             ELSE 'waiting' \
           END AS state FROM looked_up l), \
         leased AS ( \
           SELECT d.*, CASE WHEN d.state = 'pending' \
             AND d.predecessor IS DISTINCT FROM 'stopped' THEN d.token END AS lease_token, \
             d.state = 'waiting' AND d.predecessor IS NULL AND NOT EXISTS ( \
               SELECT 1 FROM incoming i \
               WHERE i.job_id = d.job_id AND i.sequence = d.sequence - 1) AS recheck \
           FROM decided d), \
         inserted AS ( \
         INSERT INTO deliveries (id, event_id, org_id, job_id, sequence, job_status, payload, \
           state, next_attempt_at, event_occurred_at, created_at, updated_at, traceparent, \
           destination, lease_owner, lease_token, lease_expires_at) \
         SELECT n.id, n.event_id, n.org_id, n.job_id, n.sequence, n.job_status, n.payload, \
           n.state, CASE WHEN n.lease_token IS NULL THEN $12 ELSE $14 END, \
           n.event_occurred_at, $12, $12, n.traceparent, n.destination, \
           CASE WHEN n.lease_token IS NOT NULL THEN $13 END, n.lease_token, \
           CASE WHEN n.lease_token IS NOT NULL THEN $14::timestamptz END \
         FROM leased n \
         ON CONFLICT DO NOTHING \
         RETURNING *) \
         SELECT i.*, l.recheck FROM inserted i JOIN leased l ON l.id = i.id",
    )
    .bind(column(|n| n.id.clone()))
    .bind(column(|n| n.event_id.clone()))
    .bind(column(|n| n.org_id.clone()))
    .bind(column(|n| n.job_id.clone()))
    .bind(batch.iter().map(|n| n.sequence).collect::<Vec<_>>())
    .bind(column(|n| n.job_status.clone()))
    .bind(batch.iter().map(|n| n.payload.clone()).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|n| n.event_occurred_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|n| n.traceparent.clone())
            .collect::<Vec<_>>(),
    )
    .bind(column(|n| n.destination.clone()))
    .bind(tokens)
    .bind(now)
    .bind(lease.map(|l| l.owner.as_str()))
    .bind(lease.map(|l| l.expires_at))
    .fetch_all(executor)
    .await?;
    let mut inserted: std::collections::HashMap<String, Inserted> = inserted
        .into_iter()
        .map(|inserted| (inserted.row.event_id.clone(), inserted))
        .collect();
    // A message redelivered within one batch inserts once; only its first copy says so.
    Ok(batch
        .iter()
        .map(|n| match inserted.remove(&n.event_id) {
            None => Recorded::Already,
            Some(Inserted { row, .. }) if row.lease_token.is_some() => {
                Recorded::Leased(Box::new(row))
            }
            Some(Inserted { row, recheck: true }) => Recorded::WaitingForUnseen(row.id),
            Some(_) => Recorded::Stored,
        })
        .collect())
}

/// A row [`insert_new`] wrote, and whether its predecessor must be looked at again.
#[derive(sqlx::FromRow)]
struct Inserted {
    #[sqlx(flatten)]
    row: DeliveryRow,
    recheck: bool,
}

/// Makes the `waiting` deliveries `ids` (already committed) `pending` where their
/// predecessor has finished, for [`Recorded::WaitingForUnseen`]. The predecessors are
/// share-locked (in id order) first: one whose outcome is being written is read as that
/// write leaves it, and an outcome written later releases the rows itself. Every look-up
/// is a key probe (the rows by id, each predecessor by job and sequence). Returns how
/// many were released.
pub async fn release_after_unseen_predecessors(
    pool: &PgPool,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let released = sqlx::query(
        "WITH predecessors AS ( \
           SELECT w.id AS waiting_id, p.state FROM deliveries w \
           JOIN deliveries p ON p.job_id = w.job_id AND p.sequence = w.sequence - 1 \
           WHERE w.id = ANY($1) \
           ORDER BY p.id FOR SHARE OF p) \
         UPDATE deliveries w SET state = 'pending', updated_at = $2 \
         FROM predecessors p \
         WHERE w.id = p.waiting_id AND w.state = 'waiting' \
           AND p.state IN ('succeeded', 'failed', 'stopped')",
    )
    .bind(ids)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
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
        "UPDATE deliveries SET state = 'stopped', next_attempt_at = NULL, updated_at = $2, \
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
         WHERE job_id = $1 AND state IN ('pending', 'waiting')",
    )
    .bind(job_id)
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

/// What a manual redelivery request found.
#[derive(Debug)]
pub enum Redelivery {
    /// Scheduled now; the row as it is after the change.
    Scheduled(Box<DeliveryRow>),
    /// An attempt of it holds a live lease: nothing changed.
    InFlight,
    /// No such delivery in the organization.
    NotFound,
}

/// Schedules a manual redelivery now: the delivery becomes pending with a fresh retry
/// window, whatever state it was in (one still `waiting` for its predecessor keeps
/// waiting, then goes at once), and a job webhook stopped by a 410 is revived (the
/// customer says the receiver is back). While an attempt of it holds a live lease it
/// answers [`Redelivery::InFlight`] at once instead of waiting for that attempt; an
/// expired lease (a crashed worker) is taken over (its late outcome will be discarded).
pub async fn request_redelivery(
    pool: &PgPool,
    org_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Redelivery, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found: Option<(String, bool)> = sqlx::query_as(
        "SELECT job_id, coalesce(state = 'pending' AND lease_expires_at > $3, false) \
         FROM deliveries WHERE org_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(org_id)
    .bind(id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let job_id = match found {
        None => return Ok(Redelivery::NotFound),
        Some((_, true)) => return Ok(Redelivery::InFlight),
        Some((job_id, false)) => job_id,
    };
    sqlx::query("DELETE FROM stopped_webhooks WHERE job_id = $1")
        .bind(&job_id)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query_as(
        "UPDATE deliveries SET next_attempt_at = $2, \
           state = CASE WHEN state = 'waiting' THEN 'waiting' ELSE 'pending' END, \
           window_started_at = $2, window_start_attempt = attempt_count, \
           manual_requested = true, updated_at = $2, \
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Redelivery::Scheduled(Box::new(row)))
}

/// Makes `waiting` deliveries claimable whose predecessor finished, whatever their age (a
/// safety net: intake and [`super::leases::record`] normally do it, so a row found here
/// points at a race they missed), or never arrived although the delivery has waited
/// longer than `missing_grace`. Returns how many were released.
pub async fn release_stranded(
    pool: &PgPool,
    now: DateTime<Utc>,
    missing_grace: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let waited_since = now - chrono::Duration::from_std(missing_grace).unwrap_or_default();
    let released = sqlx::query(
        "UPDATE deliveries w SET state = 'pending', updated_at = $1 \
         FROM (SELECT w.id, (SELECT p.state FROM deliveries p \
                 WHERE p.job_id = w.job_id AND p.sequence = w.sequence - 1) AS predecessor \
               FROM deliveries w WHERE w.state = 'waiting') AS stranded \
         WHERE w.id = stranded.id AND w.state = 'waiting' \
           AND (stranded.predecessor IN ('succeeded', 'failed', 'stopped') \
             OR (stranded.predecessor IS NULL AND w.created_at <= $2))",
    )
    .bind(now)
    .bind(waited_since)
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
}
