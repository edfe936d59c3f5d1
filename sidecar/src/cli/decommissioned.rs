//! `purge-decommissioned [--apply]`: [`crate::service::decommissioned`] run and printed.

use serde_json::json;

use super::{Ctx, Failure, human_bytes, table, time};

pub(super) async fn purge_decommissioned(ctx: &Ctx, apply: bool) -> Result<u8, Failure> {
    let grace = ctx.cfg.storage.backup_grace_period_in_days;
    let d = crate::service::decommissioned::run(&ctx.storage, grace, apply).await?;
    let (planned, started, objects, bytes) = (d.planned, d.started, d.objects, d.bytes);
    if ctx.json {
        let nodes: Vec<_> = planned
            .iter()
            .map(|(node, p)| json!({ "node": node, "delete": p.delete, "keep_for_complete_backups": p.keep }))
            .collect();
        let deleted = apply.then(|| json!({ "objects": objects, "bytes": bytes }));
        ctx.print_json(&json!({ "dry_run": !apply, "decommissioned": nodes, "deleted": deleted }));
        return Ok(0);
    }
    if planned.is_empty() {
        println!("no decommissioned nodes: every node folder is in the latest complete backup's ring");
        return Ok(0);
    }
    let mut rows = Vec::new();
    for (node, p) in &planned {
        let when = |name: &String| time(started.get(&(node.clone(), name.clone())).copied().flatten());
        for name in &p.delete {
            let action = if apply { "deleted" } else { "would delete" };
            rows.push(vec![node.clone(), name.clone(), when(name), action.into()]);
        }
        for name in &p.keep {
            rows.push(vec![node.clone(), name.clone(), when(name), "keep: a complete cluster backup".into()]);
        }
    }
    table(&["NODE", "BACKUP", "STARTED (UTC)", "ACTION"], &rows);
    if apply {
        println!("\ndeleted {objects} objects, {}", human_bytes(bytes));
    } else {
        println!("\ndry run: nothing was deleted; run again with --apply to delete");
    }
    Ok(0)
}
