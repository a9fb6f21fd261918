//! Building and running the dispatcher: `App::build` checks the schema is migrated and
//! wires everything on already-bound listeners; `run_until_stopped` runs the intake
//! consumer, the scheduler's claim loop and its attempts, housekeeping, the gRPC delivery
//! log (with `grpc.health.v1` following readiness) and the ops endpoints until the token
//! is cancelled, then lets in-flight attempts finish.

use std::net::SocketAddr;
use std::sync::Arc;

use plangrep_core::validate::DestinationPolicy;
use plangrep_messaging::topology::DISPATCHER_EVENTS;
use plangrep_messaging::{BrokerHealth, ConsumerConfig, Topology, consume_loop};
use plangrep_proto::dispatcher::webhook_dispatcher_server::WebhookDispatcherServer;
use plangrep_service::grpc_metrics::GrpcMetricsLayer;
use plangrep_service::{database, grpc_health};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;

use crate::config::Config;
use crate::grpc::DispatcherService;
use crate::housekeeping::Housekeeping;
use crate::intake::{Handoff, Intake};
use crate::metrics::DeliveryMetrics;
use crate::scheduler::Scheduler;
use crate::sender::Sender;
use crate::slots::DestinationSlots;
use crate::target::TargetClient;

/// The dispatcher's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The service name: its spans' default `service.name`.
pub const SERVICE: &str = "webhook-dispatcher";

/// The database schema the dispatcher owns.
pub const SCHEMA: &str = "dispatcher";

/// Why the dispatcher could not start.
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
    #[error("invalid PLANGREP_ORCHESTRATOR_ADDR: {0}")]
    OrchestratorAddr(#[from] http::uri::InvalidUri),
    #[error("HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Database connection options of the dispatcher's schema.
pub fn connect_options(config: &Config) -> Result<PgConnectOptions, StartupError> {
    database::connect_options(&config.database_url, SCHEMA).map_err(StartupError::DatabaseUrl)
}

/// Applies the dispatcher's migrations (the `migrate` subcommand and `serve --migrate`).
pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    database::migrate(&connect_options(config)?, SCHEMA, &MIGRATOR).await?;
    Ok(())
}

/// A built, not yet running dispatcher.
pub struct App {
    config: Config,
    pool: PgPool,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    scheduler: Scheduler,
}

impl App {
    /// Checks that the schema is migrated and prepares the loops and servers on the given
    /// listeners.
    pub async fn build(
        config: Config,
        grpc_listener: TcpListener,
        http_listener: TcpListener,
    ) -> Result<Self, StartupError> {
        database::ensure_migrated(&connect_options(&config)?, SCHEMA, &MIGRATOR).await?;
        // No connection is held across an HTTP attempt (leases): the pool serves short
        // claims, outcomes, intake and the delivery log.
        let pool = database::lazy_pool(connect_options(&config)?, config.database_pool_size);
        let policy = if config.allow_insecure {
            DestinationPolicy::AllowInsecure
        } else {
            DestinationPolicy::PublicHttpsOnly
        };
        let scheduler = Scheduler {
            pool: pool.clone(),
            sender: Sender::new(policy, config.connect_timeout, config.attempt_timeout)?,
            targets: Arc::new(TargetClient::new(
                &config.orchestrator_endpoint,
                &config.internal_token,
            )?),
            retry: config.retry,
            wake: Arc::new(Notify::new()),
            poll_interval: config.poll_interval,
            metrics: DeliveryMetrics::default(),
            owner: format!("{SERVICE}-{}", ulid::Ulid::generate()),
            lease: config.lease_duration(),
            destinations: DestinationSlots::new(config.max_per_destination),
            not_found_attempts: config.not_found_attempts,
            recorder: Scheduler::recorder(pool.clone()),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
        };
        Ok(Self {
            config,
            pool,
            grpc_listener,
            http_listener,
            scheduler,
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
            grpc_listener,
            http_listener,
            scheduler,
        } = self;
        let export = plangrep_telemetry::SpanExport::start(SERVICE, &config.export)?;
        let broker = BrokerHealth::default();
        let tasks = TaskTracker::new();

        tracing::info!(replica = %scheduler.owner, workers = config.workers, lease = ?scheduler.lease, "dispatcher scheduler starting");
        tasks.spawn(
            scheduler
                .clone()
                .claim_loop(tasks.clone(), shutdown.clone()),
        );
        tasks.spawn(
            Housekeeping {
                pool: pool.clone(),
                metrics: scheduler.metrics.clone(),
                wake: scheduler.wake.clone(),
                retention: config.delivery_retention,
                missing_predecessor_grace: config.missing_predecessor_grace,
                interval: config.housekeeping_interval,
            }
            .housekeeping_loop(shutdown.clone()),
        );

        let handoff = Handoff {
            scheduler: scheduler.clone(),
            tasks: tasks.clone(),
        };
        let intake = Intake::new(pool.clone(), scheduler.wake.clone(), Some(handoff));
        let consumer = ConsumerConfig {
            amqp_url: config.amqp_url.clone(),
            topology: Topology::new(config.amqp_prefix.clone()),
            queue: DISPATCHER_EVENTS,
            concurrency: config.prefetch,
            service: SERVICE,
            consumer_tag: "webhook-dispatcher".to_owned(),
            events_key: config.events_key.clone(),
        };
        tasks.spawn(consume_loop(
            consumer,
            broker.clone(),
            move |message| {
                let intake = intake.clone();
                async move { intake.handle(message).await }
            },
            shutdown.clone(),
        ));

        let metrics = scheduler.metrics.clone();
        let readiness =
            plangrep_service::ops::database_readiness(pool.clone(), move || broker.is_up());
        let ops = plangrep_service::ops::router(
            readiness.clone(),
            Some(Arc::new(move || {
                let text = metrics.render();
                Box::pin(async move { text })
            })),
        );
        tasks.spawn(plangrep_service::ops::serve(
            http_listener,
            ops,
            shutdown.clone(),
        ));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tasks.spawn(grpc_health::health_loop(
            health_reporter,
            vec![<WebhookDispatcherServer<DispatcherService> as NamedService>::NAME],
            readiness,
            grpc_health::HEALTH_POLL_INTERVAL,
            shutdown.clone(),
        ));
        tasks.close();
        let (reflection_v1, reflection_v1alpha) = plangrep_proto::reflection::services();
        let service = DispatcherService::new(pool.clone(), scheduler.wake.clone());
        tracing::info!(grpc = %grpc_listener.local_addr()?, "webhook-dispatcher serving");
        let grpc_result = tonic::transport::Server::builder()
            .layer(GrpcMetricsLayer(scheduler.metrics.grpc.clone()))
            .layer(plangrep_telemetry::trace::TraceLayer::new(SERVICE))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            // Only the internal service needs the credential; health and reflection stay
            // open for discovery (SPEC §6).
            .add_service(
                config
                    .internal_token
                    .require(WebhookDispatcherServer::new(service)),
            )
            .serve_with_incoming_shutdown(
                plangrep_service::grpc_incoming(grpc_listener),
                shutdown.cancelled(),
            )
            .await;

        shutdown.cancel();
        tasks.wait().await;
        pool.close().await;
        export.shutdown().await;
        grpc_result?;
        Ok(())
    }
}
