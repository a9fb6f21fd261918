//! Webhook targets (URL + signing secret) fetched from the orchestrator over gRPC and
//! cached briefly, so a burst of events for one job costs one lookup.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plangrep_core::webhook::WebhookSecret;
use plangrep_proto::orchestrator::GetWebhookTargetRequest;
use plangrep_proto::orchestrator::job_orchestrator_client::JobOrchestratorClient;
use plangrep_proto::trace::{TracedChannel, traced};
use plangrep_service::internal_auth::{Authorized, InternalToken};
use tonic::transport::Channel;

/// How long a target is reused.
const TTL: Duration = Duration::from_secs(60);

/// Where and how to sign one job's webhooks.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub secret: WebhookSecret,
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

/// A cached client of `GetWebhookTarget`.
pub struct TargetCache {
    client: JobOrchestratorClient<Authorized<TracedChannel>>,
    cached: Mutex<HashMap<String, (Target, Instant)>>,
}

impl TargetCache {
    /// A cache over a lazily connecting channel to `endpoint`, calling with `token`.
    pub fn new(endpoint: &str, token: &InternalToken) -> Result<Self, http::uri::InvalidUri> {
        let channel = Channel::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            client: JobOrchestratorClient::new(token.attach(traced(channel))),
            cached: Mutex::new(HashMap::new()),
        })
    }

    /// The target of `job_id`.
    pub async fn get(&self, job_id: &str) -> Result<Target, TargetError> {
        if let Some((target, at)) = self.cached.lock().expect("not poisoned").get(job_id)
            && at.elapsed() < TTL
        {
            return Ok(target.clone());
        }
        let response = self
            .client
            .clone()
            .get_webhook_target(GetWebhookTargetRequest {
                job_id: job_id.to_owned(),
            })
            .await;
        let target = match response {
            Ok(response) => {
                let response = response.into_inner();
                let secret = WebhookSecret::parse(&response.signing_secret)
                    .map_err(|_| TargetError::Broken("malformed signing secret".into()))?;
                Target {
                    url: response.url,
                    secret,
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(TargetError::Missing);
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                ) =>
            {
                return Err(TargetError::Unavailable(status.message().to_owned()));
            }
            Err(status) => return Err(TargetError::Broken(status.message().to_owned())),
        };
        let mut cached = self.cached.lock().expect("not poisoned");
        cached.retain(|_, (_, at)| at.elapsed() < TTL);
        cached.insert(job_id.to_owned(), (target.clone(), Instant::now()));
        Ok(target)
    }
}
