//! `plangrep-storage`: the platform's object storage. Uploaded documents and job results
//! live here, and it is the only disk the services share, so any gateway or orchestrator
//! replica can serve any job (DESIGN.md §3 "Uploads").
//!
//! - [`StorageConfig`]: `PLANGREP_STORAGE_URL` (`file://` in development, `s3://bucket/prefix`
//!   in production) and the AWS settings, read from `Settings`;
//! - [`Storage`]: a cheap-to-clone handle with the operations the services need, most
//!   importantly [`Storage::put_stream`], which streams a body into a multipart upload,
//!   hashing as it goes, under a size limit, and leaves nothing behind when it fails;
//! - [`keys`]: the object layout;
//! - [`StorageError`]/[`PutError`]: errors classified for the callers' one mapping point.
//!
//! Built on `object_store` (no aws-lc-rs: its `ring` provider signs requests; the services
//! install rustls' ring provider before any HTTP client is built).

#![forbid(unsafe_code)]

mod config;
mod error;
pub mod keys;
mod upload;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;

pub use config::{DEFAULT_STORAGE_URL, STORAGE_URL, StorageConfig};
pub use error::{BoxError, PutError, StorageError};
pub use upload::{PART_SIZE, Stored};

use config::Location;

/// How long to wait for a TCP connection to an S3 endpoint before calling it unavailable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The most one S3 request (a part of at most [`PART_SIZE`], or a streamed GET) may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A handle on the object store; clones share one client.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Prepended to every key (`s3://bucket/prefix` → `prefix/`); empty for `file://`.
    prefix: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Storage {
    /// Opens the store `config` names. `file://` creates its root directory; `s3://` opens
    /// no connection yet (the first request does).
    pub fn open(config: &StorageConfig) -> Result<Self, StorageError> {
        let location = config
            .location()
            .map_err(|e| StorageError::Other(Box::new(e)))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match location {
            Location::Local(root) => {
                std::fs::create_dir_all(&root)?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(root)?
                    // Deleting the last object of a folder removes the folder.
                    .with_automatic_cleanup(true);
                (Arc::new(store), String::new())
            }
            Location::S3 { bucket, prefix } => {
                let retry = object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(15),
                    backoff: object_store::BackoffConfig::default(),
                };
                let options = object_store::ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_allow_http(config.allow_http);
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_client_options(options)
                    .with_retry(retry);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &config.region {
                    builder = builder.with_region(region);
                }
                if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key)
                {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                }
                let prefix = if prefix.is_empty() {
                    prefix
                } else {
                    format!("{prefix}/")
                };
                (Arc::new(builder.build()?), prefix)
            }
            Location::Memory => (
                Arc::new(object_store::memory::InMemory::new()),
                String::new(),
            ),
        };
        Ok(Self { store, prefix })
    }

    /// The store's path of `key`; keys are validated (no `..`, no empty segments).
    fn path(&self, key: &str) -> Result<Path, StorageError> {
        Path::parse(format!("{}{key}", self.prefix)).map_err(|e| StorageError::Other(Box::new(e)))
    }

    /// Writes `bytes` to `key`, replacing any object there.
    #[tracing::instrument(skip_all, fields(key))]
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&self.path(key)?, PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// Create-only write (results are immutable): `Ok(false)`, and nothing written, when
    /// an object already exists at `key`.
    #[tracing::instrument(skip_all, fields(key))]
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<bool, StorageError> {
        let options = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&self.path(key)?, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The whole object (for small objects such as results).
    #[tracing::instrument(skip_all, fields(key))]
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        Ok(self.store.get(&self.path(key)?).await?.bytes().await?)
    }

    /// Streams an object into a local file (the PDF parser reads local files), creating or
    /// truncating it; returns its size. A failed download removes the partial file.
    #[tracing::instrument(skip_all, fields(key))]
    pub async fn download_to(
        &self,
        key: &str,
        path: &std::path::Path,
    ) -> Result<u64, StorageError> {
        let mut stream = self.store.get(&self.path(key)?).await?.into_stream();
        let mut file = tokio::fs::File::create(path).await?;
        let copied = async {
            let mut size = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                file.write_all(&chunk).await?;
                size += chunk.len() as u64;
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok::<_, StorageError>(size)
        }
        .await;
        if copied.is_err() {
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
        }
        copied
    }

    /// Deletes `key`; a missing object is not an error.
    #[tracing::instrument(skip_all, fields(key))]
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The keys under `prefix` (e.g. [`keys::DOCUMENTS_ROOT`]) last modified before
    /// `cutoff`: candidates for orphan clean-up.
    #[tracing::instrument(skip_all, fields(prefix))]
    pub async fn list_older_than(
        &self,
        prefix: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<String>, StorageError> {
        let trimmed = prefix.trim_end_matches('/');
        let root = if trimmed.is_empty() {
            self.prefix.trim_end_matches('/').to_owned()
        } else {
            format!("{}{trimmed}", self.prefix)
        };
        let root = if root.is_empty() {
            None
        } else {
            Some(Path::parse(root).map_err(|e| StorageError::Other(Box::new(e)))?)
        };
        let objects: Vec<_> = self.store.list(root.as_ref()).try_collect().await?;
        Ok(objects
            .into_iter()
            .filter(|meta| meta.last_modified < cutoff)
            .filter_map(|meta| {
                let key = meta
                    .location
                    .as_ref()
                    .strip_prefix(&self.prefix)?
                    .to_owned();
                // `jobs/a` is listed under `jobs/a/…` only, never `jobs/ab`.
                key.starts_with(prefix).then_some(key)
            })
            .collect())
    }
}
