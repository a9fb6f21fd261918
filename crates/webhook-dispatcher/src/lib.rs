//! `plangrep-webhook-dispatcher`: turns status-change events into signed, durably
//! retried, per-job ordered webhook deliveries (SPEC §5).
//!
//! Layout: [`intake`] records a delivery per event (ack after commit); [`scheduler`]
//! claims due deliveries and attempts them through [`sender`] (signing, HTTP,
//! [`destination`] checks against SSRF) and judges the result with [`outcome`]; the retry
//! schedule is `plangrep_core::retry`; [`target`] fetches URLs and secrets from the
//! orchestrator; [`grpc`] serves the delivery log; [`metrics`] counts what happens;
//! [`store`] holds the SQL.

#![forbid(unsafe_code)]

pub mod config;
pub mod destination;
pub mod grpc;
pub mod intake;
pub mod metrics;
pub mod outcome;
pub mod scheduler;
pub mod sender;
pub mod startup;
pub mod store;
pub mod target;

pub use config::Config;
pub use startup::App;
