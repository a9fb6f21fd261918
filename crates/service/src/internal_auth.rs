//! The internal service credential (SPEC §6, ADR 0010): every internal gRPC method
//! answers UNAUTHENTICATED unless the call carries `authorization: Bearer
//! <PLANGREP_INTERNAL_TOKEN>`, compared in constant time. Servers wrap only their own
//! service with [`InternalToken::require`], so `grpc.health.v1.Health` and server
//! reflection (v1 and v1alpha), added beside it, stay open for discovery. Clients wrap
//! their channel with [`InternalToken::attach`].
//!
//! The token is required outside dev mode; dev mode (`make run`) falls back to a fixed,
//! public dev token that all three services agree on. Mutual TLS
//! (`PLANGREP_INTERNAL_TLS_*`) is not implemented yet: setting it stops the service with
//! one line rather than silently running without it.

use std::sync::Arc;

use plangrep_core::event_auth::EventsKey;
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

use crate::{SettingError, Settings};

/// The variable that holds the token.
pub const TOKEN_SETTING: &str = "PLANGREP_INTERNAL_TOKEN";

/// The variable that holds an explicit events key (else derived from the token).
pub const EVENTS_KEY_SETTING: &str = "PLANGREP_EVENTS_KEY";

/// The token every service uses in dev mode when none is set: public, for `make run` only.
pub const DEV_TOKEN: &str = "plangrep-dev-internal-token-not-secret";

/// The shortest token accepted (outside dev mode secrets must not be guessable).
const MIN_TOKEN_LEN: usize = 32;

/// The mutual-TLS settings of SPEC §7, refused until they are implemented.
const TLS_SETTINGS: [&str; 3] = [
    "PLANGREP_INTERNAL_TLS_CERT",
    "PLANGREP_INTERNAL_TLS_KEY",
    "PLANGREP_INTERNAL_TLS_CA",
];

/// The shared secret of internal gRPC calls. Never printed.
#[derive(Clone)]
pub struct InternalToken {
    token: Arc<str>,
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

impl InternalToken {
    /// A token from its text (tests, embedding).
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self {
            token: token.into(),
        }
    }

    /// `PLANGREP_INTERNAL_TOKEN`: required outside dev mode (`PLANGREP_DEV_MODE`), at least
    /// 32 characters, usable as an HTTP header value.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingError> {
        for name in TLS_SETTINGS {
            if settings.raw(name).is_some() {
                return Err(SettingError::new(
                    name,
                    "mutual TLS on internal gRPC is not supported yet (ADR 0010); unset it \
                     and keep the network private, PLANGREP_INTERNAL_TOKEN authenticates calls",
                ));
            }
        }
        let dev_mode = settings.flag("PLANGREP_DEV_MODE", false)?;
        let token = match settings.raw(TOKEN_SETTING) {
            Some(token) => token,
            None if dev_mode => DEV_TOKEN,
            None => {
                return Err(SettingError::new(
                    TOKEN_SETTING,
                    "required outside dev mode (the same random value in every service, \
                     e.g. `openssl rand -base64 32`)",
                ));
            }
        };
        if token.len() < MIN_TOKEN_LEN && !dev_mode {
            return Err(SettingError::new(
                TOKEN_SETTING,
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        if bearer_value(token).is_err() {
            return Err(SettingError::new(
                TOKEN_SETTING,
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self::new(token))
    }

    /// The key that tags broker events: `PLANGREP_EVENTS_KEY` when set (at least 32
    /// characters), else derived from this token.
    pub fn events_key(&self, settings: &Settings) -> Result<EventsKey, SettingError> {
        match settings.raw(EVENTS_KEY_SETTING) {
            Some(secret) if secret.len() < MIN_TOKEN_LEN => Err(SettingError::new(
                EVENTS_KEY_SETTING,
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            )),
            Some(secret) => Ok(EventsKey::derive(secret.as_bytes())),
            None => Ok(EventsKey::derive(self.token.as_bytes())),
        }
    }

    /// The server side: wraps a generated service so each call must carry the token.
    pub fn require<S>(&self, service: S) -> InternalOnly<S> {
        InterceptedService::new(
            service,
            RequireToken {
                expected: Arc::from(format!("Bearer {}", self.token).into_bytes()),
            },
        )
    }

    /// The client side: wraps a channel so each call carries the token.
    pub fn attach<C>(&self, channel: C) -> Authorized<C> {
        InterceptedService::new(channel, self.attacher())
    }

    fn attacher(&self) -> AttachToken {
        let mut value = bearer_value(&self.token).expect("validated when read");
        value.set_sensitive(true);
        AttachToken { value }
    }
}

fn bearer_value(token: &str) -> Result<AsciiMetadataValue, ()> {
    if token.is_empty() || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(());
    }
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| ())
}

/// A generated server that answers only calls carrying the internal token.
pub type InternalOnly<S> = InterceptedService<S, RequireToken>;

/// A channel whose calls carry the internal token.
pub type Authorized<C> = InterceptedService<C, AttachToken>;

/// The server-side check of [`InternalToken::require`].
#[derive(Clone)]
pub struct RequireToken {
    /// `Bearer <token>` as bytes.
    expected: Arc<[u8]>,
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        // `ct_eq` on slices of different lengths is false without looking at the bytes; the
        // length of the expected value is not the secret.
        if bool::from(presented.ct_eq(&self.expected)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "internal method: a valid service credential is required",
            ))
        }
    }
}

