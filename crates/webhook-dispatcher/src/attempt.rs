//! One attempt of a leased delivery: check the job's webhook is not stopped, take its
//! target (fetched for its claim or at intake, [`crate::target`]), send, judge, and
//! record the attempt and the delivery's next state under the lease, in one short
//! transaction after the HTTP exchange, shared with the outcomes of concurrent attempts
//! ([`plangrep_service::batch`]).
//!
//! A receiver that refuses the connection or does not answer in time defers its
//! destination's other due deliveries, by the first retry interval and then longer after
//! each failed wave, until it answers again (ADR 0015).
//!
//! Target trouble is judged here (ADR 0012):
//! - the orchestrator unreachable: not an attempt; the delivery is handed back, due again
//!   after the first retry interval;
//! - a broken target (a secret that does not open, an internal error): a failed attempt
//!   (`webhook_target_unusable`, nothing sent), counted against the retry window like any
//!   other, so the delivery ends `failed` and the job's later events follow;
//! - no target (NOT_FOUND): a failed attempt (`webhook_target_not_found`) retried on the
//!   schedule; only after `not_found_attempts` such answers in the window is the job's
//!   webhook stopped, so one wrong answer cannot silence a job for good.

use std::time::Duration;

use chrono::{DateTime, Utc};
use plangrep_core::retry::NextAttempt;
use plangrep_telemetry::trace::TraceContext;

use crate::outcome::Verdict;
use crate::scheduler::{Exchange, ScheduleError, Scheduler};
use crate::sender::AttemptReport;
use crate::store::attempts::{self, AttemptRow};
use crate::store::deliveries::{self, DeliveryRow, state};
use crate::store::leases::{self, Claimed, Recording};
use crate::store::{self};
use crate::target::{Target, TargetError};

/// The attempt error of a job whose target is unusable.
pub const TARGET_UNUSABLE: &str = "webhook_target_unusable";
/// The attempt error of a job the orchestrator knows no webhook target for.
pub const TARGET_NOT_FOUND: &str = "webhook_target_not_found";

fn not_sent(verdict: Verdict, error: &str) -> AttemptReport {
    AttemptReport {
        verdict,
        status_code: None,
        error: Some(error.to_owned()),
        response_snippet: None,
        duration: Duration::ZERO,
    }
}

impl Scheduler {
    /// Attempts the claimed delivery and records the outcome under its lease.
    pub(crate) async fn attempt(
        &self,
        claimed: Claimed,
        target: Result<Target, TargetError>,
        exchange: Exchange,
    ) -> Result<(), ScheduleError> {
        let token = claimed.token().to_owned();
        let delivery = &claimed.delivery;
        let started_at = store::now();
        if !delivery.manual_requested && claimed.job_stopped {
            // The receiver said 410 for this job while this event was being recorded:
            // honour it without sending. (A manual redelivery revived the webhook.)
            let mut tx = self.pool.begin().await?;
            deliveries::stop_job(&mut tx, &delivery.job_id, started_at).await?;
            tx.commit().await?;
            return Ok(());
        }
        let number = delivery.attempt_count + 1;
        let trigger = match (delivery.manual_requested, delivery.attempt_count) {
            (true, _) => "manual",
            (false, 0) => "initial",
            (false, _) => "retry",
        };
        let report = match target {
            Ok(target) => {
                self.sender
                    .send(
                        &target.url,
                        &delivery.event_id,
                        &delivery.payload,
                        &target.signing_secrets(chrono::Utc::now()),
                    )
                    .await
            }
            Err(TargetError::Missing) => {
                let seen = attempts::count_with_error(
                    &self.pool,
                    &delivery.id,
                    delivery.window_start_attempt,
                    TARGET_NOT_FOUND,
                )
                .await?;
                let confirmed = seen + 1 >= i64::from(self.not_found_attempts);
                tracing::warn!(delivery_id = %delivery.id, job_id = %delivery.job_id, answers = seen + 1, confirmed, "the orchestrator knows no webhook target for the job");
                let verdict = if confirmed {
                    Verdict::Gone
                } else {
                    Verdict::Retry { retry_after: None }
                };
                not_sent(verdict, TARGET_NOT_FOUND)
            }
            Err(TargetError::Unavailable(reason)) => {
                // Not an attempt: nothing was sent, and the orchestrator is down for every
                // job alike. Due again after the first retry interval.
                let due_at = store::now()
                    + chrono::Duration::from_std(self.retry.initial_interval).unwrap_or_default();
                leases::release(&self.pool, &delivery.id, &token, due_at).await?;
                return Err(ScheduleError::TargetUnavailable(reason));
            }
            Err(TargetError::Broken(reason)) => {
                // Only this job is affected. Nothing is sent unsigned; the attempt counts
                // against the retry window so the delivery (and the job's later events
                // behind it) ends `failed` instead of waiting forever.
                tracing::error!(delivery_id = %delivery.id, job_id = %delivery.job_id, %reason, "webhook target unusable");
                not_sent(Verdict::Retry { retry_after: None }, TARGET_UNUSABLE)
            }
        };
        let unreachable = report.status_code.is_none()
            && matches!(report.error.as_deref(), Some("connect" | "timeout"));
        if !unreachable {
            drop(exchange);
        }
        // (An unreachable destination's slot is held until its deliveries are deferred
        // below, so no other attempt to it starts meanwhile.)
        self.record(delivery, &token, number, trigger, started_at, &report)
            .await?;
        let destination = &delivery.destination;
        if report.status_code.is_some() {
            self.destinations.reached(destination);
        } else if unreachable {
            // The receiver is down or hangs: its other due deliveries would fail the same
            // way, so they wait, longer after each failed wave (a thousand jobs with a
            // dead receiver cost a few attempts per wave, not a thousand).
            let until = self.destinations.defer_unreachable(
                destination,
                store::now(),
                self.retry.initial_interval,
                self.retry.multiplier,
            );
            // Only the rows due before `until` move: after the wave's first failure, just
            // the deliveries recorded since.
            let deferred = leases::defer_destination(&self.pool, destination, until).await?;
            if deferred > 0 {
                tracing::info!(%destination, deferred, %until, "unreachable destination: its due deliveries wait");
            }
        }
        Ok(())
    }

