//! What the orchestrator's database tests share: a migrated database of their own.

use plangrep_job_orchestrator::{Config, startup};
use plangrep_service::{Settings, database};
use plangrep_test_support::TestDatabase;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

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
