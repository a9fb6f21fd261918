//! The platform's three services as processes: which binaries they are, and loopback
//! ports reserved for them (the fault suite and the benchmark start them this way).

use std::net::SocketAddr;

/// One of the platform's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Gateway,
    Orchestrator,
    Dispatcher,
}

impl Service {
    /// Every service, in start order (peers first).
    pub const ALL: [Service; 3] = [Service::Orchestrator, Service::Dispatcher, Service::Gateway];

    /// Its binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Gateway => "api-gateway",
            Service::Orchestrator => "job-orchestrator",
            Service::Dispatcher => "webhook-dispatcher",
        }
    }

    /// Its place in per-service arrays.
    pub fn index(self) -> usize {
        match self {
            Service::Gateway => 0,
            Service::Orchestrator => 1,
            Service::Dispatcher => 2,
        }
    }
}

/// `N` loopback ports nobody listens on now, distinct from each other.
pub async fn reserve_ports<const N: usize>() -> [SocketAddr; N] {
    let mut listeners = Vec::with_capacity(N);
    for _ in 0..N {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind port 0"),
        );
    }
    std::array::from_fn(|i| listeners[i].local_addr().expect("addr"))
}
