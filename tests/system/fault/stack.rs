//! The three services as real processes, so the fault suite can SIGKILL one and start it
//! again where its peers expect it: every listener is on a loopback port reserved for the
//! test (restarts reuse it), against the test's own database and RabbitMQ virtual host,
//! each reached through a proxy the suite cuts to keep a server unreachable while an
//! outage lasts.

use std::net::SocketAddr;
use std::time::Duration;

use plangrep_test_support::process::ServiceProcess;
use plangrep_test_support::proxy::TcpProxy;
pub use plangrep_test_support::services::Service;
use plangrep_test_support::services::{StackAddrs, StackResources, migrate_all, stack_env};
use plangrep_test_support::{TestDatabase, eventually, random_token, unique_prefix};

use super::outages::TestVhost;
use crate::helpers::{ADMIN_TOKEN, PATIENCE, workspace_binary};

/// The running platform.
pub struct Stack {
    /// First field: the processes die (kill on drop) before their database and vhost go.
    processes: [Option<ServiceProcess>; 3],
    /// The public API's base URL.
    pub gateway_url: String,
    /// The test's database (faults terminate its backends).
    pub database: TestDatabase,
    /// The test's RabbitMQ virtual host (faults close its connections).
    pub vhost: TestVhost,
    /// Between the services and PostgreSQL.
    pub database_proxy: TcpProxy,
    /// Between the services and RabbitMQ.
    pub broker_proxy: TcpProxy,
    env: Vec<(&'static str, String)>,
    ops_addrs: [SocketAddr; 3],
    readiness: reqwest::Client,
    /// Error lines logged by the services, killed ones included.
    errors: Vec<String>,
    storage: std::path::PathBuf,
}

impl Stack {
    /// Migrates, starts the three services with `settings` over the test defaults, and
    /// waits until each is ready.
    pub async fn start(settings: &[(&'static str, String)]) -> Self {
        let database = TestDatabase::create().await;
        let vhost = TestVhost::create().await;
        let (database_proxy, database_url) = TcpProxy::in_front_of(database.url()).await;
        let (broker_proxy, amqp_url) = TcpProxy::in_front_of(&vhost.amqp_url()).await;
        let storage = std::env::temp_dir().join(format!("plangrep-fault-{}", random_token()));
        let addrs = StackAddrs::reserve();
        let mut env = stack_env(StackResources {
            database_url,
            amqp_url,
            amqp_prefix: unique_prefix(),
            storage: &storage,
            admin_token: ADMIN_TOKEN,
            addrs: &addrs,
        });
        env.push(("RUST_LOG", "warn".to_owned()));
        env.extend(settings.iter().cloned());
        migrate_all(|service| workspace_binary(service.binary()), &env).await;
        let mut stack = Self {
            gateway_url: format!("http://{}", addrs.gateway),
            database,
            vhost,
            database_proxy,
            broker_proxy,
            env,
            ops_addrs: addrs.ops,
            processes: [None, None, None],
            readiness: reqwest::Client::builder()
                // A readiness check that hangs counts as not ready.
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            errors: Vec::new(),
            storage,
        };
        for service in Service::ALL {
            stack.start_service(service).await;
        }
        stack
    }

    /// Starts `service` (again) and waits until its `/readyz` answers 200.
    pub async fn start_service(&mut self, service: Service) {
        let slot = &mut self.processes[service.index()];
        assert!(slot.is_none(), "{service:?} already runs");
        *slot = Some(ServiceProcess::start(
            &workspace_binary(service.binary()),
            &self.env,
        ));
        self.wait_until_ready(service).await;
    }

    /// SIGKILLs `service`.
    pub async fn kill(&mut self, service: Service) {
        let mut process = self.processes[service.index()]
            .take()
            .unwrap_or_else(|| panic!("{service:?} is not running"));
        process.kill().await;
        // Its last words: everything it wrote before it died.
        while let Some(line) = process.logs.recv().await {
            self.keep_if_error(service, line);
        }
    }

    /// The error lines every service logged so far (the evidence when the run fails).
    pub fn errors(&mut self) -> Vec<String> {
        for service in Service::ALL {
            let Some(process) = self.processes[service.index()].as_mut() else {
                continue;
            };
            let mut lines = Vec::new();
            while let Ok(line) = process.logs.try_recv() {
                lines.push(line);
            }
            for line in lines {
                self.keep_if_error(service, line);
            }
        }
        self.errors.clone()
    }

    /// Keeps the platform's own error lines (the driver libraries' are noise here: every
    /// outage makes lapin log its lost connections).
    fn keep_if_error(&mut self, service: Service, line: String) {
        if line.contains("\"level\":\"ERROR\"") && line.contains("\"target\":\"plangrep") {
            self.errors.push(format!("{}: {line}", service.binary()));
        }
    }

    /// Whether `service`'s `/readyz` answers 200 now (refused, timed out or 503: not ready).
    pub async fn is_ready(&self, service: Service) -> bool {
        let url = format!("http://{}/readyz", self.ops_addrs[service.index()]);
        match self.readiness.get(url).send().await {
            Ok(response) => response.status() == 200,
            Err(_) => false,
        }
    }

    /// Waits until `service` reports ready.
    pub async fn wait_until_ready(&self, service: Service) {
        eventually(&format!("{service:?} to be ready"), PATIENCE, || async {
            self.is_ready(service).await.then_some(())
        })
        .await;
    }

    /// Waits until `service` reports not ready (the outage is held until it does).
    pub async fn wait_until_unready(&self, service: Service) {
        eventually(
            &format!("{service:?} to report not ready"),
            PATIENCE,
            || async { (!self.is_ready(service).await).then_some(()) },
        )
        .await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The processes die with their handles (kill on drop).
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}
