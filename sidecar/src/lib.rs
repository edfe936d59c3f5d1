//! medusa-rs: the backup engine shared by the gRPC sidecar and the restore init container.
//!
//! Modules in data-flow order.
//!
//! Configuration and names:
//! - [`config`] (`medusa.ini`, read by [`ini`]), [`cassandra`] (`cassandra.yaml`), [`names`].
//!
//! The bucket contract (what Python Medusa and medusa-rs agree on, key for key):
//! - [`layout`] (object keys), [`manifest`], [`tokenmap`], [`pyjson`] (Python's JSON format).
//!
//! Backup: request → snapshot → plan → transfer → manifest and index:
//! - [`node`] (Cassandra: snapshots and facts), [`snapshot`] (what is on disk),
//!   [`digest`] (content hashes, local digest cache), [`plan`] (what to upload or reuse),
//!   [`transfer`] (streaming uploads), [`backup`] (the job), [`storage`] (the object store).
//!
//! The sidecar: [`daemon`] (process lifecycle) → [`server`] (the `Medusa` RPCs) → [`jobs`]
//! (durable job table) and [`catalog`] (what the bucket holds) → [`delete`] and [`purge`] (retention).
//!
//! Restore: [`restore`] (init container: mapping → plan → download → verify → place → mark done).
//!
//! Helpers: [`fsutil`] (durable writes, the blocking pool), [`metrics`] (Prometheus).
pub mod backup;
pub mod cassandra;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod delete;
pub mod digest;
pub mod fsutil;
pub mod ini;
pub mod jobs;
pub mod layout;
pub mod localcopy;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod node;
pub mod plan;
pub mod purge;
pub mod pyjson;
pub mod restore;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod tokenmap;
pub mod transfer;

/// Generated gRPC code for the package-less `Medusa` service.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("_");
    /// Encoded descriptor set of `medusa.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("medusa_descriptor");
}
