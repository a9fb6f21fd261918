//! `job-orchestrator reseal`: moves every sealed blob to the keyring's primary key
//! (ADR 0011), so an old key can leave the ring.
//!
//! Sealed columns: `jobs.webhook_secret_sealed` and `jobs.previous_webhook_secret_sealed`
//! (associated data: the job id) and `idempotency_keys.response_sealed` (associated data:
//! org, route and key). Each is walked in primary-key order in batches; a blob already
//! sealed with the primary key is left alone, so a second run finds nothing to do and an
//! interrupted run simply starts again. A row is rewritten only if its blob is still the
//! one that was read (compare-and-set), so the running service's own writes always win.
//! A blob that does not open (unknown key id, tampered) is counted and logged; the others
//! are still moved, and the command then fails.

use sqlx::{PgConnection, PgPool};

use crate::crypto::Keyring;

/// Rows read and rewritten per transaction.
pub const BATCH_SIZE: i64 = 500;

/// What happened to one sealed column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnReport {
    /// `table.column`.
    pub column: &'static str,
    /// Blobs looked at.
    pub scanned: u64,
    /// Blobs re-sealed with the primary key.
    pub resealed: u64,
    /// Blobs already sealed with the primary key.
    pub already_primary: u64,
    /// Blobs the service rewrote (or deleted) between read and write: nothing to do.
    pub changed_concurrently: u64,
    /// Blobs that do not open with the ring (see the log).
    pub failed: u64,
}

impl std::fmt::Display for ColumnReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: scanned {}, resealed {}, already primary {}, changed concurrently {}, failed {}",
            self.column,
            self.scanned,
            self.resealed,
            self.already_primary,
            self.changed_concurrently,
            self.failed
        )
    }
}

/// One sealed column: how to read a batch after a cursor and how to write one row back.
struct SealedColumn {
    column: &'static str,
    /// Selects `(key parts…, blob)` after the cursor `$1..$n`, ordered, limited by `$n+1`.
    select_first: &'static str,
    select_after: &'static str,
    /// `SET blob = $1 WHERE key = $2.. AND blob = $last`.
    update: &'static str,
    /// The associated data of a row, from its key parts.
    context: fn(&[String]) -> Vec<u8>,
}

const COLUMNS: [SealedColumn; 3] = [
    SealedColumn {
        column: "jobs.webhook_secret_sealed",
        select_first: "SELECT ARRAY[id], webhook_secret_sealed FROM jobs \
             WHERE webhook_secret_sealed IS NOT NULL ORDER BY id LIMIT $1",
        select_after: "SELECT ARRAY[id], webhook_secret_sealed FROM jobs \
             WHERE webhook_secret_sealed IS NOT NULL AND id > $1 ORDER BY id LIMIT $2",
        update: "UPDATE jobs SET webhook_secret_sealed = $1 \
             WHERE id = $2 AND webhook_secret_sealed = $3",
        context: |key| key[0].as_bytes().to_vec(),
    },
    SealedColumn {
        column: "jobs.previous_webhook_secret_sealed",
        select_first: "SELECT ARRAY[id], previous_webhook_secret_sealed FROM jobs \
             WHERE previous_webhook_secret_sealed IS NOT NULL ORDER BY id LIMIT $1",
        select_after: "SELECT ARRAY[id], previous_webhook_secret_sealed FROM jobs \
             WHERE previous_webhook_secret_sealed IS NOT NULL AND id > $1 ORDER BY id LIMIT $2",
        update: "UPDATE jobs SET previous_webhook_secret_sealed = $1 \
             WHERE id = $2 AND previous_webhook_secret_sealed = $3",
        context: |key| key[0].as_bytes().to_vec(),
    },
    SealedColumn {
        column: "idempotency_keys.response_sealed",
        select_first: "SELECT ARRAY[org_id, route, key], response_sealed FROM idempotency_keys \
             WHERE response_sealed IS NOT NULL ORDER BY org_id, route, key LIMIT $1",
        select_after: "SELECT ARRAY[org_id, route, key], response_sealed FROM idempotency_keys \
             WHERE response_sealed IS NOT NULL AND (org_id, route, key) > ($1, $2, $3) \
             ORDER BY org_id, route, key LIMIT $4",
        update: "UPDATE idempotency_keys SET response_sealed = $1 \
             WHERE org_id = $2 AND route = $3 AND key = $4 AND response_sealed = $5",
        context: |key| crate::idempotency::sealing_context(&key[0], &key[1], &key[2]),
    },
];

/// Re-seals every sealed column with `keyring`'s primary key, `batch_size` rows per
/// transaction, calling `progress` after each batch. Fails only when the database does.
pub async fn run(
    pool: &PgPool,
    keyring: &Keyring,
    batch_size: i64,
    mut progress: impl FnMut(&ColumnReport),
) -> Result<Vec<ColumnReport>, sqlx::Error> {
    let mut reports = Vec::new();
    for column in &COLUMNS {
        let mut report = ColumnReport {
            column: column.column,
            ..ColumnReport::default()
        };
        let mut cursor: Option<Vec<String>> = None;
        loop {
            let mut tx = pool.begin().await?;
            let rows = select_batch(&mut tx, column, cursor.as_deref(), batch_size).await?;
            for (key, blob) in &rows {
                reseal_row(&mut tx, keyring, column, key, blob, &mut report).await?;
            }
            tx.commit().await?;
            progress(&report);
            if rows.len() < usize::try_from(batch_size).unwrap_or(usize::MAX) {
                break;
            }
            cursor = rows.last().map(|(key, _)| key.clone());
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn select_batch(
    conn: &mut PgConnection,
    column: &SealedColumn,
    cursor: Option<&[String]>,
    batch_size: i64,
) -> Result<Vec<(Vec<String>, Vec<u8>)>, sqlx::Error> {
    match cursor {
        None => {
            sqlx::query_as(column.select_first)
                .bind(batch_size)
                .fetch_all(conn)
                .await
        }
        Some(cursor) => {
            let mut query = sqlx::query_as(column.select_after);
            for part in cursor {
                query = query.bind(part);
            }
            query.bind(batch_size).fetch_all(conn).await
        }
    }
}

async fn reseal_row(
    conn: &mut PgConnection,
    keyring: &Keyring,
    column: &SealedColumn,
    key: &[String],
    blob: &[u8],
    report: &mut ColumnReport,
) -> Result<(), sqlx::Error> {
    report.scanned += 1;
    if keyring.is_sealed_with_primary(blob) {
        report.already_primary += 1;
        return Ok(());
    }
    let resealed = match keyring.reseal(&(column.context)(key), blob) {
        Ok(resealed) => resealed,
        Err(error) => {
            report.failed += 1;
            tracing::error!(column = column.column, row = ?key, %error, "sealed blob does not open; left as is");
            return Ok(());
        }
    };
    let mut update = sqlx::query(column.update).bind(resealed);
    for part in key {
        update = update.bind(part);
    }
    let updated = update.bind(blob).execute(conn).await?.rows_affected();
    if updated == 1 {
        report.resealed += 1;
    } else {
        report.changed_concurrently += 1;
    }
    Ok(())
}
