//! Jobs: rows, their protobuf form (the shape `GET /jobs/{id}` and webhooks show), and
//! the queries that do not change a job's status.

use chrono::{DateTime, Utc};
use plangrep_core::JobStatus;
use plangrep_proto::orchestrator::{Job, JobBilling, JobError, JobLimits};
use plangrep_proto::time::to_timestamp;
use sqlx::PgConnection;

use crate::error::Error;
use crate::store::documents::{self, DocumentRow};

/// The columns of [`JobRow`], in one place (`RETURNING` and every `SELECT` use it).
pub const JOB_COLUMNS: &str = "id, org_id, project_id, external_id, status, version, \
     last_sequence, webhook_url, webhook_secret_sealed, page_count, successful_page_count, \
     credits_reserved, credits_debited, error_code, error_message, result_available, \
     drawing_page_rate, document_page_rate, created_at, updated_at, completed_at, expires_at";

/// The limits every job has today (SPEC §4).
pub const MAX_FILES: u32 = 100;
/// Sum of declared upload sizes per job.
pub const MAX_DECLARED_BYTES: u64 = 10_000_000_000;
/// Pages per job.
pub const MAX_PAGES: u32 = 500;

/// A row of `jobs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub org_id: String,
    pub project_id: String,
    pub external_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub version: i32,
    pub last_sequence: i32,
    pub webhook_url: Option<String>,
    pub webhook_secret_sealed: Option<Vec<u8>>,
    pub page_count: i32,
    pub successful_page_count: i32,
    pub credits_reserved: i64,
    pub credits_debited: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result_available: bool,
    /// The rates its credits were reserved at (set by preflight).
    pub drawing_page_rate: Option<i64>,
    pub document_page_rate: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

impl JobRow {
    /// The protobuf form, with the job's documents as `files`.
    pub fn to_proto(&self, files: &[DocumentRow]) -> Job {
        let non_negative = |n: i32| u32::try_from(n).unwrap_or_default();
        Job {
            id: self.id.clone(),
            org_id: self.org_id.clone(),
            project_id: self.project_id.clone(),
            external_id: self.external_id.clone(),
            status: self.status.as_str().to_owned(),
            webhook_url: self.webhook_url.clone(),
            limits: Some(JobLimits {
                max_files: MAX_FILES,
                max_declared_bytes: MAX_DECLARED_BYTES,
                max_pages: MAX_PAGES,
            }),
            files: files.iter().map(DocumentRow::to_proto).collect(),
            page_count: non_negative(self.page_count),
            successful_page_count: non_negative(self.successful_page_count),
            billing: Some(JobBilling {
                credits_reserved: self.credits_reserved,
                credits_debited: self.credits_debited,
            }),
            error: self.error_code.as_ref().map(|code| JobError {
                code: code.clone(),
                message: self.error_message.clone().unwrap_or_default(),
            }),
            result_available: self.result_available,
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
            completed_at: self.completed_at.map(to_timestamp),
            expires_at: Some(to_timestamp(self.expires_at)),
        }
    }
}

/// The protobuf form of `row` with its documents read from the database.
pub async fn view(conn: &mut PgConnection, row: &JobRow) -> Result<Job, Error> {
    // The first document moves a job to `uploading` in the transaction that registers it,
    // so a job still provisioning or awaiting its first upload has none to read (this is
    // every job creation and provisioning event, the hottest path).
    if matches!(
        row.status,
        JobStatus::Provisioning | JobStatus::AwaitingUploads
    ) {
        return Ok(row.to_proto(&[]));
    }
    let files = documents::for_job(conn, &row.id).await?;
    Ok(row.to_proto(&files))
}

/// The protobuf forms of a page of jobs, their documents read in one query.
pub async fn views(conn: &mut PgConnection, rows: &[JobRow]) -> Result<Vec<Job>, Error> {
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let files = documents::for_jobs(conn, &ids).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let own: Vec<DocumentRow> = files
                .iter()
                .filter(|file| file.job_id == row.id)
                .cloned()
                .collect();
            row.to_proto(&own)
        })
        .collect())
}

/// Inserts new job rows with one statement.
pub async fn insert_many(conn: &mut PgConnection, rows: &[JobRow]) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO jobs (id, org_id, project_id, external_id, status, version, last_sequence, \
           webhook_url, webhook_secret_sealed, created_at, updated_at, expires_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::int4[], $7::int4[], $8::text[], $9::bytea[], $10::timestamptz[], \
           $11::timestamptz[], $12::timestamptz[])",
    )
    .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.org_id.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.project_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.external_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_sequence).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.webhook_url.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.webhook_secret_sealed.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// A job of `org_id`, or `NotFound` (also for another organization's job).
pub async fn get(conn: &mut PgConnection, org_id: &str, id: &str) -> Result<JobRow, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("job"))
}

/// Locks a job of `org_id` for the rest of the transaction and returns it (or `NotFound`).
pub async fn lock(conn: &mut PgConnection, org_id: &str, id: &str) -> Result<JobRow, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND org_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("job"))
}

/// Locks a job by id alone (pipeline stages), `None` when it does not exist.
pub async fn lock_any(conn: &mut PgConnection, id: &str) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Locks a job by id alone and returns it while it is still in `status`; `None` once it
/// moved on (the caller's work is stale). Pipeline stages write only under this lock.
pub async fn lock_in(
    conn: &mut PgConnection,
    id: &str,
    status: JobStatus,
) -> Result<Option<JobRow>, Error> {
    let job = lock_any(conn, id).await?.ok_or(Error::NotFound("job"))?;
    Ok((job.status == status).then_some(job))
}

/// A job by id alone (internal callers).
pub async fn get_any(conn: &mut PgConnection, id: &str) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Filters of a job list.
#[derive(Debug, Default)]
pub struct JobFilter {
    pub status: Option<String>,
    pub external_id: Option<String>,
}

/// A page of a project's jobs, newest first, after `cursor`; one extra row tells whether
/// more follow.
pub async fn list(
    conn: &mut PgConnection,
    project_id: &str,
    filter: &JobFilter,
    limit: u32,
    cursor: Option<&plangrep_core::pagination::Cursor>,
) -> Result<Vec<JobRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1 \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR external_id = $3) \
           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) \
         ORDER BY created_at DESC, id DESC LIMIT $6"
    )))
    .bind(project_id)
    .bind(&filter.status)
    .bind(&filter.external_id)
    .bind(cursor.map(|c| c.created_at))
    .bind(cursor.map(|c| c.id.clone()))
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?)
}

/// A row of `job_events`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobEventRow {
    pub id: String,
    pub sequence: i32,
    pub status: String,
    pub previous_status: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// The status history of a job, oldest first.
pub async fn events(conn: &mut PgConnection, job_id: &str) -> Result<Vec<JobEventRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, sequence, status, previous_status, occurred_at FROM job_events \
         WHERE job_id = $1 ORDER BY sequence",
    )
    .bind(job_id)
    .fetch_all(conn)
    .await?)
}
