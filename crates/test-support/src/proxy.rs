//! A TCP proxy on loopback that a test can cut and restore, to take a real dependency
//! (PostgreSQL, RabbitMQ, a gRPC service) away from a service under test and give it back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy to `target`.
pub struct TcpProxy {
    addr: SocketAddr,
    /// Cancelled on `cut`: every relayed connection of the current generation closes.
    generation: Arc<Mutex<Option<CancellationToken>>>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Starts proxying `127.0.0.1:<random>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let generation = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let stop = CancellationToken::new();
        let accept_generation = generation.clone();
        let accept_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let current = accept_generation.lock().expect("not poisoned").clone();
                let Some(token) = current else {
                    // Cut: refuse by closing at once.
                    drop(inbound);
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            generation,
            stop,
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        if let Some(token) = self.generation.lock().expect("not poisoned").take() {
            token.cancel();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        *self.generation.lock().expect("not poisoned") = Some(CancellationToken::new());
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
