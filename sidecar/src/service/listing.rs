//! GetBackups' view of the bucket (contract §1.6, §4): node backups from the index grouped into
//! cluster backups and summarised. Sizes and tokenmaps of finished node backups never change,
//! so they are read once and cached (Medusa downloads every manifest on every call, contract §10.26).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bucket::index::NodeBackup;
use crate::bucket::node_backup;
use crate::format::names::{BackupName, Fqdn};
use crate::format::tokenmap::TokenMap;
use crate::store::{Storage, StorageError};

/// Manifests read at once when the summary cache is cold.
const PREFETCH: usize = 8;

/// State of a cluster backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Not finished on every node, none known to have failed.
    InProgress,
    /// Finished on every node of the tokenmap.
    Success,
    /// At least one node's part failed.
    Failed,
}

/// A cluster backup, summarised as GetBackups reports it (contract §1.6).
#[derive(Debug, Clone)]
pub struct ClusterBackup {
    /// Name.
    pub name: String,
    /// Earliest node start.
    pub started: i64,
    /// Latest node finish, when complete.
    pub finished: Option<i64>,
    /// Status.
    pub status: ClusterState,
    /// The first node's tokenmap (its datacenter's ring).
    pub tokenmap: Arc<TokenMap>,
    /// Tokenmap hosts with a finished node backup.
    pub finished_nodes: usize,
    /// `"full"` or `"differential"`.
    pub backup_type: &'static str,
    /// Bytes over finished node backups.
    pub total_size: u64,
    /// Objects over finished node backups.
    pub total_objects: u64,
    /// Node parts, sorted by start.
    pub nodes: Vec<NodeBackup>,
}

/// Facts of a finished node backup that never change once it is finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeTotals {
    /// Objects in the manifest.
    pub objects: u64,
    /// Bytes in the manifest.
    pub bytes: u64,
    /// The manifest's own size: a cached entry counts only while the stored manifest still has
    /// it (0 in caches written before it was recorded: read again).
    #[serde(default)]
    pub manifest_bytes: u64,
}

/// What the manifest of a node backup the index calls finished says: its totals, or why the
/// node backup cannot be restored from (the notion of "complete" that restore uses: the
/// manifest exists and can be read).
#[derive(Debug, Clone)]
enum Part {
    Sound(NodeTotals),
    Damaged(String),
}

/// Caches of immutable facts (tokenmaps, manifest totals), persisted in the state directory.
#[derive(Default)]
pub struct Cache {
    path: Option<PathBuf>,
    totals: Mutex<HashMap<(String, String), NodeTotals>>,
    /// Shared with every summary that shows them: a large ring is held once, not per call.
    tokenmaps: Mutex<HashMap<(String, String), Arc<TokenMap>>>,
    /// Each distinct tokenmap once, by content: a ring rarely changes between backups, and a
    /// copy per backup (1,000 backups of 12 nodes of 256 tokens) made hundreds of MiB.
    rings: Mutex<HashMap<blake3::Hash, Arc<TokenMap>>>,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    totals: Vec<(String, String, NodeTotals)>,
}

impl Cache {
    /// A cache persisted at `path` (loaded now if present).
    pub fn persistent(path: PathBuf) -> Cache {
        let totals = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .map(|f| f.totals.into_iter().map(|(b, n, t)| ((b, n), t)).collect())
            .unwrap_or_default();
        Cache { path: Some(path), totals: Mutex::new(totals), ..Cache::default() }
    }

    /// Forgets what is cached about a backup (it was deleted).
    pub fn forget(&self, name: &str) {
        self.totals.lock().expect("cache lock").retain(|(b, _), _| b != name);
        self.tokenmaps.lock().expect("cache lock").retain(|(b, _), _| b != name);
        // Rings no backup shows any more.
        self.rings.lock().expect("cache lock").retain(|_, t| Arc::strong_count(t) > 1);
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let totals = self.totals.lock().expect("cache lock");
        let file = CacheFile { totals: totals.iter().map(|((b, n), t)| (b.clone(), n.clone(), t.clone())).collect() };
        drop(totals);
        if let Ok(bytes) = serde_json::to_vec(&file)
            && let Err(e) = crate::fsutil::write_atomic(path, &bytes)
        {
            tracing::warn!(error = %e, "could not persist the summary cache");
        }
    }

