//! Delivery metrics, exposed on the ops listener at `/metrics` (Prometheus text format):
//! attempts by outcome, event-to-first-success latency, the scheduled backlog and the
//! number of dead (failed) deliveries, and gRPC calls by method and code. One registry per
//! dispatcher instance, no globals. A scrape only encodes: the two table-derived gauges
//! are refreshed by housekeeping (on partial indexes), never counted per scrape.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use plangrep_service::grpc_metrics::GrpcMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::deliveries::state;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// The delivery state after the attempt: succeeded, pending (will retry), failed, stopped.
    outcome: String,
}

/// The dispatcher's metrics.
#[derive(Clone)]
pub struct DeliveryMetrics {
    registry: Arc<Registry>,
    /// gRPC calls, for the server's layer.
    pub grpc: GrpcMetrics,
    attempts: Family<OutcomeLabels, Counter>,
    latency: Histogram,
    backlog: Gauge<i64, AtomicI64>,
    failed: Gauge<i64, AtomicI64>,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let grpc = GrpcMetrics::register(&mut registry);
        let attempts = Family::<OutcomeLabels, Counter>::default();
        // Every outcome exported from the start (at 0), so `increase()` and alerts see the
        // first failure, and dashboards find the series before any webhook was sent.
        for outcome in [
            state::SUCCEEDED,
            state::PENDING,
            state::FAILED,
            state::STOPPED,
        ] {
            let _ = attempts.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        registry.register(
            "plangrep_webhook_attempts",
            "Webhook attempts, by the delivery state they led to",
            attempts.clone(),
        );
        // 50 ms .. ~27 min.
        let latency = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "plangrep_webhook_delivery_latency_seconds",
            "Time from the status change to the first successful delivery",
            latency.clone(),
        );
        let backlog = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plangrep_webhook_backlog",
            "Deliveries pending or waiting (scheduled work)",
            backlog.clone(),
        );
        let failed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plangrep_webhook_failed_deliveries",
            "Deliveries that exhausted their retries",
            failed.clone(),
        );
        Self {
            registry: Arc::new(registry),
            grpc,
            attempts,
            latency,
            backlog,
            failed,
        }
    }
}

impl DeliveryMetrics {
    /// Counts one attempt that left its delivery in `state`.
    pub fn record_attempt(&self, state: &str) {
        self.attempts
            .get_or_create(&OutcomeLabels {
                outcome: state.to_owned(),
            })
            .inc();
    }

    /// Observes the latency of a first successful delivery.
    pub fn record_first_success(&self, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
    }

    /// Sets the table-derived gauges: unfinished and failed deliveries.
    pub fn set_backlog(&self, open: i64, failed: i64) {
        self.backlog.set(open);
        self.failed.set(failed);
    }

    /// Renders every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "metrics encoding failed");
        }
        text
    }
}
