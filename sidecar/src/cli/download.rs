//! `download --backup-name --destination [--fqdn]`: one node's part of a backup into a local
//! directory as `<keyspace>/<table>/<files>` (Medusa's layout for `medusa download`), each file
//! verified against the manifest. Files go to `<destination>/.medusa-rs-download` first and
//! are moved into place only when all verified, so a failed or interrupted download leaves no
//! half-written table; a rerun resumes from the verified files.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Ctx, Failure, backup_name, human_bytes};
use crate::bucket::node_backup::{self, State};
use crate::restore::place::Staging;
use crate::restore::plan::Action;
use crate::restore::{Report, download::download_all};
use crate::transfer::Transfers;

const PARTIAL: &str = ".medusa-rs-download";

pub(super) async fn download(ctx: &Ctx, name: &str, dest: &Path, fqdn: Option<&str>) -> Result<u8, Failure> {
    let b = backup_name(name)?;
    let n = ctx.node(fqdn)?;
    match node_backup::state(&ctx.storage, &n, &b).await? {
        State::Absent => {
            return Err(Failure::not_found(format!(
                "backup {b} has no part for node {n}; `medusa-rs status --backup-name {b}` lists its nodes (pick one with --fqdn)"
            )));
        }
        State::Incomplete { .. } => {
            return Err(Failure::error(format!(
                "backup {b} of node {n} is incomplete (no manifest): nothing to download"
            )));
        }
        State::Complete { .. } => {}
    }
    check_destination(dest)?;
    let manifest = node_backup::manifest(&ctx.storage, &n, &b)
        .await?
        .ok_or_else(|| Failure::error(format!("the manifest of {b} on {n} is missing")))?;
    let manifest = crate::format::manifest::parse(&manifest)
        .map_err(|e| Failure::error(format!("the manifest of {b} on {n} is unreadable: {e}")))?;
    let plan = crate::restore::plan::plan(&manifest, true, &Default::default()).map_err(Failure::error)?;
    let staging = Staging::new(dest.join(PARTIAL));
    std::fs::create_dir_all(&staging.root)
        .map_err(|e| Failure::error(format!("cannot create {}: {e}", staging.root.display())))?;
    let transfers = Arc::new(Transfers::new(ctx.storage.clone(), &ctx.cfg.storage));
    let (chunk, concurrency) = (ctx.cfg.storage.multipart_chunksize, ctx.cfg.storage.concurrent_transfers);
    let mut report = Report { files: plan.files, bytes: plan.bytes, ..Default::default() };
    download_all(&plan, &staging, &transfers, chunk, concurrency, Default::default(), &mut report)
        .await
        .map_err(|e| Failure::error(format!("download failed: {e}; run the command again to resume")))?;
    for t in &plan.tables {
        if !matches!(t.action, Action::Replace(_)) {
            continue;
        }
        let to = dest.join(&t.keyspace).join(&t.table);
        let moved = std::fs::create_dir_all(dest.join(&t.keyspace))
            .and_then(|()| std::fs::rename(staging.table(&t.keyspace, &t.table), &to));
        moved.map_err(|e| Failure::error(format!("cannot move the table into {}: {e}", to.display())))?;
    }
    std::fs::remove_dir_all(&staging.root)
        .map_err(|e| Failure::error(format!("cannot remove {}: {e}", staging.root.display())))?;
    if ctx.json {
        ctx.print_json(&json!({
            "name": b.as_str(), "node": n.as_str(), "destination": dest.display().to_string(),
            "files": report.files, "bytes": report.bytes, "downloaded": report.downloaded_files,
            "size_only": report.size_only,
        }));
    } else {
        let size_only = match report.size_only {
            0 => String::new(),
            k => format!(" ({k} checked by size only: the manifest has no usable hash for them)"),
        };
        println!(
            "downloaded {b} of {n} into {}: {} files, {}{size_only}",
            dest.display(),
            report.files,
            human_bytes(report.bytes)
        );
    }
    Ok(0)
}

/// The destination must be new or empty (an interrupted download of ours may be resumed).
fn check_destination(dest: &Path) -> Result<(), Failure> {
    let entries = match std::fs::read_dir(dest) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Failure::error(format!("cannot read {}: {e}", dest.display()))),
    };
    let others: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n != PARTIAL).collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(Failure::error(format!(
        "{} is not empty ({} entries, e.g. {:?}); give a new or empty --destination",
        dest.display(),
        others.len(),
        others[0]
    )))
}
