//! Names and declarations of the RabbitMQ topology.
//!
//! One durable topic exchange carries every status change; each consumer group owns a
//! quorum queue bound to the routing keys it acts on. A message that keeps failing is
//! dead-lettered (after `x-delivery-limit` redeliveries, which RabbitMQ 3.10 does not set
//! by default) into `<queue>.dead` instead of looping forever.
//!
//! Dead-lettering is at-least-once (`x-dead-letter-strategy`, which needs
//! `x-overflow: reject-publish`): the work queue keeps a message until the dead-letter
//! queue confirmed it, so a broker failure mid-way cannot lose it. RabbitMQ refuses to
//! redeclare a queue with other arguments, so the work queues got a versioned name
//! (`<name>.v2`); [`Topology::migrate_unversioned_queues`] moves what waits in the old
//! ones and deletes them (ADR 0013). Dead-letter queues keep their names.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use plangrep_core::{JobStatus, ProjectStatus};

use crate::routing::{Binding, StatusEvent};

/// A work queue and the routing keys bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkQueue {
    /// Base name, before the prefix.
    pub name: &'static str,
    /// What it is bound to on the events exchange.
    pub bindings: &'static [Binding],
}

/// The webhook dispatcher's queue: every job status change.
pub const DISPATCHER_EVENTS: WorkQueue = WorkQueue {
    name: "plangrep.dispatcher.events",
    bindings: &[Binding::AllJobEvents],
};

/// The provisioning stage: new projects and jobs get their storage.
pub const PROVISION_STAGE: WorkQueue = WorkQueue {
    name: "plangrep.orchestrator.provision",
    bindings: &[
        Binding::Status(StatusEvent::Job(JobStatus::Provisioning)),
        Binding::Status(StatusEvent::Project(ProjectStatus::Provisioning)),
    ],
};

/// The preflight stage: uploads completed (or a job resumed).
pub const PREFLIGHT_STAGE: WorkQueue = WorkQueue {
    name: "plangrep.orchestrator.preflight",
    bindings: &[Binding::Status(StatusEvent::Job(JobStatus::Preflighting))],
};

/// The processing stage: credits reserved, pages to work through.
pub const PROCESS_STAGE: WorkQueue = WorkQueue {
    name: "plangrep.orchestrator.process",
    bindings: &[Binding::Status(StatusEvent::Job(JobStatus::Processing))],
};

/// Every consumer's queue: the relay declares them all before publishing, so an event
/// published before a consumer's first start waits for it.
pub const ALL_QUEUES: [WorkQueue; 4] = [
    DISPATCHER_EVENTS,
    PROVISION_STAGE,
    PREFLIGHT_STAGE,
    PROCESS_STAGE,
];

/// The single pipeline queue of earlier versions, replaced by one queue per stage; the
/// relay deletes it so it does not fill up with copies nobody consumes.
pub const RETIRED_PIPELINE_QUEUE: &str = "plangrep.orchestrator.pipeline";

/// How many times a message may be redelivered before it is dead-lettered.
const DELIVERY_LIMIT: i64 = 20;

/// Suffix of the work queues declared with at-least-once dead-lettering; the names
/// without it are their predecessors, migrated by [`Topology::migrate_unversioned_queues`].
const QUEUE_VERSION: &str = ".v2";

