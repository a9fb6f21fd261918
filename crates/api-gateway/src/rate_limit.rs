//! Per-API-key rate limiting (SPEC §1): a token bucket per key (`rate` tokens per second,
//! up to `burst`), in memory per gateway replica. Requests without a valid key are
//! limited per client address instead, so key guessing is throttled too.
//!
//! Every public response (the API, unknown routes, the OpenAPI document) carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset`; a refused request gets 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plangrep_core::ErrorCode;

use crate::error::ApiError;

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// Seconds until one token is available (when refused).
    pub retry_after_seconds: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second on average, bursts up to `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket at `now`, if there is one.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if buckets.len() > 100_000 {
            // Forget buckets that have refilled: they hold no state worth keeping.
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing = self.burst - bucket.tokens;
        Decision {
            allowed,
            limit: self.burst as u32,
            remaining: bucket.tokens.floor() as u32,
            reset_seconds: (missing / self.rate).ceil() as u64,
            retry_after_seconds: ((1.0 - bucket.tokens).max(0.0) / self.rate).ceil().max(1.0)
                as u64,
        }
    }
}

/// Where the `ApiKey` extractor leaves its decision for the middleware.
#[derive(Debug, Clone, Default)]
pub struct DecisionSlot(Arc<Mutex<Option<Decision>>>);

impl DecisionSlot {
    /// Records the decision for this request.
    pub fn set(&self, decision: Decision) {
        *self.0.lock().expect("not poisoned") = Some(decision);
    }

    fn get(&self) -> Option<Decision> {
        *self.0.lock().expect("not poisoned")
    }
}

/// The 429 for a refused request.
pub fn refused(decision: &Decision) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "rate limit exceeded; retry in {} s",
            decision.retry_after_seconds
        ),
    )
}

/// Whether `path` is public (limited, with headers): everything but the admin API (its
/// own token, for operators) and the ops endpoints (probes and scrapers).
fn is_limited(path: &str) -> bool {
    !(path.starts_with("/admin/") || matches!(path, "/healthz" | "/readyz" | "/metrics"))
}

/// Middleware for every public response (unknown routes included): adds the headers, and limits requests that did not
/// authenticate (the `ApiKey` extractor limits those that did).
pub async fn middleware(
    State(limiter): State<Arc<RateLimiter>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_limited(request.uri().path()) {
        return next.run(request).await;
    }
    let slot = DecisionSlot::default();
    request.extensions_mut().insert(slot.clone());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let mut response = next.run(request).await;
    let decision = match slot.get() {
        Some(decision) => decision,
        None => {
            let decision = limiter.check(&format!("peer:{peer}"), Instant::now());
            if !decision.allowed {
                response = refused(&decision).into_response();
            }
            decision
        }
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_seconds));
    if !decision.allowed {
        headers.insert(
            "retry-after",
            HeaderValue::from(decision.retry_after_seconds),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        let decisions: Vec<Decision> = (0..4).map(|_| limiter.check("k", start)).collect();
        assert_eq!(
            decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(decisions[0].remaining, 2);
        assert_eq!(decisions[2].remaining, 0);
        assert_eq!(decisions[3].retry_after_seconds, 1);
        assert_eq!(decisions[3].reset_seconds, 2, "3 tokens at 2/s");
        // Half a second later one token is back.
        let later = limiter.check("k", start + Duration::from_millis(500));
        assert!(later.allowed);
        assert!(
            !limiter
                .check("k", start + Duration::from_millis(500))
                .allowed
        );
        // Other keys have their own bucket.
        assert!(limiter.check("other", start).allowed);
    }
}
