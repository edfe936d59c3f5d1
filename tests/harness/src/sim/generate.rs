//! The first layout of a simulated node: plan every SSTable (pure), then write the plan with a
//! few threads, then the files outside the data directory and `cassandra.yaml`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::SimSpec;
use super::schema::{self, TableDef};
use super::sstable::{OVERHEAD_FIXED, OVERHEAD_RATIO, SstablePlan};
use super::util::{dashed_uuid, mix_seed};

/// Smallest `Data.db` the generator writes.
const MIN_DATA: u64 = 64;

/// Everything [`super::SimNode::generate`] writes into the data directory.
pub(crate) struct NodePlan {
    pub tables: Vec<TableDef>,
    pub sstables: Vec<SstablePlan>,
}

/// Plans the schema and every SSTable of a fresh node. Pure: no I/O at all. Table ids come from
/// `schema_seed` (the nodes of one cluster share their schema), contents from `spec.seed`.
pub(crate) fn plan_node(spec: &SimSpec, schema_seed: u64, data_dir: &Path) -> NodePlan {
    let mut tables = schema::system_tables();
    let user = schema::user_tables(
        schema_seed,
        spec.user_keyspaces,
        spec.tables_per_keyspace,
        spec.sstables_per_table,
        spec.with_secondary_index,
    );
    let mut rng = SmallRng::seed_from_u64(mix_seed(spec.seed, &["plan"]));
    let mut sstables = Vec::new();

    // System tables: small, fixed-size data like a real idle node.
    let mut system_bytes = 0u64;
    for t in &tables {
        let dir = data_dir.join(&t.keyspace).join(t.dir_name());
        for generation in generations(&mut rng, t.initial_sstables) {
            let size = rng.random_range(150..12_000);
            let plan = SstablePlan::new(dir.clone(), generation, size, file_seed(spec, t, generation, ""));
            if t.keyspace != "system_traces" {
                system_bytes += plan.total_size();
            }
            sstables.push(plan);
        }
    }

    // User tables: log-uniform sizes (a size-tiered mix of small and large SSTables), scaled so
    // the whole data directory lands near the target.
    let mut weighted = Vec::new();
    for t in &user {
        let dir = data_dir.join(&t.keyspace).join(t.dir_name());
        let table_factor = (rng.random_range(-0.7f64..0.7)).exp();
        for generation in generations(&mut rng, t.initial_sstables) {
            let w = table_factor * rng.random_range(0.0f64..64f64.ln()).exp();
            weighted.push((dir.clone(), generation, w, file_seed(spec, t, generation, "")));
        }
        if let Some(index) = &t.index {
            let idir = dir.join(format!(".{index}"));
            for generation in generations(&mut rng, t.index_sstables) {
                let w = 0.25 * table_factor * rng.random_range(0.0f64..64f64.ln()).exp();
                weighted.push((idir.clone(), generation, w, file_seed(spec, t, generation, index)));
            }
        }
    }
    let count = weighted.len() as u64;
    let user_budget = spec.target_bytes.saturating_sub(system_bytes).saturating_sub(count * OVERHEAD_FIXED);
    let data_total = (user_budget as f64 / (1.0 + OVERHEAD_RATIO)).max((count * MIN_DATA) as f64);
    let weight_sum: f64 = weighted.iter().map(|w| w.2).sum();
    for (dir, generation, w, seed) in weighted {
        let size = ((data_total * w / weight_sum) as u64).max(MIN_DATA);
        sstables.push(SstablePlan::new(dir, generation, size, seed));
    }
    tables.extend(user);
    NodePlan { tables, sstables }
}

/// `n` increasing generations with the gaps that compactions leave behind.
fn generations(rng: &mut SmallRng, n: usize) -> Vec<u64> {
    let mut g = 0;
    (0..n)
        .map(|_| {
            g += if rng.random_bool(0.3) { rng.random_range(2..5) } else { 1 };
            g
        })
        .collect()
}

fn file_seed(spec: &SimSpec, t: &TableDef, generation: u64, index: &str) -> u64 {
    mix_seed(spec.seed, &["sstable", &t.keyspace, &t.name, index, &generation.to_string()])
}

/// Writes the planned SSTables on up to four threads (generation is CPU- and page-cache-bound).
pub(crate) fn write_sstables(plans: &[SstablePlan]) -> io::Result<Vec<PathBuf>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let results: Vec<io::Result<Vec<PathBuf>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                s.spawn(move || {
                    plans.iter().skip(i).step_by(threads).map(SstablePlan::write).collect::<io::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("writer thread panicked"))))
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    out.sort();
    Ok(out)
}

/// Creates every table directory (Cassandra creates them at startup, SSTables or not).
pub(crate) fn create_table_dirs(data_dir: &Path, tables: &[TableDef]) -> io::Result<()> {
    for t in tables {
        fs::create_dir_all(data_dir.join(&t.keyspace).join(t.dir_name()))?;
    }
    Ok(())
}

