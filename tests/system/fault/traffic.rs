//! The fault suite's steady load: jobs created through the public API at a fixed pace
//! (a few requests in flight, so a slow answer does not slow the pace), each retried under
//! its own `Idempotency-Key` until the platform accepts it, whatever is down at the time,
//! as a careful customer would.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

/// How long one job may take to be accepted, faults included.
const ACCEPT_PATIENCE: Duration = Duration::from_secs(60);

/// Creations in flight at once, at most.
const IN_FLIGHT: usize = 16;

/// What creating the jobs saw.
#[derive(Debug, Default)]
pub struct Created {
    /// The accepted jobs' ids, in creation order.
    pub jobs: Vec<String>,
    /// Attempts answered by an outage as the SPEC says (503 `unavailable`, a refused or
    /// dropped connection, 409 `idempotency_request_in_progress`) and retried.
    pub retried: usize,
    /// Answers no outage explains (a 500, a 401 because the key could not be looked up, …),
    /// retried too but reported: "dependency outage → 503; only bugs are 500".
    pub unexpected: Vec<String>,
}

/// Where and how to create the jobs.
#[derive(Clone)]
pub struct Customer {
    pub gateway_url: String,
    pub key: String,
    pub project_id: String,
    pub webhook_url: String,
}

/// Creates `count` jobs, one every `pace`.
pub async fn create_jobs(customer: Customer, count: usize, pace: Duration) -> Created {
    let client = reqwest::Client::builder()
        // Above the gateway's 10 s gRPC deadline: a slow answer is still an answer.
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let customer = Arc::new(customer);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut ticks = tokio::time::interval(pace);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut creations = Vec::with_capacity(count);
    for index in 0..count {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await.expect("open");
        let (client, customer) = (client.clone(), customer.clone());
        creations.push(tokio::spawn(async move {
            let mut seen = Created::default();
            let job = create_one(&client, &customer, index, &mut seen).await;
            drop(permit);
            (job, seen)
        }));
    }
    let mut created = Created::default();
    for creation in creations {
        let (job, seen) = creation.await.expect("a job creation panicked");
        created.jobs.push(job);
        created.retried += seen.retried;
        created.unexpected.extend(seen.unexpected);
    }
    created
}

/// Creates job `index`, retrying through outages; `seen` collects what it was answered.
async fn create_one(
    client: &reqwest::Client,
    customer: &Customer,
    index: usize,
    created: &mut Created,
) -> String {
    let idempotency_key = format!("fault-suite-job-{index}");
    let deadline = tokio::time::Instant::now() + ACCEPT_PATIENCE;
    loop {
        let answer = client
            .post(format!(
                "{}/api/open/v1/projects/{}/jobs",
                customer.gateway_url, customer.project_id
            ))
            .bearer_auth(&customer.key)
            .header("idempotency-key", &idempotency_key)
            .json(&json!({ "webhookUrl": customer.webhook_url, "externalId": idempotency_key }))
            .send()
            .await;
        match answer {
            Err(_) => created.retried += 1,
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match (status, body["error"]["code"].as_str()) {
                    (202, _) => {
                        return body["job"]["id"]
                            .as_str()
                            .unwrap_or_else(|| panic!("202 without a job id: {body}"))
                            .to_owned();
                    }
                    (503, Some("unavailable")) | (409, Some("idempotency_request_in_progress")) => {
                        created.retried += 1
                    }
                    _ => created
                        .unexpected
                        .push(format!("job {index}: {status} {body}")),
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {index} was not accepted within {ACCEPT_PATIENCE:?}; unexpected answers: {:?}",
            created.unexpected
        );
        // A customer's retry pause, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
