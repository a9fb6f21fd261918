//! The transactional outbox: rows written with the change they announce, claimed and
//! marked published by the relay.

use sqlx::{PgConnection, Postgres, Transaction};

/// A row waiting to be published.
#[derive(Debug, sqlx::FromRow)]
pub struct PendingMessage {
    pub id: i64,
    pub event_id: String,
    pub routing_key: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

/// Appends a message to the outbox inside the caller's transaction, continuing the
/// current trace: the row's `traceparent` is this write's span, the parent of the relay's
/// publish.
#[tracing::instrument(name = "outbox append", skip_all, fields(%event_id, %routing_key))]
pub async fn append(
    tx: &mut PgConnection,
    event_id: &str,
    routing_key: &str,
    payload: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, payload, traceparent) VALUES ($1, $2, $3, $4)",
    )
    .bind(event_id)
    .bind(routing_key)
    .bind(payload)
    .bind(plangrep_telemetry::trace::next_hop())
    .execute(tx)
    .await?;
    Ok(())
}

/// A job's status change: its history row (`job_events`) and its outbox message.
#[derive(Debug)]
pub struct JobEvent<'a> {
    pub id: String,
    pub job_id: &'a str,
    pub sequence: i32,
    pub status: &'a str,
    pub previous_status: Option<&'a str>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub routing_key: String,
    pub payload: Vec<u8>,
    /// The trace the relay's publish continues: the span that recorded the change.
    pub traceparent: Option<String>,
}

/// Appends jobs' status changes to their history and their messages to the outbox with
/// one statement, inside the caller's transaction (the hottest write path: two per job
/// created). The outbox ids follow the order of `events`.
pub async fn append_job_events(
    tx: &mut PgConnection,
    events: &[JobEvent<'_>],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH history AS ( \
           INSERT INTO job_events (id, job_id, sequence, status, previous_status, occurred_at) \
           SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], \
             $6::timestamptz[])) \
         INSERT INTO outbox (event_id, routing_key, payload, traceparent) \
         SELECT event_id, routing_key, payload, traceparent \
         FROM unnest($1::text[], $7::text[], $8::bytea[], $9::text[]) \
           WITH ORDINALITY AS e(event_id, routing_key, payload, traceparent, n) \
         ORDER BY n",
    )
    .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.job_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.status).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.previous_status).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.routing_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.payload.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.traceparent.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The relay's proof of leadership, checked by the statement that claims a batch
/// (ADR 0013, ADR 0021).
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    /// The backend that took the session advisory lock (`pg_backend_pid()` then).
    pub leader_pid: i32,
    /// The relay's advisory lock key.
    pub lock_key: i64,
}

/// Claims up to `limit` unpublished rows in id order, skipping rows another relay holds,
/// and marks them published, all in one statement of the caller's transaction: the marks
/// commit only if the caller commits after the broker confirmed the batch, and a rollback
/// leaves the rows to be claimed again. `None` when the fence does not hold: nothing is
/// claimed.
///
/// The fence holds when the statement runs on the backend that took the session lock
/// and that backend takes `lock_key` again for this transaction. A session that holds
/// the lock always gets it again (advisory locks are re-entrant), and while the
/// transaction lives no other session can hold the key, so two relays never publish at
/// once. Both are cheap look-ups, where reading `pg_locks` would copy the whole lock
/// table under every lock partition's latch on each batch.
pub async fn claim_and_mark(
    tx: &mut Transaction<'_, Postgres>,
    fence: Fence,
    limit: i64,
) -> Result<Option<Vec<PendingMessage>>, sqlx::Error> {
    let rows: Vec<FencedRow> = sqlx::query_as(
        "WITH fence AS ( \
           SELECT pg_backend_pid() = $1 AND pg_try_advisory_xact_lock($2) AS held), \
         claimed AS ( \
           SELECT id FROM outbox \
           WHERE published_at IS NULL AND (SELECT held FROM fence) \
           ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED), \
         marked AS ( \
           UPDATE outbox o SET published_at = now() FROM claimed c WHERE o.id = c.id \
           RETURNING o.id, o.event_id, o.routing_key, o.payload, o.traceparent) \
         SELECT fence.held, m.id, m.event_id, m.routing_key, m.payload, m.traceparent \
         FROM fence LEFT JOIN marked m ON true \
         ORDER BY m.id",
    )
    .bind(fence.leader_pid)
    .bind(fence.lock_key)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    if !rows.first().is_some_and(|row| row.held) {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter().filter_map(FencedRow::message).collect(),
    ))
}

/// A row of [`claim_and_mark`]: the fence, and a message unless none is pending.
#[derive(sqlx::FromRow)]
struct FencedRow {
    held: bool,
    id: Option<i64>,
    event_id: Option<String>,
    routing_key: Option<String>,
    payload: Option<Vec<u8>>,
    traceparent: Option<String>,
}

impl FencedRow {
    fn message(self) -> Option<PendingMessage> {
        Some(PendingMessage {
            id: self.id?,
            event_id: self.event_id?,
            routing_key: self.routing_key?,
            payload: self.payload?,
            traceparent: self.traceparent,
        })
    }
}

/// Deletes rows published more than `retention` ago, in batches; returns how many.
pub async fn prune_published(
    pool: &sqlx::PgPool,
    retention: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE id IN ( \
               SELECT id FROM outbox WHERE published_at < $1 ORDER BY id LIMIT 1000)",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 1000 {
            return Ok(total);
        }
    }
}
