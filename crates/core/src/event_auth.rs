//! Authentication of the events the orchestrator publishes on the broker (ADR 0010).
//!
//! Anyone who can publish to the `plangrep.events` exchange could otherwise make the
//! dispatcher sign and send a webhook for any job, or push a job through the pipeline. The
//! orchestrator therefore tags every message with an HMAC-SHA256 over what decides its
//! effect (the event id, the routing key and the body), and every consumer drops a message
//! whose tag does not verify before its handler sees it. The key is shared by the
//! orchestrator and the dispatcher only: `PLANGREP_EVENTS_KEY`, or else derived from
//! `PLANGREP_INTERNAL_TOKEN` under a label of its own so the two secrets never coincide.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version prefix of every tag, so the scheme can change without ambiguity.
const TAG_PREFIX: &str = "v1=";

/// The label the events key is derived under from the internal service token.
const DERIVATION_LABEL: &[u8] = b"plangrep.events.v1";

/// The key that tags and verifies broker messages. Never printed.
#[derive(Clone)]
pub struct EventsKey {
    key: [u8; 32],
}

impl std::fmt::Debug for EventsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventsKey(<redacted>)")
    }
}

impl EventsKey {
    /// The key for an operator-chosen secret (`PLANGREP_EVENTS_KEY`) or for the internal
    /// service token: HMAC-SHA256(secret, label), so a secret of any length gives a full
    /// 32-byte key and the events key is never the token itself.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(DERIVATION_LABEL);
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, message_id: &str, routing_key: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        // Length-prefixed fields: no two different messages share an input.
        for field in [message_id.as_bytes(), routing_key.as_bytes()] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.update(payload);
        mac
    }

    /// The tag of one message (`v1=<base64>`), carried in its headers.
    pub fn tag(&self, message_id: &str, routing_key: &str, payload: &[u8]) -> String {
        let digest = self
            .mac(message_id, routing_key, payload)
            .finalize()
            .into_bytes();
        format!("{TAG_PREFIX}{}", BASE64.encode(digest))
    }

    /// Whether `tag` is this key's tag of the message (compared in constant time).
    pub fn verify(&self, message_id: &str, routing_key: &str, payload: &[u8], tag: &str) -> bool {
        let Some(encoded) = tag.strip_prefix(TAG_PREFIX) else {
            return false;
        };
        let Ok(digest) = BASE64.decode(encoded) else {
            return false;
        };
        self.mac(message_id, routing_key, payload)
            .verify_slice(&digest)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_verifies_only_for_its_key_id_routing_key_and_body() {
        let key = EventsKey::derive(b"internal-token-0123456789");
        let tag = key.tag("evt_1", "job.status_changed.succeeded", b"body");
        assert!(key.verify("evt_1", "job.status_changed.succeeded", b"body", &tag));
        assert!(!key.verify("evt_2", "job.status_changed.succeeded", b"body", &tag));
        assert!(!key.verify("evt_1", "job.status_changed.failed", b"body", &tag));
        assert!(!key.verify("evt_1", "job.status_changed.succeeded", b"bodx", &tag));
        let other = EventsKey::derive(b"another-token-0123456789");
        assert!(!other.verify("evt_1", "job.status_changed.succeeded", b"body", &tag));
        for bad in ["", "v1=", "v1=!!!", "v2=AAAA", &tag[3..]] {
            assert!(!key.verify("evt_1", "job.status_changed.succeeded", b"body", bad));
        }
        // Moving bytes between fields changes the tag.
        assert_ne!(key.tag("ab", "c", b""), key.tag("a", "bc", b""));
    }

    #[test]
    fn the_key_is_never_printed() {
        assert_eq!(
            format!("{:?}", EventsKey::derive(b"secret")),
            "EventsKey(<redacted>)"
        );
    }
}
