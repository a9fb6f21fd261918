//! Documents (a job's files) and their pages: rows, their protobuf form (`job.files`),
//! and the queries of uploads, preflight and processing.

use chrono::{DateTime, Utc};
use plangrep_core::pages::PageKind;
use plangrep_proto::orchestrator::{JobError, JobFile, UploadedDocument};
use sqlx::PgConnection;

use crate::error::Error;

/// The columns of [`DocumentRow`], in one place.
const DOCUMENT_COLUMNS: &str = "id, job_id, position, file_name, content_type, classification, \
     size_bytes, sha256, storage_key, status, page_count, error_code, error_message, created_at";

/// Where a document is in its own small lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentStatus {
    /// Stored, not looked at yet.
    Uploaded,
    /// Preflight read it: its pages are known.
    Valid,
    /// Preflight could not read it (`invalid_pdf`).
    Invalid,
    /// Processing went through every page (some may have failed).
    Processed,
    /// Processing could not read a single page.
    Failed,
}

impl DocumentStatus {
    /// The stored and public name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Uploaded => "uploaded",
            DocumentStatus::Valid => "valid",
            DocumentStatus::Invalid => "invalid",
            DocumentStatus::Processed => "processed",
            DocumentStatus::Failed => "failed",
        }
    }
}

/// A row of `documents`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentRow {
    pub id: String,
    pub job_id: String,
    pub position: i32,
    pub file_name: String,
    pub content_type: String,
    pub classification: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub storage_key: String,
    pub status: String,
    pub page_count: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl DocumentRow {
    /// The protobuf form (one entry of `job.files`).
    pub fn to_proto(&self) -> JobFile {
        JobFile {
            id: self.id.clone(),
            file_name: self.file_name.clone(),
            content_type: self.content_type.clone(),
            classification: self.classification.clone(),
            size_bytes: u64::try_from(self.size_bytes).unwrap_or_default(),
            sha256: self.sha256.clone(),
            status: self.status.clone(),
            page_count: self.page_count.and_then(|n| u32::try_from(n).ok()),
            error: self.error_code.as_ref().map(|code| JobError {
                code: code.clone(),
                message: self.error_message.clone().unwrap_or_default(),
            }),
        }
    }

    /// Whether this document is one preflight found readable.
    pub fn is_valid(&self) -> bool {
        self.status == DocumentStatus::Valid.as_str()
    }
}

/// What a job already holds: number of files and their bytes.
pub async fn totals(conn: &mut PgConnection, job_id: &str) -> Result<(u32, u64), Error> {
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(size_bytes), 0)::bigint FROM documents WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(conn)
    .await?;
    Ok((
        u32::try_from(count).unwrap_or(u32::MAX),
        u64::try_from(bytes).unwrap_or_default(),
    ))
}

/// Inserts uploaded documents after the job's existing ones (the job row is locked by
/// the caller, so positions cannot collide).
pub async fn insert_uploaded(
    conn: &mut PgConnection,
    job_id: &str,
    documents: &[UploadedDocument],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let first: i32 =
        sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM documents WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&mut *conn)
            .await?;
    for (offset, document) in (1..).zip(documents) {
        sqlx::query(
            "INSERT INTO documents (id, job_id, position, file_name, content_type, \
               classification, size_bytes, sha256, storage_key, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&document.id)
        .bind(job_id)
        .bind(first + offset)
        .bind(&document.file_name)
        .bind(&document.content_type)
        .bind(&document.classification)
        .bind(i64::try_from(document.size_bytes).unwrap_or(i64::MAX))
        .bind(&document.sha256)
        .bind(&document.storage_key)
        .bind(DocumentStatus::Uploaded.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The documents of a job, in upload order.
pub async fn for_job(conn: &mut PgConnection, job_id: &str) -> Result<Vec<DocumentRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE job_id = $1 ORDER BY position"
    )))
    .bind(job_id)
    .fetch_all(conn)
    .await?)
}

/// The documents of several jobs (a list page), in upload order.
pub async fn for_jobs(
    conn: &mut PgConnection,
    job_ids: &[String],
) -> Result<Vec<DocumentRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE job_id = ANY($1) ORDER BY job_id, position"
    )))
    .bind(job_ids)
    .fetch_all(conn)
    .await?)
}

/// Whether a storage key belongs to a registered document (orphan clean-up).
pub async fn is_registered(conn: &mut PgConnection, storage_key: &str) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM documents WHERE storage_key = $1)")
            .bind(storage_key)
            .fetch_one(conn)
            .await?,
    )
}

/// What preflight learnt about one document.
#[derive(Debug, Clone)]
pub enum Inspection {
    /// Readable, with these page sizes (points).
    Valid(Vec<(f64, f64)>),
    /// Not a readable PDF.
    Invalid(String),
}

