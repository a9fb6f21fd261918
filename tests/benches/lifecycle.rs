//! `make bench` (lifecycle part): the upload path, the PDF parser and the cost of span
//! export, measured on the real services built in release mode, each beside a baseline
//! measured in the same run, so a ratio means something on a noisy machine. Goals,
//! reported, never asserted: an upload streams at ≥ 100 MB/s on loopback with the process
//! growing < 20 MB during a 512 MiB upload; preflight of a 500-page PDF takes < 2 s
//! (issue 7); exporting spans to an OTLP collector costs < 10 % of throughput (issue 12).
//!
//! `BENCH_SMOKE=1` shrinks every case to seconds (so the harness never rots).
//! Results: a table on stdout and `target/bench/lifecycle.json`.

#[allow(dead_code, unused_imports)]
#[path = "../system/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use helpers::{TestApp, expect_status};
use plangrep_job_orchestrator::pdf::{Inspector, Limits};
use sha2::Digest;

const CHUNK: usize = 256 * 1024;

/// A deterministic, incompressible-enough body of `len` bytes, produced chunk by chunk.
fn body_chunks(len: u64) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks = len.div_ceil(CHUNK as u64);
    futures_util::stream::iter(0..chunks).map(move |i| {
        let size = CHUNK.min((len - i * CHUNK as u64) as usize);
        Ok((0..size).map(|j| (j as u64 * 31 + i * 7) as u8).collect())
    })
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Row {
    case: &'static str,
    value: f64,
    unit: &'static str,
    baseline: f64,
    goal: &'static str,
}

async fn upload_case(size: u64) -> (Row, Row) {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let job = app.create_job(&key).await;
    app.wait_until_awaiting_uploads(&key, &job).await;

    // Baseline: the same bytes hashed and written to a local file (the storage floor).
    let scratch = std::env::temp_dir().join(format!("plangrep-bench-{}", std::process::id()));
    let start = Instant::now();
    let mut file = tokio::fs::File::create(&scratch).await.unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut chunks = std::pin::pin!(body_chunks(size));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        hasher.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .unwrap();
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await.unwrap();
    drop(file);
    let baseline_secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&scratch);

    // The upload, with the kernel's peak-RSS mark reset first ("5" to clear_refs), so
    // VmHWM afterwards is the peak during the upload.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_bytes("VmRSS:");
    let metadata = serde_json::json!({ "files": [{
        "partName": "file0", "fileName": "big.pdf", "contentType": "application/pdf"
    }]});
    let part = reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(body_chunks(size)),
        size,
    )
    .file_name("big.pdf");
    let form = reqwest::multipart::Form::new()
        .text("metadata", metadata.to_string())
        .part("file0", part);
    let start = Instant::now();
    let response = app
        .api(reqwest::Method::POST, &format!("/jobs/{job}/files"), &key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect_status(response, 200).await;
    let secs = start.elapsed().as_secs_f64();
    let growth = status_bytes("VmHWM:").saturating_sub(before);
    app.stop().await;
    let mb = size as f64 / 1e6;
    (
        Row {
            case: "upload throughput",
            value: mb / secs,
            unit: "MB/s",
            baseline: mb / baseline_secs,
            goal: ">= 100 MB/s (baseline: hash + write to local disk)",
        },
        Row {
            case: "process RSS growth during the upload",
            value: growth as f64 / 1e6,
            unit: "MB",
            baseline: size as f64 / 1e6,
            goal: "< 20 MB (baseline: the upload's size)",
        },
    )
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
    let (upload_bytes, pages) = if smoke {
        (8 << 20, 20)
    } else {
        (512 << 20, 500)
    };
    let (throughput, memory) = upload_case(upload_bytes).await;
    let preflight = preflight_case(pages).await;
    let export = export_cost_case(Duration::from_secs(if smoke { 1 } else { 5 })).await;
    let rows = [throughput, memory, preflight, export];
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
