//! Conversions from the protobuf messages to the public JSON views of `plangrep-core`,
//! shared by the gateway (REST responses) and the dispatcher (webhook bodies).

use chrono::{DateTime, Utc};
use plangrep_core::api::{
    JobBillingView, JobErrorView, JobFileView, JobLimitsView, JobView, ProjectView,
};

use crate::orchestrator::{Job, JobError, Project};
use crate::time::from_timestamp;

/// A required timestamp that is missing or out of range: the message is malformed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed {0}: a required timestamp is missing")]
pub struct MalformedMessage(pub &'static str);

fn required(
    ts: &Option<prost_types::Timestamp>,
    what: &'static str,
) -> Result<DateTime<Utc>, MalformedMessage> {
    ts.as_ref()
        .and_then(from_timestamp)
        .ok_or(MalformedMessage(what))
}

fn error_view(error: &JobError) -> JobErrorView {
    JobErrorView {
        code: error.code.clone(),
        message: error.message.clone(),
    }
}

/// The public view of a project.
pub fn project_view(project: &Project) -> Result<ProjectView, MalformedMessage> {
    Ok(ProjectView {
        id: project.id.clone(),
        name: project.name.clone(),
        status: project.status.clone(),
        created_at: required(&project.created_at, "project")?,
        updated_at: required(&project.updated_at, "project")?,
    })
}

/// The public view of a job.
pub fn job_view(job: &Job) -> Result<JobView, MalformedMessage> {
    let limits = job.limits.unwrap_or_default();
    let billing = job.billing.unwrap_or_default();
    Ok(JobView {
        id: job.id.clone(),
        project_id: job.project_id.clone(),
        external_id: job.external_id.clone(),
        status: job.status.clone(),
        webhook_url: job.webhook_url.clone(),
        limits: JobLimitsView {
            max_files: limits.max_files,
            max_declared_bytes: limits.max_declared_bytes,
            max_pages: limits.max_pages,
        },
        files: job
            .files
            .iter()
            .map(|file| JobFileView {
                id: file.id.clone(),
                file_name: file.file_name.clone(),
                content_type: file.content_type.clone(),
                classification: file.classification.clone(),
                size_bytes: file.size_bytes,
                sha256: file.sha256.clone(),
                status: file.status.clone(),
                page_count: file.page_count,
                error: file.error.as_ref().map(error_view),
            })
            .collect(),
        page_count: job.page_count,
        successful_page_count: job.successful_page_count,
        billing: JobBillingView {
            credits_reserved: billing.credits_reserved,
            credits_debited: billing.credits_debited,
        },
        error: job.error.as_ref().map(error_view),
        result_available: job.result_available,
        created_at: required(&job.created_at, "job")?,
        updated_at: required(&job.updated_at, "job")?,
        completed_at: job.completed_at.as_ref().and_then(from_timestamp),
        expires_at: required(&job.expires_at, "job")?,
    })
}
