//! `Idempotency-Key` for the operations that have no orchestrator transaction to keep the
//! record in (SPEC §2, "every POST that creates or changes something"): the admin API,
//! which writes the gateway's own tables, and webhook redelivery, which the dispatcher
//! performs. A route layer claims `(scope, route, key)` in the gateway's database before
//! the handler runs and stores the answer (status and JSON body) after it:
//!
//! - same key, same fingerprint: the stored answer again, with `"idempotent": true`;
//! - same key, different fingerprint: 422 `idempotency_key_reused`;
//! - same key while the first request runs: 409 `idempotency_request_in_progress`;
//! - a 5xx, and "not now" answers (409, 429), are not stored: the key can be retried.
//!
//! Records live 24 h; every claim also deletes a bounded batch of expired ones.
//!
//! Unlike the orchestrator's records, the claim and the effect are not one transaction: a
//! crash between them leaves a pending claim, which a retry takes over after
//! [`STALE_CLAIM`] (the effect may then happen twice, at most once per crash). Admin
//! answers are sealed (AES-256-GCM under a key derived from the admin token): a minted
//! API key's plaintext must not lie in the database in the clear.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header::CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use plangrep_core::ErrorCode;
use plangrep_proto::orchestrator::Idempotency;
use sha2::{Digest, Sha256};

use crate::auth::ApiKey;
use crate::error::{ApiError, RenderedError};
use crate::idempotency::IdempotencyKey;
use crate::json::{self, MAX_JSON_BODY};
use crate::routes::admin::Admin;
use crate::startup::AppState;

/// How long a stored answer is replayed (SPEC §2: 24 h).
const RETENTION_HOURS: i64 = 24;
/// A claim older than this whose request never finished (a crash) can be taken over.
pub const STALE_CLAIM: chrono::Duration = chrono::Duration::minutes(1);
const NONCE_LEN: usize = 12;

/// Who a record belongs to, and how its body is kept.
struct Scope {
    name: String,
    seal: Option<Key<Aes256Gcm>>,
}

impl Scope {
    /// The records of an API key's organization (kept in the clear: no secrets in them).
    fn of_key(key: &ApiKey) -> Self {
        Self {
            name: key.org_id.to_string(),
            seal: None,
        }
    }

    fn context(&self, record: &Idempotency) -> Vec<u8> {
        format!("{}\n{}\n{}", self.name, record.route, record.key).into_bytes()
    }

    fn seal(&self, context: &[u8], body: &[u8]) -> Vec<u8> {
        let Some(key) = &self.seal else {
            return body.to_vec();
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let sealed = Aes256Gcm::new(key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of an in-memory message cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    fn open(&self, context: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
        let Some(key) = &self.seal else {
            return Some(stored.to_vec());
        };
        if stored.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        Aes256Gcm::new(key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context,
                },
            )
            .ok()
    }
}

/// The admin scope's sealing key, derived from the admin token.
fn admin_seal(token: &str) -> Key<Aes256Gcm> {
    let digest = Sha256::new()
        .chain_update(b"plangrep gateway idempotency v1\n")
        .chain_update(token.as_bytes())
        .finalize();
    *Key::<Aes256Gcm>::from_slice(&digest)
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    fingerprint: Vec<u8>,
    status: Option<i16>,
    body: Option<Vec<u8>>,
}

/// Route layer: idempotent POSTs of the admin API and of redelivery. Runs after
/// authentication (it needs the scope), before the handler.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let idempotency = match IdempotencyKey::from_request_parts(&mut parts, &()).await {
        Ok(idempotency) => idempotency,
        Err(error) => return error.into_response(),
    };
    let scope = if let Some(key) = parts.extensions.get::<ApiKey>() {
        Scope::of_key(key)
    } else if parts.extensions.get::<Admin>().is_some() {
        Scope {
            name: "admin".to_owned(),
            seal: state.config.admin_token.as_deref().map(admin_seal),
        }
    } else {
        return ApiError::internal("idempotency layer without authentication").into_response();
    };
    let bytes = match axum::body::to_bytes(body, MAX_JSON_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                "JSON bodies are limited to 1 MiB",
            )
            .into_response();
        }
    };
    let Some(record) = idempotency.scope(&json::canonical_body(&bytes)) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    match claim(&state.pool, &scope, &record).await {
        Ok(Claimed::Owned) => {}
        Ok(Claimed::Replay(response)) => return response,
        Err(error) => return error.into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    match complete(&state.pool, &scope, &record, response).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// For a handler that fingerprints its request itself (uploads: the metadata part, since
/// the files stream through): the stored answer of an earlier request with this key, or
/// `None` when this request owns the key and must [`finish_owned`] it.
pub async fn claim_owned(
    state: &AppState,
    key: &ApiKey,
    record: &Idempotency,
) -> Result<Option<Response>, ApiError> {
    match claim(&state.pool, &Scope::of_key(key), record).await? {
        Claimed::Owned => Ok(None),
        Claimed::Replay(response) => Ok(Some(response)),
    }
}

/// Stores the answer of a request that [`claim_owned`] the key.
pub async fn finish_owned(
    state: &AppState,
    key: &ApiKey,
    record: &Idempotency,
    response: Response,
) -> Response {
    match complete(&state.pool, &Scope::of_key(key), record, response).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

enum Claimed {
    /// This request runs the operation.
    Owned,
    /// The stored answer of the first request.
    Replay(Response),
}

async fn claim(
    pool: &sqlx::PgPool,
    scope: &Scope,
    record: &Idempotency,
) -> Result<Claimed, ApiError> {
    let now = Utc::now();
    // Reap a bounded batch of expired records on the way (no separate sweeper needed).
    sqlx::query(
        "DELETE FROM idempotency_records WHERE ctid IN ( \
           SELECT ctid FROM idempotency_records WHERE expires_at <= $1 LIMIT 100)",
    )
    .bind(now)
    .execute(pool)
    .await?;
    // An expired record, or a claim abandoned by a crash, no longer holds its key.
    sqlx::query(
        "DELETE FROM idempotency_records WHERE scope = $1 AND route = $2 AND key = $3 \
           AND (expires_at <= $4 OR (status IS NULL AND created_at <= $5))",
    )
    .bind(&scope.name)
    .bind(&record.route)
    .bind(&record.key)
    .bind(now)
    .bind(now - STALE_CLAIM)
    .execute(pool)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_records (scope, route, key, fingerprint, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&scope.name)
    .bind(&record.route)
    .bind(&record.key)
    .bind(&record.fingerprint)
    .bind(now)
    .bind(now + chrono::Duration::hours(RETENTION_HOURS))
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claimed::Owned);
    }
    let stored: Option<StoredRow> = sqlx::query_as(
        "SELECT fingerprint, status, body FROM idempotency_records \
         WHERE scope = $1 AND route = $2 AND key = $3",
    )
    .bind(&scope.name)
    .bind(&record.route)
    .bind(&record.key)
    .fetch_optional(pool)
    .await?;
    let Some(stored) = stored else {
        // Deleted between our insert and select (its request failed): let the client retry.
        return Err(in_progress());
    };
    if stored.fingerprint != record.fingerprint {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request",
        ));
    }
    let (Some(status), Some(body)) = (stored.status, stored.body) else {
        return Err(in_progress());
    };
    let body = scope
        .open(&scope.context(record), &body)
        .ok_or_else(|| ApiError::internal("a stored idempotent response cannot be opened"))?;
    Ok(Claimed::Replay(replay(status, &body)?))
}

