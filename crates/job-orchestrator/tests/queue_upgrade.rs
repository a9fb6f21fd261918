//! The upgrade to at-least-once dead-lettering (ADR 0013): RabbitMQ refuses to redeclare
//! a queue with new arguments, so work queues moved to versioned names. A broker that
//! still holds a work queue of the previous version, with events waiting in it, gets
//! them moved to the new queue (same ids, same routing keys) by the relay of the new
//! `job-orchestrator` binary, and the old queue deleted.

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use plangrep_messaging::topology::{ALL_QUEUES, DISPATCHER_EVENTS};
use plangrep_messaging::{OutgoingMessage, Publisher, Topology};
use plangrep_test_support::process::{ServiceProcess, run};
use plangrep_test_support::{BrokerCleanup, TestDatabase, amqp_url, eventually, unique_prefix};

const BINARY: &str = env!("CARGO_BIN_EXE_job-orchestrator");
const PATIENCE: Duration = Duration::from_secs(30);

/// The arguments the previous version declared its work queues with.
fn previous_version_arguments(topology: &Topology) -> FieldTable {
    let mut arguments = FieldTable::default();
    let text = |value: String| AMQPValue::LongString(LongString::from(value));
    arguments.insert("x-queue-type".into(), text("quorum".to_owned()));
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(20));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        text(topology.dead_letter_exchange()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        text(topology.unversioned_queue(&DISPATCHER_EVENTS)),
    );
    arguments
}

#[tokio::test]
async fn events_waiting_in_a_previous_version_queue_move_to_its_successor() {
    let db = TestDatabase::create().await;
    let prefix = unique_prefix();
    let topology = Topology::new(prefix.clone());
    let _broker = BrokerCleanup {
        topology: topology.clone(),
        queues: ALL_QUEUES.to_vec(),
    };
    let connection = plangrep_messaging::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare_exchanges(&channel).await.unwrap();
    let old = topology.unversioned_queue(&DISPATCHER_EVENTS);
    channel
        .queue_declare(
            old.clone().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            previous_version_arguments(&topology),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            old.clone().into(),
            topology.exchange().into(),
            "job.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The tag does not matter here: the upgrade moves messages as they are.
    let events_key = plangrep_messaging::EventsKey::derive(b"queue-upgrade-test-key-0123456789");
    let publisher = Publisher::open(&connection, &topology, events_key)
        .await
        .unwrap();
    let statuses = ["provisioning", "awaiting_uploads", "uploading"];
    for (n, status) in statuses.iter().enumerate() {
        publisher
            .publish(&OutgoingMessage {
                message_id: format!("evt_old{n}"),
                routing_key: format!("job.status_changed.{status}"),
                payload: vec![n as u8],
                traceparent: None,
                mandatory: true,
            })
            .await
            .unwrap();
    }

    let storage =
        std::env::temp_dir().join(format!("plangrep-upgrade-{}", prefix.trim_end_matches('.')));
    let env = vec![
        ("DATABASE_URL", db.url().to_owned()),
        ("AMQP_URL", amqp_url()),
        ("PLANGREP_AMQP_PREFIX", prefix.clone()),
        ("PLANGREP_DEV_MODE", "true".to_owned()),
        ("PLANGREP_ORCHESTRATOR_ADDR", "127.0.0.1:0".to_owned()),
        ("PLANGREP_ORCHESTRATOR_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PLANGREP_STORAGE_URL",
            format!("file://{}", storage.display()),
        ),
    ];
    let (code, stderr) = run(BINARY, &["migrate"], &env).await;
    assert_eq!(code, 0, "{stderr}");
    let mut orchestrator = ServiceProcess::start(BINARY, &env);
    let line = orchestrator
        .wait_for_log("unversioned queues", PATIENCE)
        .await;
    assert!(line.contains("\"moved\":3"), "{line}");

    // The old queue is gone; its events wait in the new one, in order, unchanged.
    eventually("the previous version's queue deleted", PATIENCE, || async {
        plangrep_messaging::redrive::depth(&connection, &old)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let new = topology.queue(&DISPATCHER_EVENTS);
    for (n, status) in statuses.iter().enumerate() {
        let message = channel
            .basic_get(new.clone().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a moved event")
            .delivery;
        assert_eq!(
            message.properties.message_id().as_ref().unwrap().as_str(),
            format!("evt_old{n}")
        );
        assert_eq!(
            message.routing_key.as_str(),
            format!("job.status_changed.{status}")
        );
        assert_eq!(message.data, vec![n as u8]);
    }

    assert_eq!(orchestrator.terminate(PATIENCE).await, Some(0));
    let _ = connection.close(200, "bye".into()).await;
    let _ = std::fs::remove_dir_all(storage);
}
