//! A webhook receiver on loopback: a real HTTP server that records every request
//! (headers and exact body bytes) and answers from a script, so tests can make it fail,
//! redirect, hang or answer 410 on cue, or go down (refuse connections) and come back on
//! the same port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ports::ReservedPort;

/// One captured request.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Bytes,
    /// When it arrived.
    pub received_at: std::time::Instant,
}

impl Captured {
    /// A header as text (empty when missing).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status with a `Retry-After` header.
    RetryAfter(u16, String),
    /// A redirect to this location.
    Redirect(u16, String),
    /// 200 with a body of this many bytes.
    LargeBody(usize),
    /// Never answer (until the test ends).
    Hang,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    captured: mpsc::UnboundedSender<Captured>,
    /// Cancelled when this listening period ends (releases hanging replies).
    stop: CancellationToken,
}

/// A running receiver. Requests beyond the script are answered 204.
pub struct Receiver {
    /// Its port, kept while it is down so it can come back on it.
    port: ReservedPort,
    script: Arc<Mutex<VecDeque<Reply>>>,
    captured: mpsc::UnboundedReceiver<Captured>,
    /// Kept so the channel outlives every listening period.
    captured_tx: mpsc::UnboundedSender<Captured>,
    stop: CancellationToken,
    /// The current listening period; `None` while the receiver is down.
    listening: Option<Listening>,
}

/// One period of accepting connections.
struct Listening {
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let port = ReservedPort::new();
        let listener = port.listener();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut receiver = Self {
            port,
            script: Arc::new(Mutex::new(VecDeque::new())),
            captured: rx,
            captured_tx: tx,
            stop: CancellationToken::new(),
            listening: None,
        };
        receiver.listen(listener);
        receiver
    }

    fn listen(&mut self, listener: tokio::net::TcpListener) {
        let stop = self.stop.child_token();
        let shared = Shared {
            script: self.script.clone(),
            captured: self.captured_tx.clone(),
            stop: stop.clone(),
        };
        let app = Router::new().fallback(capture).with_state(shared);
        let server_stop = stop.clone();
        let served = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await;
        });
        self.listening = Some(Listening { stop, served });
    }

    /// Stops listening: requests in flight are answered, open connections close, and
    /// new ones are refused until [`Receiver::come_back`].
    pub async fn go_down(&mut self) {
        if let Some(listening) = self.listening.take() {
            listening.stop.cancel();
            let _ = listening.served.await;
        }
    }

    /// Listens again, on the same port.
    pub async fn come_back(&mut self) {
        assert!(self.listening.is_none(), "the receiver is already up");
        self.listen(self.port.listener());
    }

    /// Every request captured so far and not yet taken, in arrival order.
    pub fn drain(&mut self) -> Vec<Captured> {
        std::iter::from_fn(|| self.captured.try_recv().ok()).collect()
    }

    /// The URL webhooks should be sent to.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.port.addr())
    }

    /// Queues replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("not poisoned").extend(replies);
    }

    /// The next captured request, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Captured {
        tokio::time::timeout(timeout, self.captured.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook arrived within {timeout:?}"))
            .expect("receiver running")
    }

    /// A request that arrives within `timeout`, or `None` (for "nothing more" checks).
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Captured> {
        tokio::time::timeout(timeout, self.captured.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn capture(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = shared
        .script
        .lock()
        .expect("not poisoned")
        .pop_front()
        .unwrap_or(Reply::Status(204));
    let _ = shared.captured.send(Captured {
        path: uri.path().to_owned(),
        headers,
        body,
        received_at: std::time::Instant::now(),
    });
    match reply {
        Reply::Status(code) => status(code).into_response(),
        Reply::RetryAfter(code, value) => (status(code), [("retry-after", value)]).into_response(),
        Reply::Redirect(code, location) => (status(code), [("location", location)]).into_response(),
        Reply::LargeBody(size) => Response::new(Body::from(vec![b'x'; size])),
        Reply::Hang => {
            shared.stop.cancelled().await;
            status(503).into_response()
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("valid status")
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn a_receiver_that_went_down_refuses_connections_until_it_comes_back_on_its_port() {
        let mut receiver = Receiver::start().await;
        let addr = receiver.port.addr();

        receiver.go_down().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "a receiver that is down refuses connections"
        );

        receiver.come_back().await;
        let mut stream = TcpStream::connect(addr).await.expect("listening again");
        stream
            .write_all(b"POST /webhooks HTTP/1.1\r\nhost: test\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .expect("request sent");
        let captured = receiver.next(Duration::from_secs(10)).await;
        assert_eq!(captured.path, "/webhooks");
        assert_eq!(&captured.body[..], b"{}");
        assert!(receiver.drain().is_empty());
    }
}
