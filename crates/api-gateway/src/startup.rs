//! Building and running the gateway: `App::build` checks the schema is migrated and wires
//! the public router and the ops router on already-bound listeners (tests pass port 0);
//! `run_until_stopped` serves both until the token is cancelled, finishing in-flight
//! requests. The public port serves the API only: health and metrics are on the ops
//! listener, which is not exposed to customers. The public listener's accept loop is
//! [`edge::serve`] (connection cap, header-read timeout; ADR 0014).

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
use plangrep_service::internal_auth::Authorized;
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

use crate::auth;
use crate::config::Config;
use crate::drain;
use crate::edge::{self, EdgeLimits};
use crate::json::{self, MAX_JSON_BODY};
use crate::key_cache;
use crate::metrics::{ConnectionGauge, HttpMetrics};
use crate::openapi;
use crate::rate_limit::shared::SharedBuckets;
use crate::rate_limit::{self, Rate, RateLimiter};
use crate::replay;
use crate::request_id;
use crate::request_timeout::{self, RequestTimeouts};
use crate::routes::{admin, dead_letters, deliveries, files, jobs, projects, webhook_secret};

/// The gateway's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The service name: its spans' default `service.name`.
pub const SERVICE: &str = "api-gateway";

/// The `application_name` of the connection that hears API key changes.
pub const KEY_CHANGES_APPLICATION: &str = "api-gateway key changes";

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
    #[error("{0}")]
    Schema(#[from] database::SchemaError),
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
    pub orchestrator: JobOrchestratorClient<Authorized<TracedChannel>>,
    /// The dispatcher's gRPC client (cheap to clone; propagates the trace).
    pub dispatcher: WebhookDispatcherClient<Authorized<TracedChannel>>,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token buckets per API key (and per peer for unauthenticated requests).
    pub rate_limiter: Arc<RateLimiter>,
    /// Counts API key lookups in the database (`plangrep_api_key_lookups_total`).
    pub api_key_lookups: prometheus_client::metrics::counter::Counter,
    /// Looks API keys up, concurrent requests' together.
    pub key_lookups: auth::KeyLookups,
    /// The keys read recently (forgotten when they change).
    pub key_cache: Arc<auth::KeyCache>,
    /// Object storage: uploads stream into it.
    pub storage: plangrep_storage::Storage,
}

/// Database connection options of the gateway's schema.
pub fn connect_options(config: &Config) -> Result<PgConnectOptions, StartupError> {
    database::connect_options(&config.database_url, SCHEMA).map_err(StartupError::DatabaseUrl)
}

/// Applies the gateway's migrations (the `migrate` subcommand and `serve --migrate`).
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

/// The ops router: `/healthz`, `/readyz` (the database answers) and `/metrics`.
pub fn ops_router(pool: PgPool, metrics: HttpMetrics) -> Router {
    plangrep_service::ops::router(
        plangrep_service::ops::database_readiness(pool, || true),
        Some(Arc::new(move || {
            let metrics = metrics.clone();
            Box::pin(async move { metrics.render() })
        })),
    )
}

/// The public HTTP router: the public API (rate limited), the admin API, and the OpenAPI
/// document and reference page generated from the same handlers; every request recorded
/// in `metrics`.
pub fn router(state: AppState, metrics: HttpMetrics) -> Router {
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
        .routes(routes!(webhook_secret::rotate))
        .merge(files::router()) // its own body limit: uploads are not bound by MAX_JSON_BODY
        .routes(routes!(deliveries::list))
        // Redelivery keeps its Idempotency-Key records in the gateway (after the scope
        // check below, which wraps it).
        .merge(
            OpenApiRouter::new()
                .routes(routes!(deliveries::redeliver))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    replay::middleware,
                )),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_scope,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::create_org))
        .routes(routes!(admin::get_org, admin::update_org))
        .routes(routes!(admin::create_key))
        .routes(routes!(admin::grant_credits))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::redrive))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            replay::middleware,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    let rate_limiter = state.rate_limiter.clone();
    let timeouts = Arc::new(RequestTimeouts {
        request: state.config.edge.request_timeout,
        upload: state.config.edge.upload_timeout,
    });
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
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        // Early refusals drain the unread body, so clients that send it whole read them.
        .layer(axum::middleware::from_fn(drain::middleware))
        // A client that stalls its body gets 408 (the handler is dropped, as on a hang-up).
        .layer(axum::middleware::from_fn_with_state(
            timeouts,
            request_timeout::middleware,
        ))
        // Outside the routes, so unknown routes and refused bodies carry RateLimit-* too.
        .layer(axum::middleware::from_fn_with_state(
            rate_limiter,
            rate_limit::middleware,
        ))
        .layer(CatchPanicLayer::new())
        // After routing (it needs the matched route template) and outside the panic
        // catcher (a panic is counted as the 500 it becomes).
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::middleware,
        ))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .layer(axum::middleware::map_response(json::declare_charset))
        .layer(plangrep_telemetry::trace::TraceLayer::new(SERVICE))
}

