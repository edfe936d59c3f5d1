//! Medusa's `purge-decommissioned` (the CLI command and the extension RPC): the backups of nodes
//! that left the ring. Nobody purges them
//! (a node's sidecar purges only its own folder), so they stay for ever. Medusa's command takes
//! the live ring over CQL and deletes every backup of every other node folder, including parts
//! that complete cluster backups still need. Here a node is decommissioned when it is absent
//! from the latest complete cluster backup (its tokenmap and its parts, per datacenter) and took
//! no part in any later backup (a node added since, whose first backup is still running, is
//! live); of such a node, a part that a complete cluster backup holds is kept (that backup would
//! no longer restore), every other part is deleted, and once no part is left the node's shared
//! differential files go too (past the grace period, as any orphan). A dry run unless asked.

use std::collections::{BTreeMap, BTreeSet};

use crate::bucket::index::{NodeBackup, node_backups};
use crate::bucket::node_backup;
use crate::format::names::{BackupName, Fqdn};
use crate::service::listing::{Cache, ClusterBackup, ClusterState, summarize};
use crate::store::{Storage, StorageError};

/// What happens to one decommissioned node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// Parts to delete.
    pub delete: Vec<String>,
    /// Parts kept, with the complete backup that needs them.
    pub keep: Vec<String>,
}

/// The decommissioned nodes and what to do with each (pure: the listing decides).
pub fn plan(clusters: &[ClusterBackup], parts: &[NodeBackup]) -> BTreeMap<String, NodePlan> {
    let complete: Vec<&ClusterBackup> = clusters.iter().filter(|c| c.status == ClusterState::Success).collect();
    let Some(newest) = complete.iter().map(|c| c.started).max() else {
        // Without a complete backup nothing tells who is in the ring: nothing is touched.
        return BTreeMap::new();
    };
    let mut live: BTreeSet<String> = BTreeSet::new();
    // The latest complete backup of every datacenter names the live nodes.
    let mut latest_per_dc: BTreeMap<Option<String>, &ClusterBackup> = BTreeMap::new();
    for c in &complete {
        let dcs: BTreeSet<Option<String>> = c.tokenmap.0.iter().map(|n| n.dc.clone()).collect();
        for dc in dcs {
            let e = latest_per_dc.entry(dc).or_insert(c);
            if c.started > e.started {
                *e = c;
            }
        }
    }
    for c in latest_per_dc.values() {
        live.extend(c.tokenmap.0.iter().map(|n| n.host.clone()));
        live.extend(c.nodes.iter().map(|n| n.fqdn.clone()));
    }
    // A node that took part in a backup at or after the newest complete one is live.
    live.extend(parts.iter().filter(|p| p.started.is_none_or(|s| s >= newest)).map(|p| p.fqdn.clone()));
    let held: BTreeSet<(String, String)> =
        complete.iter().flat_map(|c| c.nodes.iter().map(move |n| (c.name.clone(), n.fqdn.clone()))).collect();
    let mut out: BTreeMap<String, NodePlan> = BTreeMap::new();
    for p in parts.iter().filter(|p| !live.contains(&p.fqdn)) {
        let plan = out.entry(p.fqdn.clone()).or_default();
        if held.contains(&(p.name.clone(), p.fqdn.clone())) {
            plan.keep.push(p.name.clone());
        } else if !plan.delete.contains(&p.name) {
            plan.delete.push(p.name.clone());
        }
    }
    out
}

/// What a run found and did.
#[derive(Debug, Default)]
pub struct Decommissioned {
    /// Per decommissioned node.
    pub planned: BTreeMap<String, NodePlan>,
    /// (node, backup) → when that part started.
    pub started: BTreeMap<(String, String), Option<i64>>,
    /// Objects deleted (0 on a dry run).
    pub objects: u64,
    /// Bytes deleted.
    pub bytes: u64,
}

