//! Loopback ports for services a test stops and starts again on the same address.
//!
//! A port left free between two runs of a service is not the test's any more: an outgoing
//! connection anywhere on the machine may take it as its local port (from the same
//! ephemeral range), or another test's port-0 listener may, and the restart fails with
//! "address in use".
//!
//! - In the test's own process, a [`ReservedPort`] holds the port with a bound socket that
//!   never listens: connecting while the service is down is refused as for a free port,
//!   yet neither outgoing connections nor port-0 binds get it. Its listeners share the
//!   port with it through `SO_REUSEPORT`.
//! - A child process binds its own listener, so [`ports_for_child_processes`] picks ports
//!   below the ephemeral range, which outgoing connections and port-0 binds never use.

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// A loopback port kept for one test, for any number of successive listeners.
#[derive(Debug)]
pub struct ReservedPort {
    holder: TcpSocket,
}

impl ReservedPort {
    /// Reserves a free loopback port.
    pub fn new() -> Self {
        Self {
            holder: shared_socket((Ipv4Addr::LOCALHOST, 0).into()),
        }
    }

    /// The reserved address.
    pub fn addr(&self) -> SocketAddr {
        self.holder.local_addr().expect("reserved address")
    }

    /// A listener on the reserved address (call it on the runtime that will serve it).
    pub fn listener(&self) -> TcpListener {
        listen_on(self.addr())
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener on `addr`, which a [`ReservedPort`] holds (possibly for another thread's
/// runtime: call this on the runtime that will serve it).
pub fn listen_on(addr: SocketAddr) -> TcpListener {
    shared_socket(addr)
        .listen(1024)
        .unwrap_or_else(|error| panic!("listen on the reserved {addr}: {error}"))
}

fn shared_socket(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("TCP socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
        .bind(addr)
        .unwrap_or_else(|error| panic!("bind {addr}: {error}"));
    socket
}

/// `N` distinct free loopback ports below the ephemeral range, for services that run as
/// child processes and bind them themselves (after this returns, so they are free only
/// as of now; only another caller of this function could pick one meanwhile).
pub fn ports_for_child_processes<const N: usize>() -> [SocketAddr; N] {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 10_000.min(ephemeral_start / 2);
    let span = u64::from(ephemeral_start - low);
    let mut held = Vec::with_capacity(N);
    let mut seed = RandomState::new().hash_one(std::process::id()) | 1;
    while held.len() < N {
        // xorshift: enough to spread concurrent callers over the span.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = low + u16::try_from(seed % span).expect("below the range start");
        if let Ok(listener) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(listener);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().expect("addr"))
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn a_reserved_port_is_nobody_elses_and_refuses_connections_between_its_listeners() {
        let port = ReservedPort::new();
        let addr = port.addr();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nobody listens yet"
        );
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "another listener cannot take the reserved port"
        );

        for _ in 0..2 {
            let listener = port.listener();
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            client.expect("connects while a listener is up");
            accepted.expect("the listener accepts");
            drop(listener);
            assert!(
                TcpStream::connect(addr).await.is_err(),
                "refused once it closed"
            );
        }
    }

    #[test]
    fn ports_for_child_processes_are_distinct_and_below_the_ephemeral_range() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("a Linux port range");
        let ephemeral_start: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        let ports = ports_for_child_processes::<6>().map(|addr| addr.port());
        let mut distinct = ports.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "{ports:?}");
        assert!(
            ports.iter().all(|&port| port < ephemeral_start),
            "{ports:?}"
        );
        for port in ports {
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("free when handed out");
        }
    }
}
