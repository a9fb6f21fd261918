//! The platform as three release-built processes on loopback ports, against their own
//! PostgreSQL database and RabbitMQ names (dropped afterwards), with a customer (an
//! organization, an API key and a ready project) to drive it as.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use plangrep_messaging::Topology;
use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_test_support::process::ServiceProcess;
pub use plangrep_test_support::services::Service;
use plangrep_test_support::services::{StackAddrs, StackResources, migrate_all, stack_env};
use plangrep_test_support::{BrokerCleanup, TestDatabase, amqp_url, random_token, unique_prefix};
use serde_json::{Value, json};

use crate::cpu::CpuMeter;

/// The admin token of every bench stack.
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
/// How long a service may take to become ready, or a project or a job to reach a status.
const PATIENCE: Duration = Duration::from_secs(300);

/// A service binary next to this one (`target/release/…`).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let binary = exe.parent().expect("a folder").join(name);
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release --workspace --bins",
        binary.display()
    );
    binary
}

/// `url` without TLS: PostgreSQL is on loopback here, where TLS would measure the
/// cipher, not the platform (both the services and the SQL baseline connect this way, as
/// a compose deployment's private network does).
pub fn plain_url(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}

/// Resident and peak memory of a process, in MB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_mb: f64,
    pub peak_mb: f64,
}

/// The memory of process `pid` from `/proc/<pid>/status`.
pub fn memory_of(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Memory {
        rss_mb: field("VmRSS:"),
        peak_mb: field("VmHWM:"),
    }
}

