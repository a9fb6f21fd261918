//! `plangrep-core`: the pure heart of the platform.
//!
//! No IO, no async, no clocks of its own (time is always a parameter): the job state
//! machine, prefixed ids, the public error-code table, Standard Webhooks signing, the
//! broker events' authentication tag, the webhook retry schedule and the validated domain
//! types that requests are parsed into at the edge. Everything here is unit-tested next
//! to the code.

#![forbid(unsafe_code)]

pub mod api;
pub mod credits;
pub mod error_code;
pub mod event_auth;
pub mod id;
pub mod job;
pub mod pages;
pub mod pagination;
pub mod project;
pub mod retry;
pub mod sheet;
pub mod validate;
pub mod webhook;

pub use error_code::ErrorCode;
pub use job::{JobEvent, JobStatus};
pub use project::ProjectStatus;
