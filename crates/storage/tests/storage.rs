//! `Storage` against both real backends: a `file://` store in a temp directory and the
//! development S3 server (SeaweedFS, `scripts/s3-server.sh`). Every scenario runs on both;
//! each test uses its own directory or key prefix.

use std::convert::Infallible;

use bytes::Bytes;
use chrono::{Duration, Utc};
use futures_util::stream;
use plangrep_service::Settings;
use plangrep_storage::{PART_SIZE, PutError, Storage, StorageConfig, StorageError, keys};
use plangrep_test_support::ports::ReservedPort;
use plangrep_test_support::random_token;
use plangrep_test_support::s3::{require_s3_server, s3_settings};
use sha2::{Digest, Sha256};

/// A store and what removes its leftovers.
struct TestStore {
    storage: Storage,
    local_root: Option<std::path::PathBuf>,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(root) = &self.local_root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

impl TestStore {
    async fn local() -> Self {
        let root = std::env::temp_dir().join(format!("plangrep-storage-{}", random_token()));
        let config = StorageConfig::from_settings(&Settings::from_pairs([(
            "PLANGREP_STORAGE_URL",
            format!("file://{}", root.display()),
        )]))
        .unwrap();
        let storage = Storage::open(&config).expect("open file:// store");
        assert!(root.is_dir(), "open creates the root directory");
        Self {
            storage,
            local_root: Some(root),
        }
    }

    async fn s3() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        require_s3_server().await;
        let prefix = format!("storage-tests/{}", random_token());
        let config = StorageConfig::from_settings(&Settings::from_pairs(s3_settings(&prefix)))
            .expect("S3 settings");
        Self {
            storage: Storage::open(&config).expect("open s3:// store"),
            local_root: None,
        }
    }

    /// Every key left in the store.
    async fn remaining(&self) -> Vec<String> {
        self.storage
            .list_older_than("", Utc::now() + Duration::days(1))
            .await
            .expect("list")
    }

    /// For the local store: every file left on disk, staged parts included.
    fn files_on_disk(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        if let Some(root) = &self.local_root {
            walk(root, &mut files);
        }
        files
    }

    async fn assert_empty(&self) {
        assert_eq!(self.remaining().await, Vec::<String>::new());
        assert_eq!(self.files_on_disk(), Vec::<std::path::PathBuf>::new());
    }
}

