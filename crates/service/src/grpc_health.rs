//! Keeps a service's `grpc.health.v1.Health` answers true: a small supervisor loop that
//! re-evaluates the same readiness check `/readyz` uses and reports `NOT_SERVING` while
//! the database or the broker is unreachable, `SERVING` again once they are back. gRPC
//! clients and load balancers that health-check over gRPC then stop routing to a replica
//! that could only fail, exactly like HTTP ones do with `/readyz`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::ops::ReadinessCheck;

/// How often the health status is re-evaluated: short enough that a balancer notices an
/// outage within a second, long enough to cost nothing (one `SELECT 1` per tick).
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Reports the outcome of `readiness` for the overall server (`""`) and every name in
/// `services` every `interval` until `shutdown`, then reports `NOT_SERVING` (the replica
/// is draining).
pub async fn health_loop(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    readiness: ReadinessCheck,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut reported = None;
    loop {
        let status = if readiness().await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if reported != Some(status) {
            if reported.is_some() || status != ServingStatus::Serving {
                tracing::info!(%status, "gRPC health changed");
            }
            report(&reporter, &services, status).await;
            reported = Some(status);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    report(&reporter, &services, ServingStatus::NotServing).await;
}

async fn report(reporter: &HealthReporter, services: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}
