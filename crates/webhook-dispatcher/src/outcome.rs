//! How an attempt's HTTP result is judged (SPEC §5), as pure functions: 2xx succeeds,
//! 410 stops the job's webhook, 429/503 may ask for a later retry with `Retry-After`,
//! everything else (3xx included: redirects are never followed) retries.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver took it.
    Delivered,
    /// 410 Gone: stop sending this job's webhooks.
    Gone,
    /// Try again, not before `retry_after` if the receiver asked for it.
    Retry { retry_after: Option<Duration> },
}

/// Judges an HTTP status (and its `Retry-After` header, if any) received at `now`.
pub fn judge(status: u16, retry_after: Option<&str>, now: DateTime<Utc>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        429 | 503 => Verdict::Retry {
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        _ => Verdict::Retry { retry_after: None },
    }
}

/// Parses `Retry-After` as delay-seconds or an HTTP date; past dates mean "now".
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn statuses_are_judged_per_the_contract() {
        assert_eq!(judge(200, None, now()), Verdict::Delivered);
        assert_eq!(judge(204, None, now()), Verdict::Delivered);
        assert_eq!(judge(410, None, now()), Verdict::Gone);
        for retried in [301, 302, 307, 400, 404, 500, 502] {
            assert_eq!(
                judge(retried, Some("60"), now()),
                Verdict::Retry { retry_after: None },
                "{retried}"
            );
        }
        assert_eq!(
            judge(429, Some("60"), now()),
            Verdict::Retry {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(
            judge(503, Some("Sat, 28 Nov 2026 10:02:00 GMT"), now()),
            Verdict::Retry {
                retry_after: Some(Duration::from_secs(120))
            }
        );
    }

    #[test]
    fn odd_retry_after_values_are_ignored_or_clamped() {
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 10:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }
}
