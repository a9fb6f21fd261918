//! Intake: turns a `JobStatusChanged` message into a durable delivery row.
//!
//! The body is rendered here, once, from the job snapshot the event carries; every
//! attempt signs and sends exactly these bytes. The rows of the messages in flight are
//! inserted together ([`crate::batch`]): one statement and one commit for a whole
//! prefetch window under load. The message is acked (by the consumer) only after its row
//! is committed, and a redelivered message for a recorded event inserts nothing.

use std::sync::Arc;

use plangrep_core::api::{WebhookData, WebhookPayload};
use plangrep_core::id::DeliveryId;
use plangrep_messaging::{HandleError, Incoming};
use plangrep_proto::events::JobStatusChanged;
use plangrep_proto::time::from_timestamp;
use plangrep_proto::views::job_view;
use prost::Message;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::batch::{Batcher, MAX_BATCH, WRITERS};
use crate::slots::destination_key;
use crate::store::{self, deliveries};

/// The consumer side of the dispatcher.
#[derive(Clone)]
pub struct Intake {
    /// Inserts the deliveries of the messages in flight together.
    writer: Batcher<deliveries::NewDelivery, bool>,
    /// Wakes the scheduler's workers when a delivery becomes due.
    wake: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
struct Malformed(String);

impl Intake {
    /// Intake over `pool`, waking `wake` on new deliveries.
    pub fn new(pool: PgPool, wake: Arc<Notify>) -> Self {
        let writer = Batcher::spawn(WRITERS, MAX_BATCH, move |batch: Arc<[_]>| {
            let pool = pool.clone();
            async move { deliveries::insert_new(&pool, &batch, store::now()).await }
        });
        Self { writer, wake }
    }

    /// Records the delivery for one event message.
    pub async fn handle(&self, message: Incoming) -> Result<(), HandleError> {
        let dead_letter = |reason: String| HandleError::DeadLetter(Box::new(Malformed(reason)));
        let event = JobStatusChanged::decode(message.payload.as_slice())
            .map_err(|e| dead_letter(e.to_string()))?;
        let job = event
            .job
            .as_ref()
            .ok_or_else(|| dead_letter("no job".into()))?;
        let Some(webhook_url) = job.webhook_url.as_deref() else {
            return Ok(());
        };
        let occurred_at = event
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| dead_letter("no occurredAt".into()))?;
        let payload = WebhookPayload {
            kind: "job.status_changed".to_owned(),
            timestamp: occurred_at,
            data: WebhookData {
                job: job_view(job).map_err(|e| dead_letter(e.to_string()))?,
                previous_status: event.previous_status.clone(),
                sequence: event.sequence,
            },
        };
        let new = deliveries::NewDelivery {
            id: DeliveryId::generate().to_string(),
            event_id: event.event_id.clone(),
            org_id: job.org_id.clone(),
            job_id: job.id.clone(),
            sequence: i32::try_from(event.sequence).map_err(|e| dead_letter(e.to_string()))?,
            job_status: event.status.clone(),
            payload: serde_json::to_vec(&payload).map_err(|e| dead_letter(e.to_string()))?,
            event_occurred_at: occurred_at,
            traceparent: plangrep_telemetry::trace::next_hop(),
            destination: destination_key(webhook_url),
        };
        let (event_id, job_id, sequence) = (event.event_id, job.id.clone(), new.sequence);
        let inserted = self
            .writer
            .submit(new)
            .await
            .map_err(|e| HandleError::Retry(Box::new(e)))?;
        if inserted {
            tracing::debug!(%event_id, %job_id, sequence, "delivery recorded");
            self.wake.notify_waiters();
        }
        Ok(())
    }
}
