//! DataStax Enterprise in the bucket, as Medusa lays it out (contract §9.1): the node's
//! `metadata` directory (DSE 6's node-local system state, outside the data directory) is a
//! manifest section of the made-up keyspace `dse`, table = the folder's name; a file in a
//! sub-folder whose name ends with `nodes` keeps that folder in its key (as a 2i file keeps
//! its `.index` folder), any other sub-folder is flattened away. `server_version.json` says
//! `"server_type": "dse"`. DSE Search's `solr.data` is never backed up: a restore empties it
//! and DSE rebuilds the indexes from the restored tables.

/// The manifest keyspace of DSE's metadata directory.
pub const SECTION: &str = "dse";
/// The metadata directory's default name (in the parent of the data directory).
pub const METADATA: &str = "metadata";
/// DSE Search's index data, in the data directory.
pub const SEARCH_DIR: &str = "solr.data";
/// A keyspace every DSE node has (5.0 and later), and no Apache Cassandra node: how a node is
/// recognised as DSE from its data directory (Medusa asks `system.local` for `dse_version`
/// over CQL, which medusa-rs does not speak).
pub const MARKER_KEYSPACE: &str = "dse_system";
/// The metadata sub-folder of node-local state (DSE 6's `local` and `peers`): the analog of
/// `system.local` and `system.peers`, not carried over to other nodes.
pub const NODES: &str = "nodes";

/// Whether the key of a metadata file keeps its parent folder `parent` (Medusa's rule:
/// `path_maybe_with_parent`, for 2i folders and DSE's `*nodes` folders).
pub fn keeps_parent(parent: &str) -> bool {
    parent.ends_with(NODES)
}

/// Whether a copied metadata entry is left out, as Medusa leaves it out: transaction logs and
/// files set aside (`*.txn*`, `*.old*`), and the `snapshots` folder itself.
pub fn skipped(name: &str) -> bool {
    name.contains(".txn") || name.contains(".old") || name == "snapshots"
}

/// `server_type` of a `server_version.json`; `"cassandra"` when absent or unreadable (Medusa's
/// default for backups without one).
pub fn server_type(server_version: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(server_version)
        .ok()
        .and_then(|v| v.get("server_type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "cassandra".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medusa_rules() {
        assert!(keeps_parent("nodes") && keeps_parent("dsenodes"));
        assert!(!keeps_parent("schema") && !keeps_parent("nodes2"));
        assert!(skipped("local.txn") && skipped("peers.old.1") && skipped("snapshots"));
        assert!(!skipped("local"));
        assert_eq!(server_type(br#"{"server_type": "dse", "release_version": "4.0.0.6851"}"#), "dse");
        assert_eq!(server_type(b"garbage"), "cassandra");
    }
}
