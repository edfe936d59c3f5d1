//! Purge safety as a property (contract §5: a purge never deletes anything a retained or running
//! backup needs): random histories of full and
//! differential backups with overlapping files on three nodes, an in-flight backup, purges with
//! random limits and grace periods, and deletes, checked after every step against a model of
//! what the bucket must hold.
//!
//! Invariants (tags appear in failure messages):
//! - (model) `node_backups()` lists exactly the model's node backups (name, node, start,
//!   finished, differential);
//! - (a) every object of the manifest of a retained finished node backup exists, same size;
//! - (b) every object the in-flight backup uploaded or will reuse exists;
//! - (c) after an exclusive purge or a `clean_orphans`, no object below `P/N/data/` that no
//!   finished manifest of `N` references is older than the grace period;
//! - (d) the counters equal what disappeared (listing before/after, index entries excluded), and
//!   exactly the expected objects disappeared;
//! - (e) no object of a retained node backup disappears (names share prefixes: `b1`, `b10`,
//!   `b1-old`, ...);
//! - (f) a purge removes exactly the node backups contract §5.1 selects with its count rule fixed (age;
//!   count among complete backups; incomplete ones older than the newest complete one and the
//!   grace period; running kept);
//! - (accounting) every stored object belongs to a node backup, a latest pointer or a shared
//!   data folder; (latest) a latest pointer names a finished node backup of its node.
//!
//! Time is simulated: [`FaultStore`] stamps every object with the simulated clock, so a seed
//! replays exactly: `PURGE_PROPERTY_SEED=<seed> cargo test --release -p medusa-tests --test it
//! purge_property::purge_keeps` (`PURGE_PROPERTY_HISTORIES` changes how many histories run).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures::TryStreamExt;
use harness::fault_store::FaultStore;
use medusa::bucket::index::node_backups;
use medusa::bucket::node_backup::delete as delete_node_backup;
use medusa::config::Provider;
use medusa::format::layout::{Layout, Meta, Mode, TableFile};
use medusa::format::manifest::{ManifestObject, ManifestSection};
use medusa::format::names::{BackupName, Fqdn};
use medusa::retention::orphans::clean as clean_orphans;
use medusa::retention::purge::{Limits, PurgeReport, purge};
use medusa::store::Storage;
use object_store::ObjectStore;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const PREFIX: &str = "demo";
const INDEX: &str = "demo/index/";
/// Node names that share prefixes and contain `_` (index keys split on it).
const NODES: [&str; 3] = ["n1", "n10", "n_1"];
const DAY: i64 = 86_400;
const T0: i64 = 1_717_243_200;
const HISTORIES: u64 = 1000;
const STEPS: usize = 30;
const BASE_SEED: u64 = 0x5eed_0000;

type R<T> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Tables and file contents.

struct Table {
    ks: &'static str,
    dir: &'static str,
    index: Option<&'static str>,
}

const TABLES: [Table; 3] = [
    Table { ks: "shop", dir: "orders-0a1b2c3d4e5f60718293a4b5c6d7e8f9", index: Some(".orders_by_user") },
    Table { ks: "shop", dir: "items-6f1c8a30e2b011eeb1b2a1b2c3d4e5f6", index: None },
    Table { ks: "system_auth", dir: "roles-5bc52802de2535edaeab188eecebb090", index: None },
];

/// The components of SSTable generation `g` of table `t` (2i files in their sub-folder).
fn table_files(t: &Table, g: u32) -> Vec<TableFile> {
    let mut v = vec![
        TableFile { index_dir: None, name: format!("nb-{g}-big-Data.db") },
        TableFile { index_dir: None, name: format!("nb-{g}-big-Statistics.db") },
    ];
    if let Some(i) = t.index {
        v.push(TableFile { index_dir: Some(i.into()), name: format!("nb-{g}-big-Data.db") });
    }
    v
}

/// Content is a function of the key: a key stored twice holds the same bytes, so a
/// differential backup reuses it as the engine would.
fn content(key: &str) -> Vec<u8> {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    key.bytes().cycle().take(1 + (h % 97) as usize).collect()
}

/// Live SSTable generations of one simulated node, per table.
struct Live {
    tables: Vec<Vec<u32>>,
    next_gen: u32,
}

// ---------------------------------------------------------------------------------------------
// The model.

/// A node backup in the model.
#[derive(Debug, Clone)]
struct Backup {
    mode: Mode,
    started: i64,
    /// Objects only this node backup owns: `P/N/B/...` and its index entries (key → size).
    own: BTreeMap<String, u64>,
    /// `(key, size)` of every manifest object; `None` while unfinished (failed).
    manifest: Option<Vec<(String, u64)>>,
}

#[derive(Debug, Clone)]
struct PlannedFile {
    table: usize,
    key: String,
    size: u64,
    upload: bool,
    /// Uploaded, or reused (then it existed when the backup started).
    present: bool,
}

/// A node backup being written.
#[derive(Debug, Clone)]
struct Pending {
    node: usize,
    name: String,
    mode: Mode,
    started: i64,
    tokenmap: String,
    own: BTreeMap<String, u64>,
    files: Vec<PlannedFile>,
}

/// Deliberately broken engines, to show each invariant can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sabotage {
    None,
    /// After the purge, delete an object a retained manifest references.
    DeleteReferenced,
    /// Skip the orphan cleanup but report it done.
    SkipCleanup,
    /// Report one object more than deleted.
    Overcount,
    /// Delete by key prefix without the slash (Medusa bug, contract §10.9): `b1` takes `b10` along.
    PrefixSiblings,
    /// Clean orphans although a backup runs on the node (Medusa bug, contract §10.7).
    CleanWhileRunning,
    /// Keep one backup more than `max_backup_count`.
    CountOffByOne,
}

type Listing = BTreeMap<String, (u64, i64)>;

