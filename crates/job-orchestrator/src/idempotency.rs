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
//!
//! Creates claim and record their keys a batch at a time ([`claim_many`],
//! [`record_many`]; ADR 0023); a key a batch does not own is left to [`run`].

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

    fn same_key(&self, other: &Key) -> bool {
        (&self.org_id, &self.route, &self.key) == (&other.org_id, &other.route, &other.key)
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
#[derive(Debug)]
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
    if claim_many(&mut tx, &[&key]).await? == [false] {
        return replay(&mut tx, secrets, &key)
            .await
            .map(|response| Outcome {
                response,
                replayed: true,
            });
    }
    let mut savepoint = tx.begin().await.map_err(Error::from)?;
    let outcome = match operation(&mut savepoint).await {
        Ok(response) => {
            savepoint.commit().await.map_err(Error::from)?;
            Ok(response)
        }
        Err(error) if error.is_replayable() => {
            savepoint.rollback().await.map_err(Error::from)?;
            Err(tonic::Status::from(error))
        }
        // 5xx: the transaction rolls back on drop and nothing is stored.
        Err(error) => return Err(error.into()),
    };
    record_many(&mut tx, secrets, &[(&key, Settled::of(&outcome))]).await?;
    tx.commit().await.map_err(Error::from)?;
    outcome.map(|response| Outcome {
        response,
        replayed: false,
    })
}

/// How a claimed key's request ended, as [`record_many`] stores it.
pub enum Settled<'a, T> {
    /// It succeeded: its response is replayed.
    Response(&'a T),
    /// It failed with a 4xx: the error is replayed.
    Refused(&'a tonic::Status),
    /// It failed otherwise: the key is given up, and a retry runs the request again.
    Released,
}

impl<'a, T> Settled<'a, T> {
    /// The outcome of a request whose errors were all replayable (4xx) ones.
    pub fn of(outcome: &'a Result<T, tonic::Status>) -> Self {
        match outcome {
            Ok(response) => Settled::Response(response),
            Err(status) => Settled::Refused(status),
        }
    }
}

/// Claims the `keys` of requests that run in this transaction, in a fixed order (so two
/// transactions claiming several keys cannot deadlock), each waiting at most
/// [`LOCK_WAIT`] for a concurrent request with the same key. Answers, per key, whether
/// this transaction owns it; a key it does not own (stored already, or twice in `keys`:
/// only its first request owns it) is for [`run`], which replays or refuses.
pub async fn claim_many(conn: &mut PgConnection, keys: &[&Key]) -> Result<Vec<bool>, Error> {
    let mut first = Vec::with_capacity(keys.len());
    let mut columns = KeyColumns::default();
    let mut fingerprints = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let repeated = keys[..i].iter().any(|earlier| earlier.same_key(key));
        first.push(!repeated);
        if !repeated {
            columns.push(key);
            fingerprints.push(key.fingerprint.as_slice());
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_WAIT}'"
    )))
    .execute(&mut *conn)
    .await?;
    let now = Utc::now();
    // An expired record no longer protects its key.
    sqlx::query(
        "DELETE FROM idempotency_keys k \
         USING unnest($1::text[], $2::text[], $3::text[]) AS u(org_id, route, key) \
         WHERE k.org_id = u.org_id AND k.route = u.route AND k.key = u.key \
           AND k.expires_at <= $4",
    )
    .bind(&columns.org_ids)
    .bind(&columns.routes)
    .bind(&columns.keys)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(in_progress_on_lock_timeout)?;
    let claimed: Vec<(String, String, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys \
           (org_id, route, key, fingerprint, outcome, created_at, expires_at) \
         SELECT org_id, route, key, fingerprint, 'pending', $5, $6 \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
           AS u(org_id, route, key, fingerprint) \
         ORDER BY org_id, route, key \
         ON CONFLICT DO NOTHING \
         RETURNING org_id, route, key",
    )
    .bind(&columns.org_ids)
    .bind(&columns.routes)
    .bind(&columns.keys)
    .bind(&fingerprints)
    .bind(now)
    .bind(now + Duration::hours(RETENTION_HOURS))
    .fetch_all(&mut *conn)
    .await
    .map_err(in_progress_on_lock_timeout)?;
    // The short wait is for the keys only; the operations themselves wait as usual.
    sqlx::query("SET LOCAL lock_timeout TO DEFAULT")
        .execute(&mut *conn)
        .await?;
    Ok(keys
        .iter()
        .zip(first)
        .map(|(key, first)| {
            first
                && claimed.iter().any(|(org_id, route, name)| {
                    *org_id == key.org_id && *route == key.route && *name == key.key
                })
        })
        .collect())
}

