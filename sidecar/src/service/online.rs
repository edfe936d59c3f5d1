//! `RestoreTables`: tables of a backup loaded into the running node, without a restart.
//!
//! Checked before anything is fetched or placed (the RPC fails with what to fix): the backup is
//! a complete backup of this node, the tables are in it, each one exists on the running node
//! under the same id (found by a flush-less snapshot of the table: Cassandra puts it in the
//! directory of the table it serves), unless `allow_new_table_id`. Then the job downloads this
//! node's files of those tables into staging on the data volume (every file hashed as a restore
//! does), places them by renames under unused generations ([`crate::restore::online`]) and asks
//! the node to load them (`nodetool refresh`, or the Management API's
//! `POST /api/v0/ops/keyspace/refresh`).
//!
//! Writes made after the backup keep winning where their timestamps are newer: a row updated or
//! deleted since stays so. To get a table exactly as it was, `TRUNCATE` it first.
//!
//! The job id is derived from the backup and the tables, so the same request after a crash (of
//! the job or the sidecar) resumes it: verified staged files are not fetched again and the
//! recorded placement is finished. A job's last state is kept in the state directory, so its
//! status survives a restart of the sidecar.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::backup::Engine;
use crate::bucket::node_backup;
use crate::format::names::BackupName;
use crate::restore::online::{self, Placement};
use crate::restore::place::Staging;
use crate::restore::plan::{self, Action, Selection};
use crate::service::status::RpcError;
use crate::transfer::Progress;

/// Keyspaces local to each node, which a running node must never have replaced under it.
const LOCAL_KEYSPACES: [&str; 4] = ["system", "system_schema", "system_views", "system_virtual_schema"];

/// Phases, as `RestoreTablesPhase` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Looking at the backup and the live tables.
    Checking,
    /// Fetching into staging.
    Downloading,
    /// Placing and refreshing.
    Loading,
    /// Finished.
    Done,
    /// Failed (see the error).
    Failed,
}

/// What `RestoreTablesStatus` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job id.
    pub job_id: String,
    /// Backup.
    pub backup_name: String,
    /// Requested tables.
    pub tables: Vec<String>,
    /// Phase.
    pub phase: Phase,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, 0 while running.
    pub finished_at: i64,
    /// Files to fetch and their bytes.
    pub files_total: u64,
    /// Bytes.
    pub bytes_total: u64,
    /// Files done.
    pub files_done: u64,
    /// Bytes done.
    pub bytes_done: u64,
    /// SSTables loaded into the node.
    pub sstables_loaded: u64,
}

struct Job {
    status: Mutex<JobStatus>,
    progress: Arc<Progress>,
}

/// One table to load.
#[derive(Debug, Clone)]
struct TableJob {
    keyspace: String,
    /// Table name.
    name: String,
    /// Its directory in the backup (`<name>-<id>`): its place in staging.
    backup_dir: String,
    /// The live directory.
    live: PathBuf,
}

