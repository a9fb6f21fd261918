//! Webhook targets (URL + signing secrets) fetched from the orchestrator over gRPC at
//! every attempt (one primary-key lookup), not cached: a secret rotation must sign the
//! very next attempt with the new secret, and a cached answer (even one kept only for
//! orchestrator outages) would sign with the old secret alone. Each secret carries its
//! expiry, re-checked at send time ([`Target::signing_secrets`]), so a rotated-out secret
//! never signs after its overlap. (ADR 0011.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use plangrep_core::error_code::ErrorCode;
use plangrep_core::webhook::WebhookSecret;
use plangrep_proto::orchestrator::GetWebhookTargetRequest;
use plangrep_proto::orchestrator::job_orchestrator_client::JobOrchestratorClient;
use plangrep_proto::status::public_code;
use plangrep_proto::trace::{TracedChannel, traced};
use plangrep_service::internal_auth::{Authorized, InternalToken};
use tonic::transport::Channel;

/// Where and how to sign one job's webhooks.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// The current secret first, then a rotated-out one with the end of its overlap.
    pub secrets: Vec<(WebhookSecret, Option<DateTime<Utc>>)>,
}

impl Target {
    /// The secrets that sign an attempt made at `now`: the current one, and a previous
    /// one only until its expiry.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<WebhookSecret> {
        self.secrets
            .iter()
            .filter(|(_, expires_at)| expires_at.is_none_or(|at| now < at))
            .map(|(secret, _)| secret.clone())
            .collect()
    }
}

/// The target an orchestrator answer describes.
fn target_of(response: plangrep_proto::orchestrator::WebhookTarget) -> Result<Target, TargetError> {
    let malformed = || TargetError::Broken("malformed signing secret".into());
    let mut secrets = Vec::new();
    for entry in &response.signing_secrets {
        let expires_at = match &entry.expires_at {
            Some(at) => Some(plangrep_proto::time::from_timestamp(at).ok_or_else(malformed)?),
            None => None,
        };
        secrets.push((
            WebhookSecret::parse(&entry.secret).map_err(|_| malformed())?,
            expires_at,
        ));
    }
    if secrets.is_empty() {
        // An orchestrator from before rotation: its one secret.
        secrets.push((
            WebhookSecret::parse(&response.signing_secret).map_err(|_| malformed())?,
            None,
        ));
    }
    Ok(Target {
        url: response.url,
        secrets,
    })
}

/// Why a target could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The job has no webhook (or no longer exists): nothing can ever be sent.
    #[error("the job has no webhook target")]
    Missing,
    /// The orchestrator could not answer now; try again later.
    #[error("the orchestrator is unavailable: {0}")]
    Unavailable(String),
    /// This job's target is broken (a secret that does not open, an internal error): other
    /// jobs are unaffected, this delivery is retried later.
    #[error("the job's webhook target is unusable: {0}")]
    Broken(String),
}

/// A client of `GetWebhookTarget` (no cache: see the module docs).
pub struct TargetClient {
    client: JobOrchestratorClient<Authorized<TracedChannel>>,
}

impl TargetClient {
    /// A client over a lazily connecting channel to `endpoint`, calling with `token`.
    pub fn new(endpoint: &str, token: &InternalToken) -> Result<Self, http::uri::InvalidUri> {
        let channel = Channel::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            client: JobOrchestratorClient::new(token.attach(traced(channel))),
        })
    }

    /// The target of `job_id`.
    pub async fn get(&self, job_id: &str) -> Result<Target, TargetError> {
        let response = self
            .client
            .clone()
            .get_webhook_target(GetWebhookTargetRequest {
                job_id: job_id.to_owned(),
            })
            .await;
        let target = match response {
            Ok(response) => target_of(response.into_inner())?,
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(TargetError::Missing);
            }
            // Includes a connection that broke mid-call (the orchestrator died).
            Err(status) if public_code(&status) == ErrorCode::Unavailable => {
                return Err(TargetError::Unavailable(status.message().to_owned()));
            }
            Err(status) => return Err(TargetError::Broken(status.message().to_owned())),
        };
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use plangrep_proto::orchestrator::{SigningSecret, WebhookTarget};
    use plangrep_proto::time::to_timestamp;

    use super::*;

    #[test]
    fn a_previous_secret_signs_until_its_expiry_and_not_after() {
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let expires_at = DateTime::from_timestamp(2_000, 0).unwrap();
        let target = target_of(WebhookTarget {
            job_id: "job_1".into(),
            url: "https://example.com/hook".into(),
            signing_secret: new.expose(),
            signing_secrets: vec![
                SigningSecret {
                    secret: new.expose(),
                    expires_at: None,
                },
                SigningSecret {
                    secret: old.expose(),
                    expires_at: Some(to_timestamp(expires_at)),
                },
            ],
        })
        .unwrap();
        let before = DateTime::from_timestamp(1_999, 0).unwrap();
        assert_eq!(target.signing_secrets(before), [new.clone(), old]);
        assert_eq!(target.signing_secrets(expires_at), [new]);
    }

    #[test]
    fn an_answer_without_the_list_signs_with_its_one_secret() {
        let secret = WebhookSecret::generate();
        let target = target_of(WebhookTarget {
            job_id: "job_1".into(),
            url: "https://example.com/hook".into(),
            signing_secret: secret.expose(),
            signing_secrets: Vec::new(),
        })
        .unwrap();
        assert_eq!(target.signing_secrets(Utc::now()), [secret]);
    }
}
