//! `plangrep-telemetry`: structured logging, trace-context propagation and (optionally)
//! span export for every service.
//!
//! `LOG_FORMAT=text|json` picks the format, `RUST_LOG` the filter (default `info`).
//! Logs go to stderr so stdout stays free for command output (`make run` prints there).
//! [`trace`] carries the W3C `traceparent` across HTTP, gRPC, the outbox and AMQP, taking
//! span ids from the OpenTelemetry layer so exported parents are real spans; [`export`]
//! sends a service's spans over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The OpenTelemetry layer has its own filter ([`exported`]): only spans of our crates
//! (and warnings and errors logged in them) reach it, whatever `RUST_LOG` says for logs,
//! so HTTP/2, tonic and hyper internals never become spans an operator pays for.

pub mod export;
pub mod trace;

pub use export::{ExportConfig, SpanExport};

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    /// The service name (for messages about telemetry itself).
    pub service_name: &'a str,
    /// `LOG_FORMAT`.
    pub log_format: Option<&'a str>,
}

/// Flushes whatever span export is still running when the binary ends; hold it for the
/// life of `main`. (Services flush their own export when they stop.)
#[must_use = "dropping the guard early loses the last spans"]
pub struct TelemetryGuard(());

impl TelemetryGuard {
    /// Exports what is buffered and stops every exporter (blocks: call it off the runtime).
    pub fn shutdown(self) {
        export::shutdown_all();
    }
}

/// Whether the OpenTelemetry layer sees `metadata`: spans of our crates, and the warnings
/// and errors logged inside them (as span events). Dependencies' spans (h2, tonic, hyper,
/// tower, sqlx, lapin) never do.
pub fn exported(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() || *metadata.level() <= Level::WARN
}

/// The OpenTelemetry layer, filtered to our spans ([`exported`]), routing each span to its
/// service's [`SpanExport`].
pub fn span_layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let ours = Targets::new().with_target("plangrep_", Level::TRACE);
    tracing_opentelemetry::layer()
        .with_tracer(export::RoutingTracer::new())
        // Thread ids and names say nothing about an async request and cost per span.
        .with_threads(false)
        .with_filter(ours.and(filter_fn(exported)))
}

/// Installs the global tracing subscriber for a service. Call once, first thing in `main`.
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
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(span_layer())
        .try_init();
    Ok(TelemetryGuard(()))
}

/// Installs the global subscriber of a test process: the span layer, plus logs to the
/// test writer when `TEST_LOG` is set (`RUST_LOG` filters them). Does nothing if a
/// subscriber is already installed.
pub fn init_for_tests() {
    let logs = std::env::var_os("TEST_LOG").is_some().then(|| {
        let filter =
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn,lapin=warn".into());
        tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(EnvFilter::new(filter))
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(span_layer())
        .try_init();
}
