//! Case 1, create-job throughput: `POST /projects/{id}/jobs` through the gateway, gRPC
//! and the orchestrator's one transaction, closed loop at 16 and 64 clients, with and
//! without `Idempotency-Key`, beside the same transaction run directly with sqlx (the
//! orchestrator's own `idempotency::run` + `jobs::create`, same concurrency, same
//! server, pool as large as the orchestrator's). Then with a `webhookUrl` on every job,
//! counting how long the webhooks take to arrive once the load stops.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plangrep_core::ProjectStatus;
use plangrep_core::id::{OrgId, ProjectId};
use plangrep_job_orchestrator::crypto::Keyring;
use plangrep_job_orchestrator::idempotency::{self, Key};
use plangrep_job_orchestrator::jobs::{self, NewJob};
use plangrep_job_orchestrator::store::projects::{self, ProjectRow};
use plangrep_proto::orchestrator::Idempotency;
use plangrep_test_support::TestDatabase;
use plangrep_test_support::services::STACK_SECRETS_KEY;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{JobCreator, Plan, idle, settle};
use crate::cpu::CpuMeter;
use crate::load::{Outcome, closed_loop};
use crate::receiver::Receivers;
use crate::report::Row;
use crate::stack::{Customer, plain_url};

/// The orchestrator's default pool size (`PLANGREP_DATABASE_POOL_SIZE`).
const ORCHESTRATOR_POOL: u32 = 20;
/// Jobs live this long (the orchestrator's default TTL; it only sets `expires_at`).
const JOB_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The same transaction as the orchestrator's `CreateJob`, run directly on a migrated
/// database of its own.
pub struct SqlBaseline {
    pool: PgPool,
    keyring: Arc<Keyring>,
    org_id: OrgId,
    project_id: ProjectId,
    _database: TestDatabase,
}

