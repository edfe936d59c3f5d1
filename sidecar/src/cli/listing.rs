//! `list-backups` and `status`: what GetBackups reports, for people and scripts.

use serde_json::json;

use super::{Ctx, EXIT_NOT_SOUND, Failure, backup_name, human_bytes, table, time};
use crate::bucket::index::{NodeBackup, node_backups};
use crate::bucket::node_backup;
use crate::service::listing::{Cache, ClusterBackup, ClusterState, summarize};

fn state(s: ClusterState) -> &'static str {
    match s {
        ClusterState::Success => "SUCCESS",
        ClusterState::InProgress => "IN_PROGRESS",
        ClusterState::Failed => "FAILED",
    }
}

/// The fields both `list-backups` and `status` report for a backup, as JSON.
fn summary(b: &ClusterBackup) -> serde_json::Value {
    json!({
        "name": b.name,
        "type": b.backup_type,
        "status": state(b.status),
        "complete": b.finished.is_some(),
        "started": b.started,
        "finished": b.finished,
        "objects": b.total_objects,
        "bytes": b.total_size,
    })
}

pub(super) async fn cluster_backups(
    ctx: &Ctx,
    name: Option<&crate::format::names::BackupName>,
) -> Result<Vec<ClusterBackup>, Failure> {
    let nbs = node_backups(&ctx.storage, name).await?;
    Ok(summarize(&ctx.storage, &Cache::default(), nbs, &|_| None).await?)
}

/// `list-backups`: every backup of the bucket (prefix), oldest first.
pub(super) async fn list_backups(ctx: &Ctx) -> Result<u8, Failure> {
    let backups = cluster_backups(ctx, None).await?;
    if ctx.json {
        let list: Vec<_> = backups
            .iter()
            .map(|b| {
                let mut v = summary(b);
                v["nodes"] = json!(b.tokenmap.0.len());
                v["finished_nodes"] = json!(b.finished_nodes);
                v
            })
            .collect();
        ctx.print_json(&json!({ "backups": list }));
        return Ok(0);
    }
    if backups.is_empty() {
        println!("no backups in bucket {} ({})", ctx.cfg.storage.bucket_name, prefix(ctx));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.backup_type.to_string(),
                state(b.status).to_string(),
                time(Some(b.started)),
                b.finished.map(|f| time(Some(f))).unwrap_or_else(|| "[Incomplete!]".into()),
                format!("{}/{}", b.finished_nodes, b.tokenmap.0.len()),
                b.total_objects.to_string(),
                human_bytes(b.total_size),
            ]
        })
        .collect();
    table(&["NAME", "TYPE", "STATUS", "STARTED (UTC)", "FINISHED (UTC)", "NODES", "FILES", "SIZE"], &rows);
    if backups.iter().any(|b| b.finished.is_none()) {
        println!("\nIncomplete backups found. Run \"medusa-rs status --backup-name <name>\" for more details");
    }
    Ok(0)
}

fn prefix(ctx: &Ctx) -> String {
    ctx.cfg.storage.prefix.as_deref().map(|p| format!("prefix {p:?}")).unwrap_or_else(|| "no prefix".into())
}

/// One node's part of a backup, as `status` shows it.
struct NodeLine {
    fqdn: String,
    state: &'static str,
    started: Option<i64>,
    finished: Option<i64>,
    objects: u64,
    bytes: u64,
    reason: Option<String>,
}

async fn node_line(ctx: &Ctx, nb: &NodeBackup) -> Result<NodeLine, Failure> {
    let mut line = NodeLine {
        fqdn: nb.fqdn.clone(),
        state: "complete",
        started: nb.started,
        finished: nb.finished,
        objects: 0,
        bytes: 0,
        reason: None,
    };
    let Some((b, n)) = nb.names() else {
        line.state = "unreadable";
        return Ok(line);
    };
    if let Some(why) = &nb.damaged {
        line.state = "damaged";
        line.reason = Some(why.clone());
    } else if nb.finished.is_some() {
        match node_backup::manifest(&ctx.storage, &n, &b).await? {
            Some(m) => match crate::format::manifest::parse(&m) {
                Ok(m) => (line.objects, line.bytes) = crate::format::manifest::totals(&m),
                Err(e) => {
                    line.state = "damaged";
                    line.reason = Some(format!("its manifest is unreadable ({e})"));
                }
            },
            None => {
                line.state = "damaged";
                line.reason = Some("its manifest is missing".into());
            }
        }
    } else if let Some(reason) = node_backup::failure(&ctx.storage, &n, &b).await? {
        line.state = "failed";
        line.reason = Some(reason);
    } else if node_backup::started(&ctx.storage, &n, &b).await?.is_none() {
        // As GetBackups: what a deletion cut short leaves will never complete.
        line.state = "failed";
        line.reason = Some("its schema.cql is gone: a deletion was cut short (the next purge finishes it)".into());
    } else {
        line.state = "incomplete";
    }
    Ok(line)
}