    /// Reads one manifest and counts it (off the runtime: a cold cache reads every manifest of
    /// the bucket), caching what it learns.
    async fn read_part(&self, storage: &Storage, nb: &NodeBackup) -> Result<Part, StorageError> {
        let Some((b, n)) = nb.names() else { return Ok(Part::Damaged("its names are not valid".into())) };
        let key = storage.layout.meta(&n, &b, crate::format::layout::Meta::Manifest);
        let Some(bytes) = node_backup::manifest(storage, &n, &b).await? else {
            return Ok(Part::Damaged(missing_manifest(&key)));
        };
        let manifest_bytes = bytes.len() as u64;
        let counted = crate::fsutil::blocking(move || {
            crate::format::manifest::count_objects(&bytes).map_err(std::io::Error::other)
        })
        .await;
        match counted {
            Ok((objects, bytes)) => {
                let t = NodeTotals { objects, bytes, manifest_bytes };
                self.totals.lock().expect("cache lock").insert((nb.name.clone(), nb.fqdn.clone()), t.clone());
                Ok(Part::Sound(t))
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "unreadable manifest: the node backup cannot be restored and is reported FAILED");
                Ok(Part::Damaged(format!("its manifest {key} is unreadable ({e})")))
            }
        }
    }

    /// The state of every node backup the index calls finished, by (name, node): cached totals
    /// count only while the stored manifest still exists with the size they were read from
    /// (one `stat` or HEAD each); the others are read, several at once. Returns whether the
    /// cache learnt something.
    async fn parts(
        &self,
        storage: &Storage,
        nbs: &[NodeBackup],
    ) -> Result<(HashMap<(String, String), Part>, bool), StorageError> {
        use futures::{StreamExt, TryStreamExt};
        let finished: Vec<&NodeBackup> = nbs.iter().filter(|nb| nb.finished.is_some() && !nb.leftover).collect();
        let mut keys = Vec::with_capacity(finished.len());
        let mut schemas = Vec::with_capacity(finished.len());
        let mut named = Vec::with_capacity(finished.len());
        for nb in &finished {
            if let Some((b, n)) = nb.names() {
                keys.push(storage.layout.meta(&n, &b, crate::format::layout::Meta::Manifest));
                schemas.push(storage.layout.meta(&n, &b, crate::format::layout::Meta::Schema));
                named.push(*nb);
            }
        }
        let sizes = storage.sizes(keys.clone()).await?;
        let schema_sizes = storage.sizes(schemas.clone()).await?;
        let mut out = HashMap::with_capacity(finished.len());
        let mut to_read = Vec::new();
        {
            let cached = self.totals.lock().expect("cache lock");
            for (((nb, key), size), (schema, schema_size)) in
                named.iter().zip(&keys).zip(sizes).zip(schemas.iter().zip(schema_sizes))
            {
                let id = (nb.name.clone(), nb.fqdn.clone());
                if schema_size.is_none() {
                    // What an interrupted deletion or a partial copy leaves: restore refuses it.
                    tracing::warn!(key = %schema, "this node backup has lost its schema.cql: reported FAILED");
                    out.insert(id, Part::Damaged(missing_schema(schema)));
                    continue;
                }
                match (size, cached.get(&id)) {
                    (None, _) => {
                        tracing::warn!(key = %key, "the index says this node backup finished, but its manifest is missing: reported FAILED");
                        out.insert(id, Part::Damaged(missing_manifest(key)));
                    }
                    (Some(s), Some(t)) if t.manifest_bytes == s && s > 0 => {
                        out.insert(id, Part::Sound(t.clone()));
                    }
                    (Some(_), _) => to_read.push((*nb).clone()),
                }
            }
        }
        let learnt = !to_read.is_empty();
        let read: Vec<((String, String), Part)> = futures::stream::iter(to_read)
            .map(|nb: NodeBackup| async move {
                Ok::<_, StorageError>(((nb.name.clone(), nb.fqdn.clone()), self.read_part(storage, &nb).await?))
            })
            .buffer_unordered(PREFETCH)
            .try_collect()
            .await?;
        out.extend(read);
        for nb in finished.iter().filter(|nb| nb.names().is_none()) {
            out.insert((nb.name.clone(), nb.fqdn.clone()), Part::Damaged("its names are not valid".into()));
        }
        Ok((out, learnt))
    }

    async fn tokenmap(&self, storage: &Storage, nb: &NodeBackup) -> Result<Arc<TokenMap>, StorageError> {
        let key = (nb.name.clone(), nb.fqdn.clone());
        if let Some(t) = self.tokenmaps.lock().expect("cache lock").get(&key) {
            return Ok(t.clone());
        }
        let Some((b, n)) = nb.names() else { return Ok(Arc::default()) };
        let index_key = storage.layout.index_tokenmap(&b, &n);
        let mut bytes = storage.get_opt(&index_key).await?.unwrap_or_default();
        if let Err(e) = TokenMap::parse(&bytes) {
            // The node's own copy in its folder says the same; an empty map (both unreadable)
            // makes the backup FAILED rather than IN_PROGRESS forever.
            let own = storage.layout.meta(&n, &b, crate::format::layout::Meta::Tokenmap);
            tracing::warn!(key = %index_key, error = %e, fallback = %own, "unreadable tokenmap index entry; reading the node's own copy");
            bytes = storage.get_opt(&own).await?.unwrap_or_default();
            if let Err(e) = TokenMap::parse(&bytes) {
                tracing::warn!(key = %own, error = %e, "unreadable tokenmap: the backup is reported FAILED");
                bytes = Bytes::new();
            }
        }
        let id = blake3::hash(&bytes);
        let known = self.rings.lock().expect("cache lock").get(&id).cloned();
        let tm = match known {
            Some(t) => t,
            None => {
                let t = Arc::new(TokenMap::parse(&bytes).unwrap_or_default());
                self.rings.lock().expect("cache lock").insert(id, t.clone());
                t
            }
        };
        self.tokenmaps.lock().expect("cache lock").insert(key, tm.clone());
        Ok(tm)
    }
}

