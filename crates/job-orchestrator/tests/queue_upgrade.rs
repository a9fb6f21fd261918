//! The upgrade to at-least-once dead-lettering (ADR 0013): RabbitMQ refuses to redeclare
//! a queue with new arguments, so work queues moved to versioned names. A broker that
//! still holds a work queue of the previous version, with events waiting in it, gets
//! them moved to the new queue (same ids, same routing keys) by the relay of the new
//! `job-orchestrator` binary, and the old queue deleted. A broker that never held one
//! hears nothing of it.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use plangrep_messaging::topology::{ALL_QUEUES, DISPATCHER_EVENTS, RETIRED_PIPELINE_QUEUE};
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

/// One orchestrator's world: a fresh database, a broker prefix (its queues deleted at
/// the end) and a storage folder (removed at the end).
struct Setup {
    db: TestDatabase,
    prefix: String,
    topology: Topology,
    storage: std::path::PathBuf,
    _broker: BrokerCleanup,
}

impl Setup {
    async fn new() -> Self {
        let prefix = unique_prefix();
        let topology = Topology::new(prefix.clone());
        Self {
            db: TestDatabase::create().await,
            storage: std::env::temp_dir()
                .join(format!("plangrep-upgrade-{}", prefix.trim_end_matches('.'))),
            _broker: BrokerCleanup {
                topology: topology.clone(),
                queues: ALL_QUEUES.to_vec(),
            },
            prefix,
            topology,
        }
    }

    /// Migrates the database and starts the orchestrator.
    async fn start_orchestrator(&self) -> ServiceProcess {
        let env = vec![
            ("DATABASE_URL", self.db.url().to_owned()),
            ("AMQP_URL", amqp_url()),
            ("PLANGREP_AMQP_PREFIX", self.prefix.clone()),
            ("PLANGREP_DEV_MODE", "true".to_owned()),
            ("PLANGREP_ORCHESTRATOR_ADDR", "127.0.0.1:0".to_owned()),
            ("PLANGREP_ORCHESTRATOR_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            (
                "PLANGREP_STORAGE_URL",
                format!("file://{}", self.storage.display()),
            ),
        ];
        let (code, stderr) = run(BINARY, &["migrate"], &env).await;
        assert_eq!(code, 0, "{stderr}");
        ServiceProcess::start(BINARY, &env)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

/// Waits until the relay published an event written to the outbox now: by then it has
/// dealt with the queues of earlier versions (it does so before it publishes anything).
async fn relay_has_published(
    db: &TestDatabase,
    connection: &lapin::Connection,
    topology: &Topology,
) {
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::query(
        "INSERT INTO orchestrator.outbox (event_id, routing_key, payload) \
         VALUES ('evt_probe', 'job.status_changed.completed', '\\x00')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // Declared here too (idempotently, as the relay does), so that looking never asks
    // for a queue that does not exist yet: the broker's 404 would close the channel, and
    // the client can lose the whole connection in that exchange.
    let channel = connection.create_channel().await.unwrap();
    topology
        .declare_work_queue(&channel, &DISPATCHER_EVENTS)
        .await
        .unwrap();
    let queue = topology.queue(&DISPATCHER_EVENTS);
    eventually("the relay published the event", PATIENCE, || async {
        channel
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    let _ = channel.close(200, "looked".into()).await;
}

/// The retired single pipeline queue of an earlier version is deleted; its dead-letter
/// queue is kept while it holds a dead letter (an operator may still want it).
#[tokio::test]
async fn the_retired_pipeline_queue_goes_and_its_dead_letters_stay() {
    let setup = Setup::new().await;
    let topology = &setup.topology;
    let connection = plangrep_messaging::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let retired = format!("{}{RETIRED_PIPELINE_QUEUE}", setup.prefix);
    let dead = format!("{retired}.dead");
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    for name in [&retired, &dead] {
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                quorum.clone(),
            )
            .await
            .unwrap();
    }
    channel
        .basic_publish(
            "".into(),
            dead.as_str().into(),
            BasicPublishOptions::default(),
            b"a dead letter",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A connection per count: asking for an absent queue gets a 404 that closes the
    // channel, and the client can lose its connection in that exchange.
    let depth = |queue: String| async move {
        let connection = plangrep_messaging::connect(&amqp_url()).await.unwrap();
        let depth = plangrep_messaging::redrive::depth(&connection, &queue)
            .await
            .unwrap();
        let _ = connection.close(200, "counted".into()).await;
        depth
    };
    eventually("the dead letter queued", PATIENCE, || async {
        (depth(dead.clone()).await == Some(1)).then_some(())
    })
    .await;

    let orchestrator = setup.start_orchestrator().await;
    relay_has_published(&setup.db, &connection, topology).await;

    assert_eq!(
        depth(retired.clone()).await,
        None,
        "the retired queue is deleted"
    );
    assert_eq!(
        depth(dead.clone()).await,
        Some(1),
        "its dead letter is kept"
    );
    assert_eq!(orchestrator.terminate(PATIENCE).await, Some(0));
    channel
        .queue_delete(dead.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = connection.close(200, "bye".into()).await;
}

/// A broker that never held queues of earlier versions: the relay's look for them finds
/// nothing and says nothing. (Asking for an absent queue with a passive declare gets a
/// 404, which the AMQP client logs as an error: five ERROR lines on every start.)
#[tokio::test]
async fn a_broker_without_earlier_queues_gets_no_error_logged_for_them() {
    let setup = Setup::new().await;
    let topology = &setup.topology;
    let mut orchestrator = setup.start_orchestrator().await;
    let connection = plangrep_messaging::connect(&amqp_url()).await.unwrap();
    relay_has_published(&setup.db, &connection, topology).await;

    // Every line it logged until it exited.
    let (_, idle) = tokio::sync::mpsc::unbounded_channel();
    let mut logs = std::mem::replace(&mut orchestrator.logs, idle);
    assert_eq!(orchestrator.terminate(PATIENCE).await, Some(0));
    let mut errors = Vec::new();
    while let Some(line) = logs.recv().await {
        if line.contains(r#""level":"ERROR""#) {
            errors.push(line);
        }
    }
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
    let _ = connection.close(200, "bye".into()).await;
}

#[tokio::test]
async fn events_waiting_in_a_previous_version_queue_move_to_its_successor() {
    let setup = Setup::new().await;
    let topology = &setup.topology;
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
            previous_version_arguments(topology),
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
    let publisher = Publisher::open(&connection, topology, events_key)
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

    let mut orchestrator = setup.start_orchestrator().await;
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
}
