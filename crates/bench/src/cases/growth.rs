//! Case 6, cost growth: the create-job and latency cases again, first with a large
//! history already stored (jobs, published events and delivery rows of another
//! organization, and the rows that left the queues since the last vacuum), then also
//! with jobs whose receivers are down (their first deliveries retrying on the production
//! schedule, their later events waiting behind them). Each figure is compared with the
//! same case on the clean database earlier in the run: within 20 % means every hot path
//! stays an index scan whatever the tables hold.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::create_jobs::platform_phase;
use super::latency::{self, Latency};
use super::{JobCreator, Plan, settle};
use crate::load::fixed_count;
use crate::receiver::{DownReceiver, Receivers};
use crate::report::Row;
use crate::stack::Customer;

/// The clean figures the growth runs are compared with.
pub struct Clean {
    pub create_rate: f64,
    pub latency: Latency,
}

/// Seeds the history, measures, adds the failing receivers, measures again.
pub async fn run(
    plan: &Plan,
    customer: &Customer,
    receivers: &mut Receivers,
    pool: &PgPool,
    clean: &mut Clean,
) -> Vec<Row> {
    let started = Instant::now();
    seed_history(pool, plan.backlog_rows).await;
    let history = format!(
        "{} jobs, events and deliveries stored",
        thousands(plan.backlog_rows)
    );
    let left = seed_left_since_vacuum(pool).await;
    eprintln!(
        "  seeded {history} in {:.1} s; {left}",
        started.elapsed().as_secs_f64()
    );
    let mut rows = measure(plan, customer, receivers, pool, clean, &history).await;

    let down = DownReceiver::reserve();
    let failing = JobCreator::new(customer, std::slice::from_ref(&down.url));
    fixed_count(16, plan.failing_jobs as u64, move |n| {
        failing.clone().create(n)
    })
    .await;
    wait_until_retrying(pool, &down.url, plan.failing_jobs).await;
    let failing = format!(
        "{history}, {} jobs' receivers down",
        thousands(plan.failing_jobs as i64)
    );
    rows.extend(measure(plan, customer, receivers, pool, clean, &failing).await);
    rows
}

async fn measure(
    plan: &Plan,
    customer: &Customer,
    receivers: &mut Receivers,
    pool: &PgPool,
    clean: &mut Clean,
    condition: &str,
) -> Vec<Row> {
    let mut creates = platform_phase(customer, 16, plan.create_phase, false, &[]).await;
    settle(pool, Duration::from_secs(60)).await;
    let mut latency = latency::measure(
        customer,
        receivers,
        pool,
        plan.latency_jobs_per_second,
        plan.latency_phase / 3,
    )
    .await;
    settle(pool, Duration::from_secs(60)).await;
    let mut rows = vec![
        Row::new(
            "growth",
            format!("create job, 16 clients, {condition}"),
            creates.rate(),
            "jobs/s",
        )
        .against(clean.create_rate, "the same case, clean database")
        .ratio_at_least(0.8)
        .detail(creates.summary()),
    ];
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        rows.push(
            Row::new(
                "growth",
                format!("event latency {name}, {condition}"),
                latency.event.percentile_ms(p),
                "ms",
            )
            .against(
                clean.latency.event.percentile_ms(p),
                "the same case, clean database",
            )
            .ratio_at_most(1.2)
            .unmet_unless(latency.complete())
            .detail(latency.detail()),
        );
    }
    rows
}

/// Stores `rows` finished jobs of another organization, one published event and one
/// succeeded delivery each, then vacuums, analyzes and checkpoints.
async fn seed_history(pool: &PgPool, rows: i64) {
    let statements = [
        "INSERT INTO orchestrator.projects (id, org_id, name, status, version, created_at, updated_at) \
         SELECT 'prj_benchhistory', 'org_benchhistory', 'History', 'ready', 1, now(), now() \
         WHERE $1::bigint > 0",
        "INSERT INTO orchestrator.jobs (id, org_id, project_id, status, version, last_sequence, \
           created_at, updated_at, completed_at, expires_at) \
         SELECT 'job_history_' || g, 'org_benchhistory', 'prj_benchhistory', 'completed', 6, 6, \
           now() - interval '2 days', now() - interval '1 day', now() - interval '1 day', \
           now() + interval '5 days' \
         FROM generate_series(1, $1) AS g",
        "INSERT INTO orchestrator.outbox (event_id, routing_key, payload, created_at, published_at) \
         SELECT 'evt_history_' || g, 'job.status_changed.completed', '\\x00'::bytea, \
           now() - interval '1 day', now() - interval '1 day' \
         FROM generate_series(1, $1) AS g",
        "INSERT INTO dispatcher.deliveries (id, event_id, org_id, job_id, sequence, job_status, \
           payload, state, attempt_count, window_started_at, event_occurred_at, destination) \
         SELECT 'dlv_history_' || g, 'evt_history_' || g, 'org_benchhistory', 'job_history_' || g, \
           6, 'completed', '\\x7b7d'::bytea, 'succeeded', 1, now() - interval '1 day', \
           now() - interval '1 day', 'http://127.0.0.1:9' \
         FROM generate_series(1, $1) AS g",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(rows)
            .execute(pool)
            .await
            .expect("seed the history");
    }
    // What a running deployment has long done to its history: vacuumed it (the seeding
    // would otherwise trigger an insert autovacuum in the middle of the measurement),
    // analyzed it, and checkpointed the WAL it wrote.
    for statement in [
        "VACUUM (ANALYZE) orchestrator.jobs",
        "VACUUM (ANALYZE) orchestrator.outbox",
        "VACUUM (ANALYZE) dispatcher.deliveries",
        "CHECKPOINT",
    ] {
        if let Err(error) = sqlx::query(statement).execute(pool).await {
            eprintln!("  {statement}: {error}");
        }
    }
}

