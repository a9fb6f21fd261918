//! Preflight: every file of a job is opened (in the sandboxed parser), its pages counted
//! and classified by size, unreadable files marked `invalid_pdf`; then, in one
//! transaction under the job's row lock, the verdicts are recorded and the job moves on:
//! credits reserved → `processing`, too few credits → `blocked_insufficient_credits`,
//! nothing readable or too many pages → `failed`.
//!
//! The slow part (downloads and parsing) happens before the transaction; a concurrent or
//! repeated run finds the job no longer `preflighting` once the first one committed, and
//! writes nothing.

use plangrep_core::pages::PageKind;
use plangrep_core::{JobEvent, JobStatus};
use plangrep_storage::StorageError;

use super::scratch::Scratch;
use super::{Pipeline, current_job};
use crate::error::Error;
use crate::grpc::storage_error;
use crate::lifecycle;
use crate::store::credits;
use crate::store::documents::{self, DocumentRow, Inspection};
use crate::store::jobs::{self, MAX_PAGES};

/// Why a job stopped at preflight, as `job.error` shows it.
struct JobFailure {
    code: &'static str,
    message: String,
}

/// Runs preflight for a job that is `preflighting`; does nothing otherwise.
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
pub async fn run(pipeline: &Pipeline, job_id: &str) -> Result<(), Error> {
    let Some((_, files)) = current_job(pipeline, job_id, JobStatus::Preflighting).await? else {
        return Ok(());
    };

    let scratch = Scratch::create(job_id)
        .await
        .map_err(|e| Error::Storage(format!("scratch folder: {e}")))?;
    let mut verdicts = Vec::with_capacity(files.len());
    for file in &files {
        verdicts.push(inspect(pipeline, &scratch, file).await?);
    }
    drop(scratch);

    let mut tx = pipeline.pool.begin().await?;
    let Some(job) = jobs::lock_in(&mut tx, job_id, JobStatus::Preflighting).await? else {
        return Ok(());
    };
    let (mut drawing_pages, mut document_pages) = (0u32, 0u32);
    for (file, verdict) in files.iter().zip(&verdicts) {
        documents::record_inspection(&mut tx, &file.id, verdict).await?;
        if let Inspection::Valid(pages) = verdict {
            for &(width, height) in pages {
                match PageKind::of(width, height) {
                    PageKind::Drawing => drawing_pages += 1,
                    PageKind::Document => document_pages += 1,
                }
            }
        }
    }
    let page_count = drawing_pages + document_pages;
    let rates = credits::rates(&mut tx, &job.org_id).await?;
    let required = rates.required(drawing_pages, document_pages);
    let valid_files = verdicts
        .iter()
        .filter(|v| matches!(v, Inspection::Valid(_)))
        .count();

    let (event, failure) = if valid_files == 0 {
        let failure = JobFailure {
            code: "no_valid_files",
            message: "none of the job's files is a readable PDF".to_owned(),
        };
        (JobEvent::PreflightFailed, Some(failure))
    } else if page_count > MAX_PAGES {
        let failure = JobFailure {
            code: "page_limit_exceeded",
            message: format!("the job has {page_count} pages; at most {MAX_PAGES} are allowed"),
        };
        (JobEvent::PreflightFailed, Some(failure))
    } else if credits::reserve(&mut tx, &job.org_id, job_id, required).await? {
        (JobEvent::PreflightPassed, None)
    } else {
        let balance = credits::balance(&mut tx, &job.org_id).await?;
        let failure = JobFailure {
            code: "insufficient_credits",
            message: format!(
                "the job needs {required} credits and the balance is {balance}; add credits and resume the job"
            ),
        };
        (JobEvent::CreditsInsufficient, Some(failure))
    };
    let reserved = if event == JobEvent::PreflightPassed {
        required
    } else {
        0
    };
    sqlx::query(
        "UPDATE jobs SET page_count = $2, credits_reserved = credits_reserved + $3, \
           drawing_page_rate = $4, document_page_rate = $5, error_code = $6, error_message = $7 \
         WHERE id = $1",
    )
    .bind(job_id)
    .bind(i32::try_from(page_count).unwrap_or(i32::MAX))
    .bind(reserved)
    .bind(rates.drawing)
    .bind(rates.document)
    .bind(failure.as_ref().map(|f| f.code))
    .bind(failure.as_ref().map(|f| f.message.as_str()))
    .execute(&mut *tx)
    .await?;
    lifecycle::apply_job_event(&mut tx, job_id, Some(JobStatus::Preflighting), event)
        .await?
        .ok_or(Error::Conflict)?;
    tx.commit().await?;
    tracing::info!(
        page_count,
        drawing_pages,
        document_pages,
        credits = required,
        outcome = ?event,
        "preflight done"
    );
    Ok(())
}

/// Downloads one file and asks the sandboxed parser for its pages. A missing object is
/// that file's problem; an unavailable store is everyone's (the stage retries).
async fn inspect(
    pipeline: &Pipeline,
    scratch: &Scratch,
    file: &DocumentRow,
) -> Result<Inspection, Error> {
    let local = scratch.file(&file.id);
    let size = match pipeline
        .storage
        .download_to(&file.storage_key, &local)
        .await
    {
        Ok(size) => size,
        Err(StorageError::NotFound) => {
            return Ok(Inspection::Invalid(
                "the uploaded file is missing from storage".to_owned(),
            ));
        }
        Err(error) => return Err(storage_error(error)),
    };
    let verdict = match pipeline.inspector.for_file_size(size).inspect(&local).await {
        Ok(pages) if pages.is_empty() => Inspection::Invalid("the PDF has no pages".to_owned()),
        Ok(pages) => Inspection::Valid(pages.iter().map(|p| (p.width_pt, p.height_pt)).collect()),
        Err(invalid) => Inspection::Invalid(invalid.to_string()),
    };
    let _ = tokio::fs::remove_file(&local).await;
    Ok(verdict)
}
