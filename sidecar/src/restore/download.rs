//! Downloading a restore's files into staging: each object straight to its place in staging
//! (which nothing else reads), hashed on the way and checked against the manifest; a file that
//! does not verify is removed. Files an interrupted run left in staging are hashed again
//! instead of fetched again, so a file cut by a crash is fetched again. (Downloading to a
//! `.part` name and renaming each verified file cost a rename per file: a tenth of a restore of
//! 32,000 small files.) Progress is logged every 5 s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};

use super::place::Staging;
use super::plan::{self, Action, FetchFile};
use super::verify::{self, Verdict};
use super::{Report, RestoreError, io};
use crate::store::StorageError;
use crate::transfer::{Download, Progress, TransferError, Transfers, batch_ranges};

fn free_bytes(dir: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(dir).ok().map(|s| s.blocks_available() * s.fragment_size())
}

/// A file to fetch: its final place in staging and its manifest entry.
type Fetch<'a> = (PathBuf, &'a FetchFile);

/// Downloads every file of `plan` that is not staged and verified yet.
pub async fn download_all(
    plan: &plan::RestorePlan,
    staging: &Staging,
    transfers: &Arc<Transfers>,
    chunk: u64,
    concurrency: usize,
    progress: Arc<Progress>,
    report: &mut Report,
) -> Result<(), RestoreError> {
    let (mut todo, staged) = split_staged(plan, staging);
    if !staged.is_empty() {
        todo.extend(recheck_staged(staged, chunk, concurrency, &progress).await);
    }
    let needed: u64 = todo.iter().map(|(_, f)| f.size).sum();
    if let Some(available) = free_bytes(&staging.root)
        && needed > available
    {
        return Err(RestoreError::NoSpace { dir: staging.root.clone(), needed, available });
    }
    progress.bytes_total.store(plan.bytes, Ordering::Relaxed);
    progress.files_total.store(plan.files, Ordering::Relaxed);
    progress.files_done.store(plan.files - todo.len() as u64, Ordering::Relaxed);
    let logger = tokio::spawn(crate::transfer::progress::log_every(progress.clone(), "restore progress"));
    // Enough batches in flight for the small-object slots too (crate::transfer::SMALL_FANOUT);
    // large downloads still wait for one of the `concurrent_transfers` slots.
    let width = concurrency.max(1) * crate::transfer::SMALL_FANOUT * 2;
    let batches = batch_ranges(todo.iter().map(|(_, f)| f.size), transfers.batch_limits());
    let results: Vec<Vec<Verdict>> =
        futures::stream::iter(batches.into_iter().map(|b| fetch_retrying(transfers, &todo[b], chunk, &progress)))
            .buffer_unordered(width)
            .try_collect()
            .await
            .inspect_err(|_| logger.abort())?;
    logger.abort();
    let results: Vec<Verdict> = results.into_iter().flatten().collect();
    // Downloads are not fsynced one by one: one flush of the staging filesystem before placing.
    let root = staging.root.clone();
    crate::fsutil::blocking(move || crate::fsutil::syncfs(&root))
        .await
        .map_err(io("flushing the staged files to disk"))?;
    report.downloaded_files = results.len() as u64;
    report.size_only = results.iter().filter(|v| **v == Verdict::SizeOnly).count() as u64;
    if report.size_only > 0 {
        tracing::info!(
            files = report.size_only,
            "files without a usable hash in the manifest were checked by size only"
        );
    }
    Ok(())
}

/// The files of `plan` to fetch, and those an interrupted run already staged whole (their size
/// is right), which are checked again instead of fetched again.
fn split_staged<'a>(plan: &'a plan::RestorePlan, staging: &Staging) -> (Vec<Fetch<'a>>, Vec<Fetch<'a>>) {
    let mut todo = Vec::with_capacity(plan.files as usize);
    let mut staged = Vec::new();
    for t in &plan.tables {
        if let Action::Replace(files) = &t.action {
            let dir = staging.table(&t.keyspace, &t.table);
            for f in files {
                let dest = dir.join(f.file.rel());
                if std::fs::metadata(&dest).is_ok_and(|m| m.len() == f.size) {
                    staged.push((dest, f));
                } else {
                    todo.push((dest, f));
                }
            }
        }
    }
    (todo, staged)
}

