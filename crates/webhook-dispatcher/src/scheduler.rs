//! The scheduler: workers that claim due deliveries (`FOR UPDATE SKIP LOCKED`, so any
//! number of workers and replicas cooperate without double sends), attempt them, and
//! record the outcome and the next attempt time in the same transaction.
//!
//! The row lock is held for the attempt; a crash mid-attempt rolls back and the delivery
//! is tried again (at-least-once, same `webhook-id`). Shutdown is checked between
//! deliveries, never in the middle of one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plangrep_core::retry::{NextAttempt, RetryPolicy};
use plangrep_telemetry::trace::TraceContext;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::DeliveryMetrics;
use crate::outcome::Verdict;
use crate::sender::Sender;
use crate::store::attempts::{self, AttemptRow};
use crate::store::deliveries::{self, DeliveryRow, state};
use crate::store::{self};
use crate::target::{TargetCache, TargetError};

/// What the workers share.
#[derive(Clone)]
pub struct Scheduler {
    pub pool: PgPool,
    pub sender: Sender,
    pub targets: Arc<TargetCache>,
    pub retry: RetryPolicy,
    /// Notified when a delivery may have become due (new event, finished predecessor,
    /// manual redelivery).
    pub wake: Arc<Notify>,
    /// Backstop poll for scheduled retries and other replicas' changes.
    pub poll_interval: Duration,
    /// Attempt outcomes and latencies.
    pub metrics: DeliveryMetrics,
    /// How long a delivery waits for a previous event that was never recorded.
    pub missing_predecessor_grace: Duration,
}

/// Why a worker could not process a delivery now.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("webhook target unavailable: {0}")]
    TargetUnavailable(String),
}

impl Scheduler {
    /// One worker: processes due deliveries until `shutdown`.
    pub async fn worker_loop(self, shutdown: CancellationToken) {
        let mut backoff = self.poll_interval;
        while !shutdown.is_cancelled() {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_process_next().await {
                Ok(true) => {
                    backoff = self.poll_interval;
                    continue;
                }
                Ok(false) => backoff = self.poll_interval,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "delivery worker failed");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut notified => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Claims and attempts one due delivery. `Ok(false)` when none is due.
    pub async fn try_process_next(&self) -> Result<bool, ScheduleError> {
        let mut tx = self.pool.begin().await?;
        let Some(delivery) =
            deliveries::claim_due(&mut tx, store::now(), self.missing_predecessor_grace).await?
        else {
            tx.commit().await?;
            return Ok(false);
        };
        // The attempt is a span of the trace that caused the event, a child of the span
        // that recorded the delivery (the message it came in).
        let span = tracing::info_span!(
            "attempt",
            otel.name = "webhook attempt",
            otel.kind = "client",
            delivery_id = %delivery.id,
            job_id = %delivery.job_id,
            sequence = delivery.sequence,
        );
        plangrep_telemetry::export::continue_trace(
            &span,
            crate::startup::SERVICE,
            delivery
                .traceparent
                .as_deref()
                .and_then(TraceContext::parse),
        );
        self.attempt(tx, delivery).instrument(span).await
    }

    /// Attempts the claimed `delivery` and records the outcome in `tx` (which holds its
    /// row lock).
    async fn attempt(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        delivery: DeliveryRow,
    ) -> Result<bool, ScheduleError> {
        let started_at = store::now();
        if !delivery.manual_requested && deliveries::job_stopped(&mut tx, &delivery.job_id).await? {
            // The receiver said 410 for this job while this event was being recorded:
            // honour it without sending. (A manual redelivery revived the webhook.)
            deliveries::stop_job(&mut tx, &delivery.job_id, started_at).await?;
            tx.commit().await?;
            return Ok(true);
        }
        let number = delivery.attempt_count + 1;
        let trigger = match (delivery.manual_requested, delivery.attempt_count) {
            (true, _) => "manual",
            (false, 0) => "initial",
            (false, _) => "retry",
        };
        let report = match self.targets.get(&delivery.job_id).await {
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
            Err(TargetError::Missing) => crate::sender::AttemptReport {
                verdict: Verdict::Gone,
                status_code: None,
                error: Some("no_webhook_target".to_owned()),
                response_snippet: None,
                duration: Duration::ZERO,
            },
            Err(TargetError::Unavailable(reason)) => {
                // Not an attempt: nothing was sent. Roll back and let the worker back off
                // (the orchestrator is down for every job alike).
                tx.rollback().await?;
                return Err(ScheduleError::TargetUnavailable(reason));
            }
            Err(TargetError::Broken(reason)) => {
                // Only this job is affected: postpone this delivery (not an attempt) so it
                // does not stand at the head of the queue in front of everyone else.
                let retry_at = started_at
                    + chrono::Duration::from_std(
                        self.retry.max_interval.min(Duration::from_secs(300)),
                    )
                    .unwrap_or_default();
                deliveries::defer(&mut tx, &delivery.id, retry_at).await?;
                tx.commit().await?;
                tracing::error!(delivery_id = %delivery.id, job_id = %delivery.job_id, %reason, "webhook target unusable; delivery postponed");
                return Ok(true);
            }
        };

        let window_started_at = delivery.window_started_at.unwrap_or(started_at);
        let finished_at = store::now();
        let (next_state, next_attempt_at) = self.next_state(
            &delivery,
            number,
            window_started_at,
            finished_at,
            report.verdict,
        );
        attempts::insert(
            &mut tx,
            &AttemptRow {
                delivery_id: delivery.id.clone(),
                number,
                trigger: trigger.to_owned(),
                started_at,
                duration_ms: i32::try_from(report.duration.as_millis()).unwrap_or(i32::MAX),
                status_code: report.status_code.map(i32::from),
                error: report.error.clone(),
                response_snippet: report.response_snippet.clone(),
            },
        )
        .await?;
        deliveries::record_outcome(
            &mut tx,
            &delivery.id,
            next_state,
            number,
            window_started_at,
            next_attempt_at,
            finished_at,
        )
        .await?;
        if next_state == state::STOPPED {
            deliveries::stop_job(&mut tx, &delivery.job_id, finished_at).await?;
        } else if next_attempt_at.is_none() {
            deliveries::release_successor(
                &mut tx,
                &delivery.job_id,
                delivery.sequence,
                finished_at,
            )
            .await?;
        }
        tx.commit().await?;

        self.metrics.record_attempt(next_state);
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
        if next_attempt_at.is_none() {
            // The job's next event may be eligible now.
            self.wake.notify_waiters();
        }
        Ok(true)
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
