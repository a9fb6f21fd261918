//! What the orchestrator's database tests share: a migrated database of their own, and
//! the projects and job requests they start from.

use plangrep_core::ProjectStatus;
use plangrep_core::id::{OrgId, ProjectId};
use plangrep_job_orchestrator::jobs::NewJob;
use plangrep_job_orchestrator::store::projects::{self, ProjectRow};
use plangrep_job_orchestrator::{Config, startup};
use plangrep_service::{Settings, database};
use plangrep_test_support::TestDatabase;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};

/// A small pool on `db`, after the orchestrator's migrations ran there.
pub async fn migrated_pool(db: &TestDatabase) -> PgPool {
    let config = config(db);
    startup::migrate(&config).await.unwrap();
    database::lazy_pool(startup::connect_options(&config).unwrap(), 2)
}

/// How the orchestrator connects to `db` (its schema on the search path).
#[allow(dead_code)] // not every test binary opens its own sessions
pub fn connect_options(db: &TestDatabase) -> PgConnectOptions {
    startup::connect_options(&config(db)).unwrap()
}

fn config(db: &TestDatabase) -> Config {
    let settings =
        Settings::from_pairs([("DATABASE_URL", db.url()), ("PLANGREP_DEV_MODE", "true")]);
    Config::from_settings(&settings).unwrap()
}

/// Inserts a project of `org_id` in `status` and returns its id.
#[allow(dead_code)] // not every test binary creates jobs
pub async fn insert_project(
    conn: &mut PgConnection,
    org_id: OrgId,
    status: ProjectStatus,
) -> ProjectId {
    let id = ProjectId::generate();
    let now = chrono::Utc::now();
    projects::insert(
        conn,
        &ProjectRow {
            id: id.to_string(),
            org_id: org_id.to_string(),
            name: format!("Tower {id}"),
            status,
            version: 1,
            created_at: now,
            updated_at: now,
        },
    )
    .await
    .unwrap();
    id
}

/// A request for a job in `project_id`, with no external id, webhook or trace.
#[allow(dead_code)] // not every test binary creates jobs
pub fn new_job(org_id: OrgId, project_id: ProjectId) -> NewJob {
    NewJob {
        org_id,
        project_id,
        external_id: None,
        webhook_url: None,
        traceparent: None,
    }
}
