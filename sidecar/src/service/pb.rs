//! Generated gRPC code for the package-less `Medusa` service (`proto/medusa.proto`, compiled by
//! `build.rs`): the messages, the server and the client.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("_");
pub use super::reply::GetBackupsResponse;
/// Encoded descriptor set of `medusa.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("medusa_descriptor");
