//! The admin API (SPEC §6), for operators and tests: organizations, API keys and credits. Guarded
//! by `PLANGREP_ADMIN_TOKEN` (compared in constant time); absent when no token is set.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use plangrep_core::ErrorCode;
use plangrep_core::api::timestamp;
use plangrep_core::id::{ApiKeyId, OrgId};
use plangrep_core::validate::FieldError;
use plangrep_proto::orchestrator::{
    GetCreditBalanceRequest, GetCreditRatesRequest, GrantCreditsRequest, SetCreditRatesRequest,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::PathId;
use crate::auth::{self, SCOPES};
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::startup::AppState;

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// Route layer of the admin API: the token is checked before the handler (and its path
/// and body extractors) runs, and the proof left in the request's extensions.
pub async fn require_admin(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (mut parts, body) = request.into_parts();
    match Admin::from_request_parts(&mut parts, &state).await {
        Ok(admin) => {
            parts.extensions.insert(admin);
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        }
        Err(error) => error.into_response(),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(admin) = parts.extensions.get::<Admin>() {
            return Ok(*admin);
        }
        let Some(expected) = state.config.admin_token.as_deref() else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "the admin API is disabled",
            ));
        };
        let presented = auth::bearer(parts).unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "a valid admin token is required",
            ))
        }
    }
}

/// Body of `POST /admin/v1/orgs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgBody {
    name: Option<String>,
}

/// An organization.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgView {
    id: String,
    name: String,
    #[serde(with = "timestamp")]
    created_at: DateTime<Utc>,
}

/// `{"org": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrgEnvelope {
    org: OrgView,
}

fn bounded_name(field: &'static str, value: Option<&str>) -> Result<String, FieldError> {
    let value = value.unwrap_or("").trim();
    if value.is_empty() || value.chars().count() > 180 || value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must be 1 to 180 printable characters",
        ));
    }
    Ok(value.to_owned())
}

/// Creates an organization.
#[utoipa::path(
    operation_id = "createOrg",
    post,
    path = "/admin/v1/orgs",
    tag = "admin",
    summary = "Create an organization",
    request_body = CreateOrgBody,
    params(crate::openapi::IdempotencyHeader),
    responses((status = 201, description = "The organization", body = OrgEnvelope))
)]
pub async fn create_org(
    _: Admin,
    State(state): State<AppState>,
    ApiJson { body, .. }: ApiJson<CreateOrgBody>,
) -> Result<(StatusCode, Json<OrgEnvelope>), ApiError> {
    let name = bounded_name("name", body.name.as_deref())?;
    let org: OrgView = sqlx::query_as(
        "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3) RETURNING id, name, created_at",
    )
    .bind(OrgId::generate().to_string())
    .bind(name)
    .bind(crate::now())
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(OrgEnvelope { org })))
}

/// Body of `POST /admin/v1/orgs/{orgId}/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateKeyBody {
    label: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default, with = "timestamp::option")]
    expires_at: Option<DateTime<Utc>>,
}

/// An API key's metadata (never its plaintext or hash).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    id: String,
    org_id: String,
    label: String,
    scopes: Vec<String>,
    #[serde(with = "timestamp")]
    created_at: DateTime<Utc>,
    #[serde(with = "timestamp::option")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp::option")]
    revoked_at: Option<DateTime<Utc>>,
}

/// `{"key": …, "plaintextKey": …}`: the plaintext is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    key: KeyView,
    plaintext_key: String,
}