/// The topology's names under one prefix (empty in production).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// A topology whose every name starts with `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The topic exchange every status change is published to.
    pub fn exchange(&self) -> String {
        format!("{}plangrep.events", self.prefix)
    }

    /// The exchange dead letters are routed through.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}plangrep.events.dlx", self.prefix)
    }

    /// The full name of a work queue.
    pub fn queue(&self, queue: &WorkQueue) -> String {
        format!("{}{}{QUEUE_VERSION}", self.prefix, queue.name)
    }

    /// The full name a work queue had before it was versioned (its arguments lacked the
    /// at-least-once dead-lettering).
    pub fn unversioned_queue(&self, queue: &WorkQueue) -> String {
        format!("{}{}", self.prefix, queue.name)
    }

    /// The full name of a work queue's dead-letter queue (unchanged by the versioning).
    pub fn dead_queue(&self, queue: &WorkQueue) -> String {
        format!("{}{}.dead", self.prefix, queue.name)
    }

    /// Declares both exchanges (idempotent).
    pub async fn declare_exchanges(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
    }

    /// Declares the exchanges, the quorum work queue with its dead-letter queue, and the
    /// bindings (idempotent; the arguments must match an existing queue's).
    pub async fn declare_work_queue(
        &self,
        channel: &Channel,
        queue: &WorkQueue,
    ) -> Result<(), lapin::Error> {
        self.declare_exchanges(channel).await?;
        let name = self.queue(queue);
        let dead = self.dead_queue(queue);
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };

        channel
            .queue_declare(dead.clone().into(), durable, quorum_arguments())
            .await?;
        channel
            .queue_bind(
                dead.into(),
                self.dead_letter_exchange().into(),
                name.clone().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let mut arguments = quorum_arguments();
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(self.dead_letter_exchange()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            long_string(name.clone()),
        );
        // At-least-once dead-lettering: the message leaves this queue only once the
        // dead-letter queue confirmed it. RabbitMQ requires reject-publish overflow for it
        // (with no length limit set, nothing is ever rejected).
        arguments.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once".to_owned()),
        );
        arguments.insert(
            "x-overflow".into(),
            long_string("reject-publish".to_owned()),
        );
        channel
            .queue_declare(name.clone().into(), durable, arguments)
            .await?;
        for binding in queue.bindings {
            channel
                .queue_bind(
                    name.clone().into(),
                    self.exchange().into(),
                    binding.pattern().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes the retired single pipeline queue of earlier versions (and its dead-letter
    /// queue once it is empty; quorum queues refuse `if_empty` deletes, so it is checked
    /// first); a no-op once they are gone, which logs nothing.
    pub async fn delete_retired_queues(
        &self,
        connection: &lapin::Connection,
        amqp_url: &str,
    ) -> Result<(), lapin::Error> {
        let name = format!("{}{RETIRED_PIPELINE_QUEUE}", self.prefix);
        let channel = crate::bounded(connection.create_channel()).await?;
        crate::bounded(channel.queue_delete(name.clone().into(), QueueDeleteOptions::default()))
            .await?;
        let dead = format!("{name}.dead");
        // Usually gone long ago; otherwise a quorum queue, deleted once drained.
        let gone = crate::redrive::delete_if_idle(amqp_url, &dead).await?;
        let drained = !gone
            && crate::redrive::occupancy(connection, &dead)
                .await?
                .is_some_and(|now| now.messages == 0);
        if drained {
            crate::bounded(channel.queue_delete(dead.into(), QueueDeleteOptions::default()))
                .await?;
        }
        let _ = crate::bounded(channel.close(200, "deleted".into())).await;
        Ok(())
    }

    /// Migrates the predecessors of `queues` (same name without the version suffix): each
    /// is unbound from the exchange, whatever waits in it is moved to its successor with
    /// publisher confirms (the successor must be declared), and it is deleted once empty
    /// and without consumers.
    /// A no-op once they are gone, which logs nothing; returns how many messages moved.
    pub async fn migrate_unversioned_queues(
        &self,
        connection: &lapin::Connection,
        amqp_url: &str,
        queues: &[WorkQueue],
    ) -> Result<u64, crate::redrive::MoveError> {
        let mut moved = 0;
        for queue in queues {
            let old = self.unversioned_queue(queue);
            if crate::redrive::delete_if_idle(amqp_url, &old).await?
                || crate::redrive::depth(connection, &old).await?.is_none()
            {
                continue;
            }
            let channel = crate::bounded(connection.create_channel()).await?;
            for binding in queue.bindings {
                crate::bounded(channel.queue_unbind(
                    old.clone().into(),
                    self.exchange().into(),
                    binding.pattern().into(),
                    FieldTable::default(),
                ))
                .await?;
            }
            let count =
                crate::redrive::move_messages(connection, &old, &self.queue(queue), u32::MAX)
                    .await?;
            moved += u64::from(count);
            // Quorum queues refuse `if_empty` deletes: delete only what is drained and has
            // no consumer of a previous version left (whose unacked messages would go with
            // it); otherwise the next migration tries again. Nothing else publishes to it:
            // it is unbound, and relays of every version exclude each other by one lock.
            let idle = crate::redrive::occupancy(connection, &old)
                .await?
                .is_some_and(|now| now.messages == 0 && now.consumers == 0);
            if idle {
                crate::bounded(channel.queue_delete(old.into(), QueueDeleteOptions::default()))
                    .await?;
            }
            let _ = crate::bounded(channel.close(200, "migrated".into())).await;
        }
        Ok(moved)
    }

    /// Deletes the given work queues, their dead-letter queues and both exchanges. Meant
    /// for tests that declared a prefixed topology and must leave the broker clean.
    pub async fn delete(
        &self,
        channel: &Channel,
        queues: &[WorkQueue],
    ) -> Result<(), lapin::Error> {
        for queue in queues {
            for name in [
                self.queue(queue),
                self.unversioned_queue(queue),
                self.dead_queue(queue),
            ] {
                channel
                    .queue_delete(name.into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn long_string(value: String) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum".to_owned()));
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        let topology = Topology::new("t123.");
        assert_eq!(topology.exchange(), "t123.plangrep.events");
        assert_eq!(topology.dead_letter_exchange(), "t123.plangrep.events.dlx");
        assert_eq!(
            topology.queue(&DISPATCHER_EVENTS),
            "t123.plangrep.dispatcher.events.v2"
        );
        assert_eq!(
            topology.unversioned_queue(&DISPATCHER_EVENTS),
            "t123.plangrep.dispatcher.events"
        );
        assert_eq!(
            topology.dead_queue(&PREFLIGHT_STAGE),
            "t123.plangrep.orchestrator.preflight.dead"
        );
    }
}
