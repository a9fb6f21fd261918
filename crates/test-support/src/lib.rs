//! `plangrep-test-support`: what every service and system test needs to isolate itself
//! and to wait without sleeping.
//!
//! - [`TestDatabase`]: a fresh PostgreSQL database per test, dropped afterwards;
//! - [`unique_prefix`] and [`BrokerCleanup`]: RabbitMQ names no other test shares, deleted
//!   afterwards;
//! - [`receiver`]: a real HTTP receiver on loopback that captures webhook requests and
//!   answers from a script;
//! - [`ports`]: loopback ports kept for services that restart on the same address;
//! - [`proxy`]: a TCP proxy a test can cut, to take a real dependency away;
//! - [`s3`]: settings for the development S3 server (`scripts/s3-server.sh`);
//! - [`eventually`]: a bounded poll for state that converges asynchronously.

pub mod otlp;
pub mod pdf;
pub mod ports;
pub mod proxy;
pub mod receiver;
pub mod s3;
pub mod services;

use std::future::Future;
use std::time::Duration;

use plangrep_messaging::{Topology, WorkQueue};
use sqlx::{Connection, PgConnection};

/// The server tests create their databases on (`TEST_DATABASE_URL` overrides; any
/// database name in it is only used to connect for CREATE/DROP DATABASE).
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The broker tests use (`TEST_AMQP_URL` overrides).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The Redis tests use (`TEST_REDIS_URL` overrides); each test keeps its keys under its
/// own prefix.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A short random token, lowercase, for names.
pub fn random_token() -> String {
    ulid::Ulid::generate().to_string().to_ascii_lowercase()
}

/// A RabbitMQ name prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("test.{}.", random_token())
}

/// A Python interpreter with the test-only packages (`scripts/python-env.sh` installs
/// them on first use): independent clients and checkers such as `requests`, `pypdf`,
/// `standardwebhooks` and schemathesis.
pub fn python_tools() -> std::path::PathBuf {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python-env.sh");
    let output = std::process::Command::new(script)
        .output()
        .expect("scripts/python-env.sh runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::path::PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Installs a test log subscriber when `TEST_LOG` is set (tests are silent otherwise).
pub fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn,lapin=warn".into()),
            )
            .with_test_writer()
            .try_init();
    }
}

/// A throwaway database, dropped (with its connections) when this value is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `plangrep_test_<random>`.
    pub async fn create() -> Self {
        let admin_url = admin_database_url();
        let name = format!("plangrep_test_{}", random_token());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("tests need PostgreSQL: run scripts/dev-services.sh");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = match admin_url.rfind('/') {
            Some(slash) => format!("{}/{}", &admin_url[..slash], name),
            None => panic!("TEST_DATABASE_URL has no database part"),
        };
        Self { name, url }
    }

    /// The URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Runs async clean-up from `Drop`, which may itself run inside a runtime: on a separate
/// thread with its own runtime, waiting for it to finish.
fn block_on_cleanup<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(cleanup);
    })
    .join();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_cleanup(async move {
            if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
                let _ = admin.close().await;
            }
        });
    }
}

/// Deletes a prefixed topology's queues and exchanges when dropped.
pub struct BrokerCleanup {
    /// The topology to delete.
    pub topology: Topology,
    /// The work queues it declared.
    pub queues: Vec<WorkQueue>,
}

impl Drop for BrokerCleanup {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let queues = self.queues.clone();
        block_on_cleanup(async move {
            if let Ok(connection) = plangrep_messaging::connect(&amqp_url()).await {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = topology.delete(&channel, &queues).await;
                }
                let _ = connection.close(200, "bye".into()).await;
            }
        });
    }
}

/// The storage parameters (`reloptions`) of `table` as set by the migrations, sorted:
/// `["autovacuum_vacuum_scale_factor=0.01", …]`.
pub async fn table_options(pool: &sqlx::PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT unnest(reloptions) FROM pg_class WHERE oid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("the table's storage parameters")
}

/// Polls `check` until it yields `Some`, for at most `timeout`; panics with `what` when
/// it never does. The interval is short and the bound explicit: this waits for state,
/// it does not guess a duration.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A check that never returns fails the wait too (one `timeout` past the deadline
        // at most), instead of holding the test for good.
        if let Ok(Some(value)) = tokio::time::timeout(timeout, check()).await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A service binary started as a real process (for `main`-level tests: subcommands,
/// configuration errors, SIGTERM; and for the fault suite: SIGKILL).
pub mod process {
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    /// Runs `binary args…` with `env` to completion; returns (exit code, stderr).
    pub async fn run(binary: &str, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
        let output = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .expect("binary runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// A running service process with JSON logs on stderr.
    pub struct ServiceProcess {
        child: Child,
        /// Log lines read so far.
        pub logs: tokio::sync::mpsc::UnboundedReceiver<String>,
    }

    impl ServiceProcess {
        /// Starts `binary serve` with `env` (plus `LOG_FORMAT=json`).
        pub fn start(binary: &str, env: &[(&str, String)]) -> Self {
            Self::start_with_args(binary, &["serve"], env)
        }

        /// Starts `binary args…` with `env` (plus `LOG_FORMAT=json`).
        pub fn start_with_args(binary: &str, args: &[&str], env: &[(&str, String)]) -> Self {
            let mut child = Command::new(binary)
                .args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("LOG_FORMAT", "json")
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("binary starts");
            let stderr = child.stderr.take().expect("piped stderr");
            let (tx, logs) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Self { child, logs }
        }

        /// The process id, while it runs.
        pub fn pid(&self) -> Option<u32> {
            self.child.id()
        }

        /// The first log line containing `needle`, waiting at most `timeout`.
        pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
            self.wait_for_logs(&[needle], timeout).await.remove(0)
        }

        /// Waits (at most `timeout`) until every needle appeared in some log line, in any
        /// order; returns the matching lines in the needles' order.
        pub async fn wait_for_logs(&mut self, needles: &[&str], timeout: Duration) -> Vec<String> {
            let mut found: Vec<Option<String>> = vec![None; needles.len()];
            tokio::time::timeout(timeout, async {
                while found.iter().any(Option::is_none) {
                    let Some(line) = self.logs.recv().await else {
                        panic!("the process exited before logging all of {needles:?}");
                    };
                    for (needle, slot) in needles.iter().zip(found.iter_mut()) {
                        if slot.is_none() && line.contains(needle) {
                            *slot = Some(line.clone());
                        }
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("not all of {needles:?} logged within {timeout:?}"));
            found.into_iter().flatten().collect()
        }

        /// Sends SIGKILL (the process dies where it is, with no chance to clean up) and
        /// waits until it is gone.
        pub async fn kill(&mut self) {
            self.child.kill().await.expect("SIGKILL the service");
        }

        /// Sends SIGTERM and returns the exit code, waiting at most `timeout`.
        pub async fn terminate(mut self, timeout: Duration) -> Option<i32> {
            let pid = self.child.id().expect("running").to_string();
            let status = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .await
                .expect("kill runs");
            assert!(status.success());
            let exit = tokio::time::timeout(timeout, self.child.wait())
                .await
                .unwrap_or_else(|_| panic!("no exit within {timeout:?} of SIGTERM"))
                .expect("wait");
            exit.code()
        }
    }
}
