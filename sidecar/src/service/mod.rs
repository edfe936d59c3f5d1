//! The sidecar service.
pub mod daemon;
pub mod decommissioned;
pub mod ext;
pub mod grpc;
pub mod jobs;
pub mod listing;
pub mod metrics;
pub mod online;
pub mod pb;
pub mod reply;
pub mod status;
pub mod tls;
pub mod verify;
