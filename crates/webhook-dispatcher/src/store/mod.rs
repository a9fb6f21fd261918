//! PostgreSQL access for the dispatcher: deliveries (state and schedule) and their
//! attempts. sqlx directly, no repository layer.

pub mod attempts;
pub mod deliveries;

use chrono::{DateTime, Utc};

/// Now, truncated to milliseconds (the precision the API shows).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now is in range")
}
