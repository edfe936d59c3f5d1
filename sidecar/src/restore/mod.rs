//! The restore init container (contract §6.3-6.5), in stages: resolve the request (restore key, mapping,
//! source node) → read the node backup's manifest and plan → download to staging, verified
//! ([`download`]) → place by rename ([`place`]) → mark done.
//!
//! Crash safety: a journal in the staging directory records the phase ([`journal`]). Downloads
//! land as `*.part` files and are renamed to their final name only once verified; on resume a
//! staged file with its final name is hashed and checked again (not downloaded again), since
//! files are not fsynced one by one: the staging filesystem is flushed once (`syncfs`) before the
//! journal enters the placing phase. The data directory is first touched in the placing phase,
//! which every run finishes before `.last-restore` is written; Cassandra does not start until
//! then.

pub mod download;
pub mod journal;
pub mod mapping;
pub mod online;
pub mod place;
pub mod plan;
pub mod targets;
pub mod tokens;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::bucket::node_backup::{self, State};
use crate::config::Config;
use crate::config::cassandra_yaml::NodePaths;
use crate::format::layout::Meta;
use crate::format::names::{BackupName, Fqdn, RestoreKey};
use crate::store::{Storage, StorageError};
use crate::transfer::{TransferError, Transfers};
use journal::{Journal, Phase};
use mapping::RestoreMapping;
use place::Staging;

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
    /// `RESTORE_KEYSPACES` (comma list).
    pub keyspaces: Option<String>,
    /// `RESTORE_TABLES` (comma list of `keyspace.table`).
    pub tables: Option<String>,
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
            keyspaces: var("RESTORE_KEYSPACES"),
            tables: var("RESTORE_TABLES"),
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

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
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

/// A restore to carry out: what the environment and the mapping asked for.
struct Request {
    backup: BackupName,
    key: RestoreKey,
    paths: NodePaths,
    /// The node whose backup is restored.
    source: Fqdn,
    /// This node.
    target: Fqdn,
    /// What is restored (everything when empty).
    selection: plan::Selection,
    in_place: bool,
}

/// What the source node's backup holds for this restore.
struct Source {
    plan: plan::RestorePlan,
    /// The source node's tokens, for a restore into another ring.
    tokens: Option<Vec<String>>,
    /// Whether the backup is of a DSE node (`server_version.json`).
    dse: bool,
}

/// Runs the init container's job.
pub async fn run(cfg: &Config, env: RestoreEnv) -> Result<Outcome, RestoreError> {
    let started = Instant::now();
    let req = match resolve(cfg, &env)? {
        Ok(req) => req,
        Err(skip) => return Ok(Outcome::Skipped(skip)),
    };
    let storage = Storage::from_config(&cfg.storage)?;
    // A backup that is not there is an error, not a skip: a typo in BACKUP_NAME or a wrong
    // bucket or prefix would otherwise boot Cassandra on its old data as if restored.
    let Some(source) = read_source(&storage, &req).await? else {
        let (backup, source, bucket) = (&req.backup, &req.source, &cfg.storage.bucket_name);
        let prefix = cfg.storage.prefix.as_deref().map(|p| format!("prefix {p:?}")).unwrap_or("no prefix".into());
        return Err(RestoreError::Invalid(format!(
            "backup {backup} has no part for node {source} in bucket {bucket} ({prefix}); check BACKUP_NAME \
             and [storage] bucket_name and prefix in medusa.ini; nothing was touched"
        )));
    };
    let (staging, targets) = choose_staging(&req, &source.plan, env.tmp_dir.clone()).await?;
    let (backup, key, plan) = (&req.backup, &req.key, &source.plan);
    tracing::info!(%backup, %key, source = %req.source, target = %req.target, in_place = req.in_place, files = plan.files, bytes = plan.bytes, "restore starting");
    let report = stage(cfg, &storage, &req, &source, &staging).await?;
    finish(&req, &source, &staging, &targets).await?;
    let seconds = started.elapsed().as_secs_f64();
    let figures = figures(report.files, report.bytes, seconds, chrono::Utc::now().timestamp());
    if let Err(e) = crate::fsutil::write_atomic(&req.paths.state_dir().join("restore.prom"), figures.as_bytes()) {
        tracing::warn!(error = %e, "could not leave the restore figures for the sidecar's metrics");
    }
    tracing::info!(%backup, %key, files = report.files, bytes = report.bytes, downloaded = report.downloaded_files, seconds, "restore complete");
    Ok(Outcome::Restored(report))
}

