//! The orchestrator's configuration, read from [`Settings`] and validated before anything
//! starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use plangrep_messaging::EventsKey;
use plangrep_service::internal_auth::InternalToken;
use plangrep_service::{SettingError, Settings};
use plangrep_storage::StorageConfig;

use crate::crypto::Keyring;
use crate::pdf::Limits;

/// Everything the orchestrator needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Span export (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`).
    pub export: plangrep_telemetry::ExportConfig,
    /// PostgreSQL URL; the orchestrator's tables live in the `orchestrator` schema.
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Prefix for every exchange and queue name (empty in production; tests randomise it).
    pub amqp_prefix: String,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for `/healthz` and `/readyz`.
    pub http_addr: SocketAddr,
    /// Encrypts webhook secrets and stored idempotent responses at rest.
    pub secrets_key: Keyring,
    /// How long a rotated-out webhook secret keeps signing beside the new one.
    pub webhook_secret_overlap: Duration,
    /// The credential internal gRPC callers must present (`PLANGREP_INTERNAL_TOKEN`).
    pub internal_token: InternalToken,
    /// Tags the events the relay publishes and authenticates those the pipeline consumes.
    pub events_key: EventsKey,
    /// Object storage for documents and results (shared with the gateway).
    pub storage: StorageConfig,
    /// The program that parses PDFs in a child process: this binary (`pdf-worker`).
    pub pdf_worker: PathBuf,
    /// Resource limits of each PDF parser process.
    pub pdf_limits: Limits,
    /// Messages each pipeline stage handles at once (provision, preflight, process).
    pub provision_concurrency: u16,
    pub preflight_concurrency: u16,
    pub process_concurrency: u16,
    /// How often overdue jobs are looked for.
    pub expiry_interval: Duration,
    /// Age after which a stored upload nobody registered is deleted.
    pub orphan_grace: Duration,
    /// Attempts at allocating a project's storage before the project fails.
    pub allocation_attempts: u32,
    /// How long a job may stay non-terminal.
    pub job_ttl: Duration,
    /// Backstop poll of the outbox when no NOTIFY arrives.
    pub outbox_poll_interval: Duration,
    /// How often expired idempotency records and old outbox rows are deleted.
    pub housekeeping_interval: Duration,
    /// How long published outbox rows are kept (for inspection and replays).
    pub outbox_retention: Duration,
    /// `PLANGREP_DATABASE_POOL_SIZE` (default 20; the relay's lock session is extra).
    pub database_pool_size: u32,
}

impl Config {
    /// Reads and validates the configuration.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        let dev_mode = settings.flag("PLANGREP_DEV_MODE", false)?;
        let secrets_key = keyring(settings, dev_mode)?;
        let internal_token = InternalToken::from_settings(settings)?;
        let events_key = internal_token.events_key(settings)?;
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
            grpc_addr: settings.socket_addr("PLANGREP_ORCHESTRATOR_ADDR", "0.0.0.0:50051")?,
            http_addr: settings.socket_addr("PLANGREP_ORCHESTRATOR_HTTP_ADDR", "0.0.0.0:9091")?,
            secrets_key,
            webhook_secret_overlap: settings.duration(
                "PLANGREP_WEBHOOK_SECRET_OVERLAP",
                Duration::from_secs(24 * 3600),
            )?,
            storage: StorageConfig::from_settings(settings)?,
            pdf_worker: match settings.raw("PLANGREP_PDF_WORKER") {
                Some(path) => PathBuf::from(path),
                None => std::env::current_exe().map_err(|e| {
                    SettingError::new(
                        "PLANGREP_PDF_WORKER",
                        format!("cannot find this binary: {e}"),
                    )
                })?,
            },
            pdf_limits: Limits {
                cpu_seconds: settings
                    .duration("PLANGREP_PDF_CPU_LIMIT", Duration::from_secs(20))?
                    .as_secs()
                    .max(1),
                memory_bytes: settings.parse("PLANGREP_PDF_MEMORY_LIMIT_BYTES", 1 << 30)?,
                wall_clock: settings.duration("PLANGREP_PDF_TIMEOUT", Duration::from_secs(60))?,
            },
            database_pool_size: settings.database_pool_size(20)?,
            provision_concurrency: settings.parse::<u16>("PLANGREP_PROVISION_CONCURRENCY", 32)?,
            preflight_concurrency: settings.parse::<u16>("PLANGREP_PREFLIGHT_CONCURRENCY", 2)?,
            process_concurrency: settings.parse::<u16>("PLANGREP_PROCESS_CONCURRENCY", 2)?,
            expiry_interval: settings
                .duration("PLANGREP_EXPIRY_SWEEP_INTERVAL", Duration::from_secs(30))?,
            orphan_grace: settings.duration(
                "PLANGREP_ORPHAN_UPLOAD_GRACE",
                Duration::from_secs(6 * 3600),
            )?,
            allocation_attempts: settings
                .parse::<u16>("PLANGREP_ALLOCATION_ATTEMPTS", 5)?
                .max(1)
                .into(),
            job_ttl: settings.duration("PLANGREP_JOB_TTL", Duration::from_secs(7 * 86_400))?,
            outbox_poll_interval: settings
                .duration("PLANGREP_OUTBOX_POLL_INTERVAL", Duration::from_secs(1))?,
            housekeeping_interval: settings
                .duration("PLANGREP_HOUSEKEEPING_INTERVAL", Duration::from_secs(600))?,
            outbox_retention: settings
                .duration("PLANGREP_OUTBOX_RETENTION", Duration::from_secs(7 * 86_400))?,
        })
    }
}

