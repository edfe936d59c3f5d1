//! Test harness for medusa-rs.
//!
//! - [`sim`]: a simulated Apache Cassandra node: its on-disk layout (data, commitlog, caches,
//!   hints, `cassandra.yaml`) and its Management API over HTTP on loopback, taking snapshots by
//!   hard links exactly as Cassandra does.
//! - [`services`]: real storage servers on loopback (s3s-fs in-process, moto, azurite) and the
//!   `medusa.ini` text that points medusa-rs at them.
pub mod services;
pub mod sim;