/// The restore the environment asks for, or why there is nothing to do here (`Err` inside).
fn resolve(cfg: &Config, env: &RestoreEnv) -> Result<Result<Request, String>, RestoreError> {
    let (Some(backup), Some(key)) = (env.backup_name.clone(), env.restore_key.clone()) else {
        return Ok(Err("no restore requested (BACKUP_NAME or RESTORE_KEY is empty)".into()));
    };
    let backup = BackupName::new(backup).map_err(|e| RestoreError::Invalid(format!("BACKUP_NAME: {e}")))?;
    let key = RestoreKey::new(key).map_err(|e| RestoreError::Invalid(format!("RESTORE_KEY: {e}")))?;
    let paths = NodePaths::load(&cfg.cassandra.config_file).map_err(|e| RestoreError::Invalid(e.to_string()))?;
    let root = paths.root();
    let last = root.join(".last-restore");
    if std::fs::read_to_string(&last).is_ok_and(|k| k.trim() == key.as_str()) {
        journal::remove_finished(&key, env.tmp_dir.as_deref(), &root);
        return Ok(Err(format!("restore {key} was already done ({} says so)", last.display())));
    }
    let mapping =
        RestoreMapping::requested(env.mapping.as_deref(), &root, key.as_str()).map_err(RestoreError::Invalid)?;
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
            None => return Ok(Err(format!("pod {target} is not in the restore mapping; nothing to restore here"))),
        }
    };
    let selection =
        plan::Selection::parse(env.keyspaces.as_deref(), env.tables.as_deref()).map_err(RestoreError::Invalid)?;
    Ok(Ok(Request { backup, key, paths, source, target, in_place, selection }))
}

/// The source node's backup, read and planned; `None` when it has no part for that node.
async fn read_source(storage: &Storage, req: &Request) -> Result<Option<Source>, RestoreError> {
    let (backup, source) = (&req.backup, &req.source);
    let incomplete = || {
        RestoreError::Invalid(format!(
            "backup {backup} of node {source} is incomplete (no {}): it cannot be restored",
            storage.layout.meta(source, backup, Meta::Manifest)
        ))
    };
    let meta = |m| storage.layout.meta(source, backup, m);
    match node_backup::state(storage, source, backup).await? {
        // A manifest without `schema.cql` is what an interrupted deletion (or a partial copy)
        // leaves: the backup cannot be trusted whole, and the error names the missing object.
        State::Absent if storage.head(&meta(Meta::Manifest)).await?.is_some() => {
            return Err(RestoreError::Invalid(format!(
                "backup {backup} of node {source} has a manifest but no {}: it was partly deleted or                  copied incompletely and cannot be restored; nothing was touched",
                meta(Meta::Schema)
            )));
        }
        State::Absent => return Ok(None),
        State::Incomplete { .. } => return Err(incomplete()),
        State::Complete { .. } => {}
    }
    let manifest = node_backup::manifest(storage, source, backup).await?.ok_or_else(incomplete)?;
    let manifest = crate::format::manifest::parse(&manifest).map_err(|e| {
        let key = storage.layout.meta(source, backup, Meta::Manifest);
        RestoreError::Invalid(format!("the manifest {key} of {backup}/{source} is unreadable: {e}"))
    })?;
    let plan = plan::plan(&manifest, req.in_place, &req.selection).map_err(RestoreError::Invalid)?;
    let tokens = if req.in_place {
        None
    } else {
        let tm = node_backup::tokenmap(storage, source, backup).await?;
        let tm = crate::format::tokenmap::TokenMap::parse(&tm).map_err(|e| RestoreError::Invalid(e.to_string()))?;
        let tokens = tokens::checked(&tm, source.as_str(), &req.paths.yaml_path).map_err(|e| {
            RestoreError::Invalid(format!(
                "backup {backup} cannot be restored onto {}: {e}; nothing was touched",
                req.target
            ))
        })?;
        Some(tokens)
    };
    let version = storage.get_opt(&meta(Meta::ServerVersion)).await?.unwrap_or_default();
    let dse = crate::format::dse::server_type(&version) == "dse";
    Ok(Some(Source { plan, tokens, dse }))
}

