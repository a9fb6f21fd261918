//! Dead letters are not a dead end (ADR 0013): a job event a consumer gave up on is
//! dead-lettered by the broker, counted by `GET /admin/v1/dead-letters` and by the
//! orchestrator's `plangrep_dead_letter_messages`, re-driven by
//! `POST /admin/v1/dead-letters/redrive` back to its work queue under its original
//! routing key and id, and then delivered to the customer like any other event.

use lapin::options::{BasicGetOptions, BasicRejectOptions};
use plangrep_messaging::Topology;
use plangrep_messaging::topology::DISPATCHER_EVENTS;
use plangrep_test_support::eventually;
use plangrep_test_support::receiver::Receiver;
use serde_json::{Value, json};

use crate::helpers::{Options, PATIENCE, TestApp, expect_error, expect_status};

const DISPATCHER_DEAD: &str = "plangrep.dispatcher.events.dead";

impl TestApp {
    /// `GET /admin/v1/dead-letters`: messages waiting in `queue`'s dead-letter queue.
    async fn dead_letters_in(&self, queue: &str) -> u64 {
        let body = expect_status(
            self.admin(reqwest::Method::GET, "/dead-letters")
                .send()
                .await
                .expect("gateway reachable"),
            200,
        )
        .await;
        let queues = body["queues"].as_array().expect("queues");
        assert_eq!(queues.len(), 4, "every dead-letter queue is listed: {body}");
        queues
            .iter()
            .find(|q| q["queue"] == queue)
            .and_then(|q| q["messages"].as_u64())
            .unwrap_or_else(|| panic!("{queue} not listed in {body}"))
    }

    /// The orchestrator's `plangrep_dead_letter_messages` for `queue`.
    async fn dead_letter_metric(&self, queue: &str) -> Option<u64> {
        let metrics = self
            .http
            .get(format!("http://{}/metrics", self.orchestrator_ops_addr))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let series = format!("plangrep_dead_letter_messages{{queue=\"{queue}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
    }

    async fn redrive(&self, body: Value, idempotency_key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .admin(reqwest::Method::POST, "/dead-letters/redrive")
            .json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("gateway reachable")
    }
}

#[tokio::test]
async fn a_dead_lettered_event_is_counted_redriven_and_then_delivered() {
    // The dispatcher starts later, so the job's events wait in its queue.
    let mut app = TestApp::spawn_with(Options {
        defer_dispatcher: true,
        ..Options::default()
    })
    .await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;

    // A consumer gives up on the job's first event: the broker dead-letters it.
    let topology = Topology::new(app.settings.raw("PLANGREP_AMQP_PREFIX").unwrap());
    let connection = plangrep_messaging::connect(&plangrep_test_support::amqp_url())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let work_queue = topology.queue(&DISPATCHER_EVENTS);
    let first = eventually(
        "the first event in the dispatcher's queue",
        PATIENCE,
        || {
            let (channel, work_queue) = (channel.clone(), work_queue.clone());
            async move {
                channel
                    .basic_get(work_queue.into(), BasicGetOptions { no_ack: false })
                    .await
                    .unwrap()
            }
        },
    )
    .await
    .delivery;
    assert_eq!(
        first.routing_key.as_str(),
        "job.status_changed.provisioning"
    );
    let event_id = first.properties.message_id().clone().unwrap().to_string();
    first
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();

    // Counted by the admin route and by the metric.
    eventually("the dead letter counted", PATIENCE, || async {
        (app.dead_letters_in(DISPATCHER_DEAD).await == 1).then_some(())
    })
    .await;
    eventually("the dead letter in the metric", PATIENCE, || async {
        (app.dead_letter_metric(DISPATCHER_DEAD).await == Some(1)).then_some(())
    })
    .await;

    // Bad input changes nothing.
    let error = expect_error(
        app.redrive(json!({"queue": "nope"}), None).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "queue");
    let error = expect_error(
        app.redrive(json!({"limit": 0}), None).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "limit");
    let error = expect_error(
        app.redrive(json!({"limit": 10001}), None).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "limit");
    let anonymous = app
        .http
        .post(format!("{}/admin/v1/dead-letters/redrive", app.base_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "unauthorized").await;
    assert_eq!(app.dead_letters_in(DISPATCHER_DEAD).await, 1);

    // The re-drive moves it back; a retry with the same Idempotency-Key replays.
    let body = json!({"queue": DISPATCHER_DEAD, "limit": 10});
    let redriven = expect_status(app.redrive(body.clone(), Some("redrive-1")).await, 200).await;
    assert_eq!(redriven, json!({"redriven": 1}));
    let replayed = expect_status(app.redrive(body, Some("redrive-1")).await, 200).await;
    assert_eq!(replayed, json!({"redriven": 1, "idempotent": true}));
    assert_eq!(app.dead_letters_in(DISPATCHER_DEAD).await, 0);
    eventually("the metric back at 0", PATIENCE, || async {
        (app.dead_letter_metric(DISPATCHER_DEAD).await == Some(0)).then_some(())
    })
    .await;
    let _ = connection.close(200, "done".into()).await;

    // Back in the work queue under its original routing key: the dispatcher delivers it,
    // and the job's later events after it, in order.
    app.start_dispatcher().await;
    let delivered = receiver.next(PATIENCE).await;
    assert_eq!(delivered.header("webhook-id"), event_id);
    app.wait_for_delivery(&key, &job_id, 1, "the re-driven event delivered", |d| {
        d["state"] == "succeeded"
    })
    .await;
    app.stop().await;
}
