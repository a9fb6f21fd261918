//! Where objects live: `PLANGREP_STORAGE_URL` plus the usual AWS settings for S3-compatible
//! stores (SPEC §7), read from [`Settings`] so that one process (a test) can hold several
//! configurations at once.

use plangrep_service::{SettingError, Settings};

/// The storage URL setting.
pub const STORAGE_URL: &str = "PLANGREP_STORAGE_URL";

/// The development default: a folder next to the working directory.
pub const DEFAULT_STORAGE_URL: &str = "file://./var/storage";

/// Storage settings, validated (the URL's scheme and bucket are known to be usable).
#[derive(Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `file:///abs/dir`, `file://./rel/dir`, `s3://bucket[/prefix]` or `memory://`.
    pub url: String,
    /// `AWS_ENDPOINT_URL`: an S3-compatible server (SeaweedFS, MinIO, R2); `None` is AWS.
    pub endpoint: Option<String>,
    /// `AWS_REGION`; `None` lets the client default (`us-east-1`).
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`; never printed.
    pub secret_access_key: Option<String>,
    /// `AWS_ALLOW_HTTP`: plain-HTTP endpoints (development servers only).
    pub allow_http: bool,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// The parsed form of a storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A local directory (created on open).
    Local(std::path::PathBuf),
    /// An S3 bucket and a key prefix (no leading or trailing slash; may be empty).
    S3 { bucket: String, prefix: String },
    /// In-process memory (tests and experiments).
    Memory,
}

impl StorageConfig {
    /// `PLANGREP_STORAGE_URL` (default `file://./var/storage`), `AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        let config = Self {
            url: settings.string(STORAGE_URL, DEFAULT_STORAGE_URL),
            endpoint: settings.raw("AWS_ENDPOINT_URL").map(str::to_owned),
            region: settings.raw("AWS_REGION").map(str::to_owned),
            access_key_id: settings.raw("AWS_ACCESS_KEY_ID").map(str::to_owned),
            secret_access_key: settings.raw("AWS_SECRET_ACCESS_KEY").map(str::to_owned),
            allow_http: settings.flag("AWS_ALLOW_HTTP", false)?,
        };
        config.location()?;
        if let Some(endpoint) = &config.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(SettingError::new(
                "AWS_ENDPOINT_URL",
                format!("{endpoint:?} is not an http(s) URL"),
            ));
        }
        if config.access_key_id.is_some() != config.secret_access_key.is_some() {
            return Err(SettingError::new(
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together",
            ));
        }
        Ok(config)
    }

    /// A local-directory configuration (tests, tools).
    pub fn local(dir: &std::path::Path) -> Self {
        Self {
            url: format!("file://{}", dir.display()),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
        }
    }

    pub(crate) fn location(&self) -> Result<Location, SettingError> {
        let invalid =
            |problem: &str| SettingError::new(STORAGE_URL, format!("{:?} {problem}", self.url));
        if let Some(path) = self.url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("names no directory"));
            }
            Ok(Location::Local(path.into()))
        } else if let Some(rest) = self
            .url
            .strip_prefix("s3://")
            .or_else(|| self.url.strip_prefix("s3a://"))
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(invalid(
                    "does not name a valid S3 bucket (s3://bucket[/prefix])",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|s| s == "." || s == "..")
                || prefix.contains("//")
                || prefix.contains(['?', '#'])
            {
                return Err(invalid("has an invalid key prefix"));
            }
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            })
        } else if self.url == "memory://" || self.url == "memory:///" {
            Ok(Location::Memory)
        } else {
            Err(invalid("is not a file://, s3:// or memory:// URL"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<StorageConfig, SettingError> {
        StorageConfig::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn the_default_is_a_local_folder() {
        let config = config(&[]).unwrap();
        assert_eq!(config.url, DEFAULT_STORAGE_URL);
        assert_eq!(
            config.location().unwrap(),
            Location::Local("./var/storage".into())
        );
    }

    #[test]
    fn s3_urls_name_a_bucket_and_an_optional_prefix() {
        let location = |url| config(&[(STORAGE_URL, url)]).unwrap().location().unwrap();
        assert_eq!(
            location("s3://plangrep-test/a/b/"),
            Location::S3 {
                bucket: "plangrep-test".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            location("s3://bucket"),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        for bad in [
            "s3://",
            "s3://B",
            "s3://ok-bucket/../x",
            "ftp://x",
            "file://",
        ] {
            let error = config(&[(STORAGE_URL, bad)]).unwrap_err();
            assert_eq!(error.name, STORAGE_URL, "{bad}");
        }
    }

    #[test]
    fn aws_settings_are_validated_and_the_secret_is_never_printed() {
        let config = config(&[
            (STORAGE_URL, "s3://bucket/p"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:8333"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_ALLOW_HTTP", "true"),
        ])
        .unwrap();
        assert!(config.allow_http);
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));

        let error = super::StorageConfig::from_settings(&Settings::from_pairs([(
            "AWS_ALLOW_HTTP",
            "maybe",
        )]))
        .unwrap_err();
        assert_eq!(error.name, "AWS_ALLOW_HTTP");
        let error = StorageConfig::from_settings(&Settings::from_pairs([(
            "AWS_ENDPOINT_URL",
            "localhost",
        )]))
        .unwrap_err();
        assert_eq!(error.name, "AWS_ENDPOINT_URL");
        let error =
            StorageConfig::from_settings(&Settings::from_pairs([("AWS_ACCESS_KEY_ID", "only")]))
                .unwrap_err();
        assert_eq!(error.name, "AWS_SECRET_ACCESS_KEY");
    }
}