/// Incremental backups in one user table: `backups/` with hard links of two of its SSTables.
pub(crate) fn write_incremental_backups(data_dir: &Path, tables: &[TableDef]) -> io::Result<()> {
    let users: Vec<&TableDef> = tables.iter().filter(|t| !t.is_system()).collect();
    let Some(t) = users.get(1).or(users.first()) else {
        return Ok(());
    };
    let dir = data_dir.join(&t.keyspace).join(t.dir_name());
    let backups = dir.join("backups");
    fs::create_dir_all(&backups)?;
    let gens: Vec<u64> = super::sstable::live_generations(&dir)?.into_keys().take(2).collect();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let linked =
            name.to_str().and_then(super::sstable::parse_component_name).is_some_and(|(g, _)| gens.contains(&g));
        if linked {
            fs::hard_link(entry.path(), backups.join(&name))?;
        }
    }
    Ok(())
}

/// Commit log segments, saved caches and a hints file: what a lost volume also loses and what a
/// restore must clear.
pub(crate) fn write_other_dirs(
    seed: u64,
    host_id: &str,
    commitlog: &Path,
    caches: &Path,
    hints: &Path,
) -> io::Result<()> {
    let mut rng = SmallRng::seed_from_u64(mix_seed(seed, &["other-dirs"]));
    let mut blob = |len: usize| {
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        v
    };
    fs::create_dir_all(commitlog)?;
    fs::create_dir_all(caches)?;
    fs::create_dir_all(hints)?;
    let base = 1_700_000_000_000u64 + seed % 1_000_000;
    for i in 0..2 {
        fs::write(commitlog.join(format!("CommitLog-7-{}.log", base + i)), blob(128 * 1024))?;
    }
    fs::write(caches.join("KeyCache-f.db"), blob(16 * 1024))?;
    fs::write(caches.join("CounterCache-f.db"), blob(1024))?;
    fs::write(hints.join(format!("{host_id}-{base}-2.hints")), blob(32 * 1024))?;
    Ok(())
}

/// Sixteen sorted vnode tokens, one in each sixteenth of the Murmur3 ring.
pub(crate) fn tokens(seed: u64) -> Vec<i64> {
    let mut rng = SmallRng::seed_from_u64(mix_seed(seed, &["tokens"]));
    let step: i128 = (1i128 << 64) / 16;
    let mut t: Vec<i64> = (0..16i128)
        .map(|i| {
            let v = i128::from(i64::MIN) + i * step + rng.random_range(0..step / 2);
            v as i64
        })
        .collect();
    t.sort_unstable();
    t
}

/// A random (version 4) UUID string derived from the seed.
pub(crate) fn uuid_from_seed(seed: u64, what: &str) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&mix_seed(seed, &[what, "hi"]).to_be_bytes());
    b[8..].copy_from_slice(&mix_seed(seed, &[what, "lo"]).to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    dashed_uuid(&b)
}

/// Paths and identity written into `conf/cassandra.yaml`.
pub(crate) struct YamlFacts<'a> {
    pub cluster_name: &'a str,
    pub data_dir: &'a Path,
    pub commitlog: &'a Path,
    pub caches: &'a Path,
    pub hints: &'a Path,
    pub listen_address: &'a str,
    /// `host:port` of the seed nodes; empty: this node alone.
    pub seeds: &'a [String],
}

/// A trimmed Cassandra 4.1 `cassandra.yaml`. `auto_bootstrap` and `initial_token` are absent on
/// purpose: a restore adds them.
pub(crate) fn cassandra_yaml(f: &YamlFacts<'_>) -> String {
    let seeds = if f.seeds.is_empty() { format!("{}:7000", f.listen_address) } else { f.seeds.join(",") };
    format!(
        "# cassandra.yaml written by the medusa-rs test harness (simulated Cassandra 4.1)\n\
         cluster_name: '{cluster}'\n\
         num_tokens: 16\n\
         allocate_tokens_for_local_replication_factor: 3\n\
         partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n\
         data_file_directories:\n    - {data}\n\
         commitlog_directory: {commitlog}\n\
         saved_caches_directory: {caches}\n\
         hints_directory: {hints}\n\
         commitlog_sync: periodic\n\
         commitlog_sync_period: 10000ms\n\
         seed_provider:\n\
         \x20   - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n\
         \x20     parameters:\n\
         \x20         - seeds: \"{seeds}\"\n\
         listen_address: {listen}\n\
         rpc_address: {listen}\n\
         storage_port: 7000\n\
         native_transport_port: 9042\n\
         endpoint_snitch: GossipingPropertyFileSnitch\n\
         incremental_backups: true\n\
         snapshot_before_compaction: false\n\
         auto_snapshot: true\n",
        cluster = f.cluster_name,
        data = f.data_dir.display(),
        commitlog = f.commitlog.display(),
        caches = f.caches.display(),
        hints = f.hints.display(),
        listen = f.listen_address,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_hits_target_bytes_and_files() {
        let spec = SimSpec::small();
        let plan = plan_node(&spec, spec.seed, Path::new("/d"));
        let backed_up: Vec<_> = plan.sstables.iter().filter(|p| !p.dir.starts_with("/d/system_traces")).collect();
        assert_eq!(backed_up.len() * 8, spec.expected_files());
        let bytes: u64 = backed_up.iter().map(|p| p.total_size()).sum();
        let target = spec.target_bytes as f64;
        assert!((bytes as f64 - target).abs() < target * 0.05, "{bytes} vs {target}");
        let t = tokens(1);
        assert_eq!(t.len(), 16);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }
}