/// The client-side header of [`InternalToken::attach`].
#[derive(Clone)]
pub struct AttachToken {
    value: AsciiMetadataValue,
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "a-test-token-of-at-least-32-characters";

    fn check(token: &InternalToken, authorization: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = tonic::Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        let mut server = RequireToken {
            expected: Arc::from(format!("Bearer {}", token.token).into_bytes()),
        };
        server.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = InternalToken::new(TOKEN);
        assert_eq!(check(&token, Some(&format!("Bearer {TOKEN}"))), Ok(()));
        for wrong in [
            None,
            Some(""),
            Some(TOKEN),
            Some("Bearer "),
            Some("Bearer a-test-token-of-at-least-32-characterz"),
            Some("bearer a-test-token-of-at-least-32-characters"),
            Some("Bearer a-test-token-of-at-least-32-characters "),
        ] {
            assert_eq!(
                check(&token, wrong),
                Err(tonic::Code::Unauthenticated),
                "{wrong:?}"
            );
        }
        // What a client attaches is what the server accepts.
        let mut client = token.attacher();
        let request = client.call(tonic::Request::new(())).unwrap();
        let sent = request.metadata().get("authorization").unwrap();
        assert_eq!(check(&token, Some(sent.to_str().unwrap())), Ok(()));
    }

    #[test]
    fn the_token_is_required_outside_dev_mode_and_validated() {
        let error = InternalToken::from_settings(&Settings::default()).unwrap_err();
        assert_eq!(error.name, TOKEN_SETTING);
        let short = Settings::from_pairs([(TOKEN_SETTING, "short")]);
        assert_eq!(
            InternalToken::from_settings(&short).unwrap_err().name,
            TOKEN_SETTING
        );
        let spaced =
            Settings::from_pairs([(TOKEN_SETTING, "has a space in it, which is not ok!!")]);
        assert_eq!(
            InternalToken::from_settings(&spaced).unwrap_err().name,
            TOKEN_SETTING
        );
        let dev = Settings::from_pairs([("PLANGREP_DEV_MODE", "true")]);
        assert_eq!(
            &*InternalToken::from_settings(&dev).unwrap().token,
            DEV_TOKEN
        );
        let tls = Settings::from_pairs([
            (TOKEN_SETTING, TOKEN),
            ("PLANGREP_INTERNAL_TLS_CA", "ca.pem"),
        ]);
        assert_eq!(
            InternalToken::from_settings(&tls).unwrap_err().name,
            "PLANGREP_INTERNAL_TLS_CA"
        );
    }

    #[test]
    fn the_events_key_is_derived_unless_set_and_never_the_token() {
        let token = InternalToken::new(TOKEN);
        let derived = token.events_key(&Settings::default()).unwrap();
        let tag = derived.tag("evt", "job.x", b"");
        assert!(EventsKey::derive(TOKEN.as_bytes()).verify("evt", "job.x", b"", &tag));
        let explicit = Settings::from_pairs([(
            EVENTS_KEY_SETTING,
            "another-secret-of-32-characters-at-least",
        )]);
        let key = token.events_key(&explicit).unwrap();
        assert!(!key.verify("evt", "job.x", b"", &tag));
        let short = Settings::from_pairs([(EVENTS_KEY_SETTING, "short")]);
        assert_eq!(
            token.events_key(&short).unwrap_err().name,
            EVENTS_KEY_SETTING
        );
    }
}
