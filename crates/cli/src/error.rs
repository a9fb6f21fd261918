//! The CLI's one error type and its mapping to the documented exit codes
//! (SPEC §8): 1 an API or local failure, 2 usage, 3 a job that ended badly.

use std::process::ExitCode;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with its error body (SPEC §1).
    #[error("{code}: {message} (HTTP {status}{})", request_id.as_deref().map(|id| format!(", request {id}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable `error.code`.
        code: String,
        /// The human message.
        message: String,
        /// `error.requestId`, for support.
        request_id: Option<String>,
    },
    /// The API could not be reached or the connection broke.
    #[error("cannot reach the API: {0}")]
    Transport(#[from] reqwest::Error),
    /// A local file or stream problem.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad invocation found after parsing (e.g. no API key).
    #[error("{0}")]
    Usage(String),
    /// A watched job ended `failed`, `cancelled` or `expired`.
    #[error("job {job} ended {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    JobEnded {
        /// Job id.
        job: String,
        /// Its terminal status.
        status: String,
        /// The job's `error` (code: message), when it has one.
        reason: Option<String>,
    },
    /// A webhook request did not verify.
    #[error("signature invalid: {0}")]
    InvalidSignature(String),
    /// Something the API answered that the CLI cannot use.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl CliError {
    /// An IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code of this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::JobEnded { .. } => ExitCode::from(3),
            _ => ExitCode::from(1),
        }
    }
}
