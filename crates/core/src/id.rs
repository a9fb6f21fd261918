//! Prefixed, lowercase ULID identifiers (`job_01j...`), one type per resource so that a
//! project id can never be passed where a job id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// An id string that does not have the expected prefix and ULID body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {expected_prefix}<ulid> id")]
pub struct InvalidId {
    /// The prefix that was expected, e.g. `job_`.
    pub expected_prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(Ulid::generate())
            }

            /// The ULID behind the prefix.
            pub fn ulid(&self) -> Ulid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.to_string().to_ascii_lowercase())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_ulid(s, $prefix).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Parses `<prefix><26 lowercase Crockford base32 chars>`. Upper case is refused so that an
/// id has exactly one spelling (ids are compared as strings in the database).
fn parse_ulid(s: &str, prefix: &'static str) -> Result<Ulid, InvalidId> {
    let invalid = InvalidId {
        expected_prefix: prefix,
    };
    let body = s.strip_prefix(prefix).ok_or(invalid.clone())?;
    if body.len() != 26 || body.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid);
    }
    let ulid = Ulid::from_string(body).map_err(|_| invalid.clone())?;
    // One spelling per id: refuse bodies that decode but do not re-encode to themselves
    // (overflowing first character, Crockford aliases such as `i`/`l`/`o`).
    if ulid.to_string().to_ascii_lowercase() != body {
        return Err(invalid);
    }
    Ok(ulid)
}

prefixed_id!(
    /// An organization (`org_`): the tenant every resource belongs to.
    OrgId, "org_"
);
prefixed_id!(
    /// An API key (`key_`).
    ApiKeyId, "key_"
);
prefixed_id!(
    /// A project (`proj_`).
    ProjectId, "proj_"
);
prefixed_id!(
    /// A job (`job_`).
    JobId, "job_"
);
prefixed_id!(
    /// An uploaded document (`doc_`).
    DocumentId, "doc_"
);
prefixed_id!(
    /// A status-change event (`evt_`); also the `webhook-id` of its deliveries.
    EventId, "evt_"
);
prefixed_id!(
    /// A webhook delivery (`dlv_`).
    DeliveryId, "dlv_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_round_trips_through_its_string_form() {
        let id = JobId::generate();
        let text = id.to_string();
        assert!(text.starts_with("job_"));
        assert_eq!(text.len(), 4 + 26);
        assert_eq!(text, text.to_ascii_lowercase());
        assert_eq!(text.parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn ids_with_the_wrong_prefix_or_body_are_refused() {
        let job = JobId::generate().to_string();
        let project_body = job.replacen("job_", "proj_", 1);
        for bad in [
            "",
            "job_",
            project_body.as_str(),
            &job.to_ascii_uppercase(),
            &format!("{job}x"),
            &job[..job.len() - 1],
            "job_0000000000000000000000000!",
            "job_zzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} was accepted");
        }
        assert!(project_body.parse::<ProjectId>().is_ok());
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = EventId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: EventId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<JobId>(&json).is_err());
    }
}
