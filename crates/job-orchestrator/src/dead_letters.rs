//! The dead-letter queues as operators see them through the admin API: how many messages
//! wait in each, and the re-drive that moves them back to their work queue (ADR 0013).
//!
//! The orchestrator owns this because it holds the broker connection settings (the
//! gateway has none). Queues are named without the deployment's prefix; every work
//! queue of the topology has one dead-letter queue, the dispatcher's included.

use plangrep_core::validate::FieldError;
use plangrep_messaging::redrive::{self, MoveError};
use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_messaging::{Topology, WorkQueue};
use plangrep_proto::orchestrator::DeadLetterQueue;

use crate::error::Error;

/// Messages moved by a re-drive that names no limit.
pub const DEFAULT_REDRIVE_LIMIT: u32 = 100;
/// The largest re-drive one request may ask for.
pub const MAX_REDRIVE_LIMIT: u32 = 10_000;

/// The name operators use for `queue`'s dead-letter queue.
pub fn dead_queue_name(queue: &WorkQueue) -> String {
    format!("{}.dead", queue.name)
}

/// The work queue whose dead-letter queue is called `name`, or a field error naming the
/// known ones.
pub fn parse_queue(name: &str) -> Result<WorkQueue, FieldError> {
    ALL_QUEUES
        .into_iter()
        .find(|queue| dead_queue_name(queue) == name)
        .ok_or_else(|| {
            let known: Vec<String> = ALL_QUEUES.iter().map(dead_queue_name).collect();
            FieldError::new("queue", format!("must be one of {}", known.join(", ")))
        })
}

/// A re-drive limit within 1..=[`MAX_REDRIVE_LIMIT`], [`DEFAULT_REDRIVE_LIMIT`] when absent.
pub fn parse_limit(limit: Option<u32>) -> Result<u32, FieldError> {
    match limit {
        None => Ok(DEFAULT_REDRIVE_LIMIT),
        Some(limit) if (1..=MAX_REDRIVE_LIMIT).contains(&limit) => Ok(limit),
        Some(_) => Err(FieldError::new(
            "limit",
            format!("must be an integer from 1 to {MAX_REDRIVE_LIMIT}"),
        )),
    }
}

/// Reads and re-drives the dead-letter queues of one topology.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    amqp_url: String,
    topology: Topology,
}

impl DeadLetters {
    /// Dead letters of `topology` on the broker at `amqp_url`.
    pub fn new(amqp_url: String, topology: Topology) -> Self {
        Self { amqp_url, topology }
    }

    async fn connect(&self) -> Result<lapin::Connection, Error> {
        plangrep_messaging::connect(&self.amqp_url)
            .await
            .map_err(|error| Error::BrokerUnavailable(error.to_string()))
    }

    /// Every dead-letter queue and its depth (0 for one not declared yet).
    #[tracing::instrument(skip_all)]
    pub async fn counts(&self) -> Result<Vec<DeadLetterQueue>, Error> {
        let connection = self.connect().await?;
        let mut queues = Vec::new();
        for queue in ALL_QUEUES {
            let depth = redrive::depth(&connection, &self.topology.dead_queue(&queue))
                .await
                .map_err(|error| Error::BrokerUnavailable(error.to_string()))?;
            queues.push(DeadLetterQueue {
                queue: dead_queue_name(&queue),
                work_queue: queue.name.to_owned(),
                messages: u64::from(depth.unwrap_or(0)),
            });
        }
        let _ = plangrep_messaging::bounded(connection.close(200, "bye".into())).await;
        Ok(queues)
    }

    /// Moves up to `limit` dead letters (of `queue`, or of every queue in turn) back to
    /// their work queue; returns how many moved.
    #[tracing::instrument(skip_all, fields(queue = queue.map(|q| q.name), limit))]
    pub async fn redrive(&self, queue: Option<WorkQueue>, limit: u32) -> Result<u64, Error> {
        let connection = self.connect().await?;
        let chosen: Vec<WorkQueue> = match queue {
            Some(queue) => vec![queue],
            None => ALL_QUEUES.to_vec(),
        };
        let mut redriven = 0u64;
        let mut outcome = Ok(());
        for queue in chosen {
            let left = limit.saturating_sub(u32::try_from(redriven).unwrap_or(u32::MAX));
            if left == 0 {
                break;
            }
            let moved = self.redrive_queue(&connection, &queue, left).await;
            match moved {
                Ok(moved) => redriven += u64::from(moved),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        let _ = plangrep_messaging::bounded(connection.close(200, "bye".into())).await;
        tracing::info!(redriven, "dead letters re-driven");
        // What moved before a failure stays moved; the caller learns of the failure.
        outcome.map(|()| redriven)
    }

    async fn redrive_queue(
        &self,
        connection: &lapin::Connection,
        queue: &WorkQueue,
        limit: u32,
    ) -> Result<u32, Error> {
        let unavailable = |error: MoveError| Error::BrokerUnavailable(error.to_string());
        let dead = self.topology.dead_queue(queue);
        if redrive::depth(connection, &dead)
            .await
            .map_err(|error| unavailable(error.into()))?
            .is_none()
        {
            return Ok(0);
        }
        // The target exists before anything moves (declaring is idempotent).
        plangrep_messaging::bounded(async {
            let channel = connection.create_channel().await?;
            self.topology.declare_work_queue(&channel, queue).await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        })
        .await
        .map_err(|error| unavailable(error.into()))?;
        redrive::move_messages(connection, &dead, &self.topology.queue(queue), limit)
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_named_as_the_metric_names_them_and_unknown_ones_refused() {
        assert_eq!(
            parse_queue("plangrep.dispatcher.events.dead").unwrap().name,
            "plangrep.dispatcher.events"
        );
        assert_eq!(
            parse_queue("plangrep.orchestrator.preflight.dead")
                .unwrap()
                .name,
            "plangrep.orchestrator.preflight"
        );
        for unknown in ["plangrep.dispatcher.events", "", "x.dead"] {
            assert_eq!(parse_queue(unknown).unwrap_err().field, "queue");
        }
    }

    #[test]
    fn limits_default_to_100_and_stay_within_1_to_10000() {
        assert_eq!(parse_limit(None), Ok(100));
        assert_eq!(parse_limit(Some(1)), Ok(1));
        assert_eq!(parse_limit(Some(10_000)), Ok(10_000));
        assert!(parse_limit(Some(0)).is_err());
        assert!(parse_limit(Some(10_001)).is_err());
    }
}
