//! Intake: turns a `JobStatusChanged` message into a durable delivery row.
//!
//! The body is rendered here, once, from the job snapshot the event carries; every
//! attempt signs and sends exactly these bytes. The rows of the messages in flight are
//! inserted together ([`plangrep_service::batch`]): one statement and one commit for a
//! whole prefetch window under load. The message is acked (by the consumer) only after its row
//! is committed, and a redelivered message for a recorded event inserts nothing.
//!
//! A delivery that is due at once and finds a free worker and destination slot is
//! leased by the same statement and its attempt started from here (ADR 0017): no claim
//! round trip and no wake-up stand between an event and its webhook while the
//! dispatcher has room. Under contention the claim loop decides, fairly across
//! organizations.

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
use tokio_util::task::TaskTracker;

use crate::scheduler::Scheduler;
use crate::slots::destination_key;
use crate::store;
use crate::store::deliveries::{self, IntakeLease, NewDelivery, Recorded};
use crate::store::leases::Claimed;
use plangrep_service::batch::{Batcher, MAX_BATCH, WRITERS};

/// The consumer side of the dispatcher.
#[derive(Clone)]
pub struct Intake {
    /// Inserts the deliveries of the messages in flight together.
    writer: Batcher<NewDelivery, Intaken>,
    /// Wakes the scheduler's workers when a delivery becomes due.
    wake: Arc<Notify>,
}

/// What intake did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intaken {
    /// Recorded before: nothing to do.
    Already,
    /// Recorded, for the claim loop.
    Stored,
    /// Recorded, and its attempt started.
    Started,
}

/// Where intake hands deliveries it leased: the scheduler's workers, and the tasks that
/// shutdown waits for.
#[derive(Clone)]
pub struct Handoff {
    pub scheduler: Scheduler,
    pub tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
struct Malformed(String);

impl Intake {
    /// Intake over `pool`, waking `wake` on new deliveries; with a `handoff`, a delivery
    /// due at once goes straight to a free worker.
    pub fn new(pool: PgPool, wake: Arc<Notify>, handoff: Option<Handoff>) -> Self {
        let writer = Batcher::spawn(WRITERS, MAX_BATCH, move |batch: Arc<[NewDelivery]>| {
            let pool = pool.clone();
            let handoff = handoff.clone();
            async move { record(&pool, &batch, handoff.as_ref()).await }
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
        let new = NewDelivery {
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
        let intaken = self
            .writer
            .submit(new)
            .await
            .map_err(|e| HandleError::Retry(Box::new(e)))?;
        if intaken != Intaken::Already {
            tracing::debug!(%event_id, %job_id, sequence, "delivery recorded");
        }
        if intaken == Intaken::Stored {
            self.wake.notify_waiters();
        }
        Ok(())
    }
}

/// Records `batch` with one statement. With a `handoff`, each delivery that has a free
/// worker and destination slot is offered a lease, and its target is fetched meanwhile;
/// those the statement leased (due now) start their attempts, and the reservations of
/// the rest are given back.
async fn record(
    pool: &PgPool,
    batch: &[NewDelivery],
    handoff: Option<&Handoff>,
) -> Result<Vec<Intaken>, sqlx::Error> {
    let now = store::now();
    let mut reserved: Vec<_> = batch
        .iter()
        .map(|new| handoff.and_then(|h| h.scheduler.reserve(&new.destination)))
        .collect();
    // The targets of the deliveries that may be leased are fetched meanwhile.
    let ahead = handoff.and_then(|h| {
        let job_ids: Vec<String> = batch
            .iter()
            .zip(&reserved)
            .filter(|(_, reserved)| reserved.is_some())
            .map(|(new, _)| new.job_id.clone())
            .collect();
        (!job_ids.is_empty()).then(|| h.scheduler.fetch_ahead(job_ids))
    });
    let lease = handoff.map(|h| IntakeLease {
        owner: h.scheduler.owner.clone(),
        expires_at: now
            + chrono::Duration::from_std(h.scheduler.lease).unwrap_or(chrono::Duration::MAX),
        tokens: reserved
            .iter()
            .map(|r| r.as_ref().map(|_| ulid::Ulid::generate().to_string()))
            .collect(),
    });
    let recorded = deliveries::insert_new(pool, batch, lease.as_ref(), now).await?;
    let mut ready = Vec::new();
    let mut unseen_predecessors = Vec::new();
    let intaken = recorded
        .into_iter()
        .zip(&mut reserved)
        .map(|(recorded, reserved)| match (recorded, reserved.take()) {
            (Recorded::Already, _) => Intaken::Already,
            (Recorded::Leased(delivery), Some(exchange)) => {
                let claimed = Claimed {
                    delivery: *delivery,
                    due_at: now,
                    job_stopped: false,
                };
                ready.push((claimed, exchange));
                Intaken::Started
            }
            (Recorded::WaitingForUnseen(id), _) => {
                unseen_predecessors.push(id);
                Intaken::Stored
            }
            // Not due now (or offered no lease): its reservation, if any, is dropped here.
            (Recorded::Stored | Recorded::Leased(_), _) => Intaken::Stored,
        })
        .collect();
    if let Some(handoff) = handoff {
        handoff.scheduler.start(ready, ahead, &handoff.tasks);
    }
    if !unseen_predecessors.is_empty() {
        // The rows are committed: failing them now would not help (a retried message
        // finds its row and writes nothing); housekeeping's next pass releases them.
        if let Err(error) =
            deliveries::release_after_unseen_predecessors(pool, &unseen_predecessors, now).await
        {
            tracing::warn!(
                %error,
                "waiting deliveries not rechecked: housekeeping releases them on its next pass"
            );
        }
    }
    Ok(intaken)
}
