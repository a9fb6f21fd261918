//! Idempotent mutations (SPEC §2), kept in the orchestrator's database and committed in
//! the same transaction as the effect, so a stored response exists exactly when its
//! resource does, across gateway replicas and restarts.
//!
//! [`run`] claims `(org, route, key)` by inserting its row inside the operation's
//! transaction. A concurrent request with the same key blocks on that uncommitted row for
//! at most [`LOCK_WAIT`], then either replays the committed response or, if the first one
//! is still running, gets `idempotency_request_in_progress`. The operation itself runs in a
//! savepoint: a 4xx outcome rolls the effect back but is stored (and replayed); a 5xx or a
//! crash rolls everything back and stores nothing, so the key can be retried.

use chrono::{Duration, Utc};
use plangrep_core::ErrorCode;
use plangrep_proto::orchestrator::Idempotency;
use plangrep_proto::status;
use prost::Message;
use sqlx::{Acquire, PgConnection, PgPool};
use tonic::metadata::MetadataValue;

use crate::crypto::Keyring;
use crate::error::Error;

/// How long a stored response is replayed.
pub const RETENTION_HOURS: i64 = 24;
/// How long a request waits for a concurrent one with the same key before answering 409.
pub const LOCK_WAIT: &str = "500ms";
/// Metadata entry marking a replayed response (success or error).
pub const REPLAY_METADATA: &str = "x-plangrep-idempotent-replay";

/// A claimed key in scope.
#[derive(Debug, Clone)]
pub struct Key {
    org_id: String,
    route: String,
    key: String,
    fingerprint: Vec<u8>,
}

impl Key {
    /// The key of a request, if it carried one.
    pub fn from_request(org_id: &str, idempotency: Option<Idempotency>) -> Option<Self> {
        idempotency.map(|i| Self {
            org_id: org_id.to_owned(),
            route: i.route,
            key: i.key,
            fingerprint: i.fingerprint,
        })
    }

    fn context(&self) -> Vec<u8> {
        sealing_context(&self.org_id, &self.route, &self.key)
    }
}

/// The associated data a stored response is sealed with: it binds the blob to its row.
pub fn sealing_context(org_id: &str, route: &str, key: &str) -> Vec<u8> {
    format!("{org_id}\n{route}\n{key}").into_bytes()
}

#[derive(sqlx::FromRow)]
struct Stored {
    fingerprint: Vec<u8>,
    outcome: String,
    response_sealed: Option<Vec<u8>>,
    error_code: Option<String>,
    error_message: Option<String>,
    error_details: Option<String>,
}

/// What the caller gets: the response and whether it is a replay.
pub struct Outcome<T> {
    pub response: T,
    pub replayed: bool,
}

impl<T> Outcome<T> {
    /// The gRPC response, marked when replayed.
    pub fn into_response(self) -> tonic::Response<T> {
        let mut response = tonic::Response::new(self.response);
        if self.replayed {
            response
                .metadata_mut()
                .insert(REPLAY_METADATA, MetadataValue::from_static("true"));
        }
        response
    }
}

/// Runs `operation` in a transaction, idempotently when `key` is given.
pub async fn run<T, F>(
    pool: &PgPool,
    secrets: &Keyring,
    key: Option<Key>,
    operation: F,
) -> Result<Outcome<T>, tonic::Status>
where
    T: Message + Default,
    F: AsyncFnOnce(&mut PgConnection) -> Result<T, Error>,
{
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let Some(key) = key else {
        // Nothing to store: the operation's own transaction is all there is.
        let response = operation(&mut tx).await?;
        tx.commit().await.map_err(Error::from)?;
        return Ok(Outcome {
            response,
            replayed: false,
        });
    };
    if let Some(replay) = claim(&mut tx, secrets, &key).await? {
        return replay.map(|response| Outcome {
            response,
            replayed: true,
        });
    }
    let mut savepoint = tx.begin().await.map_err(Error::from)?;
    match operation(&mut savepoint).await {
        Ok(response) => {
            savepoint.commit().await.map_err(Error::from)?;
            let sealed = secrets.seal_bytes(&key.context(), &response.encode_to_vec());
            sqlx::query(
                "UPDATE idempotency_keys SET outcome = 'ok', response_sealed = $4 \
                 WHERE org_id = $1 AND route = $2 AND key = $3",
            )
            .bind(&key.org_id)
            .bind(&key.route)
            .bind(&key.key)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
            tx.commit().await.map_err(Error::from)?;
            Ok(Outcome {
                response,
                replayed: false,
            })
        }
        Err(error) if error.is_replayable() => {
            savepoint.rollback().await.map_err(Error::from)?;
            let status: tonic::Status = error.into();
            sqlx::query(
                "UPDATE idempotency_keys SET outcome = 'error', error_code = $4, \
                   error_message = $5, error_details = $6 \
                 WHERE org_id = $1 AND route = $2 AND key = $3",
            )
            .bind(&key.org_id)
            .bind(&key.route)
            .bind(&key.key)
            .bind(status::public_code(&status).as_str())
            .bind(status.message())
            .bind(status::details(&status))
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
            tx.commit().await.map_err(Error::from)?;
            Err(status)
        }
        // 5xx: the transaction rolls back on drop and nothing is stored.
        Err(error) => Err(error.into()),
    }
}

