//! The `job-orchestrator` binary as an operator runs it: it refuses an un-migrated
//! database in one line; after `migrate` it starts its gRPC server, relay and pipeline
//! consumer against the real PostgreSQL and RabbitMQ, and exits 0 promptly on SIGTERM
//! after stopping them.

use std::time::Duration;

use plangrep_messaging::Topology;
use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_test_support::process::{ServiceProcess, run};
use plangrep_test_support::{BrokerCleanup, TestDatabase, amqp_url, unique_prefix};

const BINARY: &str = env!("CARGO_BIN_EXE_job-orchestrator");

#[tokio::test]
async fn the_orchestrator_runs_its_loops_and_exits_cleanly_on_sigterm() {
    let db = TestDatabase::create().await;
    let prefix = unique_prefix();
    let _broker = BrokerCleanup {
        topology: Topology::new(prefix.clone()),
        queues: ALL_QUEUES.to_vec(),
    };
    let storage =
        std::env::temp_dir().join(format!("plangrep-bin-{}", prefix.trim_end_matches('.')));
    let env = vec![
        ("DATABASE_URL", db.url().to_owned()),
        ("AMQP_URL", amqp_url()),
        ("PLANGREP_AMQP_PREFIX", prefix),
        ("PLANGREP_DEV_MODE", "true".to_owned()),
        ("PLANGREP_ORCHESTRATOR_ADDR", "127.0.0.1:0".to_owned()),
        ("PLANGREP_ORCHESTRATOR_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PLANGREP_STORAGE_URL",
            format!("file://{}", storage.display()),
        ),
    ];
    let (code, stderr) = run(BINARY, &["serve"], &env).await;
    assert_eq!(code, 1, "{stderr}");
    // One line says why (other lines are ordinary logs, e.g. the dev-mode key warning).
    let said: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("migrat"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0]
            .starts_with("job-orchestrator: the database schema \"orchestrator\" is not migrated"),
        "{stderr}"
    );
    let (code, stderr) = run(BINARY, &["migrate"], &env).await;
    assert_eq!(code, 0, "{stderr}");

    let mut orchestrator = ServiceProcess::start(BINARY, &env);
    orchestrator
        .wait_for_logs(
            &[
                "job-orchestrator serving",
                "outbox relay is active",
                "consuming",
            ],
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(
        orchestrator.terminate(Duration::from_secs(30)).await,
        Some(0)
    );
    let _ = std::fs::remove_dir_all(storage);
}
