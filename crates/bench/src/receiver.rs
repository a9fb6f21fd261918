//! Webhook receivers that answer at once: plain HTTP/1 servers on loopback, one per port
//! (each port is one destination to the dispatcher), recording every arrival with its
//! wall-clock time. A receiver can fail a share of first attempts with 500 so those
//! deliveries are retried.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plangrep_test_support::ports::ReservedPort;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One request a receiver got.
#[derive(Debug)]
pub struct Arrival {
    /// When its body had been read.
    pub at: SystemTime,
    /// The `webhook-id` header.
    pub webhook_id: String,
    pub body: Bytes,
    /// Whether it was answered 2xx (else it was one of the failed first attempts).
    pub accepted: bool,
}

struct Shared {
    /// Per cent of deliveries whose first attempt is answered 500.
    fail_percent: AtomicU32,
    failed_once: Mutex<HashSet<String>>,
    arrivals: mpsc::UnboundedSender<Arrival>,
}

impl Shared {
    /// Whether to fail this request: the first attempt of `fail_percent` % of the ids,
    /// chosen by a hash of the id so the share holds whatever the arrival order.
    fn fails(&self, webhook_id: &str) -> bool {
        let percent = self.fail_percent.load(Ordering::Relaxed);
        if percent == 0 {
            return false;
        }
        let hash = webhook_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        hash % 100 < u64::from(percent)
            && self
                .failed_once
                .lock()
                .expect("not poisoned")
                .insert(webhook_id.to_owned())
    }
}

/// Receivers on `ports` loopback ports.
pub struct Receivers {
    /// One URL per port.
    pub urls: Vec<String>,
    shared: Arc<Shared>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    servers: Vec<JoinHandle<()>>,
}

impl Receivers {
    /// Starts `ports` receivers.
    pub async fn start(ports: usize) -> Self {
        let (tx, arrivals) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            fail_percent: AtomicU32::new(0),
            failed_once: Mutex::new(HashSet::new()),
            arrivals: tx,
        });
        let mut urls = Vec::with_capacity(ports);
        let mut servers = Vec::with_capacity(ports);
        for _ in 0..ports {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a receiver");
            let addr: SocketAddr = listener.local_addr().expect("receiver address");
            urls.push(format!("http://{addr}/hooks"));
            servers.push(tokio::spawn(serve(listener, shared.clone())));
        }
        Self {
            urls,
            shared,
            arrivals,
            servers,
        }
    }

    /// Fails the first attempt of `percent` % of the deliveries from now on.
    pub fn fail_first_attempts(&self, percent: u32) {
        self.shared.fail_percent.store(percent, Ordering::Relaxed);
    }

    /// Waits for the next arrival.
    pub async fn next(&mut self) -> Option<Arrival> {
        self.arrivals.recv().await
    }

    /// Every arrival recorded so far, without waiting.
    pub fn drain(&mut self) -> Vec<Arrival> {
        let mut arrivals = Vec::new();
        while let Ok(arrival) = self.arrivals.try_recv() {
            arrivals.push(arrival);
        }
        arrivals
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// A loopback receiver that is down: connections to its URL are refused for as long as
/// it lives, and no other socket on the machine can take its port meanwhile.
pub struct DownReceiver {
    _port: ReservedPort,
    pub url: String,
}

impl DownReceiver {
    pub fn reserve() -> Self {
        let port = ReservedPort::new();
        let url = format!("http://{}/down", port.addr());
        Self { _port: port, url }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let webhook_id = request
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let at = SystemTime::now();
    let accepted = !shared.fails(&webhook_id);
    let _ = shared.arrivals.send(Arrival {
        at,
        webhook_id,
        body,
        accepted,
    });
    let status = if accepted {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}
