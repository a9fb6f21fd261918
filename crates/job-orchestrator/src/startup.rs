//! Building and running the orchestrator: `App::build` checks the schema is migrated and
//! wires everything on already-bound listeners (tests pass port 0); `run_until_stopped`
//! serves gRPC and the ops endpoints (`/metrics` included) and runs the relay, pipeline
//! and gRPC-health loops until the token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use plangrep_messaging::{BrokerHealth, ConsumerConfig, Topology, consume_loop};
use plangrep_proto::orchestrator::job_orchestrator_server::JobOrchestratorServer;
use plangrep_service::grpc_metrics::GrpcMetricsLayer;
use plangrep_service::{database, grpc_health};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

use crate::config::Config;
use crate::dead_letters::DeadLetters;
use crate::grpc::OrchestratorService;
use crate::housekeeping::Housekeeping;
use crate::metrics::OrchestratorMetrics;
use crate::pdf::Inspector;
use crate::pipeline::{Pipeline, Stage};
use crate::relay::Relay;

/// The orchestrator's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The service name: its spans' default `service.name`.
pub const SERVICE: &str = "job-orchestrator";

/// The database schema the orchestrator owns.
pub const SCHEMA: &str = "orchestrator";

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("span export: {0}")]
    Telemetry(#[from] plangrep_telemetry::InitError),
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Schema(#[from] database::SchemaError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("object storage: {0}")]
    Storage(#[from] plangrep_storage::StorageError),
    #[error("reseal: {0}")]
    Reseal(#[source] sqlx::Error),
    #[error(
        "reseal: {0} sealed blobs do not open with the keyring (see the log); add their keys to PLANGREP_SECRETS_KEYS and run it again"
    )]
    ResealIncomplete(u64),
}

/// A built, not yet running orchestrator.
pub struct App {
    config: Config,
    pool: PgPool,
    options: PgConnectOptions,
    storage: plangrep_storage::Storage,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
}

/// Database connection options of the orchestrator's schema.
pub fn connect_options(config: &Config) -> Result<PgConnectOptions, StartupError> {
    database::connect_options(&config.database_url, SCHEMA).map_err(StartupError::DatabaseUrl)
}

/// Applies the orchestrator's migrations (the `migrate` subcommand and `serve --migrate`).
pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    database::migrate(&connect_options(config)?, SCHEMA, &MIGRATOR).await?;
    Ok(())
}

/// Moves every sealed blob to the keyring's primary key (the `reseal` subcommand),
/// printing counts per column as it goes; fails if a blob does not open.
pub async fn reseal(config: &Config) -> Result<(), StartupError> {
    let options = connect_options(config)?;
    database::ensure_migrated(&options, SCHEMA, &MIGRATOR).await?;
    let pool = database::lazy_pool(options, 2);
    println!(
        "resealing with primary key {:?} of the keyring {:?}",
        config.secrets_key.primary_id().as_str(),
        config
            .secrets_key
            .key_ids()
            .map(|id| id.as_str())
            .collect::<Vec<_>>()
    );
    let reports = crate::reseal::run(
        &pool,
        &config.secrets_key,
        crate::reseal::BATCH_SIZE,
        |progress| println!("{progress}"),
    )
    .await
    .map_err(StartupError::Reseal)?;
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    let resealed: u64 = reports.iter().map(|r| r.resealed).sum();
    println!("done: resealed {resealed}, failed {failed}");
    if failed > 0 {
        return Err(StartupError::ResealIncomplete(failed));
    }
    Ok(())
}

