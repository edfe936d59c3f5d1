//! `verify --backup-name [--deep]`: every object a backup's manifests name is in storage with
//! its recorded size (one listing per data folder, not a request per object); `--deep`
//! downloads each one and checks its hash as a restore would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::listing::cluster_backups;
use super::{Ctx, EXIT_NOT_SOUND, Failure, backup_name, human_bytes};
use crate::bucket::node_backup;
use crate::format::layout::Mode;
use crate::format::names::{BackupName, Fqdn};
use crate::restore::verify::{Verdict, judge, part_size_for};
use crate::transfer::{Download, Progress, Transfers};

/// Something wrong with a backup.
struct Problem {
    node: String,
    key: Option<String>,
    problem: String,
}

/// One object a manifest names.
struct Object {
    key: String,
    size: u64,
    md5: Option<String>,
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
    let scratch = if deep { Some(Scratch::new(tmp_dir)?) } else { None };
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
        let objects = match manifest_objects(ctx, &n, &bn).await {
            Ok(o) => o,
            Err(problem) => {
                problems.push(Problem { node: nb.fqdn.clone(), key: None, problem });
                continue;
            }
        };
        let sizes = stored_sizes(ctx, &n, &bn, &objects).await?;
        let mut sound = Vec::with_capacity(objects.len());
        for (o, stored) in objects.iter().zip(sizes) {
            tally.objects += 1;
            tally.bytes += o.size;
            let problem = match stored {
                None => "missing".to_string(),
                Some(s) if s != o.size => {
                    format!("{s} bytes in storage, {} in the manifest (truncated or replaced)", o.size)
                }
                Some(_) => {
                    sound.push(o);
                    continue;
                }
            };
            problems.push(Problem { node: nb.fqdn.clone(), key: Some(o.key.clone()), problem });
        }
        if let Some(scratch) = &scratch {
            for (o, verdict) in rehash(ctx, scratch, &sound).await {
                match verdict {
                    Ok(Verdict::Verified) => tally.hashed += 1,
                    Ok(Verdict::SizeOnly) => tally.size_only += 1,
                    Ok(Verdict::Size { recorded, read }) => problems.push(Problem {
                        node: nb.fqdn.clone(),
                        key: Some(o.key.clone()),
                        problem: format!("{read} bytes read back, {recorded} in the manifest (changed while verified)"),
                    }),
                    Ok(Verdict::Mismatch { expected, actual }) => problems.push(Problem {
                        node: nb.fqdn.clone(),
                        key: Some(o.key.clone()),
                        problem: format!(
                            "content differs: the manifest records {expected}, the bytes hash to {actual}"
                        ),
                    }),
                    Err(e) => problems.push(Problem {
                        node: nb.fqdn.clone(),
                        key: Some(o.key.clone()),
                        problem: format!("could not be read back: {e}"),
                    }),
                }
            }
        }
    }
    drop(scratch);
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

/// The objects of one node's manifest, or why they cannot be known.
async fn manifest_objects(ctx: &Ctx, n: &Fqdn, b: &BackupName) -> Result<Vec<Object>, String> {
    let bytes = match node_backup::manifest(&ctx.storage, n, b).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err("the manifest is missing".into()),
        Err(e) => return Err(format!("the manifest cannot be read: {e}")),
    };
    let mut out = Vec::new();
    crate::format::manifest::for_each_object(&bytes, |key, md5, size| {
        out.push(Object { key: key.to_string(), size, md5: md5.map(str::to_string) })
    })
    .map_err(|e| format!("the manifest is unreadable: {e}"))?;
    Ok(out)
}

/// The stored size of each object (`None`: absent), from one listing per data folder; objects
/// outside the node's data folders are asked for one by one.
async fn stored_sizes(ctx: &Ctx, n: &Fqdn, b: &BackupName, objects: &[Object]) -> Result<Vec<Option<u64>>, Failure> {
    let layout = &ctx.storage.layout;
    let roots = [layout.data_dir(Mode::Full, n, b), layout.shared_data_dir(n)];
    let mut sizes: HashMap<&str, Option<u64>> = objects.iter().map(|o| (o.key.as_str(), None)).collect();
    for root in &roots {
        if !objects.iter().any(|o| o.key.starts_with(root.as_str())) {
            continue;
        }
        let mut listing = std::pin::pin!(ctx.storage.list(root));
        while let Some(meta) = listing.try_next().await? {
            if let Some(slot) = sizes.get_mut(meta.location.as_ref()) {
                *slot = Some(meta.size);
            }
        }
    }
    for o in objects.iter().filter(|o| !roots.iter().any(|r| o.key.starts_with(r.as_str()))) {
        let size = ctx.storage.head(&o.key).await?.map(|m| m.size);
        sizes.insert(o.key.as_str(), size);
    }
    Ok(objects.iter().map(|o| sizes.get(o.key.as_str()).copied().flatten()).collect())
}

/// A private directory for `--deep`'s downloads, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tmp: &Path) -> Result<Scratch, Failure> {
        let dir = tmp.join(format!("medusa-rs-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Failure::error(format!("cannot create {} for --deep: {e}; pick another --tmp-dir", dir.display()))
        })?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads and judges each object, `concurrent_transfers` at a time.
async fn rehash<'a>(
    ctx: &Ctx,
    scratch: &Scratch,
    objects: &[&'a Object],
) -> Vec<(&'a Object, Result<Verdict, String>)> {
    let transfers = Arc::new(Transfers::new(ctx.storage.clone(), &ctx.cfg.storage));
    let progress = Arc::new(Progress::default());
    let chunk = ctx.cfg.storage.multipart_chunksize;
    let checks = objects.iter().enumerate().map(|(i, o)| {
        let (transfers, progress) = (transfers.clone(), progress.clone());
        let dest = scratch.0.join(i.to_string());
        async move {
            let part = part_size_for(o.md5.as_deref(), o.size, chunk);
            let file = Download { key: o.key.clone(), dest: dest.clone(), part, size: o.size };
            let verdict = match transfers.download_file(file, &progress).await {
                Ok(digest) => {
                    let (md5, size, path) = (o.md5.clone(), o.size, dest.clone());
                    crate::fsutil::blocking(move || judge(md5.as_deref(), size, &digest, &path))
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = std::fs::remove_file(&dest);
            (*o, verdict)
        }
    });
    futures::stream::iter(checks).buffer_unordered(ctx.cfg.storage.concurrent_transfers.max(1)).collect().await
}
