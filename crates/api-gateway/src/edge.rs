//! The public listener's accept loop, which owns what a slow or hostile client can hold:
//!
//! - **a connection cap**: at most `max_connections` connections are served at once; the
//!   loop stops accepting at the cap, so further clients wait in the kernel's listen
//!   backlog (they are queued, not refused) until a connection ends;
//! - **a header-read timeout**: a connection that does not deliver a complete request
//!   head within `header_read_timeout` (a slowloris sending half a request line, or an
//!   idle keep-alive connection) is closed, freeing its slot.
//!
//! The public port speaks HTTP/1.1 only: hyper's header-read timeout exists for HTTP/1,
//! and the HTTP/1-or-2 detection of `hyper_util`'s auto builder reads the first bytes
//! without any deadline. TLS and HTTP/2 end at the ingress (ADR 0014). The time a request
//! may take once its head is read is bounded by [`crate::request_timeout`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::ConnectionGauge;

/// What the accept loop enforces (from `Config`).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a complete request head.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled, then lets
/// every open connection finish its in-flight request and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: EdgeLimits,
    connections: ConnectionGauge,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // One permit per served connection: waiting for a permit before `accept` is what
    // leaves the clients beyond the cap in the backlog.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    back_off_after_accept_error(&error).await;
                    continue;
                }
            },
        };
        // Responses are written whole; Nagle's algorithm would only hold a response's
        // last segment back until the client's delayed ACK (tens of milliseconds).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        tracker.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits,
            ConnectionSlot::take(slot, connections.clone()),
            shutdown.clone(),
        ));
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// A served connection's permit and its place in the open-connections gauge, both given
/// back however the connection ends.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    gauge: ConnectionGauge,
}

impl ConnectionSlot {
    fn take(permit: OwnedSemaphorePermit, gauge: ConnectionGauge) -> Self {
        gauge.opened();
        Self {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.closed();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: EdgeLimits,
    _slot: ConnectionSlot,
    shutdown: CancellationToken,
) {
    // What `into_make_service_with_connect_info` would add: the rate limiter keys
    // unauthenticated requests by the peer's address.
    let service = router.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(Body::new)
    });
    let service = TowerToHyperService::new(service.map_err(|never: Infallible| never));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in flight (if any), then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Header-read timeouts, resets and malformed requests end here: the client's
        // doing, so not worth more than a debug line.
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Accept fails on resource exhaustion (EMFILE/ENFILE, ENOBUFS): wait a moment for
/// connections to close instead of spinning; per-connection errors are retried at once.
async fn back_off_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
