//! The gateway's one error type and its one HTTP mapping: every failure becomes the SPEC
//! body `{"error": {code, message, details?, requestId}}` with the status of its code.
//! gRPC statuses map through the public code they carry; 5xx never leak internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plangrep_core::ErrorCode;
use plangrep_core::validate::FieldError;
use serde::Serialize;

use crate::request_id;

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Detail {
    pub field: String,
    pub issue: String,
}

/// An error answer of the public or admin API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<Detail>,
    /// Replayed from an idempotency record (adds `"idempotent": true`).
    pub replayed: bool,
}

/// Marks a response whose body is already in the SPEC error format.
#[derive(Debug, Clone, Copy)]
pub struct RenderedError;

impl ApiError {
    /// An error with `code` and a human `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            replayed: false,
        }
    }

    /// 400 for one or more rejected fields.
    pub fn invalid_fields(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.issue),
            _ => "some fields are invalid".to_owned(),
        };
        Self {
            code: ErrorCode::InvalidRequest,
            message,
            replayed: false,
            details: fields
                .into_iter()
                .map(|f| Detail {
                    field: f.field.to_owned(),
                    issue: f.issue,
                })
                .collect(),
        }
    }

    /// 404 for a resource that does not exist for this organization.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no such {what}"))
    }

    /// 500: a bug. The cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Debug) -> Self {
        tracing::error!(?cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// 503: a dependency is down.
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "a dependency is unavailable; retry later",
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::invalid_fields(vec![error])
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let code = plangrep_proto::status::public_code(&status);
        match code {
            ErrorCode::Internal => Self::internal(status),
            ErrorCode::Unavailable => {
                tracing::warn!(message = status.message(), "upstream unavailable");
                Self::unavailable()
            }
            code => Self {
                code,
                replayed: crate::idempotency::is_replay(status.metadata()),
                message: status.message().to_owned(),
                details: plangrep_proto::status::details(&status)
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default(),
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if plangrep_service::database::is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            Self::unavailable()
        } else {
            Self::internal(error)
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    error: ErrorBody,
    /// Present (true) when replayed from an earlier request with the same Idempotency-Key.
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent: Option<bool>,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    /// Stable snake_case code to branch on.
    code: String,
    /// Human-readable; may change.
    message: String,
    /// The rejected fields, for `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<Detail>>,
    /// Also in the `x-request-id` header.
    request_id: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.as_str().to_owned(),
                message: self.message,
                details: Some(self.details).filter(|d| !d.is_empty()),
                request_id: request_id::current(),
            },
            idempotent: self.replayed.then_some(true),
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(RenderedError);
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
