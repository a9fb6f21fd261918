//! `make bench` (lifecycle part): the PDF parser and the cost of span export, measured in
//! release mode, each beside a baseline measured in the same run, so a ratio means
//! something on a noisy machine. Goals, reported, never asserted: preflight of a
//! 500-page PDF takes < 2 s (issue 7); exporting spans to an OTLP collector costs < 10 %
//! of throughput (issue 12). Uploads and end-to-end processing are measured on the
//! service processes by `plangrep-bench` (crates/bench).
//!
//! `BENCH_SMOKE=1` shrinks every case to seconds (so the harness never rots).
//! Results: a table on stdout and `target/bench/lifecycle.json`.

#[allow(dead_code, unused_imports)]
#[path = "../system/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use helpers::TestApp;
use plangrep_job_orchestrator::pdf::{Inspector, Limits};

struct Row {
    case: &'static str,
    value: f64,
    unit: &'static str,
    baseline: f64,
    goal: &'static str,
}

async fn preflight_case(pages: usize) -> Row {
    let program = std::path::PathBuf::from(helpers::orchestrator_binary());
    let inspector = Inspector::new(program, Limits::default());
    let dir = std::env::temp_dir().join(format!("plangrep-bench-pdf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.pdf");
    let small = dir.join("small.pdf");
    std::fs::write(&big, plangrep_test_support::pdf::many_pages(pages)).unwrap();
    std::fs::write(&small, plangrep_test_support::pdf::many_pages(1)).unwrap();
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let mut baseline = Vec::new();
    let mut measured = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(inspector.inspect(&small).await.unwrap().len(), 1);
        baseline.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        assert_eq!(inspector.inspect(&big).await.unwrap().len(), pages);
        measured.push(start.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(dir);
    Row {
        case: "preflight of a many-page PDF",
        value: median(measured),
        unit: "s",
        baseline: median(baseline),
        goal: "< 2 s for 500 pages (baseline: a 1-page PDF, the process floor)",
    }
}

/// `GET /projects` answered per second by `app` with 16 clients for `duration`.
async fn requests_per_second(app: &TestApp, key: &str, duration: Duration) -> f64 {
    let deadline = Instant::now() + duration;
    let clients = (0..16).map(|_| async {
        let mut answered = 0u64;
        while Instant::now() < deadline {
            let response = app
                .api(reqwest::Method::GET, "/projects", key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            answered += 1;
        }
        answered
    });
    let answered: u64 = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .sum();
    answered as f64 / duration.as_secs_f64()
}

async fn export_cost_case(duration: Duration) -> Row {
    // The span layer the services' exporters feed, as a service's `main` installs it.
    plangrep_telemetry::init_for_tests();
    let (endpoint, mut received) = plangrep_test_support::otlp::start().await;
    let exported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = exported.clone();
    tokio::spawn(async move {
        while let Some(request) = received.recv().await {
            let spans: usize = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            counter.fetch_add(spans, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let unlimited = |options: helpers::Options| {
        options
            .with("PLANGREP_RATE_LIMIT_PER_SECOND", "1000000")
            .with("PLANGREP_RATE_LIMIT_BURST", "1000000")
    };
    // Exports are registered per service name in the process, so the export-on stack runs
    // only during its own rounds: while it is stopped, nothing in the process exports.
    let off = TestApp::spawn_with(unlimited(helpers::Options::default())).await;
    let (_, off_key) = off.create_customer().await;
    let (mut without, mut with) = (0.0, 0.0);
    for _ in 0..3 {
        without += requests_per_second(&off, &off_key, duration).await;
        let on = TestApp::spawn_with(
            unlimited(helpers::Options::default()).with("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        )
        .await;
        let (_, on_key) = on.create_customer().await;
        with += requests_per_second(&on, &on_key, duration).await;
        on.stop().await;
    }
    off.stop().await;
    let exported = exported.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        exported > 0,
        "the export-on stack exported no span: nothing was measured"
    );
    println!("(span export: {exported} spans reached the collector)");
    Row {
        case: "GET /projects with span export on",
        value: with / 3.0,
        unit: "rq/s",
        baseline: without / 3.0,
        goal: ">= 0.9 of export off (baseline: the same stack, export off)",
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let smoke = std::env::var_os("BENCH_SMOKE").is_some();
    let pages = if smoke { 20 } else { 500 };
    let preflight = preflight_case(pages).await;
    let export = export_cost_case(Duration::from_secs(if smoke { 1 } else { 5 })).await;
    let rows = [preflight, export];
    println!(
        "{:<38} {:>12} {:>12} {:>8}  goal",
        "case", "value", "baseline", "ratio"
    );
    for row in &rows {
        println!(
            "{:<38} {:>9.3} {:<4} {:>9.3} {:<4} {:>8.3}  {}",
            row.case,
            row.value,
            row.unit,
            row.baseline,
            row.unit,
            row.value / row.baseline,
            row.goal
        );
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "case": row.case, "value": row.value, "unit": row.unit,
                "baseline": row.baseline, "ratio": row.value / row.baseline, "goal": row.goal,
            })
        })
        .collect();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("lifecycle.json"),
        serde_json::to_vec_pretty(&serde_json::json!({ "smoke": smoke, "results": json })).unwrap(),
    )
    .unwrap();
}