/// The table of online restore jobs.
pub struct OnlineRestores {
    engine: Arc<Engine>,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Held while a request is checked and its job started: one start at a time, so that two
    /// requests cannot both find no job running.
    starting: tokio::sync::Mutex<()>,
    /// Where each job's last state is kept.
    dir: PathBuf,
    chunk: u64,
    concurrency: usize,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 222 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `ks` / `ks.table` names of a request, as a [`Selection`].
fn selection(tables: &[String]) -> Result<Selection, RpcError> {
    if tables.is_empty() {
        return Err(RpcError::Invalid("name at least one table: \"keyspace\" or \"keyspace.table\"".into()));
    }
    let mut sel = Selection::default();
    for t in tables {
        let (ks, table) = match t.split_once('.') {
            Some((k, n)) => (k, Some(n)),
            None => (t.as_str(), None),
        };
        if !identifier(ks) || table.is_some_and(|n| !identifier(n)) {
            return Err(RpcError::Invalid(format!(
                "{t:?} is not \"keyspace\" or \"keyspace.table\" (letters, digits and _ only)"
            )));
        }
        if LOCAL_KEYSPACES.contains(&ks) {
            return Err(RpcError::Invalid(format!(
                "{t}: keyspace {ks} is local to the node and cannot be loaded into a running one; restore it \
                 with the restore init container (RESTORE_KEYSPACES)"
            )));
        }
        match table {
            Some(_) => sel.tables.insert(t.clone()),
            None => sel.keyspaces.insert(ks.to_string()),
        };
    }
    Ok(sel)
}

/// Same backup and tables, same id: a rerun resumes.
fn job_id(backup: &BackupName, tables: &[String]) -> String {
    let set: BTreeSet<&str> = tables.iter().map(String::as_str).collect();
    let mut h = blake3::Hasher::new();
    h.update(backup.as_str().as_bytes());
    for t in set {
        h.update(b"\n");
        h.update(t.as_bytes());
    }
    format!("rt-{}", &h.finalize().to_hex()[..16])
}

impl OnlineRestores {
    /// The job table; jobs a previous process left running are reported failed (interrupted).
    pub fn open(engine: Arc<Engine>, chunk: u64, concurrency: usize) -> OnlineRestores {
        let dir = engine.state_dir.join("restore-tables");
        let mut jobs = HashMap::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else { continue };
            let Ok(mut st) = serde_json::from_slice::<JobStatus>(&bytes) else { continue };
            if !matches!(st.phase, Phase::Done | Phase::Failed) {
                st.phase = Phase::Failed;
                st.error = Some(
                    "interrupted: the sidecar stopped while the job ran; send the same RestoreTables request \
                     again to finish it (verified files are not fetched again)"
                        .into(),
                );
            }
            jobs.insert(st.job_id.clone(), Arc::new(Job { status: Mutex::new(st), progress: Default::default() }));
        }
        OnlineRestores {
            engine,
            jobs: Mutex::new(jobs),
            starting: tokio::sync::Mutex::new(()),
            dir,
            chunk,
            concurrency,
        }
    }

