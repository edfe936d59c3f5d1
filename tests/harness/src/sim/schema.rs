//! The simulated node's schema: Cassandra 4.1 system keyspaces (with their real, name-derived
//! table ids) plus generated user keyspaces, and the CQL Cassandra writes into `schema.cql`.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::util::{dashed_uuid, mix_seed};

/// Keyspaces Cassandra 4.1 creates itself, in the order `getKeyspaces()` usually lists them.
pub const SYSTEM_KEYSPACES: [&str; 5] =
    ["system", "system_schema", "system_auth", "system_distributed", "system_traces"];

/// System tables and how many SSTables each holds on a freshly generated node (0: empty dir).
/// Counts follow the Medusa 0.31 fixture node.
const SYSTEM_TABLES: &[(&str, &str, usize)] = &[
    ("system", "IndexInfo", 0),
    ("system", "available_ranges_v2", 0),
    ("system", "batches", 0),
    ("system", "built_views", 0),
    ("system", "compaction_history", 4),
    ("system", "local", 2),
    ("system", "paxos", 1),
    ("system", "paxos_repair_history", 0),
    ("system", "peer_events_v2", 0),
    ("system", "peers", 1),
    ("system", "peers_v2", 1),
    ("system", "prepared_statements", 2),
    ("system", "repairs", 0),
    ("system", "size_estimates", 2),
    ("system", "sstable_activity", 3),
    ("system", "table_estimates", 2),
    ("system", "top_partitions", 1),
    ("system", "transferred_ranges_v2", 0),
    ("system", "view_builds_in_progress", 0),
    ("system_schema", "aggregates", 1),
    ("system_schema", "columns", 3),
    ("system_schema", "dropped_columns", 1),
    ("system_schema", "functions", 1),
    ("system_schema", "indexes", 1),
    ("system_schema", "keyspaces", 2),
    ("system_schema", "tables", 3),
    ("system_schema", "triggers", 1),
    ("system_schema", "types", 1),
    ("system_schema", "views", 1),
    ("system_auth", "network_permissions", 0),
    ("system_auth", "resource_role_permissons_index", 1),
    ("system_auth", "role_members", 1),
    ("system_auth", "role_permissions", 1),
    ("system_auth", "roles", 1),
    ("system_distributed", "parent_repair_history", 1),
    ("system_distributed", "partition_denylist", 0),
    ("system_distributed", "repair_history", 1),
    ("system_distributed", "view_build_status", 0),
    ("system_traces", "events", 1),
    ("system_traces", "sessions", 1),
];

/// Number of SSTables in system keyspaces other than `system_traces` (what a backup includes).
pub(crate) fn system_sstables_backed_up() -> usize {
    SYSTEM_TABLES.iter().filter(|(ks, _, _)| *ks != "system_traces").map(|(_, _, n)| n).sum()
}

/// One table of the simulated schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Keyspace name.
    pub keyspace: String,
    /// Table name.
    pub name: String,
    /// Table id, 32 lowercase hex digits (the directory suffix).
    pub id: String,
    /// SSTables written by [`super::SimNode::generate`] (flush/compact change the disk later).
    pub initial_sstables: usize,
    /// Legacy secondary index name (`<table>_<col>_idx`), stored in `<table dir>/.<index>/`.
    pub index: Option<String>,
    /// SSTables of the secondary index at generation time.
    pub index_sstables: usize,
    /// Name of a user-defined type used by a `frozen<...>` column, if any.
    pub udt: Option<String>,
}

