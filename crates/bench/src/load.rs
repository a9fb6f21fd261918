//! Load shapes: a closed loop (N clients back to back for a while) and an open, paced
//! loop (a fixed rate for a while, whatever the latency). Both stop by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::Samples;

/// What a load phase did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Latency of each successful operation.
    pub latencies: Samples,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn absorb(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, started: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push(started.elapsed());
            }
            Err(error) => {
                self.failed += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    /// `p50 … ms, p99 … ms` (and the failures, if any).
    pub fn summary(&mut self) -> String {
        let mut summary = format!(
            "p50 {:.1} ms, p99 {:.1} ms, {} ops",
            self.latencies.percentile_ms(50.0),
            self.latencies.percentile_ms(99.0),
            self.ok
        );
        if self.failed > 0 {
            summary.push_str(&format!(
                ", {} failed (first: {})",
                self.failed,
                self.first_error.as_deref().unwrap_or_default()
            ));
        }
        summary
    }
}

/// `concurrency` clients each run `operation(n)` back to back (`n` counts every operation
/// started) until `duration` has passed.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, operation: F) -> Outcome
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let next = move || (Instant::now() < deadline).then(|| counter.fetch_add(1, Ordering::Relaxed));
    clients(concurrency, next, operation).await
}

/// `concurrency` clients run `operation(n)` back to back until `count` operations have
/// been started.
pub async fn fixed_count<F, Fut>(concurrency: usize, count: u64, operation: F) -> Outcome
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let next = move || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        (n < count).then_some(n)
    };
    clients(concurrency, next, operation).await
}

/// `concurrency` clients each run `operation(n)` for every `n` that `next` hands out,
/// until it hands out none.
async fn clients<N, F, Fut>(concurrency: usize, next: N, operation: F) -> Outcome
where
    N: Fn() -> Option<u64> + Clone + Send + Sync + 'static,
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (operation, next) = (operation.clone(), next.clone());
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                while let Some(n) = next() {
                    let began = Instant::now();
                    let result = operation(n).await;
                    outcome.record(began, result);
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome::default();
    for client in clients {
        total.absorb(client.await.expect("a load client panicked"));
    }
    total.elapsed = started.elapsed();
    total
}

/// Starts `operation(n)` `rate` times a second for `duration` (each in its own task, so a
/// slow one does not delay the next), then waits for all of them.
pub async fn paced<F, Fut>(rate: f64, duration: Duration, operation: F) -> Outcome
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / rate);
    let count = (duration.as_secs_f64() * rate).round() as u64;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for n in 0..count {
        ticks.tick().await;
        let operation = operation.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let began = Instant::now();
            let result = operation(n).await;
            outcome.record(began, result);
            outcome
        }));
    }
    let mut total = Outcome::default();
    for task in tasks {
        total.absorb(task.await.expect("an operation panicked"));
    }
    total.elapsed = started.elapsed();
    total
}
