//! What a job still accepts, checked from the job (status, file count, stored bytes) and
//! the request's `Content-Length` before any byte of the body is read.

use axum::http::HeaderMap;
use plangrep_core::{ErrorCode, JobStatus};
use plangrep_proto::orchestrator::Job;

use crate::error::ApiError;

/// Files per job when the job does not say (SPEC §4).
const DEFAULT_MAX_FILES: u64 = 100;
/// Bytes per job when the job does not say (SPEC §4).
const DEFAULT_MAX_JOB_BYTES: u64 = 10_000_000_000;

/// What the job still accepts.
pub struct Budget {
    /// Files the job already has.
    pub existing_files: u64,
    /// Files the job may hold.
    pub max_files: u64,
    /// Bytes this request may still store.
    pub remaining_bytes: u64,
}

impl Budget {
    /// Checks the job's state and limits before anything is stored.
    pub fn of(job: &Job, headers: &HeaderMap) -> Result<Self, ApiError> {
        match job.status.parse::<JobStatus>() {
            Ok(JobStatus::AwaitingUploads | JobStatus::Uploading) => {}
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJobState,
                    format!(
                        "files can only be uploaded while the job is awaiting_uploads or uploading (it is {})",
                        job.status
                    ),
                ));
            }
        }
        let limits = job.limits.unwrap_or_default();
        let max_files = match limits.max_files {
            0 => DEFAULT_MAX_FILES,
            n => u64::from(n),
        };
        let max_bytes = match limits.max_declared_bytes {
            0 => DEFAULT_MAX_JOB_BYTES,
            n => n,
        };
        let existing_bytes: u64 = job.files.iter().map(|f| f.size_bytes).sum();
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|declared| existing_bytes.saturating_add(declared) > max_bytes) {
            return Err(job_limit(format!(
                "a job holds at most {max_bytes} bytes; it has {existing_bytes} and this request is larger than the rest"
            )));
        }
        Ok(Self {
            existing_files: job.files.len() as u64,
            max_files,
            remaining_bytes: max_bytes.saturating_sub(existing_bytes),
        })
    }
}

/// 413 `job_limit_exceeded`.
pub fn job_limit(message: String) -> ApiError {
    ApiError::new(ErrorCode::JobLimitExceeded, message)
}

#[cfg(test)]
mod tests {
    use plangrep_proto::orchestrator::JobFile;

    use super::*;

    fn job(status: &str, file_sizes: &[u64]) -> Job {
        Job {
            status: status.to_owned(),
            files: file_sizes
                .iter()
                .map(|&size_bytes| JobFile {
                    size_bytes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn content_length(bytes: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_LENGTH, bytes.into());
        headers
    }

    #[test]
    fn only_jobs_open_for_uploads_have_a_budget() {
        for status in ["awaiting_uploads", "uploading"] {
            assert!(Budget::of(&job(status, &[]), &HeaderMap::new()).is_ok());
        }
        for status in [
            "provisioning",
            "preflighting",
            "cancelled",
            "completed",
            "bogus",
        ] {
            let error = Budget::of(&job(status, &[]), &HeaderMap::new())
                .err()
                .unwrap();
            assert_eq!(error.code, ErrorCode::InvalidJobState, "{status}");
        }
    }

    #[test]
    fn the_budget_is_what_the_job_has_left() {
        let budget = Budget::of(&job("uploading", &[1_000, 2_000]), &content_length(500)).unwrap();
        assert_eq!(budget.existing_files, 2);
        assert_eq!(budget.max_files, 100);
        assert_eq!(budget.remaining_bytes, DEFAULT_MAX_JOB_BYTES - 3_000);
        let error = Budget::of(
            &job("uploading", &[1_000]),
            &content_length(DEFAULT_MAX_JOB_BYTES - 999),
        )
        .err()
        .unwrap();
        assert_eq!(error.code, ErrorCode::JobLimitExceeded);
    }
}
