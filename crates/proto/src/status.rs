//! Public error codes across gRPC: servers attach the SPEC error code to a
//! `tonic::Status`, and the gateway reads it back, so a client sees exactly the code the
//! service meant (not a guess from the gRPC code).

use plangrep_core::ErrorCode;
use tonic::metadata::MetadataValue;

/// Metadata key carrying the public error code.
pub const ERROR_CODE_METADATA: &str = "x-plangrep-error-code";
/// Metadata key carrying `details` as JSON (`[{"field":..,"issue":..}]`).
pub const ERROR_DETAILS_METADATA: &str = "x-plangrep-error-details";

/// The gRPC code that best matches a public error code (for non-Plangrep clients).
fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code.http_status() {
        400 | 413 | 415 | 422 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 if code == ErrorCode::ProjectNameTaken => tonic::Code::AlreadyExists,
        409 | 405 => tonic::Code::FailedPrecondition,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

/// A status carrying `code`, a client-safe `message` and optional JSON `details`.
pub fn status(
    code: ErrorCode,
    message: impl Into<String>,
    details: Option<String>,
) -> tonic::Status {
    let mut status = tonic::Status::new(grpc_code(code), message);
    status.metadata_mut().insert(
        ERROR_CODE_METADATA,
        MetadataValue::from_static(code.as_str()),
    );
    if let Some(details) = details.and_then(|d| MetadataValue::try_from(d).ok()) {
        status
            .metadata_mut()
            .insert(ERROR_DETAILS_METADATA, details);
    }
    status
}

/// The public error code a status stands for. Statuses without our metadata (transport
/// failures, deadlines) map by their gRPC code: unavailability is `unavailable`, the rest
/// is an internal error.
pub fn public_code(status: &tonic::Status) -> ErrorCode {
    if let Some(code) = status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        return code;
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ErrorCode::Unavailable
        }
        tonic::Code::NotFound => ErrorCode::NotFound,
        // A status the client made up from a broken connection (the server died mid-call)
        // carries the transport error as its source; one the server sent never does.
        tonic::Code::Unknown if std::error::Error::source(status).is_some() => {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    }
}

/// The JSON `details` a status carries, if any.
pub fn details(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(ERROR_DETAILS_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_code_survives_the_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(public_code(&status(code, "m", None)), code);
        }
    }

    #[test]
    fn bare_transport_failures_are_unavailable() {
        assert_eq!(
            public_code(&tonic::Status::unavailable("connection refused")),
            ErrorCode::Unavailable
        );
        assert_eq!(
            public_code(&tonic::Status::deadline_exceeded("slow")),
            ErrorCode::Unavailable
        );
        assert_eq!(
            public_code(&tonic::Status::unknown("?")),
            ErrorCode::Internal
        );
        let broken_pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(
            public_code(&tonic::Status::from_error(Box::new(broken_pipe))),
            ErrorCode::Unavailable
        );
    }
}
