//! The restore init container (§6.3-6.5): restore key and mapping → manifest → plan →
//! download to staging, verified → place by rename → mark done.
//!
//! Crash safety: a journal in the staging directory records the phase. Downloads land as
//! `*.part` files and are renamed to their final name only once verified; on resume a staged
//! file with its final name is hashed and checked again (not downloaded again), since files are
//! not fsynced one by one: the staging filesystem is flushed once (`syncfs`) before the journal
//! enters the placing phase. The data directory is first touched in the placing phase, which
//! every run finishes before `.last-restore` is written; Cassandra does not start until then.

pub mod mapping;
pub mod place;
pub mod plan;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::cassandra_yaml::NodePaths;
use crate::format::layout::Meta;
use crate::format::names::{BackupName, Fqdn, RestoreKey};
use crate::store::{Storage, StorageError};
use crate::transfer::{Download, Progress, TransferError, Transfers, batch_ranges};
use mapping::RestoreMapping;
use place::Staging;
use plan::{Action, FetchFile};
use verify::Verdict;

/// What the operator passes in the environment.
#[derive(Debug, Clone, Default)]
pub struct RestoreEnv {
    /// `BACKUP_NAME`.
    pub backup_name: Option<String>,
    /// `RESTORE_KEY`.
    pub restore_key: Option<String>,
    /// `RESTORE_MAPPING`.
    pub mapping: Option<String>,
    /// `POD_NAME`.
    pub pod_name: Option<String>,
    /// `MEDUSA_TMP_DIR`.
    pub tmp_dir: Option<PathBuf>,
}

impl RestoreEnv {
    /// Reads the variables (empty counts as unset).
    pub fn from_process() -> RestoreEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        RestoreEnv {
            backup_name: var("BACKUP_NAME"),
            restore_key: var("RESTORE_KEY"),
            mapping: var("RESTORE_MAPPING"),
            pod_name: var("POD_NAME"),
            tmp_dir: var("MEDUSA_TMP_DIR").map(PathBuf::from),
        }
    }
}

/// A restore failure: Cassandra must not start on this node.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Bad input (env, config, mapping).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A transfer failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// An object's bytes differ from its manifest entry.
    #[error(
        "object {key} is corrupt: the manifest records {expected}, the stored bytes give {actual}; the data directory was not touched"
    )]
    Corrupt {
        /// Key.
        key: String,
        /// Recorded hash.
        expected: String,
        /// Actual hash.
        actual: String,
    },
    /// An object of the manifest is not in the bucket.
    #[error("object {key} of the manifest is missing from the bucket; the data directory was not touched")]
    Missing {
        /// Key.
        key: String,
    },
    /// Not enough room to stage the backup.
    #[error("not enough free space in {dir}: the restore needs {needed} more bytes, {available} are free")]
    NoSpace {
        /// Staging directory.
        dir: PathBuf,
        /// Bytes still to download.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// Local disk work failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |source| RestoreError::Io { context: context.into(), source }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do, with the reason (exit 0).
    Skipped(String),
    /// Restored.
    Restored(Report),
}

/// Figures of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Files placed.
    pub files: u64,
    /// Bytes placed.
    pub bytes: u64,
    /// Files downloaded by this run (less on a resumed run).
    pub downloaded_files: u64,
    /// Files whose manifest has no usable hash (size checked only).
    pub size_only: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Downloading,
    Placing,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    key: String,
    backup: String,
    source: String,
    phase: Phase,
}

fn device(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.dev())
}