    /// A job's status.
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        let job = self.jobs.lock().unwrap().get(id).cloned()?;
        let mut st = job.status.lock().unwrap().clone();
        if st.phase == Phase::Downloading {
            st.files_done = job.progress.files_done.load(Ordering::Relaxed);
            st.bytes_done = job.progress.bytes_done.load(Ordering::Relaxed).min(st.bytes_total);
        }
        Some(st)
    }

    fn save(&self, st: &JobStatus) {
        let write = std::fs::create_dir_all(&self.dir).and_then(|_| {
            crate::fsutil::write_atomic(
                &self.dir.join(format!("{}.json", st.job_id)),
                &serde_json::to_vec(st).unwrap_or_default(),
            )
        });
        if let Err(e) = write {
            tracing::warn!(job = %st.job_id, error = %e, "cannot keep the restore-tables job's state");
        }
    }

    /// Checks the request and starts the job; returns its id at once.
    pub async fn start(
        self: &Arc<Self>,
        backup: &str,
        tables: &[String],
        allow_new_table_id: bool,
    ) -> Result<String, RpcError> {
        let backup = BackupName::new(backup)?;
        let sel = selection(tables)?;
        let id = job_id(&backup, tables);
        let requested = sorted(tables.to_vec());
        let _starting = self.starting.lock().await;
        {
            let jobs = self.jobs.lock().unwrap();
            for (other, j) in jobs.iter() {
                let phase = j.status.lock().unwrap().phase;
                if matches!(phase, Phase::Done | Phase::Failed) {
                    continue;
                }
                if *other == id {
                    return Ok(id);
                }
                return Err(RpcError::Precondition(format!(
                    "restore-tables job {other} is running on this node; wait until it ends"
                )));
            }
        }
        let e = &self.engine;
        let Some(bytes) = node_backup::manifest(&e.storage, &e.fqdn, &backup).await? else {
            return Err(RpcError::NoSuchBackup { name: backup, node: Some(e.fqdn.to_string()) });
        };
        let manifest = crate::format::manifest::parse(&bytes)
            .map_err(|err| RpcError::Precondition(format!("the manifest of backup {backup} is unreadable: {err}")))?;
        let mut planned = plan::plan(&manifest, true, &sel).map_err(RpcError::NotFound)?;
        // Only SSTable components at the table's top level: legacy index folders are rebuilt by
        // the node as it loads the SSTables.
        let mut tables_to_load = Vec::new();
        for t in &mut planned.tables {
            if let Action::Replace(files) = &mut t.action {
                files.retain(|f| f.file.index_dir.is_none() && online::ComponentName::parse(&f.file.name).is_some());
            }
            if !matches!(t.action, Action::Keep) {
                tables_to_load.push(t.clone());
            }
        }
        planned.tables = tables_to_load;
        planned.files = planned.tables.iter().map(|t| files_of(&t.action).len() as u64).sum();
        planned.bytes = planned.tables.iter().flat_map(|t| files_of(&t.action)).map(|f| f.size).sum();
        let mut tables = Vec::new();
        for t in &planned.tables {
            let name = t.table.split_once('-').map(|(n, _)| n).unwrap_or(&t.table).to_string();
            let live = self.live_dir(&id, &t.keyspace, &name).await?;
            let live_name = live.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let (backup_id, live_id) = (table_id(&t.table), table_id(&live_name));
            if backup_id != live_id && !allow_new_table_id {
                return Err(RpcError::Precondition(format!(
                    "table {}.{name} was dropped and created again since backup {backup} (id {backup_id} in the \
                     backup, {live_id} now); nothing was placed. Set allow_new_table_id to load the backup's \
                     SSTables into the new table",
                    t.keyspace
                )));
            }
            tables.push(TableJob { keyspace: t.keyspace.clone(), name, backup_dir: t.table.clone(), live });
        }
        let job = Arc::new(Job {
            status: Mutex::new(JobStatus {
                job_id: id.clone(),
                backup_name: backup.to_string(),
                tables: requested,
                phase: Phase::Downloading,
                error: None,
                started_at: now(),
                finished_at: 0,
                files_total: planned.files,
                bytes_total: planned.bytes,
                files_done: 0,
                bytes_done: 0,
                sstables_loaded: 0,
            }),
            progress: Default::default(),
        });
        self.save(&job.status.lock().unwrap());
        self.jobs.lock().unwrap().insert(id.clone(), job.clone());
        let me = self.clone();
        let job_id = id.clone();
        // A thread of its own driving the job on the runtime: the download's stream of borrowed
        // futures is not `Send` in general, which `tokio::spawn` needs.
        let runtime = tokio::runtime::Handle::current();
        let work = move || async move {
            let result = me.run(&job_id, &job, &planned, &tables).await;
            let st = {
                let mut st = job.status.lock().unwrap();
                match result {
                    Ok(()) => st.phase = Phase::Done,
                    Err(why) => {
                        tracing::error!(job = %job_id, error = %why, "restore-tables failed");
                        st.phase = Phase::Failed;
                        st.error = Some(why);
                    }
                }
                st.files_done = job.progress.files_done.load(Ordering::Relaxed).max(st.files_done);
                st.bytes_done = job.progress.bytes_done.load(Ordering::Relaxed).min(st.bytes_total).max(st.bytes_done);
                st.finished_at = now();
                st.clone()
            };
            me.save(&st);
        };
        std::thread::Builder::new()
            .name(format!("restore-tables {id}"))
            .spawn(move || runtime.block_on(work()))
            .map_err(|e| RpcError::Internal(format!("cannot start the job: {e}")))?;
        Ok(id)
    }

    /// The directory of the table the node serves, from a flush-less snapshot of it.
    async fn live_dir(&self, id: &str, ks: &str, table: &str) -> Result<PathBuf, RpcError> {
        let e = &self.engine;
        let tag = format!("medusa-rs-{id}-probe");
        let missing = |why: String| {
            RpcError::Precondition(format!(
                "table {ks}.{table} of the backup is not served by this node ({why}); create it first (the \
                 backup's schema.cql has its statement); nothing was placed"
            ))
        };
        e.cassandra.snapshot_table(&tag, ks, table).await.map_err(|err| missing(err.to_string()))?;
        let ks_dir = e.paths.data_dir.join(ks);
        let found = crate::fsutil::blocking({
            let (ks_dir, tag, table) = (ks_dir.clone(), tag.clone(), table.to_string());
            move || {
                let mut found = None;
                for entry in std::fs::read_dir(&ks_dir)? {
                    let p = entry?.path();
                    let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    if (name == table || name.starts_with(&format!("{table}-")))
                        && p.join("snapshots").join(&tag).is_dir()
                    {
                        found = Some(p);
                    }
                }
                Ok(found)
            }
        })
        .await;
        if let Err(err) = e.cassandra.clear_snapshot(&tag).await {
            tracing::warn!(tag, error = %err, "could not clear the probe snapshot");
        }
        match found {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(missing(format!("no directory under {} took the snapshot", ks_dir.display()))),
            Err(err) => Err(missing(format!("reading {}: {err}", ks_dir.display()))),
        }
    }

    fn set_phase(&self, job: &Job, phase: Phase) {
        let st = {
            let mut st = job.status.lock().unwrap();
            st.phase = phase;
            st.clone()
        };
        self.save(&st);
    }

    async fn run(&self, id: &str, job: &Job, planned: &plan::RestorePlan, tables: &[TableJob]) -> Result<(), String> {
        let e = &self.engine;
        let root = e.paths.root().join(".medusa-rs-restore-tables").join(id);
        std::fs::create_dir_all(&root).map_err(|err| format!("creating {}: {err}", root.display()))?;
        let staging = Staging::new(root.clone());
        let mut report = crate::restore::Report::default();
        crate::restore::download::download_all(
            planned,
            &staging,
            &e.transfers,
            self.chunk,
            self.concurrency,
            job.progress.clone(),
            &mut report,
        )
        .await
        .map_err(|err| err.to_string())?;
        self.set_phase(job, Phase::Loading);
        for t in tables {
            let staged = staging.table(&t.keyspace, &t.backup_dir);
            let record = root.join(format!("placement-{}.{}.json", t.keyspace, t.backup_dir));
            let placement = crate::fsutil::blocking({
                let (staged, live, record, t) = (staged.clone(), t.live.clone(), record.clone(), t.clone());
                move || place(&record, &t.keyspace, &t.name, &staged, &live)
            })
            .await
            .map_err(|err| format!("placing {}.{}: {err}", t.keyspace, t.name))?;
            if placement.waiting > 0 {
                e.cassandra
                    .refresh(&t.keyspace, &t.name)
                    .await
                    .map_err(|err| format!("loading the placed SSTables of {}.{}: {err}", t.keyspace, t.name))?;
            }
            let loaded = placement.waiting + placement.loaded;
            tracing::info!(job = id, table = %format!("{}.{}", t.keyspace, t.name), sstables = loaded, "loaded into the running node");
            job.status.lock().unwrap().sstables_loaded += loaded;
        }
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }
}

