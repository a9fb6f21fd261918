//! `TestApp`: the three services wired together for one test, plus typed helpers that
//! read like the product (`create_project`, `create_job`, …).

use std::time::Duration;

use base64::Engine;
use plangrep_messaging::Topology;
use plangrep_messaging::topology::{DISPATCHER_EVENTS, ORCHESTRATOR_PIPELINE};
use plangrep_service::Settings;
use plangrep_test_support::{BrokerCleanup, TestDatabase, eventually, unique_prefix};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The admin token every test app uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// How long any asynchronous step may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Knobs a test can turn before the app starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Dev mode for webhooks (`http` and loopback receivers allowed).
    pub allow_insecure_webhooks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_insecure_webhooks: true,
        }
    }
}

/// A running platform.
pub struct TestApp {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:40123`.
    pub base_url: String,
    /// The orchestrator's gRPC address.
    pub orchestrator_addr: std::net::SocketAddr,
    /// The dispatcher's gRPC address.
    pub dispatcher_addr: std::net::SocketAddr,
    /// An HTTP client for the API.
    pub http: reqwest::Client,
    /// The test database.
    pub database: TestDatabase,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _broker: BrokerCleanup,
    storage: std::path::PathBuf,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind port 0")
}

impl TestApp {
    /// Starts the platform in dev mode.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// Starts the platform with `options`.
    pub async fn spawn_with(options: Options) -> Self {
        plangrep_test_support::init_logging();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database = TestDatabase::create().await;
        let prefix = unique_prefix();
        let storage =
            std::env::temp_dir().join(format!("plangrep-{}", prefix.trim_end_matches('.')));
        let broker = BrokerCleanup {
            topology: Topology::new(prefix.clone()),
            queues: vec![DISPATCHER_EVENTS, ORCHESTRATOR_PIPELINE],
        };
        let mut base = Settings::from_pairs([
            ("DATABASE_URL", database.url().to_owned()),
            ("AMQP_URL", plangrep_test_support::amqp_url()),
            ("PLANGREP_AMQP_PREFIX", prefix),
            (
                "PLANGREP_SECRETS_KEY",
                base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
            ),
            (
                "PLANGREP_STORAGE_URL",
                format!("file://{}", storage.display()),
            ),
            ("PLANGREP_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            (
                "PLANGREP_WEBHOOK_ALLOW_INSECURE",
                options.allow_insecure_webhooks.to_string(),
            ),
            ("PLANGREP_OUTBOX_POLL_INTERVAL", "200ms".to_owned()),
            ("PLANGREP_DISPATCHER_POLL_INTERVAL", "100ms".to_owned()),
            ("PLANGREP_WEBHOOK_RETRY_INITIAL", "100ms".to_owned()),
            ("PLANGREP_WEBHOOK_RETRY_MULTIPLIER", "2".to_owned()),
            ("PLANGREP_WEBHOOK_RETRY_MAX_INTERVAL", "1s".to_owned()),
            ("PLANGREP_WEBHOOK_TIMEOUT", "2s".to_owned()),
            ("PLANGREP_DISPATCHER_WORKERS", "4".to_owned()),
        ]);
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let orchestrator = plangrep_job_orchestrator::App::build(
            plangrep_job_orchestrator::Config::from_settings(&base).expect("orchestrator config"),
            listener().await,
            listener().await,
        )
        .await
        .expect("orchestrator starts");
        let orchestrator_addr = orchestrator.grpc_addr();
        base.set("PLANGREP_ORCHESTRATOR_ADDR", orchestrator_addr.to_string());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            orchestrator
                .run_until_stopped(token)
                .await
                .expect("orchestrator runs");
        }));

        let dispatcher = plangrep_webhook_dispatcher::App::build(
            plangrep_webhook_dispatcher::Config::from_settings(&base).expect("dispatcher config"),
            listener().await,
            listener().await,
        )
        .await
        .expect("dispatcher starts");
        let dispatcher_addr = dispatcher.grpc_addr();
        base.set("PLANGREP_DISPATCHER_ADDR", dispatcher_addr.to_string());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            dispatcher
                .run_until_stopped(token)
                .await
                .expect("dispatcher runs");
        }));

        let gateway = plangrep_api_gateway::App::build(
            plangrep_api_gateway::Config::from_settings(&base).expect("gateway config"),
            listener().await,
        )
        .await
        .expect("gateway starts");
        let base_url = format!("http://{}", gateway.local_addr());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            gateway
                .run_until_stopped(token)
                .await
                .expect("gateway runs");
        }));

        Self {
            base_url,
            orchestrator_addr,
            dispatcher_addr,
            http: reqwest::Client::new(),
            database,
            shutdown,
            tasks,
            _broker: broker,
            storage,
        }
    }

    /// Stops every service gracefully and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.expect("service task finished cleanly");
        }
    }

    /// A request to the public API with an API key.
    pub fn api(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/open/v1{path}", self.base_url))
            .bearer_auth(key)
    }

    /// A request to the admin API.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/admin/v1{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Creates an organization and returns its id.
    pub async fn create_org(&self, name: &str) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/orgs")
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("admin reachable");
        let body = expect_status(response, 201).await;
        body["org"]["id"].as_str().expect("org id").to_owned()
    }

    /// Mints a key with `scopes` for `org_id` and returns its plaintext.
    pub async fn create_key(&self, org_id: &str, scopes: &[&str]) -> String {
        let response = self
            .admin(reqwest::Method::POST, &format!("/orgs/{org_id}/api-keys"))
            .json(&json!({ "label": "test", "scopes": scopes }))
            .send()
            .await
            .expect("admin reachable");
        let body = expect_status(response, 201).await;
        body["plaintextKey"]
            .as_str()
            .expect("plaintext key")
            .to_owned()
    }

    /// An organization with a full-scope key: `(org_id, key)`.
    pub async fn create_customer(&self) -> (String, String) {
        let org = self.create_org("Acme Construction").await;
        let key = self
            .create_key(&org, &["jobs:read", "jobs:write", "artifacts:read"])
            .await;
        (org, key)
    }

    /// Creates a project and waits until it is `ready`; returns its id.
    pub async fn create_ready_project(&self, key: &str, name: &str) -> String {
        let response = self
            .api(reqwest::Method::POST, "/projects", key)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("gateway reachable");
        let body = expect_status(response, 202).await;
        assert_eq!(body["project"]["status"], "provisioning");
        let id = body["project"]["id"]
            .as_str()
            .expect("project id")
            .to_owned();
        eventually("the project to become ready", PATIENCE, || async {
            let body = self.get_json(&format!("/projects/{id}"), key).await;
            (body["project"]["status"] == "ready").then_some(())
        })
        .await;
        id
    }

    /// `POST /projects/{id}/jobs` with `body`; returns the raw response.
    pub async fn post_job(&self, key: &str, project_id: &str, body: Value) -> reqwest::Response {
        self.api(
            reqwest::Method::POST,
            &format!("/projects/{project_id}/jobs"),
            key,
        )
        .json(&body)
        .send()
        .await
        .expect("gateway reachable")
    }

    /// GET a public API path and parse the JSON (any status).
    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        self.api(reqwest::Method::GET, path, key)
            .send()
            .await
            .expect("gateway reachable")
            .json()
            .await
            .expect("JSON body")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

/// Asserts the status and returns the JSON body.
pub async fn expect_status(response: reqwest::Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts a SPEC error body with `status` and `code`; returns the `error` object.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("every response carries x-request-id");
    let body = expect_status(response, status).await;
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "body: {body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(error["requestId"], request_id.as_str());
    error
}