/// Records preflight's verdict on a document, replacing any earlier one (a resumed job
/// is preflighted again).
pub async fn record_inspection(
    conn: &mut PgConnection,
    document_id: &str,
    inspection: &Inspection,
) -> Result<(), Error> {
    sqlx::query("DELETE FROM document_pages WHERE document_id = $1")
        .bind(document_id)
        .execute(&mut *conn)
        .await?;
    match inspection {
        Inspection::Valid(pages) => {
            sqlx::query(
                "UPDATE documents SET status = $2, page_count = $3, error_code = NULL, \
                   error_message = NULL WHERE id = $1",
            )
            .bind(document_id)
            .bind(DocumentStatus::Valid.as_str())
            .bind(i32::try_from(pages.len()).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await?;
            let numbers: Vec<i32> = (1..=i32::try_from(pages.len()).unwrap_or(i32::MAX)).collect();
            let kinds: Vec<&str> = pages
                .iter()
                .map(|&(w, h)| PageKind::of(w, h).as_str())
                .collect();
            let widths: Vec<f64> = pages.iter().map(|p| p.0).collect();
            let heights: Vec<f64> = pages.iter().map(|p| p.1).collect();
            sqlx::query(
                "INSERT INTO document_pages (document_id, page_number, kind, width_pt, height_pt) \
                 SELECT $1, * FROM unnest($2::int[], $3::text[], $4::float8[], $5::float8[])",
            )
            .bind(document_id)
            .bind(&numbers)
            .bind(&kinds)
            .bind(&widths)
            .bind(&heights)
            .execute(&mut *conn)
            .await?;
        }
        Inspection::Invalid(message) => {
            sqlx::query(
                "UPDATE documents SET status = $2, page_count = NULL, error_code = 'invalid_pdf', \
                   error_message = $3 WHERE id = $1",
            )
            .bind(document_id)
            .bind(DocumentStatus::Invalid.as_str())
            .bind(message)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// A row of `document_pages`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PageRow {
    pub document_id: String,
    pub page_number: i32,
    pub kind: String,
    pub width_pt: f64,
    pub height_pt: f64,
    pub processed: bool,
    pub text_chars: Option<i32>,
    pub sheet_number: Option<String>,
    pub sheet_title: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl PageRow {
    /// The page's kind.
    pub fn kind(&self) -> Result<PageKind, Error> {
        self.kind
            .parse()
            .map_err(|e: String| Error::Corrupt(format!("page of {}: {e}", self.document_id)))
    }
}

/// Every page of a job's documents, by document position and page number.
pub async fn pages_of_job(conn: &mut PgConnection, job_id: &str) -> Result<Vec<PageRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT p.document_id, p.page_number, p.kind, p.width_pt, p.height_pt, p.processed, \
           p.text_chars, p.sheet_number, p.sheet_title, p.error_code, p.error_message \
         FROM document_pages p JOIN documents d ON d.id = p.document_id \
         WHERE d.job_id = $1 ORDER BY d.position, p.page_number",
    )
    .bind(job_id)
    .fetch_all(conn)
    .await?)
}

/// What processing found on one page.
#[derive(Debug, Clone)]
pub enum PageResult {
    /// The text layer was read.
    Read {
        text_chars: u32,
        sheet_number: Option<String>,
        sheet_title: Option<String>,
    },
    /// The page could not be read.
    Failed { code: String, message: String },
}

/// Records one page's outcome; `false` when it was recorded before (nothing changed).
pub async fn record_page(
    conn: &mut PgConnection,
    document_id: &str,
    page_number: u32,
    result: &PageResult,
) -> Result<bool, Error> {
    let query = sqlx::query(
        "UPDATE document_pages SET processed = true, text_chars = $3, sheet_number = $4, \
           sheet_title = $5, error_code = $6, error_message = $7 \
         WHERE document_id = $1 AND page_number = $2 AND NOT processed",
    )
    .bind(document_id)
    .bind(i32::try_from(page_number).unwrap_or(i32::MAX));
    let query = match result {
        PageResult::Read {
            text_chars,
            sheet_number,
            sheet_title,
        } => query
            .bind(i32::try_from(*text_chars).unwrap_or(i32::MAX))
            .bind(sheet_number)
            .bind(sheet_title)
            .bind(None::<String>)
            .bind(None::<String>),
        PageResult::Failed { code, message } => query
            .bind(None::<i32>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(Some(code))
            .bind(Some(message)),
    };
    Ok(query.execute(conn).await?.rows_affected() == 1)
}

/// Marks a valid document processed, or failed when not one of its pages could be read.
pub async fn finish_processing(
    conn: &mut PgConnection,
    document_id: &str,
    pages_read: u32,
) -> Result<(), Error> {
    let (status, code, message) = if pages_read > 0 {
        (DocumentStatus::Processed, None, None)
    } else {
        (
            DocumentStatus::Failed,
            Some("no_readable_pages"),
            Some("not a single page of this document could be read"),
        )
    };
    sqlx::query(
        "UPDATE documents SET status = $2, error_code = $3, error_message = $4 WHERE id = $1",
    )
    .bind(document_id)
    .bind(status.as_str())
    .bind(code)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}
