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

mod acks;
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

/// The largest AMQP frame we propose (unless the URL sets `frame_max`): events are a few
/// kilobytes, and the client keeps two buffers of 32 frames per connection, so the
/// broker's default of 128 KiB would cost 8 MiB of memory per connection.
pub const FRAME_MAX: u32 = 32 * 1024;

/// The heartbeat interval (seconds) we ask for unless the URL sets `heartbeat`. A broker
/// that stops answering without closing the connection (a frozen node, a partition) is
/// noticed after two silent intervals: 30 s, where RabbitMQ's default of 60 s would take
/// two minutes, all that time consuming nothing and reporting ready. RabbitMQ recommends
/// 5 to 20 s; the broker and we settle on the lower of the two proposals.
pub const HEARTBEAT: u16 = 15;

/// How long one exchange with the broker may take: connecting, opening a channel,
/// declaring, counting, acknowledging, closing. lapin can leave an operation pending for
/// good when the connection breaks under it (a passive declare sent just before a cut
/// never answered, and held the relay, and its shutdown, forever); past this the caller
/// treats the broker as lost and starts over.
pub const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `exchange`, or a `TimedOut` error once it has taken [`EXCHANGE_TIMEOUT`].
pub async fn bounded<T>(
    exchange: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, lapin::Error> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the broker did not answer in time",
            )
            .into())
        })
}

/// Opens a connection to the broker at `url` on the current tokio runtime, within
/// [`EXCHANGE_TIMEOUT`].
pub async fn connect(url: &str) -> Result<lapin::Connection, lapin::Error> {
    let properties = lapin::ConnectionProperties::default();
    bounded(async {
        match url.parse::<lapin::uri::AMQPUri>() {
            Ok(uri) => lapin::Connection::connect_uri(with_defaults(uri), properties).await,
            // lapin reports the unparseable URL in its own words.
            Err(_) => lapin::Connection::connect(url, properties).await,
        }
    })
    .await
}

/// `uri` with our [`FRAME_MAX`] and [`HEARTBEAT`] wherever it sets none of its own.
fn with_defaults(mut uri: lapin::uri::AMQPUri) -> lapin::uri::AMQPUri {
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    uri.query.heartbeat.get_or_insert(HEARTBEAT);
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(url: &str) -> lapin::uri::AMQPUri {
        with_defaults(url.parse().expect("a valid AMQP URL"))
    }

    #[test]
    fn a_url_without_tuning_gets_our_frame_size_and_heartbeat() {
        let query = uri("amqp://guest:guest@broker:5672/%2f").query;
        assert_eq!(query.frame_max, Some(FRAME_MAX));
        assert_eq!(query.heartbeat, Some(HEARTBEAT));
    }

    #[test]
    fn what_the_url_sets_is_kept() {
        let query = uri("amqp://broker/%2f?heartbeat=0&frame_max=131072").query;
        assert_eq!(query.frame_max, Some(131_072));
        assert_eq!(query.heartbeat, Some(0), "0: the broker's interval applies");
    }
}
