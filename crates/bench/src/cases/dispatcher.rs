//! Case 3, dispatcher throughput: jobs with webhooks are created while the dispatcher is
//! stopped, so their events wait in its queue; then it starts, and the figure is
//! deliveries per second from the first webhook to the last at eight receivers that
//! answer at once. The baseline is a bare reqwest loop posting the same bodies, signed
//! the same way, with the dispatcher's worker count (16) as its concurrency. Optionally
//! 10 % of first attempts fail with 500 and are retried (both sides).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plangrep_core::webhook::{self, WebhookSecret};

use super::{JobCreator, Plan, settle};
use crate::load::fixed_count;
use crate::receiver::{Arrival, Receivers};
use crate::report::Row;
use crate::stack::{Service, Stack};

/// The dispatcher's default worker count (`PLANGREP_DISPATCHER_WORKERS`).
const WORKERS: usize = 32;
/// Receivers (destinations): with the default per-destination cap of 8, room for every
/// worker.
const RECEIVERS: usize = 8;

/// Deliveries per second, ours against the bare loop, with `fail_percent` % of first
/// attempts failing.
pub async fn throughput(plan: &Plan, fail_percent: u32) -> Row {
    let mut receivers = Receivers::start(RECEIVERS).await;
    receivers.fail_first_attempts(fail_percent);
    // A retry comes 50 ms after its failure (not the production 5 s), so the run measures
    // the dispatcher rather than the schedule.
    let settings = [("PLANGREP_WEBHOOK_RETRY_INITIAL", "50ms".to_owned())];
    let mut stack = Stack::start(&[Service::Orchestrator, Service::Gateway], &settings).await;
    let customer = stack.customer().await;
    let pool = stack.pool().await;
    let creator = JobCreator::new(&customer, &receivers.urls);
    let created = fixed_count(16, plan.dispatcher_jobs as u64, move |n| {
        creator.clone().create(n)
    })
    .await;
    settle(&pool, Duration::from_secs(120)).await;
    let expected = created.ok as usize * 2;
    stack.start_service(Service::Dispatcher).await;
    let meter = stack.cpu_meter();
    let started = meter.now();
    let arrivals = collect(&mut receivers, expected).await;
    let ours = span_rate(&arrivals);
    let delivered = arrivals.iter().filter(|a| a.accepted).count();
    let failed_first = arrivals.len() - delivered;
    let ours_cpu = meter
        .now()
        .per_operation(&started, delivered as u64, "delivery");

    let bodies: Vec<(String, bytes::Bytes)> = arrivals
        .into_iter()
        .filter(|a| a.accepted)
        .map(|a| (format!("{}-bare", a.webhook_id), a.body))
        .collect();
    let started = meter.now();
    let bare = bare_loop(&receivers.urls, bodies).await;
    let bare_arrivals = receivers.drain();
    let bare_rate = span_rate(&bare_arrivals);
    let bare_cpu = meter.now().per_operation(
        &started,
        bare_arrivals.iter().filter(|a| a.accepted).count() as u64,
        "delivery",
    );

    let case = if fail_percent == 0 {
        "dispatcher deliveries".to_owned()
    } else {
        format!("dispatcher deliveries, {fail_percent} % of first attempts fail")
    };
    Row::new("dispatcher", case, ours, "deliveries/s")
        .against(
            bare_rate,
            format!(
                "bare reqwest loop, {WORKERS} concurrent, same signed bodies ({bare} posts; \
                 {bare_cpu})"
            ),
        )
        .ratio_at_least(0.6)
        .detail(format!(
            "{delivered}/{expected} delivered, {failed_first} failed first attempts retried; \
             {ours_cpu}"
        ))
}

/// Arrivals until `expected` were accepted (bounded by three minutes).
async fn collect(receivers: &mut Receivers, expected: usize) -> Vec<Arrival> {
    let mut arrivals = Vec::with_capacity(expected);
    let mut accepted = 0;
    let started = Instant::now();
    while accepted < expected && started.elapsed() < Duration::from_secs(180) {
        if let Ok(Some(arrival)) =
            tokio::time::timeout(Duration::from_secs(5), receivers.next()).await
        {
            accepted += usize::from(arrival.accepted);
            arrivals.push(arrival);
        }
    }
    arrivals
}

/// Accepted arrivals per second between the first arrival and the last.
fn span_rate(arrivals: &[Arrival]) -> f64 {
    let times = || arrivals.iter().map(|a| a.at);
    let (Some(first), Some(last)) = (times().min(), times().max()) else {
        return 0.0;
    };
    let span = last.duration_since(first).unwrap_or_default().as_secs_f64();
    let accepted = arrivals.iter().filter(|a| a.accepted).count();
    accepted.saturating_sub(1) as f64 / span.max(1e-6)
}

/// Posts every body, signed, from [`WORKERS`] concurrent loops, retrying a failure at
/// once; returns how many posts it made.
async fn bare_loop(urls: &[String], bodies: Vec<(String, bytes::Bytes)>) -> usize {
    let client = reqwest::Client::builder()
        .user_agent("bench-bare-loop")
        .build()
        .expect("client");
    let secret = Arc::new(WebhookSecret::generate());
    let bodies = Arc::new(bodies);
    let urls = Arc::new(urls.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, secret, bodies, urls, next, posts) = (
                client.clone(),
                secret.clone(),
                bodies.clone(),
                urls.clone(),
                next.clone(),
                posts.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, body)) = bodies.get(i) else {
                        break;
                    };
                    loop {
                        posts.fetch_add(1, Ordering::Relaxed);
                        let timestamp = chrono::Utc::now().timestamp();
                        let signature =
                            webhook::sign_all(std::slice::from_ref(&secret), id, timestamp, body);
                        let sent = client
                            .post(&urls[i % urls.len()])
                            .header("content-type", "application/json")
                            .header("webhook-id", id)
                            .header("webhook-timestamp", timestamp.to_string())
                            .header("webhook-signature", signature)
                            .body(body.clone())
                            .send()
                            .await;
                        if let Ok(response) = sent {
                            let success = response.status().is_success();
                            let _ = response.bytes().await;
                            if success {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in loops {
        task.await.expect("a bare loop panicked");
    }
    posts.load(Ordering::Relaxed)
}
