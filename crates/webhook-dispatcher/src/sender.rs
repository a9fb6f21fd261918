//! One signed HTTP attempt (SPEC §5): Standard Webhooks headers, the exact stored body,
//! no redirects, no cookies, no proxy, bounded time, and at most 64 KiB of the response
//! read (a hostile receiver cannot make us buffer more).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use plangrep_core::validate::DestinationPolicy;
use plangrep_core::webhook::{self, WebhookSecret};

use crate::destination::{self, PublicOnlyResolver};
use crate::outcome::{self, Verdict};

/// The most of a response body we read.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;
/// The most of a response body we keep in the attempt record.
pub const MAX_SNIPPET: usize = 4 * 1024;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("Plangrep-Webhooks/", env!("CARGO_PKG_VERSION"));

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// The verdict that decides the delivery's next state.
    pub verdict: Verdict,
    /// The HTTP status, when a response arrived.
    pub status_code: Option<u16>,
    /// An error class (`timeout`, `connect`, `forbidden_destination`, `redirect`, …).
    pub error: Option<String>,
    /// The start of the response body, lossily decoded.
    pub response_snippet: Option<String>,
    /// Wall time of the attempt.
    pub duration: Duration,
}

/// Sends webhook attempts.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: DestinationPolicy,
}

impl Sender {
    /// A sender with the given timeouts and destination policy.
    pub fn new(
        policy: DestinationPolicy,
        connect_timeout: Duration,
        attempt_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        // reqwest is built without a default crypto provider (keeps aws-lc-rs out of the
        // build); installing ring twice is harmless, so ignore "already installed".
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .timeout(attempt_timeout)
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(PublicOnlyResolver { policy }))
            .build()?;
        Ok(Self { client, policy })
    }

    /// Signs (with each of `secrets`, see `webhook::sign_all`) and POSTs `body` to `url`
    /// as event `event_id`.
    #[tracing::instrument(skip_all, fields(event_id = %event_id))]
    pub async fn send(
        &self,
        url: &str,
        event_id: &str,
        body: &[u8],
        secrets: &[WebhookSecret],
    ) -> AttemptReport {
        let started = Instant::now();
        let failed = |error: &str, started: Instant| AttemptReport {
            verdict: Verdict::Retry { retry_after: None },
            status_code: None,
            error: Some(error.to_owned()),
            response_snippet: None,
            duration: started.elapsed(),
        };
        let url = match destination::check_url(url, self.policy) {
            Ok(url) => url,
            Err(reason) => {
                tracing::warn!(%reason, "destination refused at send time");
                return failed("forbidden_destination", started);
            }
        };
        let timestamp = Utc::now().timestamp();
        let signature = webhook::sign_all(secrets, event_id, timestamp, body);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let mut response = match response {
            Ok(response) => response,
            Err(error) => return failed(classify_error(&error), started),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (snippet, read_error) = read_capped(&mut response).await;
        let verdict = outcome::judge(status, retry_after.as_deref(), Utc::now());
        let error = match (status, read_error) {
            (300..=399, _) => Some("redirect_not_followed".to_owned()),
            (_, Some(error)) if verdict != Verdict::Delivered => Some(error),
            (200..=299, _) => None,
            _ => Some("http_status".to_owned()),
        };
        AttemptReport {
            verdict,
            status_code: Some(status),
            error,
            response_snippet: Some(snippet).filter(|s| !s.is_empty()),
            duration: started.elapsed(),
        }
    }
}

/// Reads at most [`MAX_RESPONSE_READ`] bytes and keeps the first [`MAX_SNIPPET`].
async fn read_capped(response: &mut reqwest::Response) -> (String, Option<String>) {
    let mut body = Vec::new();
    let mut error = None;
    while body.len() < MAX_RESPONSE_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(classify_error(&e).to_owned());
                break;
            }
        }
    }
    body.truncate(MAX_SNIPPET);
    (String::from_utf8_lossy(&body).into_owned(), error)
}

fn classify_error(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        if source_chain_mentions::<destination::ForbiddenDestination>(error) {
            "forbidden_destination"
        } else {
            "connect"
        }
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    }
}

fn source_chain_mentions<E: std::error::Error + 'static>(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<E>() {
            return true;
        }
        source = current.source();
    }
    false
}
