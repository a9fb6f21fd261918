//! `plangrep-telemetry`: structured logging and trace-context propagation for every
//! service.
//!
//! `LOG_FORMAT=text|json` picks the format, `RUST_LOG` the filter (default `info`).
//! Logs go to stderr so stdout stays free for command output (`make run` prints there).
//! [`trace`] carries the W3C `traceparent` across HTTP, gRPC, the outbox and AMQP.

pub mod trace;

use tracing_subscriber::EnvFilter;

/// An unknown `LOG_FORMAT`.
#[derive(Debug, thiserror::Error)]
#[error("invalid LOG_FORMAT: {0:?} is not text or json")]
pub struct InvalidLogFormat(pub String);

/// Installs the global tracing subscriber for a service. Call once, first thing in `main`.
/// `otlp_endpoint` is `OTEL_EXPORTER_OTLP_ENDPOINT`: span export is not built in yet (see
/// docs/adr/0005), so a configured endpoint is reported instead of silently ignored.
pub fn init(
    service_name: &str,
    log_format: Option<&str>,
    otlp_endpoint: Option<&str>,
) -> Result<(), InvalidLogFormat> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format.unwrap_or("text") {
        "text" => builder.try_init().ok(),
        "json" => builder.json().flatten_event(true).try_init().ok(),
        other => return Err(InvalidLogFormat(other.to_owned())),
    };
    tracing::debug!(service = service_name, "logging initialised");
    if let Some(endpoint) = otlp_endpoint {
        tracing::warn!(
            endpoint,
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build does not export spans yet; \
             trace ids are propagated and logged"
        );
    }
    Ok(())
}
