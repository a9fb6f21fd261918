//! The orchestrator's Prometheus metrics, served on its ops listener at `/metrics`: gRPC
//! calls by method and code, status transitions by status, the outbox backlog and the age
//! of its oldest unpublished row, relay leadership, pipeline stage durations and failures,
//! and the depth of each stage's dead-letter queue. One registry per instance, no globals.
//!
//! Counters and histograms are updated where the work happens; the outbox and dead-letter
//! gauges are read at scrape time, each by a bounded query: the outbox figures from its
//! partial index of unpublished rows (never a full-table count), the dead-letter depths by
//! a passive queue declare per work queue on a connection kept between scrapes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use plangrep_messaging::topology::ALL_QUEUES;
use plangrep_messaging::{HandleError, Topology};
use plangrep_service::grpc_metrics::GrpcMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::pipeline::Stage;

/// The outbox backlog is counted up to this many rows: enough to see it grow, bounded so a
/// scrape stays cheap however far the relay fell behind.
const BACKLOG_COUNT_CAP: i64 = 100_000;

/// How long a scrape may wait for the broker before it reports no dead-letter depths.
const BROKER_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    /// `job` or `project`.
    entity: String,
    /// The status entered.
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
    /// `ok`, `retry`, `dead_letter` or `ignored`.
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    stage: String,
    /// `retry` (handed back, retried) or `dead_letter` (given up now).
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Where the dead-letter depths are read from.
struct DeadLetterProbe {
    amqp_url: String,
    topology: Topology,
    /// Kept between scrapes, replaced when it dropped.
    connection: Mutex<Option<lapin::Connection>>,
}

/// The orchestrator's metrics (cheap to clone: every field is shared).
#[derive(Clone)]
pub struct OrchestratorMetrics {
    registry: Arc<Registry>,
    /// gRPC calls, for the server's layer.
    pub grpc: GrpcMetrics,
    transitions: Family<TransitionLabels, Counter>,
    outbox_backlog: Gauge<i64, AtomicI64>,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
    relay_leader: Gauge<i64, AtomicI64>,
    stage_duration: Family<StageLabels, Histogram>,
    stage_failures: Family<FailureLabels, Counter>,
    dead_letters: Family<QueueLabels, Gauge<i64, AtomicI64>>,
    probe: Arc<DeadLetterProbe>,
}

