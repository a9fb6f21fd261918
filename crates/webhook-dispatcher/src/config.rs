//! The dispatcher's configuration, read from [`Settings`] and validated before anything
//! starts.

use std::net::SocketAddr;
use std::time::Duration;

use plangrep_core::retry::RetryPolicy;
use plangrep_messaging::EventsKey;
use plangrep_service::internal_auth::InternalToken;
use plangrep_service::{SettingError, Settings};

/// The longest a webhook-target lookup may take (the gRPC client's timeout in
/// [`crate::target`]); part of every lease.
pub const TARGET_LOOKUP_ALLOWANCE: Duration = Duration::from_secs(5);

/// Everything the dispatcher needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Span export (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`).
    pub export: plangrep_telemetry::ExportConfig,
    /// PostgreSQL URL; the dispatcher's tables live in the `dispatcher` schema.
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Prefix for every exchange and queue name (empty in production; tests randomise it).
    pub amqp_prefix: String,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for `/healthz` and `/readyz`.
    pub http_addr: SocketAddr,
    /// The orchestrator's gRPC endpoint (`http://host:port`).
    pub orchestrator_endpoint: String,
    /// The internal gRPC credential: presented to the orchestrator, required of callers.
    pub internal_token: InternalToken,
    /// Authenticates the events consumed from the broker (ADR 0010).
    pub events_key: EventsKey,
    /// Dev mode: `http` and local destinations are allowed.
    pub allow_insecure: bool,
    /// Whole-attempt timeout.
    pub attempt_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// The retry schedule.
    pub retry: RetryPolicy,
    /// Deliveries attempted at once (per replica).
    pub workers: usize,
    /// Event messages handled at once by intake (also the AMQP prefetch).
    pub prefetch: u16,
    /// Safety margin of a lease beyond the longest an attempt can take (target lookup +
    /// attempt timeout); see [`Config::lease_duration`].
    pub lease_margin: Duration,
    /// Attempts in flight at once to one destination (`scheme://host:port`), per replica.
    pub max_per_destination: usize,
    /// Attempts of a delivery (within its retry window) that must find no webhook target
    /// (orchestrator NOT_FOUND) before the job's webhook is stopped.
    pub not_found_attempts: u32,
    /// How long finished deliveries and their attempts are kept.
    pub delivery_retention: Duration,
    /// How often housekeeping runs (retention, stranded waiting deliveries, gauges).
    pub housekeeping_interval: Duration,
    /// Backstop poll of due deliveries.
    pub poll_interval: Duration,
    /// How long a delivery waits for a previous event of its job that never arrived.
    pub missing_predecessor_grace: Duration,
    /// PostgreSQL connections of the replica (`PLANGREP_DATABASE_POOL_SIZE`, default 10:
    /// claims, outcomes, intake, the delivery log; none is held across an HTTP attempt).
    pub database_pool_size: u32,
}