impl App {
    /// Checks that the schema is migrated and prepares the servers on the given listeners.
    pub async fn build(
        config: Config,
        grpc_listener: TcpListener,
        http_listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let options = connect_options(&config)?;
        database::ensure_migrated(&options, SCHEMA, &MIGRATOR).await?;
        let pool = database::lazy_pool(options.clone(), config.database_pool_size);
        let storage = plangrep_storage::Storage::open(&config.storage)?;
        Ok(Self {
            config,
            pool,
            options,
            storage,
            grpc_listener,
            http_listener,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("bound listener")
    }

    /// The bound ops HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` is cancelled, then drains and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let Self {
            config,
            pool,
            options,
            storage,
            grpc_listener,
            http_listener,
        } = self;
        let export = plangrep_telemetry::SpanExport::start(SERVICE, &config.export)?;
        let topology = Topology::new(config.amqp_prefix.clone());
        let metrics = OrchestratorMetrics::new(config.amqp_url.clone(), topology.clone());

        let relay = Relay {
            metrics: metrics.clone(),
            pool: pool.clone(),
            lock_options: options,
            amqp_url: config.amqp_url.clone(),
            topology: topology.clone(),
            poll_interval: config.outbox_poll_interval,
            events_key: config.events_key.clone(),
        };
        let relay_task = tokio::spawn(relay.relay_loop(shutdown.clone()));
        let housekeeping = Housekeeping {
            pool: pool.clone(),
            storage: storage.clone(),
            interval: config.housekeeping_interval,
            outbox_retention: config.outbox_retention,
            orphan_grace: config.orphan_grace,
        };
        let housekeeping_task = tokio::spawn(housekeeping.housekeeping_loop(shutdown.clone()));
        let expiry_task = tokio::spawn(crate::expiry::expiry_loop(
            pool.clone(),
            config.expiry_interval,
            shutdown.clone(),
        ));

        // One consumer per stage, each with its own queue, concurrency and health.
        let pipeline = Pipeline::new(
            pool.clone(),
            storage.clone(),
            Inspector::new(config.pdf_worker.clone(), config.pdf_limits),
            config.allocation_attempts,
        );
        let mut stage_health = Vec::new();
        let mut stage_tasks = Vec::new();
        for stage in Stage::ALL {
            let concurrency = match stage {
                Stage::Provision => config.provision_concurrency,
                Stage::Preflight => config.preflight_concurrency,
                Stage::Process => config.process_concurrency,
            };
            let consumer = ConsumerConfig {
                amqp_url: config.amqp_url.clone(),
                topology: topology.clone(),
                queue: stage.queue(),
                concurrency,
                service: SERVICE,
                consumer_tag: format!("job-orchestrator.{}", stage.name()),
                events_key: config.events_key.clone(),
            };
            let health = BrokerHealth::default();
            stage_health.push(health.clone());
            let pipeline = pipeline.clone();
            let metrics = metrics.clone();
            stage_tasks.push(tokio::spawn(consume_loop(
                consumer,
                health,
                move |message| {
                    let pipeline = pipeline.clone();
                    let metrics = metrics.clone();
                    async move {
                        let started = Instant::now();
                        let outcome = pipeline.handle(stage, message).await;
                        metrics.record_stage(stage, &outcome, started.elapsed());
                        outcome
                    }
                },
                shutdown.clone(),
            )));
        }

        // Ready while the database answers and every stage consumes; gRPC health follows.
        let readiness = plangrep_service::ops::database_readiness(pool.clone(), move || {
            stage_health.iter().all(BrokerHealth::is_up)
        });
        let metrics_pool = pool.clone();
        let scraped = metrics.clone();
        let ops = plangrep_service::ops::router(
            readiness.clone(),
            Some(Arc::new(move || {
                let pool = metrics_pool.clone();
                let metrics = scraped.clone();
                Box::pin(async move { metrics.render(&pool).await })
            })),
        );
        let ops_addr = http_listener.local_addr()?;
        let http_task = tokio::spawn(plangrep_service::ops::serve(
            http_listener,
            ops,
            shutdown.clone(),
        ));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let health_task = tokio::spawn(grpc_health::health_loop(
            health_reporter,
            vec![<JobOrchestratorServer<OrchestratorService> as NamedService>::NAME],
            readiness,
            grpc_health::HEALTH_POLL_INTERVAL,
            shutdown.clone(),
        ));
        let (reflection_v1, reflection_v1alpha) = plangrep_proto::reflection::services();
        let service = OrchestratorService::new(
            pool.clone(),
            config.secrets_key.clone(),
            config.job_ttl,
            storage,
        )
        .with_webhook_secret_overlap(config.webhook_secret_overlap)
        .with_dead_letters(DeadLetters::new(config.amqp_url.clone(), topology.clone()));
        tracing::info!(grpc = %grpc_listener.local_addr()?, ops = %ops_addr, "job-orchestrator serving");
        let grpc_result = tonic::transport::Server::builder()
            .layer(GrpcMetricsLayer(metrics.grpc.clone()))
            .layer(plangrep_telemetry::trace::TraceLayer::new(SERVICE))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            // Only the internal service needs the credential; health and reflection stay
            // open for discovery (SPEC §6).
            .add_service(
                config
                    .internal_token
                    .require(JobOrchestratorServer::new(service)),
            )
            .serve_with_incoming_shutdown(
                plangrep_service::grpc_incoming(grpc_listener),
                shutdown.cancelled(),
            )
            .await;

        shutdown.cancel();
        let _ = tokio::join!(
            relay_task,
            housekeeping_task,
            expiry_task,
            http_task,
            health_task
        );
        for task in stage_tasks {
            let _ = task.await;
        }
        pool.close().await;
        export.shutdown().await;
        grpc_result?;
        Ok(())
    }
}
