//! The gateway's configuration, read from [`Settings`] and validated before anything
//! starts.

use std::net::SocketAddr;
use std::time::Duration;

use plangrep_core::validate::DestinationPolicy;
use plangrep_service::internal_auth::InternalToken;
use plangrep_service::settings::grpc_endpoint;
use plangrep_service::{SettingError, Settings};
use plangrep_storage::StorageConfig;

use crate::rate_limit::resp::RedisTarget;

/// The default of `PLANGREP_UPLOAD_MAX_FILE_BYTES` (SPEC §7): 512 MiB.
pub const DEFAULT_UPLOAD_MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// The gateway's default `PLANGREP_DATABASE_POOL_SIZE`.
pub const DEFAULT_POOL_SIZE: u32 = 20;

/// The gateway's default `PLANGREP_API_KEY_CACHE_TTL`.
pub const DEFAULT_API_KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// The public listener's limits on slow and numerous clients (ADR 0014).
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings {
    /// `PLANGREP_GATEWAY_MAX_CONNECTIONS` (default 1024): connections served at once;
    /// more wait in the listen backlog.
    pub max_connections: usize,
    /// `PLANGREP_GATEWAY_HEADER_READ_TIMEOUT` (default 30 s): time to send a request head
    /// (also how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// `PLANGREP_GATEWAY_REQUEST_TIMEOUT` (default 30 s): time to answer a request once its
    /// head is read (408 after it).
    pub request_timeout: Duration,
    /// `PLANGREP_UPLOAD_TIMEOUT` (default 1 h): the same for `POST /jobs/{jobId}/files`.
    pub upload_timeout: Duration,
}

impl EdgeSettings {
    fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        let max_connections = settings.parse("PLANGREP_GATEWAY_MAX_CONNECTIONS", 1024usize)?;
        if max_connections == 0 {
            return Err(SettingError::new(
                "PLANGREP_GATEWAY_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        let nonzero = |name: &str, default: Duration| {
            let value = settings.duration(name, default)?;
            if value.is_zero() {
                return Err(SettingError::new(name, "must be longer than zero"));
            }
            Ok(value)
        };
        Ok(Self {
            max_connections,
            header_read_timeout: nonzero(
                "PLANGREP_GATEWAY_HEADER_READ_TIMEOUT",
                Duration::from_secs(30),
            )?,
            request_timeout: nonzero("PLANGREP_GATEWAY_REQUEST_TIMEOUT", Duration::from_secs(30))?,
            upload_timeout: nonzero("PLANGREP_UPLOAD_TIMEOUT", Duration::from_secs(3600))?,
        })
    }
}

/// Everything the gateway needs to run.
#[derive(Clone)]
pub struct Config {
    /// Span export (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`).
    pub export: plangrep_telemetry::ExportConfig,
    /// PostgreSQL URL; the gateway's tables live in the `gateway` schema.
    pub database_url: String,
    /// Public listen address.
    pub addr: SocketAddr,
    /// Ops listen address (`/healthz`, `/readyz`, `/metrics`): not for customers.
    pub ops_addr: SocketAddr,
    /// Bearer token of the admin API; `None` turns the admin API off.
    pub admin_token: Option<String>,
    /// The orchestrator's gRPC endpoint.
    pub orchestrator_endpoint: String,
    /// The dispatcher's gRPC endpoint.
    pub dispatcher_endpoint: String,
    /// The credential of internal gRPC calls (`PLANGREP_INTERNAL_TOKEN`).
    pub internal_token: InternalToken,
    /// Which webhook destinations are accepted.
    pub destination_policy: DestinationPolicy,
    /// Sustained requests per second per API key.
    pub rate_limit_per_second: f64,
    /// Burst size per API key.
    pub rate_limit_burst: u32,
    /// Object storage for uploaded documents (`PLANGREP_STORAGE_URL`, `AWS_*`).
    pub storage: StorageConfig,
    /// The largest single uploaded file (`PLANGREP_UPLOAD_MAX_FILE_BYTES`).
    pub upload_max_file_bytes: u64,
    /// Timeouts and the connection cap of the public listener.
    pub edge: EdgeSettings,
    /// `PLANGREP_REDIS_URL`: per-key rate limits shared by every replica; `None` keeps
    /// them per replica.
    pub redis: Option<RedisTarget>,
    /// `PLANGREP_REDIS_KEY_PREFIX` (default `plangrep:ratelimit:`): prefix of the buckets'
    /// Redis keys.
    pub redis_key_prefix: String,
    /// `PLANGREP_DATABASE_POOL_SIZE` (default 20).
    pub database_pool_size: u32,
    /// `PLANGREP_API_KEY_CACHE_TTL` (default `5s`, `0s` turns it off): how long an
    /// authenticated key is remembered at most (ADR 0024).
    pub api_key_cache_ttl: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("ops_addr", &self.ops_addr)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("orchestrator_endpoint", &self.orchestrator_endpoint)
            .field("dispatcher_endpoint", &self.dispatcher_endpoint)
            .field("destination_policy", &self.destination_policy)
            .field("storage", &self.storage)
            .field("upload_max_file_bytes", &self.upload_max_file_bytes)
            .field("edge", &self.edge)
            .field("redis", &self.redis)
            .field("database_pool_size", &self.database_pool_size)
            .field("api_key_cache_ttl", &self.api_key_cache_ttl)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads and validates the configuration.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        let admin_token = settings.raw("PLANGREP_ADMIN_TOKEN").map(str::to_owned);
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(SettingError::new(
                "PLANGREP_ADMIN_TOKEN",
                "must be at least 16 characters",
            ));
        }
        let destination_policy = if settings.flag("PLANGREP_WEBHOOK_ALLOW_INSECURE", false)? {
            DestinationPolicy::AllowInsecure
        } else {
            DestinationPolicy::PublicHttpsOnly
        };
        Ok(Self {
            export: plangrep_telemetry::ExportConfig::new(
                settings.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
                settings.raw("OTEL_SERVICE_NAME"),
            ),
            database_url: settings.database_url(),
            addr: settings.socket_addr("PLANGREP_GATEWAY_ADDR", "0.0.0.0:8080")?,
            ops_addr: settings.socket_addr("PLANGREP_GATEWAY_OPS_ADDR", "0.0.0.0:9090")?,
            admin_token,
            orchestrator_endpoint: grpc_endpoint(
                &settings.string("PLANGREP_ORCHESTRATOR_ADDR", "127.0.0.1:50051"),
            ),
            dispatcher_endpoint: grpc_endpoint(
                &settings.string("PLANGREP_DISPATCHER_ADDR", "127.0.0.1:50052"),
            ),
            internal_token: InternalToken::from_settings(settings)?,
            destination_policy,
            rate_limit_per_second: positive(
                settings.parse("PLANGREP_RATE_LIMIT_PER_SECOND", 50.0)?,
                "PLANGREP_RATE_LIMIT_PER_SECOND",
            )?,
            rate_limit_burst: settings.parse("PLANGREP_RATE_LIMIT_BURST", 100u32)?.max(1),
            storage: StorageConfig::from_settings(settings)?,
            upload_max_file_bytes: match settings.parse(
                "PLANGREP_UPLOAD_MAX_FILE_BYTES",
                DEFAULT_UPLOAD_MAX_FILE_BYTES,
            )? {
                0 => {
                    return Err(SettingError::new(
                        "PLANGREP_UPLOAD_MAX_FILE_BYTES",
                        "must be at least 1",
                    ));
                }
                bytes => bytes,
            },
            edge: EdgeSettings::from_settings(settings)?,
            redis: settings
                .raw("PLANGREP_REDIS_URL")
                .map(RedisTarget::parse)
                .transpose()
                .map_err(|problem| SettingError::new("PLANGREP_REDIS_URL", problem))?,
            redis_key_prefix: settings.string("PLANGREP_REDIS_KEY_PREFIX", "plangrep:ratelimit:"),
            database_pool_size: settings.database_pool_size(DEFAULT_POOL_SIZE)?,
            api_key_cache_ttl: settings
                .duration("PLANGREP_API_KEY_CACHE_TTL", DEFAULT_API_KEY_CACHE_TTL)?,
        })
    }
}

