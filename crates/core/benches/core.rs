//! `make bench`: the hot pure paths of a delivery, timed against a baseline measured in the
//! same run (SHA-256 of the same bytes), so the ratios mean something on any machine.
//!
//! A plain harness (no criterion) keeps the dependency tree lean: each case runs for about
//! half a second after a warm-up, and the median of five rounds is reported.

use std::hint::black_box;
use std::time::{Duration, Instant};

use plangrep_core::retry::RetryPolicy;
use plangrep_core::webhook::{self, WebhookSecret};
use plangrep_core::{JobEvent, JobStatus, job};
use sha2::{Digest, Sha256};

/// Nanoseconds per call of `f`: median of five rounds of ~100 ms each.
fn measure(mut f: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        f();
    }
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            for _ in 0..100 {
                f();
            }
            calls += 100;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

/// A named case to time.
type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn main() {
    let secret = WebhookSecret::generate();
    let body = vec![b'x'; 4 * 1024];
    let header = webhook::sign(&secret, "evt_01", 1_700_000_000, &body);

    let baseline = measure(|| {
        black_box(Sha256::digest(black_box(&body)));
    });
    let cases: [Case; 4] = [
        (
            "sign a 4 KiB webhook",
            Box::new(|| {
                black_box(webhook::sign(
                    &secret,
                    "evt_01",
                    1_700_000_000,
                    black_box(&body),
                ));
            }),
        ),
        (
            "verify a 4 KiB webhook",
            Box::new(|| {
                let _ = black_box(webhook::verify(
                    &secret,
                    "evt_01",
                    1_700_000_000,
                    black_box(&body),
                    &header,
                    1_700_000_000,
                    300,
                ));
            }),
        ),
        (
            "job state transition",
            Box::new(|| {
                let _ = black_box(job::transition(
                    black_box(JobStatus::Processing),
                    black_box(JobEvent::ProcessingSucceeded),
                ));
            }),
        ),
        (
            "next retry time (attempt 8)",
            Box::new(|| {
                black_box(RetryPolicy::default().next_attempt(
                    black_box(8),
                    Duration::from_secs(3600),
                    None,
                    0.5,
                ));
            }),
        ),
    ];
    println!("baseline: sha256 of 4 KiB = {baseline:.0} ns");
    for (name, mut case) in cases {
        let nanos = measure(&mut case);
        println!(
            "{name:<32} {nanos:>10.0} ns   {:>6.2}x baseline",
            nanos / baseline
        );
    }
}
