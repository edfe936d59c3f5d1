//! The sidecar service.
pub mod daemon;
pub mod grpc;
pub mod jobs;
pub mod listing;
pub mod metrics;
pub mod pb;
pub mod reply;
pub mod status;
pub mod tls;
