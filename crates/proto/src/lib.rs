//! Generated protobuf and gRPC types of the platform, one module per proto package, plus
//! the encoded descriptor set that every gRPC server registers with reflection.
//!
//! Generated code stays behind these modules; the small conversions between protobuf
//! timestamps and `chrono` live in [`time`].

pub mod reflection;
pub mod status;
pub mod time;
pub mod trace;
pub mod views;

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/plangrep_protos.rs"));
}

/// `plangrep.orchestrator.v1`: the job orchestrator's gRPC API.
pub mod orchestrator {
    pub use crate::generated::plangrep::orchestrator::v1::*;
}

/// `plangrep.dispatcher.v1`: the webhook dispatcher's delivery log API.
pub mod dispatcher {
    pub use crate::generated::plangrep::dispatcher::v1::*;
}

/// `plangrep.events.v1`: status-change events carried on RabbitMQ.
pub mod events {
    pub use crate::generated::plangrep::events::v1::*;
}

/// The encoded `FileDescriptorSet` of every proto in `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("plangrep_descriptor");