/// Plans, and with `apply` deletes, the parts of decommissioned nodes; `grace_days` protects
/// shared files written recently (as any orphan cleanup).
pub async fn run(storage: &Storage, grace_days: u32, apply: bool) -> Result<Decommissioned, StorageError> {
    // One listing of the index, grouped here (not listed again for the cluster backups).
    let parts = node_backups(storage, None).await?;
    let clusters = summarize(storage, &Cache::default(), parts.clone(), &|_| None).await?;
    let mut out = Decommissioned {
        planned: plan(&clusters, &parts),
        started: parts.iter().map(|p| ((p.fqdn.clone(), p.name.clone()), p.started)).collect(),
        ..Default::default()
    };
    if !apply {
        return Ok(out);
    }
    let now = chrono::Utc::now().timestamp();
    for (node, p) in &out.planned {
        // Folder names come from the index, which accepted them as names.
        let Ok(n) = Fqdn::new(node.clone()) else { continue };
        for name in &p.delete {
            let Ok(b) = BackupName::new(name.clone()) else { continue };
            let skip = |folder: &str| folder == name.as_str();
            let refs = crate::retention::orphans::referenced(storage, &n, &skip).await?;
            let d = node_backup::delete_keeping(storage, &n, &b, &|k| refs.contains(k)).await?;
            (out.objects, out.bytes) = (out.objects + d.objects, out.bytes + d.bytes);
        }
        if p.keep.is_empty() {
            let c = crate::retention::orphans::clean(storage, &n, now, grace_days).await?;
            (out.objects, out.bytes) = (out.objects + c.objects, out.bytes + c.bytes);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::format::tokenmap::{RingNode, TokenMap};

    fn part(name: &str, fqdn: &str, started: i64, finished: bool) -> NodeBackup {
        NodeBackup {
            name: name.into(),
            fqdn: fqdn.into(),
            started: Some(started),
            finished: finished.then_some(started + 10),
            differential: true,
            leftover: false,
            damaged: None,
        }
    }

    fn cluster(name: &str, started: i64, ring: &[&str], status: ClusterState, parts: &[NodeBackup]) -> ClusterBackup {
        let node = |h: &&str| RingNode {
            host: h.to_string(),
            tokens: vec!["1".into()],
            is_up: true,
            rack: None,
            dc: Some("dc1".into()),
        };
        ClusterBackup {
            name: name.into(),
            started,
            finished: None,
            status,
            tokenmap: Arc::new(TokenMap(ring.iter().map(node).collect())),
            finished_nodes: 0,
            backup_type: "differential",
            total_size: 0,
            total_objects: 0,
            nodes: parts.iter().filter(|p| p.name == name).cloned().collect(),
        }
    }

    #[test]
    fn only_parts_no_complete_backup_needs_and_never_a_new_node() {
        let parts = vec![
            // b1: a, b, old (complete). b2: a, b, old (old failed). b3: a, b (complete, latest).
            part("b1", "a", 100, true),
            part("b1", "b", 100, true),
            part("b1", "old", 100, true),
            part("b2", "a", 200, true),
            part("b2", "b", 200, true),
            part("b2", "old", 200, false),
            part("b3", "a", 300, true),
            part("b3", "b", 300, true),
            // A node added after b3, its first backup running.
            part("b4", "new", 400, false),
        ];
        let clusters = vec![
            cluster("b1", 100, &["a", "b", "old"], ClusterState::Success, &parts),
            cluster("b2", 200, &["a", "b", "old"], ClusterState::Failed, &parts),
            cluster("b3", 300, &["a", "b"], ClusterState::Success, &parts),
            cluster("b4", 400, &["a", "b", "new"], ClusterState::InProgress, &parts),
        ];
        let p = plan(&clusters, &parts);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["old"]);
        assert_eq!(p["old"], NodePlan { delete: vec!["b2".into()], keep: vec!["b1".into()] });
        // Once b1 is purged by the live nodes (no longer complete), old's part goes too.
        let clusters: Vec<_> = clusters
            .into_iter()
            .map(|mut c| {
                if c.name == "b1" {
                    c.status = ClusterState::InProgress
                }
                c
            })
            .collect();
        assert_eq!(plan(&clusters, &parts)["old"], NodePlan { delete: vec!["b1".into(), "b2".into()], keep: vec![] });
        // No complete backup at all: nothing is called decommissioned.
        let none: Vec<_> = clusters.into_iter().filter(|c| c.status != ClusterState::Success).collect();
        assert!(plan(&none, &parts).is_empty());
    }
}
