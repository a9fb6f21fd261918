//! `plangrep-service`: the chassis every binary shares, so the three `main.rs` files stay
//! thin and behave the same way:
//!
//! - [`settings`]: layered settings (defaults, optional TOML file, environment) with
//!   one-line errors that name the variable;
//! - [`database`]: a PostgreSQL pool confined to the service's own schema, migrations;
//! - [`batch`]: group writes, many callers' items in one statement and one commit;
//! - [`shutdown`]: one cancellation token fed by SIGTERM and ctrl-c;
//! - [`ops`]: `/healthz`, `/readyz` and (where a service has metrics) `/metrics`;
//! - [`grpc_metrics`]: calls by method and code, as a tower layer around tonic;
//! - [`internal_auth`]: the internal service credential of gRPC calls (servers and
//!   clients) and the key that authenticates broker events;
//! - [`grpc_health`]: `grpc.health.v1` answers kept in step with readiness;
//! - [`cli`]: the `serve | migrate | healthcheck` subcommands and `run_main`, the body of
//!   every binary's `main` (settings, telemetry, one-line errors);
//! - [`healthcheck`]: the probe behind the `healthcheck` subcommand.

pub mod batch;
pub mod cli;
pub mod database;
pub mod grpc_health;
pub mod grpc_metrics;
pub mod healthcheck;
pub mod internal_auth;
pub mod ops;
pub mod settings;
pub mod shutdown;

pub use settings::{SettingError, Settings};

/// The connections a gRPC server accepts on `listener`, with `TCP_NODELAY`: a response
/// goes out in several writes (headers, data, trailers), and with Nagle's algorithm the
/// later ones wait for the peer's delayed ACK of the first (40 ms on Linux).
pub fn grpc_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
