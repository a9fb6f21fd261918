//! The operations endpoints every service exposes over HTTP: `/healthz` (the process is
//! alive), `/readyz` (its dependencies are reachable; load balancers stop routing to it
//! while they are not) and, where a service has metrics, `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Answers whether the service can serve requests right now.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Renders the Prometheus text exposition of a service's metrics.
pub type MetricsRender =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Ready when the database answers and `also()` holds (e.g. "the broker connection is up").
pub fn database_readiness(
    pool: sqlx::PgPool,
    also: impl Fn() -> bool + Send + Sync + 'static,
) -> ReadinessCheck {
    let also = Arc::new(also);
    Arc::new(move || {
        let pool = pool.clone();
        let also = also.clone();
        Box::pin(async move { also() && crate::database::is_reachable(&pool).await })
    })
}

/// A router with `/healthz` and `/readyz` (and `/metrics` when given), to merge into a
/// service's HTTP router.
pub fn router(readiness: ReadinessCheck, metrics: Option<MetricsRender>) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    match metrics {
        None => router,
        Some(render) => router.route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        render().await,
                    )
                }
            }),
        ),
    }
}

async fn ready(State(readiness): State<ReadinessCheck>) -> (StatusCode, &'static str) {
    if readiness().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Renders `registry` in the Prometheus text exposition format (an encoding error, which
/// only a broken metric implementation can cause, is logged and yields what was written).
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%error, "metrics encoding failed");
    }
    text
}