impl TableDef {
    /// Directory name under the keyspace directory: `<table>-<id>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.id)
    }

    /// True for tables of Cassandra's own keyspaces.
    pub fn is_system(&self) -> bool {
        SYSTEM_KEYSPACES.contains(&self.keyspace.as_str())
    }

    /// The table id in its dashed UUID form (as in `WITH ID = ...`).
    pub fn dashed_id(&self) -> String {
        let mut b = [0u8; 16];
        if hex::decode_to_slice(&self.id, &mut b).is_err() {
            return self.id.clone();
        }
        dashed_uuid(&b)
    }

    /// The `schema.cql` Cassandra 4.1 writes into every snapshot directory of this table.
    pub fn schema_cql(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.udt {
            out.push_str(&format!(
                "CREATE TYPE IF NOT EXISTS {}.{t} (street text, city text, zip int);\n",
                self.keyspace
            ));
        }
        let (columns, pk, clustering) = if self.is_system() {
            ("\tkey text,\n\tvalue blob,\n".to_string(), "(key)", None)
        } else {
            let mut c = "\tid uuid,\n\tck timeuuid,\n\tpayload blob,\n".to_string();
            if let Some(t) = &self.udt {
                c.push_str(&format!("\taddr frozen<{t}>,\n"));
            }
            (c, "(id, ck)", Some("ck ASC"))
        };
        out.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (\n{columns}\tPRIMARY KEY {pk})\n\tWITH ID = {}\n",
            self.keyspace,
            self.name,
            self.dashed_id()
        ));
        if let Some(c) = clustering {
            out.push_str(&format!("\tAND CLUSTERING ORDER BY ({c})\n"));
        }
        out.push_str(
            "\tAND additional_write_policy = '99p'\n\
             \tAND bloom_filter_fp_chance = 0.01\n\
             \tAND caching = { 'keys': 'ALL', 'rows_per_partition': 'NONE' }\n\
             \tAND compaction = { 'class': 'org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy', 'max_threshold': '32', 'min_threshold': '4' }\n\
             \tAND compression = { 'chunk_length_in_kb': '16', 'class': 'org.apache.cassandra.io.compress.LZ4Compressor' }\n\
             \tAND gc_grace_seconds = 864000;\n",
        );
        if let Some(idx) = &self.index {
            out.push_str(&format!("CREATE INDEX IF NOT EXISTS {idx} ON {}.{} (ck);\n", self.keyspace, self.name));
        }
        out
    }
}

/// Cassandra's id for a system table: a name-based (MD5, version 3) UUID of `keyspace + table`.
pub(crate) fn system_table_id(keyspace: &str, table: &str) -> String {
    let d = Md5::digest(format!("{keyspace}{table}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x30;
    b[8] = (b[8] & 0x3f) | 0x80;
    hex::encode(b)
}

/// A time-based-looking (version 1) table id derived from the seed.
fn user_table_id(seed: u64, keyspace: &str, table: &str) -> String {
    let hi = mix_seed(seed, &["table-id-hi", keyspace, table]).to_be_bytes();
    let lo = mix_seed(seed, &["table-id-lo", keyspace, table]).to_be_bytes();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi);
    b[8..].copy_from_slice(&lo);
    b[6] = (b[6] & 0x0f) | 0x10;
    b[8] = (b[8] & 0x3f) | 0x80;
    hex::encode(b)
}

/// The system tables of a Cassandra 4.1 node.
pub(crate) fn system_tables() -> Vec<TableDef> {
    SYSTEM_TABLES
        .iter()
        .map(|&(ks, t, n)| TableDef {
            keyspace: ks.to_string(),
            name: t.to_string(),
            id: system_table_id(ks, t),
            initial_sstables: n,
            index: None,
            index_sstables: 0,
            udt: None,
        })
        .collect()
}

/// User tables `table1..tableN` spread round-robin over keyspaces `ks1..ksK` (as in the fixture:
/// `ks1` holds table1 and table3, `ks2` table2 and table4). `table1` carries the secondary index
/// when asked, `table2` a user-defined type.
pub(crate) fn user_tables(
    seed: u64,
    keyspaces: usize,
    tables_per_keyspace: usize,
    sstables_per_table: usize,
    with_index: bool,
) -> Vec<TableDef> {
    let keyspaces = keyspaces.max(1);
    let mut out = Vec::new();
    for i in 1..=keyspaces * tables_per_keyspace {
        let ks = format!("ks{}", (i - 1) % keyspaces + 1);
        let name = format!("table{i}");
        let index = (with_index && i == 1).then(|| format!("{name}_ck_idx"));
        out.push(TableDef {
            id: user_table_id(seed, &ks, &name),
            keyspace: ks,
            index_sstables: if index.is_some() { index_sstables_for(sstables_per_table) } else { 0 },
            index,
            udt: (i == 2).then(|| "address".to_string()),
            initial_sstables: sstables_per_table,
            name,
        });
    }
    out.sort_by(|a, b| (&a.keyspace, &a.name).cmp(&(&b.keyspace, &b.name)));
    out
}

/// SSTables in the 2i directory for a base table with `sstables_per_table` SSTables.
pub(crate) fn index_sstables_for(sstables_per_table: usize) -> usize {
    (sstables_per_table / 4).clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_ids_are_cassandras() {
        assert_eq!(system_table_id("system", "local"), "7ad54392bcdd35a684174e047860b377");
        assert_eq!(system_table_id("system", "peers_v2"), "c4325fbb8e5e3bafbd070f9250ed818e");
        assert_eq!(system_table_id("system_schema", "keyspaces"), "abac5682dea631c5b535b3d6cffd0fb6");
        assert_eq!(system_sstables_backed_up(), 40);
    }
}