/// Hashes the staged files of an interrupted run against the manifest (files are not fsynced
/// one by one, so a crash may have left one damaged): those that verify count as done, the
/// others are removed and returned to be fetched again.
async fn recheck_staged<'a>(
    staged: Vec<Fetch<'a>>,
    chunk: u64,
    concurrency: usize,
    progress: &Progress,
) -> Vec<Fetch<'a>> {
    let checks = staged.iter().map(|(dest, f)| {
        let (d, md5, size, part) =
            (dest.clone(), f.md5.clone(), f.size, verify::part_size_for(f.md5.as_deref(), f.size, chunk));
        crate::fsutil::blocking(move || verify::check_file(md5.as_deref(), size, part, &d))
    });
    let verdicts: Vec<_> = futures::stream::iter(checks).buffered(concurrency.max(1)).collect().await;
    let (mut kept, mut again) = (0, Vec::new());
    for ((dest, f), verdict) in staged.into_iter().zip(verdicts) {
        if matches!(verdict, Ok(Verdict::Verified | Verdict::SizeOnly)) {
            progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
            kept += 1;
        } else {
            let _ = std::fs::remove_file(&dest);
            again.push((dest, f));
        }
    }
    tracing::info!(files = kept, "staged files of the interrupted run checked and kept");
    again
}

/// Whether fetching the object again can mend `e`: a transfer cut or refused for a while, or
/// bytes that did not verify (a truncated or damaged transfer). A missing object, a full disk or
/// a refusal cannot.
fn worth_retrying(e: &RestoreError) -> bool {
    match e {
        RestoreError::Corrupt { .. } => true,
        RestoreError::Transfer(t) => t.is_retryable(),
        RestoreError::Storage(s) => s.is_retryable(),
        _ => false,
    }
}

/// [`fetch_batch`], fetched again when it failed, up to `[storage] max_retries` times (however
/// long each takes: a large file's download may outlast `retry_timeout`) before the restore
/// fails with the object's key. A batch is fetched again whole: it holds one large file or a
/// few small ones, and its files are all written before any is checked.
async fn fetch_retrying(
    transfers: &Transfers,
    batch: &[Fetch<'_>],
    chunk: u64,
    progress: &Arc<Progress>,
) -> Result<Vec<Verdict>, RestoreError> {
    let mut attempts = transfers.retries().without_deadline().start();
    loop {
        match fetch_batch(transfers, batch, chunk, progress).await {
            Ok(v) => {
                progress.files_done.fetch_add(v.len() as u64, Ordering::Relaxed);
                return Ok(v);
            }
            Err(e) => {
                let Some(retry) = worth_retrying(&e).then(|| attempts.retry()).flatten() else { return Err(e) };
                tracing::warn!(error = %e, attempt = retry.number(), files = batch.len(), "download failed; fetching again");
                retry.wait().await;
            }
        }
    }
}

/// Fetches a batch of files, each to its place in staging, and checks each against the
/// manifest; one that does not verify is removed and fails the batch.
async fn fetch_batch(
    transfers: &Transfers,
    batch: &[Fetch<'_>],
    chunk: u64,
    progress: &Arc<Progress>,
) -> Result<Vec<Verdict>, RestoreError> {
    let downloads = batch
        .iter()
        .map(|(dest, f)| Download {
            key: f.key.clone(),
            dest: dest.clone(),
            part: verify::part_size_for(f.md5.as_deref(), f.size, chunk),
            size: f.size,
        })
        .collect();
    let digests = match transfers.download_files(downloads, progress).await {
        Ok(d) => d,
        Err(TransferError::Storage(StorageError::NotFound { key })) => return Err(RestoreError::Missing { key }),
        Err(e) => return Err(e.into()),
    };
    let files: Vec<_> = batch.iter().map(|(dest, f)| (dest.clone(), f.key.clone(), f.size, f.md5.clone())).collect();
    let checked = crate::fsutil::blocking(move || {
        let mut verdicts = Vec::with_capacity(files.len());
        for ((dest, key, size, md5), digest) in files.into_iter().zip(digests) {
            let verdict = verify::judge(md5.as_deref(), size, &digest, &dest)?;
            // The store said the object has the recorded size ([`Transfers::download_files`]
            // checks): other bytes than recorded arrived, which fetching again may mend.
            let (expected, actual) = match verdict {
                Verdict::Mismatch { expected, actual } => (expected, actual),
                Verdict::Size { recorded, read } => (format!("{recorded} bytes"), format!("{read} bytes")),
                Verdict::Verified | Verdict::SizeOnly => {
                    verdicts.push(verdict);
                    continue;
                }
            };
            let _ = std::fs::remove_file(&dest);
            return Ok(Err(RestoreError::Corrupt { key, expected, actual }));
        }
        Ok(Ok(verdicts))
    });
    checked.await.map_err(io("verifying and placing downloads in the staging directory"))?
}
