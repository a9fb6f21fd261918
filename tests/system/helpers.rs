//! `TestApp`: the three services wired together for one test, plus typed helpers that
//! read like the product (`create_project`, `create_job`, …).

use std::time::Duration;

use base64::Engine;
use plangrep_messaging::Topology;
use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_service::Settings;
use plangrep_test_support::ports::ReservedPort;
use plangrep_test_support::proxy::TcpProxy;
pub use plangrep_test_support::python_tools;
use plangrep_test_support::{BrokerCleanup, TestDatabase, eventually, unique_prefix};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The admin token every test app uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The internal gRPC credential every service of a test app shares (ADR 0010).
pub const INTERNAL_TOKEN: &str = "test-internal-token-0123456789-abcdefghij";

/// How long any asynchronous step may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Knobs a test can turn before the app starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Dev mode for webhooks (`http` and loopback receivers allowed).
    pub allow_insecure_webhooks: bool,
    /// Extra settings (SPEC §7 names) layered over the test defaults.
    pub settings: Vec<(&'static str, String)>,
    /// Leave the dispatcher stopped until `start_dispatcher` (it has never run).
    pub defer_dispatcher: bool,
    /// Route the orchestrator's RabbitMQ connections through a proxy the test can cut.
    pub proxy_orchestrator_broker: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_insecure_webhooks: true,
            settings: Vec::new(),
            defer_dispatcher: false,
            proxy_orchestrator_broker: false,
        }
    }
}

impl Options {
    /// Default options plus one setting.
    pub fn with(mut self, name: &'static str, value: &str) -> Self {
        self.settings.push((name, value.to_owned()));
        self
    }
}

/// A webhook dispatcher running on its own runtime and thread, so a test can stop it
/// gracefully or crash it (drop every task mid-flight) and start a new one.
pub struct DispatcherProcess {
    /// The ops HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub http_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DispatcherProcess {
    /// Starts a dispatcher with `settings` on `grpc_addr` (a [`ReservedPort`]'s address,
    /// or port 0 for a replica's own); returns it and the gRPC address it listens on.
    pub async fn start(
        settings: Settings,
        grpc_addr: std::net::SocketAddr,
    ) -> (Self, std::net::SocketAddr) {
        let shutdown = CancellationToken::new();
        let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("dispatcher runtime");
            runtime.block_on(async move {
                let config = plangrep_webhook_dispatcher::Config::from_settings(&settings)
                    .expect("dispatcher config");
                // Services no longer migrate on start: tests do it as the deploy's job does.
                plangrep_webhook_dispatcher::startup::migrate(&config)
                    .await
                    .expect("dispatcher migrations");
                let grpc = plangrep_test_support::ports::listen_on(grpc_addr);
                let app = plangrep_webhook_dispatcher::App::build(config, grpc, listener().await)
                    .await
                    .expect("dispatcher starts");
                addr_tx
                    .send((app.grpc_addr(), app.http_addr()))
                    .expect("test waits for the address");
                tokio::select! {
                    result = app.run_until_stopped(token) => result.expect("dispatcher runs"),
                    // A crash: leave the select, and dropping the runtime below drops every
                    // task at its next await (in-flight attempts and transactions included).
                    _ = crash_rx => {}
                }
            });
            runtime.shutdown_background();
        });
        let (addr, http_addr) = addr_rx.await.expect("dispatcher started");
        (
            Self {
                http_addr,
                shutdown,
                crash: Some(crash_tx),
                thread: Some(thread),
            },
            addr,
        )
    }

    /// SIGTERM-like stop: in-flight attempts finish, then everything exits.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Abrupt stop: every task is dropped where it is.
    pub async fn crash(mut self) {
        if let Some(crash) = self.crash.take() {
            let _ = crash.send(());
        }
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().expect("dispatcher thread"))
                .await
                .expect("join");
        }
    }
}

impl Drop for DispatcherProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An extra gateway started by a test.
pub struct GatewayReplica {
    /// Its base URL.
    pub url: String,
    /// Its ops base URL (`/healthz`, `/readyz`, `/metrics`).
    pub ops_url: String,
    stop: CancellationToken,
    stopped: tokio::sync::oneshot::Receiver<()>,
}

