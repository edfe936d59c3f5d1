//! [`SimNode`]: a generated node on disk, and what happens to it over time (memtable flushes,
//! size-tiered compactions, a lost volume). Identity and schema persist in `<root>/sim-node.json`.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SimSpec;
use super::generate::{self, YamlFacts};
use super::schema::TableDef;
use super::sstable::{self, OVERHEAD_FIXED, OVERHEAD_RATIO, SstablePlan};
use super::util::mix_seed;

/// File under the node root that lets [`SimNode::open`] re-open a generated node.
pub const STATE_FILE: &str = "sim-node.json";

/// Who a node is in its cluster: what its `cassandra.yaml` and its gossip say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `cluster_name`.
    pub cluster_name: String,
    /// Datacenter.
    pub dc: String,
    /// Rack.
    pub rack: String,
    /// `listen_address`, also the node's `ENDPOINT_IP` in gossip.
    pub listen_address: String,
    /// Seed of the schema (user table ids, schema version), shared by the nodes of one cluster;
    /// `None`: the spec's own seed.
    pub schema_seed: Option<u64>,
    /// `host:port` of the cluster's seed nodes; empty: this node alone.
    pub seeds: Vec<String>,
}

impl Default for NodeIdentity {
    /// A single node: cluster `demo`, `dc1`, rack `default`, `127.0.0.1`.
    fn default() -> Self {
        NodeIdentity {
            cluster_name: "demo".to_string(),
            dc: "dc1".to_string(),
            rack: "default".to_string(),
            listen_address: "127.0.0.1".to_string(),
            schema_seed: None,
            seeds: Vec::new(),
        }
    }
}

/// A simulated Cassandra node rooted at a directory laid out like `/var/lib/cassandra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimNode {
    /// Node root (like `/var/lib/cassandra`).
    pub root: PathBuf,
    /// `data_file_directories[0]`: `<root>/data`.
    pub data_dir: PathBuf,
    /// `<root>/commitlog`.
    pub commitlog_dir: PathBuf,
    /// `<root>/saved_caches`.
    pub saved_caches_dir: PathBuf,
    /// `<root>/hints`.
    pub hints_dir: PathBuf,
    /// `<root>/conf/cassandra.yaml`.
    pub cassandra_yaml: PathBuf,
    /// `cluster_name` in the yaml and gossip.
    pub cluster_name: String,
    /// Datacenter (`dc1` unless generated with another [`NodeIdentity`]).
    pub dc: String,
    /// Rack (`default` unless generated with another [`NodeIdentity`]).
    pub rack: String,
    /// The node's 16 vnode tokens, sorted.
    pub tokens: Vec<i64>,
    /// `listen_address` (`127.0.0.1` unless generated with another [`NodeIdentity`]).
    pub listen_address: String,
    /// Seed nodes written into `cassandra.yaml` (empty: this node).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Host id (a UUID string).
    pub host_id: String,
    /// Schema version (a UUID string) reported in gossip.
    pub schema_version: String,
    /// What the node was generated from.
    pub spec: SimSpec,
    /// Every table of the schema, system keyspaces first.
    pub tables: Vec<TableDef>,
}

impl SimNode {
    /// Generates a fresh node under `root` (created if missing; existing node files are not
    /// removed first, so use an empty directory).
    pub fn generate(root: &Path, spec: &SimSpec) -> io::Result<SimNode> {
        SimNode::generate_with(root, spec, &NodeIdentity::default())
    }