fn in_progress() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyRequestInProgress,
        "a request with this Idempotency-Key is still in progress; retry later",
    )
}

/// The stored answer, marked `"idempotent": true`.
fn replay(status: i16, body: &[u8]) -> Result<Response, ApiError> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ApiError::internal("a stored idempotent status is invalid"))?;
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(ApiError::internal)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("idempotent".to_owned(), true.into());
    }
    let mut response = (status, value.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(json::JSON_UTF8));
    if !status.is_success() {
        response.extensions_mut().insert(RenderedError);
    }
    Ok(response)
}

/// Stores the first request's answer (or frees the key when it is not to be kept).
async fn complete(
    pool: &sqlx::PgPool,
    scope: &Scope,
    record: &Idempotency,
    response: Response,
) -> Result<Response, ApiError> {
    let status = response.status();
    let keep = status.as_u16() < 500
        && status != StatusCode::CONFLICT
        && status != StatusCode::TOO_MANY_REQUESTS;
    if !keep {
        sqlx::query(
            "DELETE FROM idempotency_records WHERE scope = $1 AND route = $2 AND key = $3 \
               AND status IS NULL",
        )
        .bind(&scope.name)
        .bind(&record.route)
        .bind(&record.key)
        .execute(pool)
        .await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(ApiError::internal)?;
    sqlx::query(
        "UPDATE idempotency_records SET status = $4, body = $5 \
         WHERE scope = $1 AND route = $2 AND key = $3",
    )
    .bind(&scope.name)
    .bind(&record.route)
    .bind(&record.key)
    .bind(i16::try_from(status.as_u16()).unwrap_or(i16::MAX))
    .bind(scope.seal(&scope.context(record), &bytes))
    .execute(pool)
    .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_answers_are_sealed_to_their_record() {
        let scope = Scope {
            name: "admin".into(),
            seal: Some(admin_seal("token")),
        };
        let record = Idempotency {
            key: "k".into(),
            route: "POST /admin/v1/orgs".into(),
            fingerprint: vec![1],
        };
        let context = scope.context(&record);
        let sealed = scope.seal(&context, br#"{"plaintextKey":"pgk_live_x"}"#);
        assert!(!sealed.windows(9).any(|w| w == b"pgk_live_"));
        assert_eq!(
            scope.open(&context, &sealed).unwrap(),
            br#"{"plaintextKey":"pgk_live_x"}"#
        );
        assert!(scope.open(b"another record", &sealed).is_none());
        let other_token = Scope {
            seal: Some(admin_seal("other")),
            ..scope
        };
        assert!(other_token.open(&context, &sealed).is_none());
    }
}
