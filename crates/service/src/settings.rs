//! Layered settings: built-in defaults, then an optional TOML file (`--config`, flat
//! `NAME = "value"` pairs using the environment variable names), then the environment.
//! Every parse error names the variable, so a bad deployment fails with one clear line.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The name of the pool size setting every service reads.
pub const DATABASE_POOL_SIZE: &str = "PLANGREP_DATABASE_POOL_SIZE";

/// A setting that is present but unusable, or missing but required.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name}: {problem}")]
pub struct SettingError {
    /// The variable name, e.g. `PLANGREP_WEBHOOK_TIMEOUT`.
    pub name: String,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingError {
    /// An error about `name`.
    pub fn new(name: &str, problem: impl Display) -> Self {
        Self {
            name: name.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// The raw values a service reads its configuration from.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: HashMap<String, String>,
}

impl Settings {
    /// Settings from the process environment, layered over `config_file` when given.
    pub fn load(config_file: Option<&Path>) -> Result<Self, SettingError> {
        let mut settings = match config_file {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        settings.values.extend(std::env::vars());
        Ok(settings)
    }

    /// Settings from explicit pairs only (tests, embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn from_toml_file(path: &Path) -> Result<Self, SettingError> {
        let fail = |problem: String| SettingError::new("--config", problem);
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let values = table
            .into_iter()
            .map(|(key, value)| match value {
                toml::Value::String(s) => Ok((key, s)),
                toml::Value::Integer(i) => Ok((key, i.to_string())),
                toml::Value::Float(f) => Ok((key, f.to_string())),
                toml::Value::Boolean(b) => Ok((key, b.to_string())),
                other => Err(fail(format!("{key}: unsupported value {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { values })
    }

    /// Overrides one value (tests).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_owned(), value.into());
    }

    /// The raw value, if set and not empty.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `DATABASE_URL`, defaulting to the local development server (SPEC §7).
    pub fn database_url(&self) -> String {
        self.string(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/plangrep",
        )
    }

    /// `AMQP_URL`, defaulting to the local development broker (SPEC §7).
    pub fn amqp_url(&self) -> String {
        self.string("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    }

    /// `PLANGREP_DATABASE_POOL_SIZE`: the most PostgreSQL connections this service's pool
    /// opens (each service has its own default; deployments size it so every replica fits
    /// the server's `max_connections`, see ADR 0014).
    pub fn database_pool_size(&self, default: u32) -> Result<u32, SettingError> {
        match self.parse(DATABASE_POOL_SIZE, default)? {
            0 => Err(SettingError::new(DATABASE_POOL_SIZE, "must be at least 1")),
            size => Ok(size),
        }
    }

    /// A string, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_owned()
    }

    /// Any `FromStr` value, or `default`.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, SettingError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| SettingError::new(name, e)),
        }
    }

    /// A humantime duration (`250ms`, `5s`, `10h`, `3d`), or `default`.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, SettingError> {
        match self.raw(name) {
            None => Ok(default),
            Some(raw) => humantime::parse_duration(raw)
                .map_err(|e| SettingError::new(name, format!("{raw:?} is not a duration ({e})"))),
        }
    }

    /// `true`/`false` (also `1`/`0`), or `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, SettingError> {
        match self.raw(name) {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(raw) => Err(SettingError::new(
                name,
                format!("{raw:?} is not true or false"),
            )),
        }
    }

    /// A socket address, or `default`.
    pub fn socket_addr(&self, name: &str, default: &str) -> Result<SocketAddr, SettingError> {
        let raw = self.raw(name).unwrap_or(default);
        raw.parse()
            .map_err(|_| SettingError::new(name, format!("{raw:?} is not a host:port address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_with_defaults_and_errors_name_the_variable() {
        let settings = Settings::from_pairs([
            ("PLANGREP_WEBHOOK_TIMEOUT", "250ms"),
            ("PLANGREP_JOB_TTL", "soon"),
            ("FLAG", "yes"),
        ]);
        assert_eq!(
            settings
                .duration("PLANGREP_WEBHOOK_TIMEOUT", Duration::ZERO)
                .unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            settings
                .duration("MISSING", Duration::from_secs(3))
                .unwrap(),
            Duration::from_secs(3)
        );
        let error = settings
            .duration("PLANGREP_JOB_TTL", Duration::ZERO)
            .unwrap_err();
        assert!(error.to_string().starts_with("invalid PLANGREP_JOB_TTL: "));
        assert!(
            settings
                .flag("FLAG", false)
                .unwrap_err()
                .to_string()
                .contains("FLAG")
        );
        assert!(settings.socket_addr("ADDR", "0.0.0.0:8080").is_ok());
        assert_eq!(settings.database_pool_size(7).unwrap(), 7);
        for (raw, expected) in [("3", Some(3)), ("0", None), ("many", None)] {
            let settings = Settings::from_pairs([(DATABASE_POOL_SIZE, raw)]);
            assert_eq!(settings.database_pool_size(7).ok(), expected, "{raw}");
        }
    }
}

/// The URL a gRPC client dials for an address setting such as `PLANGREP_ORCHESTRATOR_ADDR`,
/// which is also the server's listen address: `0.0.0.0:50051` becomes
/// `http://127.0.0.1:50051`, `job-orchestrator:50051` becomes `http://job-orchestrator:50051`.
pub fn grpc_endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        return addr.to_owned();
    }
    let local = addr
        .strip_prefix("0.0.0.0:")
        .or_else(|| addr.strip_prefix("[::]:"))
        .map(|port| format!("127.0.0.1:{port}"));
    format!("http://{}", local.as_deref().unwrap_or(addr))
}

#[cfg(test)]
mod endpoint_tests {
    use super::grpc_endpoint;

    #[test]
    fn listen_addresses_become_dialable_urls() {
        assert_eq!(grpc_endpoint("0.0.0.0:50051"), "http://127.0.0.1:50051");
        assert_eq!(grpc_endpoint("[::]:50051"), "http://127.0.0.1:50051");
        assert_eq!(
            grpc_endpoint("job-orchestrator:50051"),
            "http://job-orchestrator:50051"
        );
        assert_eq!(grpc_endpoint("http://x:1"), "http://x:1");
    }
}