impl GatewayReplica {
    /// Stops it gracefully and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.stopped.await;
    }
}

/// A running platform.
pub struct TestApp {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:40123`.
    pub base_url: String,
    /// The orchestrator's gRPC address (kept across `restart_orchestrator`).
    pub orchestrator_addr: std::net::SocketAddr,
    /// The orchestrator's ops HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub orchestrator_ops_addr: std::net::SocketAddr,
    /// The gateway's ops HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub gateway_ops_addr: std::net::SocketAddr,
    /// The dispatcher's gRPC address (kept across restarts).
    pub dispatcher_addr: std::net::SocketAddr,
    /// An HTTP client for the API.
    pub http: reqwest::Client,
    /// The test database.
    pub database: TestDatabase,
    /// Settings every service was built from (after port assignment).
    pub settings: Settings,
    /// The running dispatcher (replaceable by `restart_dispatcher`).
    pub dispatcher: Option<DispatcherProcess>,
    /// The proxy between the orchestrator and RabbitMQ, when asked for.
    pub orchestrator_broker: Option<TcpProxy>,
    /// The orchestrator's settings and its stop token and task (see `restart_orchestrator`).
    orchestrator_settings: Settings,
    orchestrator: Option<(CancellationToken, JoinHandle<()>)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The orchestrator's and the dispatcher's gRPC ports, theirs while they restart.
    _grpc_ports: [ReservedPort; 2],
    _broker: BrokerCleanup,
    storage: std::path::PathBuf,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind port 0")
}

/// Runs `orchestrator` until `shutdown` (or its own stop token) is cancelled.
fn run_orchestrator(
    orchestrator: plangrep_job_orchestrator::App,
    shutdown: &CancellationToken,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = shutdown.child_token();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        orchestrator
            .run_until_stopped(token)
            .await
            .expect("orchestrator runs");
    });
    (stop, task)
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
            queues: ALL_QUEUES.to_vec(),
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
            ("PLANGREP_INTERNAL_TOKEN", INTERNAL_TOKEN.to_owned()),
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
            // A crashed dispatcher's lease expires within seconds; gauges refresh often.
            ("PLANGREP_WEBHOOK_LEASE_MARGIN", "1s".to_owned()),
            (
                "PLANGREP_DISPATCHER_HOUSEKEEPING_INTERVAL",
                "200ms".to_owned(),
            ),
            ("PLANGREP_PDF_WORKER", orchestrator_binary()),
            ("PLANGREP_EXPIRY_SWEEP_INTERVAL", "200ms".to_owned()),
            ("PLANGREP_ALLOCATION_ATTEMPTS", "2".to_owned()),
        ]);
        for (name, value) in &options.settings {
            base.set(name, value.clone());
        }
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let mut orchestrator_settings = base.clone();
        let orchestrator_broker = if options.proxy_orchestrator_broker {
            let (proxy, proxied) = TcpProxy::in_front_of(&plangrep_test_support::amqp_url()).await;
            orchestrator_settings.set("AMQP_URL", proxied);
            Some(proxy)
        } else {
            None
        };
        let orchestrator_config =
            plangrep_job_orchestrator::Config::from_settings(&orchestrator_settings)
                .expect("orchestrator config");
        plangrep_job_orchestrator::startup::migrate(&orchestrator_config)
            .await
            .expect("orchestrator migrations");
        let grpc_ports = [ReservedPort::new(), ReservedPort::new()];
        let orchestrator = plangrep_job_orchestrator::App::build(
            orchestrator_config,
            grpc_ports[0].listener(),
            listener().await,
        )
        .await
        .expect("orchestrator starts");
        let orchestrator_addr = grpc_ports[0].addr();
        let orchestrator_ops_addr = orchestrator.http_addr();
        base.set("PLANGREP_ORCHESTRATOR_ADDR", orchestrator_addr.to_string());
        let orchestrator = Some(run_orchestrator(orchestrator, &shutdown));

        let dispatcher_addr = grpc_ports[1].addr();
        let dispatcher = if options.defer_dispatcher {
            None
        } else {
            Some(
                DispatcherProcess::start(base.clone(), dispatcher_addr)
                    .await
                    .0,
            )
        };
        base.set("PLANGREP_DISPATCHER_ADDR", dispatcher_addr.to_string());

        let gateway_config =
            plangrep_api_gateway::Config::from_settings(&base).expect("gateway config");
        plangrep_api_gateway::startup::migrate(&gateway_config)
            .await
            .expect("gateway migrations");
        let gateway =
            plangrep_api_gateway::App::build(gateway_config, listener().await, listener().await)
                .await
                .expect("gateway starts");
        let base_url = format!("http://{}", gateway.local_addr());
        let gateway_ops_addr = gateway.ops_addr();
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
            orchestrator_ops_addr,
            gateway_ops_addr,
            dispatcher_addr,
            http: reqwest::Client::new(),
            database,
            settings: base,
            dispatcher,
            orchestrator_broker,
            orchestrator_settings,
            orchestrator,
            shutdown,
            tasks,
            _grpc_ports: grpc_ports,
            _broker: broker,
            storage,
        }
    }

    /// Starts the dispatcher of an app spawned with `defer_dispatcher`.
    pub async fn start_dispatcher(&mut self) {
        assert!(self.dispatcher.is_none(), "the dispatcher already runs");
        let (process, _) =
            DispatcherProcess::start(self.settings.clone(), self.dispatcher_addr).await;
        self.dispatcher = Some(process);
    }

    /// Starts another gateway replica (fresh pool and clients, same settings) and returns
    /// its base URL; it stops with the app.
    pub async fn start_gateway_replica(&mut self) -> GatewayReplica {
        self.start_gateway(self.settings.clone()).await
    }

    /// Starts a gateway with `settings` (e.g. pointed at a cut proxy); it stops with the
    /// app, or earlier with [`GatewayReplica::stop`].
    pub async fn start_gateway(&mut self, settings: Settings) -> GatewayReplica {
        let gateway = plangrep_api_gateway::App::build(
            plangrep_api_gateway::Config::from_settings(&settings).expect("gateway config"),
            listener().await,
            listener().await,
        )
        .await
        .expect("gateway starts");
        let url = format!("http://{}", gateway.local_addr());
        let ops_url = format!("http://{}", gateway.ops_addr());
        let stop = self.shutdown.child_token();
        let token = stop.clone();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        self.tasks.push(tokio::spawn(async move {
            gateway
                .run_until_stopped(token)
                .await
                .expect("gateway runs");
            let _ = stopped_tx.send(());
        }));
        GatewayReplica {
            url,
            ops_url,
            stop,
            stopped,
        }
    }

    /// Starts one more dispatcher replica (own listeners, same database and queue).
    pub async fn start_replica(&self) -> DispatcherProcess {
        DispatcherProcess::start(self.settings.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .0
    }

    /// Stops (gracefully, or by crashing it) the dispatcher and starts a new one on the
    /// same address, with the same settings.
    pub async fn restart_dispatcher(&mut self, crash: bool) {
        let old = self.dispatcher.take().expect("a dispatcher runs");
        if crash {
            old.crash().await;
        } else {
            old.stop().await;
        }
        let (process, _) =
            DispatcherProcess::start(self.settings.clone(), self.dispatcher_addr).await;
        self.dispatcher = Some(process);
    }

    /// Stops the orchestrator gracefully and starts a new one on the same gRPC address
    /// with its settings changed by `changes` (e.g. another keyring); the gateway and the
    /// dispatcher reconnect to it.
    pub async fn restart_orchestrator(&mut self, changes: &[(&str, String)]) {
        if let Some((stop, task)) = self.orchestrator.take() {
            stop.cancel();
            task.await.expect("orchestrator stopped cleanly");
        }
        for (name, value) in changes {
            self.orchestrator_settings.set(name, value.clone());
        }
        let config = plangrep_job_orchestrator::Config::from_settings(&self.orchestrator_settings)
            .expect("orchestrator config");
        let grpc = plangrep_test_support::ports::listen_on(self.orchestrator_addr);
        let orchestrator = plangrep_job_orchestrator::App::build(config, grpc, listener().await)
            .await
            .expect("orchestrator starts");
        self.orchestrator_ops_addr = orchestrator.http_addr();
        self.orchestrator = Some(run_orchestrator(orchestrator, &self.shutdown));
    }

    /// Stops every service gracefully and waits for them.
    pub async fn stop(mut self) {
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.stop().await;
        }
        if let Some((_, task)) = self.orchestrator.take() {
            self.tasks.push(task);
        }
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.expect("service task finished cleanly");
        }
    }

    /// The key the services tag and verify broker events with (derived from the shared
    /// internal token, as in a deployment without `PLANGREP_EVENTS_KEY`).
    pub fn events_key(&self) -> plangrep_messaging::EventsKey {
        plangrep_service::internal_auth::InternalToken::new(INTERNAL_TOKEN)
            .events_key(&self.settings)
            .expect("valid events key")
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

    /// Revokes the key with id `key_id` through the admin API.
    pub async fn revoke_key(&self, key_id: &str) {
        let response = self
            .admin(reqwest::Method::POST, &format!("/api-keys/{key_id}/revoke"))
            .send()
            .await
            .expect("admin reachable");
        expect_status(response, 200).await;
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

    /// The published OpenAPI document, as served.
    pub async fn openapi_document(&self) -> String {
        self.http
            .get(format!("{}/openapi.json", self.base_url))
            .send()
            .await
            .expect("gateway reachable")
            .text()
            .await
            .expect("the document")
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

impl TestApp {
    /// A job with a webhook to `url` in a fresh ready project; returns `(job_id, secret)`.
    pub async fn create_job_with_webhook(&self, key: &str, url: &str) -> (String, String) {
        let name = format!("Webhooks {}", plangrep_test_support::random_token());
        let project = self.create_ready_project(key, &name).await;
        let created = expect_status(
            self.post_job(key, &project, json!({ "webhookUrl": url }))
                .await,
            202,
        )
        .await;
        (
            created["job"]["id"].as_str().expect("job id").to_owned(),
            created["webhookSigningSecret"]
                .as_str()
                .expect("secret")
                .to_owned(),
        )
    }

    /// `POST /webhook-deliveries/{id}/redeliver` with `key`.
    pub async fn redeliver(&self, key: &str, delivery_id: &str) -> reqwest::Response {
        self.api(
            reqwest::Method::POST,
            &format!("/webhook-deliveries/{delivery_id}/redeliver"),
            key,
        )
        .send()
        .await
        .expect("gateway reachable")
    }

    /// The job's delivery log.
    pub async fn deliveries(&self, key: &str, job_id: &str) -> Vec<Value> {
        let body = self
            .get_json(&format!("/jobs/{job_id}/webhook-deliveries"), key)
            .await;
        body["deliveries"]
            .as_array()
            .unwrap_or_else(|| panic!("no deliveries in {body}"))
            .clone()
    }

    /// Waits until the job's delivery of event `sequence` satisfies `done`; returns it.
    pub async fn wait_for_delivery(
        &self,
        key: &str,
        job_id: &str,
        sequence: u64,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, PATIENCE, || async {
            self.deliveries(key, job_id)
                .await
                .into_iter()
                .find(|d| d["sequence"] == sequence && done(d))
        })
        .await
    }
}

/// The built `job-orchestrator` binary, whose `pdf-worker` subcommand parses PDFs in a
/// child process (in production the orchestrator runs itself; here the test binary
/// cannot). `cargo nextest run --workspace` builds it beside this test binary.
pub fn orchestrator_binary() -> String {
    workspace_binary("job-orchestrator")
}

/// A binary of the workspace (`job-orchestrator`, `api-gateway`, …), built beside this
/// test binary.
pub fn workspace_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        binary.display()
    );
    binary.display().to_string()
}

/// One file of an upload request.
pub struct UploadFile {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

impl UploadFile {
    /// A PDF called `file_name`.
    pub fn pdf(file_name: &str, bytes: Vec<u8>) -> Self {
        Self {
            file_name: file_name.to_owned(),
            bytes,
        }
    }
}

impl TestApp {
    /// `POST /jobs/{id}/files` with `files` (metadata declares each one's sha256).
    pub async fn upload(
        &self,
        key: &str,
        job_id: &str,
        files: Vec<UploadFile>,
    ) -> reqwest::Response {
        use sha2::Digest;
        let entries: Vec<Value> = files
            .iter()
            .enumerate()
            .map(|(i, file)| {
                json!({
                    "partName": format!("file{i}"),
                    "fileName": file.file_name,
                    "contentType": "application/pdf",
                    "sha256": sha2::Sha256::digest(&file.bytes)
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect::<String>(),
                })
            })
            .collect();
        let mut form = reqwest::multipart::Form::new()
            .text("metadata", json!({ "files": entries }).to_string());
        for (i, file) in files.into_iter().enumerate() {
            let part = reqwest::multipart::Part::bytes(file.bytes)
                .file_name(file.file_name)
                .mime_str("application/pdf")
                .expect("mime");
            form = form.part(format!("file{i}"), part);
        }
        self.api(reqwest::Method::POST, &format!("/jobs/{job_id}/files"), key)
            .multipart(form)
            .send()
            .await
            .expect("gateway reachable")
    }

    /// `POST /jobs/{id}/uploads/complete`.
    pub async fn complete_uploads(&self, key: &str, job_id: &str) -> reqwest::Response {
        self.api(
            reqwest::Method::POST,
            &format!("/jobs/{job_id}/uploads/complete"),
            key,
        )
        .send()
        .await
        .expect("gateway reachable")
    }

    /// Uploads `files` (200) and closes the upload window (202).
    pub async fn submit(&self, key: &str, job_id: &str, files: Vec<UploadFile>) {
        expect_status(self.upload(key, job_id, files).await, 200).await;
        expect_status(self.complete_uploads(key, job_id).await, 202).await;
    }

    /// A job in a fresh ready project (no webhook); returns its id.
    pub async fn create_job(&self, key: &str) -> String {
        let name = format!("Lifecycle {}", plangrep_test_support::random_token());
        let project = self.create_ready_project(key, &name).await;
        let created = expect_status(self.post_job(key, &project, json!({})).await, 202).await;
        created["job"]["id"].as_str().expect("job id").to_owned()
    }

    /// Waits until the job is `awaiting_uploads`.
    pub async fn wait_until_awaiting_uploads(&self, key: &str, job_id: &str) {
        self.wait_for_job(key, job_id, &["awaiting_uploads"]).await;
    }

    /// Waits until the job is in one of `statuses`; returns it.
    pub async fn wait_for_job(&self, key: &str, job_id: &str, statuses: &[&str]) -> Value {
        eventually(
            &format!("job {job_id} to be one of {statuses:?}"),
            PATIENCE,
            || async {
                let body = self.get_json(&format!("/jobs/{job_id}"), key).await;
                statuses
                    .iter()
                    .any(|s| body["job"]["status"] == *s)
                    .then(|| body["job"].clone())
            },
        )
        .await
    }

    /// Grants credits to an organization; returns the new balance.
    pub async fn grant_credits(&self, org_id: &str, amount: i64) -> i64 {
        let response = self
            .admin(reqwest::Method::POST, &format!("/orgs/{org_id}/credits"))
            .json(&json!({ "amount": amount, "reason": "test grant" }))
            .send()
            .await
            .expect("admin reachable");
        expect_status(response, 200).await["balance"]
            .as_i64()
            .expect("balance")
    }

    /// The organization's credit balance.
    pub async fn balance(&self, org_id: &str) -> i64 {
        let response = self
            .admin(reqwest::Method::GET, &format!("/orgs/{org_id}"))
            .send()
            .await
            .expect("admin reachable");
        expect_status(response, 200).await["org"]["creditBalance"]
            .as_i64()
            .expect("creditBalance")
    }
}
