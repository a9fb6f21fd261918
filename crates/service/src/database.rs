//! PostgreSQL access shared by the services: each service keeps its tables in its own
//! schema (`gateway`, `orchestrator`, `dispatcher`) of one database, so they can share a
//! server without sharing tables, and can be split onto separate databases later.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// How long a request may wait for a connection before the caller reports `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection options for `database_url`, confined to `schema`.
pub fn connect_options(database_url: &str, schema: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    Ok(options.options([("search_path", schema)]))
}

/// A lazily connecting pool: the service starts even while the database is down and
/// reports it through `/readyz`; requests fail fast with a pool timeout meanwhile.
pub fn lazy_pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options)
}

/// Creates `schema` if missing and applies `migrator` inside it (sqlx holds its own
/// advisory lock while migrating, so concurrent replicas are safe).
pub async fn migrate(
    options: &PgConnectOptions,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), sqlx::migrate::MigrateError> {
    assert_identifier(schema);
    let mut connection = PgConnection::connect_with(options).await?;
    // Identifiers cannot be bind parameters; the assertion above makes this safe.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&mut connection)
    .await?;
    migrator.run(&mut connection).await?;
    connection.close().await?;
    Ok(())
}

/// Why a service refuses to start against its schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database could not be asked.
    #[error("cannot check the database schema: {0}")]
    Database(#[from] sqlx::Error),
    /// Some of this binary's migrations are not applied.
    #[error(
        "the database schema \"{schema}\" is not migrated ({missing} of {known} migrations \
         missing): run the `migrate` subcommand once (or `serve --migrate` in development)"
    )]
    NotMigrated {
        /// The service's schema.
        schema: String,
        /// Migrations of this binary not applied (successfully) in the database.
        missing: usize,
        /// Migrations this binary knows.
        known: usize,
    },
}

/// Checks that every migration of `migrator` was applied successfully in `schema` (the
/// `migrate` subcommand, run once per deploy, applies them). Migrations the database has
/// but this binary does not know are fine: during a rolling deploy the old replicas keep
/// serving after the new release migrated (migrations are additive).
pub async fn ensure_migrated(
    options: &PgConnectOptions,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), SchemaError> {
    assert_identifier(schema);
    let mut connection = PgConnection::connect_with(options).await?;
    // `to_regclass` answers NULL instead of failing when the table does not exist.
    let table_exists: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL",
    )
    .bind(schema)
    .fetch_one(&mut connection)
    .await?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM \"{schema}\"._sqlx_migrations WHERE success"
        )))
        .fetch_all(&mut connection)
        .await?
    } else {
        Vec::new()
    };
    connection.close().await?;
    let known: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    let missing = known.iter().filter(|v| !applied.contains(v)).count();
    if missing == 0 {
        Ok(())
    } else {
        Err(SchemaError::NotMigrated {
            schema: schema.to_owned(),
            missing,
            known: known.len(),
        })
    }
}

fn assert_identifier(schema: &str) {
    assert!(
        schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "schema names are compile-time identifiers of ours"
    );
}

/// Whether the database answers a trivial query within the acquire timeout.
pub async fn is_reachable(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Whether `error` means the database could not be reached or is going away (an outage:
/// callers answer 503 and retry later) rather than a bug or a constraint.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01-03: shutdown / cannot connect now;
            // 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}
