//! The objects one upload request has stored, deleted unless the request succeeds.

use plangrep_storage::Storage;

/// Objects this request stored, deleted unless the request succeeds. Error paths call
/// [`StoredObjects::discard`] (awaited, so nothing is left when the client gets its
/// answer); a request dropped mid-way (client gone) deletes them on a spawned task.
pub struct StoredObjects {
    storage: Storage,
    keys: Vec<String>,
}

impl StoredObjects {
    /// Nothing stored yet.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            keys: Vec::new(),
        }
    }

    /// Records an object this request stored.
    pub fn push(&mut self, key: String) {
        self.keys.push(key);
    }

    /// Deletes every recorded object now (best effort: failures are logged).
    pub async fn discard(&mut self) {
        for key in self.keys.drain(..) {
            if let Err(error) = self.storage.delete(&key).await {
                tracing::warn!(%error, key, "deleting a refused upload failed; housekeeping removes it");
            }
        }
    }

    /// The request succeeded: keep the objects.
    pub fn keep(mut self) {
        self.keys.clear();
    }
}

impl Drop for StoredObjects {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let (storage, keys) = (self.storage.clone(), std::mem::take(&mut self.keys));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for key in keys {
                    let _ = storage.delete(&key).await;
                }
            });
        }
    }
}
