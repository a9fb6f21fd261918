//! API keys: minting (`pgk_live_<random>`, only a SHA-256 stored), the `ApiKey`
//! extractor that authenticates a bearer token, and [`require_scope`], the route layer
//! that authenticates and checks the route's scope before any handler extractor parses
//! the path, the query or the body (SPEC §1: 401/403 first, whatever the input).

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use plangrep_core::ErrorCode;
use plangrep_core::id::OrgId;
use plangrep_service::batch::{Batcher, MAX_BATCH, WRITERS};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::rate_limit::{self, DecisionSlot};
use crate::startup::AppState;

/// Every plaintext key starts with this.
pub const KEY_PREFIX: &str = "pgk_live_";

/// The scopes a key can hold.
pub const SCOPES: [&str; 3] = ["jobs:read", "jobs:write", "artifacts:read"];

/// A freshly minted key: the plaintext (shown once) and what is stored.
pub struct MintedKey {
    pub plaintext: String,
    pub hash: Vec<u8>,
}

/// Mints a key with 32 bytes of OS randomness.
pub fn mint() -> MintedKey {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).expect("the OS random source is available");
    let plaintext = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let hash = hash(&plaintext);
    MintedKey { plaintext, hash }
}

/// The stored form of a key. Keys carry 256 bits of entropy, so a fast hash suffices.
pub fn hash(plaintext: &str) -> Vec<u8> {
    Sha256::digest(plaintext.as_bytes()).to_vec()
}

/// An authenticated API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub org_id: OrgId,
    pub key_id: String,
    pub scopes: Vec<String>,
}

impl ApiKey {
    /// 403 unless the key holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::InsufficientScope,
                format!("this API key lacks the {scope} scope"),
            ))
        }
    }
}

/// The scope each public operation requires, by method and route template. The route
/// layer refuses an operation missing here (fail closed); a test checks that every
/// documented public operation is listed.
pub const ROUTE_SCOPES: [(&str, &str, &str); 15] = [
    ("POST", "/api/open/v1/projects", "jobs:write"),
    ("GET", "/api/open/v1/projects", "jobs:read"),
    ("GET", "/api/open/v1/projects/{project_id}", "jobs:read"),
    (
        "POST",
        "/api/open/v1/projects/{project_id}/jobs",
        "jobs:write",
    ),
    (
        "GET",
        "/api/open/v1/projects/{project_id}/jobs",
        "jobs:read",
    ),
    ("GET", "/api/open/v1/jobs/{job_id}", "jobs:read"),
    ("GET", "/api/open/v1/jobs/{job_id}/events", "jobs:read"),
    (
        "POST",
        "/api/open/v1/jobs/{job_id}/uploads/complete",
        "jobs:write",
    ),
    ("GET", "/api/open/v1/jobs/{job_id}/result", "artifacts:read"),
    ("POST", "/api/open/v1/jobs/{job_id}/cancel", "jobs:write"),
    ("POST", "/api/open/v1/jobs/{job_id}/resume", "jobs:write"),
    ("POST", "/api/open/v1/jobs/{job_id}/files", "jobs:write"),
    (
        "GET",
        "/api/open/v1/jobs/{job_id}/webhook-deliveries",
        "jobs:read",
    ),
    (
        "POST",
        "/api/open/v1/webhook-deliveries/{delivery_id}/redeliver",
        "jobs:write",
    ),
    (
        "POST",
        "/api/open/v1/jobs/{job_id}/webhook-secret/rotate",
        "jobs:write",
    ),
];

/// The scope `method` on `route` requires, if the route is a known public operation.
pub fn route_scope(method: &str, route: &str) -> Option<&'static str> {
    ROUTE_SCOPES
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map(|(_, _, scope)| *scope)
}

