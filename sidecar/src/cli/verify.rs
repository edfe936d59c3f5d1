//! `verify --backup-name [--deep]`: [`crate::service::verify`] for every node of a backup, and
//! the nodes of its tokenmap without a part.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::listing::cluster_backups;
use super::{Ctx, EXIT_NOT_SOUND, Failure, backup_name, human_bytes};
use crate::bucket::node_backup;
use crate::service::verify::{Verifier, node};
use crate::transfer::Transfers;

/// Something wrong with a backup.
struct Problem {
    node: String,
    key: Option<String>,
    problem: String,
}

#[derive(Default)]
struct Tally {
    objects: u64,
    bytes: u64,
    hashed: u64,
    size_only: u64,
}

pub(super) async fn verify(ctx: &Ctx, name: &str, deep: bool, tmp_dir: &Path) -> Result<u8, Failure> {
    let name = backup_name(name)?;
    let Some(b) = cluster_backups(ctx, Some(&name)).await?.into_iter().find(|b| b.name == name.as_str()) else {
        return Err(Failure::not_found(format!(
            "no backup named {name}; `medusa-rs list-backups` shows the backups there are"
        )));
    };
    let mut problems = Vec::new();
    let mut tally = Tally::default();
    for host in b.tokenmap.0.iter().map(|h| &h.host).filter(|h| !b.nodes.iter().any(|n| &n.fqdn == *h)) {
        problems.push(Problem { node: host.clone(), key: None, problem: "the node has no part of this backup".into() });
    }
    let how = Verifier {
        storage: &ctx.storage,
        transfers: Arc::new(Transfers::new(ctx.storage.clone(), &ctx.cfg.storage)),
        chunk: ctx.cfg.storage.multipart_chunksize,
        concurrency: ctx.cfg.storage.concurrent_transfers,
        tmp_dir: tmp_dir.to_path_buf(),
    };
    for nb in &b.nodes {
        let Some((bn, n)) = nb.names() else { continue };
        if let Some(why) = &nb.damaged {
            problems.push(Problem { node: nb.fqdn.clone(), key: None, problem: format!("damaged: {why}") });
            continue;
        }
        if nb.finished.is_none() {
            let why = node_backup::failure(&ctx.storage, &n, &bn).await?.map(|r| format!("failed: {r}"));
            let problem = why.unwrap_or_else(|| "incomplete: the node's backup never finished (no manifest)".into());
            problems.push(Problem { node: nb.fqdn.clone(), key: None, problem });
            continue;
        }
        let v = node(&how, &n, &bn, deep).await?;
        tally.objects += v.objects;
        tally.bytes += v.bytes;
        tally.hashed += v.hashed;
        tally.size_only += v.size_only;
        problems.extend(v.problems.into_iter().map(|(key, problem)| Problem { node: nb.fqdn.clone(), key, problem }));
    }
    let complete = b.finished.is_some();
    report(ctx, &b.name, complete, deep, &tally, &problems);
    Ok(if problems.is_empty() && complete { 0 } else { EXIT_NOT_SOUND })
}

fn report(ctx: &Ctx, name: &str, complete: bool, deep: bool, t: &Tally, problems: &[Problem]) {
    if ctx.json {
        let list: Vec<_> =
            problems.iter().map(|p| json!({ "node": p.node, "key": p.key, "problem": p.problem })).collect();
        ctx.print_json(&json!({
            "name": name, "complete": complete, "deep": deep, "ok": complete && problems.is_empty(),
            "objects": t.objects, "bytes": t.bytes, "hashed": t.hashed, "size_only": t.size_only,
            "problems": list,
        }));
        return;
    }
    println!("Validating {name} ...");
    println!("- Completion: {}", if complete { "OK!" } else { "Not complete!" });
    // OK only when every manifest was read and every object it names is sound: a node whose
    // manifest is missing or unreadable has problems without an object key.
    println!("- Manifest validated: {}", if problems.is_empty() { "OK!!" } else { "Incomplete!!" });
    for p in problems {
        match &p.key {
            Some(k) => println!("  - [{}] {k}: {}", p.node, p.problem),
            None => println!("  - [{}] {}", p.node, p.problem),
        }
    }
    print!("- {} objects, {} checked for presence and size", t.objects, human_bytes(t.bytes));
    if deep {
        print!("; {} re-hashed, {} without a usable hash (size only)", t.hashed, t.size_only);
    }
    println!();
}