impl Config {
    /// Reads and validates the configuration.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        let defaults = RetryPolicy::default();
        let multiplier: f64 =
            settings.parse("PLANGREP_WEBHOOK_RETRY_MULTIPLIER", defaults.multiplier)?;
        if !(1.0..=100.0).contains(&multiplier) {
            return Err(SettingError::new(
                "PLANGREP_WEBHOOK_RETRY_MULTIPLIER",
                "must be between 1 and 100",
            ));
        }
        let retry = RetryPolicy {
            initial_interval: settings
                .duration("PLANGREP_WEBHOOK_RETRY_INITIAL", defaults.initial_interval)?,
            multiplier,
            max_interval: settings
                .duration("PLANGREP_WEBHOOK_RETRY_MAX_INTERVAL", defaults.max_interval)?,
            max_elapsed: settings
                .duration("PLANGREP_WEBHOOK_RETRY_MAX_ELAPSED", defaults.max_elapsed)?,
            max_attempts: settings.parse("PLANGREP_WEBHOOK_MAX_ATTEMPTS", defaults.max_attempts)?,
        };
        if retry.initial_interval.is_zero() {
            return Err(SettingError::new(
                "PLANGREP_WEBHOOK_RETRY_INITIAL",
                "must be positive",
            ));
        }
        let workers: usize = settings.parse("PLANGREP_DISPATCHER_WORKERS", 32)?;
        if workers == 0 {
            return Err(SettingError::new(
                "PLANGREP_DISPATCHER_WORKERS",
                "must be at least 1",
            ));
        }
        let internal_token = InternalToken::from_settings(settings)?;
        let events_key = internal_token.events_key(settings)?;
        let prefetch: u16 = settings.parse("PLANGREP_DISPATCHER_PREFETCH", 16)?;
        let max_per_destination: usize = settings.parse("PLANGREP_WEBHOOK_MAX_PER_HOST", 8)?;
        let not_found_attempts: u32 = settings.parse("PLANGREP_WEBHOOK_NOT_FOUND_ATTEMPTS", 3)?;
        for (name, value) in [
            ("PLANGREP_DISPATCHER_PREFETCH", usize::from(prefetch)),
            ("PLANGREP_WEBHOOK_MAX_PER_HOST", max_per_destination),
            (
                "PLANGREP_WEBHOOK_NOT_FOUND_ATTEMPTS",
                usize::try_from(not_found_attempts).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                return Err(SettingError::new(name, "must be at least 1"));
            }
        }
        let lease_margin = positive(
            settings,
            "PLANGREP_WEBHOOK_LEASE_MARGIN",
            Duration::from_secs(30),
        )?;
        let delivery_retention = positive(
            settings,
            "PLANGREP_DELIVERY_RETENTION",
            Duration::from_secs(30 * 24 * 3600),
        )?;
        let housekeeping_interval = positive(
            settings,
            "PLANGREP_DISPATCHER_HOUSEKEEPING_INTERVAL",
            Duration::from_secs(30),
        )?;
        Ok(Self {
            internal_token,
            events_key,
            export: plangrep_telemetry::ExportConfig::new(
                settings.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
                settings.raw("OTEL_SERVICE_NAME"),
            ),
            database_url: settings.database_url(),
            amqp_url: settings.amqp_url(),
            amqp_prefix: settings.string("PLANGREP_AMQP_PREFIX", ""),
            grpc_addr: settings.socket_addr("PLANGREP_DISPATCHER_ADDR", "0.0.0.0:50052")?,
            http_addr: settings.socket_addr("PLANGREP_DISPATCHER_HTTP_ADDR", "0.0.0.0:9092")?,
            orchestrator_endpoint: plangrep_service::settings::grpc_endpoint(
                &settings.string("PLANGREP_ORCHESTRATOR_ADDR", "127.0.0.1:50051"),
            ),
            allow_insecure: settings.flag("PLANGREP_WEBHOOK_ALLOW_INSECURE", false)?,
            attempt_timeout: settings
                .duration("PLANGREP_WEBHOOK_TIMEOUT", Duration::from_secs(15))?,
            connect_timeout: settings
                .duration("PLANGREP_WEBHOOK_CONNECT_TIMEOUT", Duration::from_secs(5))?,
            retry,
            // No connection is held across an attempt (leases): a small pool serves claims,
            // outcomes, intake and the delivery log.
            database_pool_size: settings.database_pool_size(10)?,
            workers,
            prefetch,
            lease_margin,
            max_per_destination,
            not_found_attempts,
            delivery_retention,
            housekeeping_interval,
            poll_interval: settings
                .duration("PLANGREP_DISPATCHER_POLL_INTERVAL", Duration::from_secs(1))?,
            missing_predecessor_grace: settings
                .duration("PLANGREP_WEBHOOK_ORDER_GRACE", Duration::from_secs(600))?,
        })
    }
}

impl Config {
    /// How long a claimed delivery belongs to one worker: the longest an attempt can take
    /// (target lookup + `PLANGREP_WEBHOOK_TIMEOUT`) plus `PLANGREP_WEBHOOK_LEASE_MARGIN`.
    /// Longer than any attempt by construction, so a live attempt never loses its lease
    /// unless the process stalls; a crashed worker's delivery is retried once it expires.
    pub fn lease_duration(&self) -> Duration {
        TARGET_LOOKUP_ALLOWANCE + self.attempt_timeout + self.lease_margin
    }
}

fn positive(settings: &Settings, name: &str, default: Duration) -> Result<Duration, SettingError> {
    let value = settings.duration(name, default)?;
    if value.is_zero() {
        return Err(SettingError::new(name, "must be positive"));
    }
    Ok(value)
}
