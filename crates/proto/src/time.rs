//! Conversions between `google.protobuf.Timestamp` and `chrono::DateTime<Utc>`.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// Converts a UTC instant into a protobuf timestamp.
pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Converts a protobuf timestamp into a UTC instant; `None` when out of range.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_round_trips_with_millisecond_precision() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(from_timestamp(&to_timestamp(at)), Some(at));
    }
}
