//! `webhooks listen` and `webhooks verify`: checking deliveries the way a customer's
//! receiver must, with the core's Standard Webhooks verifier (`plangrep_core::webhook`).
//!
//! [`inspect`] is shared by both: it reads the three `webhook-*` headers and the body,
//! verifies the signature (timestamp within the tolerance, any `v1,` entry matching) and
//! pulls the job, status and sequence out of the body for printing.

use std::time::{SystemTime, UNIX_EPOCH};

use plangrep_core::webhook::{WebhookSecret, verify};
use serde_json::{Value, json};

pub mod listen;
pub mod raw;

/// What one delivery says and whether it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// `webhook-id` (the event id), if present.
    pub event_id: Option<String>,
    /// `data.job.id`.
    pub job_id: Option<String>,
    /// `data.job.status`.
    pub status: Option<String>,
    /// `data.sequence`.
    pub sequence: Option<u64>,
    /// `Ok` when the signature verified, else why not.
    pub verdict: Result<(), String>,
}

impl Inspected {
    /// The human one-liner: event, job, status, sequence, signature.
    pub fn line(&self) -> String {
        format!(
            "{}  {}  {:<22}  seq {:<3}  signature {}",
            self.event_id.as_deref().unwrap_or("-"),
            self.job_id.as_deref().unwrap_or("-"),
            self.status.as_deref().unwrap_or("-"),
            self.sequence
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            match &self.verdict {
                Ok(()) => "valid".to_owned(),
                Err(reason) => format!("INVALID ({reason})"),
            }
        )
    }

    /// The JSON form (`--json`).
    pub fn to_json(&self) -> Value {
        json!({
            "eventId": self.event_id,
            "jobId": self.job_id,
            "status": self.status,
            "sequence": self.sequence,
            "signatureValid": self.verdict.is_ok(),
            "signatureError": self.verdict.as_ref().err(),
        })
    }
}

/// The unix time now, in seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Verifies one delivery given a header lookup (case-insensitive names) and the raw body.
/// `now` is `None` to skip the timestamp's age check.
pub fn inspect(
    secret: &WebhookSecret,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: Option<i64>,
    tolerance: i64,
) -> Inspected {
    let event_id = header("webhook-id");
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let data = &parsed["data"];
    let verdict = check(
        secret,
        event_id.as_deref(),
        header("webhook-timestamp").as_deref(),
        header("webhook-signature").as_deref(),
        body,
        now,
        tolerance,
    );
    Inspected {
        event_id,
        job_id: data["job"]["id"].as_str().map(str::to_owned),
        status: data["job"]["status"].as_str().map(str::to_owned),
        sequence: data["sequence"].as_u64(),
        verdict,
    }
}

fn check(
    secret: &WebhookSecret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: Option<i64>,
    tolerance: i64,
) -> Result<(), String> {
    let id = id.ok_or("no webhook-id header")?;
    let timestamp: i64 = timestamp
        .ok_or("no webhook-timestamp header")?
        .trim()
        .parse()
        .map_err(|_| "webhook-timestamp is not unix seconds")?;
    let signature = signature.ok_or("no webhook-signature header")?;
    verify(
        secret,
        id,
        timestamp,
        body,
        signature.trim(),
        now.unwrap_or(timestamp),
        tolerance,
    )
    .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use plangrep_core::webhook::sign;

    use super::*;

    fn headers(id: &str, ts: i64, sig: &str) -> impl Fn(&str) -> Option<String> {
        let (id, ts, sig) = (id.to_owned(), ts.to_string(), sig.to_owned());
        move |name| match name {
            "webhook-id" => Some(id.clone()),
            "webhook-timestamp" => Some(ts.clone()),
            "webhook-signature" => Some(sig.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_signed_delivery_verifies_and_shows_its_job() {
        let secret = WebhookSecret::generate();
        let body = br#"{"data":{"job":{"id":"job_1","status":"processing"},"sequence":5}}"#;
        let signature = sign(&secret, "evt_1", 1_000, body);
        let seen = inspect(
            &secret,
            headers("evt_1", 1_000, &signature),
            body,
            Some(1_010),
            300,
        );
        assert_eq!(seen.verdict, Ok(()));
        assert_eq!(seen.job_id.as_deref(), Some("job_1"));
        assert_eq!(seen.sequence, Some(5));
        assert!(seen.line().contains("signature valid"));
    }

    #[test]
    fn a_tampered_body_old_timestamp_or_missing_header_is_invalid() {
        let secret = WebhookSecret::generate();
        let signature = sign(&secret, "evt_1", 1_000, b"{}");
        let tampered = inspect(
            &secret,
            headers("evt_1", 1_000, &signature),
            b"{ }",
            None,
            300,
        );
        assert!(tampered.verdict.is_err());
        let old = inspect(
            &secret,
            headers("evt_1", 1_000, &signature),
            b"{}",
            Some(9_999),
            300,
        );
        assert!(old.verdict.is_err());
        let unchecked_age = inspect(
            &secret,
            headers("evt_1", 1_000, &signature),
            b"{}",
            None,
            300,
        );
        assert_eq!(unchecked_age.verdict, Ok(()));
        let missing = inspect(&secret, |_| None, b"{}", None, 300);
        assert_eq!(missing.verdict, Err("no webhook-id header".to_owned()));
    }
}
