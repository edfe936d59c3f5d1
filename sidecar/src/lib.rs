//! medusa-rs: the backup engine shared by the gRPC sidecar and the restore init container.
pub mod backup;
pub mod config;
pub mod format;
pub mod fsutil;
pub mod restore;
pub mod retention;
pub mod service;
pub mod store;
pub mod transfer;

/// Generated gRPC code for the package-less `Medusa` service.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("_");
    /// Encoded descriptor set of `medusa.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("medusa_descriptor");
}
