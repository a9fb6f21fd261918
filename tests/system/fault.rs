//! The fault suite (issue 9): a few hundred jobs with webhooks to a local receiver, created
//! at a steady pace, while — one at a time, at random moments — each service is SIGKILLed
//! and restarted, the stack's RabbitMQ connections and PostgreSQL backends are cut from
//! the server side, and the receiver goes away and comes back. Then: every status change
//! of every job reached the receiver, in per-job order, duplicates under the same
//! `webhook-id`, no job stuck, and readiness followed each outage.
//!
//! The services run as real processes (so they can be SIGKILLed) on loopback, in a
//! database and a RabbitMQ virtual host of the test's own. The schedule comes from a
//! seeded RNG: the seed is printed, and `FAULT_SEED=<seed>` replays it. nextest runs this
//! module alone, after every other test (`.config/nextest.toml`, `make unit`).

mod faults;
mod ledger;
mod outages;
mod stack;
mod traffic;

use std::time::{Duration, Instant};

use plangrep_test_support::receiver::Receiver;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, PATIENCE, expect_status};
use faults::Fault;
use ledger::Ledger;
use stack::Stack;
use traffic::Customer;

/// Jobs created over the run.
const JOBS: usize = 240;
/// One job created every…
const PACE: Duration = Duration::from_millis(200);
/// Where every job ends without uploads.
const FINAL_STATUS: &str = "awaiting_uploads";
/// How long the platform may take, after the last fault, to deliver what is owed.
const CATCH_UP: Duration = Duration::from_secs(90);

/// The test's settings over the stack defaults: polls and a webhook retry schedule small
/// enough that the run takes a couple of minutes, and rate limits out of the way.
fn settings() -> Vec<(&'static str, String)> {
    [
        ("PLANGREP_OUTBOX_POLL_INTERVAL", "200ms"),
        ("PLANGREP_DISPATCHER_POLL_INTERVAL", "100ms"),
        ("PLANGREP_WEBHOOK_RETRY_INITIAL", "100ms"),
        ("PLANGREP_WEBHOOK_RETRY_MULTIPLIER", "2"),
        ("PLANGREP_WEBHOOK_RETRY_MAX_INTERVAL", "1s"),
        ("PLANGREP_WEBHOOK_MAX_ATTEMPTS", "500"),
        ("PLANGREP_WEBHOOK_TIMEOUT", "2s"),
        ("PLANGREP_WEBHOOK_CONNECT_TIMEOUT", "1s"),
        ("PLANGREP_DISPATCHER_WORKERS", "8"),
        ("PLANGREP_RATE_LIMIT_PER_SECOND", "1000"),
        ("PLANGREP_RATE_LIMIT_BURST", "1000"),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_status_change_is_lost_or_reordered_through_crashes_and_outages() {
    plangrep_test_support::init_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fault suite seed {seed} (FAULT_SEED={seed} replays this schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut receiver = Receiver::start().await;
    let mut stack = Stack::start(&settings()).await;
    let http = reqwest::Client::new();
    let customer = onboard(&http, &stack.gateway_url, receiver.url()).await;

    let started = Instant::now();
    let creating = tokio::spawn(traffic::create_jobs(customer.clone(), JOBS, PACE));
    let mut schedule = Fault::ALL;
    schedule.shuffle(&mut rng);
    let mut log = Vec::new();
    for fault in schedule {
        // A random moment: the gap before the next fault.
        let gap = Duration::from_millis(rng.random_range(1_000..6_000));
        tokio::time::sleep(gap).await;
        let at = started.elapsed();
        let line = faults::inject(fault, &mut stack, &mut receiver, &mut rng).await;
        log.push(format!("  t+{at:.1?} {line}"));
    }
    let faults_done = started.elapsed();
    let created = creating.await.expect("job creation");
    let created_in = started.elapsed();

    let mut ledger = Ledger::default();
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        ledger.record(receiver.drain());
        let owed = created
            .jobs
            .iter()
            .filter(|job| !ledger.has_received(job, FINAL_STATUS))
            .count();
        if owed == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut statuses = Vec::new();
    for job in &created.jobs {
        statuses.push(job_status(&http, &customer, job).await);
    }

    println!("faults, one at a time:\n{}", log.join("\n"));
    println!(
        "{} jobs created in {:.1?} ({} attempts retried through outages), faults over at {faults_done:.1?}, \
         {} deliveries received ({} duplicates), checked at {:.1?}",
        created.jobs.len(),
        created_in,
        created.retried,
        ledger.total(),
        ledger.duplicates(),
        started.elapsed(),
    );
    let mut problems: Vec<String> = created
        .unexpected
        .iter()
        .map(|answer| format!("an answer no outage explains: {answer}"))
        .collect();
    for (job, status) in created.jobs.iter().zip(&statuses) {
        if status != FINAL_STATUS {
            problems.push(format!("{job}: stuck in {status}, expected {FINAL_STATUS}"));
        }
    }
    problems.extend(ledger.problems(&created.jobs, FINAL_STATUS));
    let errors = stack.errors();
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems, the first ones:\n{}\nerrors the services logged:\n{}",
        problems.len(),
        first(&problems, 30),
        first(&errors, 30),
    );
}

fn first(lines: &[String], count: usize) -> String {
    lines
        .iter()
        .take(count)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// An organization, a key and a ready project, through the admin and public APIs.
async fn onboard(http: &reqwest::Client, gateway_url: &str, webhook_url: String) -> Customer {
    let org = expect_status(
        http.post(format!("{gateway_url}/admin/v1/orgs"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": "Fault Suite Builders" }))
            .send()
            .await
            .expect("gateway reachable"),
        201,
    )
    .await;
    let org_id = org["org"]["id"].as_str().expect("org id");
    let key = expect_status(
        http.post(format!("{gateway_url}/admin/v1/orgs/{org_id}/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "label": "fault suite", "scopes": ["jobs:read", "jobs:write"] }))
            .send()
            .await
            .expect("gateway reachable"),
        201,
    )
    .await["plaintextKey"]
        .as_str()
        .expect("plaintext key")
        .to_owned();
    let project = expect_status(
        http.post(format!("{gateway_url}/api/open/v1/projects"))
            .bearer_auth(&key)
            .json(&json!({ "name": "Under fire" }))
            .send()
            .await
            .expect("gateway reachable"),
        202,
    )
    .await;
    let project_id = project["project"]["id"]
        .as_str()
        .expect("project id")
        .to_owned();
    plangrep_test_support::eventually("the project to be ready", PATIENCE, || async {
        let body: Value = http
            .get(format!("{gateway_url}/api/open/v1/projects/{project_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["project"]["status"] == "ready").then_some(())
    })
    .await;
    Customer {
        gateway_url: gateway_url.to_owned(),
        key,
        project_id,
        webhook_url,
    }
}

/// The job's status now, as the API reports it.
async fn job_status(http: &reqwest::Client, customer: &Customer, job_id: &str) -> String {
    let response = http
        .get(format!(
            "{}/api/open/v1/jobs/{job_id}",
            customer.gateway_url
        ))
        .bearer_auth(&customer.key)
        .send()
        .await
        .expect("gateway reachable");
    expect_status(response, 200).await["job"]["status"]
        .as_str()
        .expect("status")
        .to_owned()
}
