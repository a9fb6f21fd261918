//! One trace from the customer's request to the webhooks it caused: the W3C
//! `traceparent` sent to the gateway continues through gRPC, the outbox, RabbitMQ and the
//! dispatcher's delivery rows.

use plangrep_test_support::receiver::Receiver;
use serde_json::json;

use crate::helpers::{PATIENCE, TestApp, expect_status};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

#[tokio::test]
async fn a_requests_trace_reaches_the_outbox_and_the_deliveries_it_caused() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Traced").await;

    let response = app
        .api(
            reqwest::Method::POST,
            &format!("/projects/{project}/jobs"),
            &key,
        )
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({ "webhookUrl": receiver.url() }))
        .send()
        .await
        .unwrap();
    let job = expect_status(response, 202).await["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver.next(PATIENCE).await;
    receiver.next(PATIENCE).await;

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let created: Vec<String> = sqlx::query_scalar(
        "SELECT traceparent FROM orchestrator.outbox WHERE routing_key = 'job.status_changed.provisioning'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(
        trace_id_of(&created[0]),
        TRACE_ID,
        "the create hop continues the trace"
    );
    // The pipeline's status change happened while handling that event: same trace.
    let next: String = sqlx::query_scalar(
        "SELECT traceparent FROM orchestrator.outbox WHERE routing_key = 'job.status_changed.awaiting_uploads'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(trace_id_of(&next), TRACE_ID);
    let deliveries: Vec<String> = sqlx::query_scalar(
        "SELECT traceparent FROM dispatcher.deliveries WHERE job_id = $1 ORDER BY sequence",
    )
    .bind(&job)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries.iter().all(|t| trace_id_of(t) == TRACE_ID),
        "{deliveries:?}"
    );
    app.stop().await;
}