    /// Generates a fresh node that is `who` in its cluster (see [`NodeIdentity`]); tokens and
    /// file contents come from `spec.seed`, so nodes of one ring need different seeds.
    pub fn generate_with(root: &Path, spec: &SimSpec, who: &NodeIdentity) -> io::Result<SimNode> {
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        let data_dir = root.join("data");
        let schema_seed = who.schema_seed.unwrap_or(spec.seed);
        let plan = generate::plan_node(spec, schema_seed, &data_dir);
        let node = SimNode {
            commitlog_dir: root.join("commitlog"),
            saved_caches_dir: root.join("saved_caches"),
            hints_dir: root.join("hints"),
            cassandra_yaml: root.join("conf").join("cassandra.yaml"),
            cluster_name: who.cluster_name.clone(),
            dc: who.dc.clone(),
            rack: who.rack.clone(),
            tokens: generate::tokens(spec.seed),
            listen_address: who.listen_address.clone(),
            seeds: who.seeds.clone(),
            host_id: generate::uuid_from_seed(spec.seed, "host-id"),
            schema_version: generate::uuid_from_seed(schema_seed, "schema-version"),
            spec: spec.clone(),
            tables: plan.tables,
            data_dir,
            root,
        };
        generate::create_table_dirs(&node.data_dir, &node.tables)?;
        generate::write_sstables(&plan.sstables)?;
        generate::write_incremental_backups(&node.data_dir, &node.tables)?;
        node.write_other_dirs()?;
        node.write_yaml()?;
        node.save()?;
        Ok(node)
    }

    /// Re-opens a node generated earlier under `root`. A node directory that was moved or copied
    /// elsewhere gets its paths rebased onto `root` (`cassandra.yaml` is left as it is).
    pub fn open(root: &Path) -> io::Result<SimNode> {
        let root = fs::canonicalize(root)?;
        let text = fs::read_to_string(root.join(STATE_FILE))?;
        let mut node: SimNode =
            serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if node.root != root {
            for p in [
                &mut node.data_dir,
                &mut node.commitlog_dir,
                &mut node.saved_caches_dir,
                &mut node.hints_dir,
                &mut node.cassandra_yaml,
            ] {
                if let Ok(rel) = p.strip_prefix(&node.root) {
                    *p = root.join(rel);
                }
            }
            node.root = root;
        }
        Ok(node)
    }

