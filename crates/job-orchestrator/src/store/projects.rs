//! Projects: rows and their protobuf form.

use chrono::{DateTime, Utc};
use plangrep_core::ProjectStatus;
use plangrep_proto::orchestrator::Project;
use plangrep_proto::time::to_timestamp;
use sqlx::PgConnection;

use crate::error::Error;

/// The columns of [`ProjectRow`], in one place.
const PROJECT_COLUMNS: &str = "id, org_id, name, status, version, created_at, updated_at";

/// A row of `projects`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub status: ProjectStatus,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProjectRow {
    /// The protobuf form.
    pub fn to_proto(&self) -> Project {
        Project {
            id: self.id.clone(),
            org_id: self.org_id.clone(),
            name: self.name.clone(),
            status: self.status.as_str().to_owned(),
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
        }
    }
}

/// Inserts a new project.
pub async fn insert(conn: &mut PgConnection, row: &ProjectRow) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO projects (id, org_id, name, status, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.id)
    .bind(&row.org_id)
    .bind(&row.name)
    .bind(row.status.as_str())
    .bind(row.version)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A project of `org_id`, or `NotFound` (also for another organization's project).
pub async fn get(conn: &mut PgConnection, org_id: &str, id: &str) -> Result<ProjectRow, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("project"))
}

/// The projects of `ids` (each at most once; an unknown id is simply absent).
pub async fn get_many(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<ProjectRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// A project by id alone (internal callers).
pub async fn get_any(conn: &mut PgConnection, id: &str) -> Result<Option<ProjectRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Sets the status if the row is still at `version`; returns the updated row, or `None`
/// when someone else changed it first.
pub async fn update_status(
    conn: &mut PgConnection,
    id: &str,
    version: i32,
    status: ProjectStatus,
) -> Result<Option<ProjectRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE projects SET status = $3, version = version + 1, updated_at = $4 \
         WHERE id = $1 AND version = $2 RETURNING {PROJECT_COLUMNS}"
    )))
    .bind(id)
    .bind(version)
    .bind(status.as_str())
    .bind(super::now())
    .fetch_optional(conn)
    .await?)
}

/// A page of `org_id`'s projects, newest first, after `cursor`; one extra row tells
/// whether more follow.
pub async fn list(
    conn: &mut PgConnection,
    org_id: &str,
    limit: u32,
    cursor: Option<&plangrep_core::pagination::Cursor>,
) -> Result<Vec<ProjectRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE org_id = $1 \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(org_id)
    .bind(cursor.map(|c| c.created_at))
    .bind(cursor.map(|c| c.id.clone()))
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?)
}
