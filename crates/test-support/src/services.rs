//! The platform's three services as processes: which binaries they are, loopback ports
//! reserved for them, the settings they share and their migrations (the fault suite and
//! the benchmark start them this way).

use std::net::SocketAddr;
use std::path::Path;

/// One of the platform's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Gateway,
    Orchestrator,
    Dispatcher,
}

impl Service {
    /// Every service, in start order (peers first).
    pub const ALL: [Service; 3] = [Service::Orchestrator, Service::Dispatcher, Service::Gateway];

    /// Its binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Gateway => "api-gateway",
            Service::Orchestrator => "job-orchestrator",
            Service::Dispatcher => "webhook-dispatcher",
        }
    }

    /// Its place in per-service arrays.
    pub fn index(self) -> usize {
        match self {
            Service::Gateway => 0,
            Service::Orchestrator => 1,
            Service::Dispatcher => 2,
        }
    }
}

/// The secrets key of every stack (base64 of 32 bytes of 7): fixed, each stack's
/// database is its own.
pub const STACK_SECRETS_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Where the three services of one stack listen: loopback ports reserved together.
#[derive(Debug, Clone, Copy)]
pub struct StackAddrs {
    pub gateway: SocketAddr,
    pub orchestrator: SocketAddr,
    pub dispatcher: SocketAddr,
    /// Each service's ops listener (`/readyz`, `/metrics`), by [`Service::index`].
    pub ops: [SocketAddr; 3],
}

impl StackAddrs {
    /// Six free loopback ports: each service's own and its ops listener.
    pub fn reserve() -> Self {
        let [
            gateway,
            gateway_ops,
            orchestrator,
            orchestrator_ops,
            dispatcher,
            dispatcher_ops,
        ] = crate::ports::ports_for_child_processes::<6>();
        Self {
            gateway,
            orchestrator,
            dispatcher,
            ops: [gateway_ops, orchestrator_ops, dispatcher_ops],
        }
    }
}

/// A stack's shared resources, as [`stack_env`] hands them to every service.
#[derive(Debug)]
pub struct StackResources<'a> {
    pub database_url: String,
    pub amqp_url: String,
    pub amqp_prefix: String,
    /// Where file storage keeps uploads and results.
    pub storage: &'a Path,
    pub admin_token: &'a str,
    pub addrs: &'a StackAddrs,
}

/// The settings every service of a test or bench stack gets: the database and broker, a
/// fixed secrets key, a fresh internal token, file storage, the admin token, webhooks to
/// loopback receivers allowed, and every service's listeners.
pub fn stack_env(resources: StackResources<'_>) -> Vec<(&'static str, String)> {
    let addrs = resources.addrs;
    let [gateway_ops, orchestrator_ops, dispatcher_ops] = addrs.ops;
    vec![
        ("DATABASE_URL", resources.database_url),
        ("AMQP_URL", resources.amqp_url),
        ("PLANGREP_AMQP_PREFIX", resources.amqp_prefix),
        ("PLANGREP_SECRETS_KEY", STACK_SECRETS_KEY.to_owned()),
        // The internal gRPC credential, shared by the three services.
        (
            "PLANGREP_INTERNAL_TOKEN",
            format!("stack-{}-{}", crate::random_token(), crate::random_token()),
        ),
        (
            "PLANGREP_STORAGE_URL",
            format!("file://{}", resources.storage.display()),
        ),
        ("PLANGREP_ADMIN_TOKEN", resources.admin_token.to_owned()),
        // Receivers are on loopback.
        ("PLANGREP_WEBHOOK_ALLOW_INSECURE", "true".to_owned()),
        ("PLANGREP_GATEWAY_ADDR", addrs.gateway.to_string()),
        ("PLANGREP_GATEWAY_OPS_ADDR", gateway_ops.to_string()),
        ("PLANGREP_ORCHESTRATOR_ADDR", addrs.orchestrator.to_string()),
        (
            "PLANGREP_ORCHESTRATOR_HTTP_ADDR",
            orchestrator_ops.to_string(),
        ),
        ("PLANGREP_DISPATCHER_ADDR", addrs.dispatcher.to_string()),
        ("PLANGREP_DISPATCHER_HTTP_ADDR", dispatcher_ops.to_string()),
    ]
}

/// Runs every service's `migrate` (the binary at `binary(service)`) with `env`; panics
/// when one fails.
pub async fn migrate_all(binary: impl Fn(Service) -> String, env: &[(&str, String)]) {
    for service in Service::ALL {
        let (code, stderr) = crate::process::run(&binary(service), &["migrate"], env).await;
        assert_eq!(code, 0, "{} migrate: {stderr}", service.binary());
    }
}
