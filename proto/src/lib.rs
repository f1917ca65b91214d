//! hoist's wire contract: the `hoist.v1.Agent` service and its messages.

/// Generated messages, client and server for `hoist.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("hoist.v1");
}

/// Encoded `FileDescriptorSet` of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hoist_descriptor.bin"));
