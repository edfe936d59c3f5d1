//! A simulated Apache Cassandra 4.1 node for integration tests and benchmarks.
//!
//! Modules, in the order data flows through them:
//! - [`schema`]: system keyspaces (real table ids) plus generated user keyspaces, `schema.cql`.
//! - [`sstable`]: one `nb-<gen>-big-*` component set, written with seeded random content.
//! - `generate`: [`SimSpec`] and the first layout of a node (data, commitlog, saved caches,
//!   hints, `conf/cassandra.yaml`).
//! - `node`: [`SimNode`], the node on disk, and what happens to it over time (flush, compaction,
//!   lost volume); [`NodeIdentity`], who it is in its cluster (DC, rack, address, shared schema).
//! - `snapshot`: snapshots taken exactly as Cassandra does (hard links + `manifest.json` +
//!   `schema.cql`).
//! - `digest`: [`DataDigest`], the restore-equality check over a data directory (same format
//!   as the Medusa fixture digests).
//! - `mgmt_api`: [`MgmtApiServer`], the Management API subset a backup sidecar uses, with fault
//!   switches, alone or as one node of a ring whose gossip lists every member.

mod digest;
mod generate;
mod mgmt_api;
pub(crate) mod node;
pub mod schema;
mod snapshot;
pub mod sstable;
pub(crate) mod util;

use serde::{Deserialize, Serialize};

pub use digest::{
    DataDigest, FileDigest, digest_data_dir, load_digest_json, try_digest_data_dir, try_load_digest_json,
};
pub use mgmt_api::{Faults, MgmtApiServer};
pub use node::{NodeIdentity, STATE_FILE, SimNode};
pub use schema::TableDef;
pub use snapshot::SnapshotInfo;

/// What to generate: how many keyspaces, tables and SSTables, and roughly how many bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSpec {
    /// Seed of everything random (ids, tokens, sizes, file contents).
    pub seed: u64,
    /// Number of user keyspaces (`ks1..ksN`).
    pub user_keyspaces: usize,
    /// User tables per keyspace (named `table1..tableM` across keyspaces, round-robin).
    pub tables_per_keyspace: usize,
    /// SSTables per user table.
    pub sstables_per_table: usize,
    /// Approximate bytes of the data directory as a backup sees it (excluding `system_traces`,
    /// snapshots and incremental backups).
    pub target_bytes: u64,
    /// Give `table1` a legacy secondary index directory `.table1_ck_idx/` with its own SSTables.
    pub with_secondary_index: bool,
    /// Cassandra release reported by the Management API, e.g. `4.1.5`.
    pub cassandra_version: String,
}

impl SimSpec {
    /// The fixture-sized node: about 3 MiB and 600 files (2 user keyspaces with 2 tables of 8
    /// SSTables each, a 2i, plus all system keyspaces).
    pub fn small() -> Self {
        SimSpec {
            seed: 1,
            user_keyspaces: 2,
            tables_per_keyspace: 2,
            sstables_per_table: 8,
            target_bytes: 3 * 1024 * 1024,
            with_secondary_index: true,
            cassandra_version: "4.1.5".to_string(),
        }
    }

    /// A node whose backed-up data (see [`SimSpec::target_bytes`]) holds about `total_bytes` in
    /// about `total_files` files (within a few percent), for benchmarks such as
    /// `sized(2 << 30, 3_500, 1)` (few large files) or `sized(200 << 20, 32_000, 1)` (many small).
    pub fn sized(total_bytes: u64, total_files: usize, seed: u64) -> Self {
        let fixed = schema::system_sstables_backed_up() * sstable::COMPONENTS.len();
        // SSTables of user tables and of the 2i together.
        let user = (total_files.saturating_sub(fixed) / sstable::COMPONENTS.len()).max(2);
        let tables = ((user as f64 / 32.0).round() as usize).max(1);
        let keyspaces = tables.div_ceil(8).clamp(1, 6);
        let per_keyspace = tables.div_ceil(keyspaces);
        let tables = keyspaces * per_keyspace;
        let rough = (user / tables).max(1);
        let index = schema::index_sstables_for(rough);
        let per_table = ((user.saturating_sub(index) as f64 / tables as f64).round() as usize).max(1);
        SimSpec {
            seed,
            user_keyspaces: keyspaces,
            tables_per_keyspace: per_keyspace,
            sstables_per_table: per_table,
            target_bytes: total_bytes,
            with_secondary_index: true,
            cassandra_version: "4.1.5".to_string(),
        }
    }

    /// Files a backup of a freshly generated node would see (live files outside
    /// `system_traces`, snapshots and backups).
    pub fn expected_files(&self) -> usize {
        let user_tables = self.user_keyspaces.max(1) * self.tables_per_keyspace;
        let index = if self.with_secondary_index && user_tables > 0 {
            schema::index_sstables_for(self.sstables_per_table)
        } else {
            0
        };
        (schema::system_sstables_backed_up() + user_tables * self.sstables_per_table + index)
            * sstable::COMPONENTS.len()
    }
}