/// Creates the data directory of a fresh volume, then picks the staging directory (the journal's
/// home) and a staging area on the filesystem of every table's destination, so that placing is
/// a rename everywhere; a layout that cannot be placed is refused here, before any download.
async fn choose_staging(
    req: &Request,
    plan: &plan::RestorePlan,
    tmp_dir: Option<PathBuf>,
) -> Result<(Staging, targets::Targets), RestoreError> {
    let (root, data_dir, key, plan) = (req.paths.root(), req.paths.data_dir.clone(), req.key.clone(), plan.clone());
    let metadata_dir = req.paths.metadata_dir.clone();
    let chosen = crate::fsutil::blocking(move || {
        if let Err(e) = targets::ensure_dir(&data_dir) {
            return Ok(Err(io("creating the data directory")(e)));
        }
        let staging = match journal::staging(&key, tmp_dir.as_deref(), &data_dir, &root) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let root = staging.root.clone();
        let chosen = targets::prepare(&plan, &data_dir, &metadata_dir, staging, &key);
        if chosen.is_err() {
            // Refused: leave no staging directory behind (one holding an earlier run's journal
            // is not empty and stays).
            let _ = std::fs::remove_dir(&root);
        }
        Ok(chosen)
    });
    chosen.await.map_err(io("choosing the staging directory"))?
}

/// Downloads and verifies everything into staging, unless an interrupted run got as far as
/// placing; the journal records each phase.
async fn stage(
    cfg: &Config,
    storage: &Storage,
    req: &Request,
    source: &Source,
    staging: &Staging,
) -> Result<Report, RestoreError> {
    let plan = &source.plan;
    let mut report = Report { files: plan.files, bytes: plan.bytes, ..Default::default() };
    let record = |phase| Journal {
        key: req.key.to_string(),
        backup: req.backup.to_string(),
        source: req.source.to_string(),
        target: Some(req.target.to_string()),
        in_place: Some(req.in_place),
        phase,
    };
    journal::discard_other(staging, &record(Phase::Downloading))?;
    let enter = |phase| journal::write(staging, &record(phase));
    if journal::read(staging).map(|j| j.phase) == Some(Phase::Placing) {
        tracing::info!("resuming an interrupted placement");
        return Ok(report);
    }
    let (p, s) = (plan.clone(), staging.clone());
    crate::fsutil::blocking(move || {
        let checked = targets::check_space(&p, &s);
        if checked.is_err() {
            let _ = std::fs::remove_dir(&s.root);
        }
        Ok(checked)
    })
    .await
    .map_err(io("checking the free space of the staging areas"))??;
    enter(Phase::Downloading)?;
    let transfers = Arc::new(Transfers::new(storage.clone(), &cfg.storage));
    let (chunk, concurrency) = (cfg.storage.multipart_chunksize, cfg.storage.concurrent_transfers);
    download::download_all(plan, staging, &transfers, chunk, concurrency, Default::default(), &mut report).await?;
    // The root's filesystem was flushed by the download; the areas are on others.
    for area in targets::areas(staging) {
        let a = area.clone();
        crate::fsutil::blocking(move || crate::fsutil::syncfs(&a))
            .await
            .map_err(io(format!("flushing the staged files in {} to disk", area.display())))?;
    }
    enter(Phase::Placing)?;
    Ok(report)
}

