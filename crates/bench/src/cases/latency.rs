//! Case 2, event latency: jobs created at a steady rate, each with a `webhookUrl`, and
//! for every status change the time from its commit to the webhook's arrival at a local
//! receiver. The commit time is the event's `timestamp` (taken in the transaction, in
//! milliseconds, truncated): a latency is therefore overstated by up to 1 ms plus the
//! rest of the transaction.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plangrep_core::api::WebhookPayload;

use super::{create_job, load_client};
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
}

impl Latency {
    /// `n/m webhooks, creates p50 … p99 …`.
    pub fn detail(&mut self) -> String {
        format!(
            "{}/{} webhooks at {:.0} changes/s; creates {}",
            self.event.len(),
            self.expected,
            self.changes_per_second,
            self.creates.summary()
        )
    }
}

/// Creates `jobs_per_second` jobs a second for `duration`, each with a receiver's URL,
/// and waits (bounded) for both webhooks of every job.
pub async fn measure(
    customer: &Customer,
    receivers: &mut Receivers,
    jobs_per_second: f64,
    duration: Duration,
) -> Latency {
    receivers.drain();
    let client = load_client();
    let urls = Arc::new(receivers.urls.clone());
    let customer = Arc::new(customer.clone());
    let creates = paced(jobs_per_second, duration, move |n| {
        let client = client.clone();
        let customer = customer.clone();
        let urls = urls.clone();
        async move {
            let url = urls[n as usize % urls.len()].as_str();
            create_job(&client, &customer, Some(url), None).await
        }
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
