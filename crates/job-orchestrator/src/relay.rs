//! The outbox relay: publishes committed outbox rows to RabbitMQ, in order, with
//! publisher confirms; their marks as published commit once the broker confirmed them.
//!
//! One relay is active per database: it holds a session advisory lock on a dedicated
//! connection (the *leader session*); other replicas stand by and take over when that
//! session ends. Leadership is fenced, not assumed (ADR 0013): every batch is claimed
//! and marked, published, and committed in a transaction *on the leader session itself*,
//! whose claim first proves that it runs on the backend that took the lock and takes the
//! lock again for the transaction (ADR 0021). A batch is published back to back and its
//! confirms awaited together (ADR 0015). A leader whose session died (terminated backend,
//! network cut) therefore stops at its next statement, having published at most the rest
//! of one batch, and goes back to standby, while a new leader can only claim once the
//! old session, and with it the old batch's transaction, is gone.
//! It wakes on `NOTIFY plangrep_outbox` and polls as a backstop.
//! A crash between publish and mark republishes the row: delivery is at-least-once and
//! consumers dedupe by `message_id`.

use std::time::Duration;

use plangrep_messaging::StatusEvent;
use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_messaging::{EventsKey, OutgoingMessage, Publisher, Topology};
use plangrep_telemetry::trace::TraceContext;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::OrchestratorMetrics;
use crate::store::outbox::{self, Fence};

/// Arbitrary but fixed: identifies the relay's advisory lock within the database.
pub const RELAY_LOCK_KEY: i64 = 0x706c_616e_6772_6570; // "plangrep"
const BATCH_SIZE: i64 = 100;
const RETRY_MIN: Duration = Duration::from_millis(100);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where the relay reads from and publishes to.
#[derive(Clone)]
pub struct Relay {
    /// The orchestrator's pool (the NOTIFY listener; batches run on the leader session).
    pub pool: PgPool,
    /// Options for the dedicated lock-holding connection.
    pub lock_options: PgConnectOptions,
    /// The broker.
    pub amqp_url: String,
    /// Exchange names.
    pub topology: Topology,
    /// Backstop poll interval.
    pub poll_interval: Duration,
    /// Leadership and published transitions are recorded here.
    pub metrics: OrchestratorMetrics,
    /// Tags every published event so consumers can authenticate it (ADR 0010).
    pub events_key: EventsKey,
}

/// The leader session's options: `options`, with every statement planned for the outbox
/// as it is when it runs. The claim runs many times a second on this one session; a
/// generic plan cached while the outbox was small (a new deployment, a relay that took
/// over before the first analyze) scans the whole table, and kept doing so for every
/// claimed row as the table grew, until the next analyze (ADR 0022).
pub fn leader_session(options: &PgConnectOptions) -> PgConnectOptions {
    options
        .clone()
        .options([("plan_cache_mode", "force_custom_plan")])
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] plangrep_messaging::PublishError),
    #[error("the broker did not confirm a publish in time")]
    ConfirmTimeout,
    #[error("the leader session no longer holds the relay lock")]
    LostLeadership,
}

impl Relay {
    /// Runs until `shutdown`, surviving database and broker outages.
    pub async fn relay_loop(self, shutdown: CancellationToken) {
        let mut delay = RETRY_MIN;
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => delay = RETRY_MIN,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "outbox relay interrupted");
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Waits for the lock on a dedicated session, then relays while holding it.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut lock = PgConnection::connect_with(&leader_session(&self.lock_options)).await?;
        // Another replica relays while the lock is taken: stand by on this same session and
        // try again every poll interval.
        let fence = loop {
            let (leader, leader_pid): (bool, i32) =
                sqlx::query_as("SELECT pg_try_advisory_lock($1), pg_backend_pid()")
                    .bind(RELAY_LOCK_KEY)
                    .fetch_one(&mut lock)
                    .await?;
            if leader {
                break Fence {
                    leader_pid,
                    lock_key: RELAY_LOCK_KEY,
                };
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = lock.close().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        };
        tracing::info!("outbox relay is active");
        self.metrics.set_relay_leader(true);
        let outcome = self.relay_while_leading(&mut lock, fence, shutdown).await;
        self.metrics.set_relay_leader(false);
        if let Err(error) = &outcome {
            tracing::warn!(%error, "outbox relay stopped leading; standing by");
        }
        // Closing the session releases the advisory lock.
        let _ = lock.close().await;
        outcome
    }

