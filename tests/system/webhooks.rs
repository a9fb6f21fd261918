//! SPEC §5 end to end: retries with backoff, per-job order, outcome classes, restarts,
//! manual redelivery, and an independent signature verifier.

use plangrep_test_support::receiver::{Captured, Receiver, Reply};
use serde_json::Value;

use crate::helpers::{Options, PATIENCE, TestApp, expect_error, expect_status};

fn body(captured: &Captured) -> Value {
    serde_json::from_slice(&captured.body).expect("JSON webhook body")
}

fn sequence(captured: &Captured) -> u64 {
    body(captured)["data"]["sequence"]
        .as_u64()
        .expect("sequence")
}

fn millis_between(attempts: &[Value], a: usize, b: usize) -> i64 {
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(attempts[i]["startedAt"].as_str().unwrap()).unwrap()
    };
    (at(b) - at(a)).num_milliseconds()
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_after_retries_spaced_by_the_backoff_schedule() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    let attempts: Vec<Captured> = vec![
        receiver.next(PATIENCE).await,
        receiver.next(PATIENCE).await,
        receiver.next(PATIENCE).await,
    ];
    let ids: Vec<String> = attempts.iter().map(|c| c.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "retries keep the webhook-id: {ids:?}"
    );
    assert!(attempts.iter().all(|c| sequence(c) == 1));
    assert_eq!(
        sequence(&receiver.next(PATIENCE).await),
        2,
        "event 2 follows once 1 landed"
    );

    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 succeeded", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let log = delivery["attempts"].as_array().unwrap();
    let codes: Vec<&Value> = log.iter().map(|a| &a["statusCode"]).collect();
    assert_eq!(
        codes,
        [&Value::from(500), &Value::from(500), &Value::from(204)]
    );
    let triggers: Vec<&str> = log.iter().map(|a| a["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["initial", "retry", "retry"]);
    // Test schedule: 100 ms, then ×2 with full jitter above a 100 ms floor: never sooner
    // than the initial interval after the previous attempt.
    assert!(
        millis_between(log, 0, 1) >= 100,
        "first retry came early: {log:?}"
    );
    assert!(
        millis_between(log, 1, 2) >= 100,
        "second retry came early: {log:?}"
    );
    assert_eq!(delivery["nextAttemptAt"], Value::Null);
    app.stop().await;
}

/// A retry due before the dispatcher's next poll wakes the claim loop itself: with the
/// poll an hour away and nothing else happening, a receiver that failed once still gets
/// the event again when its retry comes due.
#[tokio::test]
async fn a_retry_due_before_the_next_poll_is_sent_when_due() {
    let options = Options::default().with("PLANGREP_DISPATCHER_POLL_INTERVAL", "1h");
    let app = TestApp::spawn_with(options).await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let (_org, key) = app.create_customer().await;
    app.create_job_with_webhook(&key, &receiver.url()).await;

    let failed = receiver.next(PATIENCE).await;
    let retried = receiver.next(PATIENCE).await;
    assert_eq!(sequence(&failed), 1);
    assert_eq!(sequence(&retried), 1, "the retry comes before event 2");
    assert_eq!(retried.header("webhook-id"), failed.header("webhook-id"));
    assert_eq!(sequence(&receiver.next(PATIENCE).await), 2);
    app.stop().await;
}

#[tokio::test]
async fn event_three_is_held_until_event_two_lands() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Status(204), Reply::Status(500), Reply::Status(503)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    plangrep_test_support::eventually("the job to await uploads", PATIENCE, || async {
        let job = app.get_json(&format!("/jobs/{job_id}"), &key).await;
        (job["job"]["status"] == "awaiting_uploads").then_some(())
    })
    .await;
    let cancelled = app
        .api(
            reqwest::Method::POST,
            &format!("/jobs/{job_id}/cancel"),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(cancelled, 202).await["job"]["status"],
        "cancelled"
    );

    let mut sequences = Vec::new();
    for _ in 0..5 {
        sequences.push(sequence(&receiver.next(PATIENCE).await));
    }
    assert_eq!(sequences, [1, 2, 2, 2, 3]);
    let last = app
        .wait_for_delivery(&key, &job_id, 3, "event 3 delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    assert_eq!(last["jobStatus"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn a_410_stops_every_delivery_of_the_job() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Status(410)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    let first = receiver.next(PATIENCE).await;
    assert_eq!(sequence(&first), 1);
    let second = app
        .wait_for_delivery(&key, &job_id, 2, "event 2 stopped", |d| {
            d["state"] == "stopped"
        })
        .await;
    assert_eq!(
        second["attempts"].as_array().unwrap().len(),
        0,
        "never sent"
    );
    let deliveries = app.deliveries(&key, &job_id).await;
    assert_eq!(deliveries[0]["state"], "stopped");
    assert_eq!(deliveries[0]["attempts"][0]["statusCode"], 410);

    // Nothing more of the stopped job reaches the receiver: a later job's events to the
    // same receiver arrive, and nothing of the first job arrives before them.
    let (later_job, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    for expected in [1, 2] {
        let next = receiver.next(PATIENCE).await;
        assert_eq!(
            body(&next)["data"]["job"]["id"],
            later_job.as_str(),
            "a delivery of the stopped job {job_id} arrived: {}",
            String::from_utf8_lossy(&next.body)
        );
        assert_eq!(sequence(&next), expected);
    }
    app.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_delays_the_next_attempt() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::RetryAfter(429, "1".into())]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    receiver.next(PATIENCE).await;
    receiver.next(PATIENCE).await;
    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 succeeded", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let log = delivery["attempts"].as_array().unwrap();
    assert_eq!(log[0]["statusCode"], 429);
    assert!(
        millis_between(log, 0, 1) >= 1000,
        "Retry-After ignored: {log:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn redirects_are_recorded_as_failures_and_never_followed() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let elsewhere = receiver.url().replace("/webhooks", "/elsewhere");
    receiver.script([Reply::Redirect(307, elsewhere)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    let first = receiver.next(PATIENCE).await;
    let second = receiver.next(PATIENCE).await;
    assert_eq!(first.path, "/webhooks");
    assert_eq!(second.path, "/webhooks", "the redirect was followed");
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 succeeded", |d| {
            d["state"] == "succeeded"
        })
        .await;
    assert_eq!(delivery["attempts"][0]["statusCode"], 307);
    assert_eq!(delivery["attempts"][0]["error"], "redirect_not_followed");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_is_retried() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_TIMEOUT", "300ms")).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 succeeded", |d| {
            d["state"] == "succeeded"
        })
        .await;
    assert_eq!(delivery["attempts"][0]["error"], "timeout");
    assert_eq!(delivery["attempts"][0]["statusCode"], Value::Null);
    assert_eq!(delivery["attempts"][1]["statusCode"], 204);
    drop(receiver);
    app.stop().await;
}

#[tokio::test]
async fn a_huge_response_body_is_read_only_up_to_the_cap() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::LargeBody(10 * 1024 * 1024)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    receiver.next(PATIENCE).await;
    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 succeeded", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let snippet = delivery["attempts"][0]["responseSnippet"].as_str().unwrap();
    assert_eq!(snippet.len(), 4 * 1024, "the kept snippet is capped");
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_that_gave_up_is_revived_by_redeliver_with_the_same_webhook_id() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_MAX_ATTEMPTS", "2")).await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    let failed_id = receiver.next(PATIENCE).await.header("webhook-id");
    receiver.next(PATIENCE).await;
    let dead = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 failed", |d| {
            d["state"] == "failed"
        })
        .await;
    // Giving up on event 1 releases event 2.
    assert_eq!(sequence(&receiver.next(PATIENCE).await), 2);

    let delivery_id = dead["id"].as_str().unwrap();
    let (_other_org, other_key) = app.create_customer().await;
    let foreign = app.redeliver(&other_key, delivery_id).await;
    expect_error(foreign, 404, "not_found").await;

    let redeliver = app.redeliver(&key, delivery_id).await;
    expect_status(redeliver, 202).await;
    let revived = receiver.next(PATIENCE).await;
    assert_eq!(revived.header("webhook-id"), failed_id);
    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 redelivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    assert_eq!(delivery["attempts"][2]["trigger"], "manual");
    app.stop().await;
}

