//! Building and running the gateway: `App::build` migrates and wires the router on an
//! already-bound listener (tests pass port 0); `run_until_stopped` serves until the
//! token is cancelled, finishing in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use plangrep_proto::dispatcher::webhook_dispatcher_client::WebhookDispatcherClient;
use plangrep_proto::orchestrator::job_orchestrator_client::JobOrchestratorClient;
use plangrep_service::database;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::json::MAX_JSON_BODY;
use crate::rate_limit::{self, RateLimiter};
use crate::request_id;
use crate::routes::{admin, deliveries, jobs, projects};

/// The gateway's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The database schema the gateway owns.
pub const SCHEMA: &str = "gateway";

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid gRPC endpoint: {0}")]
    Endpoint(#[from] http::uri::InvalidUri),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The gateway's own tables (orgs, keys).
    pub pool: PgPool,
    /// The orchestrator's gRPC client (cheap to clone).
    pub orchestrator: JobOrchestratorClient<Channel>,
    /// The dispatcher's gRPC client (cheap to clone).
    pub dispatcher: WebhookDispatcherClient<Channel>,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token buckets per API key (and per peer for unauthenticated requests).
    pub rate_limiter: Arc<RateLimiter>,
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

/// The complete HTTP router.
pub fn router(state: AppState) -> Router {
    let readiness_pool = state.pool.clone();
    let ops = plangrep_service::ops::router(
        Arc::new(move || {
            let pool = readiness_pool.clone();
            Box::pin(async move { database::is_reachable(&pool).await })
        }),
        None,
    );
    let api = Router::new()
        .route("/projects", post(projects::create).get(projects::list))
        .route("/projects/{project_id}", get(projects::get))
        .route(
            "/projects/{project_id}/jobs",
            post(jobs::create).get(jobs::list),
        )
        .route("/jobs/{job_id}", get(jobs::get))
        .route("/jobs/{job_id}/events", get(jobs::events))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/jobs/{job_id}/resume", post(jobs::resume))
        .route("/jobs/{job_id}/webhook-deliveries", get(deliveries::list))
        .route(
            "/webhook-deliveries/{delivery_id}/redeliver",
            post(deliveries::redeliver),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.rate_limiter.clone(),
            rate_limit::middleware,
        ));
    let admin = Router::new()
        .route("/orgs", post(admin::create_org))
        .route("/orgs/{org_id}", get(admin::get_org))
        .route("/orgs/{org_id}/api-keys", post(admin::create_key))
        .route("/orgs/{org_id}/credits", post(admin::grant_credits))
        .route("/api-keys/{key_id}/revoke", post(admin::revoke_key));
    Router::new()
        .nest("/api/open/v1", api)
        .nest("/admin/v1", admin)
        .with_state(state)
        .merge(ops)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(request_id::middleware))
}

/// A built, not yet running gateway.
pub struct App {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
}

impl App {
    /// Migrates the database and builds the router for `listener`.
    pub async fn build(config: Config, listener: TcpListener) -> Result<Self, StartupError> {
        migrate(&config).await?;
        let pool = database::lazy_pool(connect_options(&config)?, 20);
        let state = AppState {
            pool: pool.clone(),
            orchestrator: JobOrchestratorClient::new(channel(&config.orchestrator_endpoint)?),
            dispatcher: WebhookDispatcherClient::new(channel(&config.dispatcher_endpoint)?),
            rate_limiter: Arc::new(RateLimiter::new(
                config.rate_limit_per_second,
                config.rate_limit_burst,
            )),
            config: Arc::new(config),
        };
        Ok(Self {
            listener,
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
        Ok(())
    }
}
