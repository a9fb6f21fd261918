//! Two real `job-orchestrator` processes share one database and broker; the outbox relay
//! runs in exactly one of them. When the leader's lock session is terminated
//! (`pg_terminate_backend`) it must notice and stand by while the other takes over, and
//! when a leader is SIGKILLed mid-batch the other must finish its work: one leader at a
//! time (each replica's `plangrep_outbox_relay_leader` gauge), every outbox event in a
//! queue the test binds, and each job's events in sequence order (ADR 0013).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use plangrep_job_orchestrator::relay::RELAY_LOCK_KEY;
use plangrep_messaging::Topology;
use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_test_support::process::{ServiceProcess, run};
use plangrep_test_support::proxy::TcpProxy;
use plangrep_test_support::{BrokerCleanup, TestDatabase, amqp_url, eventually, unique_prefix};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_job-orchestrator");
const PATIENCE: Duration = Duration::from_secs(60);
/// Jobs whose events interleave in the outbox.
const JOBS: i64 = 20;

/// One orchestrator process, its ops address and the proxy its broker connections go
/// through.
struct Orchestrator {
    process: ServiceProcess,
    ops: SocketAddr,
    broker: TcpProxy,
}

impl Orchestrator {
    async fn start(env: &[(&str, String)]) -> Self {
        let (broker, proxied) = TcpProxy::in_front_of(&amqp_url()).await;
        let mut env = env.to_vec();
        env.push(("AMQP_URL", proxied));
        let mut process = ServiceProcess::start(BINARY, &env);
        let line = process
            .wait_for_log("job-orchestrator serving", PATIENCE)
            .await;
        let fields: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        let ops = fields["ops"]
            .as_str()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no ops address in {line}"));
        Self {
            process,
            ops,
            broker,
        }
    }

    /// Whether its relay leads, per its `/metrics` (`None` while it does not answer).
    async fn leads(&self) -> Option<bool> {
        let metrics = http_get(self.ops, "/metrics").await?;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("plangrep_outbox_relay_leader "))
            .map(|value| value.trim() == "1")
    }
}

/// A minimal HTTP/1.0 GET (the ops listener speaks it; no client crate needed).
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response
        .starts_with("HTTP/1.0 200")
        .then(|| {
            response
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
        })
        .flatten()
}