fn positive(value: f64, name: &str) -> Result<f64, SettingError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(SettingError::new(name, "must be a positive number"))
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
    fn upload_and_storage_settings_have_defaults_and_errors_name_the_variable() {
        let config = Config::from_settings(&Settings::from_pairs([(
            "PLANGREP_INTERNAL_TOKEN",
            "a-test-token-of-at-least-32-characters",
        )]))
        .unwrap();
        assert_eq!(config.upload_max_file_bytes, 536_870_912);
        assert_eq!(config.storage.url, "file://./var/storage");
        for bad in ["0", "lots"] {
            let settings = Settings::from_pairs([
                ("PLANGREP_DEV_MODE", "true"),
                ("PLANGREP_UPLOAD_MAX_FILE_BYTES", bad),
            ]);
            let error = Config::from_settings(&settings).unwrap_err();
            assert_eq!(error.name, "PLANGREP_UPLOAD_MAX_FILE_BYTES", "{bad}");
        }
        let settings = Settings::from_pairs([
            ("PLANGREP_DEV_MODE", "true"),
            ("PLANGREP_STORAGE_URL", "ftp://x"),
        ]);
        assert_eq!(
            Config::from_settings(&settings).unwrap_err().name,
            "PLANGREP_STORAGE_URL"
        );
    }

    #[test]
    fn edge_redis_and_pool_settings_have_defaults_and_errors_name_the_variable() {
        let config = Config::from_settings(&Settings::from_pairs([TOKEN])).unwrap();
        assert_eq!(config.edge.max_connections, 1024);
        assert_eq!(config.edge.header_read_timeout, Duration::from_secs(30));
        assert_eq!(config.edge.request_timeout, Duration::from_secs(30));
        assert_eq!(config.edge.upload_timeout, Duration::from_secs(3600));
        assert_eq!(config.redis, None);
        assert_eq!(config.database_pool_size, 20);
        assert_eq!(config.api_key_cache_ttl, Duration::from_secs(5));
        for (name, bad) in [
            ("PLANGREP_GATEWAY_MAX_CONNECTIONS", "0"),
            ("PLANGREP_GATEWAY_HEADER_READ_TIMEOUT", "0s"),
            ("PLANGREP_GATEWAY_REQUEST_TIMEOUT", "soon"),
            ("PLANGREP_UPLOAD_TIMEOUT", "0s"),
            ("PLANGREP_REDIS_URL", "rediss://cache"),
            ("PLANGREP_DATABASE_POOL_SIZE", "0"),
            ("PLANGREP_API_KEY_CACHE_TTL", "a while"),
        ] {
            let error =
                Config::from_settings(&Settings::from_pairs([(name, bad), TOKEN])).unwrap_err();
            assert_eq!(error.name, name, "{bad}");
        }
        let settings =
            Settings::from_pairs([("PLANGREP_REDIS_URL", "redis://127.0.0.1:6379/1"), TOKEN]);
        let redis = Config::from_settings(&settings).unwrap().redis.unwrap();
        assert_eq!(redis.addr, "127.0.0.1:6379");
    }
}
