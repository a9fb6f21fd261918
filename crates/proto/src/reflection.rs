//! Server reflection for every gRPC server of the platform: v1 and v1alpha (grpcurl and
//! most CLI clients still speak only v1alpha), describing our packages and grpc.health.v1.

use tonic_reflection::server::{v1, v1alpha};

/// Builds both reflection services. Panics only if the embedded descriptors are corrupt,
/// which the build would already have caught.
pub fn services() -> (
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    (
        builder()
            .build_v1()
            .expect("embedded descriptors are valid"),
        builder()
            .build_v1alpha()
            .expect("embedded descriptors are valid"),
    )
}