    fn save(&self) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        let tmp = self.root.join(format!("{STATE_FILE}.tmp"));
        fs::write(&tmp, text)?;
        fs::rename(tmp, self.root.join(STATE_FILE))
    }

    fn write_yaml(&self) -> io::Result<()> {
        if let Some(conf) = self.cassandra_yaml.parent() {
            fs::create_dir_all(conf)?;
        }
        let yaml = generate::cassandra_yaml(&YamlFacts {
            cluster_name: &self.cluster_name,
            data_dir: &self.data_dir,
            commitlog: &self.commitlog_dir,
            caches: &self.saved_caches_dir,
            hints: &self.hints_dir,
            listen_address: &self.listen_address,
            seeds: &self.seeds,
        });
        fs::write(&self.cassandra_yaml, yaml)
    }

    fn write_other_dirs(&self) -> io::Result<()> {
        generate::write_other_dirs(
            self.spec.seed,
            &self.host_id,
            &self.commitlog_dir,
            &self.saved_caches_dir,
            &self.hints_dir,
        )
    }

    /// Keyspace names: those of the schema, then any other keyspace directory on disk.
    pub fn keyspaces(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tables {
            if !out.contains(&t.keyspace) {
                out.push(t.keyspace.clone());
            }
        }
        if let Ok(entries) = fs::read_dir(&self.data_dir) {
            let mut extra: BTreeSet<String> = BTreeSet::new();
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // A keyspace name has no `.` (DSE Search's `solr.data` is not a keyspace).
                if e.path().is_dir() && !out.contains(&name) && !name.contains('.') {
                    extra.insert(name);
                }
            }
            out.extend(extra);
        }
        out
    }

    /// Table names of one keyspace (schema order).
    pub fn table_names(&self, keyspace: &str) -> Vec<String> {
        self.tables.iter().filter(|t| t.keyspace == keyspace).map(|t| t.name.clone()).collect()
    }

    /// The schema entry of `keyspace.table`.
    pub fn table(&self, keyspace: &str, table: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.keyspace == keyspace && t.name == table)
    }

    /// `<data_dir>/<keyspace>/<table>-<id>`.
    pub fn table_dir(&self, table: &TableDef) -> PathBuf {
        self.data_dir.join(&table.keyspace).join(table.dir_name())
    }

    /// User (non-system) tables.
    pub fn user_tables(&self) -> Vec<&TableDef> {
        self.tables.iter().filter(|t| !t.is_system()).collect()
    }

    /// Live bytes of user tables (table dirs and their 2i dirs, no snapshots/backups).
    pub fn user_live_bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for t in self.user_tables() {
            for dir in self.sstable_dirs(t) {
                for g in sstable::live_generations(&dir)?.values() {
                    total += g;
                }
            }
        }
        Ok(total)
    }

    /// Directories that hold SSTables of a table: the table dir and its 2i dir.
    fn sstable_dirs(&self, t: &TableDef) -> Vec<PathBuf> {
        let dir = self.table_dir(t);
        let mut out = vec![dir.clone()];
        if let Some(idx) = &t.index {
            out.push(dir.join(format!(".{idx}")));
        }
        out
    }

    /// A memtable flush of all user tables: writes new SSTable generations (full component sets)
    /// adding about `fraction` of the current user bytes. Returns the new `Data.db` paths.
    pub fn flush(&mut self, seed: u64, fraction: f64) -> io::Result<Vec<PathBuf>> {
        self.flush_keyspace(seed, fraction, None)
    }

    /// Like [`SimNode::flush`], limited to one keyspace (`None`: all). System keyspaces are
    /// accepted and left unchanged.
    pub fn flush_keyspace(&mut self, seed: u64, fraction: f64, keyspace: Option<&str>) -> io::Result<Vec<PathBuf>> {
        let targets: Vec<TableDef> =
            self.user_tables().into_iter().filter(|t| keyspace.is_none_or(|k| k == t.keyspace)).cloned().collect();
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let added = (self.user_live_bytes()? as f64 * fraction.max(0.0)) as u64;
        let mut rng = SmallRng::seed_from_u64(mix_seed(seed, &["flush"]));
        let count = ((targets.len() as f64 * 0.5).round() as usize).clamp(1, 16);
        let picks: Vec<(usize, f64)> =
            (0..count).map(|_| (rng.random_range(0..targets.len()), rng.random_range(0.5..1.5))).collect();
        let weight_sum: f64 = picks.iter().map(|p| p.1).sum();
        let mut written = Vec::new();
        for (i, w) in picks {
            let t = &targets[i];
            let share = added as f64 * w / weight_sum;
            let data = data_size_for(share);
            let dirs = self.sstable_dirs(t);
            written.push(write_next(&dirs[0], data, seed, t, "")?);
            // The index of a flushed table is flushed with it.
            if let (Some(idir), Some(idx)) = (dirs.get(1), &t.index) {
                written.push(write_next(idir, (data / 4).max(64), seed, t, idx)?);
            }
        }
        Ok(written)
    }

    /// One round of size-tiered compaction: in about half of the user table (and 2i)
    /// directories holding 2+ SSTables, 2 to 4 of the smallest generations are replaced by one new
    /// generation (written first, then the old files are removed, as Cassandra does).
    pub fn compact(&mut self, seed: u64) -> io::Result<()> {
        let mut candidates = Vec::new();
        for t in self.user_tables() {
            for (i, dir) in self.sstable_dirs(t).into_iter().enumerate() {
                let gens = sstable::live_generations(&dir)?;
                if gens.len() >= 2 {
                    let idx = if i == 0 { String::new() } else { t.index.clone().unwrap_or_default() };
                    candidates.push((t.clone(), idx, dir, gens));
                }
            }
        }
        let mut rng = SmallRng::seed_from_u64(mix_seed(seed, &["compact"]));
        candidates.shuffle(&mut rng);
        let rounds = candidates.len().div_ceil(2);
        for (t, idx, dir, gens) in candidates.into_iter().take(rounds) {
            let mut by_size: Vec<(u64, u64)> = gens.into_iter().map(|(g, s)| (s, g)).collect();
            by_size.sort_unstable();
            let n = rng.random_range(2..=by_size.len().min(4));
            let inputs = &by_size[..n];
            let input_bytes: u64 = inputs.iter().map(|(s, _)| s).sum();
            let out = (input_bytes as f64 * rng.random_range(0.75..1.0)) as u64;
            write_next(&dir, out.max(64), seed, &t, &idx)?;
            for (_, g) in inputs {
                sstable::remove_generation(&dir, *g)?;
            }
        }
        Ok(())
    }

    /// A lost volume: empties the data, commitlog, saved caches and hints directories (the
    /// directories themselves and `conf/cassandra.yaml` stay).
    pub fn wipe(&mut self) -> io::Result<()> {
        for dir in [&self.data_dir, &self.commitlog_dir, &self.saved_caches_dir, &self.hints_dir] {
            empty_dir(dir)?;
        }
        Ok(())
    }

    /// Bytes of all regular files under the data directory except snapshots (gossip `LOAD`).
    pub fn load_bytes(&self) -> u64 {
        walkdir::WalkDir::new(&self.data_dir)
            .into_iter()
            .filter_entry(|e| !(e.depth() == 3 && e.file_name() == "snapshots"))
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// The `GET /api/v0/metadata/endpoints` body of a node alone in its ring: the JAX-RS entity
    /// wrapper around its own gossip entry.
    pub fn endpoints_json(&self) -> Value {
        entity_wrapper(Value::Array(vec![self.gossip_entry(true)]))
    }

    /// This node's entry in a `GET /api/v0/metadata/endpoints` answer: every gossip state by
    /// name, as seen from a node that is this one (`is_local`) or a peer.
    pub fn gossip_entry(&self, is_local: bool) -> Value {
        let tokens: Vec<String> = self.tokens.iter().map(i64::to_string).collect();
        let first = tokens.first().cloned().unwrap_or_default();
        let ip = &self.listen_address;
        json!({
            "ENDPOINT_IP": ip,
            "IS_ALIVE": "true",
            "IS_LOCAL": is_local.to_string(),
            "CLUSTER_NAME": self.cluster_name,
            "PARTITIONER": "org.apache.cassandra.dht.Murmur3Partitioner",
            "DC": self.dc,
            "RACK": self.rack,
            "HOST_ID": self.host_id,
            "RELEASE_VERSION": self.spec.cassandra_version,
            "STATUS": format!("NORMAL,{first}"),
            "STATUS_WITH_PORT": format!("NORMAL,{first}"),
            "TOKENS": tokens.join(","),
            "NATIVE_ADDRESS_AND_PORT": format!("{ip}:9042"),
            "INTERNAL_ADDRESS_AND_PORT": format!("{ip}:7000"),
            "INTERNAL_IP": ip,
            "RPC_ADDRESS": ip,
            "RPC_READY": "true",
            "NET_VERSION": "12",
            "SSTABLE_VERSIONS": "big-nb",
            "SCHEMA": self.schema_version,
            "LOAD": format!("{}.0", self.load_bytes()),
        })
    }
}

/// The JAX-RS `Entity` wrapper the Management API serialises for its JSON "entity" endpoints.
pub(crate) fn entity_wrapper(entity: Value) -> Value {
    let media = json!({"type": "application", "subtype": "json", "parameters": {},
        "wildcardType": false, "wildcardSubtype": false});
    json!({
        "entity": entity,
        "variant": {"language": null, "mediaType": media, "encoding": null, "languageString": null},
        "annotations": [],
        "mediaType": media,
        "language": null,
        "encoding": null,
    })
}

/// `Data.db` size giving an SSTable of about `total` bytes.
fn data_size_for(total: f64) -> u64 {
    (((total - OVERHEAD_FIXED as f64) / (1.0 + OVERHEAD_RATIO)).max(64.0)) as u64
}

/// Writes the next generation of `dir` with content seeded by (`seed`, table, index, generation).
fn write_next(dir: &Path, data: u64, seed: u64, t: &TableDef, index: &str) -> io::Result<PathBuf> {
    let generation = sstable::next_generation(dir)?;
    let file_seed = mix_seed(seed, &["mutation", &t.keyspace, &t.name, index, &generation.to_string()]);
    SstablePlan::new(dir.to_path_buf(), generation, data, file_seed).write()
}

fn empty_dir(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
