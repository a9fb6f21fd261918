//! `jobs watch` and the watch step of `run`: follows `GET /jobs/{id}/events` (the status
//! history, oldest first) and prints each new status once, until a terminal status.
//!
//! Polling is adaptive: quick right after a change, then backing off while nothing
//! happens, and never faster than the rate limit allows (`RateLimit-Remaining` at zero
//! waits for `RateLimit-Reset`; a 429's `Retry-After` is honoured by the client). A
//! spinner shows the current non-terminal status on a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::client::ApiClient;
use crate::error::CliError;
use crate::output::{self, Output};

/// The first poll interval, and the interval right after a change.
const FAST: Duration = Duration::from_millis(250);
/// The longest interval between two polls while nothing changes.
const SLOW: Duration = Duration::from_secs(5);

/// Whether `status` is terminal (SPEC §4).
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "completed" | "completed_with_errors" | "failed" | "cancelled" | "expired"
    )
}

/// Whether a job that ended in `status` counts as a failure (exit code 3).
pub fn is_unsuccessful(status: &str) -> bool {
    matches!(status, "failed" | "cancelled" | "expired")
}

/// The next poll interval: fast after a change, else growing by half up to [`SLOW`].
pub fn next_interval(current: Duration, changed: bool) -> Duration {
    if changed {
        FAST
    } else {
        (current + current / 2).min(SLOW)
    }
}

/// Follows the job until it is terminal; returns the final job object. A job that ended
/// `failed`, `cancelled` or `expired` is [`CliError::JobEnded`]. Each new event is printed
/// (a line, or a JSON object per line under `--json`) when `echo` is set.
pub async fn watch(
    client: &ApiClient,
    job_id: &str,
    out: Output,
    echo: bool,
) -> Result<Value, CliError> {
    let spinner = spinner(out, job_id);
    let mut last_sequence = 0;
    let mut interval = FAST;
    let mut hinted_credits = false;
    loop {
        let (body, limits) = client
            .get_with_limits(&format!("/jobs/{job_id}/events"))
            .await?;
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let fresh: Vec<&Value> = events
            .iter()
            .filter(|event| event["sequence"].as_u64().unwrap_or(0) > last_sequence)
            .collect();
        for event in &fresh {
            last_sequence = event["sequence"].as_u64().unwrap_or(last_sequence);
            if !echo {
                continue;
            }
            let line = if out.json {
                event.to_string()
            } else {
                output::event_line(event)
            };
            print_line(&spinner, line);
        }
        let current = events
            .last()
            .and_then(|event| event["status"].as_str())
            .unwrap_or("unknown")
            .to_owned();
        if is_terminal(&current) {
            spinner.finish_and_clear();
            let job = client.get(&format!("/jobs/{job_id}")).await?["job"].clone();
            if is_unsuccessful(&current) {
                return Err(CliError::JobEnded {
                    job: job_id.to_owned(),
                    status: current,
                    reason: output::job_error(&job),
                });
            }
            return Ok(job);
        }
        if current == "blocked_insufficient_credits" && !hinted_credits && !out.json {
            hinted_credits = true;
            print_line(
                &spinner,
                format!(
                    "     the organization needs more credits; then: plangrep jobs resume {job_id}"
                ),
            );
        }
        spinner.set_message(format!("{job_id} {current}"));
        interval = next_interval(interval, !fresh.is_empty());
        tokio::time::sleep(interval.max(limits.pause())).await;
    }
}

fn spinner(out: Output, job_id: &str) -> ProgressBar {
    let target = if out.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stdout()
    };
    let spinner = ProgressBar::with_draw_target(None, target);
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
    );
    spinner.set_message(format!("{job_id} …"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// Prints above the spinner on a terminal, plainly otherwise.
fn print_line(spinner: &ProgressBar, line: String) {
    if spinner.is_hidden() {
        println!("{line}");
    } else {
        spinner.println(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_while_quiet_and_speeds_up_on_change() {
        let mut interval = FAST;
        for _ in 0..20 {
            interval = next_interval(interval, false);
        }
        assert_eq!(interval, SLOW);
        assert_eq!(next_interval(interval, true), FAST);
        assert!(next_interval(FAST, false) > FAST);
    }

    #[test]
    fn only_failed_cancelled_and_expired_are_unsuccessful_ends() {
        for status in ["completed", "completed_with_errors"] {
            assert!(is_terminal(status) && !is_unsuccessful(status));
        }
        for status in ["failed", "cancelled", "expired"] {
            assert!(is_terminal(status) && is_unsuccessful(status));
        }
        assert!(!is_terminal("blocked_insufficient_credits"));
    }
}