    /// Records attempt `number` and the delivery's next state, if the lease still holds.
    async fn record(
        &self,
        delivery: &DeliveryRow,
        token: &str,
        number: i32,
        trigger: &str,
        started_at: DateTime<Utc>,
        report: &AttemptReport,
    ) -> Result<(), ScheduleError> {
        let window_started_at = delivery.window_started_at.unwrap_or(started_at);
        let finished_at = store::now();
        let (next_state, next_attempt_at) = self.next_state(
            delivery,
            number,
            window_started_at,
            finished_at,
            report.verdict,
        );
        let recording = Recording {
            token: token.to_owned(),
            state: next_state,
            window_started_at,
            next_attempt_at,
            now: finished_at,
            attempt: AttemptRow {
                delivery_id: delivery.id.clone(),
                number,
                trigger: trigger.to_owned(),
                started_at,
                duration_ms: i32::try_from(report.duration.as_millis()).unwrap_or(i32::MAX),
                status_code: report.status_code.map(i32::from),
                error: report.error.clone(),
                response_snippet: report.response_snippet.clone(),
                worker: Some(self.owner.clone()),
            },
        };
        let recorded = if next_state == state::STOPPED {
            // A 410: the outcome and the stop of the job's webhook in one transaction.
            let mut tx = self.pool.begin().await?;
            let recorded = leases::record(&mut tx, std::slice::from_ref(&recording))
                .await?
                .contains(&true);
            if recorded {
                deliveries::stop_job(&mut tx, &delivery.job_id, finished_at).await?;
            }
            tx.commit().await?;
            recorded
        } else {
            // Written together with the outcomes of concurrent attempts.
            self.recorder.submit(recording).await?
        };
        if !recorded {
            tracing::warn!(
                delivery_id = %delivery.id,
                attempt = number,
                status_code = ?report.status_code,
                "lease lost during the attempt (expired and re-claimed, or the delivery was \
                 redelivered or stopped meanwhile): its outcome is discarded"
            );
            return Ok(());
        }

        self.metrics.record_attempt(next_state);
        if let (state::PENDING, Some(due)) = (next_state, next_attempt_at) {
            self.wake_when_due(due, finished_at);
        }
        if next_state == state::SUCCEEDED && trigger != "manual" {
            let latency = (finished_at - delivery.event_occurred_at)
                .to_std()
                .unwrap_or_default();
            self.metrics.record_first_success(latency);
        }
        let trace_id = delivery
            .traceparent
            .as_deref()
            .and_then(TraceContext::parse)
            .map(|context| context.trace_id());
        tracing::info!(
            trace_id = trace_id.as_deref().unwrap_or_default(),
            delivery_id = %delivery.id,
            job_id = %delivery.job_id,
            sequence = delivery.sequence,
            attempt = number,
            status_code = ?report.status_code,
            error = ?report.error,
            state = next_state,
            "webhook attempt recorded"
        );
        Ok(())
    }

    /// Wakes the claim loop when a retry due before its next poll comes due (nothing
    /// else may happen meanwhile); a later one is found by the poll.
    fn wake_when_due(&self, due: DateTime<Utc>, now: DateTime<Utc>) {
        let Ok(wait) = (due - now).to_std() else {
            return; // Due already: the attempt's end wakes the loop.
        };
        if wait >= self.poll_interval {
            return;
        }
        let wake = self.wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            wake.notify_waiters();
        });
    }

    /// The delivery's state after attempt `number` with `verdict`.
    fn next_state(
        &self,
        delivery: &DeliveryRow,
        number: i32,
        window_started_at: DateTime<Utc>,
        now: DateTime<Utc>,
        verdict: Verdict,
    ) -> (&'static str, Option<DateTime<Utc>>) {
        match verdict {
            Verdict::Delivered => (state::SUCCEEDED, None),
            Verdict::Gone => (state::STOPPED, None),
            Verdict::Retry { retry_after } => {
                let elapsed = (now - window_started_at).to_std().unwrap_or_default();
                // Attempts within the current window (a manual redelivery opens a new one).
                let attempts_made =
                    u32::try_from(number - delivery.window_start_attempt).unwrap_or(u32::MAX);
                match self
                    .retry
                    .next_attempt_random(attempts_made, elapsed, retry_after)
                {
                    NextAttempt::After(delay) => {
                        let delay =
                            chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                        (state::PENDING, Some(now + delay))
                    }
                    NextAttempt::GiveUp => {
                        tracing::warn!(delivery_id = %delivery.id, attempts = number, "delivery failed permanently");
                        (state::FAILED, None)
                    }
                }
            }
        }
    }
}
