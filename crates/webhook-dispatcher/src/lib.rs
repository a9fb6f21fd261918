//! `plangrep-webhook-dispatcher`: turns status-change events into signed, durably
//! retried, per-job ordered webhook deliveries (SPEC §5).
//!
//! Layout: [`intake`] records a delivery per event (ack after commit); [`scheduler`]
//! leases due deliveries (fair across organizations, capped per destination by
//! [`slots`]) and [`attempt`] runs each through [`sender`] (signing, HTTP,
//! [`destination`] checks against SSRF), judges the result with [`outcome`] and records
//! it under the lease; the retry schedule is `plangrep_core::retry`; [`target`] fetches
//! URLs and secrets from the orchestrator; [`housekeeping`] applies retention and
//! refreshes gauges; [`grpc`] serves the delivery log; [`metrics`] counts what happens;
//! [`store`] holds the SQL.

#![forbid(unsafe_code)]

pub mod attempt;
pub mod config;
pub mod destination;
pub mod grpc;
pub mod housekeeping;
pub mod intake;
pub mod metrics;
pub mod outcome;
pub mod scheduler;
pub mod sender;
pub mod slots;
pub mod startup;
pub mod store;
pub mod target;

pub use config::Config;
pub use startup::App;
