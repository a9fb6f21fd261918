//! The only writer of job and project statuses.
//!
//! A status change is one transaction: the row moves (guarded by its version, so a stale
//! worker loses cleanly), the history row and the outbox row are inserted. The outbox
//! payload carries the job as it is after the change, which is what its webhook shows.
//! A job that reaches a terminal status gives its unused credit reservation back in the
//! same transaction, whichever way it ended (completed, failed, cancelled, expired).
//! A pipeline step may move many jobs in one transaction ([`advance_jobs`]): each still
//! gets its own history row and outbox message.

use plangrep_core::id::EventId;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus, job};
use plangrep_messaging::StatusEvent;
use plangrep_proto::events::{JobStatusChanged, ProjectStatusChanged};
use plangrep_proto::time::to_timestamp;
use prost::Message;
use sqlx::PgConnection;

use crate::error::Error;
use crate::store::jobs::{self as job_store, JOB_COLUMNS, JobRow};
use crate::store::projects::{self, ProjectRow};
use crate::store::{self, credits, outbox};

/// Records the creation of jobs (already inserted, status `provisioning`, sequence 1)
/// with one statement, each event continuing the trace given beside its row.
pub async fn record_jobs_created(
    conn: &mut PgConnection,
    created: &[(&JobRow, Option<String>)],
) -> Result<(), Error> {
    let changes: Vec<Change<'_>> = created
        .iter()
        .map(|(row, traceparent)| Change {
            row,
            previous: None,
            traceparent: traceparent.clone(),
        })
        .collect();
    record_job_events(conn, &changes).await
}

/// Applies `event` to the job if it is still in `expected` status (or any status when
/// `expected` is `None`). Returns the updated row, or `None` when the job is not in the
/// expected status any more (someone else moved it: the caller has nothing to do).
pub async fn apply_job_event(
    conn: &mut PgConnection,
    job_id: &str,
    expected: Option<JobStatus>,
    event: JobEvent,
) -> Result<Option<JobRow>, Error> {
    if let Some(from) = expected
        && let Ok(to) = job::transition(from, event)
        && !to.is_terminal()
    {
        // The status to leave is known and nothing is released: one guarded UPDATE
        // instead of a read and an UPDATE (every pipeline step takes this path).
        return match move_job(conn, job_id, from, to).await? {
            Some(updated) => {
                record_job_event(conn, &updated, Some(from)).await?;
                Ok(Some(updated))
            }
            None if store::jobs::get_any(conn, job_id).await?.is_some() => Ok(None),
            None => Err(Error::NotFound("job")),
        };
    }
    let Some(current) = store::jobs::get_any(conn, job_id).await? else {
        return Err(Error::NotFound("job"));
    };
    let from = current.status;
    if expected.is_some_and(|expected| expected != from) {
        return Ok(None);
    }
    let to = job::transition(from, event).map_err(|_| Error::InvalidJobState(from))?;
    let now = store::now();
    let completed_at = to.is_terminal().then_some(now);
    // The unused reservation of a job that ends is released with the change.
    let release = if to.is_terminal() {
        current.credits_reserved
    } else {
        0
    };
    let updated: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = $3, version = version + 1, last_sequence = last_sequence + 1, \
           updated_at = $4, completed_at = COALESCE(completed_at, $5), \
           credits_reserved = credits_reserved - $6 \
         WHERE id = $1 AND version = $2 RETURNING {JOB_COLUMNS}"
    )))
    .bind(job_id)
    .bind(current.version)
    .bind(to.as_str())
    .bind(now)
    .bind(completed_at)
    .bind(release)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(updated) = updated else {
        return Err(Error::Conflict);
    };
    credits::release(conn, &updated.org_id, &updated.id, release).await?;
    record_job_event(conn, &updated, Some(from)).await?;
    Ok(Some(updated))
}

/// Moves the job from `from` to the non-terminal `to` if it is still in `from`.
async fn move_job(
    conn: &mut PgConnection,
    job_id: &str,
    from: JobStatus,
    to: JobStatus,
) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = $3, version = version + 1, last_sequence = last_sequence + 1, \
           updated_at = $4 \
         WHERE id = $1 AND status = $2 RETURNING {JOB_COLUMNS}"
    )))
    .bind(job_id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(store::now())
    .fetch_optional(conn)
    .await?)
}

/// A job a pipeline step moves together with others ([`advance_jobs`]), and the trace
/// its event continues.
#[derive(Debug, Clone)]
pub struct Step {
    pub job_id: String,
    pub traceparent: Option<String>,
}

/// What [`advance_jobs`] did with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    /// Moved, its event recorded.
    Moved,
    /// Not in the expected status any more: someone else moved it, nothing to do.
    Elsewhere,
    /// No such job.
    Missing,
}

