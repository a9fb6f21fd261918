//! The orchestrator's error type and its one mapping to `tonic::Status`.
//!
//! The public error code travels in the `x-plangrep-error-code` metadata entry so the
//! gateway can answer with exactly the SPEC code, not a guess from the gRPC code.

use plangrep_core::ErrorCode;
use plangrep_core::validate::FieldError;
use tonic::metadata::MetadataValue;

/// Metadata key carrying the public error code.
pub const ERROR_CODE_METADATA: &str = "x-plangrep-error-code";
/// Metadata key carrying `details` as JSON (`[{"field":..,"issue":..}]`).
pub const ERROR_DETAILS_METADATA: &str = "x-plangrep-error-details";

/// Why an orchestrator call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid request: {0}")]
    InvalidField(#[from] FieldError),
    #[error("the project is not ready yet")]
    ProjectNotReady,
    #[error("a project with this name already exists")]
    ProjectNameTaken,
    #[error("the job changed concurrently")]
    Conflict,
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Error::DatabaseUnavailable(error)
            }
            sqlx::Error::Database(db) if db.constraint() == Some("projects_org_name_key") => {
                Error::ProjectNameTaken
            }
            _ => Error::Database(error),
        }
    }
}

impl Error {
    /// Whether retrying the same work later can succeed (the dependency was down).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::DatabaseUnavailable(_) | Error::Conflict)
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let (grpc, code, message, details) = match &error {
            Error::NotFound(what) => (
                tonic::Code::NotFound,
                ErrorCode::NotFound,
                format!("no such {what}"),
                None,
            ),
            Error::InvalidField(field) => (
                tonic::Code::InvalidArgument,
                ErrorCode::InvalidRequest,
                field.to_string(),
                Some(format!(
                    r#"[{{"field":{:?},"issue":{:?}}}]"#,
                    field.field, field.issue
                )),
            ),
            Error::ProjectNotReady => (
                tonic::Code::FailedPrecondition,
                ErrorCode::ProjectNotReady,
                "the project is still being provisioned; retry in a few seconds".to_owned(),
                None,
            ),
            Error::ProjectNameTaken => (
                tonic::Code::AlreadyExists,
                ErrorCode::ProjectNameTaken,
                error.to_string(),
                None,
            ),
            Error::Conflict => (
                tonic::Code::Aborted,
                ErrorCode::Unavailable,
                "the resource changed concurrently; retry".to_owned(),
                None,
            ),
            Error::DatabaseUnavailable(_) => (
                tonic::Code::Unavailable,
                ErrorCode::Unavailable,
                "the database is unavailable".to_owned(),
                None,
            ),
            Error::Database(_) | Error::Corrupt(_) => {
                tracing::error!(error = ?error, "internal error");
                (
                    tonic::Code::Internal,
                    ErrorCode::Internal,
                    "internal error".to_owned(),
                    None,
                )
            }
        };
        let mut status = tonic::Status::new(grpc, message);
        status
            .metadata_mut()
            .insert(ERROR_CODE_METADATA, MetadataValue::from_static(code.as_str()));
        if let Some(details) = details.and_then(|d| MetadataValue::try_from(d).ok()) {
            status.metadata_mut().insert(ERROR_DETAILS_METADATA, details);
        }
        status
    }
}
