//! `plangrep-bench`: the platform's reproducible benchmark (`make bench`, issue 11).
//!
//! It starts the three services built in release mode as processes on loopback, against
//! the local PostgreSQL and RabbitMQ, drives them like customers do, and prints every
//! figure beside a baseline measured in the same run (so a ratio means something on a
//! noisy shared machine), with its goal; the same rows land in
//! `<target>/bench/latest.json`. Goals are reported, never asserted: the exit code says
//! only whether the suite ran. `--smoke` (or `BENCH_SMOKE=1`) shrinks every case to
//! seconds so the harness never rots; `make test` runs it.

mod cases;
mod cpu;
mod load;
mod receiver;
mod report;
mod stack;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cases::create_jobs::{self, SqlBaseline};
use cases::growth::{self, Clean};
use cases::{Plan, dispatcher, idle, latency, settle, uploads};
use receiver::Receivers;
use report::Row;
use stack::{Memory, Service, Stack};

/// Where the JSON goes: `<target>/bench/latest.json`, next to the profile folder this
/// binary runs from.
fn output_path() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let target = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/plangrep-bench");
    target.join("bench").join("latest.json")
}

fn memory_rows(service: Service, idle: Memory, loaded: Memory) -> [Row; 2] {
    [
        Row::new(
            "memory",
            format!("{} RSS idle", service.binary()),
            idle.rss_mb,
            "MB",
        )
        .at_most(40.0),
        Row::new(
            "memory",
            format!("{} peak RSS under load", service.binary()),
            loaded.peak_mb,
            "MB",
        )
        .at_most(150.0)
        .detail(format!("RSS at the end {:.1} MB", loaded.rss_mb)),
    ]
}

#[tokio::main]
async fn main() {
    let smoke = std::env::args().any(|arg| arg == "--smoke")
        || std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1");
    let plan = Plan::new(smoke);
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1} s] {what}", started.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    // reqwest is built without a default crypto provider (no aws-lc); the load is plain
    // HTTP, but the client builder insists on one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    step("starting the platform (release build) and the receivers");
    let mut receivers = Receivers::start(8).await;
    let stack = Stack::start(&Service::ALL, &[]).await;
    let customer = stack.customer().await;
    let pool = stack.pool().await;
    settle(&pool, Duration::from_secs(30)).await;
    if let Some(seconds) = profile_seconds() {
        // `--profile SECONDS [--no-webhooks]`: only creates at 16 clients (with webhooks
        // unless told otherwise), for a profiler attached from outside
        // (docs/benchmarks.md); no table.
        let webhooks = !std::env::args().any(|arg| arg == "--no-webhooks");
        // Warmed up and analyzed like the measured cases: statistics of empty tables
        // would leave cached plans (foreign-key checks among them) scanning tables that
        // grow under the load.
        create_jobs::platform_phase(&customer, 16, plan.create_phase / 4, false, &[]).await;
        settle(&pool, Duration::from_secs(60)).await;
        let pids = Service::ALL.map(|service| (service.binary(), stack.pid(service)));
        eprintln!("service pids: {pids:?}");
        let meter = stack.cpu_meter();
        let before = meter.now();
        let mut outcome = create_jobs::platform_phase(
            &customer,
            16,
            Duration::from_secs(seconds),
            false,
            if webhooks { &receivers.urls } else { &[] },
        )
        .await;
        println!("{:.0} jobs/s, {}", outcome.rate(), outcome.summary());
        idle(&pool, Duration::from_secs(60)).await;
        println!("{}", meter.now().per_operation(&before, outcome.ok, "job"));
        return;
    }
    let idle = Service::ALL.map(|service| stack.memory(service));
    let baseline = Arc::new(SqlBaseline::prepare().await);

    // `--only create|latency|dispatcher`: one part of the suite (growth and memory need
    // the whole run).
    let only = flag_value("--only");
    let wants = |group: &str| only.as_deref().is_none_or(|only| only == group);
    let mut clean_create_rate = 0.0;
    if wants("create") {
        step("1. create-job throughput against the same SQL");
        rows.extend(
            create_jobs::throughput(&plan, &customer, &baseline, &pool, &stack.cpu_meter()).await,
        );
        clean_create_rate = rows[0].value;
        step("1. create-job with webhookUrl");
        rows.push(create_jobs::with_webhooks(&plan, &customer, &mut receivers, &pool).await);
    }

    if wants("latency") {
        step("2. event latency at a sustained rate");
        let mut clean_latency = latency::measure(
            &customer,
            &mut receivers,
            &pool,
            plan.latency_jobs_per_second,
            plan.latency_phase,
        )
        .await;
        let detail = clean_latency.detail();
        for (name, p, goal) in [("p50", 50.0, 8.0), ("p99", 99.0, 25.0)] {
            rows.push(
                Row::new(
                    "latency",
                    format!("event latency {name} (commit → webhook received)"),
                    clean_latency.event.percentile_ms(p),
                    "ms",
                )
                .at_most(goal)
                .unmet_unless(clean_latency.complete())
                .detail(detail.clone()),
            );
        }
        settle(&pool, Duration::from_secs(60)).await;

        if only.is_none() {
            step("4. uploads and processing");
            rows.extend(uploads::upload_rows(&stack, &customer, plan.upload_bytes).await);
            rows.push(uploads::processing_row(&stack, &customer, plan.drawing_pages).await);
            settle(&pool, Duration::from_secs(60)).await;

            step("6. cost growth: history and failing receivers");
            let mut clean = Clean {
                create_rate: clean_create_rate,
                latency: clean_latency,
            };
            rows.extend(growth::run(&plan, &customer, &mut receivers, &pool, &mut clean).await);

            step("5. memory of each service");
            for (service, idle) in Service::ALL.into_iter().zip(idle) {
                rows.extend(memory_rows(service, idle, stack.memory(service)));
            }
        }
    }
    drop(pool);
    drop(stack);
    drop(baseline);

    if wants("dispatcher") {
        step("3. dispatcher throughput against a bare loop");
        rows.push(dispatcher::throughput(&plan, 0).await);
        step("3. dispatcher throughput, 10 % failing first attempts");
        rows.push(dispatcher::throughput(&plan, 10).await);
    }

    step("done");
    rows.sort_by_key(|row| group_order(row.group));
    println!("\n{}", report::table(&rows));
    let path = output_path();
    match report::write_json(&path, &rows, smoke) {
        Ok(()) => println!("results: {}", path.display()),
        Err(error) => eprintln!("could not write {}: {error}", path.display()),
    }
    let missed = rows.iter().filter(|row| row.met == Some(false)).count();
    println!(
        "{} figures, {missed} below their goal, in {:.0} s{}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        if smoke {
            " (smoke run: figures are not meaningful)"
        } else {
            ""
        }
    );
}

/// The value after `flag` on the command line, if any.
fn flag_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|arg| arg == flag)?;
    args.get(at + 1).cloned()
}

/// `--profile SECONDS`, when given.
fn profile_seconds() -> Option<u64> {
    flag_value("--profile").map(|seconds| seconds.parse().expect("--profile SECONDS"))
}

/// The table's order: the numbering.
fn group_order(group: &str) -> usize {
    [
        "create",
        "latency",
        "dispatcher",
        "uploads",
        "memory",
        "growth",
    ]
    .iter()
    .position(|g| *g == group)
    .unwrap_or(usize::MAX)
}