/// What the histories exercised (a run that exercises nothing proves nothing).
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    full: u64,
    differential: u64,
    finished_inflight: u64,
    failed_inflight: u64,
    purges: u64,
    /// Purges on the node of the running backup that removed node backups.
    purges_beside_running: u64,
    backups_purged: u64,
    /// Orphans removed by purges and by `clean_orphans`.
    orphans_deleted: u64,
    /// Unreferenced objects kept for their grace period by an exclusive purge or cleanup.
    kept_for_grace: u64,
    deletes: u64,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.full += o.full;
        self.differential += o.differential;
        self.finished_inflight += o.finished_inflight;
        self.failed_inflight += o.failed_inflight;
        self.purges += o.purges;
        self.purges_beside_running += o.purges_beside_running;
        self.backups_purged += o.backups_purged;
        self.orphans_deleted += o.orphans_deleted;
        self.kept_for_grace += o.kept_for_grace;
        self.deletes += o.deletes;
    }
}

async fn listing(s: &Storage) -> R<Listing> {
    s.store
        .list(None)
        .map_ok(|m| (m.location.to_string(), (m.size, m.last_modified.timestamp())))
        .try_collect()
        .await
        .ctx("list")
}

struct World {
    storage: Storage,
    sim: FaultStore,
    rng: SmallRng,
    nodes: Vec<Fqdn>,
    live: Vec<Live>,
    backups: BTreeMap<(usize, String), Backup>,
    inflight: Option<Pending>,
    names: Vec<String>,
    next_name: u32,
    sabotage: Sabotage,
    trace: Vec<String>,
    stats: Stats,
    /// The name of the next backup, when a test needs a particular one.
    next_backup_name: Option<String>,
}

impl World {
    fn new(seed: u64, sabotage: Sabotage) -> World {
        let sim = FaultStore::in_memory(T0);
        let storage = Storage::over(sim.as_dyn(), Layout::new(Some(PREFIX)), Provider::S3Compatible);
        let nodes = NODES.iter().map(|n| Fqdn::new(*n).expect("valid node name")).collect();
        let live =
            NODES.iter().map(|_| Live { tables: TABLES.iter().map(|_| vec![1]).collect(), next_gen: 1 }).collect();
        World {
            storage,
            sim,
            rng: SmallRng::seed_from_u64(seed),
            nodes,
            live,
            backups: BTreeMap::new(),
            inflight: None,
            names: Vec::new(),
            next_name: 0,
            sabotage,
            trace: Vec::new(),
            stats: Stats::default(),
            next_backup_name: None,
        }
    }

    fn now(&self) -> i64 {
        self.sim.now()
    }

    fn advance(&self, secs: i64) {
        self.sim.advance(secs);
    }

    fn layout(&self) -> &Layout {
        &self.storage.layout
    }

    /// Flushes and compactions between two backups: new generations appear, old ones go.
    fn evolve(&mut self, node: usize) {
        let World { live, rng, .. } = self;
        let st = &mut live[node];
        for t in &mut st.tables {
            if t.is_empty() || rng.random_ratio(50, 100) {
                st.next_gen += 1;
                t.push(st.next_gen);
            }
            if t.len() >= 3 && rng.random_ratio(40, 100) {
                t.drain(..2);
                st.next_gen += 1;
                t.push(st.next_gen);
            }
            if t.len() >= 2 && rng.random_ratio(10, 100) {
                let i = rng.random_range(0..t.len());
                t.remove(i);
            }
        }
    }

    /// A memtable flush on every table: the next backup of `node` has new files.
    fn flush(&mut self, node: usize) {
        let st = &mut self.live[node];
        for t in &mut st.tables {
            st.next_gen += 1;
            t.push(st.next_gen);
        }
    }

    fn taken(&self, node: usize, name: &str) -> bool {
        self.backups.contains_key(&(node, name.to_string()))
            || self.inflight.as_ref().is_some_and(|p| p.node == node && p.name == name)
    }

    /// A name not in use on `node`: the same cluster backup as on another node, a name that
    /// extends an earlier one (`b1` → `b10`, `b1-old`), or a fresh `b<k>`.
    fn pick_name(&mut self, node: usize) -> String {
        if let Some(name) = self.next_backup_name.take() {
            return self.remember(name);
        }
        for _ in 0..4 {
            let roll = self.rng.random_range(0..10);
            let others: Vec<String> = self.backups.keys().filter(|(i, _)| *i != node).map(|(_, n)| n.clone()).collect();
            let cand = if roll < 4 && !others.is_empty() {
                others.choose(&mut self.rng).expect("not empty").clone()
            } else if roll < 7 && !self.names.is_empty() {
                let base = self.names.choose(&mut self.rng).expect("not empty").clone();
                format!("{base}{}", ["0", "1", "-old", "_x"].choose(&mut self.rng).expect("not empty"))
            } else {
                continue;
            };
            if cand.len() <= 24 && !self.taken(node, &cand) {
                return self.remember(cand);
            }
        }
        loop {
            self.next_name += 1;
            let cand = format!("b{}", self.next_name);
            if !self.taken(node, &cand) {
                return self.remember(cand);
            }
        }
    }

    fn remember(&mut self, name: String) -> String {
        if !self.names.contains(&name) {
            self.names.push(name.clone());
        }
        name
    }

    // -- the writer (contract §2.2, §2.7) --------------------------------------------------------------

    async fn put(&self, own: &mut BTreeMap<String, u64>, key: String, bytes: &[u8]) -> R<()> {
        self.storage.put_bytes(&key, bytes.to_vec()).await.ctx("put")?;
        own.insert(key, bytes.len() as u64);
        Ok(())
    }

    async fn modified(&self, key: &str) -> R<i64> {
        let m = self.storage.head(key).await.ctx("head")?.ok_or_else(|| format!("{key} vanished"))?;
        Ok(m.last_modified.timestamp())
    }

