//! The thinnest real path: org → key → project → job with a webhook, and the signed
//! `provisioning` and `awaiting_uploads` deliveries arriving in order.

use plangrep_core::webhook::{self, WebhookSecret};
use plangrep_test_support::receiver::{Captured, Receiver};
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, expect_status};

/// Verifies a captured delivery with the core verifier and returns its JSON body.
fn verified_body(delivery: &Captured, secret: &WebhookSecret) -> Value {
    let id = delivery.header("webhook-id");
    let timestamp: i64 = delivery
        .header("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    webhook::verify(
        secret,
        &id,
        timestamp,
        &delivery.body,
        &delivery.header("webhook-signature"),
        now,
        webhook::DEFAULT_TOLERANCE_SECONDS,
    )
    .expect("the delivery carries a valid Standard Webhooks signature");
    assert!(id.starts_with("evt_"));
    assert_eq!(delivery.header("content-type"), "application/json");
    assert!(
        delivery
            .header("user-agent")
            .starts_with("Plangrep-Webhooks/")
    );
    serde_json::from_slice(&delivery.body).expect("JSON body")
}

#[tokio::test]
async fn a_new_job_sends_signed_provisioning_then_awaiting_uploads_webhooks() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Tower B").await;

    let response = app
        .post_job(
            &key,
            &project,
            json!({ "externalId": "PO-1138", "webhookUrl": receiver.url() }),
        )
        .await;
    let created = expect_status(response, 202).await;
    let job_id = created["job"]["id"].as_str().expect("job id").to_owned();
    assert!(job_id.starts_with("job_"));
    assert_eq!(created["job"]["status"], "provisioning");
    assert_eq!(created["job"]["externalId"], "PO-1138");
    assert_eq!(created["job"]["projectId"], project.as_str());
    let secret_text = created["webhookSigningSecret"]
        .as_str()
        .expect("a secret is returned with a webhookUrl");
    let secret = WebhookSecret::parse(secret_text).expect("whsec_ format");

    let first = receiver.next(PATIENCE).await;
    let second = receiver.next(PATIENCE).await;
    let first_body = verified_body(&first, &secret);
    let second_body = verified_body(&second, &secret);

    assert_eq!(first_body["type"], "job.status_changed");
    assert_eq!(first_body["data"]["job"]["id"], job_id.as_str());
    assert_eq!(first_body["data"]["job"]["status"], "provisioning");
    assert_eq!(first_body["data"]["previousStatus"], Value::Null);
    assert_eq!(first_body["data"]["sequence"], 1);
    assert_eq!(second_body["data"]["job"]["status"], "awaiting_uploads");
    assert_eq!(second_body["data"]["previousStatus"], "provisioning");
    assert_eq!(second_body["data"]["sequence"], 2);
    assert_ne!(first.header("webhook-id"), second.header("webhook-id"));

    let job = app.get_json(&format!("/jobs/{job_id}"), &key).await;
    assert_eq!(job["job"]["status"], "awaiting_uploads");
    assert!(
        job.get("webhookSigningSecret").is_none(),
        "the secret is never readable again"
    );
    assert_eq!(job["job"]["webhookUrl"], receiver.url().as_str());

    app.stop().await;
}

#[tokio::test]
async fn a_job_without_a_webhook_gets_no_secret_and_still_progresses() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "No hooks").await;

    let response = app
        .api(
            reqwest::Method::POST,
            &format!("/projects/{project}/jobs"),
            &key,
        )
        .send()
        .await
        .unwrap();
    let created = expect_status(response, 202).await;
    assert!(created.get("webhookSigningSecret").is_none());
    assert_eq!(created["job"]["webhookUrl"], Value::Null);
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();

    plangrep_test_support::eventually("the job to await uploads", PATIENCE, || async {
        let job = app.get_json(&format!("/jobs/{job_id}"), &key).await;
        (job["job"]["status"] == "awaiting_uploads").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_database_never_holds_a_plaintext_webhook_secret() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Secrets").await;
    let created = expect_status(
        app.post_job(&key, &project, json!({ "webhookUrl": receiver.url() }))
            .await,
        202,
    )
    .await;
    let secret = created["webhookSigningSecret"].as_str().unwrap().to_owned();
    let key_part = secret.trim_start_matches("whsec_").to_owned();

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM orchestrator.jobs) t",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(!dump.is_empty());
    assert!(
        !dump.contains(&key_part),
        "the secret is stored in the clear"
    );
    let sealed_hex: String =
        sqlx::query_scalar("SELECT encode(webhook_secret_sealed, 'escape') FROM orchestrator.jobs")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(!sealed_hex.contains(&key_part));
    app.stop().await;
}
