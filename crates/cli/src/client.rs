//! The public API client: bearer auth, the SPEC error body mapped to [`CliError::Api`],
//! the `RateLimit-*` / `Retry-After` headers read on every answer, and safe retries.
//!
//! What is retried, and why it is safe: GETs are; every POST carries an `Idempotency-Key`
//! generated once per invocation (SPEC §2), so re-sending it after a broken connection, a
//! 5xx, a 429 or a 409 `idempotency_request_in_progress` can never do the work twice.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::error::CliError;

/// Attempts of one logical request before giving up.
const MAX_ATTEMPTS: u32 = 5;
/// First retry delay (doubles per attempt, capped by [`MAX_RETRY_DELAY`]).
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// The longest the client waits between two attempts, whatever the server says.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The rate-limit headers of one answer (SPEC §1).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimit {
    /// `RateLimit-Remaining`: requests left in the window.
    pub remaining: Option<u64>,
    /// `RateLimit-Reset`: seconds until the window refills.
    pub reset: Option<u64>,
    /// `Retry-After` (seconds), sent with 429 and 503.
    pub retry_after: Option<u64>,
}

impl RateLimit {
    /// Reads the headers of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        Self {
            remaining: number("ratelimit-remaining"),
            reset: number("ratelimit-reset"),
            retry_after: number("retry-after"),
        }
    }

    /// How long to hold off before the next request so as not to be refused: until the
    /// reset when the window is empty, nothing otherwise.
    pub fn pause(&self) -> Duration {
        match (self.remaining, self.reset) {
            (Some(0), Some(reset)) => Duration::from_secs(reset.max(1)),
            _ => Duration::ZERO,
        }
    }
}

/// A client of the public API for one key.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl ApiClient {
    /// A client of the API at `base_url` (e.g. `http://127.0.0.1:8080`) with `api_key`.
    pub fn new(base_url: &str, api_key: &str) -> Result<Self, CliError> {
        // reqwest is built without a default crypto provider: install ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("plangrep-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    /// A request to `path` under `/api/open/v1`, authenticated.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/open/v1{path}", self.base_url))
            .bearer_auth(&self.api_key)
    }

    /// `GET path` → JSON body.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.get_with_limits(path).await?.0)
    }

    /// `GET path` → JSON body and the answer's rate-limit headers.
    pub async fn get_with_limits(&self, path: &str) -> Result<(Value, RateLimit), CliError> {
        self.send_retrying(|| self.request(Method::GET, path)).await
    }

    /// `POST path` with a JSON `body` (or none) under a fresh `Idempotency-Key`.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        self.post_with_key(path, body, &idempotency_key()).await
    }

    /// `POST path` with a JSON `body` (or none) under the given `Idempotency-Key`.
    pub async fn post_with_key(
        &self,
        path: &str,
        body: Option<&Value>,
        key: &str,
    ) -> Result<Value, CliError> {
        let (value, _) = self
            .send_retrying(|| {
                let request = self
                    .request(Method::POST, path)
                    .header("idempotency-key", key);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        Ok(value)
    }

    /// Sends what `build` makes until it succeeds, fails for good, or the attempts are
    /// used up; `build` must make the same (safe to repeat) request every time.
    async fn send_retrying(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(Value, RateLimit), CliError> {
        let mut attempt = 1;
        loop {
            let outcome = match build().send().await {
                Ok(response) => read_json(response).await,
                Err(error) => Err(Attempt::Retry(CliError::from(error), None)),
            };
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry(error, _)) if attempt >= MAX_ATTEMPTS => return Err(error),
                Err(Attempt::Retry(_, wait)) => {
                    tokio::time::sleep(wait.unwrap_or_else(|| retry_delay(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The outcome of one failed attempt.
pub enum Attempt {
    /// Worth re-sending, after the server's `Retry-After` when it gave one.
    Retry(CliError, Option<Duration>),
    /// Final.
    Fatal(CliError),
}

/// The delay before retry number `attempt` (1-based): doubling, capped.
pub fn retry_delay(attempt: u32) -> Duration {
    FIRST_RETRY_DELAY
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_RETRY_DELAY)
}

/// Reads a response: 2xx → its JSON and rate limits; otherwise the SPEC error, classified
/// as retryable (429, 503 and other 5xx, 409 `idempotency_request_in_progress`) or not.
pub async fn read_json(response: Response) -> Result<(Value, RateLimit), Attempt> {
    let limits = RateLimit::from_headers(response.headers());
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| Attempt::Retry(CliError::from(error), None))?;
    if status.is_success() {
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| {
                Attempt::Fatal(CliError::Unexpected(format!(
                    "HTTP {status} with a body that is not JSON"
                )))
            })?
        };
        return Ok((value, limits));
    }
    let error = api_error(status, &text);
    let retryable = status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || matches!(&error, CliError::Api { code, .. } if code == "idempotency_request_in_progress");
    if retryable {
        let wait = limits
            .retry_after
            .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_DELAY));
        Err(Attempt::Retry(error, wait))
    } else {
        Err(Attempt::Fatal(error))
    }
}

/// The SPEC error body of a non-2xx answer, or a stand-in when there is none.
pub fn api_error(status: StatusCode, body: &str) -> CliError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|value| &value["error"]);
    let field = |name: &str| {
        error
            .and_then(|error| error[name].as_str())
            .map(str::to_owned)
    };
    CliError::Api {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| format!("http_{}", status.as_u16())),
        message: field("message").unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected answer")
                .to_owned()
        }),
        request_id: field("requestId"),
    }
}

/// A fresh `Idempotency-Key`: `plangrep-cli-` + 32 random hex digits.
pub fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("plangrep-cli-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_window_pauses_until_the_reset() {
        let empty = RateLimit {
            remaining: Some(0),
            reset: Some(3),
            retry_after: None,
        };
        assert_eq!(empty.pause(), Duration::from_secs(3));
        let plenty = RateLimit {
            remaining: Some(40),
            reset: Some(1),
            retry_after: None,
        };
        assert_eq!(plenty.pause(), Duration::ZERO);
    }

    #[test]
    fn retry_delays_double_and_stop_growing() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(30), MAX_RETRY_DELAY);
    }

    #[test]
    fn an_error_body_gives_its_code_and_a_missing_one_a_stand_in() {
        let body = r#"{"error":{"code":"not_found","message":"no such job","requestId":"req_1"}}"#;
        let error = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(
            error.to_string(),
            "not_found: no such job (HTTP 404, request req_1)"
        );
        let bare = api_error(StatusCode::BAD_GATEWAY, "<html>");
        assert!(bare.to_string().starts_with("http_502: Bad Gateway"));
    }

    #[test]
    fn idempotency_keys_are_fresh_printable_ascii() {
        let key = idempotency_key();
        assert_ne!(key, idempotency_key());
        assert!(key.len() <= 256 && key.bytes().all(|b| b.is_ascii_graphic()));
    }
}