impl SqlBaseline {
    /// A migrated database with one ready project.
    pub async fn prepare() -> Self {
        let database = TestDatabase::create().await;
        let options = PgConnectOptions::from_str(&plain_url(database.url()))
            .expect("database URL")
            .options([("search_path", plangrep_job_orchestrator::startup::SCHEMA)]);
        plangrep_service::database::migrate(
            &options,
            plangrep_job_orchestrator::startup::SCHEMA,
            &plangrep_job_orchestrator::startup::MIGRATOR,
        )
        .await
        .expect("migrate the baseline database");
        let pool = PgPoolOptions::new()
            .max_connections(ORCHESTRATOR_POOL)
            .connect_with(options)
            .await
            .expect("baseline pool");
        let org_id = OrgId::generate();
        let project_id = ProjectId::generate();
        let now = chrono::Utc::now();
        let mut conn = pool.acquire().await.expect("connection");
        projects::insert(
            &mut conn,
            &ProjectRow {
                id: project_id.to_string(),
                org_id: org_id.to_string(),
                name: "Tower B".to_owned(),
                status: ProjectStatus::Ready,
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .await
        .expect("baseline project");
        drop(conn);
        Self {
            pool,
            keyring: Arc::new(Keyring::single_from_base64(STACK_SECRETS_KEY).expect("a key")),
            org_id,
            project_id,
            _database: database,
        }
    }

    /// One create transaction, idempotent when `key` is given.
    async fn create(&self, key: Option<String>) -> Result<(), String> {
        let key = key.and_then(|key| {
            Key::from_request(
                &self.org_id.to_string(),
                Some(Idempotency {
                    route: "POST /v1/projects/{projectId}/jobs".to_owned(),
                    key,
                    fingerprint: vec![7; 32],
                }),
            )
        });
        let new = NewJob {
            org_id: self.org_id,
            project_id: self.project_id,
            external_id: None,
            webhook_url: None,
            traceparent: None,
        };
        idempotency::run(&self.pool, &self.keyring, key, async |conn| {
            jobs::create(conn, &self.keyring, JOB_TTL, new).await
        })
        .await
        .map(drop)
        .map_err(|status| status.to_string())
    }
}

/// Closed-loop creates against the platform, with the given webhook URLs (none: jobs
/// without a webhook).
pub async fn platform_phase(
    customer: &Customer,
    concurrency: usize,
    duration: Duration,
    idempotent: bool,
    webhook_urls: &[String],
) -> Outcome {
    let mut creator = JobCreator::new(customer, webhook_urls);
    if idempotent {
        creator = creator.idempotent();
    }
    closed_loop(concurrency, duration, move |n| creator.clone().create(n)).await
}

/// Closed-loop creates straight on the database.
async fn baseline_phase(
    baseline: &Arc<SqlBaseline>,
    concurrency: usize,
    duration: Duration,
    idempotent: bool,
) -> Outcome {
    let baseline = baseline.clone();
    let run = ulid::Ulid::generate();
    closed_loop(concurrency, duration, move |n| {
        let baseline = baseline.clone();
        async move {
            let key = idempotent.then(|| format!("bench-{run}-{n}"));
            baseline.create(key).await
        }
    })
    .await
}

/// The throughput rows: 16 and 64 clients, with and without `Idempotency-Key`, each
/// with the CPU a job cost every process (the platform's counted until its events are
/// handled).
pub async fn throughput(
    plan: &Plan,
    customer: &Customer,
    baseline: &Arc<SqlBaseline>,
    pool: &PgPool,
    meter: &CpuMeter,
) -> Vec<Row> {
    // Warm both paths up (connections, caches, JIT-less but cold pages).
    platform_phase(customer, 16, plan.create_phase / 4, false, &[]).await;
    baseline_phase(baseline, 16, plan.create_phase / 4, false).await;
    settle(pool, Duration::from_secs(60)).await;
    let mut rows = Vec::new();
    for concurrency in [16, 64] {
        for idempotent in [false, true] {
            let started = meter.now();
            let mut ours =
                platform_phase(customer, concurrency, plan.create_phase, idempotent, &[]).await;
            idle(pool, Duration::from_secs(60)).await;
            let ours_cpu = meter.now().per_operation(&started, ours.ok, "job");
            settle(pool, Duration::from_secs(60)).await;
            let started = meter.now();
            let mut base =
                baseline_phase(baseline, concurrency, plan.create_phase, idempotent).await;
            let base_cpu = meter.now().per_operation(&started, base.ok, "job");
            let case = format!(
                "create job, {concurrency} clients{}",
                if idempotent { ", Idempotency-Key" } else { "" }
            );
            rows.push(
                Row::new("create", case, ours.rate(), "jobs/s")
                    .against(
                        base.rate(),
                        format!("same SQL via sqlx ({}; {base_cpu})", base.summary()),
                    )
                    .ratio_at_least(0.6)
                    .detail(format!("{}; {ours_cpu}", ours.summary())),
            );
        }
    }
    rows
}

/// Creates with a `webhookUrl` on every job at 16 clients; the webhooks (two per job)
/// must keep pace: they all arrive within a second of the last create.
pub async fn with_webhooks(
    plan: &Plan,
    customer: &Customer,
    receivers: &mut Receivers,
    pool: &PgPool,
) -> Row {
    receivers.drain();
    let mut ours = platform_phase(customer, 16, plan.create_phase, false, &receivers.urls).await;
    let load_ended = Instant::now();
    let expected = ours.ok as usize * 2;
    let mut arrived = receivers.drain().iter().filter(|a| a.accepted).count();
    let at_load_end = arrived;
    let patience = Duration::from_secs(120);
    while arrived < expected && load_ended.elapsed() < patience {
        match tokio::time::timeout(Duration::from_secs(5), receivers.next()).await {
            Ok(Some(arrival)) if arrival.accepted => arrived += 1,
            Ok(Some(_)) => {}
            _ => {}
        }
    }
    let drain = load_ended.elapsed().as_secs_f64();
    settle(pool, Duration::from_secs(60)).await;
    let rate = ours.rate();
    Row::new(
        "create",
        "create job with webhookUrl, 16 clients",
        rate,
        "jobs/s",
    )
    .goal(
        "> 390 jobs/s (Svix here) and webhooks drained ≤ 1 s after the load",
        rate > 390.0 && drain <= 1.0 && arrived >= expected,
    )
    .detail(format!(
        "{}; {arrived}/{expected} webhooks, {at_load_end} by the end of the load, the rest \
             {drain:.2} s after it",
        ours.summary()
    ))
}