/// The keyring: `PLANGREP_SECRETS_KEYS` (wins), else the one-key ring of
/// `PLANGREP_SECRETS_KEY`, else (dev mode only) the insecure dev key.
fn keyring(settings: &Settings, dev_mode: bool) -> Result<Keyring, SettingError> {
    if let Some(ring) = settings.raw("PLANGREP_SECRETS_KEYS") {
        return Keyring::parse(ring)
            .map_err(|problem| SettingError::new("PLANGREP_SECRETS_KEYS", problem));
    }
    match settings.raw("PLANGREP_SECRETS_KEY") {
        Some(encoded) => Keyring::single_from_base64(encoded)
            .map_err(|problem| SettingError::new("PLANGREP_SECRETS_KEY", problem)),
        None if dev_mode => {
            tracing::warn!("PLANGREP_SECRETS_KEY unset: using the insecure dev-mode key");
            Ok(Keyring::insecure_dev_key())
        }
        None => Err(SettingError::new(
            "PLANGREP_SECRETS_KEY",
            "required outside dev mode (base64 of 32 random bytes, e.g. `openssl rand -base64 32`), \
             or PLANGREP_SECRETS_KEYS",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: (&str, &str) = (
        "PLANGREP_INTERNAL_TOKEN",
        "a-test-token-of-at-least-32-characters",
    );

    #[test]
    fn outside_dev_mode_a_secrets_key_is_required_and_validated() {
        let error = Config::from_settings(&Settings::default()).unwrap_err();
        assert_eq!(error.name, "PLANGREP_SECRETS_KEY");
        let short = Settings::from_pairs([("PLANGREP_SECRETS_KEY", "c2hvcnQ=")]);
        assert_eq!(
            Config::from_settings(&short).unwrap_err().name,
            "PLANGREP_SECRETS_KEY"
        );
        let dev = Settings::from_pairs([("PLANGREP_DEV_MODE", "true")]);
        assert!(Config::from_settings(&dev).is_ok());
    }

    #[test]
    fn a_keyring_wins_over_the_single_key_and_names_its_variable_when_invalid() {
        let key = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
        let both = Settings::from_pairs([
            ("PLANGREP_SECRETS_KEY", key.to_owned()),
            ("PLANGREP_SECRETS_KEYS", format!("new:{key},default:{key}")),
            (TOKEN.0, TOKEN.1.to_owned()),
        ]);
        let config = Config::from_settings(&both).unwrap();
        assert_eq!(config.secrets_key.primary_id().as_str(), "new");
        let single = Settings::from_pairs([("PLANGREP_SECRETS_KEY", key), TOKEN]);
        assert_eq!(
            Config::from_settings(&single)
                .unwrap()
                .secrets_key
                .primary_id()
                .as_str(),
            crate::crypto::SINGLE_KEY_ID
        );
        let bad = Settings::from_pairs([
            ("PLANGREP_SECRETS_KEY", key),
            ("PLANGREP_SECRETS_KEYS", "new-without-key"),
            TOKEN,
        ]);
        assert_eq!(
            Config::from_settings(&bad).unwrap_err().name,
            "PLANGREP_SECRETS_KEYS"
        );
        assert_eq!(
            Config::from_settings(&single)
                .unwrap()
                .webhook_secret_overlap,
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let base = [("PLANGREP_DEV_MODE", "true")];
        for (name, value) in [
            ("PLANGREP_JOB_TTL", "forever"),
            ("PLANGREP_ORCHESTRATOR_ADDR", "nowhere"),
            ("PLANGREP_STORAGE_URL", "ftp://bucket"),
            ("PLANGREP_PROCESS_CONCURRENCY", "many"),
            ("PLANGREP_DEV_MODE", "maybe"),
            ("PLANGREP_WEBHOOK_SECRET_OVERLAP", "a while"),
        ] {
            let mut settings = Settings::from_pairs(base);
            settings.set(name, value);
            let error = Config::from_settings(&settings).unwrap_err();
            assert_eq!(error.name, name);
            assert!(error.to_string().starts_with(&format!("invalid {name}: ")));
        }
    }
}
