//! PostgreSQL access for the dispatcher: deliveries (state and schedule), the leases
//! attempts run under, their attempts, and retention. sqlx directly, no repository
//! layer.

pub mod attempts;
pub mod deliveries;
pub mod leases;
pub mod retention;

use chrono::{DateTime, Utc};

/// Now, truncated to milliseconds (the precision the API shows).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now is in range")
}
