//! The bucket contract.
pub mod digest;
pub mod dse;
pub mod layout;
pub mod manifest;
pub mod names;
pub mod pyjson;
pub mod tokenmap;
