//! The relay's batch claim against a real PostgreSQL (ADR 0013, ADR 0021): on the session
//! that holds the relay lock it claims unpublished rows in id order and marks them
//! published, visible to others only once its transaction commits; anywhere else it
//! claims nothing, whoever holds the lock. The outbox is vacuumed often enough that the
//! claim's walk over published rows stays short, and the leader session plans the claim
//! for the outbox as it is, not as it was when the session first ran it.

mod common;

use common::{connect_options, migrated_pool};
use plangrep_job_orchestrator::relay::{RELAY_LOCK_KEY, leader_session};
use plangrep_job_orchestrator::store::outbox::{self, Fence};
use plangrep_test_support::{TestDatabase, table_options};
use sqlx::{Connection, PgConnection};

/// Appends `n` outbox rows, `evt_1` … `evt_n`.
async fn append(conn: &mut PgConnection, n: usize) {
    for i in 1..=n {
        outbox::append(
            conn,
            &format!("evt_{i}"),
            "job.status_changed.queued",
            b"{}",
        )
        .await
        .unwrap();
    }
}

async fn unpublished(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY id")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Takes the relay lock on `conn`, as the relay's leader session does.
async fn lead(conn: &mut PgConnection) -> Fence {
    let (taken, leader_pid): (bool, i32) =
        sqlx::query_as("SELECT pg_try_advisory_lock($1), pg_backend_pid()")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(taken, "the relay lock is free");
    Fence {
        leader_pid,
        lock_key: RELAY_LOCK_KEY,
    }
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// One batch claimed with `fence` on `conn`, its transaction committed.
async fn claim_committed(
    conn: &mut PgConnection,
    fence: Fence,
) -> Option<Vec<outbox::PendingMessage>> {
    let mut tx = conn.begin().await.unwrap();
    let batch = outbox::claim_and_mark(&mut tx, fence, 100).await.unwrap();
    tx.commit().await.unwrap();
    batch
}

#[tokio::test]
async fn the_leader_claims_in_id_order_and_its_marks_show_only_after_commit() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let mut leader = pool.acquire().await.unwrap();
    let mut observer = pool.acquire().await.unwrap();
    append(&mut observer, 3).await;
    let fence = lead(&mut leader).await;

    let mut tx = leader.begin().await.unwrap();
    let batch = outbox::claim_and_mark(&mut tx, fence, 2)
        .await
        .unwrap()
        .expect("the leader's fence holds");
    let claimed: Vec<&str> = batch.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(claimed, ["evt_1", "evt_2"]);
    assert_eq!(
        unpublished(&mut observer).await,
        ["evt_1", "evt_2", "evt_3"],
        "marks of a batch whose confirms are awaited are not committed"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        unpublished(&mut observer).await,
        ["evt_1", "evt_2", "evt_3"],
        "a batch that was not confirmed is claimed again"
    );

    let batch = claim_committed(&mut leader, fence)
        .await
        .expect("the leader's fence holds");
    assert_eq!(batch.len(), 3);
    assert!(unpublished(&mut observer).await.is_empty());

    let batch = claim_committed(&mut leader, fence).await;
    assert!(batch.is_some_and(|batch| batch.is_empty()));
}

#[tokio::test]
async fn a_session_that_does_not_hold_the_relay_lock_claims_nothing() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let mut leader = pool.acquire().await.unwrap();
    let mut other = pool.acquire().await.unwrap();
    append(&mut other, 2).await;

    // The lock is free, but the claim runs on another backend than the one that took
    // it (a reconnected or pooled session).
    let stale = Fence {
        leader_pid: backend_pid(&mut leader).await,
        lock_key: RELAY_LOCK_KEY,
    };
    assert!(claim_committed(&mut other, stale).await.is_none());

    // Its own backend, but another session holds the lock.
    let fence = lead(&mut leader).await;
    let own = Fence {
        leader_pid: backend_pid(&mut other).await,
        lock_key: fence.lock_key,
    };
    assert!(claim_committed(&mut other, own).await.is_none());
    assert_eq!(unpublished(&mut other).await, ["evt_1", "evt_2"]);

    // The leader itself still claims both.
    let batch = claim_committed(&mut leader, fence).await;
    assert_eq!(batch.map(|batch| batch.len()), Some(2));
}

/// Every batch leaves dead entries at the head of the claim's index until a vacuum; the
/// outbox is vacuumed after 1 % of it changed, not the default 20 %, so those entries
/// stay few however many published rows the retention keeps (ADR 0021).
#[tokio::test]
async fn the_outbox_is_vacuumed_and_analyzed_after_one_percent_changed() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    assert_eq!(
        table_options(&pool, "outbox").await,
        [
            "autovacuum_analyze_scale_factor=0.01",
            "autovacuum_vacuum_scale_factor=0.01"
        ]
    );
}

/// A relay that starts on a small outbox claims many times before the next analyze;
/// its leader session still claims by index once the outbox holds thousands of rows
/// (ADR 0022). A generic plan cached on the small table scans the whole outbox for
/// every claimed row.
#[tokio::test]
async fn the_leader_session_claims_by_index_after_the_outbox_grew() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let mut leader = PgConnection::connect_with(&leader_session(&connect_options(&db)))
        .await
        .unwrap();
    let fence = lead(&mut leader).await;
    let mut writer = pool.acquire().await.unwrap();
    // The small outbox, all published, analyzed as autovacuum does after its first 50
    // changes.
    outbox::append(&mut writer, "first", "job.status_changed.queued", b"{}")
        .await
        .unwrap();
    claim_committed(&mut leader, fence).await.unwrap();
    sqlx::query("ANALYZE outbox")
        .execute(&mut *writer)
        .await
        .unwrap();
    // More claims than PostgreSQL's five custom plans before it may switch to a generic
    // one, each on a table of a row or two.
    for i in 0..10 {
        outbox::append(
            &mut writer,
            &format!("small_{i}"),
            "job.status_changed.queued",
            b"{}",
        )
        .await
        .unwrap();
        let batch = claim_committed(&mut leader, fence).await.unwrap();
        assert_eq!(batch.len(), 1);
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, payload, published_at) \
         SELECT 'grown_' || g, 'job.status_changed.queued', '\\x00', now() \
         FROM generate_series(1, 20000) g",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    append(&mut writer, 3).await;

    // The plan the session's own prepared claim statement runs with now.
    let statement: String = sqlx::query_scalar(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'WITH fence AS%'",
    )
    .fetch_one(&mut leader)
    .await
    .unwrap();
    let mut tx = leader.begin().await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN EXECUTE {statement}({}, {}, 100)",
        fence.leader_pid, fence.lock_key
    )))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let plan = plan.join("\n");
    assert!(
        !plan.contains("Seq Scan"),
        "the claim scans the outbox:\n{plan}"
    );
    assert!(plan.contains("outbox_unpublished_idx"), "{plan}");
}
