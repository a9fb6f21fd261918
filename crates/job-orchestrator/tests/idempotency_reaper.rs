//! The idempotency reaper against a real PostgreSQL: expired records go, live ones stay.

use plangrep_job_orchestrator::{Config, idempotency, startup};
use plangrep_service::{Settings, database};
use plangrep_test_support::TestDatabase;

#[tokio::test]
async fn expired_idempotency_records_are_reaped_and_live_ones_kept() {
    let db = TestDatabase::create().await;
    let settings =
        Settings::from_pairs([("DATABASE_URL", db.url()), ("PLANGREP_DEV_MODE", "true")]);
    let config = Config::from_settings(&settings).unwrap();
    startup::migrate(&config).await.unwrap();
    let pool = database::lazy_pool(startup::connect_options(&config).unwrap(), 2);
    for (key, expires) in [
        ("old", "now() - interval '1 minute'"),
        ("live", "now() + interval '1 hour'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO idempotency_keys (org_id, route, key, fingerprint, outcome, created_at, expires_at) \
             VALUES ('org_x', 'POST /projects', '{key}', '\\x00', 'ok', now(), {expires})"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    assert_eq!(idempotency::reap_expired(&pool).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["live"]);
}
