//! What the orchestrator's database tests share: a migrated database of their own.

use plangrep_job_orchestrator::{Config, startup};
use plangrep_service::{Settings, database};
use plangrep_test_support::TestDatabase;
use sqlx::PgPool;

/// A small pool on `db`, after the orchestrator's migrations ran there.
pub async fn migrated_pool(db: &TestDatabase) -> PgPool {
    let settings =
        Settings::from_pairs([("DATABASE_URL", db.url()), ("PLANGREP_DEV_MODE", "true")]);
    let config = Config::from_settings(&settings).unwrap();
    startup::migrate(&config).await.unwrap();
    database::lazy_pool(startup::connect_options(&config).unwrap(), 2)
}
