//! What the receiver saw, per job, and the delivery guarantees of SPEC §5 checked on it:
//! every status change arrives at least once, first arrivals in sequence order, a
//! duplicate carries the same `webhook-id` as the first, and each event chains onto the
//! previous one.

use std::collections::{BTreeMap, HashMap};

use plangrep_test_support::receiver::Captured;
use serde_json::Value;

/// One received delivery.
#[derive(Debug, Clone)]
pub struct Received {
    pub sequence: u64,
    pub webhook_id: String,
    pub status: String,
    pub previous_status: Option<String>,
}

/// Every delivery received, per job, in arrival order.
#[derive(Debug, Default)]
pub struct Ledger {
    per_job: HashMap<String, Vec<Received>>,
    /// Requests that were not a parsable job webhook.
    malformed: Vec<String>,
    total: usize,
}

impl Ledger {
    /// Adds `captured`, in arrival order.
    pub fn record(&mut self, captured: Vec<Captured>) {
        for request in captured {
            self.total += 1;
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let data = &body["data"];
            let (Some(job_id), Some(sequence), Some(status)) = (
                data["job"]["id"].as_str(),
                data["sequence"].as_u64(),
                data["job"]["status"].as_str(),
            ) else {
                self.malformed
                    .push(String::from_utf8_lossy(&request.body).into_owned());
                continue;
            };
            self.per_job
                .entry(job_id.to_owned())
                .or_default()
                .push(Received {
                    sequence,
                    webhook_id: request.header("webhook-id"),
                    status: status.to_owned(),
                    previous_status: data["previousStatus"].as_str().map(str::to_owned),
                });
        }
    }

    /// Whether an event of `job_id` announcing `status` arrived.
    pub fn has_received(&self, job_id: &str, status: &str) -> bool {
        self.per_job
            .get(job_id)
            .is_some_and(|received| received.iter().any(|r| r.status == status))
    }

    /// Deliveries received in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Deliveries that repeated an event already received.
    pub fn duplicates(&self) -> usize {
        self.per_job
            .values()
            .map(|received| {
                let mut sequences: Vec<u64> = received.iter().map(|r| r.sequence).collect();
                sequences.sort_unstable();
                sequences.dedup();
                received.len() - sequences.len()
            })
            .sum()
    }

    /// Every way the deliveries of `jobs` (each now in `final_status`) break SPEC §5, and
    /// every delivery of a job not in `jobs`.
    pub fn problems(&self, jobs: &[String], final_status: &str) -> Vec<String> {
        let mut problems: Vec<String> = self
            .malformed
            .iter()
            .map(|body| format!("a delivery that is not a job webhook: {body}"))
            .collect();
        for job_id in jobs {
            let received = self.per_job.get(job_id).map(Vec::as_slice).unwrap_or(&[]);
            problems.extend(job_problems(job_id, received, final_status));
        }
        let known: std::collections::HashSet<&String> = jobs.iter().collect();
        for job_id in self.per_job.keys().filter(|id| !known.contains(id)) {
            problems.push(format!(
                "{job_id}: webhooks of a job the customer never got back (a replayed create made a second job?)"
            ));
        }
        problems
    }
}

fn job_problems(job_id: &str, received: &[Received], final_status: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // First arrival of each sequence, in arrival order.
    let mut first_seen: Vec<&Received> = Vec::new();
    let mut ids: BTreeMap<u64, &str> = BTreeMap::new();
    for delivery in received {
        match ids.get(&delivery.sequence) {
            None => {
                ids.insert(delivery.sequence, &delivery.webhook_id);
                first_seen.push(delivery);
            }
            Some(first_id) if *first_id != delivery.webhook_id => problems.push(format!(
                "{job_id}: event {} arrived again with webhook-id {} (first {first_id})",
                delivery.sequence, delivery.webhook_id
            )),
            Some(_) => {}
        }
    }
    let order: Vec<u64> = first_seen.iter().map(|r| r.sequence).collect();
    let expected: Vec<u64> = (1..=order.len() as u64).collect();
    if order != expected {
        problems.push(format!(
            "{job_id}: events first arrived in the order {order:?}, not {expected:?}"
        ));
    }
    let mut previous: Option<&str> = None;
    for delivery in &first_seen {
        if delivery.previous_status.as_deref() != previous {
            problems.push(format!(
                "{job_id}: event {} says it left {:?}, but the event before announced {previous:?} (a status change never arrived)",
                delivery.sequence, delivery.previous_status
            ));
        }
        previous = Some(&delivery.status);
    }
    if previous != Some(final_status) {
        problems.push(format!(
            "{job_id}: the last event received announced {previous:?}, but the job is {final_status:?}"
        ));
    }
    let mut distinct: Vec<&str> = ids.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != ids.len() {
        problems.push(format!("{job_id}: two events share a webhook-id: {ids:?}"));
    }
    problems
}