/// The index of the only replica whose relay leads, once exactly one does.
async fn sole_leader(replicas: &[&Orchestrator]) -> usize {
    eventually("exactly one relay leader", PATIENCE, || async {
        let mut leaders = Vec::new();
        for (index, replica) in replicas.iter().enumerate() {
            match replica.leads().await {
                Some(true) => leaders.push(index),
                Some(false) => {}
                None => return None,
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// The backend that holds the relay lock in this test's database.
async fn lock_holder(pool: &PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
           AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(RELAY_LOCK_KEY)
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

/// Appends `rounds` events per job to the outbox, in one statement (one commit), job
/// sequences continuing from `next_sequence`.
async fn append_events(pool: &PgPool, next_sequence: &mut i64, rounds: i64) {
    let first = *next_sequence;
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, payload) \
         SELECT format('evt_j%s_s%s', lpad(job::text, 2, '0'), lpad(seq::text, 7, '0')), \
                'job.status_changed.uploading', '\\x00'::bytea \
         FROM generate_series($1::bigint, $2::bigint) AS seq, generate_series(1, $3::bigint) AS job \
         ORDER BY seq, job",
    )
    .bind(first)
    .bind(first + rounds - 1)
    .bind(JOBS)
    .execute(pool)
    .await
    .expect("append outbox rows");
    *next_sequence += rounds;
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// The `(job, sequence)` an event id names.
fn job_and_sequence(event_id: &str) -> (u32, u32) {
    let rest = event_id.strip_prefix("evt_j").expect("a test event id");
    let (job, sequence) = rest.split_once("_s").expect("a test event id");
    (job.parse().unwrap(), sequence.parse().unwrap())
}

/// The test's own queue, bound to every job event: what the relay published, in order.
struct Capture {
    channel: lapin::Channel,
    name: String,
    received: Vec<String>,
}

impl Capture {
    async fn bind(connection: &lapin::Connection, topology: &Topology, name: String) -> Self {
        let channel = connection.create_channel().await.expect("channel");
        topology
            .declare_exchanges(&channel)
            .await
            .expect("exchanges");
        let mut arguments = FieldTable::default();
        // Gone by itself if the test dies before deleting it.
        arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        channel
            .queue_declare(
                name.clone().into(),
                QueueDeclareOptions::default(),
                arguments,
            )
            .await
            .expect("capture queue");
        channel
            .queue_bind(
                name.clone().into(),
                topology.exchange().into(),
                "job.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind capture queue");
        Self {
            channel,
            name,
            received: Vec::new(),
        }
    }

    /// Messages waiting, not yet drained.
    async fn waiting(&self) -> u32 {
        self.channel
            .queue_declare(
                self.name.clone().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    /// Takes everything waiting, in queue order.
    async fn drain(&mut self) {
        while let Some(message) = self
            .channel
            .basic_get(self.name.clone().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let id = message.delivery.properties.message_id().clone();
            self.received.push(id.expect("message id").to_string());
        }
    }
}

#[tokio::test]
async fn one_relay_leads_at_a_time_through_a_terminated_lock_session_and_a_sigkill() {
    let db = TestDatabase::create().await;
    let prefix = unique_prefix();
    let topology = Topology::new(prefix.clone());
    let _broker = BrokerCleanup {
        topology: topology.clone(),
        queues: ALL_QUEUES.to_vec(),
    };
    let storage =
        std::env::temp_dir().join(format!("plangrep-relay-{}", prefix.trim_end_matches('.')));
    let env = vec![
        ("DATABASE_URL", db.url().to_owned()),
        ("AMQP_URL", amqp_url()),
        ("PLANGREP_AMQP_PREFIX", prefix.clone()),
        ("PLANGREP_DEV_MODE", "true".to_owned()),
        ("PLANGREP_ORCHESTRATOR_ADDR", "127.0.0.1:0".to_owned()),
        ("PLANGREP_ORCHESTRATOR_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("PLANGREP_OUTBOX_POLL_INTERVAL", "100ms".to_owned()),
        (
            "PLANGREP_STORAGE_URL",
            format!("file://{}", storage.display()),
        ),
    ];
    let (code, stderr) = run(BINARY, &["migrate"], &env).await;
    assert_eq!(code, 0, "{stderr}");
    let pool = PgPool::connect(&format!(
        "{}?options=-csearch_path%3Dorchestrator",
        db.url()
    ))
    .await
    .expect("test pool");
    let broker = plangrep_messaging::connect(&amqp_url())
        .await
        .expect("broker");
    let mut capture = Capture::bind(&broker, &topology, format!("{prefix}relay-fencing")).await;

    let mut replicas = [
        Some(Orchestrator::start(&env).await),
        Some(Orchestrator::start(&env).await),
    ];
    sole_leader(&[replicas[0].as_ref().unwrap(), replicas[1].as_ref().unwrap()]).await;
    let mut sequence = 1;

    // 1. Traffic flows while the leader's lock session is terminated from the server.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (pool, stop) = (pool.clone(), stop_traffic.clone());
        let mut next = sequence;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                append_events(&pool, &mut next, 1).await;
            }
            next
        })
    };
    eventually("traffic being relayed", PATIENCE, || async {
        (capture.waiting().await >= 40).then_some(())
    })
    .await;
    let holder = lock_holder(&pool).await.expect("the leader holds the lock");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .fetch_one(&pool)
        .await
        .expect("terminate the lock session");
    assert!(terminated);
    // The old leader stands by (its gauge drops) and exactly one relay leads again, on
    // a new session.
    let both = [replicas[0].as_ref().unwrap(), replicas[1].as_ref().unwrap()];
    let _ = sole_leader(&both).await;
    eventually("a new lock session", PATIENCE, || async {
        lock_holder(&pool)
            .await
            .filter(|pid| *pid != holder)
            .map(|_| ())
    })
    .await;
    let before = capture.waiting().await;
    eventually("traffic relayed after the takeover", PATIENCE, || async {
        (capture.waiting().await >= before + 40).then_some(())
    })
    .await;
    stop_traffic.store(true, Ordering::Relaxed);
    sequence = traffic.await.expect("traffic task");
    eventually("the outbox drained", PATIENCE, || async {
        (unpublished(&pool).await == 0).then_some(())
    })
    .await;
    capture.drain().await;

    // 2. A leader is SIGKILLed mid-batch. The broker takes its messages but its answers
    // are held, so the batch's confirms never come and its transaction never commits;
    // the survivor publishes the batch again (duplicates, the proof that the kill landed
    // inside the batch) and the rest of the burst.
    let both = [replicas[0].as_ref().unwrap(), replicas[1].as_ref().unwrap()];
    let leader = sole_leader(&both).await;
    replicas[leader].as_ref().unwrap().broker.hold_answers();
    let burst_start = sequence;
    append_events(&pool, &mut sequence, 40).await; // 800 rows
    // Part 1 drained the capture queue after every row was confirmed: what waits now is
    // the burst, sent by the leader and not confirmed to it.
    eventually(
        "the leader's unconfirmed batch in the queue",
        PATIENCE,
        || async { (capture.waiting().await >= 1).then_some(()) },
    )
    .await;
    let already = capture.received.len();
    // Dropping the process handle SIGKILLs it (kill_on_drop).
    drop(replicas[leader].take());
    let survivor = replicas[1 - leader].as_ref().unwrap();
    let _ = sole_leader(&[survivor]).await;
    eventually("the survivor drained the outbox", PATIENCE, || async {
        (unpublished(&pool).await == 0).then_some(())
    })
    .await;
    // The killed replica comes back as a standby.
    replicas[leader] = Some(Orchestrator::start(&env).await);
    let both = [replicas[0].as_ref().unwrap(), replicas[1].as_ref().unwrap()];
    assert_eq!(sole_leader(&both).await, 1 - leader);
    capture.drain().await;
    let burst: Vec<&String> = capture.received[already..]
        .iter()
        .filter(|id| job_and_sequence(id).1 as i64 >= burst_start)
        .collect();
    let distinct: HashSet<&&String> = burst.iter().collect();
    assert_eq!(
        distinct.len(),
        40 * JOBS as usize,
        "the whole burst was published"
    );
    assert!(
        distinct.len() < burst.len(),
        "the survivor did not publish the killed leader's unconfirmed batch again"
    );

    // 3. Nothing lost, and each job's events arrived in sequence order (a duplicate may
    // repeat an event, never overtake a later one).
    let received: HashSet<&str> = capture.received.iter().map(String::as_str).collect();
    let all: Vec<String> = sqlx::query_scalar("SELECT event_id FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("outbox");
    let missing: Vec<&String> = all
        .iter()
        .filter(|id| !received.contains(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "events never published: {missing:?}");
    let mut last_seen: HashMap<u32, u32> = HashMap::new();
    let mut seen = HashSet::new();
    for id in &capture.received {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let (job, sequence) = job_and_sequence(id);
        let last = last_seen.entry(job).or_insert(0);
        assert_eq!(sequence, *last + 1, "job {job}: {id} after sequence {last}");
        *last = sequence;
    }
    assert_eq!(last_seen.len(), JOBS as usize);

    for replica in replicas.into_iter().flatten() {
        assert_eq!(replica.process.terminate(PATIENCE).await, Some(0));
    }
    let _ = capture
        .channel
        .queue_delete(capture.name.clone().into(), Default::default())
        .await;
    let _ = broker.close(200, "bye".into()).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(storage);
}
