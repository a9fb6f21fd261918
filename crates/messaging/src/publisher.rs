//! A publisher with confirms: `publish` returns only once the broker has taken
//! responsibility for the message (persistent, on a durable exchange). `send` hands a
//! message over without waiting, so a batch can be published back to back and its
//! confirms (which the broker gives per disk write, not per message) awaited together.
//! Every message carries the events key's tag ([`crate::EVENT_TAG_HEADER`], ADR 0010),
//! which consumers check before handling it.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

use plangrep_core::event_auth::EventsKey;

use crate::Topology;

/// One message for the events exchange.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The event id; consumers dedupe on it.
    pub message_id: String,
    /// `job.status_changed.<status>` and the like.
    pub routing_key: String,
    /// Encoded protobuf.
    pub payload: Vec<u8>,
    /// W3C `traceparent`, carried in the headers when present.
    pub traceparent: Option<String>,
    /// Whether the message must reach at least one queue; if none is bound, the broker
    /// returns it and `publish` fails (so the caller keeps it and retries).
    pub mandatory: bool,
}

/// Why a message may not have reached the broker; the caller retries it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker connection failed")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
}

/// A confirm-mode channel bound to the events exchange.
pub struct Publisher {
    channel: Channel,
    exchange: String,
    /// Tags every message so consumers can tell it came from us.
    events_key: EventsKey,
}

impl Publisher {
    /// Opens a confirm-mode channel on `connection` and declares the exchanges; messages
    /// are tagged with `events_key`.
    pub async fn open(
        connection: &Connection,
        topology: &Topology,
        events_key: EventsKey,
    ) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology.declare_exchanges(&channel).await?;
        Ok(Self {
            channel,
            exchange: topology.exchange(),
            events_key,
        })
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        self.send(message).await?.confirmed().await
    }

    /// Hands one persistent message to the broker; its confirm is awaited separately.
    /// Messages sent on one publisher reach each queue in the order they were sent.
    pub async fn send(&self, message: &OutgoingMessage) -> Result<Unconfirmed, PublishError> {
        let mut headers = FieldTable::default();
        if let Some(traceparent) = &message.traceparent {
            headers.insert(
                "traceparent".into(),
                AMQPValue::LongString(LongString::from(traceparent.clone())),
            );
        }
        let tag = self
            .events_key
            .tag(&message.message_id, &message.routing_key, &message.payload);
        headers.insert(
            crate::EVENT_TAG_HEADER.into(),
            AMQPValue::LongString(LongString::from(tag)),
        );
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(message.message_id.clone()))
            .with_content_type("application/protobuf".into())
            .with_delivery_mode(2) // persistent
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: message.mandatory,
            ..BasicPublishOptions::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.clone().into(),
                message.routing_key.clone().into(),
                options,
                &message.payload,
                properties,
            )
            .await?;
        Ok(Unconfirmed {
            confirm,
            routing_key: message.routing_key.clone(),
        })
    }
}

/// A sent message whose confirm is still to come.
#[must_use = "a message counts as published only once it is confirmed"]
pub struct Unconfirmed {
    confirm: PublisherConfirm,
    routing_key: String,
}

impl Unconfirmed {
    /// Waits for the broker's confirm: `Ok` once it took responsibility for the message.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        match self.confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable(self.routing_key)),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }
}
