//! The cases of the suite, each measuring the platform and its baseline in the same run.

pub mod create_jobs;
pub mod dispatcher;
pub mod growth;
pub mod latency;
pub mod uploads;

use std::sync::Arc;
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

/// Creates jobs as one customer over one HTTP client (connections kept): job `n` gets
/// the `n`-th of the webhook URLs (round robin; none when there are none) and, when
/// idempotent, an `Idempotency-Key` of its own. Cheap to clone into load clients.
#[derive(Clone)]
pub struct JobCreator {
    client: reqwest::Client,
    customer: Arc<Customer>,
    webhook_urls: Arc<Vec<String>>,
    /// Set when every create carries a key (unique to this creator and `n`).
    idempotency_run: Option<String>,
}

impl JobCreator {
    /// Creates as `customer`, with `webhook_urls` on the jobs.
    pub fn new(customer: &Customer, webhook_urls: &[String]) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(256)
                .build()
                .expect("client"),
            customer: Arc::new(customer.clone()),
            webhook_urls: Arc::new(webhook_urls.to_vec()),
            idempotency_run: None,
        }
    }

    /// Every create carries an `Idempotency-Key`.
    pub fn idempotent(mut self) -> Self {
        self.idempotency_run = Some(ulid::Ulid::generate().to_string());
        self
    }

    /// `POST /projects/{id}/jobs` for job `n`; `Ok` on 202.
    pub async fn create(self, n: u64) -> Result<(), String> {
        let body = match self
            .webhook_urls
            .get(n as usize % self.webhook_urls.len().max(1))
        {
            Some(url) => format!(r#"{{"webhookUrl":"{url}"}}"#),
            None => String::from("{}"),
        };
        let mut request = self
            .client
            .post(&self.customer.jobs_url)
            .bearer_auth(&self.customer.api_key)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(run) = &self.idempotency_run {
            request = request.header("Idempotency-Key", format!("bench-{run}-{n}"));
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
}

/// Waits until the event path is idle ([`idle`]), so one phase's tail does not run into
/// the next; then refreshes the planner's statistics.
pub async fn settle(pool: &PgPool, patience: Duration) {
    idle(pool, patience).await;
    // Statistics as autovacuum keeps them in a long-running deployment (a phase can add
    // tens of thousands of rows to tables that were empty a minute ago).
    sqlx::query("ANALYZE")
        .execute(pool)
        .await
        .expect("the stack's database answers");
}

/// Waits until no job is still provisioning, nothing is unpublished in the outbox and no
/// delivery is due now (deliveries retrying later do not count).
pub async fn idle(pool: &PgPool, patience: Duration) {
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
}
