//! The `Idempotency-Key` header (SPEC §2): validated at the edge and turned, together with
//! the request's fingerprint (method, concrete path, canonical JSON body), into the scope
//! the orchestrator stores responses under. The orchestrator owns the guarantee.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use plangrep_core::validate::FieldError;
use plangrep_proto::orchestrator::{Idempotency, Rejection};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The header name.
pub const HEADER: &str = "idempotency-key";
/// Longest accepted key.
pub const MAX_LEN: usize = 256;
/// Metadata entry the orchestrator sets on replayed responses.
pub const REPLAY_METADATA: &str = "x-plangrep-idempotent-replay";

/// The key of a request (if any) and what identifies the request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: Option<String>,
    route: String,
    method: String,
    path: String,
}

/// Validates a raw key: 1–256 printable ASCII characters.
pub fn validate(raw: &[u8]) -> Result<String, FieldError> {
    let issue = |text: &str| FieldError::new("Idempotency-Key", text);
    if raw.is_empty() || raw.len() > MAX_LEN {
        return Err(issue("must be 1 to 256 characters"));
    }
    if !raw.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(issue("must be printable ASCII"));
    }
    Ok(String::from_utf8(raw.to_vec()).expect("ASCII is UTF-8"))
}

impl IdempotencyKey {
    /// The orchestrator's `Idempotency` for a request whose canonical body is `canonical`.
    pub fn scope(&self, canonical: &str) -> Option<Idempotency> {
        let key = self.key.clone()?;
        let fingerprint = Sha256::new()
            .chain_update(self.method.as_bytes())
            .chain_update(b"\n")
            .chain_update(self.path.as_bytes())
            .chain_update(b"\n")
            .chain_update(canonical.as_bytes())
            .finalize()
            .to_vec();
        Some(Idempotency {
            key,
            route: self.route.clone(),
            fingerprint,
        })
    }
}

impl IdempotencyKey {
    /// A 4xx the gateway decided, as the orchestrator's `Rejection` to store under the
    /// key; without a key there is nothing to store and the error is returned as is.
    pub fn reject(&self, error: ApiError) -> Result<Rejection, ApiError> {
        if self.key.is_none() {
            return Err(error);
        }
        Ok(Rejection {
            code: error.code.as_str().to_owned(),
            details: (!error.details.is_empty())
                .then(|| serde_json::to_string(&error.details).ok())
                .flatten(),
            message: error.message,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let key = match parts.headers.get(HEADER) {
            None => None,
            Some(value) => Some(validate(value.as_bytes())?),
        };
        let template = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned());
        Ok(Self {
            key,
            route: format!("{} {template}", parts.method),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        })
    }
}

/// Whether a gRPC response or status was replayed from an idempotency record.
pub fn is_replay(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get(REPLAY_METADATA).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_256_printable_ascii_characters() {
        assert_eq!(validate(b"order-1138").unwrap(), "order-1138");
        assert!(validate(b" spaces are printable ").is_ok());
        assert!(validate(&[b'k'; 256]).is_ok());
        for bad in [
            &b""[..],
            &[b'k'; 257],
            b"tab\there",
            b"nul\0",
            b"del\x7f",
            "é".as_bytes(),
        ] {
            assert_eq!(
                validate(bad).unwrap_err().field,
                "Idempotency-Key",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let key = |method: &str, path: &str| IdempotencyKey {
            key: Some("k".into()),
            route: "POST /projects".into(),
            method: method.into(),
            path: path.into(),
        };
        let base = key("POST", "/a").scope("{}").unwrap().fingerprint;
        assert_eq!(key("POST", "/a").scope("{}").unwrap().fingerprint, base);
        assert_ne!(key("POST", "/b").scope("{}").unwrap().fingerprint, base);
        assert_ne!(key("PUT", "/a").scope("{}").unwrap().fingerprint, base);
        assert_ne!(
            key("POST", "/a").scope("{\"x\":1}").unwrap().fingerprint,
            base
        );
        assert!(
            IdempotencyKey {
                key: None,
                ..key("POST", "/a")
            }
            .scope("{}")
            .is_none()
        );
    }
}
