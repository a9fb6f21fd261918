//! Processing: every page of every valid document is read in the sandboxed parser, one
//! page at a time, and recorded in its own short transaction under the job's row lock:
//! the page's outcome, and for a page that was read, its debit from the reservation. A
//! cancellation or expiry commits under the same lock, so it is seen before the next
//! page and no page is debited after it. A page already recorded (a redelivered event, a
//! second worker) is skipped, so nothing is debited twice.
//!
//! When every page is done the result is written once to storage and the job ends
//! `completed`, `completed_with_errors` or `failed`; the unused reservation is released by
//! that transition.

use bytes::Bytes;
use plangrep_core::pages::{CreditRates, PageKind};
use plangrep_core::{JobEvent, JobStatus};
use plangrep_storage::{StorageError, keys};

use super::result;
use super::scratch::Scratch;
use super::{Pipeline, current_job};
use crate::error::Error;
use crate::grpc::storage_error;
use crate::lifecycle;
use crate::pdf::PageOutcome;
use crate::store::documents::{self, DocumentRow, PageResult, PageRow};
use crate::store::jobs::{self, JobRow};
use crate::store::{self, credits};

/// Whether processing may go on with the job.
enum Continue {
    Yes,
    /// The job left `processing` (cancelled, expired): stop at this page boundary.
    Stop,
}

/// Processes a job that is `processing`; does nothing otherwise.
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
pub async fn run(pipeline: &Pipeline, job_id: &str) -> Result<(), Error> {
    let Some((job, files)) = current_job(pipeline, job_id, JobStatus::Processing).await? else {
        return Ok(());
    };
    let pages = documents::pages_of_job(&mut *pipeline.pool.acquire().await?, job_id).await?;
    let rates = CreditRates {
        drawing: job
            .drawing_page_rate
            .unwrap_or(CreditRates::default().drawing),
        document: job
            .document_page_rate
            .unwrap_or(CreditRates::default().document),
    };

    let scratch = Scratch::create(job_id)
        .await
        .map_err(|e| Error::Storage(format!("scratch folder: {e}")))?;
    for file in files.iter().filter(|file| file.is_valid()) {
        let pending: Vec<&PageRow> = pages
            .iter()
            .filter(|page| page.document_id == file.id && !page.processed)
            .collect();
        let (Some(first), Some(last)) = (pending.first(), pending.last()) else {
            continue;
        };
        let local = scratch.file(&file.id);
        let size = match pipeline
            .storage
            .download_to(&file.storage_key, &local)
            .await
        {
            Ok(size) => size,
            Err(StorageError::NotFound) => {
                // Gone since preflight: every remaining page of it is an error.
                for page in &pending {
                    let failure = PageResult::Failed {
                        code: "file_missing".to_owned(),
                        message: "the uploaded file is missing from storage".to_owned(),
                    };
                    if let Continue::Stop = record(pipeline, &job, page, &failure, rates).await? {
                        return Ok(());
                    }
                }
                continue;
            }
            Err(error) => return Err(storage_error(error)),
        };
        let first = u32::try_from(first.page_number).unwrap_or(1);
        let last = u32::try_from(last.page_number).unwrap_or(first);
        let mut stream = pipeline
            .inspector
            .for_file_size(size)
            .extract(&local, first, last);
        while let Some(outcome) = stream.next_page().await {
            let Some(page) = pending
                .iter()
                .find(|page| u32::try_from(page.page_number).ok() == Some(outcome.page_number))
            else {
                continue;
            };
            let result = page_result(page, outcome)?;
            if let Continue::Stop = record(pipeline, &job, page, &result, rates).await? {
                tracing::info!("the job left processing; stopping at a page boundary");
                return Ok(());
            }
        }
        drop(stream);
        let _ = tokio::fs::remove_file(&local).await;
    }
    drop(scratch);
    finish(pipeline, job_id, &files).await
}

