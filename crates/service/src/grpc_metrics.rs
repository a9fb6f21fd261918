//! Prometheus metrics of a gRPC server, as a tower layer around tonic's router: calls
//! handled by service, method and status code, and their duration.
//!
//! Every method of ours is unary, so a call's status is known with the response head:
//! tonic answers an error as a trailers-only response (`grpc-status` in the headers) and a
//! success as a normal response whose trailers say `0`. A path that names no method
//! (answered `UNIMPLEMENTED`) is labelled `unknown`, so clients cannot grow the label set.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Code;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    /// The fully qualified gRPC service, e.g. `plangrep.orchestrator.v1.JobOrchestrator`.
    service: String,
    /// The method, e.g. `CreateJob`.
    method: String,
    /// The status code name, e.g. `OK`, `NOT_FOUND`.
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

/// The gRPC server metrics of one service instance; clone it into [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetrics {
    handled: Family<HandledLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
}

impl GrpcMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let handled = Family::<HandledLabels, Counter>::default();
        registry.register(
            "plangrep_grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            handled.clone(),
        );
        // 1 ms .. ~33 s.
        let duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "plangrep_grpc_server_handling_seconds",
            "Time to answer a gRPC call (until the response head), by service and method",
            duration.clone(),
        );
        Self { handled, duration }
    }

    fn record(&self, path: &str, code: Code, started: Instant) {
        let (service, method) = match path.trim_start_matches('/').split_once('/') {
            Some((service, method)) if code != Code::Unimplemented => (service, method),
            _ => ("unknown", "unknown"),
        };
        let method_labels = MethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        self.duration
            .get_or_create(&method_labels)
            .observe(started.elapsed().as_secs_f64());
        self.handled
            .get_or_create(&HandledLabels {
                service: method_labels.service,
                method: method_labels.method,
                code: code_name(code).to_owned(),
            })
            .inc();
    }
}

/// The canonical upper-case name of a status code (as grpc-go and the gRPC docs spell it).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A tower layer recording every call in [`GrpcMetrics`] (add it with
/// `tonic::transport::Server::builder().layer(..)`).
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the router.
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok()?.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from_i32),
                // The transport failed the call before any status was sent.
                Err(_) => Code::Unknown,
            };
            metrics.record(&path, code, started);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_labelled_by_service_method_and_code_and_unknown_paths_collapse() {
        let mut registry = Registry::default();
        let metrics = GrpcMetrics::register(&mut registry);
        let started = Instant::now();
        metrics.record("/plangrep.x.v1.X/Get", Code::NotFound, started);
        metrics.record("/plangrep.x.v1.X/Nonsense", Code::Unimplemented, started);
        let text = crate::ops::encode(&registry);
        assert!(
            text.contains(
                r#"plangrep_grpc_server_handled_total{service="plangrep.x.v1.X",method="Get",code="NOT_FOUND"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"plangrep_grpc_server_handled_total{service="unknown",method="unknown",code="UNIMPLEMENTED"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("Nonsense"), "{text}");
    }
}
