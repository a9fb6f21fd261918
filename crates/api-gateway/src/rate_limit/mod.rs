//! Rate limiting (SPEC §1): a token bucket per API key (`per_second` tokens per second, up
//! to `burst`), and one per client address for requests that did not authenticate.
//!
//! - **Per key**: in Redis when `PLANGREP_REDIS_URL` is set ([`shared`]), so the limit
//!   holds across every gateway replica; otherwise in this replica's memory
//!   ([`buckets`]). While Redis is unreachable the replica falls back to its own buckets
//!   (fail open to a per-replica limit, never a 5xx), logs it once, counts every fallback
//!   in `plangrep_rate_limit_fallbacks_total`, and tries Redis again after
//!   [`STORE_RETRY_AFTER`].
//! - **Per peer**, always in memory: every request that ends without an authenticated key
//!   (a missing or bad key, the OpenAPI document, unknown routes) takes a token from its
//!   peer address' bucket, and a peer whose bucket is empty is refused *before* its
//!   request runs: a flood of guessed keys costs no database lookup past the burst.
//!
//! Every public response carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset`; a refused request gets 429 `rate_limited` with `Retry-After`.

pub mod buckets;
pub mod resp;
pub mod shared;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plangrep_core::ErrorCode;
use prometheus_client::metrics::counter::Counter;

use crate::error::ApiError;
use buckets::LocalBuckets;
use shared::SharedBuckets;

/// After a failed Redis check, the per-key limits stay local this long before Redis is
/// tried again (a down or black-holed Redis costs no latency on every request).
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// The bucket's size: the largest burst.
    pub burst: u32,
}

impl Rate {
    /// The decision for a bucket left with `tokens` after the check.
    pub fn decision(&self, allowed: bool, tokens: f64) -> Decision {
        let burst = f64::from(self.burst);
        let tokens = tokens.clamp(0.0, burst);
        Decision {
            allowed,
            limit: self.burst,
            remaining: tokens.floor() as u32,
            reset_seconds: ((burst - tokens) / self.per_second).ceil() as u64,
            retry_after_seconds: ((1.0 - tokens).max(0.0) / self.per_second).ceil().max(1.0) as u64,
        }
    }
}

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

/// The gateway's rate limits.
#[derive(Debug)]
pub struct RateLimiter {
    /// Per-key buckets of this replica: the limit without Redis, the fallback with it.
    keys: LocalBuckets,
    /// Requests without an authenticated key, by peer address.
    peers: LocalBuckets,
    shared: Option<SharedBuckets>,
    /// Set while Redis is considered down: until then checks stay local.
    store_down_until: Mutex<Option<Instant>>,
    /// `plangrep_rate_limit_fallbacks_total`.
    fallbacks: Counter,
}

impl RateLimiter {
    /// Limits at `rate`, per key in `shared` when given (else in memory).
    pub fn new(rate: Rate, shared: Option<SharedBuckets>, fallbacks: Counter) -> Self {
        Self {
            keys: LocalBuckets::new(rate),
            peers: LocalBuckets::new(rate),
            shared,
            store_down_until: Mutex::new(None),
            fallbacks,
        }
    }

    /// Takes one token from the bucket of the API key `key_id`.
    pub async fn take_for_key(&self, key_id: &str) -> Decision {
        if let Some(shared) = &self.shared {
            if self.store_usable(Instant::now()) {
                match shared.take(key_id).await {
                    Ok(decision) => return decision,
                    Err(error) => self.store_failed(&error),
                }
            }
            self.fallbacks.inc();
        }
        self.keys.take(key_id, Instant::now())
    }

    /// Where `peer`'s bucket stands (nothing taken): refused means refuse up front.
    pub fn peer_standing(&self, peer: &str) -> Decision {
        self.peers.peek(peer, Instant::now())
    }

    /// Takes one token from `peer`'s bucket (a request that did not authenticate).
    pub fn take_for_peer(&self, peer: &str) -> Decision {
        self.peers.take(peer, Instant::now())
    }

    fn store_usable(&self, now: Instant) -> bool {
        let mut down_until = self.store_down_until.lock().expect("not poisoned");
        match *down_until {
            Some(until) if now < until => false,
            Some(_) => {
                *down_until = None;
                tracing::info!("retrying the shared rate-limit store");
                true
            }
            None => true,
        }
    }

    fn store_failed(&self, error: &resp::RespError) {
        let mut down_until = self.store_down_until.lock().expect("not poisoned");
        if down_until.is_none() {
            tracing::warn!(
                %error,
                "the shared rate-limit store (PLANGREP_REDIS_URL) failed: limiting per replica for now"
            );
        }
        *down_until = Some(Instant::now() + STORE_RETRY_AFTER);
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

/// Middleware for every public response (unknown routes included): refuses a peer whose
/// unauthenticated budget is spent before anything runs, charges requests that did not
/// authenticate to their peer (the `ApiKey` extractor limits those that did), and adds
/// the headers.
pub async fn middleware(
    State(limiter): State<Arc<RateLimiter>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_limited(request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| format!("peer:{}", info.0.ip()))
        .unwrap_or_else(|| "peer:unknown".to_owned());
    let standing = limiter.peer_standing(&peer);
    if !standing.allowed {
        // Before any handler, so before any API key lookup.
        return with_headers(refused(&standing).into_response(), &standing);
    }
    let slot = DecisionSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let decision = match slot.get() {
        Some(decision) => decision,
        None => {
            let decision = limiter.take_for_peer(&peer);
            if !decision.allowed {
                response = refused(&decision).into_response();
            }
            decision
        }
    };
    with_headers(response, &decision)
}

fn with_headers(mut response: Response, decision: &Decision) -> Response {
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