/// What one page's extraction means for the job.
fn page_result(page: &PageRow, outcome: PageOutcome) -> Result<PageResult, Error> {
    Ok(match outcome.result {
        Ok(text) => {
            // Sheet numbers and titles belong to drawings; on a spec page a match is noise.
            let drawing = page.kind()? == PageKind::Drawing;
            PageResult::Read {
                text_chars: text.text_chars,
                sheet_number: text.sheet_number.filter(|_| drawing),
                sheet_title: text.sheet_title.filter(|_| drawing),
            }
        }
        Err(message) => PageResult::Failed {
            code: "page_unreadable".to_owned(),
            message,
        },
    })
}

/// Records one page and debits it, unless the job left `processing` meanwhile.
async fn record(
    pipeline: &Pipeline,
    job: &JobRow,
    page: &PageRow,
    result: &PageResult,
    rates: CreditRates,
) -> Result<Continue, Error> {
    let mut tx = pipeline.pool.begin().await?;
    if jobs::lock_in(&mut tx, &job.id, JobStatus::Processing)
        .await?
        .is_none()
    {
        return Ok(Continue::Stop);
    }
    let page_number = u32::try_from(page.page_number).unwrap_or_default();
    let newly_recorded =
        documents::record_page(&mut tx, &page.document_id, page_number, result).await?;
    if newly_recorded && matches!(result, PageResult::Read { .. }) {
        let cost = rates.cost(page.kind()?);
        sqlx::query(
            "UPDATE jobs SET credits_reserved = credits_reserved - $2, \
               credits_debited = credits_debited + $2, \
               successful_page_count = successful_page_count + 1, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(&job.id)
        .bind(cost)
        .bind(store::now())
        .execute(&mut *tx)
        .await?;
        credits::debit(&mut tx, &job.org_id, &job.id, cost).await?;
    }
    tx.commit().await?;
    Ok(Continue::Yes)
}

/// Writes the result (once) and ends the job.
async fn finish(pipeline: &Pipeline, job_id: &str, files: &[DocumentRow]) -> Result<(), Error> {
    let mut tx = pipeline.pool.begin().await?;
    let Some(job) = jobs::lock_in(&mut tx, job_id, JobStatus::Processing).await? else {
        return Ok(());
    };
    let pages = documents::pages_of_job(&mut tx, job_id).await?;
    for file in files.iter().filter(|file| file.is_valid()) {
        let read = pages
            .iter()
            .filter(|p| p.document_id == file.id && p.processed && p.error_code.is_none())
            .count();
        documents::finish_processing(&mut tx, &file.id, u32::try_from(read).unwrap_or(u32::MAX))
            .await?;
    }
    let read = pages
        .iter()
        .filter(|p| p.processed && p.error_code.is_none())
        .count();
    let everything_read = read == pages.len() && files.iter().all(DocumentRow::is_valid);
    let (event, status) = if read == 0 {
        (JobEvent::ProcessingFailed, JobStatus::Failed)
    } else if everything_read {
        (JobEvent::ProcessingSucceeded, JobStatus::Completed)
    } else {
        (
            JobEvent::ProcessingPartiallySucceeded,
            JobStatus::CompletedWithErrors,
        )
    };
    if read > 0 {
        let files = documents::for_job(&mut tx, job_id).await?;
        let document = result::build(&job, status, &files, &pages, store::now());
        let json = serde_json::to_vec(&document)
            .map_err(|e| Error::Corrupt(format!("result of {job_id}: {e}")))?;
        // Create-only: a result written by an earlier, interrupted run stays as it was.
        pipeline
            .storage
            .put_new(&keys::result(job_id), Bytes::from(json))
            .await
            .map_err(storage_error)?;
        sqlx::query("UPDATE jobs SET result_available = true WHERE id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1")
            .bind(job_id)
            .bind("no_pages_processed")
            .bind("not a single page of the job could be read")
            .execute(&mut *tx)
            .await?;
    }
    lifecycle::apply_job_event(&mut tx, job_id, Some(JobStatus::Processing), event)
        .await?
        .ok_or(Error::Conflict)?;
    tx.commit().await?;
    tracing::info!(status = %status, pages_read = read, "processing done");
    Ok(())
}
