//! Moving messages between queues without losing one: dead letters back to their work
//! queue (the admin re-drive), and what waits in a retired queue to its successor.
//!
//! Each message is taken with `basic.get` (manual ack), republished persistent with its
//! properties (message id, headers, content type) through the default exchange on a
//! confirm channel, and acked from the source only once the broker confirmed the copy.
//! A failure between confirm and ack leaves a duplicate, never a gap (consumers dedupe
//! by `message_id`).
//!
//! Consumers act on the routing key a message was *published* with, but a dead letter
//! carries its dead-letter routing key (the work queue's name). So the copy is published
//! with the original key (from the `x-death` header) and reaches exactly the target
//! queue through a `BCC` header: RabbitMQ routes by the BCC names as extra routing keys,
//! strips the header, and delivers with the original key.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection};

use crate::StatusEvent;

/// Why a move stopped; every message not yet confirmed stays in its source queue.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("the broker connection failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the copy (nack)")]
    Nacked,
    #[error("the target queue {0} does not exist")]
    Unroutable(String),
}

/// Messages ready in `queue`, or `None` when it does not exist.
pub async fn depth(connection: &Connection, queue: &str) -> Result<Option<u32>, lapin::Error> {
    Ok(occupancy(connection, queue)
        .await?
        .map(|occupancy| occupancy.messages))
}

/// What a queue holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Messages ready (not counting those delivered and not yet acked).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// The occupancy of `queue`, or `None` when it does not exist.
pub async fn occupancy(
    connection: &Connection,
    queue: &str,
) -> Result<Option<Occupancy>, lapin::Error> {
    crate::bounded(async {
        // Its own channel: a missing queue closes the channel it was asked on.
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => {
                let _ = channel.close(200, "counted".into()).await;
                Ok(Some(Occupancy {
                    messages: queue.message_count(),
                    consumers: queue.consumer_count(),
                }))
            }
            Err(_) if connection.status().connected() => Ok(None),
            Err(error) => Err(error),
        }
    })
    .await
}

/// Deletes `queue` if it does not exist or is a classic queue without messages and
/// consumers; `true` when it is gone. Unlike [`occupancy`], whose passive declare of an
/// absent queue gets a 404 that the AMQP client logs as an error, this says nothing when
/// the queue is absent: RabbitMQ answers its delete with `delete-ok`. A queue that exists
/// and cannot be deleted comes back `false`, for the caller to look closer; a quorum queue
/// refuses conditional deletes by closing the whole connection (540), so the delete runs
/// on a connection of its own. A look that takes longer than [`LOOK_TIMEOUT`] (a broker
/// going away meanwhile) comes back `false` too.
pub async fn delete_if_idle(amqp_url: &str, queue: &str) -> Result<bool, lapin::Error> {
    let look = async {
        let connection = crate::connect(amqp_url).await?;
        let channel = connection.create_channel().await?;
        let deleted = channel
            .queue_delete(
                queue.into(),
                QueueDeleteOptions {
                    if_unused: true,
                    if_empty: true,
                    ..QueueDeleteOptions::default()
                },
            )
            .await
            .is_ok();
        let _ = connection.close(200, "looked".into()).await;
        Ok(deleted)
    };
    tokio::time::timeout(LOOK_TIMEOUT, look)
        .await
        .unwrap_or(Ok(false))
}

/// How long [`delete_if_idle`] may take.
const LOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Moves up to `limit` messages from `from` to `to`, oldest first; returns how many moved.
/// Each exchange with the broker is [`bounded`](crate::bounded).
pub async fn move_messages(
    connection: &Connection,
    from: &str,
    to: &str,
    limit: u32,
) -> Result<u32, MoveError> {
    let channel = crate::bounded(async {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    })
    .await?;
    let mut moved = 0;
    while moved < limit {
        let Some(message) =
            crate::bounded(channel.basic_get(from.into(), BasicGetOptions { no_ack: false }))
                .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let routing_key = original_routing_key(delivery.routing_key.as_str(), &delivery.properties);
        let properties = with_bcc(delivery.properties.clone(), to);
        let confirmation = crate::bounded(async {
            channel
                .basic_publish(
                    "".into(),
                    routing_key.into(),
                    // Mandatory: a missing target returns the copy instead of dropping it.
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await?
                .await
        })
        .await?;
        let refused = match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => None,
            Confirmation::Ack(Some(_)) => Some(MoveError::Unroutable(to.to_owned())),
            Confirmation::Nack(_) => Some(MoveError::Nacked),
        };
        if let Some(error) = refused {
            // Back to the head of the source queue, untouched.
            let _ = crate::bounded(delivery.acker.nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            }))
            .await;
            let _ = crate::bounded(channel.close(200, "refused".into())).await;
            return Err(error);
        }
        crate::bounded(delivery.acker.ack(BasicAckOptions::default())).await?;
        moved += 1;
    }
    let _ = crate::bounded(channel.close(200, "moved".into())).await;
    Ok(moved)
}

/// The routing key the message was first published with: its own when it is a status
/// event's, else the first one its most recent dead-lettering recorded in `x-death`.
fn original_routing_key(routing_key: &str, properties: &BasicProperties) -> String {
    if StatusEvent::parse(routing_key).is_some() {
        return routing_key.to_owned();
    }
    let recorded = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-death"))
        .and_then(|deaths| match deaths {
            AMQPValue::FieldArray(deaths) => deaths.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|death| match death {
            AMQPValue::FieldTable(death) => death.inner().get("routing-keys").cloned(),
            _ => None,
        })
        .and_then(|keys| match keys {
            AMQPValue::FieldArray(keys) => keys.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|key| match key {
            AMQPValue::LongString(key) => Some(key.to_string()),
            _ => None,
        });
    recorded.unwrap_or_else(|| routing_key.to_owned())
}

/// The message's properties, persistent, with `BCC: [queue]` added to its headers.
fn with_bcc(properties: BasicProperties, queue: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        "BCC".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
            LongString::from(queue.to_owned()),
        )])),
    );
    properties.with_delivery_mode(2).with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(original: &str) -> BasicProperties {
        let mut death = FieldTable::default();
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from(original.to_owned()),
            )])),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn a_dead_letter_goes_back_under_the_key_it_was_published_with() {
        let properties = dead_letter("job.status_changed.preflighting");
        assert_eq!(
            original_routing_key("t.plangrep.orchestrator.preflight.v2", &properties),
            "job.status_changed.preflighting"
        );
    }

    #[test]
    fn a_status_event_keeps_its_own_key() {
        assert_eq!(
            original_routing_key("job.status_changed.processing", &BasicProperties::default()),
            "job.status_changed.processing"
        );
        // Without a record, the key is kept as it is.
        assert_eq!(
            original_routing_key("something.else", &BasicProperties::default()),
            "something.else"
        );
    }

    #[test]
    fn the_copy_is_persistent_and_addressed_to_the_target_only() {
        let properties = with_bcc(dead_letter("job.status_changed.uploading"), "q.v2");
        assert_eq!(*properties.delivery_mode(), Some(2));
        let headers = properties.headers().as_ref().unwrap().inner();
        assert!(headers.contains_key("x-death"));
        assert_eq!(
            headers.get("BCC"),
            Some(&AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString(LongString::from("q.v2".to_owned()))
            ])))
        );
    }
}
