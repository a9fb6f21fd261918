//! The gateway's Prometheus metrics, served on the ops listener (never the public port):
//! requests and their latency by route template and status, requests in flight,
//! rate-limit rejections, open connections, API key lookups and rate-limit fallbacks
//! (ADR 0014). One registry per gateway instance, no global recorder.
//!
//! Routes are labelled by axum's [`MatchedPath`] (`/api/open/v1/jobs/{jobId}`), never by
//! the raw path, so a label's values stay bounded whatever clients send; a request that
//! matched no route is labelled `unmatched`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template, e.g. `/api/open/v1/jobs/{jobId}`.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The gateway's metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    in_flight: Gauge<i64, AtomicI64>,
    rate_limited: Family<RouteLabels, Counter>,
    /// Connections being served on the public port.
    pub connections: ConnectionGauge,
    /// API key lookups in the database (one per request with a well-formed key).
    pub api_key_lookups: Counter,
    /// Per-key rate-limit decisions made by this replica because Redis was unreachable.
    pub rate_limit_fallbacks: Counter,
}

/// The open-connections gauge of the public port.
#[derive(Clone, Default)]
pub struct ConnectionGauge(Gauge<i64, AtomicI64>);

impl ConnectionGauge {
    /// A connection was accepted.
    pub fn opened(&self) {
        self.0.inc();
    }

    /// A connection ended.
    pub fn closed(&self) {
        self.0.dec();
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "plangrep_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        // 1 ms .. ~33 s.
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "plangrep_http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), by method, route template and status",
            duration.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "plangrep_http_requests_in_flight",
            "HTTP requests being handled right now",
            in_flight.clone(),
        );
        let rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "plangrep_http_rate_limited",
            "Requests refused with 429 by the per-key rate limit, by route template",
            rate_limited.clone(),
        );
        let connections = ConnectionGauge::default();
        registry.register(
            "plangrep_http_connections_open",
            "Connections being served on the public port (at most PLANGREP_GATEWAY_MAX_CONNECTIONS)",
            connections.0.clone(),
        );
        let api_key_lookups = Counter::default();
        registry.register(
            "plangrep_api_key_lookups",
            "API keys looked up in the database",
            api_key_lookups.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "plangrep_rate_limit_fallbacks",
            "Per-key rate-limit decisions made in this replica's memory because the shared store (PLANGREP_REDIS_URL) was unreachable",
            rate_limit_fallbacks.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
            in_flight,
            rate_limited,
            connections,
            api_key_lookups,
            rate_limit_fallbacks,
        }
    }
}

impl HttpMetrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        plangrep_service::ops::encode(&self.registry)
    }

    fn record(&self, method: &str, route: &str, status: u16, started: Instant) {
        let labels = RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        // Only the rate limiter answers 429.
        if status == 429 {
            self.rate_limited
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .inc();
        }
    }
}

/// Decrements the in-flight gauge however the request ends (a dropped future included).
struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware recording every request; added with `Router::layer` so it runs after
/// routing and sees the [`MatchedPath`].
pub async fn middleware(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    // Any token is a valid method: keep the label bounded to the ones routes exist for.
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => known,
        _ => "other",
    }
    .to_owned();
    metrics.in_flight.inc();
    let _in_flight = InFlight(metrics.in_flight.clone());
    let response = next.run(request).await;
    metrics.record(&method, &route, response.status().as_u16(), started);
    response
}
