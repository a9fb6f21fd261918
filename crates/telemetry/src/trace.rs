//! W3C Trace Context (`traceparent`), carried through every hop of a request: the HTTP
//! request, gRPC metadata, the outbox row, the AMQP message headers and the dispatcher's
//! delivery row, so one trace id ties a customer's request to the webhooks it caused.
//!
//! The current context lives in a task-local for the duration of a request or message
//! ([`scope`]); [`current`] reads it where a hop is recorded (outbox append, gRPC client
//! call). Each hop continues the caller's trace with a fresh span id ([`TraceContext::child`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The header / metadata / AMQP header name.
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(bytes)
}

impl TraceContext {
    /// A new trace (this process is its root), sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: random(),
            span_id: random(),
            sampled: true,
        }
    }

    /// Parses a `traceparent` value; `None` for anything malformed (all-zero ids included).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = unhex(trace)?;
        let span_id: [u8; 8] = unhex(span)?;
        let flags: [u8; 1] = unhex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The same trace, a new span (the next hop).
    pub fn child(&self) -> Self {
        Self {
            span_id: random(),
            ..*self
        }
    }

    /// The trace id as 32 hex digits (what log lines carry).
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

impl TraceContext {
    /// Makes `span` part of this trace in exported spans (OTLP), as the child of this
    /// context's span. Without an exporter this does nothing.
    pub fn attach(&self, span: &tracing::Span) {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `future` with `context` as the current trace context.
pub fn scope<F: Future>(context: TraceContext, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(context, future)
}

/// The current trace context, if running inside [`scope`].
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// The `traceparent` to hand to the next hop: a child of the current context.
pub fn next_hop() -> Option<String> {
    current().map(|context| context.child().to_string())
}

/// A tower layer for servers (tonic, axum): continues the caller's `traceparent` header,
/// runs the request inside [`scope`] and a `server` span that is a child of the caller's
/// span in exported traces.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let context = parent
            .map(|p| p.child())
            .unwrap_or_else(TraceContext::new_root);
        let span = tracing::info_span!(
            "server",
            path = %request.uri().path(),
            trace_id = %context.trace_id(),
        );
        if let Some(parent) = parent {
            parent.attach(&span);
        }
        let future = self.inner.call(request);
        Box::pin(scope(
            context,
            tracing::Instrument::instrument(future, span),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_children_keep_the_trace() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(value).unwrap();
        assert_eq!(context.to_string(), value);
        let child = context.child();
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child.to_string(), value);
        let root = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_scope_makes_the_context_current() {
        assert!(current().is_none());
        let root = TraceContext::new_root();
        let seen = scope(root, async { current() }).await;
        assert_eq!(seen, Some(root));
        let hop = scope(root, async { next_hop() }).await.unwrap();
        assert_eq!(
            TraceContext::parse(&hop).unwrap().trace_id(),
            root.trace_id()
        );
    }
}