/// Whether a node of the ring whose part never reached the index (its sidecar died or failed
/// before writing anything) marked it failed: without that, the backup would stay IN_PROGRESS
/// forever on every node.
async fn missing_part_failed(
    storage: &Storage,
    name: &str,
    tokenmap: &TokenMap,
    by_host: &HashMap<&str, &NodeBackup>,
) -> Result<bool, StorageError> {
    let Ok(b) = BackupName::new(name) else { return Ok(false) };
    for host in tokenmap.0.iter().map(|h| h.host.as_str()).filter(|h| !by_host.contains_key(h)) {
        let Ok(n) = Fqdn::new(host) else { continue };
        if node_backup::is_marked_failed(storage, &n, &b).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether an unfinished node backup has failed (a name no backup can have has not): it is
/// marked failed, or its `schema.cql` is gone while the index still names it, which only a
/// deletion cut short (or a damaged bucket) leaves: nothing will complete it, so it is not
/// reported IN_PROGRESS (the deletion removes `schema.cql` before the failure marker).
async fn is_failed(storage: &Storage, nb: &NodeBackup) -> Result<bool, StorageError> {
    let Some((b, n)) = nb.names() else { return Ok(false) };
    Ok(node_backup::is_marked_failed(storage, &n, &b).await? || node_backup::started(storage, &n, &b).await?.is_none())
}

/// Groups node backups into cluster backups and summarises each. `local_failed` tells about
/// node backups the caller knows failed (saves a request); others are checked for the marker.
pub async fn summarize(
    storage: &Storage,
    cache: &Cache,
    node_backups: Vec<NodeBackup>,
    local_failed: &(dyn Fn(&NodeBackup) -> Option<bool> + Sync),
) -> Result<Vec<ClusterBackup>, StorageError> {
    let (parts, learnt) = cache.parts(storage, &node_backups).await?;
    let mut groups: BTreeMap<String, Vec<NodeBackup>> = BTreeMap::new();
    for mut nb in node_backups.into_iter().filter(|nb| !nb.leftover) {
        // A part the index calls finished whose manifest is gone or unreadable cannot be
        // restored: it is damaged, not finished.
        if let Some(Part::Damaged(why)) = parts.get(&(nb.name.clone(), nb.fqdn.clone())) {
            nb.finished = None;
            nb.damaged = Some(why.clone());
        }
        groups.entry(nb.name.clone()).or_default().push(nb);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (name, mut nodes) in groups {
        nodes.sort_by_key(|n| n.started);
        let first = &nodes[0];
        let tokenmap = cache.tokenmap(storage, first).await?;
        let by_host: HashMap<&str, &NodeBackup> = nodes.iter().map(|n| (n.fqdn.as_str(), n)).collect();
        let expected: Vec<&NodeBackup> =
            tokenmap.0.iter().filter_map(|h| by_host.get(h.host.as_str()).copied()).collect();
        let missing = tokenmap.0.len() - expected.len();
        let finished_nodes = expected.iter().filter(|n| n.finished.is_some()).count();
        let finished = if missing == 0 && !expected.is_empty() && finished_nodes == expected.len() {
            expected.iter().filter_map(|n| n.finished).max()
        } else {
            None
        };
        // No readable ring, or a damaged part: nothing will ever complete it.
        let mut failed = tokenmap.0.is_empty() || nodes.iter().any(|n| n.damaged.is_some());
        for nb in nodes.iter().filter(|n| n.finished.is_none() && !failed) {
            let f = match local_failed(nb) {
                Some(f) => f,
                None => is_failed(storage, nb).await?,
            };
            if f {
                failed = true;
                break;
            }
        }
        if !failed && finished.is_none() {
            failed = missing_part_failed(storage, &name, &tokenmap, &by_host).await?;
        }
        let (mut total_size, mut total_objects) = (0, 0);
        for nb in nodes.iter().filter(|n| n.finished.is_some()) {
            if let Some(Part::Sound(t)) = parts.get(&(nb.name.clone(), nb.fqdn.clone())) {
                total_size += t.bytes;
                total_objects += t.objects;
            }
        }
        out.push(ClusterBackup {
            started: nodes.iter().filter_map(|n| n.started).min().unwrap_or(0),
            status: match (finished, failed) {
                (Some(_), _) => ClusterState::Success,
                (None, true) => ClusterState::Failed,
                (None, false) => ClusterState::InProgress,
            },
            finished,
            finished_nodes,
            backup_type: if first.differential { "differential" } else { "full" },
            tokenmap,
            total_size,
            total_objects,
            nodes,
            name,
        });
    }
    if learnt {
        cache.save();
    }
    out.sort_by(|a, b| (a.started, &a.name).cmp(&(b.started, &b.name)));
    Ok(out)
}

fn missing_manifest(key: &str) -> String {
    format!("the index says it finished, but its manifest {key} is missing")
}

fn missing_schema(key: &str) -> String {
    format!("its {key} is missing (partly deleted or copied incompletely): it cannot be restored")
}
