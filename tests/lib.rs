//! Shared helpers for the integration tests live in `harness/`; this crate only holds the tests.
