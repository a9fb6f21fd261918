//! A TCP proxy on loopback that a test can cut, stall, hold the answers of and restore,
//! to take a real dependency (PostgreSQL, RabbitMQ, a gRPC service) away from a service
//! under test, or freeze it, and give it back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy to `target`.
pub struct TcpProxy {
    addr: SocketAddr,
    /// The connections relayed since the last `restore`; `None` while cut.
    generation: Arc<Mutex<Option<Generation>>>,
    stop: CancellationToken,
}

/// Connections relayed between one `restore` and the next `cut`.
#[derive(Clone, Default)]
struct Generation {
    /// Cancelled on `cut`: every connection of the generation closes.
    cut: CancellationToken,
    /// Cancelled on `stall`: its connections stay open and carry nothing.
    stall: CancellationToken,
    /// Cancelled on `hold_answers`: its connections carry requests but no answers.
    hold: CancellationToken,
}

impl Generation {
    /// Whether `stall` or `hold_answers` froze this generation's connections.
    fn frozen(&self) -> bool {
        self.stall.is_cancelled() || self.hold.is_cancelled()
    }
}

impl TcpProxy {
    /// Starts proxying `127.0.0.1:<random>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let generation = Arc::new(Mutex::new(Some(Generation::default())));
        let stop = CancellationToken::new();
        let accept_generation = generation.clone();
        let accept_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                let current = accept_generation.lock().expect("not poisoned").clone();
                let Some(generation) = current else {
                    // Cut: refuse by closing at once.
                    drop(inbound);
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        relay(inbound, outbound, generation).await;
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

    /// Starts a proxy in front of the server `url` names (a test's `DATABASE_URL` or
    /// `AMQP_URL`, wherever it points) and returns it with `url` rewritten to go through it.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let parts = UrlAuthority::parse(url)
            .unwrap_or_else(|| panic!("{url:?} names no host to put a proxy in front of"));
        let target = tokio::net::lookup_host(parts.host_port())
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .unwrap_or_else(|| panic!("cannot resolve the server of {url:?}"));
        let proxy = Self::start(target).await;
        let proxied = parts.with_host_port(&proxy.addr().to_string());
        (proxy, proxied)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        if let Some(generation) = self.generation.lock().expect("not poisoned").take() {
            generation.cut.cancel();
        }
    }

    /// Stops carrying bytes without closing anything, as a frozen server or a network
    /// partition does: every connection, relayed or new, stays open and silent until
    /// `cut` or `restore`.
    pub fn stall(&self) {
        if let Some(generation) = self.generation.lock().expect("not poisoned").as_ref() {
            generation.stall.cancel();
        }
    }

    /// Keeps carrying what clients send but none of the server's answers, as a server
    /// that takes requests and never replies does: every connection, relayed or new,
    /// stays open until `cut` or `restore`.
    pub fn hold_answers(&self) {
        if let Some(generation) = self.generation.lock().expect("not poisoned").as_ref() {
            generation.hold.cancel();
        }
    }

    /// Closes what a stall or a hold kept open and relays new connections again.
    pub fn restore(&self) {
        let previous = self
            .generation
            .lock()
            .expect("not poisoned")
            .replace(Generation::default());
        if let Some(frozen) = previous.filter(Generation::frozen) {
            frozen.cut.cancel();
        }
    }
}

/// Carries bytes both ways until both sides are done or `generation` is cut. A stall
/// stops both directions and a hold the server's answers; what stops keeps its socket
/// open until the cut.
async fn relay(inbound: TcpStream, outbound: TcpStream, generation: Generation) {
    let (client_read, client_write) = inbound.into_split();
    let (server_read, server_write) = outbound.into_split();
    let requests = pipe(client_read, server_write, generation.stall.cancelled());
    let answers = pipe(server_read, client_write, async {
        tokio::select! {
            _ = generation.stall.cancelled() => {}
            _ = generation.hold.cancelled() => {}
        }
    });
    tokio::select! {
        _ = generation.cut.cancelled() => {}
        _ = async { tokio::join!(requests, answers) } => {}
    }
}

/// Copies `from` into `to` until `from` ends, then shuts `to` down; once `frozen`
/// completes it carries nothing more and keeps both open.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: impl Future<Output = ()>) {
    let copy = async {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    };
    tokio::select! {
        _ = frozen => std::future::pending::<()>().await,
        _ = copy => {}
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

/// A URL split around its `host[:port]` (`scheme://[userinfo@]host[:port][/rest]`).
#[derive(Debug, PartialEq)]
struct UrlAuthority<'a> {
    /// `scheme://` and `userinfo@`, when present.
    before: &'a str,
    host: &'a str,
    port: u16,
    /// The path and query, from the first `/` or `?` on.
    after: &'a str,
}

impl<'a> UrlAuthority<'a> {
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let userinfo = authority.rfind('@').map_or(0, |at| at + 1);
        let host_port = &authority[userinfo..];
        let default_port = match scheme {
            "postgres" | "postgresql" => 5432,
            "amqp" => 5672,
            "amqps" => 5671,
            _ => return None,
        };
        // A bracketed IPv6 host keeps its colons inside the brackets.
        let port_colon = host_port
            .rfind(':')
            .filter(|&colon| !host_port[colon..].contains(']'));
        let (host, port) = match port_colon {
            Some(colon) => (&host_port[..colon], host_port[colon + 1..].parse().ok()?),
            None => (host_port, default_port),
        };
        if host.is_empty() {
            return None;
        }
        let split = url.len() - rest.len() + userinfo;
        Some(Self {
            before: &url[..split],
            host,
            port,
            after: &rest[end..],
        })
    }

    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn with_host_port(&self, host_port: &str) -> String {
        format!("{}{host_port}{}", self.before, self.after)
    }
}

#[cfg(test)]
mod tests {
    use super::UrlAuthority;

    #[test]
    fn urls_are_rewritten_around_their_host_and_port() {
        let database =
            UrlAuthority::parse("postgres://postgres@db.internal:6543/plangrep_x").expect("parses");
        assert_eq!(database.host_port(), "db.internal:6543");
        assert_eq!(
            database.with_host_port("127.0.0.1:40000"),
            "postgres://postgres@127.0.0.1:40000/plangrep_x"
        );
        let broker = UrlAuthority::parse("amqp://guest:guest@localhost/%2f").expect("parses");
        assert_eq!(broker.host_port(), "localhost:5672");
        assert_eq!(
            broker.with_host_port("127.0.0.1:1"),
            "amqp://guest:guest@127.0.0.1:1/%2f"
        );
        let bare = UrlAuthority::parse("postgresql://[::1]:5433").expect("parses");
        assert_eq!(bare.host_port(), "[::1]:5433");
        assert_eq!(bare.with_host_port("h:1"), "postgresql://h:1");
        assert!(UrlAuthority::parse("not a url").is_none());
    }
}
