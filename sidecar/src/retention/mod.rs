//! Retention.
pub mod delete;
pub mod purge;
