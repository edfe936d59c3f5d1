//! `purge [--apply] [--fqdn]`: the retention limits of `[storage]` applied to one node's
//! backups, as the sidecar's PurgeBackups does. A dry run unless `--apply`: what an operator
//! types in a pod should show before it deletes. Orphaned differential files are not deleted
//! here (that needs the node's backup slot, which only the sidecar holds).

use serde_json::json;

use super::{Ctx, Failure, human_bytes, table, time};
use crate::bucket::index::node_backups;
use crate::retention::purge::{Limits, Reason, plan, purge as run_purge};

fn reason(r: &Reason) -> &'static str {
    match r {
        Reason::TooOld => "older than max_backup_age",
        Reason::OverCount => "beyond max_backup_count",
        Reason::TooOldAndOverCount => "older than max_backup_age and beyond max_backup_count",
        Reason::WithinLimits => "within the limits",
        Reason::Running => "running",
        Reason::Incomplete => "incomplete, older than the newest complete backup and the grace period",
    }
}

pub(super) async fn purge(ctx: &Ctx, apply: bool, fqdn: Option<&str>) -> Result<u8, Failure> {
    let n = ctx.node(fqdn)?;
    let s = &ctx.cfg.storage;
    let limits = Limits {
        max_backup_age: s.max_backup_age,
        max_backup_count: s.max_backup_count,
        grace_days: s.backup_grace_period_in_days,
    };
    let now = chrono::Utc::now().timestamp();
    let mine: Vec<_> =
        node_backups(&ctx.storage, None).await?.into_iter().filter(|b| b.fqdn == n.as_str() && !b.leftover).collect();
    let planned = plan(mine, now, limits, &|_| false);
    let done = if apply { Some(run_purge(&ctx.storage, &n, limits, now, &|_| false, false).await?) } else { None };
    if ctx.json {
        let list = |v: &[(crate::bucket::index::NodeBackup, Reason)]| -> Vec<serde_json::Value> {
            v.iter().map(|(b, r)| json!({ "name": b.name, "started": b.started, "complete": b.finished.is_some(), "reason": reason(r) })).collect()
        };
        ctx.print_json(&json!({
            "node": n.as_str(),
            "dry_run": !apply,
            "max_backup_age": s.max_backup_age,
            "max_backup_count": s.max_backup_count,
            "purge": list(&planned.purge),
            "keep": list(&planned.keep),
            "deleted": done.map(|d| json!({ "backups": d.backups, "objects": d.objects, "bytes": d.bytes })),
        }));
        return Ok(0);
    }
    println!(
        "node {n}: max_backup_age = {} days, max_backup_count = {} (0 = off)",
        s.max_backup_age, s.max_backup_count
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (b, r) in &planned.purge {
        rows.push(vec![
            b.name.clone(),
            time(b.started),
            if apply { "deleted" } else { "would delete" }.into(),
            reason(r).into(),
        ]);
    }
    for (b, r) in &planned.keep {
        rows.push(vec![b.name.clone(), time(b.started), "keep".into(), reason(r).into()]);
    }
    if rows.is_empty() {
        println!("no backups of this node");
    } else {
        table(&["BACKUP", "STARTED (UTC)", "ACTION", "WHY"], &rows);
    }
    match done {
        Some(d) => println!("\ndeleted {} backups: {} objects, {}", d.backups, d.objects, human_bytes(d.bytes)),
        None if !planned.purge.is_empty() => {
            println!("\ndry run: nothing was deleted; run again with --apply to delete")
        }
        None => {}
    }
    Ok(0)
}