/// `size` deterministic bytes, streamed in `chunk`-sized pieces.
fn body(
    size: usize,
    chunk: usize,
) -> (
    Vec<u8>,
    impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin,
) {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, Infallible>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (data, stream::iter(chunks))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn a_small_object_round_trips(store: TestStore) {
    let key = keys::result("job_round_trip");
    store
        .storage
        .put(&key, Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();
    assert_eq!(
        store.storage.get(&key).await.unwrap(),
        Bytes::from_static(b"{\"v\":1}")
    );
    store
        .storage
        .put(&key, Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    assert_eq!(
        store.storage.get(&key).await.unwrap(),
        Bytes::from_static(b"{\"v\":2}")
    );
    assert!(matches!(
        store.storage.get("jobs/none/result.json").await,
        Err(StorageError::NotFound)
    ));
    store.storage.delete(&key).await.unwrap();
    store.assert_empty().await;
}

async fn a_body_larger_than_one_part_streams_and_downloads_intact(store: TestStore) {
    let key = keys::document("job_stream", "doc_big");
    let size = 2 * PART_SIZE + 12_345;
    let (data, stream) = body(size, 64 * 1024 + 7);
    let stored = store
        .storage
        .put_stream(&key, stream, size as u64)
        .await
        .unwrap();
    assert_eq!(stored.size_bytes, size as u64);
    assert_eq!(stored.sha256, sha256_hex(&data));
    assert_eq!(store.storage.get(&key).await.unwrap().as_ref(), &data[..]);

    let target = std::env::temp_dir().join(format!("plangrep-download-{}", random_token()));
    let downloaded = store.storage.download_to(&key, &target).await.unwrap();
    assert_eq!(downloaded, size as u64);
    assert_eq!(std::fs::read(&target).unwrap(), data);
    std::fs::remove_file(&target).unwrap();
    assert!(matches!(
        store
            .storage
            .download_to("jobs/none/documents/doc_x", &target)
            .await,
        Err(StorageError::NotFound)
    ));
    assert!(!target.exists(), "a failed download leaves no file");

    store.storage.delete(&key).await.unwrap();
    store.assert_empty().await;
}

async fn an_empty_body_is_an_empty_object(store: TestStore) {
    let key = keys::document("job_empty", "doc_empty");
    let stored = store
        .storage
        .put_stream(
            &key,
            stream::iter(Vec::<Result<Bytes, Infallible>>::new()),
            10,
        )
        .await
        .unwrap();
    assert_eq!(stored.size_bytes, 0);
    assert_eq!(stored.sha256, sha256_hex(b""));
    assert!(store.storage.get(&key).await.unwrap().is_empty());
    store.storage.delete(&key).await.unwrap();
}

async fn a_body_over_the_limit_is_refused_and_leaves_nothing(store: TestStore) {
    let key = keys::document("job_too_large", "doc_1");
    // Over the limit after more than one part was uploaded.
    let limit = PART_SIZE as u64 + 10;
    let (_, stream) = body(2 * PART_SIZE, 1024 * 1024);
    let result = store.storage.put_stream(&key, stream, limit).await;
    assert!(matches!(result, Err(PutError::TooLarge)), "{result:?}");
    // Exactly at the limit is fine.
    let (_, stream) = body(100, 30);
    store.storage.put_stream(&key, stream, 100).await.unwrap();
    store.storage.delete(&key).await.unwrap();
    assert!(matches!(
        store.storage.get(&key).await,
        Err(StorageError::NotFound)
    ));
    store.assert_empty().await;
}

async fn a_failing_body_aborts_the_upload(store: TestStore) {
    let key = keys::document("job_body_error", "doc_1");
    let chunks: Vec<Result<Bytes, &'static str>> = vec![
        Ok(Bytes::from(vec![1u8; PART_SIZE + 1])),
        Ok(Bytes::from_static(b"more")),
        Err("client went away"),
    ];
    let result = store
        .storage
        .put_stream(&key, stream::iter(chunks), u64::MAX)
        .await;
    assert!(
        matches!(result, Err(PutError::Body("client went away"))),
        "{result:?}"
    );
    store.assert_empty().await;
}

async fn put_new_never_overwrites(store: TestStore) {
    let key = keys::result("job_immutable");
    assert!(
        store
            .storage
            .put_new(&key, Bytes::from_static(b"first"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .storage
            .put_new(&key, Bytes::from_static(b"second"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.storage.get(&key).await.unwrap(),
        Bytes::from_static(b"first")
    );
    store.storage.delete(&key).await.unwrap();
}

async fn old_objects_are_listed_under_a_prefix(store: TestStore) {
    let a = keys::document("job_a", "doc_1");
    let b = keys::document("job_a", "doc_2");
    let other = keys::document("job_ab", "doc_3");
    for key in [&a, &b, &other] {
        store
            .storage
            .put(key, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let past = Utc::now() - Duration::hours(1);
    let future = Utc::now() + Duration::hours(1);
    assert!(
        store
            .storage
            .list_older_than(keys::DOCUMENTS_ROOT, past)
            .await
            .unwrap()
            .is_empty()
    );
    let mut listed = store
        .storage
        .list_older_than(&keys::job_prefix("job_a"), future)
        .await
        .unwrap();
    listed.sort();
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    let mut all = store
        .storage
        .list_older_than(keys::DOCUMENTS_ROOT, future)
        .await
        .unwrap();
    all.sort();
    assert_eq!(all, vec![a.clone(), b.clone(), other.clone()]);
    for key in [&a, &b, &other] {
        store.storage.delete(key).await.unwrap();
    }
    store.assert_empty().await;
}

async fn deleting_a_missing_object_succeeds(store: TestStore) {
    store
        .storage
        .delete("jobs/none/documents/doc_none")
        .await
        .unwrap();
    store
        .storage
        .delete("jobs/none/documents/doc_none")
        .await
        .unwrap();
}

/// Runs every scenario on one backend.
macro_rules! scenarios {
    ($backend:ident: $($scenario:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::TestStore::$backend().await).await;
                }
            )*
        }
    };
}

scenarios!(local:
    a_small_object_round_trips,
    a_body_larger_than_one_part_streams_and_downloads_intact,
    an_empty_body_is_an_empty_object,
    a_body_over_the_limit_is_refused_and_leaves_nothing,
    a_failing_body_aborts_the_upload,
    put_new_never_overwrites,
    old_objects_are_listed_under_a_prefix,
    deleting_a_missing_object_succeeds,
);

scenarios!(s3:
    a_small_object_round_trips,
    a_body_larger_than_one_part_streams_and_downloads_intact,
    an_empty_body_is_an_empty_object,
    a_body_over_the_limit_is_refused_and_leaves_nothing,
    a_failing_body_aborts_the_upload,
    put_new_never_overwrites,
    old_objects_are_listed_under_a_prefix,
    deleting_a_missing_object_succeeds,
);

#[tokio::test]
async fn an_s3_server_that_is_down_is_unavailable_not_a_hang() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A port nobody listens on, held for the test.
    let closed = ReservedPort::new();
    let port = closed.addr().port();
    let mut settings = s3_settings("down");
    settings.retain(|(name, _)| *name != "AWS_ENDPOINT_URL");
    settings.push(("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")));
    let storage =
        Storage::open(&StorageConfig::from_settings(&Settings::from_pairs(settings)).unwrap())
            .unwrap();
    let started = std::time::Instant::now();
    let result = storage.get("jobs/x/result.json").await;
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "{result:?}"
    );
    let (_, stream) = body(10, 10);
    let result = storage
        .put_stream("jobs/x/documents/doc_1", stream, 100)
        .await;
    assert!(
        matches!(result, Err(PutError::Storage(StorageError::Unavailable(_)))),
        "{result:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[tokio::test]
async fn the_s3_server_checks_credentials() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    require_s3_server().await;
    let mut settings = s3_settings(&format!("storage-tests/{}", random_token()));
    settings.retain(|(name, _)| *name != "AWS_SECRET_ACCESS_KEY");
    settings.push(("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_owned()));
    let storage =
        Storage::open(&StorageConfig::from_settings(&Settings::from_pairs(settings)).unwrap())
            .unwrap();
    let result = storage
        .put("jobs/x/result.json", Bytes::from_static(b"x"))
        .await;
    assert!(matches!(result, Err(StorageError::Other(_))), "{result:?}");
}
