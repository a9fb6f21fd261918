//! Secrets at rest: AES-256-GCM under a keyring (`PLANGREP_SECRETS_KEYS`, or the one-key
//! ring of `PLANGREP_SECRETS_KEY`), so keys can rotate without losing what they sealed.
//!
//! A sealed blob names its key: `b"PGS1" || kid_len (1 byte) || kid || nonce (12) ||
//! ciphertext`, with the header and the caller's context (e.g. the job id, so a sealed
//! secret cannot be moved to another job's row) as associated data. New blobs are sealed
//! with the ring's primary key; opening picks the key by kid. Blobs written before the
//! keyring (`nonce || ciphertext`, no header) are opened by trying each key of the ring:
//! AES-GCM authenticates, so a wrong key never "opens" one. `job-orchestrator reseal`
//! ([`crate::reseal`]) moves every blob to the primary key; see ADR 0011.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use plangrep_core::id::JobId;
use plangrep_core::webhook::WebhookSecret;

const NONCE_LEN: usize = 12;
/// The first bytes of a versioned blob (format 1).
const MAGIC: &[u8; 4] = b"PGS1";
/// Longest key id.
const MAX_KID_LEN: usize = 32;
/// The key id `PLANGREP_SECRETS_KEY` (a one-key ring) seals under: when moving to
/// `PLANGREP_SECRETS_KEYS`, list the old key under this id.
pub const SINGLE_KEY_ID: &str = "default";
/// The key id of the insecure dev-mode key.
pub const DEV_KEY_ID: &str = "dev";

/// A key id: 1–32 characters of `A-Z a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= MAX_KID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "key id {text:?} must be 1 to {MAX_KID_LEN} characters of A-Z a-z 0-9 _ . -"
            ))
        }
    }

    /// The id as written in blobs and settings.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key of the ring. `Debug` never shows the key.
#[derive(Clone)]
struct RingKey {
    id: KeyId,
    key: Key<Aes256Gcm>,
}

/// The keys that seal and open secrets: the first is the primary (seals everything new),
/// the others only open. `Debug` shows the key ids, never a key.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "Keyring({ids:?}, keys redacted)")
    }
}

/// Why a sealed blob does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    /// The blob names a key the ring does not hold (removed too early, or a ring from
    /// another deployment): only this blob is affected.
    #[error("sealed with key id {0:?}, which is not in the keyring (PLANGREP_SECRETS_KEYS)")]
    UnknownKey(String),
    /// The key is known but authentication failed (tampered blob, wrong context), or a
    /// blob without key id opens with no key of the ring.
    #[error("a sealed secret could not be opened (tampered, or sealed with another key)")]
    Invalid,
}

/// How a blob is sealed today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedWith {
    /// Format 1, under this key id.
    Key(String),
    /// The format before the keyring: no key id.
    Legacy,
}

/// Parses base64 of exactly 32 bytes.
fn key_from_base64(encoded: &str) -> Result<Key<Aes256Gcm>, &'static str> {
    let bytes = BASE64
        .decode(encoded.trim())
        .map_err(|_| "must be base64 (of 32 random bytes)")?;
    if bytes.len() != 32 {
        return Err("must decode to exactly 32 bytes");
    }
    Ok(*Key::<Aes256Gcm>::from_slice(&bytes))
}

impl Keyring {
    /// The one-key ring of `PLANGREP_SECRETS_KEY` (base64 of 32 bytes), key id
    /// [`SINGLE_KEY_ID`].
    pub fn single_from_base64(encoded: &str) -> Result<Self, String> {
        Ok(Self {
            keys: vec![RingKey {
                id: KeyId(SINGLE_KEY_ID.to_owned()),
                key: key_from_base64(encoded).map_err(str::to_owned)?,
            }],
        })
    }

