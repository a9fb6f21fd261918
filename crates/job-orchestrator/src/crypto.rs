//! Webhook secrets at rest: AES-256-GCM under `PLANGREP_SECRETS_KEY`, with the job id as
//! associated data so a sealed secret cannot be moved to another job's row.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use plangrep_core::id::JobId;
use plangrep_core::webhook::WebhookSecret;

const NONCE_LEN: usize = 12;

/// The key that seals webhook secrets. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey(Key<Aes256Gcm>);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// A sealed secret that does not open (wrong key, tampered row).
#[derive(Debug, thiserror::Error)]
#[error("a sealed webhook secret could not be opened")]
pub struct UnsealError;

impl SecretsKey {
    /// Parses base64 of exactly 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self, &'static str> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| "must be base64 (of 32 random bytes)")?;
        if bytes.len() != 32 {
            return Err("must decode to exactly 32 bytes");
        }
        Ok(Self(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// A fixed, public key for dev mode only: anyone can open secrets sealed with it.
    pub fn insecure_dev_key() -> Self {
        Self(*Key::<Aes256Gcm>::from_slice(
            b"plangrep-dev-mode-insecure-key!!",
        ))
    }

    /// Seals `plaintext` bound to `context` (associated data): `nonce || ciphertext`.
    pub fn seal_bytes(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let ciphertext = Aes256Gcm::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of an in-memory message cannot fail");
        [nonce.as_slice(), &ciphertext].concat()
    }

    /// Opens what [`Self::seal_bytes`] sealed with the same `context`.
    pub fn open_bytes(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, UnsealError> {
        if sealed.len() <= NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        Aes256Gcm::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| UnsealError)
    }

    /// Seals a webhook secret for `job`.
    pub fn seal(&self, job: JobId, secret: &WebhookSecret) -> Vec<u8> {
        self.seal_bytes(job.to_string().as_bytes(), secret.expose().as_bytes())
    }

    /// Opens a secret sealed by [`Self::seal`] for the same job.
    pub fn unseal(&self, job: JobId, sealed: &[u8]) -> Result<WebhookSecret, UnsealError> {
        let plaintext = self.open_bytes(job.to_string().as_bytes(), sealed)?;
        let text = String::from_utf8(plaintext).map_err(|_| UnsealError)?;
        WebhookSecret::parse(&text).map_err(|_| UnsealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_the_same_key_and_job() {
        let key = SecretsKey::from_base64(&BASE64.encode([7u8; 32])).unwrap();
        let job = JobId::generate();
        let secret = WebhookSecret::generate();
        let sealed = key.seal(job, &secret);
        assert!(
            !sealed
                .windows(10)
                .any(|w| secret.expose().as_bytes().windows(10).any(|s| s == w))
        );
        assert_eq!(key.unseal(job, &sealed).unwrap(), secret);
        assert!(key.unseal(JobId::generate(), &sealed).is_err());
        assert!(SecretsKey::insecure_dev_key().unseal(job, &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.unseal(job, &tampered).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SecretsKey::from_base64(&BASE64.encode([1u8; 31])).is_err());
        assert!(SecretsKey::from_base64("not base64!").is_err());
    }
}
