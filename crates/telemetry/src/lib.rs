//! `plangrep-telemetry`: structured logging, trace-context propagation and (optionally)
//! span export for every service.
//!
//! `LOG_FORMAT=text|json` picks the format, `RUST_LOG` the filter (default `info`).
//! Logs go to stderr so stdout stays free for command output (`make run` prints there).
//! [`trace`] carries the W3C `traceparent` across HTTP, gRPC, the outbox and AMQP; when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/gRPC as well, in the
//! same traces.

pub mod trace;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("invalid LOG_FORMAT: {0:?} is not text or json")]
    LogFormat(String),
    #[error("invalid OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Exporter(String),
}

/// What `init` needs to know.
#[derive(Debug, Clone, Copy)]
pub struct TelemetryConfig<'a> {
    /// The service name (`OTEL_SERVICE_NAME` overrides it in exported spans).
    pub service_name: &'a str,
    /// `LOG_FORMAT`.
    pub log_format: Option<&'a str>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; export is off when unset.
    pub otlp_endpoint: Option<&'a str>,
    /// `OTEL_SERVICE_NAME`.
    pub otel_service_name: Option<&'a str>,
}

/// Flushes exported spans when the service stops; hold it for the life of `main`.
#[must_use = "dropping the guard early loses the last spans"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: span export did not shut down cleanly: {error}");
        }
    }
}

/// Installs the global tracing subscriber for a service. Call once, first thing in `main`,
/// inside the tokio runtime (the span exporter runs on it).
pub fn init(config: TelemetryConfig<'_>) -> Result<TelemetryGuard, InitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format.unwrap_or("text") {
        "text" => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        other => return Err(InitError::LogFormat(other.to_owned())),
    };
    let provider = config
        .otlp_endpoint
        .map(|endpoint| {
            tracer_provider(
                endpoint,
                config.otel_service_name.unwrap_or(config.service_name),
            )
        })
        .transpose()?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(config.service_name.to_owned()))
    });
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, InitError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| InitError::Exporter(error.to_string()))?;
    // The async-runtime batch processor exports on tokio, where the tonic client lives (the
    // default processor's own thread has no reactor for it).
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
