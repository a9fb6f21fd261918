//! W3C Trace Context (`traceparent`), carried through every hop of a request: the HTTP
//! request, gRPC metadata, the outbox row, the AMQP message headers and the dispatcher's
//! delivery row, so one trace id ties a customer's request to the webhooks it caused.
//!
//! With the OpenTelemetry layer installed ([`crate::init`]), the context of a hop is the
//! current exported span's: a `traceparent` names a span the collector receives, so
//! parent ids chain across services. Without it (a test without the layer), the context
//! lives in a task-local for the duration of a request or message ([`scope`]) and each
//! hop continues the caller's trace with a fresh span id ([`TraceContext::child`]).
//! [`current`] reads whichever applies where a hop is recorded (outbox append, gRPC
//! client call, delivery row).

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
    /// The context of an OpenTelemetry span, if it is a real one.
    fn from_otel(context: &opentelemetry::trace::SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            sampled: context.is_sampled(),
        })
    }

    /// `span`'s own context as the OpenTelemetry layer knows it (starting the span);
    /// `None` without the layer.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        Self::from_otel(span.context().span().span_context())
    }
}

impl From<TraceContext> for opentelemetry::trace::SpanContext {
    /// A remote parent: the caller's span.
    fn from(context: TraceContext) -> Self {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let flags = if context.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Self::new(
            TraceId::from_bytes(context.trace_id),
            SpanId::from_bytes(context.span_id),
            flags,
            true,
            TraceState::default(),
        )
    }
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `future` with `context` as the current trace context.
pub fn scope<F: Future>(context: TraceContext, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(context, future)
}

/// The span the OpenTelemetry layer has entered on this thread (the innermost of our
/// spans; dependencies' spans are not exported, so they never are).
fn current_otel() -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt;
    opentelemetry::Context::map_current(|context| {
        TraceContext::from_otel(context.span().span_context())
    })
}

/// The current trace context: the current exported span's, else the [`scope`]'s.
pub fn current() -> Option<TraceContext> {
    current_otel().or_else(|| CURRENT.try_with(|context| *context).ok())
}

/// The `traceparent` to hand to the next hop: the current span (the next hop's parent),
/// or without the span layer a child of the [`scope`]'s context.
pub fn next_hop() -> Option<String> {
    current_otel()
        .or_else(|| CURRENT.try_with(TraceContext::child).ok())
        .map(|context| context.to_string())
}

/// A tower layer for servers (tonic, axum): every request runs in a `request` span (kind
/// `server`) of `service` that continues the caller's `traceparent` header (or starts a
/// trace), and inside [`scope`] with that span's context.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    service: &'static str,
}

impl TraceLayer {
    /// The layer of `service` (the name its spans are exported under by default).
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            service: self.service,
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    service: &'static str,
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
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let path = request.uri().path();
        // gRPC names the method in the path; HTTP paths carry ids, so the method it is.
        let name = if grpc {
            path.trim_start_matches('/').to_owned()
        } else {
            request.method().to_string()
        };
        let span = tracing::info_span!(
            "request",
            otel.name = %name,
            otel.kind = "server",
            "http.request.method" = %request.method(),
            "url.path" = %path,
            trace_id = tracing::field::Empty,
        );
        crate::export::continue_trace(&span, self.service, parent);
        let context = TraceContext::of(&span)
            .or_else(|| parent.map(|p| p.child()))
            .unwrap_or_else(TraceContext::new_root);
        span.record("trace_id", tracing::field::display(context.trace_id()));
        let future = self.inner.call(request);
        Box::pin(scope(
            context,
            tracing::Instrument::instrument(future, span),
        ))
    }
}

/// A tower service for clients (a tonic channel): every call runs in an `rpc` span (kind
/// `client`, a child of the caller's span) whose context goes out as the `traceparent`
/// header, so the server's span is its child.
#[derive(Debug, Clone)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S> ClientTrace<S> {
    /// Wraps `inner` (e.g. a `tonic::transport::Channel`).
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for ClientTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "rpc",
            otel.name = %request.uri().path().trim_start_matches('/'),
            otel.kind = "client",
        );
        let context = TraceContext::of(&span).or_else(|| current().map(|c| c.child()));
        if let Some(value) = context.and_then(|c| http::HeaderValue::try_from(c.to_string()).ok()) {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        tracing::Instrument::instrument(self.inner.call(request), span)
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

    #[test]
    fn with_the_span_layer_a_hop_names_the_current_exported_span() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(crate::span_layer());
        tracing::subscriber::with_default(subscriber, || {
            let caller =
                TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .unwrap();
            let span = tracing::info_span!("request");
            crate::export::continue_trace(&span, "test", Some(caller));
            let own = TraceContext::of(&span).expect("the layer gives the span real ids");
            assert_eq!(own.trace_id(), caller.trace_id());
            assert_ne!(own, caller);
            assert_eq!(span.in_scope(next_hop), Some(own.to_string()));
            // A dependency's span is not the layer's: the hop still names ours.
            let internal = tracing::info_span!(target: "h2::proto", "poll_ready");
            assert_eq!(TraceContext::of(&internal), None);
            let hop = span.in_scope(|| internal.in_scope(next_hop));
            assert_eq!(hop, Some(own.to_string()));
        });
    }
}
