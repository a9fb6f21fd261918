//! Storage errors, classified for the callers' one mapping point: a missing object, a
//! store that is down (the gateway answers 503 and the pipeline retries), anything else
//! (a bug or a misconfiguration).

/// A boxed cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that key.
    #[error("no such object")]
    NotFound,
    /// The store did not answer (connection refused, timeout, 5xx): retry later.
    #[error("object storage is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else: refused credentials, an invalid key, a local I/O error.
    #[error("object storage error: {0}")]
    Other(#[source] BoxError),
}

/// Why [`Storage::put_stream`](crate::Storage::put_stream) stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PutError<E> {
    /// The body exceeded `max_bytes`; the upload was aborted.
    #[error("the body exceeds the size limit")]
    TooLarge,
    /// The body stream failed (a client that disconnected, malformed framing).
    #[error("reading the body failed: {0}")]
    Body(E),
    /// The store failed.
    #[error(transparent)]
    Storage(StorageError),
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Self::NotFound,
            error if is_unavailable(&error) => Self::Unavailable(Box::new(error)),
            error => Self::Other(Box::new(error)),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(error: std::io::Error) -> Self {
        Self::Other(Box::new(error))
    }
}

/// A transport failure (the store is unreachable, timed out, or dropped the connection)
/// or a 5xx answer from it.
fn is_unavailable(error: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as Kind;
            return matches!(
                http.kind(),
                Kind::Connect | Kind::Request | Kind::Timeout | Kind::Interrupted
            );
        }
        // object_store 0.14 keeps its retry error (which carries the HTTP status) private;
        // its message is the only public trace of a 5xx ("…status code: 503 …").
        let message = current.to_string();
        if let Some((_, rest)) = message.split_once("non-2xx status code: ")
            && rest.starts_with('5')
        {
            return true;
        }
        cause = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_and_server_errors_are_classified() {
        let not_found = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(matches!(
            StorageError::from(not_found),
            StorageError::NotFound
        ));
        let server = object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT in 1s - Server returned non-2xx status code: 503 Service Unavailable: slow down".into(),
        };
        assert!(matches!(
            StorageError::from(server),
            StorageError::Unavailable(_)
        ));
        let client = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 400 Bad Request".into(),
        };
        assert!(matches!(StorageError::from(client), StorageError::Other(_)));
    }
}
