//! The faults the suite injects, one at a time, and what each asserts while it lasts:
//! the affected services' `/readyz` goes unready during the outage (the outage is held
//! until every one of them said so) and ready again after it.

use std::time::Duration;

use plangrep_test_support::receiver::Receiver;
use rand::Rng;
use rand::rngs::StdRng;

use super::outages::terminate_backends;
use super::stack::{Service, Stack};

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the service, then start it again.
    Kill(Service),
    /// Close every RabbitMQ connection of the stack from the server side (then keep the
    /// broker unreachable for a while).
    BrokerConnectionsClosed,
    /// Terminate every PostgreSQL backend of the stack (then keep the database unreachable
    /// for a while).
    DatabaseBackendsTerminated,
    /// The webhook receiver stops listening (connections refused), then comes back.
    ReceiverDown,
}

impl Fault {
    /// Every fault, once.
    pub const ALL: [Fault; 6] = [
        Fault::Kill(Service::Gateway),
        Fault::Kill(Service::Orchestrator),
        Fault::Kill(Service::Dispatcher),
        Fault::BrokerConnectionsClosed,
        Fault::DatabaseBackendsTerminated,
        Fault::ReceiverDown,
    ];

    /// The services whose readiness the fault takes away.
    fn affects(self) -> &'static [Service] {
        match self {
            Fault::Kill(Service::Gateway) => &[Service::Gateway],
            Fault::Kill(Service::Orchestrator) => &[Service::Orchestrator],
            Fault::Kill(Service::Dispatcher) => &[Service::Dispatcher],
            Fault::BrokerConnectionsClosed => &[Service::Orchestrator, Service::Dispatcher],
            Fault::DatabaseBackendsTerminated => &Service::ALL,
            Fault::ReceiverDown => &[],
        }
    }
}

/// Injects `fault`, holds it for a random while, ends it and waits until every service
/// is ready again. Returns a line for the run's log.
pub async fn inject(
    fault: Fault,
    stack: &mut Stack,
    receiver: &mut Receiver,
    rng: &mut StdRng,
) -> String {
    // How long the outage lasts once every affected service has noticed it: the length of
    // the fault itself, not a wait for something to happen.
    let hold = Duration::from_millis(rng.random_range(300..2_000));
    let mut note = String::new();
    match fault {
        Fault::Kill(service) => stack.kill(service).await,
        Fault::BrokerConnectionsClosed => {
            stack.vhost.close_all_connections().await;
            stack.broker_proxy.cut();
        }
        Fault::DatabaseBackendsTerminated => {
            let terminated = terminate_backends(stack.database.url()).await;
            stack.database_proxy.cut();
            note = format!(", {terminated} backends terminated");
        }
        Fault::ReceiverDown => receiver.go_down().await,
    }
    for service in fault.affects() {
        stack.wait_until_unready(*service).await;
    }
    tokio::time::sleep(hold).await;
    if fault == Fault::ReceiverDown {
        // The receiver is nobody's dependency: its outage must not take a service out of
        // the load balancer.
        for service in Service::ALL {
            assert!(
                stack.is_ready(service).await,
                "{service:?} went unready while only the webhook receiver was down"
            );
        }
    }
    match fault {
        Fault::Kill(service) => stack.start_service(service).await,
        Fault::BrokerConnectionsClosed => stack.broker_proxy.restore(),
        Fault::DatabaseBackendsTerminated => stack.database_proxy.restore(),
        Fault::ReceiverDown => receiver.come_back().await,
    }
    for service in Service::ALL {
        stack.wait_until_ready(service).await;
    }
    format!("{fault:?}: held {hold:?} after every affected service went unready{note}")
}
