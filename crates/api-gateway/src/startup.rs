//! Building and running the gateway: `App::build` migrates and wires the router on an
//! already-bound listener (tests pass port 0); `run_until_stopped` serves until the
//! token is cancelled, finishing in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use plangrep_proto::dispatcher::webhook_dispatcher_client::WebhookDispatcherClient;
use plangrep_proto::orchestrator::job_orchestrator_client::JobOrchestratorClient;
use plangrep_proto::trace::{TracedChannel, traced};
use plangrep_service::database;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::json::MAX_JSON_BODY;
use crate::openapi;
use crate::rate_limit::{self, RateLimiter};
use crate::request_id;
use crate::routes::{admin, deliveries, files, jobs, projects};

/// The gateway's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The service name: its spans' default `service.name`.
pub const SERVICE: &str = "api-gateway";

/// The database schema the gateway owns.
pub const SCHEMA: &str = "gateway";

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("span export: {0}")]
    Telemetry(#[from] plangrep_telemetry::InitError),
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid gRPC endpoint: {0}")]
    Endpoint(#[from] http::uri::InvalidUri),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("object storage: {0}")]
    Storage(#[from] plangrep_storage::StorageError),
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The gateway's own tables (orgs, keys).
    pub pool: PgPool,
    /// The orchestrator's gRPC client (cheap to clone; propagates the trace).
    pub orchestrator: JobOrchestratorClient<TracedChannel>,
    /// The dispatcher's gRPC client (cheap to clone; propagates the trace).
    pub dispatcher: WebhookDispatcherClient<TracedChannel>,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token buckets per API key (and per peer for unauthenticated requests).
    pub rate_limiter: Arc<RateLimiter>,
    /// Object storage: uploads stream into it.
    pub storage: plangrep_storage::Storage,
}

/// Database connection options of the gateway's schema.
pub fn connect_options(config: &Config) -> Result<PgConnectOptions, StartupError> {
    database::connect_options(&config.database_url, SCHEMA).map_err(StartupError::DatabaseUrl)
}

/// Applies the gateway's migrations (the `migrate` subcommand, and every start).
pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    database::migrate(&connect_options(config)?, SCHEMA, &MIGRATOR).await?;
    Ok(())
}

/// A lazily connecting channel whose calls fail fast while the peer is down.
fn channel(endpoint: &str) -> Result<Channel, http::uri::InvalidUri> {
    Ok(Channel::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// The complete HTTP router: the public API (rate limited), the admin API, the OpenAPI
/// document and reference page generated from the same handlers, and the ops endpoints.
pub fn router(state: AppState) -> Router {
    let ops = plangrep_service::ops::router(
        plangrep_service::ops::database_readiness(state.pool.clone(), || true),
        None,
    );
    let api = OpenApiRouter::new()
        .routes(routes!(projects::create, projects::list))
        .routes(routes!(projects::get))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::complete_uploads))
        .routes(routes!(jobs::result))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::resume))
        .merge(files::router()) // its own body limit: uploads are not bound by MAX_JSON_BODY
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::redeliver))
        .layer(axum::middleware::from_fn_with_state(
            state.rate_limiter.clone(),
            rate_limit::middleware,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::create_org))
        .routes(routes!(admin::get_org, admin::update_org))
        .routes(routes!(admin::create_key))
        .routes(routes!(admin::grant_credits))
        .routes(routes!(admin::revoke_key));
    let (routes, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(admin)
        .with_state(state)
        .split_for_parts();
    let doc = Arc::new(openapi::finish(doc));
    let docs = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::reference))
        .with_state(doc);
    routes
        .merge(docs)
        .merge(ops)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(request_id::middleware))
        .layer(plangrep_telemetry::trace::TraceLayer::new(SERVICE))
}

/// A built, not yet running gateway.
pub struct App {
    listener: TcpListener,
    /// Span export, per `Config::export`.
    export: plangrep_telemetry::ExportConfig,
    router: Router,
    pool: PgPool,
}

impl App {
    /// Migrates the database and builds the router for `listener`.
    pub async fn build(config: Config, listener: TcpListener) -> Result<Self, StartupError> {
        migrate(&config).await?;
        let pool = database::lazy_pool(connect_options(&config)?, 20);
        let storage = plangrep_storage::Storage::open(&config.storage)?;
        let state = AppState {
            storage,
            pool: pool.clone(),
            orchestrator: JobOrchestratorClient::new(traced(channel(
                &config.orchestrator_endpoint,
            )?)),
            dispatcher: WebhookDispatcherClient::new(traced(channel(&config.dispatcher_endpoint)?)),
            rate_limiter: Arc::new(RateLimiter::new(
                config.rate_limit_per_second,
                config.rate_limit_burst,
            )),
            config: Arc::new(config),
        };
        Ok(Self {
            listener,
            export: state.config.export.clone(),
            router: router(state),
            pool,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let export = plangrep_telemetry::SpanExport::start(SERVICE, &self.export)?;
        tracing::info!(addr = %self.local_addr(), "api-gateway serving");
        // Connect info lets the rate limiter key unauthenticated requests by peer address.
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
        self.pool.close().await;
        export.shutdown().await;
        Ok(())
    }
}
