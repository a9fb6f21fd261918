//! Streaming uploads: a body of unknown length goes into a multipart upload part by part,
//! hashed on the way, under a size limit. At most one part is held in memory; a body that
//! fails or grows too large aborts the upload, so no object (and no staged part) is left.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::{MultipartUpload, ObjectStoreExt, PutPayloadMut};
use sha2::{Digest, Sha256};

use crate::{PutError, Storage, StorageError};

/// Size of every multipart part but the last: S3's minimum part size (5 MiB), which is also
/// the most [`Storage::put_stream`] keeps in memory per upload.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Bytes written.
    pub size_bytes: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// A multipart upload that is aborted if dropped unfinished (a cancelled request):
/// the abort then runs on a spawned task, best effort.
struct PendingUpload {
    upload: Option<Box<dyn MultipartUpload>>,
}

impl PendingUpload {
    fn get(&mut self) -> &mut Box<dyn MultipartUpload> {
        self.upload.as_mut().expect("upload still pending")
    }

    async fn abort(mut self) {
        if let Some(mut upload) = self.upload.take()
            && let Err(error) = upload.abort().await
        {
            tracing::warn!(%error, "aborting a multipart upload failed; housekeeping removes it");
        }
    }

    async fn complete(mut self) -> Result<(), StorageError> {
        let mut upload = self.upload.take().expect("upload still pending");
        match upload.complete().await {
            Ok(_) => Ok(()),
            Err(error) => {
                let _ = upload.abort().await;
                Err(error.into())
            }
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

impl Storage {
    /// Streams `body` into `key` with a multipart upload, hashing while streaming; never
    /// holds more than one part ([`PART_SIZE`]) in memory. More than `max_bytes` aborts the
    /// upload and returns [`PutError::TooLarge`]; a body error aborts it and returns
    /// [`PutError::Body`]. Either way nothing is left at `key`.
    #[tracing::instrument(skip_all, fields(key, max_bytes))]
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        mut body: S,
        max_bytes: u64,
    ) -> Result<Stored, PutError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    {
        let path = self.path(key).map_err(PutError::Storage)?;
        let mut upload = PendingUpload {
            upload: Some(
                self.store
                    .put_multipart(&path)
                    .await
                    .map_err(|e| PutError::Storage(e.into()))?,
            ),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut part = PutPayloadMut::new();
        loop {
            let chunk = match body.next().await {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => {
                    upload.abort().await;
                    return Err(PutError::Body(error));
                }
            };
            size += chunk.len() as u64;
            if size > max_bytes {
                upload.abort().await;
                return Err(PutError::TooLarge);
            }
            hasher.update(&chunk);
            let mut chunk = chunk;
            // Cut exact parts: some S3-compatible stores require equal part sizes.
            while part.content_length() + chunk.len() >= PART_SIZE {
                let head = chunk.split_to(PART_SIZE - part.content_length());
                part.push(head);
                let full = std::mem::take(&mut part).freeze();
                if let Err(error) = upload.get().put_part(full).await {
                    upload.abort().await;
                    return Err(PutError::Storage(error.into()));
                }
            }
            if !chunk.is_empty() {
                part.push(chunk);
            }
        }
        // The last part (possibly empty: an empty object is still an object).
        if (!part.is_empty() || size == 0)
            && let Err(error) = upload.get().put_part(part.freeze()).await
        {
            upload.abort().await;
            return Err(PutError::Storage(error.into()));
        }
        upload.complete().await.map_err(PutError::Storage)?;
        Ok(Stored {
            size_bytes: size,
            sha256: hex(&hasher.finalize()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