/// Route layer of the public API: authenticates the key and checks the route's scope
/// before the handler (and its path, query and body extractors) runs. The key is left in
/// the request's extensions, where the `ApiKey` extractor finds it again.
pub async fn require_scope(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(scope) = route_scope(parts.method.as_str(), &route) else {
        if ROUTE_SCOPES.iter().any(|(_, r, _)| *r == route) {
            // A method the route does not serve: the router answers 405.
            return next.run(Request::from_parts(parts, body)).await;
        }
        // Unlisted routes are refused (and caught by tests) rather than left open.
        return ApiError::internal(format!("no scope declared for {} {route}", parts.method))
            .into_response();
    };
    let key = match ApiKey::from_request_parts(&mut parts, &state).await {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = key.require(scope) {
        return error.into_response();
    }
    parts.extensions.insert(key);
    next.run(Request::from_parts(parts, body)).await
}

/// Looks keys up by their hash; the lookups of requests that arrive together share one
/// statement (ADR 0022).
pub type KeyLookups = Batcher<Vec<u8>, Option<KeyRow>>;

/// The reader of [`KeyLookups`] over `pool`.
pub fn key_lookups(pool: PgPool) -> KeyLookups {
    Batcher::spawn(WRITERS, MAX_BATCH, move |hashes: Arc<[Vec<u8>]>| {
        let pool = pool.clone();
        async move {
            let rows: Vec<KeyRow> = sqlx::query_as(
                "SELECT key_hash, id, org_id, scopes, expires_at, revoked_at FROM api_keys \
                 WHERE key_hash = ANY($1)",
            )
            .bind(&hashes[..])
            .fetch_all(&pool)
            .await?;
            Ok(hashes
                .iter()
                .map(|hash| rows.iter().find(|row| row.key_hash == *hash).cloned())
                .collect())
        }
    })
}

/// The stored key with `hash`: remembered from a recent request, or read from the
/// database (and then remembered, ADR 0024).
async fn find_key(state: &AppState, hash: Vec<u8>) -> Result<Option<KeyRow>, ApiError> {
    if let Some(row) = state.key_cache.get(&hash) {
        return Ok(Some(row));
    }
    let seen = state.key_cache.generation();
    // Peers past their unauthenticated budget never get here (the rate limit
    // middleware refuses them first): this counter proves it.
    state.api_key_lookups.inc();
    let row = state.key_lookups.submit(hash.clone()).await?;
    if let Some(row) = &row {
        state.key_cache.insert(hash, row.clone(), seen);
    }
    Ok(row)
}

/// The keys this gateway has read recently.
pub type KeyCache = crate::key_cache::KeyCache<KeyRow>;

/// A stored key.
#[derive(Clone, sqlx::FromRow)]
pub struct KeyRow {
    key_hash: Vec<u8>,
    id: String,
    org_id: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Authenticated once per request: by the scope layer, or here.
        if let Some(key) = parts.extensions.get::<ApiKey>() {
            return Ok(key.clone());
        }
        let token = bearer(parts)
            .ok_or_else(|| unauthorized("send an API key as Authorization: Bearer <key>"))?;
        if !token.starts_with(KEY_PREFIX) || token.len() > 128 {
            return Err(unauthorized("the API key is not valid"));
        }
        let row = find_key(state, hash(token))
            .await?
            .ok_or_else(|| unauthorized("the API key is not valid"))?;
        if row.revoked_at.is_some() {
            return Err(unauthorized("the API key was revoked"));
        }
        if row.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(unauthorized("the API key has expired"));
        }
        let org_id = row.org_id.parse().map_err(ApiError::internal)?;
        let decision = state.rate_limiter.take_for_key(&row.id).await;
        if let Some(slot) = parts.extensions.get::<DecisionSlot>() {
            slot.set(decision);
        }
        if !decision.allowed {
            return Err(rate_limit::refused(&decision));
        }
        Ok(Self {
            org_id,
            key_id: row.id,
            scopes: row.scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_prefixed_unique_and_hashed() {
        let a = mint();
        let b = mint();
        assert!(a.plaintext.starts_with(KEY_PREFIX));
        assert_eq!(a.plaintext.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.hash, hash(&a.plaintext));
        assert_eq!(a.hash.len(), 32);
    }
}
