//! medusa-rs' integration tests: one test binary, one module per topic. Shared set-up (the
//! simulated node and its storage, the sidecar process, the datacenter and its operator, the
//! kill loops) is the `medusa_tests` library in `tests/support/`; the simulated Cassandra node,
//! the storage servers and the fault proxy are the `medusa-harness` crate in `tests/harness/`.
//!
//! `cargo test --release -p medusa-tests` runs every topic; `cargo test --release -p medusa-tests
//! --test it <topic>::` runs one (the filter is a substring of `<topic>::<test>`).
//!
//! Tests of different topics run side by side in this one process (two test threads unless
//! `--test-threads` says otherwise). What the host has only one of, the sidecar's default ports,
//! is taken through `medusa_tests::host` (see there).

mod backup;
mod cassandra;
mod cli;
mod contract_refs;
mod datacenter;
mod dse;
mod extensions;
mod faults;
mod grpc;
mod grpc_fuzz;
mod hostile_bucket;
mod hostile_cli;
mod hostile_restore;
mod hostile_volumes;
mod image;
mod kill_loops;
mod ops;
mod purge;
mod purge_property;
mod python_interop;
mod restore;
mod secrets;
