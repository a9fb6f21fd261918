//! Server-side cuts confined to one test, so the fault suite never touches anything
//! another test (or a developer) uses on the shared servers:
//!
//! - RabbitMQ: the stack runs in a virtual host of its own, whose every connection,
//!   consumers included, can be closed from the server side
//!   (`rabbitmqctl close_all_connections --vhost`);
//! - PostgreSQL: every backend connected to the test's database can be terminated
//!   (`pg_terminate_backend`, found by `pg_stat_activity.datname`).
//!
//! (While an outage lasts, the stack's proxies keep the servers unreachable.)

use plangrep_test_support::{admin_database_url, amqp_url, random_token};
use sqlx::{Connection, PgConnection};

/// Runs `rabbitmqctl args…` and panics with its output when it fails.
async fn rabbitmqctl(args: &[&str]) {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("the fault suite needs rabbitmqctl on the broker's machine");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A RabbitMQ virtual host for one test, deleted (with everything in it) when dropped.
pub struct TestVhost {
    name: String,
    user: String,
}

impl TestVhost {
    /// Creates `plangrep-fault-<random>` and lets the test URL's user use it.
    pub async fn create() -> Self {
        let url = amqp_url();
        let user = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(userinfo, _)| userinfo.split(':').next().unwrap_or("guest").to_owned())
            .unwrap_or_else(|| "guest".to_owned());
        let vhost = Self {
            name: format!("plangrep-fault-{}", random_token()),
            user,
        };
        rabbitmqctl(&["add_vhost", &vhost.name]).await;
        vhost.grant().await;
        vhost
    }

    /// The test broker URL, pointed at this virtual host.
    pub fn amqp_url(&self) -> String {
        let url = amqp_url();
        let (scheme, rest) = url.split_once("://").expect("AMQP URL with a scheme");
        let authority = rest.split('/').next().unwrap_or(rest);
        format!("{scheme}://{authority}/{}", self.name)
    }

    async fn grant(&self) {
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &self.name,
            &self.user,
            ".*",
            ".*",
            ".*",
        ])
        .await;
    }

    /// Closes every connection in the virtual host from the server side.
    pub async fn close_all_connections(&self) {
        rabbitmqctl(&["close_all_connections", "--vhost", &self.name, "fault test"]).await;
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// The database name at the end of `database_url`.
fn database_name(database_url: &str) -> &str {
    let path = database_url.rsplit('/').next().expect("a database name");
    path.split('?').next().unwrap_or(path)
}

/// Terminates every backend connected to the database of `database_url`; returns how
/// many there were.
pub async fn terminate_backends(database_url: &str) -> usize {
    let name = database_name(database_url);
    let mut admin = PgConnection::connect(&admin_database_url())
        .await
        .expect("PostgreSQL admin connection");
    // In the select list, not the WHERE clause: the planner may evaluate WHERE conditions
    // in any order, and only this database's backends may be terminated.
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .expect("terminate the test database's backends");
    let _ = admin.close().await;
    terminated.into_iter().filter(|done| *done).count()
}