/// Plans the placement once (recorded durably before the first rename), then carries it out.
fn place(record: &Path, ks: &str, table: &str, staged: &Path, live: &Path) -> std::io::Result<online::Placed> {
    let placement: Placement = match std::fs::read(record) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let files: Vec<String> = match std::fs::read_dir(staged) {
                Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => return Err(err),
            };
            use std::os::unix::fs::MetadataExt;
            if !files.is_empty() && std::fs::metadata(staged)?.dev() != std::fs::metadata(live)?.dev() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::CrossesDevices,
                    format!("{} and {} are on different filesystems", staged.display(), live.display()),
                ));
            }
            let p = online::plan(ks, table, staged, live, &files).map_err(std::io::Error::other)?;
            crate::fsutil::write_atomic(record, &serde_json::to_vec(&p).map_err(std::io::Error::other)?)?;
            p
        }
        Err(err) => return Err(err),
    };
    online::apply(&placement)
}

fn files_of(a: &Action) -> &[plan::FetchFile] {
    match a {
        Action::Replace(f) => f,
        _ => &[],
    }
}

/// `<name>-<id>` → `<id>` (empty for a directory without one).
fn table_id(dir: &str) -> &str {
    dir.split_once('-').map(|(_, id)| id).unwrap_or("")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_tables_or_keyspaces_and_never_local_ones() {
        let s = selection(&["ks".into(), "ks2.t".into()]).unwrap();
        assert!(s.keyspaces.contains("ks") && s.tables.contains("ks2.t"));
        for bad in ["", "ks.", ".t", "ks.t.x", "k s", "ks/../t", "system.local", "system_schema"] {
            assert!(selection(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(selection(&[]).is_err());
        let b = BackupName::new("b1").unwrap();
        assert_eq!(job_id(&b, &["a.t".into(), "b".into()]), job_id(&b, &["b".into(), "a.t".into()]));
        assert_ne!(job_id(&b, &["a.t".into()]), job_id(&b, &["b".into()]));
    }
}