/// The cluster backup `name`, or exit 3 naming the bucket and prefix searched.
async fn one_backup(ctx: &Ctx, name: &str) -> Result<ClusterBackup, Failure> {
    let name = backup_name(name)?;
    cluster_backups(ctx, Some(&name)).await?.into_iter().find(|b| b.name == name.as_str()).ok_or_else(|| {
        Failure::not_found(format!(
            "no backup named {name} in bucket {} ({}); `medusa-rs list-backups` shows the backups there are",
            ctx.cfg.storage.bucket_name,
            prefix(ctx)
        ))
    })
}

/// `status --backup-name`: exit 0 when the backup is complete on every node, 4 when not, 3
/// when there is no such backup.
pub(super) async fn status(ctx: &Ctx, name: &str) -> Result<u8, Failure> {
    let b = one_backup(ctx, name).await?;
    let mut lines = Vec::with_capacity(b.nodes.len());
    for nb in &b.nodes {
        lines.push(node_line(ctx, nb).await?);
    }
    let missing: Vec<&str> =
        b.tokenmap.0.iter().map(|h| h.host.as_str()).filter(|h| !b.nodes.iter().any(|n| n.fqdn == *h)).collect();
    let complete = lines.iter().filter(|l| l.state == "complete").count();
    let code = if b.status == ClusterState::Success { 0 } else { EXIT_NOT_SOUND };
    if ctx.json {
        let nodes: Vec<_> = lines
            .iter()
            .map(|l| {
                json!({
                    "fqdn": l.fqdn, "status": l.state, "started": l.started, "finished": l.finished,
                    "objects": l.objects, "bytes": l.bytes, "reason": l.reason,
                })
            })
            .collect();
        let mut v = summary(&b);
        v["nodes"] = json!(nodes);
        v["missing_nodes"] = json!(missing);
        ctx.print_json(&v);
        return Ok(code);
    }
    println!("{} ({}): {}", b.name, b.backup_type, state(b.status));
    let finished = b.finished.map(|f| time(Some(f))).unwrap_or_else(|| "[Incomplete!]".into());
    println!("- Started: {}, Finished: {finished} (UTC)", time(Some(b.started)));
    println!(
        "- {complete} nodes completed, {} nodes incomplete, {} nodes missing",
        lines.len() - complete,
        missing.len()
    );
    let incomplete: Vec<&NodeLine> = lines.iter().filter(|l| l.state != "complete").collect();
    if !incomplete.is_empty() {
        println!("- Incomplete nodes:");
        for l in incomplete {
            println!(
                "    {} ({}{})",
                l.fqdn,
                l.state,
                l.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            );
        }
    }
    if !missing.is_empty() {
        println!("- Missing nodes:");
        for m in &missing {
            println!("    {m}");
        }
    }
    println!("- {} files, {}", b.total_objects, human_bytes(b.total_size));
    println!();
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.fqdn.clone(),
                l.state.to_string(),
                time(l.started),
                time(l.finished),
                l.objects.to_string(),
                human_bytes(l.bytes),
            ]
        })
        .collect();
    table(&["NODE", "STATUS", "STARTED (UTC)", "FINISHED (UTC)", "FILES", "SIZE"], &rows);
    Ok(code)
}

/// `fetch-tokenmap --backup-name`: the backup's token map as Medusa prints it (each node's name,
/// then its tokens), or, with `--output json`, its `tokenmap.json` as stored. Exit 3 when there
/// is no such backup.
pub(super) async fn fetch_tokenmap(ctx: &Ctx, name: &str) -> Result<u8, Failure> {
    let b = one_backup(ctx, name).await?;
    let name = &b.name;
    if ctx.json {
        let v: serde_json::Value = serde_json::from_slice(&b.tokenmap.to_bytes())
            .map_err(|e| Failure::error(format!("the token map of {name} cannot be shown as JSON: {e}")))?;
        ctx.print_json(&v);
        return Ok(0);
    }
    for node in &b.tokenmap.0 {
        println!("{}", node.host);
        println!("[{}]", node.tokens.join(", "));
    }
    Ok(0)
}

