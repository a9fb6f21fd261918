//! Standard Webhooks signing (standardwebhooks.com), so that any of its libraries verifies
//! our deliveries with the job's secret as is.
//!
//! Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, MAC'd with HMAC-SHA256
//! under the base64-decoded part of the secret after `whsec_`. The header value is
//! `v1,<base64 signature>`, several separated by spaces during a secret rotation.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Signatures older or newer than this (relative to the verifier's clock) are refused.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 5 * 60;

/// A webhook signing secret. Never printed: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

/// A string that is not a `whsec_` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

impl WebhookSecret {
    /// A fresh secret: `whsec_` + base64 of 32 bytes from the OS random source.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        Self { key }
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        let key = BASE64.decode(encoded).map_err(|_| InvalidSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(Self { key })
    }

    /// The `whsec_...` form handed to the customer once. Handle with care.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` header value for one attempt: `v1,<base64 HMAC-SHA256>`.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", BASE64.encode(signature))
}

/// The `webhook-signature` header value signed with each of `secrets` (the current one
/// first during a rotation's overlap): their `v1,` entries, space-separated, so a
/// receiver holding any one of them verifies.
pub fn sign_all(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a delivery failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-timestamp is outside the tolerance window")]
    TimestampOutOfTolerance,
    #[error("no v1 signature in the header matches")]
    NoMatchingSignature,
}

/// Verifies a delivery the way a receiver does: the timestamp must be within `tolerance`
/// seconds of `now` (unix seconds, passed in), and one of the space-separated `v1,`
/// signatures must match (compared in constant time).
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance: i64,
) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > tolerance {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    let matches = signature_header
        .split(' ')
        .filter_map(|candidate| candidate.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|signature| {
            secret
                .mac(id, timestamp, body)
                .verify_slice(&signature)
                .is_ok()
        });
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference implementations.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signing_matches_the_standard_webhooks_reference_vector() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let signature = sign(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes());
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[test]
    fn a_signature_verifies_within_tolerance_and_not_outside() {
        let secret = WebhookSecret::generate();
        let body = br#"{"type":"job.status_changed"}"#;
        let header = sign(&secret, "evt_1", 1_000, body);
        let verify_at = |now| verify(&secret, "evt_1", 1_000, body, &header, now, 300);
        assert_eq!(verify_at(1_000), Ok(()));
        assert_eq!(verify_at(1_300), Ok(()));
        assert_eq!(verify_at(700), Ok(()));
        assert_eq!(verify_at(1_301), Err(VerifyError::TimestampOutOfTolerance));
        assert_eq!(verify_at(699), Err(VerifyError::TimestampOutOfTolerance));
    }

    #[test]
    fn tampering_with_id_timestamp_body_or_secret_fails() {
        let secret = WebhookSecret::generate();
        let header = sign(&secret, "evt_1", 1_000, b"body");
        let check = |secret: &WebhookSecret, id: &str, ts: i64, body: &[u8]| {
            verify(secret, id, ts, body, &header, ts, 300)
        };
        assert_eq!(check(&secret, "evt_1", 1_000, b"body"), Ok(()));
        let failed = Err(VerifyError::NoMatchingSignature);
        assert_eq!(check(&secret, "evt_2", 1_000, b"body"), failed);
        assert_eq!(check(&secret, "evt_1", 1_001, b"body"), failed);
        assert_eq!(check(&secret, "evt_1", 1_000, b"bodY"), failed);
        assert_eq!(
            check(&WebhookSecret::generate(), "evt_1", 1_000, b"body"),
            failed
        );
    }

    #[test]
    fn any_signature_of_a_rotation_list_is_accepted() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let header = format!(
            "{} {}",
            sign(&old, "evt_1", 5, b"x"),
            sign(&new, "evt_1", 5, b"x")
        );
        assert_eq!(verify(&new, "evt_1", 5, b"x", &header, 5, 300), Ok(()));
        assert_eq!(verify(&old, "evt_1", 5, b"x", &header, 5, 300), Ok(()));
    }

    #[test]
    fn signing_with_several_secrets_lists_one_entry_each_and_verifies_with_any() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let header = sign_all(&[new.clone(), old.clone()], "evt_1", 5, b"x");
        assert_eq!(
            header,
            format!(
                "{} {}",
                sign(&new, "evt_1", 5, b"x"),
                sign(&old, "evt_1", 5, b"x")
            )
        );
        for secret in [&old, &new] {
            assert_eq!(verify(secret, "evt_1", 5, b"x", &header, 5, 300), Ok(()));
        }
        let only_new = sign_all(std::slice::from_ref(&new), "evt_1", 5, b"x");
        assert_eq!(only_new, sign(&new, "evt_1", 5, b"x"));
        assert_eq!(
            verify(&old, "evt_1", 5, b"x", &only_new, 5, 300),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn generated_secrets_have_the_whsec_format_and_never_print() {
        let secret = WebhookSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(BASE64.decode(&text[6..]).unwrap().len(), 32);
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_ne!(WebhookSecret::generate(), secret);
        assert!(!format!("{secret:?}").contains(&text[6..]));
        for bad in ["", "whsec_", "whsec_!!!!", "sk_abcd", "whsec_c2hvcnQ="] {
            assert_eq!(WebhookSecret::parse(bad), Err(InvalidSecret), "{bad}");
        }
    }
}