/// What a running deployment's queues hold at worst between two autovacuums: rows that
/// left them (published events, finished deliveries) since the last vacuum, each a dead
/// entry where the claims start reading (docs/profiles/queue-dead-entries.txt). Seeds
/// nine tenths of what each table's own autovacuum threshold lets pile up before a vacuum
/// (so none starts during the measurement), each row entering and leaving its queue in
/// one transaction so no service ever sees it.
async fn seed_left_since_vacuum(pool: &PgPool) -> String {
    let tables = [
        (
            "orchestrator.outbox",
            "INSERT INTO orchestrator.outbox (event_id, routing_key, payload) \
             SELECT 'evt_left_' || g, 'job.status_changed.completed', '\\x00'::bytea \
             FROM generate_series(1, $1) AS g",
            "UPDATE orchestrator.outbox SET published_at = now() \
             WHERE event_id LIKE 'evt\\_left\\_%' AND published_at IS NULL",
        ),
        (
            "dispatcher.deliveries",
            "INSERT INTO dispatcher.deliveries (id, event_id, org_id, job_id, sequence, \
               job_status, payload, state, attempt_count, window_started_at, event_occurred_at, \
               destination, next_attempt_at) \
             SELECT 'dlv_left_' || g, 'evt_left_' || g, 'org_benchhistory', 'job_left_' || g, 1, \
               'completed', '\\x7b7d'::bytea, 'pending', 0, now(), now() - interval '1 hour', \
               'http://127.0.0.1:9', now() - interval '1 hour' \
             FROM generate_series(1, $1) AS g",
            "UPDATE dispatcher.deliveries SET state = 'succeeded', attempt_count = 1 \
             WHERE id LIKE 'dlv\\_left\\_%' AND state = 'pending'",
        ),
    ];
    let mut seeded = Vec::new();
    for (table, enter, leave) in tables {
        let threshold: i64 = sqlx::query_scalar(
            "SELECT (current_setting('autovacuum_vacuum_threshold')::float8 + coalesce( \
               (SELECT option_value::float8 FROM pg_options_to_table(c.reloptions) \
                WHERE option_name = 'autovacuum_vacuum_scale_factor'), \
               current_setting('autovacuum_vacuum_scale_factor')::float8) \
               * c.reltuples)::bigint \
             FROM pg_class c WHERE c.oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(pool)
        .await
        .expect("the table's autovacuum threshold");
        let rows = threshold * 9 / 10;
        let mut tx = pool.begin().await.expect("a transaction");
        sqlx::query(enter)
            .bind(rows)
            .execute(&mut *tx)
            .await
            .expect("seed rows entering the queue");
        sqlx::query(leave)
            .execute(&mut *tx)
            .await
            .expect("seed rows leaving the queue");
        tx.commit().await.expect("seed rows that left the queue");
        seeded.push(format!("{} in {table}", thousands(rows)));
    }
    format!(
        "left the queues since the last vacuum: {}",
        seeded.join(", ")
    )
}

/// Waits until every failing job's first delivery is recorded and the receiver has
/// refused at least one attempt (from then on the dispatcher defers the rest together).
async fn wait_until_retrying(pool: &PgPool, url: &str, jobs: usize) {
    let destination = url.trim_end_matches("/down");
    let started = Instant::now();
    loop {
        let (pending, attempted): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE attempt_count >= 1) \
             FROM dispatcher.deliveries WHERE destination = $1 AND state = 'pending'",
        )
        .bind(destination)
        .fetch_one(pool)
        .await
        .expect("the stack's database answers");
        if (pending as usize >= jobs && attempted > 0)
            || started.elapsed() > Duration::from_secs(120)
        {
            eprintln!(
                "  {pending} deliveries pending at a receiver that is down, {attempted} attempted"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn thousands(n: i64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{} M", n / 1_000_000)
    } else {
        n.to_string()
    }
}
