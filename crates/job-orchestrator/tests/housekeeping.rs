//! Housekeeping against a real PostgreSQL: expired idempotency records and old published
//! outbox rows go; live records and unpublished rows stay.

use std::time::Duration;

use plangrep_job_orchestrator::store::outbox;
use plangrep_job_orchestrator::{Config, idempotency, startup};
use plangrep_service::{Settings, database};
use plangrep_test_support::TestDatabase;
use sqlx::PgPool;

async fn migrated_pool(db: &TestDatabase) -> PgPool {
    let settings =
        Settings::from_pairs([("DATABASE_URL", db.url()), ("PLANGREP_DEV_MODE", "true")]);
    let config = Config::from_settings(&settings).unwrap();
    startup::migrate(&config).await.unwrap();
    database::lazy_pool(startup::connect_options(&config).unwrap(), 2)
}

async fn insert(pool: &PgPool, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_idempotency_records_are_reaped_and_live_ones_kept() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    for (key, expires) in [
        ("old", "now() - interval '1 minute'"),
        ("live", "now() + interval '1 hour'"),
    ] {
        insert(
            &pool,
            format!(
                "INSERT INTO idempotency_keys (org_id, route, key, fingerprint, outcome, created_at, expires_at) \
                 VALUES ('org_x', 'POST /projects', '{key}', '\\x00', 'ok', now(), {expires})"
            ),
        )
        .await;
    }
    assert_eq!(idempotency::reap_expired(&pool).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["live"]);
}

#[tokio::test]
async fn only_outbox_rows_published_before_the_retention_are_pruned() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    for (event, published) in [
        ("evt_old", "now() - interval '8 days'"),
        ("evt_recent", "now() - interval '1 hour'"),
        ("evt_unpublished", "NULL"),
    ] {
        insert(
            &pool,
            format!(
                "INSERT INTO outbox (event_id, routing_key, payload, created_at, published_at) \
                 VALUES ('{event}', 'job.status_changed.provisioning', '\\x00', now() - interval '9 days', {published})"
            ),
        )
        .await;
    }
    let week = Duration::from_secs(7 * 86_400);
    assert_eq!(outbox::prune_published(&pool, week).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT event_id FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["evt_recent", "evt_unpublished"]);
}
