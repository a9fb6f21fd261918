//! The orchestrator's configuration, read from [`Settings`] and validated before anything
//! starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use plangrep_service::{SettingError, Settings};

use crate::crypto::SecretsKey;

/// Everything the orchestrator needs to run.
#[derive(Debug, Clone)]
pub struct Config {
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
    /// Encrypts webhook secrets at rest.
    pub secrets_key: SecretsKey,
    /// Where job and project storage is allocated (`file://` URLs in this build).
    pub storage_root: PathBuf,
    /// How long a job may stay non-terminal.
    pub job_ttl: Duration,
    /// Backstop poll of the outbox when no NOTIFY arrives.
    pub outbox_poll_interval: Duration,
    /// How often expired idempotency records and old outbox rows are deleted.
    pub housekeeping_interval: Duration,
    /// How long published outbox rows are kept (for inspection and replays).
    pub outbox_retention: Duration,
}

impl Config {
    /// Reads and validates the configuration.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        let dev_mode = settings.flag("PLANGREP_DEV_MODE", false)?;
        let secrets_key = match settings.raw("PLANGREP_SECRETS_KEY") {
            Some(encoded) => SecretsKey::from_base64(encoded)
                .map_err(|problem| SettingError::new("PLANGREP_SECRETS_KEY", problem))?,
            None if dev_mode => {
                tracing::warn!("PLANGREP_SECRETS_KEY unset: using the insecure dev-mode key");
                SecretsKey::insecure_dev_key()
            }
            None => {
                return Err(SettingError::new(
                    "PLANGREP_SECRETS_KEY",
                    "required outside dev mode (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)",
                ));
            }
        };
        Ok(Self {
            database_url: settings.database_url(),
            amqp_url: settings.amqp_url(),
            amqp_prefix: settings.string("PLANGREP_AMQP_PREFIX", ""),
            grpc_addr: settings.socket_addr("PLANGREP_ORCHESTRATOR_ADDR", "0.0.0.0:50051")?,
            http_addr: settings.socket_addr("PLANGREP_ORCHESTRATOR_HTTP_ADDR", "0.0.0.0:9091")?,
            secrets_key,
            storage_root: storage_root(
                &settings.string("PLANGREP_STORAGE_URL", "file://./var/storage"),
            )?,
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

fn storage_root(url: &str) -> Result<PathBuf, SettingError> {
    let problem = |text: &str| SettingError::new("PLANGREP_STORAGE_URL", text);
    let path = url
        .strip_prefix("file://")
        .ok_or_else(|| problem("only file:// storage is supported by this build"))?;
    if path.is_empty() {
        return Err(problem("file:// needs a path"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bad_values_name_their_variable() {
        let base = [("PLANGREP_DEV_MODE", "true")];
        for (name, value) in [
            ("PLANGREP_JOB_TTL", "forever"),
            ("PLANGREP_ORCHESTRATOR_ADDR", "nowhere"),
            ("PLANGREP_STORAGE_URL", "s3://bucket"),
            ("PLANGREP_DEV_MODE", "maybe"),
        ] {
            let mut settings = Settings::from_pairs(base);
            settings.set(name, value);
            let error = Config::from_settings(&settings).unwrap_err();
            assert_eq!(error.name, name);
            assert!(error.to_string().starts_with(&format!("invalid {name}: ")));
        }
    }
}
