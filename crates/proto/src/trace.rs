//! Propagates the current W3C trace context on outgoing gRPC calls.

use plangrep_telemetry::trace::{TRACEPARENT, next_hop};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

/// A client interceptor that adds `traceparent` (a child of the current context).
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTrace;

impl Interceptor for PropagateTrace {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = next_hop().and_then(|v| MetadataValue::try_from(v).ok()) {
            request.metadata_mut().insert(TRACEPARENT, value);
        }
        Ok(request)
    }
}
