//! `plangrep-api-gateway`: the only public surface. It authenticates API keys (it owns
//! organizations and keys), enforces scopes, validates and normalises requests, calls the
//! orchestrator and the dispatcher over gRPC, and answers in the SPEC error format.
//!
//! Layout: [`config`] and [`startup`] wire the service; [`routes`] holds the handlers,
//! one module per resource; [`auth`], [`json`] and [`destination`] parse requests at the
//! edge, and [`key_cache`] remembers the keys `auth` read; [`error`] is the one HTTP
//! error mapping; [`request_id`] the outermost middleware; [`edge`] the public accept
//! loop (connection cap, header-read timeout) and [`request_timeout`] the time a request
//! may take; [`rate_limit`] the per-key and per-peer limits (shared through Redis when
//! configured); [`idempotency`] scopes keys for the orchestrator and [`replay`] keeps
//! them for the operations the gateway performs itself; [`metrics`] is what the ops
//! listener's `/metrics` shows.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod destination;
pub mod drain;
pub mod edge;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod key_cache;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod rate_limit;
pub mod replay;
pub mod request_id;
pub mod request_timeout;
pub mod routes;
pub mod startup;

pub use config::Config;
pub use startup::App;

/// Now, truncated to milliseconds (the precision the API shows).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .expect("now is in range")
}
