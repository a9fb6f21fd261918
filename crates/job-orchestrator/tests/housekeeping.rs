//! Housekeeping against a real PostgreSQL: expired idempotency records and old published
//! outbox rows go; live records and unpublished rows stay.

use std::time::Duration;

mod common;

use common::migrated_pool;
use plangrep_job_orchestrator::idempotency;
use plangrep_job_orchestrator::store::outbox;
use plangrep_test_support::TestDatabase;
use sqlx::PgPool;

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

#[tokio::test]
async fn orphaned_uploads_are_deleted_after_the_grace_period_and_registered_ones_kept() {
    use bytes::Bytes;
    use plangrep_job_orchestrator::housekeeping::delete_orphaned_uploads;
    use plangrep_storage::{Storage, StorageConfig, keys};

    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let dir = std::env::temp_dir().join(format!(
        "plangrep-orphans-{}",
        plangrep_test_support::random_token()
    ));
    let storage = Storage::open(&StorageConfig::local(&dir)).unwrap();
    let registered = keys::document("job_a", "doc_registered");
    let orphan = keys::document("job_a", "doc_orphan");
    for key in [&registered, &orphan] {
        storage
            .put(key, Bytes::from_static(b"%PDF-1.4"))
            .await
            .unwrap();
    }
    storage
        .put("jobs/job_a/result.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    insert(
        &pool,
        "INSERT INTO projects (id, org_id, name, status, created_at, updated_at) \
         VALUES ('proj_a', 'org_a', 'P', 'ready', now(), now())"
            .to_owned(),
    )
    .await;
    insert(
        &pool,
        "INSERT INTO jobs (id, org_id, project_id, status, created_at, updated_at, expires_at) \
         VALUES ('job_a', 'org_a', 'proj_a', 'uploading', now(), now(), now() + interval '1 day')"
            .to_owned(),
    )
    .await;
    insert(
        &pool,
        format!(
            "INSERT INTO documents (id, job_id, position, file_name, content_type, classification, \
               size_bytes, sha256, storage_key, status, created_at) \
             VALUES ('doc_registered', 'job_a', 1, 'a.pdf', 'application/pdf', 'other', 8, '', '{registered}', 'uploaded', now())"
        ),
    )
    .await;

    // Within the grace period an unregistered upload may still be registering: kept.
    let kept = delete_orphaned_uploads(&pool, &storage, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(kept, 0);
    let deleted = delete_orphaned_uploads(&pool, &storage, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(storage.get(&orphan).await.is_err());
    assert!(storage.get(&registered).await.is_ok());
    assert!(storage.get("jobs/job_a/result.json").await.is_ok());
    let _ = std::fs::remove_dir_all(dir);
}
