//! A supervised consumer: connects, declares its queue, consumes with manual acks and a
//! bounded number of messages in flight, reconnects with backoff when the broker goes
//! away, and on shutdown stops taking messages and lets in-flight ones finish.
//!
//! Ack follows durable state: a message is acked only after its handler returned `Ok`
//! (the handler commits before returning). Handler failures are classified
//! ([`HandleError`]): `Retry` is retried in place with backoff a bounded number of times,
//! then handed back to the broker, whose delivery limit dead-letters it eventually;
//! `DeadLetter` goes to the dead-letter queue at once; `Ignore` is acked and logged. No
//! message is retried forever, and a poison message never stops the others. The
//! settlements go out through the channel's acknowledgement window ([`crate::acks`]),
//! which acknowledges a run of finished messages with one frame.
//!
//! Messages are authenticated first (ADR 0010): one without a valid events-key tag (a
//! forgery by whoever could publish to the exchange) never reaches the handler; it is
//! dead-lettered at once, kept for inspection, and logged.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use plangrep_core::event_auth::EventsKey;
use plangrep_telemetry::trace::{TRACEPARENT, TraceContext};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::{Acks, Settlement};
use crate::{Topology, WorkQueue};

/// A received message, reduced to what handlers need.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The AMQP `message_id` (the event id).
    pub message_id: Option<String>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
    /// The W3C `traceparent` header, when the publisher set one.
    pub traceparent: Option<String>,
}

/// How a handler failed, which decides what happens to the message.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A dependency is down or the work raced another worker: retried in place with
    /// backoff up to [`IN_PLACE_ATTEMPTS`] times, then requeued (counting towards the
    /// queue's delivery limit, after which the broker dead-letters it).
    #[error("retryable failure: {0}")]
    Retry(Box<dyn std::error::Error + Send + Sync>),
    /// The message can never be handled (undecodable, names nothing): dead-lettered now.
    #[error("unprocessable message: {0}")]
    DeadLetter(Box<dyn std::error::Error + Send + Sync>),
    /// Nothing to do, ever (e.g. the event is stale): acked and logged.
    #[error("ignored: {0}")]
    Ignore(Box<dyn std::error::Error + Send + Sync>),
}

/// How often a retryable failure is retried in place before the message is handed back
/// to the broker (about 25 s of backoff in all).
pub const IN_PLACE_ATTEMPTS: u32 = 8;

/// Whether a consumer currently holds a live broker connection (for `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth(Arc<AtomicBool>);

impl BrokerHealth {
    /// Whether the broker connection is up.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Records the connection state.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
}

/// What a consumer loop needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The broker URL.
    pub amqp_url: String,
    /// Names of the exchange and queues.
    pub topology: Topology,
    /// The queue to consume.
    pub queue: WorkQueue,
    /// Messages handled at once (also the AMQP prefetch).
    pub concurrency: u16,
    /// A tag that names this consumer in the broker's management UI.
    pub consumer_tag: String,
    /// The consuming service: its export takes the message spans.
    pub service: &'static str,
    /// Verifies each message's tag; untagged or mis-tagged messages are dead-lettered.
    pub events_key: EventsKey,
}

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Consumes `config.queue` until `shutdown` is cancelled, calling `handler` for each
/// message. Never returns early: broker failures are retried with capped backoff.
pub async fn consume_loop<H, Fut>(
    config: ConsumerConfig,
    health: BrokerHealth,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Incoming) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let mut delay = RECONNECT_MIN;
    while !shutdown.is_cancelled() {
        match consume_once(&config, &health, handler.clone(), &shutdown).await {
            Ok(()) => delay = RECONNECT_MIN,
            Err(error) => {
                tracing::warn!(queue = config.queue.name, %error, retry_in = ?delay, "consumer lost the broker");
            }
        }
        health.set(false);
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One connection's lifetime: returns when the stream ends, fails, or on shutdown (after
/// draining in-flight handlers).
async fn consume_once<H, Fut>(
    config: &ConsumerConfig,
    health: &BrokerHealth,
    handler: H,
    shutdown: &CancellationToken,
) -> Result<(), lapin::Error>
where
    H: Fn(Incoming) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let connection = crate::connect(&config.amqp_url).await?;
    let (channel, mut consumer) = crate::bounded(async {
        let channel = connection.create_channel().await?;
        config
            .topology
            .declare_work_queue(&channel, &config.queue)
            .await?;
        channel
            .basic_qos(config.concurrency, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                config.topology.queue(&config.queue).into(),
                config.consumer_tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    })
    .await?;
    health.set(true);
    tracing::info!(queue = %config.topology.queue(&config.queue), "consuming");

    let in_flight = Arc::new(Semaphore::new(usize::from(config.concurrency.max(1))));
    let tracker = TaskTracker::new();
    let acks = Arc::new(Acks::default());
    let closing = CancellationToken::new();
    let settling = tokio::spawn(acks.clone().run(closing.clone()));
    // Should this future be dropped mid-way, the settling task still ends.
    let _closing_on_drop = closing.clone().drop_guard();
    let outcome = loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            permit = in_flight.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => break Err(error),
                None => break Ok(()),
            },
        };
        // Known to the window before anything may be acknowledged past it.
        acks.receive(delivery.delivery_tag);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let service = config.service;
        let events_key = config.events_key.clone();
        let acks = acks.clone();
        tracker.spawn(async move {
            let (tag, acker) = (delivery.delivery_tag, delivery.acker.clone());
            let settlement = if is_authentic(&delivery, &events_key) {
                handle_delivery(delivery, service, handler, shutdown).await
            } else {
                forgery(&delivery)
            };
            acks.finish(tag, settlement, acker);
            drop(permit);
        });
    };
    // Let in-flight messages finish and their settlements go out, then close;
    // prefetched but unstarted messages return to the queue when the channel closes.
    tracker.close();
    tracker.wait().await;
    closing.cancel();
    let _ = settling.await;
    let _ = crate::bounded(async {
        let _ = channel.close(200, "bye".into()).await;
        connection.close(200, "bye".into()).await
    })
    .await;
    outcome
}

