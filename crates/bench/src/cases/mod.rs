//! The cases of the suite, each measuring the platform and its baseline in the same run.

pub mod create_jobs;
pub mod dispatcher;
pub mod growth;
pub mod latency;
pub mod uploads;

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use sqlx::PgPool;

use crate::stack::Customer;

/// How long and how much: the full suite, or the smoke run that only proves it works.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Each measured phase of the create-job case (and its baseline).
    pub create_phase: Duration,
    /// The sustained-rate phase of the latency case.
    pub latency_phase: Duration,
    /// Jobs per second in the latency case (each makes two status changes).
    pub latency_jobs_per_second: f64,
    /// Jobs (two deliveries each) queued for the dispatcher case.
    pub dispatcher_jobs: usize,
    /// Jobs and delivery rows already stored in the cost-growth case.
    pub backlog_rows: i64,
    /// Jobs whose receivers are down in the cost-growth case.
    pub failing_jobs: usize,
    /// Bytes of the large upload.
    pub upload_bytes: u64,
    /// Sheets of the processed drawing set.
    pub drawing_pages: usize,
}

impl Plan {
    /// The full suite (a few minutes) or the smoke run (seconds).
    pub fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                create_phase: Duration::from_millis(800),
                latency_phase: Duration::from_secs(2),
                latency_jobs_per_second: 20.0,
                dispatcher_jobs: 50,
                backlog_rows: 5_000,
                failing_jobs: 10,
                upload_bytes: 8 << 20,
                drawing_pages: 20,
            }
        } else {
            Self {
                create_phase: Duration::from_secs(5),
                latency_phase: Duration::from_secs(30),
                latency_jobs_per_second: 100.0,
                dispatcher_jobs: 2_000,
                backlog_rows: 1_000_000,
                failing_jobs: 1_000,
                upload_bytes: 512 << 20,
                drawing_pages: 500,
            }
        }
    }
}

/// An HTTP client for the load (connections kept, no timeouts beyond the phase's).
pub fn load_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

/// `POST /projects/{id}/jobs` as `customer`, with a `webhookUrl` and an
/// `Idempotency-Key` when given; `Ok` on 202.
pub async fn create_job(
    client: &reqwest::Client,
    customer: &Customer,
    webhook_url: Option<&str>,
    idempotency_key: Option<String>,
) -> Result<(), String> {
    let body = match webhook_url {
        Some(url) => format!(r#"{{"webhookUrl":"{url}"}}"#),
        None => String::from("{}"),
    };
    let mut request = client
        .post(&customer.jobs_url)
        .bearer_auth(&customer.api_key)
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        202 => {
            // Read the body: the client's work includes it.
            response.bytes().await.map_err(|e| e.to_string())?;
            Ok(())
        }
        status => Err(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default()
        )),
    }
}

/// Waits until the event path is idle: no job still provisioning, nothing unpublished in
/// the outbox and no delivery due now (deliveries retrying later do not count), so one
/// phase's tail does not run into the next; then refreshes the planner's statistics.
pub async fn settle(pool: &PgPool, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    let mut idle_checks = 0;
    while idle_checks < 2 {
        let busy: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM orchestrator.jobs WHERE status = 'provisioning') \
                  + (SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NULL) \
                  + (SELECT count(*) FROM dispatcher.deliveries WHERE state = 'pending' \
                       AND attempt_count = 0 AND next_attempt_at <= now())",
        )
        .fetch_one(pool)
        .await
        .expect("the stack's database answers");
        idle_checks = if busy == 0 { idle_checks + 1 } else { 0 };
        if tokio::time::Instant::now() >= deadline {
            eprintln!("  (still busy after {patience:?}: {busy} items; going on)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Statistics as autovacuum keeps them in a long-running deployment (a phase can add
    // tens of thousands of rows to tables that were empty a minute ago).
    sqlx::query("ANALYZE")
        .execute(pool)
        .await
        .expect("the stack's database answers");
}
