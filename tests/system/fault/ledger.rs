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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(job: &str, sequence: u64, id: &str, status: &str, previous: &str) -> Captured {
        let previous = (!previous.is_empty()).then_some(previous);
        let body = serde_json::json!({
            "type": "job.status_changed",
            "data": {
                "job": { "id": job, "status": status },
                "previousStatus": previous,
                "sequence": sequence,
            },
        });
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("webhook-id", id.parse().expect("header value"));
        Captured {
            path: "/webhooks".to_owned(),
            headers,
            body: serde_json::to_vec(&body).expect("JSON").into(),
            received_at: std::time::Instant::now(),
        }
    }

    #[test]
    fn the_ledger_flags_lost_reordered_and_relabelled_events_and_unknown_jobs() {
        const P: &str = "provisioning";
        const A: &str = "awaiting_uploads";
        let mut ledger = Ledger::default();
        ledger.record(vec![
            // Fine, with a duplicate.
            delivery("job_fine", 1, "evt_f1", P, ""),
            delivery("job_fine", 1, "evt_f1", P, ""),
            delivery("job_fine", 2, "evt_f2", A, P),
            // Event 2 before event 1.
            delivery("job_reordered", 2, "evt_r2", A, P),
            delivery("job_reordered", 1, "evt_r1", P, ""),
            // A duplicate under another webhook-id.
            delivery("job_relabelled", 1, "evt_l1", P, ""),
            delivery("job_relabelled", 1, "evt_other", P, ""),
            delivery("job_relabelled", 2, "evt_l2", A, P),
            // Event 1 never arrived.
            delivery("job_lost", 2, "evt_o2", A, P),
            // Event 2 never arrived.
            delivery("job_short", 1, "evt_s1", P, ""),
            // Nobody created it.
            delivery("job_unknown", 1, "evt_u1", P, ""),
        ]);
        let jobs: Vec<String> = [
            "job_fine",
            "job_reordered",
            "job_relabelled",
            "job_lost",
            "job_short",
        ]
        .map(str::to_owned)
        .to_vec();

        let problems = ledger.problems(&jobs, A);

        let about = |job: &str| problems.iter().filter(|p| p.starts_with(job)).count();
        assert_eq!(about("job_fine"), 0, "{problems:#?}");
        for job in [
            "job_reordered",
            "job_relabelled",
            "job_lost",
            "job_short",
            "job_unknown",
        ] {
            assert!(about(job) > 0, "{job} not flagged: {problems:#?}");
        }
        assert_eq!(ledger.duplicates(), 2);
        assert_eq!(ledger.total(), 11);
    }
}
