//! `delete-backup --backup-name B [--all-nodes]`: Medusa's command, deleting this node's part of
//! a backup (or every node's). Shared differential files another backup references are kept
//! (Medusa's deletion by prefix could take them, contract §10.9). A part that is neither finished
//! nor marked failed and started within the grace period may be a running backup: it is
//! refused, naming it, since only the sidecar knows (delete it through the sidecar's
//! DeleteBackup, or wait).

use serde_json::json;

use super::{Ctx, Failure, backup_name, human_bytes};
use crate::bucket::index::node_backups;
use crate::bucket::node_backup;
use crate::format::names::Fqdn;

pub(super) async fn delete_backup(ctx: &Ctx, name: &str, all_nodes: bool) -> Result<u8, Failure> {
    let name = backup_name(name)?;
    let here = ctx.node(None)?;
    let parts: Vec<_> = node_backups(&ctx.storage, Some(&name))
        .await?
        .into_iter()
        .filter(|p| p.name == name.as_str() && (all_nodes || p.fqdn == here.as_str()))
        .collect();
    let mut nodes: Vec<String> = parts.iter().map(|p| p.fqdn.clone()).collect();
    nodes.dedup();
    // This node's folder counts even when the index lost its entries (as DeleteBackup does).
    if !nodes.contains(&here.to_string())
        && node_backup::state(&ctx.storage, &here, &name).await? != node_backup::State::Absent
    {
        nodes.push(here.to_string());
    }
    if nodes.is_empty() {
        let whose =
            if all_nodes { "any node".to_string() } else { format!("node {here} (--all-nodes for every node)") };
        return Err(Failure::not_found(format!("backup {name} has no part on {whose}")));
    }
    let now = chrono::Utc::now().timestamp();
    let grace = i64::from(ctx.cfg.storage.backup_grace_period_in_days) * 86_400;
    for node in &nodes {
        let n = Fqdn::new(node.clone()).map_err(|e| Failure::error(e.to_string()))?;
        if let node_backup::State::Incomplete { started, failure: None } =
            node_backup::state(&ctx.storage, &n, &name).await?
            && now - started < grace
        {
            return Err(Failure::error(format!(
                "backup {name} on node {n} is not finished and started {} s ago: it may be running; \
                 delete it through the sidecar (DeleteBackup), which knows, or after it ended; nothing was deleted",
                now - started
            )));
        }
    }
    let (mut objects, mut bytes) = (0u64, 0u64);
    for node in &nodes {
        let n = Fqdn::new(node.clone()).map_err(|e| Failure::error(e.to_string()))?;
        let skip = |folder: &str| folder == name.as_str();
        let refs = crate::retention::orphans::referenced(&ctx.storage, &n, &skip).await?;
        let d = node_backup::delete_keeping(&ctx.storage, &n, &name, &|k| refs.contains(k)).await?;
        (objects, bytes) = (objects + d.objects, bytes + d.bytes);
    }
    if ctx.json {
        ctx.print_json(&json!({ "backup_name": name.as_str(), "nodes": nodes, "objects": objects, "bytes": bytes }));
    } else {
        println!("deleted backup {name} on {}: {objects} objects, {}", nodes.join(", "), human_bytes(bytes));
    }
    Ok(0)
}