/// Whether the delivery carries a valid tag of the events key over its message id,
/// routing key and body.
fn is_authentic(delivery: &Delivery, events_key: &EventsKey) -> bool {
    let tag = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(crate::EVENT_TAG_HEADER))
        .and_then(|value| match value {
            lapin::types::AMQPValue::LongString(text) => Some(text.to_string()),
            _ => None,
        });
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    tag.is_some_and(|tag| {
        events_key.verify(
            &message_id,
            delivery.routing_key.as_str(),
            &delivery.data,
            &tag,
        )
    })
}

/// An unauthenticated message goes to the dead-letter queue: it is never handled, and an
/// operator can still see what was injected.
fn forgery(delivery: &Delivery) -> Settlement {
    tracing::error!(
        routing_key = %delivery.routing_key,
        message_id = ?delivery.properties.message_id(),
        "dead-lettering a message without a valid events-key tag (forged or from a misconfigured publisher)"
    );
    Settlement::Reject
}

/// Turns a delivery into an [`Incoming`] and handles it inside the publisher's trace.
async fn handle_delivery<H, Fut>(
    delivery: Delivery,
    service: &'static str,
    handler: H,
    shutdown: CancellationToken,
) -> Settlement
where
    H: Fn(Incoming) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let incoming = Incoming {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        routing_key: delivery.routing_key.to_string(),
        payload: delivery.data.clone(),
        redelivered: delivery.redelivered,
        traceparent: delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(TRACEPARENT))
            .and_then(|value| match value {
                lapin::types::AMQPValue::LongString(text) => Some(text.to_string()),
                _ => None,
            }),
    };
    // Every log line and every event this message causes continues the publisher's trace:
    // the message span (kind `consumer`) is the child of the relay's publish span.
    let parent = incoming
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse);
    let span = tracing::info_span!(
        "message",
        otel.name = %format!("consume {}", incoming.routing_key),
        otel.kind = "consumer",
        routing_key = %incoming.routing_key,
        message_id = incoming.message_id.as_deref().unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    plangrep_telemetry::export::continue_trace(&span, service, parent);
    let context = TraceContext::of(&span)
        .or_else(|| parent.map(|p| p.child()))
        .unwrap_or_else(TraceContext::new_root);
    span.record("trace_id", tracing::field::display(context.trace_id()));
    plangrep_telemetry::trace::scope(
        context,
        tracing::Instrument::instrument(settle(incoming, handler, shutdown), span),
    )
    .await
}

/// Runs the handler until it succeeds (ack), is ignored (ack), fails for good (reject
/// into the dead-letter queue) or has used its in-place retries (requeue); shutdown
/// interrupts a retry with a requeue.
async fn settle<H, Fut>(incoming: Incoming, handler: H, shutdown: CancellationToken) -> Settlement
where
    H: Fn(Incoming) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let mut delay = RECONNECT_MIN;
    for attempt in 1..=IN_PLACE_ATTEMPTS {
        match handler(incoming.clone()).await {
            Ok(()) => return Settlement::Ack,
            Err(HandleError::Ignore(reason)) => {
                tracing::info!(routing_key = %incoming.routing_key, %reason, "message ignored");
                return Settlement::Ack;
            }
            Err(HandleError::DeadLetter(error)) => {
                tracing::error!(routing_key = %incoming.routing_key, %error, "dead-lettering an unprocessable message");
                return Settlement::Reject;
            }
            Err(HandleError::Retry(error)) if attempt == IN_PLACE_ATTEMPTS => {
                tracing::warn!(routing_key = %incoming.routing_key, %error, "handler keeps failing; handing the message back to the broker");
            }
            Err(HandleError::Retry(error)) => {
                tracing::warn!(routing_key = %incoming.routing_key, %error, retry_in = ?delay, "handler failed, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RECONNECT_MAX);
            }
        }
    }
    Settlement::Requeue
}
