//! `plangrep-job-orchestrator`: owns projects, jobs and their history in PostgreSQL,
//! drives the job lifecycle through the pure state machine of `plangrep-core`, and
//! announces every status change through a transactional outbox relayed to RabbitMQ.
//!
//! Layout: [`config`] and [`startup`] wire the service; [`grpc`] is the transport and
//! [`request`] checks what it is sent;
//! [`jobs`] holds the job commands; [`store`] holds the SQL, [`lifecycle`] is the only
//! writer of statuses; [`relay`] publishes the outbox; [`pipeline`] is the set of stages
//! that consume our own events, parsing PDFs through [`pdf`]'s sandboxed child process;
//! [`expiry`] expires overdue jobs; [`idempotency`] stores replayable responses;
//! [`housekeeping`] deletes what expired; [`metrics`] is what `/metrics` shows;
//! [`dead_letters`] counts and re-drives the dead-letter queues for the admin API.

#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
pub mod dead_letters;
pub mod error;
pub mod expiry;
pub mod grpc;
pub mod housekeeping;
pub mod idempotency;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod pdf;
pub mod pipeline;
pub mod relay;
pub mod request;
pub mod reseal;
pub mod rotation;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::App;
