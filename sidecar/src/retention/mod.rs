//! Retention: which backups a purge removes ([`purge`]) and the cleanup of shared files no
//! backup references any more ([`orphans`]). Deleting one node backup is
//! [`crate::bucket::node_backup::delete`].
pub mod orphans;
pub mod purge;
