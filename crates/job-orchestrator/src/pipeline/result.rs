//! The v1 result document (SPEC §4), built from the job's rows once processing is over.

use chrono::{DateTime, Utc};
use plangrep_core::JobStatus;
use plangrep_core::api::{
    JobErrorView, JobResultView, ResultDocumentView, ResultErrorView, ResultJobView,
    ResultPageView, ResultUsageView,
};
use plangrep_core::pages::PageKind;

use crate::store::documents::{DocumentRow, PageRow};
use crate::store::jobs::JobRow;

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The result of `job`, about to end in `status`.
pub fn build(
    job: &JobRow,
    status: JobStatus,
    files: &[DocumentRow],
    pages: &[PageRow],
    generated_at: DateTime<Utc>,
) -> JobResultView {
    let mut errors = Vec::new();
    let documents = files
        .iter()
        .map(|file| {
            if let Some(code) = &file.error_code {
                errors.push(ResultErrorView {
                    document_id: file.id.clone(),
                    page_number: None,
                    code: code.clone(),
                    message: file.error_message.clone().unwrap_or_default(),
                });
            }
            let own: Vec<ResultPageView> = pages
                .iter()
                .filter(|page| page.document_id == file.id)
                .map(|page| {
                    let page_number = u32::try_from(page.page_number).unwrap_or_default();
                    let error = page.error_code.as_ref().map(|code| JobErrorView {
                        code: code.clone(),
                        message: page.error_message.clone().unwrap_or_default(),
                    });
                    if let Some(error) = &error {
                        errors.push(ResultErrorView {
                            document_id: file.id.clone(),
                            page_number: Some(page_number),
                            code: error.code.clone(),
                            message: error.message.clone(),
                        });
                    }
                    ResultPageView {
                        page_number,
                        kind: page.kind.clone(),
                        width_pt: page.width_pt,
                        height_pt: page.height_pt,
                        sheet_number: page.sheet_number.clone(),
                        sheet_title: page.sheet_title.clone(),
                        text_chars: page
                            .text_chars
                            .and_then(|n| u32::try_from(n).ok())
                            .unwrap_or_default(),
                        error,
                    }
                })
                .collect();
            ResultDocumentView {
                document_id: file.id.clone(),
                file_name: file.file_name.clone(),
                classification: file.classification.clone(),
                status: file.status.clone(),
                page_count: count(own.len()),
                failed_page_count: count(own.iter().filter(|p| p.error.is_some()).count()),
                pages: own,
            }
        })
        .collect();
    let of_kind = |kind: PageKind| count(pages.iter().filter(|p| p.kind == kind.as_str()).count());
    JobResultView {
        schema_version: "v1".to_owned(),
        job: ResultJobView {
            id: job.id.clone(),
            status: status.as_str().to_owned(),
            external_id: job.external_id.clone(),
        },
        usage: ResultUsageView {
            page_count: count(pages.len()),
            successful_page_count: count(
                pages
                    .iter()
                    .filter(|p| p.processed && p.error_code.is_none())
                    .count(),
            ),
            drawing_page_count: of_kind(PageKind::Drawing),
            document_page_count: of_kind(PageKind::Document),
            credits_debited: job.credits_debited,
        },
        documents,
        errors,
        generated_at,
    }
}