/// Runs the init container's job.
pub async fn run(cfg: &Config, env: RestoreEnv) -> Result<Outcome, RestoreError> {
    let started = Instant::now();
    let (Some(backup), Some(key)) = (env.backup_name.clone(), env.restore_key.clone()) else {
        return Ok(Outcome::Skipped("no restore requested (BACKUP_NAME or RESTORE_KEY is empty)".into()));
    };
    let backup = BackupName::new(backup).map_err(|e| RestoreError::Invalid(format!("BACKUP_NAME: {e}")))?;
    let key = RestoreKey::new(key).map_err(|e| RestoreError::Invalid(format!("RESTORE_KEY: {e}")))?;
    let paths = NodePaths::load(&cfg.cassandra.config_file).map_err(|e| RestoreError::Invalid(e.to_string()))?;
    let root = paths.root();
    let last = root.join(".last-restore");
    if std::fs::read_to_string(&last).is_ok_and(|k| k.trim() == key.as_str()) {
        return Ok(Outcome::Skipped(format!("restore {key} was already done ({} says so)", last.display())));
    }
    let mapping = match &env.mapping {
        Some(text) => RestoreMapping::parse(text).map_err(RestoreError::Invalid)?,
        None => match std::fs::read_to_string(root.join(".restore_mapping").join(key.as_str())) {
            Ok(text) => RestoreMapping::parse(&text).map_err(RestoreError::Invalid)?,
            Err(_) => RestoreMapping::default(),
        },
    };
    let target = match &env.pod_name {
        Some(p) => Fqdn::new(p.clone()).map_err(|e| RestoreError::Invalid(format!("POD_NAME: {e}")))?,
        None => cfg.fqdn().map_err(|e| RestoreError::Invalid(e.to_string()))?,
    };
    let in_place = mapping.is_in_place();
    let source = if in_place {
        target.clone()
    } else {
        match mapping.source_of(target.as_str()) {
            Some(s) => Fqdn::new(s).map_err(|e| RestoreError::Invalid(format!("RESTORE_MAPPING source: {e}")))?,
            None => {
                return Ok(Outcome::Skipped(format!(
                    "pod {target} is not in the restore mapping; nothing to restore here"
                )));
            }
        }
    };
    let storage = Storage::from_config(&cfg.storage)?;
    let l = &storage.layout;
    if storage.head(&l.meta(&source, &backup, Meta::Schema)).await?.is_none() {
        return Ok(Outcome::Skipped(format!(
            "backup {backup} has no part for node {source} in the bucket; nothing to restore"
        )));
    }
    let manifest = storage.get_opt(&l.meta(&source, &backup, Meta::Manifest)).await?.ok_or_else(|| {
        RestoreError::Invalid(format!(
            "backup {backup} of node {source} is incomplete (no manifest): it cannot be restored"
        ))
    })?;
    let manifest = crate::format::manifest::parse(&manifest)
        .map_err(|e| RestoreError::Invalid(format!("manifest of {backup}/{source} is unreadable: {e}")))?;
    let plan = plan::plan(&manifest, in_place).map_err(RestoreError::Invalid)?;
    let tokens = if in_place {
        None
    } else {
        let tm = storage.get_bytes(&l.meta(&source, &backup, Meta::Tokenmap)).await?;
        let tm = crate::format::tokenmap::TokenMap::parse(&tm).map_err(|e| RestoreError::Invalid(e.to_string()))?;
        Some(tm.node(source.as_str()).map(|n| n.tokens.clone()).unwrap_or_default())
    };

    let base = env.tmp_dir.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
    let base = if device(&base).is_some() && device(&base) == device(&paths.data_dir) { base } else { root.clone() };
    let staging = Staging { root: base.join(format!("medusa-restore-{key}")) };
    remove_stale_staging(&base, &staging.root);
    std::fs::create_dir_all(&staging.root).map_err(io(format!("creating {}", staging.root.display())))?;
    let journal = read_journal(&staging);
    tracing::info!(%backup, %key, source = %source, target = %target, in_place, files = plan.files, bytes = plan.bytes, "restore starting");

    let transfers = Arc::new(Transfers::new(storage.clone(), &cfg.storage));
    let mut report = Report { files: plan.files, bytes: plan.bytes, ..Default::default() };
    let enter = |phase| {
        let j = Journal { key: key.to_string(), backup: backup.to_string(), source: source.to_string(), phase };
        write_journal(&staging, &j)
    };
    if journal.map(|j| j.phase) != Some(Phase::Placing) {
        enter(Phase::Downloading)?;
        download_all(
            &plan,
            &staging,
            &transfers,
            cfg.storage.multipart_chunksize,
            cfg.storage.concurrent_transfers,
            &mut report,
        )
        .await?;
        enter(Phase::Placing)?;
    } else {
        tracing::info!("resuming an interrupted placement");
    }

    let data_dir = paths.data_dir.clone();
    let (p, s) = (plan.clone(), staging.clone());
    crate::fsutil::blocking(move || place::place(&p, &s, &data_dir))
        .await
        .map_err(io("placing the restored tables"))?;
    for dir in [&paths.commitlog_dir, &paths.saved_caches_dir, &paths.hints_dir] {
        place::empty_dir(dir).map_err(io(format!("emptying {}", dir.display())))?;
    }
    if let Some(tokens) = &tokens {
        place::set_tokens(&paths.yaml_path, tokens)
            .map_err(io(format!("writing tokens into {}", paths.yaml_path.display())))?;
    }
    crate::fsutil::write_atomic(&last, format!("{key}\n").as_bytes())
        .map_err(io(format!("writing {}", last.display())))?;
    if let Err(e) = std::fs::remove_dir_all(&staging.root) {
        tracing::warn!(dir = %staging.root.display(), error = %e, "could not remove the staging directory");
    }
    let seconds = started.elapsed().as_secs_f64();
    let figures =
        crate::service::metrics::restore_figures(report.files, report.bytes, seconds, chrono::Utc::now().timestamp());
    if let Err(e) =
        crate::fsutil::write_atomic(&crate::backup::state_dir(&paths).join("restore.prom"), figures.as_bytes())
    {
        tracing::warn!(error = %e, "could not leave the restore figures for the sidecar's metrics");
    }
    tracing::info!(%backup, %key, files = report.files, bytes = report.bytes, downloaded = report.downloaded_files, seconds, "restore complete");
    Ok(Outcome::Restored(report))
}

