//! Generated gRPC code (compiled by `build.rs`): the package-less `Medusa` service
//! (`proto/medusa.proto`) at the top, the `medusa_rs.v1` extensions (`proto/medusa_rs.proto`) in
//! [`ext`]: the messages, the servers and the clients.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("_");
pub use super::reply::GetBackupsResponse;
/// Encoded descriptor set of both files, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("medusa_descriptor");

/// The `medusa_rs.v1` package: `MedusaExtensions`.
pub mod ext {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("medusa_rs.v1");
}