/// Stores how the requests of keys this transaction claimed ended ([`claim_many`]):
/// one update for the outcomes to replay, one delete for the keys given up.
pub async fn record_many<T: Message>(
    conn: &mut PgConnection,
    secrets: &Keyring,
    settled: &[(&Key, Settled<'_, T>)],
) -> Result<(), Error> {
    let mut stored = StoredColumns::default();
    let mut released = KeyColumns::default();
    for (key, settled) in settled {
        let (outcome, sealed, status) = match settled {
            Settled::Response(response) => {
                let sealed = secrets.seal_bytes(&key.context(), &response.encode_to_vec());
                ("ok", Some(sealed), None)
            }
            Settled::Refused(status) => ("error", None, Some(*status)),
            Settled::Released => {
                released.push(key);
                continue;
            }
        };
        stored.keys.push(key);
        stored.outcomes.push(outcome);
        stored.sealed.push(sealed);
        stored
            .codes
            .push(status.map(|s| status::public_code(s).as_str()));
        stored.messages.push(status.map(tonic::Status::message));
        stored.details.push(status.and_then(status::details));
    }
    if !stored.outcomes.is_empty() {
        sqlx::query(
            "UPDATE idempotency_keys k SET outcome = u.outcome, response_sealed = u.sealed, \
               error_code = u.code, error_message = u.message, error_details = u.details \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
                          $6::text[], $7::text[], $8::text[]) \
               AS u(org_id, route, key, outcome, sealed, code, message, details) \
             WHERE k.org_id = u.org_id AND k.route = u.route AND k.key = u.key",
        )
        .bind(&stored.keys.org_ids)
        .bind(&stored.keys.routes)
        .bind(&stored.keys.keys)
        .bind(&stored.outcomes)
        .bind(&stored.sealed)
        .bind(&stored.codes)
        .bind(&stored.messages)
        .bind(&stored.details)
        .execute(&mut *conn)
        .await?;
    }
    if !released.keys.is_empty() {
        sqlx::query(
            "DELETE FROM idempotency_keys k \
             USING unnest($1::text[], $2::text[], $3::text[]) AS u(org_id, route, key) \
             WHERE k.org_id = u.org_id AND k.route = u.route AND k.key = u.key",
        )
        .bind(&released.org_ids)
        .bind(&released.routes)
        .bind(&released.keys)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The `(org_id, route, key)` columns of some keys, for `unnest`.
#[derive(Default)]
struct KeyColumns<'a> {
    org_ids: Vec<&'a str>,
    routes: Vec<&'a str>,
    keys: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    fn push(&mut self, key: &'a Key) {
        self.org_ids.push(&key.org_id);
        self.routes.push(&key.route);
        self.keys.push(&key.key);
    }
}

/// The columns of [`record_many`]'s update, one entry per key.
#[derive(Default)]
struct StoredColumns<'a> {
    keys: KeyColumns<'a>,
    outcomes: Vec<&'a str>,
    sealed: Vec<Option<Vec<u8>>>,
    codes: Vec<Option<&'a str>>,
    messages: Vec<Option<&'a str>>,
    details: Vec<Option<String>>,
}

/// The stored outcome of an earlier request with `key`, replayed (or refused when its
/// fingerprint differs).
async fn replay<T: Message + Default>(
    conn: &mut PgConnection,
    secrets: &Keyring,
    key: &Key,
) -> Result<T, tonic::Status> {
    let stored: Stored = sqlx::query_as(
        "SELECT fingerprint, outcome, response_sealed, error_code, error_message, error_details \
         FROM idempotency_keys WHERE org_id = $1 AND route = $2 AND key = $3",
    )
    .bind(&key.org_id)
    .bind(&key.route)
    .bind(&key.key)
    .fetch_one(&mut *conn)
    .await
    .map_err(Error::from)?;
    if stored.fingerprint != key.fingerprint {
        return Err(Error::IdempotencyKeyReused.into());
    }
    match stored.outcome.as_str() {
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
        other => Err(Error::Corrupt(format!("idempotency outcome {other:?}")).into()),
    }
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
