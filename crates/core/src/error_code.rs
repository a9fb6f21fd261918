//! The public error codes of SPEC §1, with their HTTP status: the one table every
//! transport maps through. Clients branch on these strings, so they never change.

use std::fmt;
use std::str::FromStr;

/// A machine-readable error code of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    ChecksumMismatch,
    Unauthorized,
    InsufficientScope,
    NotFound,
    MethodNotAllowed,
    ProjectNotReady,
    ProjectNameTaken,
    InvalidJobState,
    NoFiles,
    NoWebhook,
    ResultNotAvailable,
    IdempotencyRequestInProgress,
    DeliveryInProgress,
    PayloadTooLarge,
    JobLimitExceeded,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    RequestTimeout,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::InvalidRequest,
        ErrorCode::ChecksumMismatch,
        ErrorCode::Unauthorized,
        ErrorCode::InsufficientScope,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ProjectNotReady,
        ErrorCode::ProjectNameTaken,
        ErrorCode::InvalidJobState,
        ErrorCode::NoFiles,
        ErrorCode::NoWebhook,
        ErrorCode::ResultNotAvailable,
        ErrorCode::IdempotencyRequestInProgress,
        ErrorCode::DeliveryInProgress,
        ErrorCode::PayloadTooLarge,
        ErrorCode::JobLimitExceeded,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::RequestTimeout,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The snake_case code clients branch on.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ProjectNotReady => "project_not_ready",
            ErrorCode::ProjectNameTaken => "project_name_taken",
            ErrorCode::InvalidJobState => "invalid_job_state",
            ErrorCode::NoFiles => "no_files",
            ErrorCode::NoWebhook => "no_webhook",
            ErrorCode::ResultNotAvailable => "result_not_available",
            ErrorCode::IdempotencyRequestInProgress => "idempotency_request_in_progress",
            ErrorCode::DeliveryInProgress => "delivery_in_progress",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::JobLimitExceeded => "job_limit_exceeded",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the gateway answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::ChecksumMismatch => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ProjectNotReady
            | ErrorCode::ProjectNameTaken
            | ErrorCode::InvalidJobState
            | ErrorCode::NoFiles
            | ErrorCode::NoWebhook
            | ErrorCode::ResultNotAvailable
            | ErrorCode::IdempotencyRequestInProgress
            | ErrorCode::DeliveryInProgress => 409,
            ErrorCode::PayloadTooLarge | ErrorCode::JobLimitExceeded => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of our error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_only_outages_and_bugs_are_5xx() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), code);
            let server_side = matches!(code, ErrorCode::Internal | ErrorCode::Unavailable);
            assert_eq!(code.http_status() >= 500, server_side, "{code}");
        }
    }
}