    /// Steps 1-4 of contract §2.7 and the upload plan: what to upload, what to reuse.
    async fn begin(&mut self, node: usize, mode: Mode) -> R<Pending> {
        self.evolve(node);
        let name = self.pick_name(node);
        let (n, b) = (self.nodes[node].clone(), BackupName::new(name.clone()).ctx("backup name")?);
        let l = self.layout().clone();
        let mut own = BTreeMap::new();
        let schema = format!(
            "CREATE KEYSPACE shop WITH replication = {{'class': 'NetworkTopologyStrategy', 'dc1': 3}};\n-- {b} on {n}\n"
        );
        let tokenmap =
            format!(r#"{{"{n}": {{"tokens": [{}], "is_up": true, "rack": "r1", "dc": "dc1"}}}}"#, node * 1000);
        self.put(&mut own, l.meta(&n, &b, Meta::Schema), schema.as_bytes()).await?;
        self.put(&mut own, l.meta(&n, &b, Meta::Tokenmap), tokenmap.as_bytes()).await?;
        self.put(
            &mut own,
            l.meta(&n, &b, Meta::ServerVersion),
            br#"{"server_type": "cassandra", "release_version": "4.1.5"}"#,
        )
        .await?;
        if mode == Mode::Differential {
            self.put(&mut own, l.meta(&n, &b, Meta::Differential), b"differential").await?;
        }
        self.put(&mut own, l.index_tokenmap(&b, &n), tokenmap.as_bytes()).await?;
        self.put(&mut own, l.index_schema(&b, &n), schema.as_bytes()).await?;
        let started = self.modified(&l.meta(&n, &b, Meta::Schema)).await?;
        self.put(&mut own, l.index_started(&b, &n, started), started.to_string().as_bytes()).await?;
        if mode == Mode::Differential {
            self.put(&mut own, l.index_differential(&b, &n), b"differential").await?;
        }
        let mut files = Vec::new();
        for (ti, t) in TABLES.iter().enumerate() {
            for &g in &self.live[node].tables[ti] {
                for tf in table_files(t, g) {
                    let key = l.data_key(mode, &n, &b, t.ks, t.dir, &tf);
                    let size = content(&key).len() as u64;
                    let stored = match mode {
                        Mode::Full => None,
                        Mode::Differential => self.storage.head(&key).await.ctx("head")?,
                    };
                    if let Some(m) = &stored {
                        ensure!(m.size == size, "writer: {key} stored with another size");
                    }
                    files.push(PlannedFile {
                        table: ti,
                        key,
                        size,
                        upload: stored.is_none(),
                        present: stored.is_some(),
                    });
                }
            }
        }
        Ok(Pending { node, name, mode, started, tokenmap, own, files })
    }

    /// Uploads up to `max` of the planned files not uploaded yet.
    async fn upload(&self, p: &mut Pending, max: usize) -> R<()> {
        for f in p.files.iter_mut().filter(|f| !f.present).take(max) {
            self.storage.put_bytes(&f.key, content(&f.key)).await.ctx("put")?;
            f.present = true;
            if p.mode == Mode::Full {
                p.own.insert(f.key.clone(), f.size);
            }
        }
        Ok(())
    }

    /// Steps 5-9 of contract §2.7: the rest of the data, manifest, finish entries, latest pointer.
    async fn finish(&self, mut p: Pending) -> R<Backup> {
        self.upload(&mut p, usize::MAX).await?;
        let (n, b) = (self.nodes[p.node].clone(), BackupName::new(p.name.clone()).ctx("backup name")?);
        let l = self.layout().clone();
        let sections: Vec<ManifestSection> = TABLES
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                let mine = p.files.iter().filter(|f| f.table == ti);
                // Medusa's order: uploaded first, then reused.
                let ordered = mine.clone().filter(|f| f.upload).chain(mine.filter(|f| !f.upload));
                let objects =
                    ordered.map(|f| ManifestObject { path: f.key.clone(), md5: None, size: f.size }).collect();
                ManifestSection { keyspace: t.ks.into(), columnfamily: t.dir.into(), objects }
            })
            .collect();
        let manifest = medusa::format::manifest::to_bytes(&sections);
        let key = l.meta(&n, &b, Meta::Manifest);
        self.put(&mut p.own, key.clone(), &manifest).await?;
        self.put(&mut p.own, l.index_manifest(&b, &n), &manifest).await?;
        let finished = self.modified(&key).await?;
        self.put(&mut p.own, l.index_finished(&b, &n, finished), finished.to_string().as_bytes()).await?;
        self.storage.put_bytes(&l.latest_tokenmap(&n), p.tokenmap.clone().into_bytes()).await.ctx("put")?;
        self.storage.put_bytes(&l.latest_backup_name(&n), p.name.clone().into_bytes()).await.ctx("put")?;
        let files = p.files.iter().map(|f| (f.key.clone(), f.size)).collect();
        Ok(Backup { mode: p.mode, started: p.started, own: p.own, manifest: Some(files) })
    }

    fn abandon(p: Pending) -> Backup {
        Backup { mode: p.mode, started: p.started, own: p.own, manifest: None }
    }

    // -- steps ---------------------------------------------------------------------------------

    async fn backup(&mut self, node: usize, mode: Mode) -> R<()> {
        let p = self.begin(node, mode).await?;
        self.trace.push(format!("t={} backup {} {} on {}", self.now(), mode.as_str(), p.name, self.nodes[node]));
        let key = (node, p.name.clone());
        let b = self.finish(p).await?;
        self.backups.insert(key, b);
        match mode {
            Mode::Full => self.stats.full += 1,
            Mode::Differential => self.stats.differential += 1,
        }
        Ok(())
    }

    async fn start(&mut self, node: usize, mode: Mode, uploaded_percent: u64) -> R<()> {
        let mut p = self.begin(node, mode).await?;
        let todo = p.files.iter().filter(|f| !f.present).count();
        let n = (todo as u64 * uploaded_percent / 100) as usize;
        self.upload(&mut p, n).await?;
        self.trace.push(format!(
            "t={} start {} {} on {} ({n}/{todo} uploaded)",
            self.now(),
            mode.as_str(),
            p.name,
            self.nodes[node]
        ));
        self.inflight = Some(p);
        Ok(())
    }

    async fn progress(&mut self) -> R<()> {
        let Some(mut p) = self.inflight.take() else { return Ok(()) };
        let n = self.rng.random_range(1..=4);
        self.trace.push(format!("t={} progress {} (+{n} files)", self.now(), p.name));
        let r = self.upload(&mut p, n).await;
        self.inflight = Some(p);
        r
    }

    async fn end_inflight(&mut self, success: bool) -> R<()> {
        let Some(p) = self.inflight.take() else { return Ok(()) };
        self.trace.push(format!(
            "t={} {} {} on {}",
            self.now(),
            if success { "finish" } else { "fail" },
            p.name,
            self.nodes[p.node]
        ));
        let key = (p.node, p.name.clone());
        let b = if success { self.finish(p).await? } else { World::abandon(p) };
        if success {
            self.stats.finished_inflight += 1;
        } else {
            self.stats.failed_inflight += 1;
        }
        self.backups.insert(key, b);
        Ok(())
    }

    /// contract §5.1 with the running backup kept: the names a purge of `node` must delete.
    fn oracle(&self, node: usize, now: i64, limits: Limits, running: Option<&str>) -> BTreeSet<String> {
        // (started, name, complete)
        let mut v: Vec<(i64, &str, bool)> = self
            .backups
            .iter()
            .filter(|((i, _), _)| *i == node)
            .map(|((_, n), b)| (b.started, n.as_str(), b.manifest.is_some()))
            .collect();
        if let Some(p) = self.inflight.as_ref().filter(|p| p.node == node) {
            v.push((p.started, &p.name, false));
        }
        v.sort();
        // Count among complete backups only (contract §10.8 fixed); incomplete ones older than the
        // newest complete one and than the grace period go too; age applies to all.
        let complete: Vec<&str> = v.iter().filter(|b| b.2).map(|b| b.1).collect();
        let over = if limits.max_backup_count > 0 {
            complete.len().saturating_sub(limits.max_backup_count as usize)
        } else {
            0
        };
        let surplus: BTreeSet<&str> = complete[..over].iter().copied().collect();
        let newest_complete = v.iter().filter(|b| b.2).map(|b| b.0).max();
        let cutoff = now - i64::from(limits.max_backup_age) * DAY;
        let grace = now - i64::from(limits.grace_days) * DAY;
        v.iter()
            .filter(|(started, name, complete)| {
                let stale = !complete && newest_complete.is_some_and(|n| *started < n) && *started < grace;
                Some(*name) != running
                    && ((limits.max_backup_age > 0 && *started < cutoff) || surplus.contains(name) || stale)
            })
            .map(|(_, name, _)| name.to_string())
            .collect()
    }

    /// Keys referenced by the finished manifests of `node` in the model.
    fn referenced(&self, node: usize) -> HashSet<String> {
        self.backups
            .iter()
            .filter(|((i, _), _)| *i == node)
            .filter_map(|(_, b)| b.manifest.as_ref())
            .flatten()
            .map(|(k, _)| k.clone())
            .collect()
    }

    async fn engine_purge(&self, node: usize, limits: Limits, now: i64, running: Option<String>) -> R<PurgeReport> {
        let exclusive = running.is_none();
        let rn = running.clone();
        let is_running = move |b: &str| rn.as_deref() == Some(b);
        let n = &self.nodes[node];
        let s = &self.storage;
        match self.sabotage {
            Sabotage::SkipCleanup => {
                let mut r = purge(s, n, limits, now, &is_running, false).await.ctx("purge")?;
                r.deferred = !exclusive;
                Ok(r)
            }
            Sabotage::CleanWhileRunning => {
                let mut r = purge(s, n, limits, now, &is_running, true).await.ctx("purge")?;
                r.deferred = !exclusive;
                Ok(r)
            }
            Sabotage::CountOffByOne if limits.max_backup_count > 0 => {
                let l = Limits { max_backup_count: limits.max_backup_count + 1, ..limits };
                purge(s, n, l, now, &is_running, exclusive).await.ctx("purge")
            }
            _ => {
                let before = node_backups(s, None).await.ctx("node_backups")?;
                let mut r = purge(s, n, limits, now, &is_running, exclusive).await.ctx("purge")?;
                match self.sabotage {
                    Sabotage::Overcount => r.objects += 1,
                    Sabotage::DeleteReferenced => {
                        let after: HashSet<(String, String)> = node_backups(s, None)
                            .await
                            .ctx("node_backups")?
                            .into_iter()
                            .map(|b| (b.fqdn, b.name))
                            .collect();
                        let kept = self
                            .backups
                            .iter()
                            .filter(|((i, name), _)| *i == node && after.contains(&(n.to_string(), name.clone())));
                        if let Some((k, _)) = kept
                            .filter_map(|(_, b)| b.manifest.as_ref())
                            .flatten()
                            .find(|(k, _)| k.starts_with(&s.layout.shared_data_dir(n)))
                        {
                            s.delete(k).await.ctx("delete")?;
                        }
                    }
                    Sabotage::PrefixSiblings => {
                        let after: HashSet<String> = node_backups(s, None)
                            .await
                            .ctx("node_backups")?
                            .into_iter()
                            .map(|b| format!("{}/{}", b.fqdn, b.name))
                            .collect();
                        let all = listing(s).await?;
                        for gone in before
                            .iter()
                            .filter(|b| b.fqdn == n.as_str() && !after.contains(&format!("{}/{}", b.fqdn, b.name)))
                        {
                            let raw = format!("{PREFIX}/{n}/{}", gone.name);
                            for k in all.keys().filter(|k| k.starts_with(&raw)) {
                                s.delete(k).await.ctx("delete")?;
                            }
                        }
                    }
                    _ => {}
                }
                Ok(r)
            }
        }
    }

    async fn purge_step(&mut self, node: usize) -> R<()> {
        let limits = Limits {
            max_backup_age: self.rng.random_range(0..6),
            max_backup_count: self.rng.random_range(0..5),
            grace_days: self.rng.random_range(0..4),
        };
        let now = self.now();
        let running = self.inflight.as_ref().filter(|p| p.node == node).map(|p| p.name.clone());
        let exclusive = running.is_none();
        self.trace.push(format!("t={now} purge {} {limits:?} running={running:?}", self.nodes[node]));
        let expected = self.oracle(node, now, limits, running.as_deref());
        let before = listing(&self.storage).await?;
        let report = self.engine_purge(node, limits, now, running).await?;
        let after = listing(&self.storage).await?;
        self.trace.push(format!("  -> {report:?}"));

        // (f) exactly the selected node backups vanished; nothing else did.
        let listed = self.listed().await?;
        let fqdn = self.nodes[node].to_string();
        let vanished: Vec<(usize, String)> = self
            .backups
            .keys()
            .filter(|(i, name)| !listed.contains_key(&(self.nodes[*i].to_string(), name.clone())))
            .cloned()
            .collect();
        let names: BTreeSet<String> = vanished.iter().filter(|(i, _)| *i == node).map(|(_, n)| n.clone()).collect();
        ensure!(
            vanished.iter().all(|(i, _)| *i == node),
            "(f) a purge of {fqdn} removed node backups of other nodes: {vanished:?}"
        );
        ensure!(names == expected, "(f) purge of {fqdn} removed {names:?}, contract §5.1 selects {expected:?}");
        ensure!(
            report.backups == names.len() as u64,
            "(d) report.backups = {}, {} node backups vanished",
            report.backups,
            names.len()
        );
        let removed: Vec<Backup> = vanished.iter().filter_map(|k| self.backups.remove(k)).collect();
        self.stats.purges += 1;
        self.stats.backups_purged += names.len() as u64;
        self.stats.purges_beside_running += u64::from(!exclusive && !names.is_empty());
        self.check_state().await?;

        // (c) and (d): the vanished backups' folders and, when exclusive, the old orphans.
        let mut should: BTreeSet<String> =
            removed.iter().flat_map(|b| b.own.keys()).filter(|k| !k.starts_with(INDEX)).cloned().collect();
        let cutoff = now - i64::from(limits.grace_days) * DAY;
        if exclusive {
            self.check_no_old_orphans(node, &after, cutoff)?;
            should.extend(self.orphans(node, &before).filter(|k| before[*k].1 <= cutoff).cloned());
        }
        ensure!(report.deferred != exclusive, "report.deferred = {} while exclusive = {exclusive}", report.deferred);
        let within = self.orphans(node, &after).count() as u64;
        ensure!(
            report.within_grace == within,
            "(d) report.within_grace = {}, {within} unreferenced objects remain",
            report.within_grace
        );
        for b in &removed {
            ensure!(b.own.keys().all(|k| !after.contains_key(k)), "(d) objects of a purged node backup remain");
        }
        let shared = self.layout().shared_data_dir(&self.nodes[node]);
        self.stats.orphans_deleted += should.iter().filter(|k| k.starts_with(&shared)).count() as u64;
        self.stats.kept_for_grace += if exclusive { within } else { 0 };
        check_gone(&before, &after, &should, report.objects, report.bytes)
    }

    /// Unreferenced objects below `P/N/data/` in `l`.
    fn orphans<'a>(&self, node: usize, l: &'a Listing) -> impl Iterator<Item = &'a String> {
        let refs = self.referenced(node);
        let shared = self.layout().shared_data_dir(&self.nodes[node]);
        l.keys().filter(move |k| k.starts_with(&shared) && !refs.contains(*k))
    }

    fn check_no_old_orphans(&self, node: usize, after: &Listing, cutoff: i64) -> R<()> {
        for k in self.orphans(node, after) {
            ensure!(
                after[k].1 > cutoff,
                "(c) unreferenced {k} (modified {}) is older than the grace cutoff {cutoff} but was kept",
                after[k].1
            );
        }
        Ok(())
    }

    async fn delete_step(&mut self) -> R<()> {
        let running = self.inflight.as_ref().map(|p| p.name.clone());
        let names: Vec<String> = self
            .backups
            .keys()
            .map(|(_, n)| n.clone())
            .filter(|n| Some(n) != running.as_ref())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if names.is_empty() {
            let node = self.rng.random_range(0..NODES.len());
            return self.purge_step(node).await;
        }
        let name = names.choose(&mut self.rng).expect("not empty").clone();
        let grace: u32 = self.rng.random_range(0..4);
        self.trace.push(format!("t={} delete {name} (grace {grace})", self.now()));
        self.stats.deletes += 1;
        let nodes: Vec<usize> = self.backups.keys().filter(|(_, n)| *n == name).map(|(i, _)| *i).collect();
        for &node in &nodes {
            let (n, b) = (self.nodes[node].clone(), BackupName::new(name.clone()).ctx("backup name")?);
            let before = listing(&self.storage).await?;
            let d = delete_node_backup(&self.storage, &n, &b).await.ctx("delete_node_backup")?;
            let after = listing(&self.storage).await?;
            let gone = self.backups.remove(&(node, name.clone())).expect("listed above");
            ensure!(gone.own.keys().all(|k| !after.contains_key(k)), "(d) objects of deleted {name}@{n} remain");
            let latest = [self.layout().latest_backup_name(&n), self.layout().latest_tokenmap(&n)];
            for k in before.keys().filter(|k| k.starts_with(INDEX) && !after.contains_key(*k)) {
                ensure!(
                    gone.own.contains_key(k) || latest.contains(k),
                    "(e) deleting {name}@{n} removed index entry {k}"
                );
            }
            let should = gone.own.keys().filter(|k| !k.starts_with(INDEX)).cloned().collect();
            check_gone(&before, &after, &should, d.objects, d.bytes)?;
        }
        self.check_state().await?;
        for node in nodes {
            if self.inflight.as_ref().is_some_and(|p| p.node == node) {
                continue;
            }
            self.cleanup(node, grace).await?;
        }
        Ok(())
    }

    async fn cleanup(&mut self, node: usize, grace: u32) -> R<()> {
        let now = self.now();
        let before = listing(&self.storage).await?;
        let c = clean_orphans(&self.storage, &self.nodes[node], now, grace).await.ctx("clean_orphans")?;
        ensure!(c.deferred.is_none(), "clean_orphans deferred: {:?}", c.deferred);
        let (objects, bytes, within) = (c.objects, c.bytes, c.within_grace);
        let after = listing(&self.storage).await?;
        let cutoff = now - i64::from(grace) * DAY;
        self.check_no_old_orphans(node, &after, cutoff)?;
        let remaining = self.orphans(node, &after).count() as u64;
        ensure!(
            within == remaining,
            "(d) clean_orphans within_grace = {within}, {remaining} unreferenced objects remain"
        );
        let should: BTreeSet<String> =
            self.orphans(node, &before).filter(|k| before[*k].1 <= cutoff).cloned().collect();
        check_gone(&before, &after, &should, objects, bytes)?;
        self.stats.orphans_deleted += should.len() as u64;
        self.stats.kept_for_grace += remaining;
        self.check_state().await
    }

    async fn random_step(&mut self) -> R<()> {
        let adv = if self.rng.random_ratio(20, 100) { 0 } else { self.rng.random_range(1..=3 * DAY) };
        self.advance(adv);
        let roll = self.rng.random_range(0..100);
        if self.inflight.is_some() {
            match roll {
                0..6 => return self.end_inflight(true).await,
                6..9 => return self.end_inflight(false).await,
                9..15 => return self.progress().await,
                _ => {}
            }
        } else if roll < 12 {
            let node = self.rng.random_range(0..NODES.len());
            let mode = if self.rng.random_ratio(80, 100) { Mode::Differential } else { Mode::Full };
            let pct = self.rng.random_range(0..=100);
            return self.start(node, mode, pct).await;
        }
        match roll {
            ..50 => {
                let busy = self.inflight.as_ref().map(|p| p.node);
                let free: Vec<usize> = (0..NODES.len()).filter(|i| Some(*i) != busy).collect();
                let node = *free.choose(&mut self.rng).expect("not empty");
                let mode = if self.rng.random_ratio(75, 100) { Mode::Differential } else { Mode::Full };
                self.backup(node, mode).await
            }
            50..85 => {
                let node = self.rng.random_range(0..NODES.len());
                self.purge_step(node).await
            }
            _ => self.delete_step().await,
        }
    }

    // -- checks after every step ------------------------------------------------------------

    async fn listed(&self) -> R<BTreeMap<(String, String), (i64, bool, bool)>> {
        let mut m = BTreeMap::new();
        for nb in node_backups(&self.storage, None).await.ctx("node_backups")? {
            // What an interrupted deletion left: not a backup any more; the next purge finishes it.
            if nb.leftover {
                continue;
            }
            let started = nb.started.ok_or_else(|| format!("(model) {}@{} has no start", nb.name, nb.fqdn))?;
            let key = (nb.fqdn.clone(), nb.name.clone());
            ensure!(
                m.insert(key, (started, nb.finished.is_some(), nb.differential)).is_none(),
                "(model) {}@{} listed twice",
                nb.name,
                nb.fqdn
            );
        }
        Ok(m)
    }

    async fn check_state(&self) -> R<()> {
        let all = listing(&self.storage).await?;
        let listed = self.listed().await?;
        let mut expected = BTreeMap::new();
        for ((i, name), b) in &self.backups {
            expected.insert(
                (self.nodes[*i].to_string(), name.clone()),
                (b.started, b.manifest.is_some(), b.mode == Mode::Differential),
            );
        }
        if let Some(p) = &self.inflight {
            expected.insert(
                (self.nodes[p.node].to_string(), p.name.clone()),
                (p.started, false, p.mode == Mode::Differential),
            );
        }
        ensure!(listed == expected, "(model) node_backups() = {listed:?}\nexpected {expected:?}");
        let has = |k: &str, size: u64| all.get(k).is_some_and(|(s, _)| *s == size);
        for ((i, name), b) in &self.backups {
            let n = &self.nodes[*i];
            for (k, s) in &b.own {
                ensure!(has(k, *s), "(e) {k} of retained node backup {name}@{n} is missing or resized");
            }
            for (k, s) in b.manifest.iter().flatten() {
                ensure!(has(k, *s), "(a) {k} referenced by the manifest of retained {name}@{n} is missing or resized");
            }
        }
        if let Some(p) = &self.inflight {
            let n = &self.nodes[p.node];
            for (k, s) in &p.own {
                ensure!(has(k, *s), "(b) {k} of running {}@{n} is missing", p.name);
            }
            for f in p.files.iter().filter(|f| f.present) {
                let how = if f.upload { "uploaded" } else { "to be reused" };
                ensure!(has(&f.key, f.size), "(b) {} {how} by running {}@{n} is missing", f.key, p.name);
            }
        }
        let mut accounted: HashSet<&str> =
            self.backups.values().flat_map(|b| b.own.keys()).map(String::as_str).collect();
        accounted.extend(self.inflight.iter().flat_map(|p| p.own.keys()).map(String::as_str));
        let l = self.layout();
        for (i, n) in self.nodes.iter().enumerate() {
            let (name_key, tm_key) = (l.latest_backup_name(n), l.latest_tokenmap(n));
            ensure!(all.contains_key(&name_key) == all.contains_key(&tm_key), "(latest) half a latest pointer for {n}");
            if let Some(bytes) = self.storage.get_opt(&name_key).await.ctx("get")? {
                let name = String::from_utf8_lossy(&bytes).to_string();
                let ok = self.backups.get(&(i, name.clone())).is_some_and(|b| b.manifest.is_some());
                ensure!(ok, "(latest) {name_key} names {name}, not a finished node backup of {n}");
            }
        }
        let shared: Vec<String> = self.nodes.iter().map(|n| l.shared_data_dir(n)).collect();
        let latest: Vec<String> =
            self.nodes.iter().flat_map(|n| [l.latest_backup_name(n), l.latest_tokenmap(n)]).collect();
        for k in all.keys() {
            let ok = accounted.contains(k.as_str()) || latest.contains(k) || shared.iter().any(|s| k.starts_with(s));
            ensure!(ok, "(accounting) {k} belongs to no node backup");
        }
        Ok(())
    }
}

