//! `plangrep-messaging`: everything the services share about RabbitMQ.
//!
//! - [`routing`]: routing keys and bindings derived from typed statuses;
//! - [`topology`]: the exchange and quorum work queues of DESIGN.md §3, declared
//!   idempotently, with delivery limits and dead-letter queues, all under an optional
//!   name prefix (tests isolate themselves with a random one).
//! - [`publisher`]: a publisher with confirms, for the outbox relay; it tags every message
//!   with the events key.
//! - [`redrive`]: moving messages between queues with confirms (dead letters back to
//!   their work queue, retired queues to their successors).
//! - [`consumer`]: a supervised consumer loop with manual acks, bounded concurrency,
//!   reconnect with backoff and a graceful drain on shutdown; it dead-letters every
//!   message whose tag does not verify before a handler sees it (ADR 0010).

pub mod consumer;
pub mod publisher;
pub mod redrive;
pub mod routing;
pub mod topology;

pub use consumer::{BrokerHealth, ConsumerConfig, HandleError, Incoming, consume_loop};
pub use plangrep_core::event_auth::EventsKey;
pub use publisher::{OutgoingMessage, PublishError, Publisher, Unconfirmed};
pub use routing::{Binding, StatusEvent};
pub use topology::{Topology, WorkQueue};

/// The AMQP header that carries a message's authentication tag (see
/// `plangrep_core::event_auth`): set by [`Publisher`], checked by [`consume_loop`].
pub const EVENT_TAG_HEADER: &str = "x-plangrep-event-tag";

/// Opens a connection to the broker at `url` on the current tokio runtime.
pub async fn connect(url: &str) -> Result<lapin::Connection, lapin::Error> {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
}
