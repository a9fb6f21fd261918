//! Webhook delivery when things go wrong (issue 9): a job whose target is broken or
//! missing, a dispatcher that crashes holding a lease, and one tenant's tarpit receiver
//! that must not starve the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use plangrep_test_support::receiver::{Captured, Receiver, Reply};
use serde_json::Value;

use crate::helpers::{Options, PATIENCE, TestApp, expect_status};

fn sequence(captured: &Captured) -> u64 {
    let body: Value = serde_json::from_slice(&captured.body).expect("JSON webhook body");
    body["data"]["sequence"].as_u64().expect("sequence")
}

async fn orchestrator_db(app: &TestApp) -> sqlx::PgConnection {
    <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .expect("test database reachable")
}

/// Errors of a delivery's attempts, in order.
fn attempt_errors(delivery: &Value) -> Vec<String> {
    delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            assert_eq!(a["statusCode"], Value::Null, "nothing may have been sent");
            a["error"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_broken_target_ends_failed_after_the_retry_window_and_so_do_the_jobs_later_events() {
    let mut app = TestApp::spawn_with(Options {
        defer_dispatcher: true,
        ..Options::default().with("PLANGREP_WEBHOOK_MAX_ATTEMPTS", "3")
    })
    .await;
    let receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (job_id, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    app.wait_until_awaiting_uploads(&key, &job_id).await;
    // The job's sealed secret no longer opens (e.g. a wrong PLANGREP_SECRETS_KEY).
    sqlx::query(
        "UPDATE orchestrator.jobs \
         SET webhook_secret_sealed = '\\x00112233445566778899aabbccddeeff' WHERE id = $1",
    )
    .bind(&job_id)
    .execute(&mut orchestrator_db(&app).await)
    .await
    .unwrap();

    app.start_dispatcher().await;
    for sequence_number in [1, 2] {
        let failed = app
            .wait_for_delivery(&key, &job_id, sequence_number, "the delivery failed", |d| {
                d["state"] == "failed"
            })
            .await;
        assert_eq!(
            attempt_errors(&failed),
            ["webhook_target_unusable"; 3],
            "every try counts against the window and shows in the log"
        );
        assert_eq!(failed["nextAttemptAt"], Value::Null);
    }
    app.stop().await;
}

/// Takes the job's webhook target away in the orchestrator (it then answers NOT_FOUND);
/// returns what to put back.
async fn remove_target(app: &TestApp, job_id: &str) -> (String, Vec<u8>) {
    sqlx::query_as(
        "UPDATE orchestrator.jobs j SET webhook_url = NULL, webhook_secret_sealed = NULL \
         FROM orchestrator.jobs old WHERE j.id = $1 AND old.id = j.id \
         RETURNING old.webhook_url, old.webhook_secret_sealed",
    )
    .bind(job_id)
    .fetch_one(&mut orchestrator_db(app).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_not_found_target_is_looked_at_again_and_delivered_once_it_is_back() {
    let mut app = TestApp::spawn_with(Options {
        defer_dispatcher: true,
        ..Options::default().with("PLANGREP_WEBHOOK_NOT_FOUND_ATTEMPTS", "20")
    })
    .await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (job_id, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    app.wait_until_awaiting_uploads(&key, &job_id).await;
    let (url, sealed) = remove_target(&app, &job_id).await;

    app.start_dispatcher().await;
    app.wait_for_delivery(&key, &job_id, 1, "a NOT_FOUND answer", |d| {
        d["state"] == "pending" && d["attempts"][0]["error"] == "webhook_target_not_found"
    })
    .await;
    sqlx::query(
        "UPDATE orchestrator.jobs SET webhook_url = $2, webhook_secret_sealed = $3 WHERE id = $1",
    )
    .bind(&job_id)
    .bind(url)
    .bind(sealed)
    .execute(&mut orchestrator_db(&app).await)
    .await
    .unwrap();

    assert_eq!(sequence(&receiver.next(PATIENCE).await), 1);
    assert_eq!(sequence(&receiver.next(PATIENCE).await), 2);
    let delivered = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let attempts = delivered["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["error"], "webhook_target_not_found");
    assert_eq!(attempts.last().unwrap()["statusCode"], 204);
    app.stop().await;
}

#[tokio::test]
async fn a_target_that_stays_not_found_stops_the_webhook_after_the_confirming_attempts() {
    let mut app = TestApp::spawn_with(Options {
        defer_dispatcher: true,
        ..Options::default().with("PLANGREP_WEBHOOK_NOT_FOUND_ATTEMPTS", "2")
    })
    .await;
    let receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (job_id, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    app.wait_until_awaiting_uploads(&key, &job_id).await;
    remove_target(&app, &job_id).await;

    app.start_dispatcher().await;
    let stopped = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 stopped", |d| {
            d["state"] == "stopped"
        })
        .await;
    assert_eq!(
        attempt_errors(&stopped),
        ["webhook_target_not_found"; 2],
        "stopped only after a second look"
    );
    let later = app
        .wait_for_delivery(&key, &job_id, 2, "event 2 stopped", |d| {
            d["state"] == "stopped"
        })
        .await;
    assert_eq!(later["attempts"], serde_json::json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_leased_by_a_crashed_dispatcher_is_delivered_by_the_next_one_with_the_same_id() {
    let mut app =
        TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_TIMEOUT", "1s")).await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    let in_flight = receiver.next(PATIENCE).await;
    let mut db = orchestrator_db(&app).await;
    let (crashed_owner,): (Option<String>,) = sqlx::query_as(
        "SELECT lease_owner FROM dispatcher.deliveries WHERE job_id = $1 AND sequence = 1",
    )
    .bind(&job_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let crashed_owner = crashed_owner.expect("the attempt in flight holds a lease");

    // Crash mid-attempt: nothing is recorded, the lease stays until it expires.
    app.restart_dispatcher(true).await;
    let retried = receiver.next(PATIENCE).await;
    assert_eq!(sequence(&retried), 1);
    assert_eq!(retried.header("webhook-id"), in_flight.header("webhook-id"));

    let delivered = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    assert_eq!(
        delivered["attempts"].as_array().unwrap().len(),
        1,
        "the crashed attempt left no record"
    );
    let (worker,): (Option<String>,) = sqlx::query_as(
        "SELECT a.worker FROM dispatcher.attempts a \
         JOIN dispatcher.deliveries d ON d.id = a.delivery_id \
         WHERE d.job_id = $1 AND d.sequence = 1",
    )
    .bind(&job_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_ne!(worker.as_deref(), Some(crashed_owner.as_str()));
    drop(receiver);
    app.stop().await;
}

#[tokio::test]
async fn one_tenants_tarpit_does_not_starve_another_tenants_deliveries() {
    let app = TestApp::spawn_with(
        Options::default()
            .with("PLANGREP_WEBHOOK_TIMEOUT", "1s")
            .with("PLANGREP_DISPATCHER_WORKERS", "4")
            .with("PLANGREP_WEBHOOK_MAX_PER_HOST", "2"),
    )
    .await;
    // The tarpit answers nothing: every attempt to it lasts the whole attempt timeout.
    let mut tarpit = Receiver::start().await;
    tarpit.script(std::iter::repeat_n(Reply::Hang, 10_000));
    let mut fast = Receiver::start().await;
    let (slow_org, slow_key) = app.create_customer().await;
    let (_fast_org, fast_key) = app.create_customer().await;
    let slow_project = app.create_ready_project(&slow_key, "Tarpit").await;
    let fast_project = app.create_ready_project(&fast_key, "Fast").await;
    let tarpit_url = tarpit.url();
    let tarpit_job = || async {
        expect_status(
            app.post_job(
                &slow_key,
                &slow_project,
                serde_json::json!({ "webhookUrl": tarpit_url }),
            )
            .await,
            202,
        )
        .await;
    };
    // A backlog of tarpit deliveries that would take 4 workers ~15 s to get through once.
    for _ in 0..60 {
        tarpit_job().await;
    }
    tarpit.next(PATIENCE).await;

    // The tarpit tenant keeps sending while the other one's webhooks must flow.
    let done = AtomicBool::new(false);
    let flood = async {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        while !done.load(Ordering::Relaxed) {
            every.tick().await;
            tarpit_job().await;
        }
    };
    let fast_tenant = async {
        let mut jobs = Vec::new();
        for _ in 0..5 {
            let created = expect_status(
                app.post_job(
                    &fast_key,
                    &fast_project,
                    serde_json::json!({ "webhookUrl": fast.url() }),
                )
                .await,
                202,
            )
            .await;
            jobs.push(created["job"]["id"].as_str().unwrap().to_owned());
        }
        // Queued behind the tarpit's backlog these would need well over this bound.
        let arrived = tokio::time::timeout(Duration::from_secs(8), async {
            let mut ids = std::collections::HashSet::new();
            while ids.len() < 10 {
                ids.insert(fast.next(PATIENCE).await.header("webhook-id"));
            }
        })
        .await;
        done.store(true, Ordering::Relaxed);
        (jobs, arrived)
    };
    let ((jobs, arrived), ()) = tokio::join!(fast_tenant, flood);
    assert!(
        arrived.is_ok(),
        "the fast tenant's deliveries were queued behind the tarpit"
    );
    assert_eq!(jobs.len(), 5);
    let mut db = orchestrator_db(&app).await;
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dispatcher.deliveries \
         WHERE org_id = $1 AND state IN ('pending', 'waiting')",
    )
    .bind(&slow_org)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(open >= 60, "the tarpit's backlog had drained: {open} open");
    drop(tarpit);
    app.stop().await;
}