/// Claims the key. `None`: this request owns it and proceeds. `Some(replay)`: the stored
/// outcome of an earlier request with the same fingerprint.
async fn claim<T: Message + Default>(
    tx: &mut PgConnection,
    secrets: &Keyring,
    key: &Key,
) -> Result<Option<Result<T, tonic::Status>>, Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_WAIT}'"
    )))
    .execute(&mut *tx)
    .await?;
    let now = Utc::now();
    // An expired record no longer protects its key.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE org_id = $1 AND route = $2 AND key = $3 \
           AND expires_at <= $4",
    )
    .bind(&key.org_id)
    .bind(&key.route)
    .bind(&key.key)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(in_progress_on_lock_timeout)?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (org_id, route, key, fingerprint, outcome, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&key.org_id)
    .bind(&key.route)
    .bind(&key.key)
    .bind(&key.fingerprint)
    .bind(now)
    .bind(now + Duration::hours(RETENTION_HOURS))
    .execute(&mut *tx)
    .await
    .map_err(in_progress_on_lock_timeout)?;
    if inserted.rows_affected() == 1 {
        // The short wait is for the key only; the operation itself waits as usual.
        sqlx::query("SET LOCAL lock_timeout TO DEFAULT")
            .execute(&mut *tx)
            .await?;
        return Ok(None);
    }
    let stored: Stored = sqlx::query_as(
        "SELECT fingerprint, outcome, response_sealed, error_code, error_message, error_details \
         FROM idempotency_keys WHERE org_id = $1 AND route = $2 AND key = $3",
    )
    .bind(&key.org_id)
    .bind(&key.route)
    .bind(&key.key)
    .fetch_one(&mut *tx)
    .await?;
    if stored.fingerprint != key.fingerprint {
        return Err(Error::IdempotencyKeyReused);
    }
    let replay = match stored.outcome.as_str() {
        "ok" => {
            let sealed = stored
                .response_sealed
                .ok_or_else(|| Error::Corrupt("idempotent response missing".into()))?;
            let bytes = secrets
                .open_bytes(&key.context(), &sealed)
                .map_err(|e| Error::Corrupt(format!("stored idempotent response: {e}")))?;
            Ok(T::decode(bytes.as_slice()).map_err(|e| Error::Corrupt(e.to_string()))?)
        }
        "error" => {
            let code: ErrorCode = stored
                .error_code
                .as_deref()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| Error::Corrupt("idempotent error code".into()))?;
            let mut replayed = status::status(
                code,
                stored.error_message.unwrap_or_default(),
                stored.error_details,
            );
            replayed
                .metadata_mut()
                .insert(REPLAY_METADATA, MetadataValue::from_static("true"));
            Err(replayed)
        }
        other => return Err(Error::Corrupt(format!("idempotency outcome {other:?}"))),
    };
    Ok(Some(replay))
}

/// SQLSTATE 55P03 (lock_not_available): the first request with this key still runs.
fn in_progress_on_lock_timeout(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => {
            Error::IdempotencyInProgress
        }
        _ => error.into(),
    }
}

/// Deletes expired records in batches until none is left (called periodically).
pub async fn reap_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN ( \
               SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT 1000)",
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 1000 {
            return Ok(total);
        }
    }
}