    async fn relay_while_leading(
        &self,
        lock: &mut PgConnection,
        fence: Fence,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("plangrep_outbox").await?;
        let connection = plangrep_messaging::connect(&self.amqp_url).await?;
        let publisher = plangrep_messaging::bounded(async {
            let publisher =
                Publisher::open(&connection, &self.topology, self.events_key.clone()).await?;
            // Declare every consumer's queue before publishing, so events published before
            // a consumer's first start wait in its queue instead of being unroutable.
            let channel = connection.create_channel().await?;
            for queue in ALL_QUEUES {
                self.topology.declare_work_queue(&channel, &queue).await?;
            }
            let _ = channel.close(200, "declared".into()).await;
            Ok(publisher)
        })
        .await?;
        self.topology
            .delete_retired_queues(&connection, &self.amqp_url)
            .await?;
        // Queues of earlier versions (declared without at-least-once dead-lettering) hand
        // what waits in them to their successors; publishing does not wait on it.
        match self
            .topology
            .migrate_unversioned_queues(&connection, &self.amqp_url, &ALL_QUEUES)
            .await
        {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "migrated messages from unversioned queues"),
            Err(error) => tracing::warn!(%error, "unversioned queues not migrated yet"),
        }
        let outcome = loop {
            if let Err(error) = self.publish_pending(lock, fence, &publisher).await {
                break Err(error);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                notification = listener.recv() => {
                    if let Err(error) = notification {
                        break Err(error.into());
                    }
                    // Every commit notifies; one pass publishes what all of them announced.
                    while listener.next_buffered().is_some() {}
                }
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        };
        let _ = plangrep_messaging::bounded(connection.close(200, "bye".into())).await;
        outcome
    }

    /// Publishes batches until one comes back short, each in a transaction on the leader
    /// session `lock` whose claim (which also marks the batch published) first proves
    /// the session still leads; the transaction commits once the broker confirmed the
    /// batch. A short batch means the outbox was empty at its snapshot: a row committed
    /// after it has notified the listener, which starts the next pass, so no empty pass
    /// is needed to find out.
    async fn publish_pending(
        &self,
        lock: &mut PgConnection,
        fence: Fence,
        publisher: &Publisher,
    ) -> Result<(), RelayError> {
        loop {
            let mut tx = lock.begin().await?;
            let batch = outbox::claim_and_mark(&mut tx, fence, BATCH_SIZE)
                .await?
                .ok_or(RelayError::LostLeadership)?;
            if batch.is_empty() {
                tx.commit().await?;
                return Ok(());
            }
            // The batch is sent back to back and its confirms awaited together: the
            // broker confirms per disk write, so waiting for each message in turn would
            // cost one write per event. A broker that blocks publishers (memory or disk
            // alarm) must not hold the batch transaction, or shutdown, forever: give up
            // and reconnect.
            tokio::time::timeout(CONFIRM_TIMEOUT, publish_batch(publisher, &batch))
                .await
                .map_err(|_| RelayError::ConfirmTimeout)??;
            tx.commit().await?;
            for row in &batch {
                self.metrics.record_transition(&row.routing_key);
            }
            tracing::debug!(count = batch.len(), "outbox batch published");
            if (batch.len() as i64) < BATCH_SIZE {
                return Ok(());
            }
        }
    }
}

/// Sends every row of `batch` in id order, then waits for all their confirms.
async fn publish_batch(
    publisher: &Publisher,
    batch: &[outbox::PendingMessage],
) -> Result<(), plangrep_messaging::PublishError> {
    let mut sent = Vec::with_capacity(batch.len());
    for row in batch {
        // The publish is a span (kind `producer`) of the trace that wrote the row, a
        // child of the span that wrote it; consumers continue from this span.
        let parent = row.traceparent.as_deref().and_then(TraceContext::parse);
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {}", row.routing_key),
            otel.kind = "producer",
            routing_key = %row.routing_key,
            event_id = %row.event_id,
        );
        plangrep_telemetry::export::continue_trace(&span, crate::startup::SERVICE, parent);
        let message = OutgoingMessage {
            message_id: row.event_id.clone(),
            routing_key: row.routing_key.clone(),
            payload: row.payload.clone(),
            traceparent: TraceContext::of(&span)
                .map(|context| context.to_string())
                .or_else(|| row.traceparent.clone()),
            // Job events must reach the dispatcher; a missing queue is an error (the row
            // stays unpublished), never a silently dropped webhook.
            mandatory: StatusEvent::parse(&row.routing_key).is_some_and(StatusEvent::is_job),
        };
        sent.push(publisher.send(&message).instrument(span).await?);
    }
    for message in sent {
        message.confirmed().await?;
    }
    Ok(())
}