/// A built, not yet running gateway.
pub struct App {
    listener: TcpListener,
    /// Span export, per `Config::export`.
    export: plangrep_telemetry::ExportConfig,
    router: Router,
    ops_listener: TcpListener,
    ops_router: Router,
    pool: PgPool,
    edge: EdgeLimits,
    connections: ConnectionGauge,
    key_cache: Arc<auth::KeyCache>,
    /// The connection that hears key changes for `key_cache`.
    key_changes: PgPool,
}

impl App {
    /// Checks that the schema is migrated and builds the public router for `listener`
    /// and the ops router for `ops_listener`.
    pub async fn build(
        config: Config,
        listener: TcpListener,
        ops_listener: TcpListener,
    ) -> Result<Self, StartupError> {
        database::ensure_migrated(&connect_options(&config)?, SCHEMA, &MIGRATOR).await?;
        let pool = database::lazy_pool(connect_options(&config)?, config.database_pool_size);
        let storage = plangrep_storage::Storage::open(&config.storage)?;
        let metrics = HttpMetrics::default();
        let rate = Rate {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        };
        let shared_buckets = config
            .redis
            .clone()
            .map(|target| SharedBuckets::new(target, config.redis_key_prefix.clone(), rate));
        let key_cache = Arc::new(auth::KeyCache::new(config.api_key_cache_ttl));
        // Its own connection, so that the subscription never takes a request's.
        let key_changes = database::lazy_pool(
            connect_options(&config)?.application_name(KEY_CHANGES_APPLICATION),
            1,
        );
        let edge = EdgeLimits {
            max_connections: config.edge.max_connections,
            header_read_timeout: config.edge.header_read_timeout,
        };
        let state = AppState {
            storage,
            pool: pool.clone(),
            orchestrator: JobOrchestratorClient::new(
                config
                    .internal_token
                    .attach(traced(channel(&config.orchestrator_endpoint)?)),
            ),
            dispatcher: WebhookDispatcherClient::new(
                config
                    .internal_token
                    .attach(traced(channel(&config.dispatcher_endpoint)?)),
            ),
            rate_limiter: Arc::new(RateLimiter::new(
                rate,
                shared_buckets,
                metrics.rate_limit_fallbacks.clone(),
            )),
            api_key_lookups: metrics.api_key_lookups.clone(),
            key_lookups: auth::key_lookups(pool.clone()),
            key_cache: key_cache.clone(),
            config: Arc::new(config),
        };
        let connections = metrics.connections.clone();
        Ok(Self {
            listener,
            export: state.config.export.clone(),
            router: router(state, metrics.clone()),
            ops_listener,
            ops_router: ops_router(pool.clone(), metrics),
            pool,
            edge,
            connections,
            key_cache,
            key_changes,
        })
    }

    /// The bound public address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The bound ops address (`/healthz`, `/readyz`, `/metrics`).
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let export = plangrep_telemetry::SpanExport::start(SERVICE, &self.export)?;
        tracing::info!(addr = %self.local_addr(), ops = %self.ops_addr(), "api-gateway serving");
        // With the cache off (`0s`) there is nothing to forget: no subscription.
        let key_changes = (!self.key_cache.is_off()).then(|| {
            tokio::spawn(key_cache::follow_changes(
                self.key_changes.clone(),
                self.key_cache,
                shutdown.clone(),
            ))
        });
        let ops = tokio::spawn(plangrep_service::ops::serve(
            self.ops_listener,
            self.ops_router,
            shutdown.clone(),
        ));
        let served = edge::serve(
            self.listener,
            self.router,
            self.edge,
            self.connections,
            shutdown.clone(),
        )
        .await;
        // The public listener may also end on an error: stop the ops listener with it.
        shutdown.cancel();
        let ops = ops.await.unwrap_or(Ok(()));
        if let Some(key_changes) = key_changes {
            let _ = key_changes.await;
        }
        self.key_changes.close().await;
        self.pool.close().await;
        export.shutdown().await;
        served?;
        ops?;
        Ok(())
    }
}
