//! Span export over OTLP/gRPC, per service.
//!
//! One tracing subscriber serves the whole process ([`crate::init`]), but each service
//! exports its spans with its own `service.name`: three services run in one test process,
//! and a binary runs exactly one. A service starts its [`SpanExport`] when it is built and
//! flushes it when it stops.
//!
//! Which service a span belongs to travels in the OpenTelemetry context: the spans where
//! work enters a service (a request, an RPC, a consumed message, a relay publish, a
//! webhook attempt) are rooted with [`continue_trace`], which puts a [`Route`] next to the
//! caller's remote span context; every descendant inherits it. The layer's tracer
//! ([`RoutingTracer`]) builds each span with the tracer of its route's service. Spans
//! without a route (background loops) and spans of services that export nothing get real
//! ids from a tracer that records nowhere, so propagation works the same with export off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use opentelemetry::trace::{SpanBuilder, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::InitError;
use crate::trace::TraceContext;

/// A service's export settings (SPEC §7: `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_SERVICE_NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportConfig {
    /// The collector's OTLP/gRPC endpoint; export is off when unset.
    pub endpoint: Option<String>,
    /// Overrides the service's own name in the `service.name` resource.
    pub service_name: Option<String>,
}

impl ExportConfig {
    /// From the two settings' raw values.
    pub fn new(endpoint: Option<&str>, service_name: Option<&str>) -> Self {
        Self {
            endpoint: endpoint.map(str::to_owned),
            service_name: service_name.map(str::to_owned),
        }
    }
}

/// The name of a service's spans in the OpenTelemetry context of each of its spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route(&'static str);

/// One started export: the spans routed to `service` go to `tracer`.
struct Registration {
    id: u64,
    service: &'static str,
    tracer: SdkTracer,
    provider: SdkTracerProvider,
}

/// The exports started in this process. Global like the subscriber that reads it; a
/// replica started later (tests restart services) takes over its service's route.
fn registry() -> &'static RwLock<Vec<Registration>> {
    static REGISTRY: OnceLock<RwLock<Vec<Registration>>> = OnceLock::new();
    REGISTRY.get_or_init(RwLock::default)
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A service's span export; flush it with [`SpanExport::shutdown`] when the service stops.
#[must_use = "a dropped export is never flushed"]
pub struct SpanExport {
    id: u64,
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl SpanExport {
    /// Starts exporting the spans of `service` (the default `service.name`) when
    /// `config.endpoint` is set; otherwise exports nothing. Call inside the tokio runtime:
    /// the batch processor exports from a task on it, never blocking a span's end.
    pub fn start(service: &'static str, config: &ExportConfig) -> Result<Self, InitError> {
        let id = next_id();
        let Some(endpoint) = config.endpoint.as_deref() else {
            return Ok(Self { id, provider: None });
        };
        let name = config.service_name.as_deref().unwrap_or(service);
        let provider = tracer_provider(endpoint, name)?;
        registry()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Registration {
                id,
                service,
                tracer: provider.tracer("plangrep"),
                provider: provider.clone(),
            });
        Ok(Self {
            id,
            provider: Some(provider),
        })
    }

    /// Stops routing spans here and exports what is buffered.
    pub async fn shutdown(self) {
        registry()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|registration| registration.id != self.id);
        if let Some(provider) = self.provider {
            // The processor's shutdown waits for its export task on the runtime: wait on
            // a blocking thread, never on a runtime worker.
            let outcome = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = outcome {
                tracing::warn!(%error, "span export did not shut down cleanly");
            }
        }
    }
}

/// Flushes every export still running (the binary's last word, after its service stopped).
pub(crate) fn shutdown_all() {
    let registrations =
        std::mem::take(&mut *registry().write().unwrap_or_else(PoisonError::into_inner));
    for registration in registrations {
        if let Err(error) = registration.provider.shutdown() {
            eprintln!("telemetry: span export did not shut down cleanly: {error}");
        }
    }
}

fn tracer_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, InitError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| InitError::Exporter(error.to_string()))?;
    // The async-runtime batch processor exports on tokio, where the tonic client lives (the
    // default processor's own thread has no reactor for it). A full queue drops spans
    // rather than blocking the request that ends one.
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

/// Makes `span` the place where work enters `service`: its exported parent is `parent`
/// (the caller's span, from a `traceparent`), or it starts a trace; it and its
/// descendants are exported by `service`'s export, if one runs. Call right after
/// creating the span, before it is entered.
pub fn continue_trace(span: &tracing::Span, service: &'static str, parent: Option<TraceContext>) {
    let context = match parent {
        Some(parent) => opentelemetry::Context::new().with_remote_span_context(parent.into()),
        None => opentelemetry::Context::new(),
    };
    let _ = span.set_parent(context.with_value(Route(service)));
}

/// The tracer of the OpenTelemetry layer: builds each span with its service's tracer, or
/// with one that records nowhere.
#[derive(Debug, Clone)]
pub(crate) struct RoutingTracer {
    /// Gives unexported spans real ids, so `traceparent`s stay true with export off.
    unexported: SdkTracer,
    /// Keeps the unexported tracer's provider alive.
    _provider: Arc<SdkTracerProvider>,
}

impl RoutingTracer {
    pub(crate) fn new() -> Self {
        let provider = SdkTracerProvider::builder().build();
        Self {
            unexported: provider.tracer("plangrep"),
            _provider: Arc::new(provider),
        }
    }
}

impl Tracer for RoutingTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(
        &self,
        builder: SpanBuilder,
        parent_cx: &opentelemetry::Context,
    ) -> Self::Span {
        if let Some(Route(service)) = parent_cx.get::<Route>() {
            let registrations = registry().read().unwrap_or_else(PoisonError::into_inner);
            // The latest registration of the service wins (a restarted replica).
            if let Some(registration) = registrations
                .iter()
                .rev()
                .find(|registration| registration.service == *service)
            {
                return registration.tracer.build_with_context(builder, parent_cx);
            }
        }
        self.unexported.build_with_context(builder, parent_cx)
    }
}