/// `get-last-complete-cluster-backup`: the name of the newest backup complete on every node of
/// its ring (Medusa's message when there is none, and exit 3 for scripts).
pub(super) async fn last_complete(ctx: &Ctx) -> Result<u8, Failure> {
    let backups = cluster_backups(ctx, None).await?;
    let last = backups.iter().filter(|b| b.status == ClusterState::Success).max_by_key(|b| (b.finished, b.started));
    if ctx.json {
        ctx.print_json(
            &json!({ "backup_name": last.map(|b| b.name.as_str()), "finished": last.and_then(|b| b.finished) }),
        );
    } else {
        match last {
            Some(b) => println!("{}", b.name),
            None => println!("Could not find any full backup for the cluster"),
        }
    }
    Ok(if last.is_some() { 0 } else { super::EXIT_NOT_FOUND })
}

/// `report-last-backup`: Medusa's report (this node's latest backup, the latest complete
/// cluster backup, the latest cluster backup with its complete, incomplete and missing nodes),
/// on standard output instead of Medusa's log. `--push-metrics` has no backend to push to: the
/// sidecar exports the same figures on `/metrics`.
pub(super) async fn report_last_backup(ctx: &Ctx, push_metrics: bool) -> Result<u8, Failure> {
    if push_metrics {
        tracing::warn!("--push-metrics: medusa-rs pushes to no monitoring backend; scrape the sidecar's /metrics");
    }
    let n = ctx.node(None)?;
    let backups = cluster_backups(ctx, None).await?;
    let now = chrono::Utc::now().timestamp();
    let node_last = backups
        .iter()
        .flat_map(|b| &b.nodes)
        .filter(|p| p.fqdn == n.as_str())
        .filter_map(|p| p.finished.map(|f| (f, p.name.clone())))
        .max();
    let complete = backups.iter().filter(|b| b.status == ClusterState::Success).max_by_key(|b| (b.finished, b.started));
    let latest = backups.iter().max_by_key(|b| b.started);
    let summary = latest.map(|b| {
        let done: Vec<&str> = b.nodes.iter().filter(|p| p.finished.is_some()).map(|p| p.fqdn.as_str()).collect();
        let incomplete: Vec<&str> = b.nodes.iter().filter(|p| p.finished.is_none()).map(|p| p.fqdn.as_str()).collect();
        let missing: Vec<&str> =
            b.tokenmap.0.iter().map(|h| h.host.as_str()).filter(|h| !b.nodes.iter().any(|p| p.fqdn == *h)).collect();
        (b, done, incomplete, missing)
    });
    if ctx.json {
        ctx.print_json(&json!({
            "node": n.as_str(),
            "node_backup": node_last.as_ref().map(|(f, name)| json!({ "name": name, "finished": f, "seconds_ago": now - f })),
            "complete_cluster_backup": complete.map(|b| json!({
                "name": b.name, "finished": b.finished, "seconds_ago": b.finished.map(|f| now - f),
            })),
            "latest_cluster_backup": summary.as_ref().map(|(b, done, incomplete, missing)| json!({
                "name": b.name, "complete": b.status == ClusterState::Success, "complete_nodes": done,
                "incomplete_nodes": incomplete, "missing_nodes": missing, "bytes": b.total_size, "objects": b.total_objects,
            })),
        }));
        return Ok(0);
    }
    match &node_last {
        Some((f, _)) => println!("Latest node backup finished {} seconds ago", now - f),
        None => println!("This node has not been backed up yet"),
    }
    match complete {
        Some(b) => {
            println!("Latest complete backup:");
            println!("- Name: {}", b.name);
            println!("- Finished: {} seconds ago", b.finished.map(|f| now - f).unwrap_or_default());
        }
        None => println!("The cluster this node belongs to has no complete backup yet"),
    }
    let Some((b, done, incomplete, missing)) = summary else {
        println!("The cluster this node belongs to has not started a backup yet");
        return Ok(0);
    };
    println!("Latest backup:");
    println!("- Name: {}", b.name);
    println!("- Finished: {}", if b.status == ClusterState::Success { "True" } else { "False" });
    println!("- Details - Node counts");
    println!("- Complete backup: {} nodes have completed the backup", done.len());
    if !incomplete.is_empty() {
        println!("- Incomplete backup: {} nodes have not completed the backup yet", incomplete.len());
        println!("  These nodes are:");
        incomplete.iter().for_each(|h| println!("     {h}"));
    }
    if !missing.is_empty() {
        println!("- Missing backup: {} nodes are not running backups", missing.len());
        println!("  These nodes are:");
        missing.iter().for_each(|h| println!("     {h}"));
    }
    println!("- Total size: {}", human_bytes(b.total_size));
    println!("- Total files: {}", b.total_objects);
    Ok(0)
}
