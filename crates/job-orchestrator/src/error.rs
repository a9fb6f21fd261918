//! The orchestrator's error type and its one mapping to `tonic::Status` (carrying the
//! public error code, see `plangrep_proto::status`).

use plangrep_core::ErrorCode;
use plangrep_core::validate::FieldError;

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
    #[error("a job in status {0} cannot do that")]
    InvalidJobState(plangrep_core::JobStatus),
    #[error("the job changed concurrently")]
    Conflict,
    #[error("the job has no files")]
    NoFiles,
    #[error("the job has no webhook")]
    NoWebhook,
    #[error("{0}")]
    JobLimitExceeded(String),
    #[error("the job has no result")]
    ResultNotAvailable(plangrep_core::JobStatus),
    #[error("object storage unavailable: {0}")]
    StorageUnavailable(String),
    /// RabbitMQ cannot be reached (or dropped the connection) for an admin operation.
    #[error("the broker is unavailable: {0}")]
    BrokerUnavailable(String),
    #[error("object storage error: {0}")]
    Storage(String),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A 4xx the gateway decided, kept under the request's Idempotency-Key.
    #[error("refused by the gateway: {message}")]
    Rejected {
        code: ErrorCode,
        message: String,
        details: Option<String>,
    },
}

impl Error {
    /// The error of a gateway `Rejection`; a code that is not a 4xx is kept as a plain
    /// `invalid_request` (the orchestrator never stores a 5xx).
    pub fn rejected(rejection: plangrep_proto::orchestrator::Rejection) -> Self {
        let code = rejection
            .code
            .parse::<ErrorCode>()
            .ok()
            .filter(|code| (400..500).contains(&code.http_status()))
            .unwrap_or(ErrorCode::InvalidRequest);
        Error::Rejected {
            code,
            message: rejection.message,
            details: rejection.details,
        }
    }
}

impl From<plangrep_service::batch::Closed> for Error {
    fn from(closed: plangrep_service::batch::Closed) -> Self {
        sqlx::Error::from(closed).into()
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if plangrep_service::database::is_unavailable(&error) {
            return Error::DatabaseUnavailable(error);
        }
        match &error {
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
        matches!(
            self,
            Error::DatabaseUnavailable(_) | Error::Conflict | Error::StorageUnavailable(_)
        )
    }

    /// Whether this 4xx is final, so an Idempotency-Key stores and replays it. A
    /// "not yet" answer (`project_not_ready`) is not: the client is told to retry soon,
    /// and its retry with the same key must get a fresh answer.
    pub fn is_replayable(&self) -> bool {
        matches!(
            self,
            Error::NotFound(_)
                | Error::InvalidField(_)
                | Error::ProjectNameTaken
                | Error::InvalidJobState(_)
                | Error::NoFiles
                | Error::NoWebhook
                | Error::Rejected { .. }
        )
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let (code, message, details) = match &error {
            Error::NotFound(what) => (ErrorCode::NotFound, format!("no such {what}"), None),
            Error::InvalidField(field) => (
                ErrorCode::InvalidRequest,
                field.to_string(),
                Some(format!(
                    r#"[{{"field":{:?},"issue":{:?}}}]"#,
                    field.field, field.issue
                )),
            ),
            Error::ProjectNotReady => (
                ErrorCode::ProjectNotReady,
                "the project is still being provisioned; retry in a few seconds".to_owned(),
                None,
            ),
            Error::ProjectNameTaken => (ErrorCode::ProjectNameTaken, error.to_string(), None),
            Error::InvalidJobState(status) => (
                ErrorCode::InvalidJobState,
                format!("the job is {status}; this is not possible in that status"),
                None,
            ),
            Error::NoFiles => (
                ErrorCode::NoFiles,
                "the job has no files yet; upload at least one before completing".to_owned(),
                None,
            ),
            Error::NoWebhook => (
                ErrorCode::NoWebhook,
                "the job was created without a webhookUrl; it has no signing secret to rotate"
                    .to_owned(),
                None,
            ),
            Error::JobLimitExceeded(message) => {
                (ErrorCode::JobLimitExceeded, message.clone(), None)
            }
            Error::ResultNotAvailable(status) => (
                ErrorCode::ResultNotAvailable,
                format!("the job is {status}; a result exists once it completed"),
                None,
            ),
            Error::StorageUnavailable(_) => (
                ErrorCode::Unavailable,
                "object storage is unavailable".to_owned(),
                None,
            ),
            Error::Conflict => (
                ErrorCode::Unavailable,
                "the resource changed concurrently; retry".to_owned(),
                None,
            ),
            Error::IdempotencyKeyReused => (
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request".to_owned(),
                None,
            ),
            Error::IdempotencyInProgress => (
                ErrorCode::IdempotencyRequestInProgress,
                "a request with this Idempotency-Key is still in progress; retry later".to_owned(),
                None,
            ),
            Error::DatabaseUnavailable(_) => (
                ErrorCode::Unavailable,
                "the database is unavailable".to_owned(),
                None,
            ),
            Error::BrokerUnavailable(_) => (
                ErrorCode::Unavailable,
                "the message broker is unavailable".to_owned(),
                None,
            ),
            Error::Rejected {
                code,
                message,
                details,
            } => (*code, message.clone(), details.clone()),
            Error::Database(_) | Error::Corrupt(_) | Error::Storage(_) => {
                tracing::error!(error = ?error, "internal error");
                (ErrorCode::Internal, "internal error".to_owned(), None)
            }
        };
        plangrep_proto::status::status(code, message, details)
    }
}
