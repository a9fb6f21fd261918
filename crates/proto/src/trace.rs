//! Propagates the current W3C trace context on outgoing gRPC calls: each call is a client
//! span of the caller, and its context travels as the `traceparent` metadata.

use plangrep_telemetry::trace::ClientTrace;
use tonic::transport::Channel;

/// A channel whose calls are client spans carrying `traceparent` (what the generated
/// clients take: `JobOrchestratorClient::new(traced(channel))`).
pub type TracedChannel = ClientTrace<Channel>;

/// Wraps `channel` so its calls are traced.
pub fn traced(channel: Channel) -> TracedChannel {
    ClientTrace::new(channel)
}
