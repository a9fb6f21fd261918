//! The pipeline as a shape: every stage is idempotent under redelivery, and a poison
//! message is dead-lettered while its stage keeps serving the others. Stages run with a
//! concurrency of one here, so a later job's events are handled strictly after the
//! messages a test injected before them: when that job is done, so are they.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use plangrep_messaging::topology::PREFLIGHT_STAGE;
use plangrep_messaging::{OutgoingMessage, Publisher, Topology};
use plangrep_test_support::pdf;
use sqlx::Connection;

use crate::helpers::{Options, TestApp, UploadFile};

async fn completed_job(app: &TestApp, key: &str) -> String {
    let job = app.create_job(key).await;
    app.wait_until_awaiting_uploads(key, &job).await;
    app.submit(
        key,
        &job,
        vec![UploadFile::pdf("a.pdf", pdf::drawing_set_and_spec_book())],
    )
    .await;
    app.wait_for_job(key, &job, &["completed"]).await;
    job
}

/// Publishes `messages` on the app's events exchange, as the relay would.
async fn publish(app: &TestApp, messages: &[OutgoingMessage]) {
    let connection = plangrep_messaging::connect(&plangrep_test_support::amqp_url())
        .await
        .unwrap();
    let topology = Topology::new(app.settings.raw("PLANGREP_AMQP_PREFIX").unwrap());
    let publisher = Publisher::open(&connection, &topology, app.events_key())
        .await
        .unwrap();
    for message in messages {
        publisher.publish(message).await.unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
}

/// The job's events exactly as the outbox published them.
async fn outbox_copies(app: &TestApp, job_id: &str) -> Vec<OutgoingMessage> {
    let mut db = sqlx::PgConnection::connect(app.database.url())
        .await
        .unwrap();
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT o.event_id, o.routing_key, o.payload FROM orchestrator.outbox o \
         JOIN orchestrator.job_events e ON e.id = o.event_id WHERE e.job_id = $1 ORDER BY o.id",
    )
    .bind(job_id)
    .fetch_all(&mut db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(message_id, routing_key, payload)| OutgoingMessage {
            message_id,
            routing_key,
            payload,
            traceparent: None,
            mandatory: true,
        })
        .collect()
}

#[tokio::test]
async fn every_event_delivered_twice_has_one_effect_and_a_poison_message_is_dead_lettered() {
    let app = TestApp::spawn_with(
        Options::default()
            .with("PLANGREP_PREFLIGHT_CONCURRENCY", "1")
            .with("PLANGREP_PROCESS_CONCURRENCY", "1")
            .with("PLANGREP_PROVISION_CONCURRENCY", "1"),
    )
    .await;
    let (org, key) = app.create_customer().await;
    app.grant_credits(&org, 1_000).await;
    let first = completed_job(&app, &key).await;
    let before = app.get_json(&format!("/jobs/{first}"), &key).await;
    let history_before = app.get_json(&format!("/jobs/{first}/events"), &key).await;
    let balance_before = app.balance(&org).await;

    // Every event of the first job again, plus a message no stage can decode.
    let mut injected = outbox_copies(&app, &first).await;
    assert_eq!(injected.len(), 6);
    injected.push(OutgoingMessage {
        message_id: "evt_poison".to_owned(),
        routing_key: "job.status_changed.preflighting".to_owned(),
        payload: b"\xff\xff not protobuf".to_vec(),
        traceparent: None,
        mandatory: true,
    });
    publish(&app, &injected).await;

    // A second job runs behind the injected messages through every stage.
    let second = completed_job(&app, &key).await;

    let after = app.get_json(&format!("/jobs/{first}"), &key).await;
    assert_eq!(after, before, "the duplicates changed nothing");
    let history_after = app.get_json(&format!("/jobs/{first}/events"), &key).await;
    assert_eq!(history_after, history_before);
    let second_job = app.get_json(&format!("/jobs/{second}"), &key).await;
    assert_eq!(
        app.balance(&org).await,
        balance_before
            - second_job["job"]["billing"]["creditsDebited"]
                .as_i64()
                .unwrap()
    );

    // The poison message waits in the preflight stage's dead-letter queue.
    let connection = plangrep_messaging::connect(&plangrep_test_support::amqp_url())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(app.settings.raw("PLANGREP_AMQP_PREFIX").unwrap());
    let dead = channel
        .queue_declare(
            topology.dead_queue(&PREFLIGHT_STAGE).into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(dead.message_count(), 1);
    let _ = connection.close(200, "done".into()).await;
}

/// Waits until the orchestrator's `/readyz` answers `expected`.
async fn orchestrator_ready_is(app: &TestApp, expected: u16) {
    let readyz = format!("http://{}/readyz", app.orchestrator_ops_addr);
    plangrep_test_support::eventually(
        &format!("/readyz to answer {expected}"),
        crate::helpers::PATIENCE,
        || async {
            let status = app.http.get(&readyz).send().await.ok()?.status().as_u16();
            (status == expected).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn the_orchestrator_is_not_ready_while_its_stage_consumers_have_lost_the_broker() {
    let app = TestApp::spawn_with(Options {
        proxy_orchestrator_broker: true,
        ..Options::default()
    })
    .await;
    orchestrator_ready_is(&app, 200).await;
    let broker = app.orchestrator_broker.as_ref().unwrap();
    broker.cut();
    orchestrator_ready_is(&app, 503).await;
    broker.restore();
    orchestrator_ready_is(&app, 200).await;
    // And the stages serve again: a project gets provisioned.
    let (_org, key) = app.create_customer().await;
    app.create_ready_project(&key, "After the outage").await;
    app.stop().await;
}

#[tokio::test]
async fn the_orchestrator_stops_while_its_broker_has_stopped_answering() {
    let app = TestApp::spawn_with(Options {
        proxy_orchestrator_broker: true,
        ..Options::default()
    })
    .await;
    // Every stage consumes and the relay leads, each on a connection through the proxy.
    orchestrator_ready_is(&app, 200).await;
    app.orchestrator_broker.as_ref().unwrap().stall();
    // Closing a channel or a connection the broker never answers for is abandoned after
    // a bound (plangrep_messaging::EXCHANGE_TIMEOUT), not awaited for good: the stop returns.
    app.stop().await;
}