/// Removes staging directories that earlier restores (other keys) of medusa-rs left behind:
/// only those holding our journal, so that nothing else in a shared directory is touched.
fn remove_stale_staging(base: &Path, ours: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let stale = p != ours
            && e.file_name().to_string_lossy().starts_with("medusa-restore-")
            && read_journal(&Staging { root: p.clone() }).is_some();
        if stale {
            tracing::info!(dir = %p.display(), "removing the staging directory of an older restore");
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

fn read_journal(s: &Staging) -> Option<Journal> {
    std::fs::read(s.journal()).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_journal(s: &Staging, j: &Journal) -> Result<(), RestoreError> {
    crate::fsutil::write_atomic(&s.journal(), &serde_json::to_vec(j).expect("json"))
        .map_err(io("writing the restore journal"))
}

fn free_bytes(dir: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(dir).ok().map(|s| s.blocks_available() * s.fragment_size())
}

async fn download_all(
    plan: &plan::RestorePlan,
    staging: &Staging,
    transfers: &Arc<Transfers>,
    chunk: u64,
    concurrency: usize,
    report: &mut Report,
) -> Result<(), RestoreError> {
    let mut todo: Vec<(PathBuf, &FetchFile)> = Vec::with_capacity(plan.files as usize);
    let mut staged: Vec<(PathBuf, &FetchFile)> = Vec::new();
    let progress = Arc::new(Progress::default());
    for t in &plan.tables {
        if let Action::Replace(files) = &t.action {
            let dir = staging.table(&t.keyspace, &t.table);
            for f in files {
                let dest = dir.join(f.file.rel());
                // Only verified files carry their final name: checked again, not fetched again.
                if std::fs::metadata(&dest).is_ok_and(|m| m.len() == f.size) {
                    staged.push((dest, f));
                } else {
                    todo.push((dest, f));
                }
            }
        }
    }
    if !staged.is_empty() {
        let checks = staged.iter().map(|(dest, f)| {
            let (d, md5, size, part) =
                (dest.clone(), f.md5.clone(), f.size, verify::part_size_for(f.md5.as_deref(), chunk));
            crate::fsutil::blocking(move || verify::check_file(md5.as_deref(), size, part, &d))
        });
        let verdicts: Vec<_> = futures::stream::iter(checks).buffered(concurrency.max(1)).collect().await;
        let mut kept = 0;
        for ((dest, f), verdict) in staged.into_iter().zip(verdicts) {
            if matches!(verdict, Ok(Verdict::Verified | Verdict::SizeOnly)) {
                progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
                kept += 1;
            } else {
                let _ = std::fs::remove_file(&dest);
                todo.push((dest, f));
            }
        }
        tracing::info!(files = kept, "staged files of the interrupted run checked and kept");
    }
    let needed: u64 = todo.iter().map(|(_, f)| f.size).sum();
    if let Some(available) = free_bytes(&staging.root)
        && needed > available
    {
        return Err(RestoreError::NoSpace { dir: staging.root.clone(), needed, available });
    }
    progress.bytes_total.store(plan.bytes, Ordering::Relaxed);
    let logger = tokio::spawn(log_progress(progress.clone()));
    let width = concurrency.max(1) * 2;
    let batches = batch_ranges(todo.iter().map(|(_, f)| f.size), transfers.batch_limits());
    let results: Vec<Vec<Verdict>> =
        futures::stream::iter(batches.into_iter().map(|b| fetch_batch(transfers, &todo[b], chunk, &progress)))
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

/// Fetches a batch of files: each is downloaded to a `.part` file beside its place, checked
/// against the manifest, and only then renamed to its final name.
async fn fetch_batch(
    transfers: &Transfers,
    batch: &[(PathBuf, &FetchFile)],
    chunk: u64,
    progress: &Arc<Progress>,
) -> Result<Vec<Verdict>, RestoreError> {
    let part_of = |dest: &Path| {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        dest.with_file_name(format!(".{name}.part"))
    };
    let downloads = batch
        .iter()
        .map(|(dest, f)| Download {
            key: f.key.clone(),
            dest: part_of(dest),
            part: verify::part_size_for(f.md5.as_deref(), chunk),
        })
        .collect();
    let digests = match transfers.download_files(downloads, progress).await {
        Ok(d) => d,
        Err(TransferError::Storage(StorageError::NotFound { key })) => return Err(RestoreError::Missing { key }),
        Err(e) => return Err(e.into()),
    };
    let files: Vec<_> =
        batch.iter().map(|(dest, f)| (dest.clone(), part_of(dest), f.key.clone(), f.size, f.md5.clone())).collect();
    let checked = crate::fsutil::blocking(move || {
        let mut verdicts = Vec::with_capacity(files.len());
        for ((dest, part, key, size, md5), digest) in files.into_iter().zip(digests) {
            let verdict = verify::judge(md5.as_deref(), size, &digest, &part)?;
            if let Verdict::Mismatch { expected, actual } = verdict {
                let _ = std::fs::remove_file(&part);
                return Ok(Err(RestoreError::Corrupt { key, expected, actual }));
            }
            std::fs::rename(&part, &dest)?;
            verdicts.push(verdict);
        }
        Ok(Ok(verdicts))
    });
    checked.await.map_err(io("verifying and placing downloads in the staging directory"))?
}

async fn log_progress(p: Arc<Progress>) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (done, total) = (p.bytes_done.load(Ordering::Relaxed), p.bytes_total.load(Ordering::Relaxed));
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { (total.saturating_sub(done)) as f64 / rate } else { f64::INFINITY };
        tracing::info!(
            bytes_done = done,
            bytes_total = total,
            mib_per_s = format!("{:.1}", rate / 1048576.0),
            eta_s = format!("{eta:.0}"),
            "restore progress"
        );
    }
}