/// (d): exactly `should` disappeared (index entries aside), nothing appeared, and the counters
/// are their number and total size.
fn check_gone(before: &Listing, after: &Listing, should: &BTreeSet<String>, objects: u64, bytes: u64) -> R<()> {
    let appeared: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    ensure!(appeared.is_empty(), "(d) objects appeared: {appeared:?}");
    let gone: BTreeSet<String> =
        before.keys().filter(|k| !k.starts_with(INDEX) && !after.contains_key(*k)).cloned().collect();
    let extra: Vec<&String> = gone.difference(should).collect();
    ensure!(extra.is_empty(), "(d) deleted objects that had to stay: {extra:?}");
    let missed: Vec<&String> = should.difference(&gone).collect();
    ensure!(missed.is_empty(), "(c) objects that had to go remain: {missed:?}");
    let size: u64 = gone.iter().map(|k| before[k].0).sum();
    ensure!(
        objects == gone.len() as u64 && bytes == size,
        "(d) counters say {objects} objects / {bytes} bytes, {} objects / {size} bytes disappeared",
        gone.len()
    );
    Ok(())
}

async fn run_history(seed: u64, sabotage: Sabotage) -> R<Stats> {
    let mut w = World::new(seed, sabotage);
    for step in 0..STEPS {
        let r = match w.random_step().await {
            Ok(()) => w.check_state().await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            let trace = w.trace.join("\n  ");
            return Err(format!("seed {seed:#x}, step {step}: {e}\nhistory:\n  {trace}"));
        }
    }
    Ok(w.stats)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn purge_keeps_what_is_referenced_and_removes_old_orphans() {
    let seeds: Vec<u64> = match env_u64("PURGE_PROPERTY_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("PURGE_PROPERTY_HISTORIES").unwrap_or(HISTORIES)).map(|i| BASE_SEED + i).collect(),
    };
    let t = std::time::Instant::now();
    let mut total = Stats::default();
    for &seed in &seeds {
        match run_history(seed, Sabotage::None).await {
            Ok(s) => total.add(s),
            Err(e) => panic!(
                "{e}\nreplay: PURGE_PROPERTY_SEED={seed:#x} cargo test --release -p medusa-tests --test it purge_property::purge_keeps"
            ),
        }
    }
    eprintln!("{} histories x {STEPS} steps in {:.1?}: {total:?}", seeds.len(), t.elapsed());
    if seeds.len() as u64 >= HISTORIES {
        let s = total;
        let each = [
            s.full,
            s.differential,
            s.finished_inflight,
            s.failed_inflight,
            s.purges,
            s.purges_beside_running,
            s.backups_purged,
            s.orphans_deleted,
            s.kept_for_grace,
            s.deletes,
        ];
        assert!(each.iter().all(|&n| n >= 20), "the histories exercise every kind of step: {s:?}");
    }
}

/// Every invariant catches the engine bug it is about: a sabotaged engine fails a history, with
/// the invariant's tag in the message.
#[tokio::test(flavor = "current_thread")]
async fn each_invariant_catches_a_broken_purge() {
    let cases = [
        (Sabotage::DeleteReferenced, "(a)"),
        (Sabotage::CleanWhileRunning, "(b)"),
        (Sabotage::SkipCleanup, "(c)"),
        (Sabotage::Overcount, "(d)"),
        (Sabotage::PrefixSiblings, "(e)"),
        (Sabotage::CountOffByOne, "(f)"),
    ];
    for (sabotage, tag) in cases {
        let mut caught = None;
        for i in 0..HISTORIES {
            if let Err(e) = run_history(BASE_SEED + i, sabotage).await
                && e.contains(tag)
            {
                caught = Some(e);
                break;
            }
        }
        let e = caught.unwrap_or_else(|| panic!("{sabotage:?} went unnoticed by {tag} in {HISTORIES} histories"));
        eprintln!("{sabotage:?} caught: {}", e.lines().next().unwrap_or_default());
    }
}

// ---------------------------------------------------------------------------------------------
// An interrupted purge, finished by a second run.

const INTERRUPT_LIMITS: Limits = Limits { max_backup_age: 0, max_backup_count: 3, grace_days: 1 };

/// Node 0: nine backups a day apart (every fourth one full), then one that failed after
/// uploading half its new files; node 1: one backup.
async fn interrupted_start() -> World {
    let mut w = World::new(0x1e7e_5eed, Sabotage::None);
    interrupted_script(&mut w).await.expect("set-up");
    w
}

async fn interrupted_script(w: &mut World) -> R<()> {
    for i in 0..9 {
        w.advance(DAY);
        w.backup(0, if i % 4 == 3 { Mode::Full } else { Mode::Differential }).await?;
    }
    w.backup(1, Mode::Differential).await?;
    w.advance(DAY);
    w.flush(0);
    w.start(0, Mode::Differential, 50).await?;
    w.advance(DAY / 2);
    w.end_inflight(false).await?;
    // Its uploads are 18 hours old at the purge: within the grace period of one day.
    w.advance(DAY / 4);
    w.check_state().await
}

/// The clean purge from the set-up state: its report, its successful deletes, the end state.
struct CleanRun {
    start: Listing,
    start_backups: BTreeMap<(String, String), (i64, bool, bool)>,
    report: PurgeReport,
    end: Listing,
}

/// A purge from the set-up state that fails after `allowed` deletes, then a purge on the
/// healthy store: it must end where the clean purge ended, and the counters must add up.
async fn interrupted_at(allowed: u64, clean: &CleanRun) -> R<()> {
    let w = interrupted_start().await;
    ensure!(listing(&w.storage).await? == clean.start, "the set-up is not deterministic");
    w.sim.set_delete_budget(Some(allowed));
    let failed = purge(&w.storage, &w.nodes[0], INTERRUPT_LIMITS, w.now(), &|_| false, true).await;
    ensure!(failed.is_err(), "the purge did not fail: {failed:?}");
    let mid = listing(&w.storage).await?;
    let after_first = w.listed().await?;
    let first_backups = clean.start_backups.keys().filter(|k| !after_first.contains_key(*k)).count() as u64;
    w.sim.set_delete_budget(None);
    let second =
        purge(&w.storage, &w.nodes[0], INTERRUPT_LIMITS, w.now(), &|_| false, true).await.ctx("second purge")?;
    let last = listing(&w.storage).await?;
    let missing: Vec<&String> = clean.end.keys().filter(|k| !last.contains_key(*k)).collect();
    let leftover: Vec<&String> = last.keys().filter(|k| !clean.end.contains_key(*k)).collect();
    ensure!(
        missing.is_empty() && leftover.is_empty() && last == clean.end,
        "the retry ends elsewhere than a clean purge; missing: {missing:?}, left over: {leftover:?}"
    );
    let gone: Vec<&String> = clean.start.keys().filter(|k| !k.starts_with(INDEX) && !mid.contains_key(*k)).collect();
    let gone_bytes: u64 = gone.iter().map(|k| clean.start[*k].0).sum();
    let ok = clean.report.clone();
    ensure!(
        gone.len() as u64 + second.objects == ok.objects,
        "objects: {} deleted before the failure + {} by the retry != {}",
        gone.len(),
        second.objects,
        ok.objects
    );
    ensure!(gone_bytes + second.bytes == ok.bytes, "bytes: {gone_bytes} + {} != {}", second.bytes, ok.bytes);
    ensure!(
        first_backups + second.backups == ok.backups,
        "backups: {first_backups} vanished before the failure + {} purged by the retry != {}",
        second.backups,
        ok.backups
    );
    ensure!(second.within_grace == ok.within_grace, "within grace: {} != {}", second.within_grace, ok.within_grace);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_purge_failing_after_any_number_of_deletes_is_finished_by_the_next_one() {
    let w = interrupted_start().await;
    let (start, start_backups) = (listing(&w.storage).await.unwrap(), w.listed().await.unwrap());
    let deletes_before = w.sim.deletes();
    let report =
        purge(&w.storage, &w.nodes[0], INTERRUPT_LIMITS, w.now(), &|_| false, true).await.expect("clean purge");
    let deletes = w.sim.deletes() - deletes_before;
    let clean = CleanRun { start, start_backups, report: report.clone(), end: listing(&w.storage).await.unwrap() };
    // Nine complete backups and a newer abandoned one: the count keeps the newest three complete
    // ones (the abandoned backup neither counts nor is older than the newest complete one).
    assert_eq!(report.backups, 6, "{report:?}");
    assert!(
        report.objects > 0 && report.within_grace > 0,
        "the set-up exercises deletions and the grace period: {report:?}"
    );
    assert!(deletes > 20, "{deletes}");
    let mut failures = Vec::new();
    for allowed in 0..deletes {
        if let Err(e) = interrupted_at(allowed, &clean).await {
            failures.push(format!("failure after {allowed} of {deletes} deletes: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} of {deletes} interruption points:\n{}", failures.len(), failures.join("\n"));
}

/// A backup named `data` would have its folder `P/N/data/` inside the node's shared
/// differential folder (contract §2.2): orphan cleanup would eat its meta files, and deleting it would
/// delete every differential backup's data. Refusing the name at the edge is a fix too.
#[tokio::test(flavor = "current_thread")]
async fn a_backup_named_data_does_not_collide_with_the_shared_folder() {
    if BackupName::new("data").is_err() {
        return;
    }
    // Differential b1, then differential "data", both finished, a day apart.
    let setup = async |w: &mut World| -> R<()> {
        w.backup(0, Mode::Differential).await?;
        w.advance(DAY);
        w.next_backup_name = Some("data".into());
        w.backup(0, Mode::Differential).await?;
        w.advance(DAY);
        w.check_state().await
    };
    let mut errors = Vec::new();
    let mut w = World::new(0xda7a, Sabotage::None);
    setup(&mut w).await.expect("set-up");
    if let Err(e) = w.cleanup(0, 0).await {
        errors.push(format!("orphan cleanup: {e}"));
    }
    let mut w = World::new(0xda7a, Sabotage::None);
    setup(&mut w).await.expect("set-up");
    let (n, b) = (w.nodes[0].clone(), BackupName::new("data").expect("accepted above"));
    let d = delete_node_backup(&w.storage, &n, &b).await.expect("delete");
    w.backups.remove(&(0, "data".to_string()));
    if let Err(e) = w.check_state().await {
        errors.push(format!("deleting backup data ({d:?}): {e}"));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// A failed node backup whose deletion is cut short after any number of deletes is FAILED in
/// GetBackups' summary, or gone from it: never IN_PROGRESS (which it was while the failure
/// marker went before `schema.cql`), and the next deletion finishes it.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_backup_cut_mid_deletion_is_never_in_progress() {
    use medusa::bucket::node_backup::{Start, begin, delete_keeping, mark_failed};
    use medusa::service::listing::{Cache, ClusterState, summarize};
    let (n, b) = (Fqdn::new(NODES[0]).unwrap(), BackupName::new("failed-1").unwrap());
    let mut seen = Vec::new();
    for allowed in 0.. {
        let sim = FaultStore::in_memory(T0);
        let storage = Storage::over(sim.as_dyn(), Layout::new(Some(PREFIX)), Provider::S3Compatible);
        let start = Start {
            schema: "CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};\n"
                .into(),
            tokenmap: format!(r#"{{"{n}": {{"tokens": [0], "is_up": true, "rack": "r1", "dc": "dc1"}}}}"#).into_bytes(),
            server_version: br#"{"server_type": "cassandra", "release_version": "5.0.9"}"#.to_vec(),
            mode: Mode::Full,
        };
        begin(&storage, &n, &b, &start).await.unwrap();
        let data = format!("{}{}", storage.layout.node_backup_dir(&n, &b), "data/shop/t-1/nb-1-big-Data.db");
        storage.put_bytes(&data, "rows").await.unwrap();
        assert!(mark_failed(&storage, &n, &b, "snapshot failed").await.unwrap());
        sim.set_delete_budget(Some(allowed));
        let cut = delete_keeping(&storage, &n, &b, &|_| false).await;
        sim.set_delete_budget(None);
        let nbs = node_backups(&storage, None).await.unwrap();
        let summaries = summarize(&storage, &Cache::default(), nbs, &|_| None).await.unwrap();
        let status = summaries.iter().find(|s| s.name == "failed-1").map(|s| s.status);
        assert!(
            matches!(status, None | Some(ClusterState::Failed)),
            "after {allowed} deletes of a failed backup's deletion: {status:?}"
        );
        seen.push(status.is_some());
        if cut.is_ok() {
            break;
        }
        delete_keeping(&storage, &n, &b, &|_| false).await.expect("the next deletion");
        assert!(node_backups(&storage, None).await.unwrap().is_empty(), "the next deletion finishes it");
    }
    assert!(seen.len() > 5 && seen[0] && !seen[seen.len() - 1], "the cuts cover the whole deletion: {seen:?}");
}