impl OrchestratorMetrics {
    /// Registers every metric; dead-letter depths are read from `amqp_url`'s queues.
    pub fn new(amqp_url: String, topology: Topology) -> Self {
        let mut registry = Registry::default();
        let grpc = GrpcMetrics::register(&mut registry);
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "plangrep_status_transitions",
            "Status transitions committed, by entity and status entered (counted as the relay \
             publishes their events; a republish after a crash counts again)",
            transitions.clone(),
        );
        let outbox_backlog = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plangrep_outbox_unpublished_rows",
            "Outbox rows committed but not yet published (counted up to 100000)",
            outbox_backlog.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "plangrep_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none waits)",
            outbox_oldest_age.clone(),
        );
        let relay_leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plangrep_outbox_relay_leader",
            "1 while this replica holds the relay lock and publishes the outbox, else 0",
            relay_leader.clone(),
        );
        // 5 ms .. ~5.5 min: provisioning is quick, processing reads whole documents.
        let stage_duration = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 17))
        });
        registry.register(
            "plangrep_pipeline_stage_duration_seconds",
            "Time a pipeline stage took to handle one message, by stage and outcome",
            stage_duration.clone(),
        );
        let stage_failures = Family::<FailureLabels, Counter>::default();
        // Every stage and kind exported from the start (at 0), so `increase()` and alerts
        // see the first failure.
        for stage in Stage::ALL {
            for kind in ["retry", "dead_letter"] {
                let _ = stage_failures.get_or_create(&FailureLabels {
                    stage: stage.name().to_owned(),
                    kind: kind.to_owned(),
                });
            }
        }
        registry.register(
            "plangrep_pipeline_stage_failures",
            "Pipeline messages a stage failed to handle, by stage and kind",
            stage_failures.clone(),
        );
        let dead_letters = Family::<QueueLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "plangrep_dead_letter_messages",
            "Messages waiting in a dead-letter queue (the pipeline stages' and the dispatcher's)",
            dead_letters.clone(),
        );
        Self {
            registry: Arc::new(registry),
            grpc,
            transitions,
            outbox_backlog,
            outbox_oldest_age,
            relay_leader,
            stage_duration,
            stage_failures,
            dead_letters,
            probe: Arc::new(DeadLetterProbe {
                amqp_url,
                topology,
                connection: Mutex::new(None),
            }),
        }
    }

    /// Counts a published status event by its routing key (`job.status_changed.<status>`).
    pub fn record_transition(&self, routing_key: &str) {
        if let Some((entity, status)) = routing_key.split_once(".status_changed.") {
            self.transitions
                .get_or_create(&TransitionLabels {
                    entity: entity.to_owned(),
                    status: status.to_owned(),
                })
                .inc();
        }
    }

    /// Records whether this replica leads the relay.
    pub fn set_relay_leader(&self, leading: bool) {
        self.relay_leader.set(i64::from(leading));
    }

    /// Records one message a stage handled, how it ended and how long it took.
    pub fn record_stage(&self, stage: Stage, outcome: &Result<(), HandleError>, took: Duration) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(HandleError::Retry(_)) => "retry",
            Err(HandleError::DeadLetter(_)) => "dead_letter",
            Err(HandleError::Ignore(_)) => "ignored",
        };
        self.stage_duration
            .get_or_create(&StageLabels {
                stage: stage.name().to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(took.as_secs_f64());
        if matches!(outcome, "retry" | "dead_letter") {
            self.stage_failures
                .get_or_create(&FailureLabels {
                    stage: stage.name().to_owned(),
                    kind: outcome.to_owned(),
                })
                .inc();
        }
    }

    /// Refreshes the scrape-time gauges and renders every metric.
    pub async fn render(&self, pool: &PgPool) -> String {
        self.refresh_outbox(pool).await;
        if tokio::time::timeout(BROKER_SCRAPE_TIMEOUT, self.refresh_dead_letters())
            .await
            .is_err()
        {
            // A broker that does not answer: no depths rather than stale ones.
            self.dead_letters.clear();
            *self.probe.connection.lock().await = None;
        }
        plangrep_service::ops::encode(&self.registry)
    }

    async fn refresh_outbox(&self, pool: &PgPool) {
        // Both read only `outbox_unpublished_idx` (partial: unpublished rows only).
        let figures: Result<(i64, Option<f64>), sqlx::Error> = sqlx::query_as(
            "SELECT \
               (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT $1) AS capped), \
               (SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox \
                 WHERE published_at IS NULL ORDER BY id LIMIT 1)",
        )
        .bind(BACKLOG_COUNT_CAP)
        .fetch_one(pool)
        .await;
        match figures {
            Ok((backlog, oldest)) => {
                self.outbox_backlog.set(backlog);
                self.outbox_oldest_age.set(oldest.unwrap_or(0.0).max(0.0));
            }
            Err(error) => tracing::warn!(%error, "metrics: outbox query failed"),
        }
    }

    async fn refresh_dead_letters(&self) {
        let mut connection = self.probe.connection.lock().await;
        if !connection.as_ref().is_some_and(|c| c.status().connected()) {
            match plangrep_messaging::connect(&self.probe.amqp_url).await {
                Ok(fresh) => *connection = Some(fresh),
                Err(error) => {
                    tracing::debug!(%error, "metrics: broker unreachable");
                    *connection = None;
                    self.dead_letters.clear();
                    return;
                }
            }
        }
        let Some(live) = connection.as_ref() else {
            return;
        };
        // The stages' queues and the dispatcher's: one place reports every dead letter.
        for queue in ALL_QUEUES {
            let name = self.probe.topology.dead_queue(&queue);
            let labels = QueueLabels {
                queue: format!("{}.dead", queue.name),
            };
            // A passive declare, on a channel of its own: it only reads the queue.
            match plangrep_messaging::redrive::depth(live, &name).await {
                Ok(Some(depth)) => {
                    self.dead_letters
                        .get_or_create(&labels)
                        .set(i64::from(depth));
                }
                // Not declared yet: nothing to report.
                Ok(None) => {
                    self.dead_letters.remove(&labels);
                }
                Err(error) => {
                    tracing::debug!(%error, queue = %labels.queue, "metrics: dead-letter queue not readable");
                    self.dead_letters.remove(&labels);
                }
            }
        }
    }
}
