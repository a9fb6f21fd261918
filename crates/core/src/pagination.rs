//! List pagination (SPEC §1): `limit` 1–500 (default 100) and an opaque keyset cursor.
//!
//! Lists are ordered newest first by `(created_at, id)`; a cursor is the position of the
//! last item of a page, so rows inserted meanwhile (always newer) never shift later pages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::validate::FieldError;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// Parses `?limit=`.
pub fn parse_limit(raw: Option<&str>) -> Result<u32, FieldError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(FieldError::new(
            "limit",
            format!("must be an integer from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// A position in a newest-first list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last item seen.
    pub created_at: DateTime<Utc>,
    /// Its id (the tie-breaker).
    pub id: String,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let raw = format!("{}|{}", self.created_at.timestamp_micros(), self.id);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Parses a cursor this API issued; anything else is a 400 on `cursor`.
    pub fn decode(text: &str) -> Result<Self, FieldError> {
        let invalid = || FieldError::new("cursor", "is not a cursor this API issued");
        if text.len() > 200 {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (micros, id) = raw.split_once('|').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        // Only instants we could have issued (the database cannot even store most of
        // chrono's range).
        if !(0..=253_402_300_799_000_000).contains(&micros) {
            return Err(invalid());
        }
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        let well_formed_id = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !well_formed_id {
            return Err(invalid());
        }
        Ok(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_stay_within_bounds() {
        assert_eq!(parse_limit(None), Ok(100));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("500")), Ok(500));
        for bad in ["0", "501", "-1", "ten", "", "1.5", "99999999999999999999"] {
            assert_eq!(parse_limit(Some(bad)).unwrap_err().field, "limit", "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_000).unwrap(),
            id: "job_01jd0000000000000000000000".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        let sql = URL_SAFE_NO_PAD.encode("1|x' OR 1=1 --");
        let ancient = URL_SAFE_NO_PAD.encode("-300000000000000000|proj_x");
        let future = URL_SAFE_NO_PAD.encode("999999999999999999|proj_x");
        for bad in [
            "",
            "!!!",
            "bm90LWEtY3Vyc29y",
            sql.as_str(),
            ancient.as_str(),
            future.as_str(),
            &"A".repeat(300),
        ] {
            assert_eq!(Cursor::decode(bad).unwrap_err().field, "cursor", "{bad}");
        }
    }
}
