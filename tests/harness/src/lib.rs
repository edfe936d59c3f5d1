//! Test harness for medusa-rs.
//!
//! - [`sim`]: a simulated Apache Cassandra node: its on-disk layout (data, commitlog, caches,
//!   hints, `cassandra.yaml`) and its Management API over HTTP on loopback, taking snapshots by
//!   hard links exactly as Cassandra does.
//! - [`services`]: real storage servers on loopback (s3s-fs in-process, moto, azurite) and the
//!   `medusa.ini` text that points medusa-rs at them.
//! - [`fault_proxy`]: a proxy in front of a real storage server that cuts the link on demand
//!   (TCP or HTTP mode) and, in HTTP mode, injects 503/500 answers, resets, cut bodies,
//!   black-holes and delays, at random rates or one-shot per kind of request, and counts them.
//! - [`fault_store`]: an `ObjectStore` wrapper with a simulated clock (Last-Modified of what it
//!   writes) and injectable failures (a delete budget, one-shot faults per operation).
pub mod fault_proxy;
pub mod fault_store;
pub mod services;
pub mod sim;
