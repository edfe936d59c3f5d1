//! The backup flow.
pub mod cassandra;
pub mod plan;
pub mod run;
pub mod snapshot;

pub use run::{BackupError, BackupReport, Node, OpenError, state_dir};
