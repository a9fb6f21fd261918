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

/// Claims up to `limit` unpublished rows in id order, skipping rows another relay holds,
/// in the same statement that proves the session still holds the session advisory lock
/// `lock_key` (the relay's fence, ADR 0013). `None` when it does not: nothing is claimed.
/// A bigint key shows in `pg_locks` as its high half in `classid`, its low half in `objid`
/// and `objsubid = 1`.
pub async fn claim_batch_fenced(
    tx: &mut Transaction<'_, Postgres>,
    lock_key: i64,
    limit: i64,
) -> Result<Option<Vec<PendingMessage>>, sqlx::Error> {
    let rows: Vec<FencedRow> = sqlx::query_as(
        "WITH fence AS ( \
           SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
             AND classid = ($1::bigint >> 32)::oid \
             AND objid = ($1::bigint & 4294967295)::oid) AS held) \
         SELECT fence.held, o.id, o.event_id, o.routing_key, o.payload, o.traceparent \
         FROM fence LEFT JOIN LATERAL ( \
           SELECT id, event_id, routing_key, payload, traceparent FROM outbox \
           WHERE published_at IS NULL AND fence.held \
           ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) o ON true \
         ORDER BY o.id",
    )
    .bind(lock_key)
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

/// A row of [`claim_batch_fenced`]: the fence, and a message unless none is pending.
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

/// Marks rows as published.
pub async fn mark_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
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