#[tokio::test]
async fn deliveries_scheduled_before_a_graceful_restart_complete_after_it() {
    restart_scenario(false).await;
}

#[tokio::test]
async fn deliveries_in_flight_during_a_crash_complete_after_a_restart() {
    restart_scenario(true).await;
}

/// The receiver hangs on the first attempt (in flight when the dispatcher stops) and fails
/// the second; a fresh dispatcher must still deliver both events, with the same ids.
async fn restart_scenario(crash: bool) {
    let mut app =
        TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_TIMEOUT", "1s")).await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    let in_flight = receiver.next(PATIENCE).await;
    app.restart_dispatcher(crash).await;

    let mut seen = vec![in_flight];
    loop {
        let next = receiver.next(PATIENCE).await;
        let done = sequence(&next) == 2;
        seen.push(next);
        if done {
            break;
        }
    }
    let first_id = seen[0].header("webhook-id");
    assert!(
        seen.iter()
            .filter(|c| sequence(c) == 1)
            .all(|c| c.header("webhook-id") == first_id)
    );
    for sequence_number in [1, 2] {
        app.wait_for_delivery(&key, &job_id, sequence_number, "delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    }
    drop(receiver);
    app.stop().await;
}

#[tokio::test]
async fn events_published_before_the_dispatcher_ever_started_are_delivered() {
    let mut app = TestApp::spawn_with(Options {
        defer_dispatcher: true,
        ..Options::default()
    })
    .await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    plangrep_test_support::eventually("the job to await uploads", PATIENCE, || async {
        let job = app.get_json(&format!("/jobs/{job_id}"), &key).await;
        (job["job"]["status"] == "awaiting_uploads").then_some(())
    })
    .await;

    app.start_dispatcher().await;
    assert_eq!(sequence(&receiver.next(PATIENCE).await), 1);
    assert_eq!(sequence(&receiver.next(PATIENCE).await), 2);
    app.stop().await;
}

/// Runs the Python library's `Webhook(secret).verify(body, headers)`; returns the payload's
/// job status on success, `None` when verification fails.
fn verify_with_python(
    python: &std::path::Path,
    secret: &str,
    delivery: &Captured,
    body: &[u8],
) -> Option<String> {
    use std::io::Write;
    let script = r#"
import json, sys
from standardwebhooks import Webhook
secret, headers, body = sys.argv[1], json.loads(sys.argv[2]), sys.stdin.buffer.read()
payload = Webhook(secret).verify(body, headers)
print(payload["data"]["job"]["status"])
"#;
    let headers = serde_json::json!({
        "webhook-id": delivery.header("webhook-id"),
        "webhook-timestamp": delivery.header("webhook-timestamp"),
        "webhook-signature": delivery.header("webhook-signature"),
    });
    let mut child = std::process::Command::new(python)
        .args(["-c", script, secret, &headers.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[tokio::test]
async fn the_python_standardwebhooks_library_verifies_a_delivery() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (_job_id, secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    let delivery = receiver.next(PATIENCE).await;
    let python = crate::helpers::python_tools();

    assert_eq!(
        verify_with_python(&python, &secret, &delivery, &delivery.body).as_deref(),
        Some("provisioning")
    );
    // The same library rejects a tampered body, so the check above can fail.
    let mut tampered = delivery.body.to_vec();
    tampered.push(b' ');
    assert_eq!(
        verify_with_python(&python, &secret, &delivery, &tampered),
        None
    );
    app.stop().await;
}

#[tokio::test]
async fn the_dispatcher_exports_attempt_latency_backlog_and_failure_metrics() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    app.wait_for_delivery(&key, &job_id, 2, "event 2 delivered", |d| {
        d["state"] == "succeeded"
    })
    .await;

    let http_addr = app.dispatcher.as_ref().unwrap().http_addr;
    // The table-derived gauges are refreshed by housekeeping, not counted per scrape.
    let metrics = plangrep_test_support::eventually("the backlog gauge at 0", PATIENCE, || async {
        let text = app
            .http
            .get(format!("http://{http_addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .any(|l| l == "plangrep_webhook_backlog 0")
            .then_some(text)
    })
    .await;
    for line in [
        "plangrep_webhook_attempts_total{outcome=\"pending\"} 1",
        "plangrep_webhook_attempts_total{outcome=\"succeeded\"} 2",
        "plangrep_webhook_delivery_latency_seconds_count 2",
        "plangrep_webhook_backlog 0",
        "plangrep_webhook_failed_deliveries 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
    drop(receiver);
    app.stop().await;
}

#[tokio::test]
async fn two_dispatcher_replicas_share_the_work_and_deliver_every_event_exactly_once() {
    let app = TestApp::spawn().await;
    let replica = app.start_replica().await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Replicas").await;
    let mut jobs = Vec::new();
    for _ in 0..10 {
        let created = expect_status(
            app.post_job(
                &key,
                &project,
                serde_json::json!({ "webhookUrl": receiver.url() }),
            )
            .await,
            202,
        )
        .await;
        jobs.push(created["job"]["id"].as_str().unwrap().to_owned());
    }

    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        ids.insert(receiver.next(PATIENCE).await.header("webhook-id"));
    }
    assert_eq!(ids.len(), 20, "a webhook-id arrived twice");
    for job in &jobs {
        for sequence_number in [1, 2] {
            let delivery = app
                .wait_for_delivery(&key, job, sequence_number, "delivered", |d| {
                    d["state"] == "succeeded"
                })
                .await;
            assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
        }
    }
    // Every attempt row names the replica that made it: both must have done some.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let per_replica: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT worker, count(*) FROM dispatcher.attempts GROUP BY worker ORDER BY worker",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        per_replica.len(),
        2,
        "one replica did all the work: {per_replica:?}"
    );
    assert!(
        per_replica
            .iter()
            .all(|(worker, count)| worker.is_some() && *count >= 1)
    );
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_revived_delivery_gets_a_fresh_retry_budget() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_MAX_ATTEMPTS", "2")).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    let dead = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 failed", |d| {
            d["state"] == "failed"
        })
        .await;
    app.wait_for_delivery(&key, &job_id, 2, "event 2 delivered", |d| {
        d["state"] == "succeeded"
    })
    .await;

    // The revival fails once more, then lands: a new window with its own two attempts.
    receiver.script([Reply::Status(500)]);
    let delivery_id = dead["id"].as_str().unwrap();
    let redeliver = app.redeliver(&key, delivery_id).await;
    expect_status(redeliver, 202).await;
    let revived = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 revived", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let triggers: Vec<&str> = revived["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["initial", "retry", "manual", "retry"]);
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_target_is_broken_does_not_hold_up_other_jobs() {
    // One worker: the broken delivery is the oldest, so it is claimed first every time.
    let mut app = TestApp::spawn_with(Options {
        defer_dispatcher: true,
        ..Options::default().with("PLANGREP_DISPATCHER_WORKERS", "1")
    })
    .await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (broken_job, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    let (healthy_job, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    // The broken job's sealed secret no longer opens (e.g. a wrong PLANGREP_SECRETS_KEY).
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    sqlx::query("UPDATE orchestrator.jobs SET webhook_secret_sealed = '\\x00112233445566778899aabbccddeeff' WHERE id = $1")
        .bind(&broken_job)
        .execute(&mut db)
        .await
        .unwrap();

    app.start_dispatcher().await;
    for _ in 0..2 {
        let delivered = body(&receiver.next(PATIENCE).await);
        assert_eq!(delivered["data"]["job"]["id"], healthy_job.as_str());
    }
    let postponed = app
        .wait_for_delivery(&key, &broken_job, 1, "the broken delivery postponed", |d| {
            d["nextAttemptAt"].is_string()
                && d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(postponed["state"], "pending");
    let attempt = &postponed["attempts"][0];
    assert_eq!(attempt["error"], "webhook_target_unusable");
    assert_eq!(
        attempt["statusCode"],
        Value::Null,
        "nothing was sent unsigned"
    );
    app.stop().await;
}

#[tokio::test]
async fn redelivering_while_an_attempt_is_in_flight_is_a_fast_409() {
    let app = TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_TIMEOUT", "5s")).await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    receiver.next(PATIENCE).await;
    let in_flight = app.deliveries(&key, &job_id).await;
    let delivery_id = in_flight[0]["id"].as_str().unwrap();

    let response = app.redeliver(&key, delivery_id).await;
    expect_error(response, 409, "delivery_in_progress").await;
    drop(receiver);
    app.stop().await;
}

#[tokio::test]
async fn status_changes_made_while_the_broker_is_away_are_delivered_when_it_returns() {
    let app = TestApp::spawn_with(Options {
        proxy_orchestrator_broker: true,
        ..Options::default()
    })
    .await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Outage").await;

    let broker = app.orchestrator_broker.as_ref().unwrap();
    broker.cut();
    // The API does not need the broker: the change and its event commit together.
    let created = expect_status(
        app.post_job(
            &key,
            &project,
            serde_json::json!({ "webhookUrl": receiver.url() }),
        )
        .await,
        202,
    )
    .await;
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NULL \
           AND routing_key = 'job.status_changed.provisioning'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(waiting, 1, "the event waits in the outbox");

    broker.restore();
    assert_eq!(sequence(&receiver.next(PATIENCE).await), 1);
    let second = receiver.next(PATIENCE).await;
    assert_eq!(sequence(&second), 2);
    assert_eq!(body(&second)["data"]["job"]["id"], job_id.as_str());
    app.stop().await;
}
