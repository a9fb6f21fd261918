//! Webhook targets (URL + signing secrets) fetched from the orchestrator over gRPC for
//! every attempt, just before it is sent (one call and one look-up for all the
//! deliveries of a claim, or of an intake batch while its rows commit), not cached: a
//! secret rotation must sign the very next attempt with the new secret, and a cached
//! answer (even one kept only for orchestrator outages) would sign with the old secret
//! alone. Each secret carries its expiry, re-checked at send time
//! ([`Target::signing_secrets`]), so a rotated-out secret never signs after its overlap.
//! (ADR 0011.)

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plangrep_core::error_code::ErrorCode;
use plangrep_core::webhook::WebhookSecret;
use plangrep_proto::orchestrator::job_orchestrator_client::JobOrchestratorClient;
use plangrep_proto::orchestrator::webhook_target_result::Outcome;
use plangrep_proto::orchestrator::{GetWebhookTargetRequest, GetWebhookTargetsRequest};
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
#[derive(Debug, Clone, thiserror::Error)]
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

/// A client of `GetWebhookTargets` (no cache: see the module docs).
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

    /// The target of `job_id` (`GetWebhookTarget`, for an orchestrator without the
    /// batched method).
    async fn get(&self, job_id: &str) -> Result<Target, TargetError> {
        let response = self
            .client
            .clone()
            .get_webhook_target(GetWebhookTargetRequest {
                job_id: job_id.to_owned(),
            })
            .await;
        match response {
            Ok(response) => target_of(response.into_inner()),
            Err(status) => Err(error_of(&status)),
        }
    }

    /// The targets of `job_ids` in one call: one result per id, in order. An orchestrator
    /// without `GetWebhookTargets` (an older version during a rolling upgrade) is asked
    /// job by job.
    pub async fn get_many(&self, job_ids: &[String]) -> Vec<Result<Target, TargetError>> {
        if job_ids.is_empty() {
            return Vec::new();
        }
        let response = self
            .client
            .clone()
            .get_webhook_targets(GetWebhookTargetsRequest {
                job_ids: job_ids.to_vec(),
            })
            .await;
        let results = match response {
            Ok(response) => response.into_inner().results,
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                let mut targets = Vec::with_capacity(job_ids.len());
                for job_id in job_ids {
                    targets.push(self.get(job_id).await);
                }
                return targets;
            }
            Err(status) => {
                let error = error_of(&status);
                return job_ids.iter().map(|_| Err(error.clone())).collect();
            }
        };
        let outcomes: HashMap<&str, &Outcome> = results
            .iter()
            .filter_map(|result| Some((result.job_id.as_str(), result.outcome.as_ref()?)))
            .collect();
        job_ids
            .iter()
            .map(|job_id| match outcomes.get(job_id.as_str()) {
                Some(Outcome::Target(target)) => target_of(target.clone()),
                Some(Outcome::NotFound(_)) => Err(TargetError::Missing),
                Some(Outcome::Broken(reason)) => Err(TargetError::Broken(reason.clone())),
                None => Err(TargetError::Broken(
                    "the orchestrator did not answer for the job".into(),
                )),
            })
            .collect()
    }
}

/// What a failed call means for the jobs it asked about.
fn error_of(status: &tonic::Status) -> TargetError {
    match status.code() {
        tonic::Code::NotFound => TargetError::Missing,
        // Includes a connection that broke mid-call (the orchestrator died).
        _ if public_code(status) == ErrorCode::Unavailable => {
            TargetError::Unavailable(status.message().to_owned())
        }
        _ => TargetError::Broken(status.message().to_owned()),
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
