//! The backup flow, one node backup at a time (contract §3):
//!
//! 1. [`cassandra`]: the node takes a snapshot (Management API or `nodetool`) and tells its
//!    facts (ring, version, keyspace definitions);
//! 2. [`snapshot`]: what the snapshot put on disk, table by table;
//! 3. [`plan`]: for each file, upload or reuse what is stored, decided against
//!    [`plan::StoredObjects`] with digests from the [`digest_cache`] or read anew;
//! 4. [`run`]: the job itself: start the node backup in the bucket, move the bytes
//!    ([`crate::transfer`]), publish the manifest ([`crate::bucket::node_backup`]), clear the
//!    snapshot.
//!
//! [`Engine`] is what every backup needs, built once from the configuration.

pub mod cassandra;
pub mod digest_cache;
pub mod dse;
pub mod plan;
pub mod resolver;
pub mod run;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

pub use run::{BackupError, BackupReport};

use crate::config::cassandra_yaml::NodePaths;
use crate::format::names::Fqdn;
use crate::store::{Storage, StorageError};
use crate::transfer::Transfers;
use cassandra::{Cassandra, NodeError};

/// Everything a backup needs, built once at start-up: the bucket, the transfers, the node.
pub struct Engine {
    /// The bucket.
    pub storage: Storage,
    /// Upload machinery.
    pub transfers: Arc<Transfers>,
    /// Snapshots and node facts.
    pub cassandra: Arc<dyn Cassandra>,
    /// Where the data lives.
    pub paths: NodePaths,
    /// This node's name in the bucket.
    pub fqdn: Fqdn,
    /// medusa-rs' local state (digest cache, job journal).
    pub state_dir: PathBuf,
}

/// Why the engine could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be built.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No way to reach Cassandra.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl Engine {
    /// Builds the engine from configuration (no request is sent yet).
    pub fn open(cfg: &crate::config::Config) -> Result<Engine, OpenError> {
        let paths = NodePaths::load(&cfg.cassandra.config_file)?;
        let storage = Storage::from_config(&cfg.storage)?;
        Ok(Engine {
            transfers: Arc::new(Transfers::new(storage.clone(), &cfg.storage)),
            storage,
            cassandra: cassandra::from_config(cfg)?,
            fqdn: cfg.fqdn()?,
            state_dir: paths.state_dir(),
            paths,
        })
    }

    fn digest_cache_path(&self) -> PathBuf {
        self.state_dir.join(format!("digests-{}.v1", self.fqdn))
    }
}
