//! PostgreSQL access for the orchestrator, one module per table family. Queries use sqlx
//! directly; every status change goes through [`lifecycle`](crate::lifecycle), which is the
//! only writer of `jobs.status`.

pub mod credits;
pub mod documents;
pub mod jobs;
pub mod outbox;
pub mod projects;
pub mod webhook_secrets;

use chrono::{DateTime, Utc};

/// Now, truncated to milliseconds: the precision of every timestamp the API shows, so a
/// stored value and its JSON rendering are the same instant.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now is in range")
}