/// The running platform.
pub struct Stack {
    /// First: the processes die (kill on drop) before their database and queues go.
    processes: [Option<ServiceProcess>; 3],
    /// The public API's base URL.
    pub gateway_url: String,
    /// The stack's database (the dispatcher and gateway tables live there too).
    pub database: TestDatabase,
    env: Vec<(&'static str, String)>,
    ops_addrs: [SocketAddr; 3],
    http: reqwest::Client,
    _broker: BrokerCleanup,
}

impl Stack {
    /// Migrates a fresh database and starts `services` with `settings` over the bench
    /// defaults; the others can be started later with [`Stack::start_service`].
    pub async fn start(services: &[Service], settings: &[(&'static str, String)]) -> Self {
        let database = TestDatabase::create().await;
        let prefix = unique_prefix();
        let storage = std::env::temp_dir().join(format!("plangrep-bench-{}", random_token()));
        let addrs = StackAddrs::reserve();
        let mut env = stack_env(StackResources {
            database_url: plain_url(database.url()),
            amqp_url: amqp_url(),
            amqp_prefix: prefix.clone(),
            storage: &storage,
            admin_token: ADMIN_TOKEN,
            addrs: &addrs,
        });
        // The load comes from one client: the per-key limit would measure itself.
        env.extend([
            ("PLANGREP_RATE_LIMIT_PER_SECOND", "1000000".to_owned()),
            ("PLANGREP_RATE_LIMIT_BURST", "1000000".to_owned()),
        ]);
        env.extend(settings.iter().cloned());
        migrate_all(
            |service| sibling_binary(service.binary()).display().to_string(),
            &env,
        )
        .await;
        let mut stack = Self {
            processes: [None, None, None],
            gateway_url: format!("http://{}", addrs.gateway),
            database,
            env,
            ops_addrs: addrs.ops,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            _broker: BrokerCleanup {
                topology: Topology::new(prefix),
                queues: ALL_QUEUES.to_vec(),
            },
        };
        for service in services {
            stack.start_service(*service).await;
        }
        stack
    }

    /// Starts `service` and waits until its `/readyz` answers 200.
    pub async fn start_service(&mut self, service: Service) {
        let binary = sibling_binary(service.binary()).display().to_string();
        // `BENCH_SERVICE_<NAME>=value` reaches the services as `<NAME>=value` (a log level,
        // an allocator setting; docs/benchmarks.md), and with `BENCH_LOG_DIR` their logs
        // go to `<dir>/<service>.log`; otherwise they are dropped.
        let passed: Vec<(String, String)> = std::env::vars()
            .filter_map(|(name, value)| {
                Some((name.strip_prefix("BENCH_SERVICE_")?.to_owned(), value))
            })
            .collect();
        let mut env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (*k, v.clone())).collect();
        env.extend(passed.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let log_file = std::env::var("BENCH_LOG_DIR")
            .ok()
            .map(|dir| PathBuf::from(dir).join(format!("{}.log", service.binary())));
        let mut process = ServiceProcess::start(&binary, &env);
        let mut logs =
            std::mem::replace(&mut process.logs, tokio::sync::mpsc::unbounded_channel().1);
        tokio::spawn(async move {
            let mut file = log_file.and_then(|path| std::fs::File::create(path).ok());
            while let Some(line) = logs.recv().await {
                if let Some(file) = file.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        self.processes[service.index()] = Some(process);
        let url = format!("http://{}/readyz", self.ops_addrs[service.index()]);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready within {PATIENCE:?}",
                service.binary()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id of `service`, while it runs.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.processes[service.index()]
            .as_ref()
            .and_then(ServiceProcess::pid)
    }

    /// A meter of the CPU the running services, PostgreSQL, RabbitMQ and the bench use.
    pub fn cpu_meter(&self) -> CpuMeter {
        CpuMeter::new(
            Service::ALL
                .iter()
                .map(|&service| (service.binary(), self.pid(service)))
                .collect(),
        )
    }

    /// The memory of `service` now.
    pub fn memory(&self, service: Service) -> Memory {
        self.pid(service).map(memory_of).unwrap_or_default()
    }

    /// A small pool on the stack's database, for the bench's own look-ups.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&plain_url(self.database.url()))
            .await
            .expect("the stack's database")
    }

    /// An organization with a job-scoped API key and a ready project.
    pub async fn customer(&self) -> Customer {
        let org = self
            .admin_post("/orgs", json!({ "name": "Bench Construction" }))
            .await;
        let org_id = org["org"]["id"].as_str().expect("org id").to_owned();
        let key = self
            .admin_post(
                &format!("/orgs/{org_id}/api-keys"),
                json!({ "label": "bench", "scopes": ["jobs:read", "jobs:write"] }),
            )
            .await;
        let api_key = key["plaintextKey"].as_str().expect("key").to_owned();
        let project: Value = self
            .http
            .post(format!("{}/api/open/v1/projects", self.gateway_url))
            .bearer_auth(&api_key)
            .json(&json!({ "name": "Tower B" }))
            .send()
            .await
            .expect("gateway reachable")
            .json()
            .await
            .expect("a project");
        let project_id = project["project"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no project: {project}"))
            .to_owned();
        self.wait_for(
            &api_key,
            &format!("/projects/{project_id}"),
            "project",
            "ready",
        )
        .await;
        Customer {
            org_id,
            api_key,
            jobs_url: format!(
                "{}/api/open/v1/projects/{project_id}/jobs",
                self.gateway_url
            ),
        }
    }

    /// The client set-up requests use.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Waits until the job is `status`; returns its JSON.
    pub async fn wait_for_job(&self, customer: &Customer, job_id: &str, status: &str) -> Value {
        self.wait_for(&customer.api_key, &format!("/jobs/{job_id}"), "job", status)
            .await
    }

    /// Polls `GET <path>` until its `<resource>.status` is `status` (bounded by
    /// [`PATIENCE`]); returns the resource.
    async fn wait_for(&self, api_key: &str, path: &str, resource: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let body: Value = self
                .http
                .get(format!("{}/api/open/v1{path}", self.gateway_url))
                .bearer_auth(api_key)
                .send()
                .await
                .expect("gateway reachable")
                .json()
                .await
                .expect("JSON");
            if body[resource]["status"] == status {
                return body[resource].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Grants `amount` credits to the customer's organization.
    pub async fn grant_credits(&self, customer: &Customer, amount: i64) {
        self.admin_post(
            &format!("/orgs/{}/credits", customer.org_id),
            json!({ "amount": amount, "reason": "bench" }),
        )
        .await;
    }

    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/admin/v1{path}", self.gateway_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("gateway reachable");
        assert!(
            response.status().is_success(),
            "admin {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }
}

/// Who the load runs as.
#[derive(Debug, Clone)]
pub struct Customer {
    pub org_id: String,
    pub api_key: String,
    /// `POST` here creates a job.
    pub jobs_url: String,
}