    /// Parses `PLANGREP_SECRETS_KEYS`: `kid1:base64key,kid2:base64key`, the first primary.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<RingKey> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, encoded) = entry
                .split_once(':')
                .ok_or("each entry is `kid:base64key`")?;
            let id = KeyId::parse(kid.trim())?;
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            let key = key_from_base64(encoded).map_err(|problem| format!("key {id}: {problem}"))?;
            keys.push(RingKey { id, key });
        }
        if keys.is_empty() {
            return Err("at least one `kid:base64key` entry is required".to_owned());
        }
        Ok(Self { keys })
    }

    /// A fixed, public key for dev mode only: anyone can open secrets sealed with it.
    pub fn insecure_dev_key() -> Self {
        Self {
            keys: vec![RingKey {
                id: KeyId(DEV_KEY_ID.to_owned()),
                key: *Key::<Aes256Gcm>::from_slice(b"plangrep-dev-mode-insecure-key!!"),
            }],
        }
    }

    /// The id of the key that seals new blobs.
    pub fn primary_id(&self) -> &KeyId {
        &self.keys[0].id
    }

    /// The ids of the ring, primary first.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|k| &k.id)
    }

    /// Seals `plaintext` bound to `context` (associated data) with the primary key.
    pub fn seal_bytes(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let primary = &self.keys[0];
        let kid = primary.id.as_str().as_bytes();
        let mut header = Vec::with_capacity(MAGIC.len() + 1 + kid.len());
        header.extend_from_slice(MAGIC);
        header.push(u8::try_from(kid.len()).expect("key ids are at most 32 bytes"));
        header.extend_from_slice(kid);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let ciphertext = Aes256Gcm::new(&primary.key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &[header.as_slice(), context].concat(),
                },
            )
            .expect("AES-GCM encryption of an in-memory message cannot fail");
        [header.as_slice(), &nonce, &ciphertext].concat()
    }

    /// Opens what [`Self::seal_bytes`] sealed (with any key of the ring, or a blob from
    /// before the keyring) under the same `context`.
    pub fn open_bytes(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, UnsealError> {
        match split_header(sealed) {
            Some((header, kid, body)) => {
                let versioned = match self.keys.iter().find(|k| k.id.as_str().as_bytes() == kid) {
                    Some(key) => open_with(&key.key, &[header, context].concat(), body)
                        .ok_or(UnsealError::Invalid),
                    None => Err(UnsealError::UnknownKey(
                        String::from_utf8_lossy(kid).into_owned(),
                    )),
                };
                // A legacy blob's random nonce can start with the magic bytes (2^-32):
                // authentication tells which reading is right.
                versioned.or_else(|error| self.open_legacy(context, sealed).ok_or(error))
            }
            None => self
                .open_legacy(context, sealed)
                .ok_or(UnsealError::Invalid),
        }
    }

    /// A blob without key id: `nonce || ciphertext`, tried with each key of the ring.
    fn open_legacy(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.keys
            .iter()
            .find_map(|key| open_with(&key.key, context, sealed))
    }

    /// Seals a webhook secret for `job`.
    pub fn seal(&self, job: JobId, secret: &WebhookSecret) -> Vec<u8> {
        self.seal_bytes(job.to_string().as_bytes(), secret.expose().as_bytes())
    }

    /// Opens a secret sealed by [`Self::seal`] for the same job.
    pub fn unseal(&self, job: JobId, sealed: &[u8]) -> Result<WebhookSecret, UnsealError> {
        let plaintext = self.open_bytes(job.to_string().as_bytes(), sealed)?;
        let text = String::from_utf8(plaintext).map_err(|_| UnsealError::Invalid)?;
        WebhookSecret::parse(&text).map_err(|_| UnsealError::Invalid)
    }

    /// Whether `sealed` is already sealed with the primary key (nothing to re-seal).
    pub fn is_sealed_with_primary(&self, sealed: &[u8]) -> bool {
        sealed_with(sealed) == SealedWith::Key(self.primary_id().as_str().to_owned())
    }

    /// Opens `sealed` and seals it again with the primary key (same `context`).
    pub fn reseal(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, UnsealError> {
        let plaintext = self.open_bytes(context, sealed)?;
        Ok(self.seal_bytes(context, &plaintext))
    }
}

/// Which key a blob names (without opening it).
pub fn sealed_with(sealed: &[u8]) -> SealedWith {
    match split_header(sealed) {
        Some((_, kid, _)) => SealedWith::Key(String::from_utf8_lossy(kid).into_owned()),
        None => SealedWith::Legacy,
    }
}

/// `(header, kid, nonce || ciphertext)` of a format-1 blob, `None` for anything else.
fn split_header(sealed: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let rest = sealed.strip_prefix(MAGIC.as_slice())?;
    let (&kid_len, rest) = rest.split_first()?;
    let kid_len = usize::from(kid_len);
    if kid_len == 0 || kid_len > MAX_KID_LEN || rest.len() <= kid_len + NONCE_LEN {
        return None;
    }
    let (kid, body) = rest.split_at(kid_len);
    let header_len = MAGIC.len() + 1 + kid_len;
    Some((&sealed[..header_len], kid, body))
}

/// Opens `nonce || ciphertext` with `key` and associated data `aad`.
fn open_with(key: &Key<Aes256Gcm>, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() <= NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    Aes256Gcm::new(key)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(byte: u8) -> String {
        BASE64.encode([byte; 32])
    }

    /// What the orchestrator wrote before the keyring: `nonce || ciphertext`.
    fn legacy_seal(key_byte: u8, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = *Key::<Aes256Gcm>::from_slice(&[key_byte; 32]);
        let nonce = [9u8; NONCE_LEN];
        let ciphertext = Aes256Gcm::new(&key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .unwrap();
        [nonce.as_slice(), &ciphertext].concat()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_the_same_key_and_job() {
        let ring = Keyring::single_from_base64(&encoded(7)).unwrap();
        let job = JobId::generate();
        let secret = WebhookSecret::generate();
        let sealed = ring.seal(job, &secret);
        assert!(
            !sealed
                .windows(10)
                .any(|w| secret.expose().as_bytes().windows(10).any(|s| s == w))
        );
        assert_eq!(ring.unseal(job, &sealed).unwrap(), secret);
        assert!(ring.unseal(JobId::generate(), &sealed).is_err());
        assert!(Keyring::insecure_dev_key().unseal(job, &sealed).is_err());
    }

    #[test]
    fn a_blob_names_its_key_and_opens_with_that_key_of_a_later_ring() {
        let old = Keyring::parse(&format!("k0:{}", encoded(1))).unwrap();
        let sealed = old.seal_bytes(b"ctx", b"payload");
        assert_eq!(sealed_with(&sealed), SealedWith::Key("k0".into()));
        let rotated = Keyring::parse(&format!("k1:{},k0:{}", encoded(2), encoded(1))).unwrap();
        assert_eq!(rotated.primary_id().as_str(), "k1");
        assert_eq!(rotated.open_bytes(b"ctx", &sealed).unwrap(), b"payload");
        assert!(!rotated.is_sealed_with_primary(&sealed));
        let moved = rotated.reseal(b"ctx", &sealed).unwrap();
        assert!(rotated.is_sealed_with_primary(&moved));
        let only_new = Keyring::parse(&format!("k1:{}", encoded(2))).unwrap();
        assert_eq!(only_new.open_bytes(b"ctx", &moved).unwrap(), b"payload");
    }

    #[test]
    fn an_unknown_key_id_is_its_own_error() {
        let old = Keyring::parse(&format!("k0:{}", encoded(1))).unwrap();
        let sealed = old.seal_bytes(b"ctx", b"payload");
        let other = Keyring::parse(&format!("k1:{}", encoded(1))).unwrap();
        assert_eq!(
            other.open_bytes(b"ctx", &sealed).unwrap_err(),
            UnsealError::UnknownKey("k0".into())
        );
    }

    #[test]
    fn a_tampered_blob_or_a_swapped_key_id_does_not_open() {
        let ring = Keyring::parse(&format!("k1:{},k0:{}", encoded(2), encoded(1))).unwrap();
        let sealed = ring.seal_bytes(b"ctx", b"payload");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            ring.open_bytes(b"ctx", &tampered).unwrap_err(),
            UnsealError::Invalid
        );
        // Relabel the blob as sealed by the other key of the ring: it must not open.
        let mut relabelled = sealed.clone();
        relabelled[MAGIC.len() + 2] = b'0';
        assert_eq!(sealed_with(&relabelled), SealedWith::Key("k0".into()));
        assert!(ring.open_bytes(b"ctx", &relabelled).is_err());
        assert!(ring.open_bytes(b"other ctx", &sealed).is_err());
        assert!(ring.open_bytes(b"ctx", b"PGS1").is_err());
        assert!(ring.open_bytes(b"ctx", b"").is_err());
    }

    #[test]
    fn a_legacy_blob_without_key_id_opens_with_any_key_of_the_ring() {
        let legacy = legacy_seal(1, b"ctx", b"payload");
        assert_eq!(sealed_with(&legacy), SealedWith::Legacy);
        let single = Keyring::single_from_base64(&encoded(1)).unwrap();
        assert_eq!(single.open_bytes(b"ctx", &legacy).unwrap(), b"payload");
        let rotated =
            Keyring::parse(&format!("k1:{},{SINGLE_KEY_ID}:{}", encoded(2), encoded(1))).unwrap();
        assert_eq!(rotated.open_bytes(b"ctx", &legacy).unwrap(), b"payload");
        assert!(!rotated.is_sealed_with_primary(&legacy));
        let without = Keyring::parse(&format!("k1:{}", encoded(2))).unwrap();
        assert_eq!(
            without.open_bytes(b"ctx", &legacy).unwrap_err(),
            UnsealError::Invalid
        );
    }

    #[test]
    fn rings_parse_with_the_first_key_primary_and_refuse_bad_entries() {
        let ring = Keyring::parse(&format!(" a:{} , b.2:{} ", encoded(1), encoded(2))).unwrap();
        let ids: Vec<&str> = ring.key_ids().map(KeyId::as_str).collect();
        assert_eq!(ids, ["a", "b.2"]);
        assert!(!format!("{ring:?}").contains(&encoded(1)));
        for bad in [
            String::new(),
            encoded(1),
            format!("a:{},a:{}", encoded(1), encoded(2)),
            format!("a b:{}", encoded(1)),
            format!("{}:{}", "k".repeat(33), encoded(1)),
            format!("a:{}", BASE64.encode([1u8; 31])),
            "a:not base64!".to_owned(),
        ] {
            assert!(Keyring::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            Keyring::single_from_base64(&encoded(1))
                .unwrap()
                .primary_id()
                .as_str(),
            SINGLE_KEY_ID
        );
        assert!(Keyring::single_from_base64(&BASE64.encode([1u8; 31])).is_err());
        assert!(Keyring::single_from_base64("not base64!").is_err());
    }
}