/// Places the staged tables, empties the commit log, saved caches and hints (creating them on a
/// fresh volume), writes the tokens of a restore into another ring, removes the staging areas
/// on other filesystems, then writes `.last-restore`, and removes staging.
async fn finish(
    req: &Request,
    source: &Source,
    staging: &Staging,
    targets: &targets::Targets,
) -> Result<(), RestoreError> {
    let paths = &req.paths;
    let (p, s, t, data_dir) = (source.plan.clone(), staging.clone(), targets.clone(), paths.data_dir.clone());
    crate::fsutil::blocking(move || place::place(&p, &s, &t, &data_dir))
        .await
        .map_err(io("placing the restored tables"))?;
    // DSE Search's index data is never in a backup: emptied, DSE rebuilds it from the tables.
    let search = paths.data_dir.join(crate::format::dse::SEARCH_DIR);
    let search = source.dse.then_some(&search);
    // A selective restore leaves the other tables running on: their unflushed writes in the
    // commit log and their hints stay (writes to the restored tables still in the commit log
    // are replayed and win by timestamp, as any later write). The caches are only caches.
    let logs = [&paths.commitlog_dir, &paths.hints_dir].into_iter().filter(|_| req.selection.is_all());
    for dir in [&paths.saved_caches_dir].into_iter().chain(logs).chain(search) {
        place::empty_dir(dir)
            .and_then(|()| targets::ensure_dir(dir))
            .map_err(io(format!("emptying {}", dir.display())))?;
    }
    if let Some(tokens) = &source.tokens {
        place::set_tokens(&paths.yaml_path, tokens)
            .map_err(io(format!("writing tokens into {}", paths.yaml_path.display())))?;
    }
    // Placed: what the areas still hold (old tables set aside) is garbage, and once
    // `.last-restore` is written no later run would look for them.
    let areas = targets::areas(staging);
    let _ = crate::fsutil::blocking(move || {
        for area in areas {
            if let Err(e) = std::fs::remove_dir_all(&area) {
                tracing::warn!(dir = %area.display(), error = %e, "could not remove a staging area");
            }
        }
        Ok(())
    })
    .await;
    let last = paths.root().join(".last-restore");
    crate::fsutil::write_atomic(&last, format!("{}\n", req.key).as_bytes())
        .map_err(io(format!("writing {}", last.display())))?;
    if let Err(e) = journal::remove(staging) {
        tracing::warn!(dir = %staging.root.display(), error = %e, "could not remove the staging directory");
    }
    Ok(())
}

/// The figures restore-init leaves in `<state dir>/restore.prom` for the sidecar to expose, in
/// Prometheus' text format.
pub fn figures(files: u64, bytes: u64, seconds: f64, at: i64) -> String {
    format!(
        "# HELP medusa_restore_files Files placed by the last restore.\n# TYPE medusa_restore_files gauge\nmedusa_restore_files {files}\n\
         # HELP medusa_restore_bytes Bytes placed by the last restore.\n# TYPE medusa_restore_bytes gauge\nmedusa_restore_bytes {bytes}\n\
         # HELP medusa_restore_duration_seconds Wall time of the last restore.\n# TYPE medusa_restore_duration_seconds gauge\nmedusa_restore_duration_seconds {seconds:.3}\n\
         # HELP medusa_restore_last_success_timestamp_seconds Finish time of the last restore (Unix seconds).\n# TYPE medusa_restore_last_success_timestamp_seconds gauge\nmedusa_restore_last_success_timestamp_seconds {at}\n"
    )
}