/// Mints an API key for an organization.
#[utoipa::path(
    operation_id = "createApiKey",
    post,
    path = "/admin/v1/orgs/{org_id}/api-keys",
    tag = "admin",
    summary = "Mint an API key (the plaintext is shown once)",
    request_body = CreateKeyBody,
    params(("org_id" = String, Path, description = "An `org_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 201, description = "The key and its plaintext", body = CreatedKey))
)]
pub async fn create_key(
    _: Admin,
    State(state): State<AppState>,
    PathId(org_id): PathId<OrgId>,
    ApiJson { body, .. }: ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let mut invalid = Vec::new();
    let label = bounded_name("label", body.label.as_deref())
        .map_err(|e| invalid.push(e))
        .ok();
    let mut scopes = body.scopes.unwrap_or_default();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        invalid.push(FieldError::new(
            "scopes",
            format!("must be a non-empty list of {}", SCOPES.join(", ")),
        ));
    }
    let now = crate::now();
    if body.expires_at.is_some_and(|at| at <= now) {
        invalid.push(FieldError::new("expiresAt", "must be in the future"));
    }
    let Some(label) = label.filter(|_| invalid.is_empty()) else {
        return Err(ApiError::invalid_fields(invalid));
    };
    let org_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)")
        .bind(org_id.to_string())
        .fetch_one(&state.pool)
        .await?;
    if !org_exists {
        return Err(ApiError::not_found("organization"));
    }
    let minted = auth::mint();
    let key: KeyView = sqlx::query_as(
        "INSERT INTO api_keys (id, org_id, label, scopes, key_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING id, org_id, label, scopes, created_at, expires_at, revoked_at",
    )
    .bind(ApiKeyId::generate().to_string())
    .bind(org_id.to_string())
    .bind(label)
    .bind(&scopes)
    .bind(&minted.hash)
    .bind(now)
    .bind(body.expires_at)
    .fetch_one(&state.pool)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            plaintext_key: minted.plaintext,
        }),
    ))
}

/// `{"key": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyEnvelope {
    key: KeyView,
}

/// Revokes a key; its next request is a 401. Revoking twice keeps the first time.
#[utoipa::path(
    operation_id = "revokeApiKey",
    post,
    path = "/admin/v1/api-keys/{key_id}/revoke",
    tag = "admin",
    summary = "Revoke an API key",
    params(("key_id" = String, Path, description = "A `key_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 200, description = "The revoked key", body = KeyEnvelope))
)]
pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    PathId(key_id): PathId<ApiKeyId>,
) -> Result<Json<KeyEnvelope>, ApiError> {
    let key: Option<KeyView> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
         RETURNING id, org_id, label, scopes, created_at, expires_at, revoked_at",
    )
    .bind(key_id.to_string())
    .bind(crate::now())
    .fetch_optional(&state.pool)
    .await?;
    let key = key.ok_or_else(|| ApiError::not_found("API key"))?;
    // At once here; the other replicas hear it from the table's trigger (ADR 0024).
    state.key_cache.forget_all();
    Ok(Json(KeyEnvelope { key }))
}

/// An organization with its credit balance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgWithBalance {
    #[serde(flatten)]
    org: OrgView,
    credit_balance: i64,
    /// Credits per drawing page.
    drawing_page_rate: i64,
    /// Credits per document page.
    document_page_rate: i64,
}

/// `{"org": {…, "creditBalance"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrgBalanceEnvelope {
    org: OrgWithBalance,
}

async fn find_org(state: &AppState, org_id: OrgId) -> Result<OrgView, ApiError> {
    let org: Option<OrgView> =
        sqlx::query_as("SELECT id, name, created_at FROM orgs WHERE id = $1")
            .bind(org_id.to_string())
            .fetch_optional(&state.pool)
            .await?;
    org.ok_or_else(|| ApiError::not_found("organization"))
}

/// Reads an organization and its credit balance.
#[utoipa::path(
    operation_id = "getOrg",
    get,
    path = "/admin/v1/orgs/{org_id}",
    tag = "admin",
    summary = "Read an organization and its credit balance",
    params(("org_id" = String, Path, description = "An `org_` id")),
    responses((status = 200, description = "The organization", body = OrgBalanceEnvelope))
)]
pub async fn get_org(
    _: Admin,
    State(state): State<AppState>,
    PathId(org_id): PathId<OrgId>,
) -> Result<Json<OrgBalanceEnvelope>, ApiError> {
    let org = find_org(&state, org_id).await?;
    let rates = state
        .orchestrator
        .clone()
        .get_credit_rates(GetCreditRatesRequest {
            org_id: org_id.to_string(),
        })
        .await?
        .into_inner();
    org_with_balance(&state, org, rates).await
}

/// Body of `PATCH /admin/v1/orgs/{orgId}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateOrgBody {
    /// Credits per drawing page, 0 to 1000000.
    #[schema(minimum = 0, maximum = 1000000)]
    drawing_page_rate: Option<i64>,
    /// Credits per document page, 0 to 1000000.
    #[schema(minimum = 0, maximum = 1000000)]
    document_page_rate: Option<i64>,
}

