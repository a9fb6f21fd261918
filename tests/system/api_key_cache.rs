//! Gateways remember the API keys they read (ADR 0024): a key is read from the database
//! once, and a change to it (a revoke through any replica's admin API, an operator's SQL)
//! is heard by every replica at once, also after the subscription's connection was lost.
//! The cache's lifetime is an hour here, so only a heard change can make a replica
//! refuse a key it remembers.

use std::time::Duration;

use plangrep_api_gateway::startup::KEY_CHANGES_APPLICATION;
use plangrep_test_support::eventually;
use sqlx::{Connection, PgConnection};

use crate::edge::gateway_metric;
use crate::helpers::{Options, TestApp, expect_error};

/// Longer than any wait below: entries never expire during a test.
fn remembering() -> Options {
    Options::default().with("PLANGREP_API_KEY_CACHE_TTL", "1h")
}

const PATIENCE: Duration = Duration::from_secs(10);

/// The status of `GET /projects` with `key` on the gateway at `url`.
async fn list_status(url: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/api/open/v1/projects"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn lookups(ops_url: &str) -> f64 {
    gateway_metric(ops_url, "plangrep_api_key_lookups_total").await
}

/// Waits until the gateway serves `key` without reading the database (it subscribed to
/// key changes and remembered the key).
async fn until_remembered(url: &str, ops_url: &str, key: &str) {
    eventually("the key served from memory", PATIENCE, || async {
        let before = lookups(ops_url).await;
        assert_eq!(list_status(url, key).await, 200);
        (lookups(ops_url).await == before).then_some(())
    })
    .await;
}

/// Waits until the gateway at `url` refuses `key` with a 401.
async fn until_refused(url: &str, key: &str) {
    eventually("the key refused", PATIENCE, || async {
        (list_status(url, key).await == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_key_is_read_once_and_a_revoke_through_one_replica_is_heard_by_the_other() {
    let mut app = TestApp::spawn_with(remembering()).await;
    let (_org, key) = app.create_customer().await;
    let replica = app.start_gateway_replica().await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    until_remembered(&app.base_url, &ops_url, &key).await;
    until_remembered(&replica.url, &replica.ops_url, &key).await;
    let read_before = lookups(&replica.ops_url).await;
    for _ in 0..5 {
        assert_eq!(list_status(&replica.url, &key).await, 200);
    }
    assert_eq!(lookups(&replica.ops_url).await, read_before, "no reads");

    let key_id: String = {
        let mut db = PgConnection::connect(app.database.url()).await.unwrap();
        sqlx::query_scalar("SELECT id FROM gateway.api_keys WHERE key_hash = sha256($1)")
            .bind(key.as_bytes())
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    app.revoke_key(&key_id).await;
    // The replica that revoked forgets at once; the other hears it.
    let refused = app
        .api(reqwest::Method::GET, "/projects", &key)
        .send()
        .await
        .unwrap();
    expect_error(refused, 401, "unauthorized").await;
    until_refused(&replica.url, &key).await;
    assert!(lookups(&replica.ops_url).await > read_before, "read again");
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_operators_sql_change_is_heard_also_after_the_subscription_was_cut() {
    let app = TestApp::spawn_with(remembering()).await;
    let org = app.create_org("Operated").await;
    let first = app.create_key(&org, &["jobs:read"]).await;
    let second = app.create_key(&org, &["jobs:read"]).await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    until_remembered(&app.base_url, &ops_url, &first).await;
    let mut db = PgConnection::connect(app.database.url()).await.unwrap();

    // Cut the subscription's connection, then revoke by hand: a change nobody may have
    // heard must still never be served from memory.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(KEY_CHANGES_APPLICATION)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(cut, [true], "one subscription, cut");
    sqlx::query("UPDATE gateway.api_keys SET revoked_at = now() WHERE key_hash = sha256($1)")
        .bind(first.as_bytes())
        .execute(&mut db)
        .await
        .unwrap();
    until_refused(&app.base_url, &first).await;

    // The gateway subscribed again: a later change is heard too.
    until_remembered(&app.base_url, &ops_url, &second).await;
    sqlx::query(
        "UPDATE gateway.api_keys SET expires_at = now() - interval '1 second' \
         WHERE key_hash = sha256($1)",
    )
    .bind(second.as_bytes())
    .execute(&mut db)
    .await
    .unwrap();
    until_refused(&app.base_url, &second).await;
    app.stop().await;
}

#[tokio::test]
async fn with_the_cache_off_every_request_reads_its_key() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_API_KEY_CACHE_TTL", "0s")).await;
    let (_org, key) = app.create_customer().await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    let before = lookups(&ops_url).await;
    for _ in 0..3 {
        assert_eq!(list_status(&app.base_url, &key).await, 200);
    }
    assert_eq!(lookups(&ops_url).await, before + 3.0);
    app.stop().await;
}
