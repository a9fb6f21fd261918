//! Case 2, event latency: jobs created at a steady rate, each with a `webhookUrl`, and
//! for every status change the time from its commit to the webhook's arrival at a local
//! receiver. The commit time is the event's `timestamp` (taken in the transaction, in
//! milliseconds, truncated): a latency is therefore overstated by up to 1 ms plus the
//! rest of the transaction.

use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use plangrep_core::api::WebhookPayload;
use sqlx::PgPool;

use super::JobCreator;
use crate::load::{Outcome, paced};
use crate::receiver::{Arrival, Receivers};
use crate::stack::Customer;
use crate::stats::Samples;

/// What one latency run saw.
pub struct Latency {
    /// Commit → arrival of every webhook of the run.
    pub event: Samples,
    /// Status changes the run caused (two per created job).
    pub expected: usize,
    /// The creates themselves.
    pub creates: Outcome,
    /// Status changes per second the run asked for.
    pub changes_per_second: f64,
    /// Where the time went ([`breakdown`]).
    pub breakdown: String,
}

impl Latency {
    /// Whether every status change's webhook arrived.
    pub fn complete(&self) -> bool {
        self.event.len() >= self.expected
    }

    /// `n/m webhooks, creates p50 … p99 …`.
    pub fn detail(&mut self) -> String {
        format!(
            "{}/{} webhooks at {:.0} changes/s; {}; creates {}",
            self.event.len(),
            self.expected,
            self.changes_per_second,
            self.breakdown,
            self.creates.summary()
        )
    }
}

/// Creates `jobs_per_second` jobs a second for `duration`, each with a receiver's URL,
/// and waits (bounded) for both webhooks of every job.
pub async fn measure(
    customer: &Customer,
    receivers: &mut Receivers,
    pool: &PgPool,
    jobs_per_second: f64,
    duration: Duration,
) -> Latency {
    receivers.drain();
    let since = Utc::now();
    let creator = JobCreator::new(customer, &receivers.urls);
    let creates = paced(jobs_per_second, duration, move |n| {
        creator.clone().create(n)
    })
    .await;
    let expected = creates.ok as usize * 2;
    let mut event = Samples::default();
    for arrival in receivers.drain() {
        record(&mut event, &arrival);
    }
    let waited = Instant::now();
    while event.len() < expected && waited.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(arrival)) =
            tokio::time::timeout(Duration::from_secs(5), receivers.next()).await
        {
            record(&mut event, &arrival);
        }
    }
    Latency {
        event,
        expected,
        creates,
        changes_per_second: jobs_per_second * 2.0,
        breakdown: breakdown(pool, since).await,
    }
}

/// p50 and p99 of: commit → recorded, recorded → sent for first and for later events,
/// the attempt.
type Percentiles = (f64, f64, f64, f64, f64, f64, f64, f64);

/// Where the time of the deliveries since `since` went, from the dispatcher's own rows
/// (millisecond timestamps): commit → recorded by intake, recorded → first attempt
/// started (apart for a job's first event and its later ones, which wait for the earlier
/// one), and the attempt itself; p50 / p99 of each.
pub async fn breakdown(pool: &PgPool, since: DateTime<Utc>) -> String {
    let row: Option<Percentiles> = sqlx::query_as(
        "SELECT \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY intake), \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY intake), \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY queued) FILTER (WHERE first), \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY queued) FILTER (WHERE first), \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY queued) FILTER (WHERE NOT first), \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY queued) FILTER (WHERE NOT first), \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY attempt), \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY attempt) \
         FROM (SELECT \
             extract(epoch FROM d.created_at - d.event_occurred_at) * 1000 AS intake, \
             extract(epoch FROM a.started_at - d.created_at) * 1000 AS queued, \
             a.duration_ms::float8 AS attempt, \
             d.sequence = 1 AS first \
           FROM dispatcher.deliveries d \
           JOIN dispatcher.attempts a ON a.delivery_id = d.id AND a.number = 1 \
           WHERE d.event_occurred_at >= $1) AS spans \
         WHERE intake IS NOT NULL",
    )
    .bind(since)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    match row {
        Some((intake50, intake99, first50, first99, later50, later99, attempt50, attempt99)) => {
            format!(
                "commit → recorded p50 {intake50:.0} / p99 {intake99:.0} ms, recorded → sent \
                 {first50:.0} / {first99:.0} ms for a job's first event and {later50:.0} / \
                 {later99:.0} ms for its later ones, attempt {attempt50:.0} / {attempt99:.0} ms"
            )
        }
        None => String::from("no breakdown"),
    }
}

/// Adds the commit → arrival time of an accepted webhook.
fn record(event: &mut Samples, arrival: &Arrival) {
    if !arrival.accepted {
        return;
    }
    let Ok(payload) = serde_json::from_slice::<WebhookPayload>(&arrival.body) else {
        return;
    };
    let committed = SystemTime::from(payload.timestamp);
    event.push(arrival.at.duration_since(committed).unwrap_or_default());
}