/// Sets an organization's credit rates (what preflight reserves per page from now on).
#[utoipa::path(
    operation_id = "updateOrg",
    patch,
    path = "/admin/v1/orgs/{org_id}",
    tag = "admin",
    summary = "Set an organization's credit rates",
    request_body(content = Option<UpdateOrgBody>, description = "The rates to change; every field is optional (`{}`, `null` and an empty body change nothing)"),
    params(("org_id" = String, Path, description = "An `org_` id")),
    responses((status = 200, description = "The organization", body = OrgBalanceEnvelope))
)]
pub async fn update_org(
    _: Admin,
    State(state): State<AppState>,
    PathId(org_id): PathId<OrgId>,
    ApiJson { body, .. }: ApiJson<UpdateOrgBody>,
) -> Result<Json<OrgBalanceEnvelope>, ApiError> {
    let invalid: Vec<FieldError> = [
        ("drawingPageRate", body.drawing_page_rate),
        ("documentPageRate", body.document_page_rate),
    ]
    .into_iter()
    .filter(|(_, rate)| rate.is_some_and(|r| !(0..=1_000_000).contains(&r)))
    .map(|(field, _)| FieldError::new(field, "must be an integer from 0 to 1000000"))
    .collect();
    if !invalid.is_empty() {
        return Err(ApiError::invalid_fields(invalid));
    }
    let org = find_org(&state, org_id).await?;
    let rates = state
        .orchestrator
        .clone()
        .set_credit_rates(SetCreditRatesRequest {
            org_id: org_id.to_string(),
            drawing_page_rate: body.drawing_page_rate,
            document_page_rate: body.document_page_rate,
        })
        .await?
        .into_inner();
    org_with_balance(&state, org, rates).await
}

async fn org_with_balance(
    state: &AppState,
    org: OrgView,
    rates: plangrep_proto::orchestrator::CreditRates,
) -> Result<Json<OrgBalanceEnvelope>, ApiError> {
    let balance = state
        .orchestrator
        .clone()
        .get_credit_balance(GetCreditBalanceRequest {
            org_id: org.id.clone(),
        })
        .await?
        .into_inner();
    Ok(Json(OrgBalanceEnvelope {
        org: OrgWithBalance {
            org,
            credit_balance: balance.balance,
            drawing_page_rate: rates.drawing_page_rate,
            document_page_rate: rates.document_page_rate,
        },
    }))
}

/// Body of `POST /admin/v1/orgs/{orgId}/credits`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    amount: Option<i64>,
    reason: Option<String>,
}

/// `{"orgId", "balance"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceView {
    org_id: String,
    balance: i64,
}

/// Grants (or, negative, corrects) credits; answers the new balance.
#[utoipa::path(
    operation_id = "grantCredits",
    post,
    path = "/admin/v1/orgs/{org_id}/credits",
    tag = "admin",
    summary = "Grant (or correct) credits",
    request_body = GrantBody,
    params(("org_id" = String, Path, description = "An `org_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 200, description = "The new balance", body = BalanceView))
)]
pub async fn grant_credits(
    _: Admin,
    State(state): State<AppState>,
    PathId(org_id): PathId<OrgId>,
    ApiJson { body, .. }: ApiJson<GrantBody>,
) -> Result<Json<BalanceView>, ApiError> {
    let mut invalid = Vec::new();
    let amount = body
        .amount
        .filter(|a| *a != 0 && a.unsigned_abs() <= 1_000_000_000_000);
    if amount.is_none() {
        invalid.push(FieldError::new(
            "amount",
            "must be a non-zero integer of at most 10^12 in absolute value",
        ));
    }
    let reason = bounded_name("reason", body.reason.as_deref())
        .map_err(|e| invalid.push(e))
        .ok();
    let (Some(amount), Some(reason)) = (amount, reason) else {
        return Err(ApiError::invalid_fields(invalid));
    };
    find_org(&state, org_id).await?;
    let balance = state
        .orchestrator
        .clone()
        .grant_credits(GrantCreditsRequest {
            org_id: org_id.to_string(),
            amount,
            reason,
        })
        .await?
        .into_inner();
    Ok(Json(BalanceView {
        org_id: balance.org_id,
        balance: balance.balance,
    }))
}