/// Applies `event` to every job of `steps` that is still in `from`, where the event
/// leads to a non-terminal status (every pipeline step but the last): one UPDATE for
/// all of them, locking in id order, and one statement for their history and outbox
/// rows. Answers one [`Advanced`] per step, in order.
pub async fn advance_jobs(
    conn: &mut PgConnection,
    steps: &[Step],
    from: JobStatus,
    event: JobEvent,
) -> Result<Vec<Advanced>, Error> {
    let to = job::transition(from, event)
        .ok()
        .filter(|to| !to.is_terminal())
        .ok_or(Error::InvalidJobState(from))?;
    let ids: Vec<&str> = steps.iter().map(|step| step.job_id.as_str()).collect();
    let moved: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH locked AS ( \
           SELECT id FROM jobs WHERE id = ANY($1) AND status = $2 ORDER BY id FOR UPDATE) \
         UPDATE jobs SET status = $3, version = version + 1, \
           last_sequence = last_sequence + 1, updated_at = $4 \
         WHERE id IN (SELECT id FROM locked) RETURNING {JOB_COLUMNS}"
    )))
    .bind(&ids)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(store::now())
    .fetch_all(&mut *conn)
    .await?;
    // In the order of the steps, once per job even if a step came twice.
    let mut changes: Vec<Change<'_>> = Vec::with_capacity(moved.len());
    for step in steps {
        let Some(row) = moved.iter().find(|row| row.id == step.job_id) else {
            continue;
        };
        if !changes.iter().any(|change| change.row.id == row.id) {
            changes.push(Change {
                row,
                previous: Some(from),
                traceparent: step.traceparent.clone(),
            });
        }
    }
    record_job_events(conn, &changes).await?;
    let stayed: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !moved.iter().any(|row| row.id == *id))
        .collect();
    let existing: Vec<String> = if stayed.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
            .bind(&stayed)
            .fetch_all(&mut *conn)
            .await?
    };
    Ok(ids
        .iter()
        .map(|id| {
            if moved.iter().any(|row| row.id == *id) {
                Advanced::Moved
            } else if existing.iter().any(|existing| existing == id) {
                Advanced::Elsewhere
            } else {
                Advanced::Missing
            }
        })
        .collect())
}

/// A status change to record: the row as it is after it, the status before, and the
/// trace its event continues.
struct Change<'a> {
    row: &'a JobRow,
    previous: Option<JobStatus>,
    traceparent: Option<String>,
}

/// Inserts the history row and the outbox row for the change that produced `row`,
/// continuing the current trace: the row's `traceparent` is this span, the parent of
/// the relay's publish.
#[tracing::instrument(name = "outbox append", skip_all, fields(job_id = %row.id))]
async fn record_job_event(
    conn: &mut PgConnection,
    row: &JobRow,
    previous: Option<JobStatus>,
) -> Result<(), Error> {
    let change = Change {
        row,
        previous,
        traceparent: plangrep_telemetry::trace::next_hop(),
    };
    record_job_events(conn, &[change]).await
}

/// Inserts the history rows and outbox rows of `changes` with one statement.
async fn record_job_events(conn: &mut PgConnection, changes: &[Change<'_>]) -> Result<(), Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut events = Vec::with_capacity(changes.len());
    for Change {
        row,
        previous,
        traceparent,
    } in changes
    {
        let id = EventId::generate().to_string();
        let message = JobStatusChanged {
            event_id: id.clone(),
            sequence: u32::try_from(row.last_sequence).unwrap_or_default(),
            status: row.status.as_str().to_owned(),
            previous_status: previous.map(|s| s.as_str().to_owned()),
            occurred_at: Some(to_timestamp(row.updated_at)),
            job: Some(job_store::view(conn, row).await?),
        };
        events.push(outbox::JobEvent {
            id,
            job_id: &row.id,
            sequence: row.last_sequence,
            status: row.status.as_str(),
            previous_status: previous.map(JobStatus::as_str),
            occurred_at: row.updated_at,
            routing_key: StatusEvent::Job(row.status).routing_key(),
            payload: message.encode_to_vec(),
            traceparent: traceparent.clone(),
        });
    }
    outbox::append_job_events(conn, &events).await?;
    Ok(())
}

/// Records the creation of a project (already inserted, status `provisioning`).
pub async fn record_project_created(
    conn: &mut PgConnection,
    row: &ProjectRow,
) -> Result<(), Error> {
    record_project_event(conn, row, None).await
}

/// Moves a project from `from` to `to` if it is still in `from`; `None` otherwise.
pub async fn move_project(
    conn: &mut PgConnection,
    project_id: &str,
    from: ProjectStatus,
    to: ProjectStatus,
) -> Result<Option<ProjectRow>, Error> {
    let Some(current) = projects::get_any(conn, project_id).await? else {
        return Err(Error::NotFound("project"));
    };
    if current.status != from {
        return Ok(None);
    }
    let updated = projects::update_status(conn, project_id, current.version, to)
        .await?
        .ok_or(Error::Conflict)?;
    record_project_event(conn, &updated, Some(from)).await?;
    Ok(Some(updated))
}

async fn record_project_event(
    conn: &mut PgConnection,
    row: &ProjectRow,
    previous: Option<ProjectStatus>,
) -> Result<(), Error> {
    let event_id = EventId::generate().to_string();
    let message = ProjectStatusChanged {
        event_id: event_id.clone(),
        status: row.status.as_str().to_owned(),
        previous_status: previous.map(|s| s.as_str().to_owned()),
        occurred_at: Some(to_timestamp(row.updated_at)),
        project: Some(row.to_proto()),
    };
    let routing_key = StatusEvent::Project(row.status).routing_key();
    outbox::append(conn, &event_id, &routing_key, &message.encode_to_vec()).await?;
    Ok(())
}
