//! Backup jobs of the sidecar: accepted at once, run one at a time outside any RPC handler,
//! journalled on local disk at every state change so that a restart can tell the truth.
//!
//! Policy (documented in the README): AsyncBackup for a name that is queued or running is
//! idempotent; a different name while one runs is queued (FIFO, at most [`MAX_QUEUED`]) and
//! reported IN_PROGRESS; after a crash or kill, a job that was queued or running is FAILED with
//! the reason, its snapshot is cleared and a failure marker is written to storage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupError, BackupReport, Engine};

/// How long a restarted sidecar waits for storage to settle a backup it was running.
const RECOVERY_CHECK: Duration = Duration::from_secs(10);
use crate::bucket::node_backup::{self, State};
use crate::format::layout::Mode;
use crate::format::names::BackupName;
use crate::transfer::Progress;

/// Jobs waiting behind the running one, at most.
pub const MAX_QUEUED: usize = 8;
/// Finished jobs whose journal is kept.
const KEEP_FINISHED: usize = 200;
/// After a cancel, how long a backup may take to stop at a file boundary before it is dropped.
const HARD_STOP: Duration = Duration::from_secs(10);

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the running backup.
    Queued,
    /// Running.
    Running,
    /// Complete.
    Success,
    /// Failed; see `error`.
    Failed,
}

/// A job as journalled and reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// Backup name.
    pub name: String,
    /// `full` / `differential`.
    pub mode: String,
    /// State.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether trying the backup again later can succeed (storage or Cassandra unavailable).
    #[serde(default)]
    pub retryable: bool,
    /// Whether it failed because a backup of that name is already stored for this node.
    #[serde(default)]
    pub name_taken: bool,
    /// When it was accepted (epoch seconds, local clock).
    pub accepted: i64,
    /// When it finished.
    pub finished: Option<i64>,
    /// Progress: bytes done/total, files done/total (not journalled).
    #[serde(skip)]
    pub progress: (u64, u64, u64, u64),
}

impl JobView {
    /// A view of a job accepted now, in `state`.
    fn new(name: &BackupName, mode: Mode, state: JobState) -> JobView {
        JobView {
            name: name.to_string(),
            mode: mode.as_str().into(),
            state,
            error: None,
            retryable: false,
            name_taken: false,
            accepted: now(),
            finished: None,
            progress: (0, 0, 0, 0),
        }
    }
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The sidecar is shutting down.
    #[error("the sidecar is shutting down; retry on the restarted container")]
    ShuttingDown,
    /// Too many queued.
    #[error("{0} backups are already waiting; retry when one has finished")]
    QueueFull(usize),
    /// A backup of that name exists but did not complete.
    #[error("backup {name} exists on this node but is incomplete ({why}); delete it or choose another name")]
    Incomplete {
        /// The name.
        name: String,
        /// Known reason.
        why: String,
    },
}

struct Handle {
    view: Mutex<JobView>,
    progress: Arc<Progress>,
    done: watch::Sender<bool>,
    cancel: CancellationToken,
}

impl Handle {
    fn view(&self) -> JobView {
        let mut v = self.view.lock().expect("job lock").clone();
        let p = &self.progress;
        v.progress = (
            p.bytes_done.load(Ordering::Relaxed),
            p.bytes_total.load(Ordering::Relaxed),
            p.files_done.load(Ordering::Relaxed),
            p.files_total.load(Ordering::Relaxed),
        );
        v
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The job table.
pub struct Jobs {
    engine: Arc<Engine>,
    dir: PathBuf,
    table: Mutex<HashMap<String, Arc<Handle>>>,
    slot: Arc<tokio::sync::Mutex<()>>,
    accepting: AtomicBool,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Jobs {
    /// Loads the journal from `<state_dir>/jobs`. Jobs that were queued or running when the
    /// previous process stopped become FAILED; [`Jobs::clean_up_recovered`] clears what they
    /// left behind.
    pub fn recover(engine: Arc<Engine>) -> std::io::Result<(Jobs, Vec<String>)> {
        let dir = engine.state_dir.join("jobs");
        std::fs::create_dir_all(&dir)?;
        let mut table = HashMap::new();
        let mut interrupted = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(mut view) =
                std::fs::read(&path).map_err(drop).and_then(|b| serde_json::from_slice::<JobView>(&b).map_err(drop))
            else {
                tracing::warn!(path = %path.display(), "ignoring an unreadable job journal entry");
                continue;
            };
            if matches!(view.state, JobState::Queued | JobState::Running) {
                // Decided by [`Jobs::clean_up_recovered`] from what storage holds: a backup
                // killed after its manifest was written is complete, not failed.
                view.state = JobState::Running;
                interrupted.push(view.name.clone());
            }
            let (done, _) = watch::channel(true);
            table.insert(
                view.name.clone(),
                Arc::new(Handle {
                    view: Mutex::new(view),
                    progress: Arc::default(),
                    done,
                    cancel: CancellationToken::new(),
                }),
            );
        }
        let jobs = Jobs {
            engine,
            dir,
            table: Mutex::new(table),
            slot: Arc::new(tokio::sync::Mutex::new(())),
            accepting: AtomicBool::new(true),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        };
        Ok((jobs, interrupted))
    }

    /// Settles the jobs a previous process left queued or running: a node backup whose manifest
    /// is in storage is complete (the process died after writing it), so its index entries and
    /// latest pointer are written if missing and the job is SUCCESS; any other is FAILED and
    /// marked failed in storage. Storage gets [`RECOVERY_CHECK`] to answer; without an answer
    /// the job is FAILED. The snapshots are cleared either way (errors logged: the janitor tries
    /// again).
    pub async fn clean_up_recovered(&self, names: &[String]) {
        let (s, n) = (&self.engine.storage, &self.engine.fqdn);
        for name in names {
            let Some(h) = self.table.lock().expect("jobs lock").get(name).cloned() else { continue };
            let Ok(b) = BackupName::new(name.clone()) else {
                self.set(&h, JobState::Failed, Some("the sidecar stopped while this backup was running".into()));
                continue;
            };
            let settled = tokio::time::timeout(RECOVERY_CHECK, async {
                match node_backup::state(s, n, &b).await? {
                    State::Complete { .. } => node_backup::republish(s, n, &b).await.map(|_| true),
                    _ => Ok(false),
                }
            })
            .await;
            match settled {
                Ok(Ok(true)) => {
                    tracing::info!(backup = %name, "a backup interrupted by a restart had completed in storage: SUCCESS");
                    self.set(&h, JobState::Success, None);
                }
                other => {
                    let why = match other {
                        Ok(Err(e)) => format!(" (storage could not be checked: {e})"),
                        Err(_) => format!(" (storage did not answer within {} s)", RECOVERY_CHECK.as_secs()),
                        _ => String::new(),
                    };
                    let reason = format!("the sidecar stopped while this backup was running (killed or crashed){why}");
                    tracing::warn!(backup = %name, "backup interrupted by a restart: marked FAILED");
                    self.set(&h, JobState::Failed, Some(reason.clone()));
                    self.mark_failed_in_storage(&b, &reason).await;
                }
            }
            if let Err(e) = self.engine.cassandra.clear_snapshot(&crate::backup::snapshot::tag_for(&b)).await {
                tracing::warn!(backup = %name, error = %e, "could not clear the snapshot of an interrupted backup");
            }
        }
    }

    /// Marks the node backup failed in storage, so that every node reports it FAILED; a
    /// failure to do so is logged (GetBackups on this node still reports it from the journal).
    async fn mark_failed_in_storage(&self, b: &BackupName, reason: &str) {
        let (s, n) = (&self.engine.storage, &self.engine.fqdn);
        if let Err(e) = node_backup::mark_failed(s, n, b, reason).await {
            tracing::warn!(backup = %b, error = %e, "could not mark the failed backup in storage");
        }
    }

    fn journal(&self, view: &JobView) {
        let path = self.dir.join(format!("{}.json", view.name));
        if let Err(e) = crate::fsutil::write_atomic(&path, &serde_json::to_vec(view).expect("json")) {
            tracing::error!(backup = %view.name, error = %e, "could not journal the job state");
        }
    }

    fn set(&self, h: &Handle, state: JobState, error: Option<String>) {
        let view = {
            let mut v = h.view.lock().expect("job lock");
            v.state = state;
            v.error = error;
            if matches!(state, JobState::Success | JobState::Failed) {
                v.finished = Some(now());
            }
            v.clone()
        };
        self.journal(&view);
        match &view.error {
            Some(e) => tracing::warn!(backup = %view.name, state = ?state, error = %e, "backup job state"),
            None => tracing::info!(backup = %view.name, state = ?state, "backup job state"),
        }
    }

    /// The job of `name`, if this sidecar knows it.
    pub fn get(&self, name: &str) -> Option<JobView> {
        self.table.lock().expect("jobs lock").get(name).map(|h| h.view())
    }

    /// True while `name` is queued or running here.
    pub fn is_active(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| matches!(v.state, JobState::Queued | JobState::Running))
    }

    /// When the last successful backup of the journal finished.
    pub fn last_success(&self) -> Option<i64> {
        let table = self.table.lock().expect("jobs lock");
        table.values().map(|h| h.view()).filter(|v| v.state == JobState::Success).filter_map(|v| v.finished).max()
    }

    /// True while any job is queued or running.
    pub fn any_active(&self) -> bool {
        self.table
            .lock()
            .expect("jobs lock")
            .values()
            .any(|h| matches!(h.view.lock().expect("job lock").state, JobState::Queued | JobState::Running))
    }

    /// Clears medusa snapshots no backup owns, unless a backup runs (a snapshot Cassandra
    /// finished after a killed sidecar's restart had cleared it would otherwise stay until the
    /// next backup).
    pub async fn clear_stale_snapshots(&self) {
        if let Some(_slot) = self.try_exclusive() {
            self.engine.clear_stale_snapshots(None).await;
        }
    }

    /// The node's backup slot, if no backup runs: while held, none starts (they queue).
    pub fn try_exclusive(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.slot.clone().try_lock_owned().ok()
    }

    /// Forgets a finished job (its backup was deleted).
    pub fn forget(&self, name: &str) {
        if !self.is_active(name) {
            self.table.lock().expect("jobs lock").remove(name);
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.json")));
        }
    }

    /// What storage says about a backup this table does not know: SUCCESS when complete, an
    /// error when incomplete (the name is taken), `None` when absent.
    /// Accepts a backup (or recognises it) and returns its current view at once.
    pub async fn submit(self: &Arc<Self>, name: BackupName, mode: Mode) -> Result<JobView, SubmitError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if let Some(v) = self.get(name.as_str()) {
            match v.state {
                // A re-sent request while the job lives: the same job (idempotent).
                JobState::Queued | JobState::Running => return Ok(v),
                JobState::Failed if !v.name_taken => {
                    return Err(SubmitError::Incomplete { name: name.to_string(), why: v.error.unwrap_or_default() });
                }
                // Finished here before (or refused as taken): a new request for a taken name (a
                // re-created MedusaBackupJob). It runs as a new job, which refuses to touch the
                // stored backup (`BackupError::AlreadyExists`) and so reports FAILED: the
                // operator's job fails instead of "succeeding" on the old data.
                JobState::Success | JobState::Failed => {}
            }
        }
        // No storage look-up here: the operator calls AsyncBackup pod after pod in one
        // reconcile, so every wait on a slow bucket would be paid once per pod. The job checks
        // the name first thing (within its retry budget) and fails without writing anything
        // when a backup of that name, complete or not, is stored for this node.
        let handle = {
            let mut table = self.table.lock().expect("jobs lock");
            if let Some(h) = table.get(name.as_str())
                && matches!(h.view.lock().expect("job lock").state, JobState::Queued | JobState::Running)
            {
                return Ok(h.view());
            }
            let queued = table.values().filter(|h| h.view.lock().expect("job lock").state == JobState::Queued).count();
            if queued >= MAX_QUEUED {
                return Err(SubmitError::QueueFull(queued));
            }
            let view = JobView::new(&name, mode, JobState::Queued);
            let (done, _) = watch::channel(false);
            let h = Arc::new(Handle {
                view: Mutex::new(view),
                progress: Arc::default(),
                done,
                cancel: CancellationToken::new(),
            });
            table.insert(name.to_string(), h.clone());
            h
        };
        self.journal(&handle.view());
        tracing::info!(backup = %name, mode = mode.as_str(), "backup job accepted");
        crate::service::metrics::global().backup_started(mode.as_str());
        let jobs = self.clone();
        let h = handle.clone();
        self.tasks.lock().expect("tasks lock").spawn(async move { jobs.run(name, mode, h).await });
        self.prune();
        Ok(handle.view())
    }

    async fn run(&self, name: BackupName, mode: Mode, h: Arc<Handle>) {
        let slot = tokio::select! {
            g = self.slot.clone().lock_owned() => Some(g),
            _ = h.cancel.cancelled() => None,
        };
        let result = match slot {
            None => Err(BackupError::Cancelled("the sidecar shut down before the backup started".into())),
            Some(_guard) => self.run_in_slot(&name, mode, &h).await,
        };
        match result {
            Ok(report) => {
                tracing::info!(
                    backup = %name, files = report.files, bytes = report.bytes,
                    uploaded_files = report.uploaded_files, uploaded_bytes = report.uploaded_bytes,
                    seconds = report.seconds, "backup complete"
                );
                self.set(&h, JobState::Success, None);
                // The journal's finish time: what the gauge is restored from after a restart.
                let finished = h.view().finished.unwrap_or(report.finished);
                crate::service::metrics::global().backup_succeeded(
                    mode.as_str(),
                    report.seconds,
                    report.uploaded_bytes,
                    report.uploaded_files,
                    report.bytes,
                    report.files,
                    finished,
                );
            }
            Err(e) => {
                // The state changes first: marking storage may wait on the very outage that
                // failed the backup.
                let reason = e.to_string();
                crate::service::metrics::global().backup_failed(mode.as_str());
                {
                    let mut v = h.view.lock().expect("job lock");
                    v.retryable = e.is_retryable();
                    v.name_taken = matches!(e, BackupError::AlreadyExists(_));
                }
                self.set(&h, JobState::Failed, Some(reason.clone()));
                h.done.send_replace(true);
                if !matches!(e, BackupError::AlreadyExists(_)) {
                    self.mark_failed_in_storage(&name, &reason).await;
                }
                return;
            }
        }
        h.done.send_replace(true);
    }

    /// Runs the backup while holding the node's backup slot. After a cancel, the backup gets
    /// [`HARD_STOP`] to stop at a file boundary before it is dropped.
    async fn run_in_slot(&self, name: &BackupName, mode: Mode, h: &Handle) -> Result<BackupReport, BackupError> {
        self.set(h, JobState::Running, None);
        crate::service::metrics::global().backup_running(h.progress.clone());
        let logger = tokio::spawn(crate::transfer::progress::log_every(h.progress.clone(), "backup progress"));
        let _stop_logging = AbortOnDrop(logger);
        let fut = self.engine.backup(name, mode, h.progress.clone(), h.cancel.clone());
        tokio::pin!(fut);
        let cancel = h.cancel.clone();
        let hard_stop = async move {
            cancel.cancelled().await;
            tokio::time::sleep(HARD_STOP).await;
        };
        let r = tokio::select! {
            r = &mut fut => r,
            _ = hard_stop => Err(BackupError::Cancelled("stopped by shutdown in the middle of a transfer".into())),
        };
        if matches!(r, Err(BackupError::Cancelled(_))) {
            // The backup may have been dropped mid-way: make sure its snapshot is gone.
            let _ = self.engine.cassandra.clear_snapshot(&crate::backup::snapshot::tag_for(name)).await;
        }
        r
    }

    /// Waits until `name` is finished and returns its final view.
    pub async fn wait(&self, name: &str) -> Option<JobView> {
        let h = self.table.lock().expect("jobs lock").get(name).cloned()?;
        let mut rx = h.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
        Some(h.view())
    }

    /// Stops accepting jobs, lets running ones finish for up to `grace`, then cancels them
    /// (they fail, clear their snapshot and mark themselves failed) and waits for them.
    pub async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        // Queued jobs never start.
        for h in self.table.lock().expect("jobs lock").values() {
            if h.view.lock().expect("job lock").state == JobState::Queued {
                h.cancel.cancel();
            }
        }
        let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(grace_seconds = grace.as_secs(), "backup still running at shutdown: stopping it");
            for h in self.table.lock().expect("jobs lock").values() {
                h.cancel.cancel();
            }
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Keeps the journal small: drops the oldest finished entries beyond [`KEEP_FINISHED`].
    fn prune(&self) {
        let mut table = self.table.lock().expect("jobs lock");
        let mut finished: Vec<(i64, String)> = table
            .values()
            .map(|h| h.view.lock().expect("job lock").clone())
            .filter(|v| matches!(v.state, JobState::Success | JobState::Failed))
            .map(|v| (v.finished.unwrap_or(v.accepted), v.name))
            .collect();
        if finished.len() <= KEEP_FINISHED {
            return;
        }
        finished.sort();
        for (_, name) in finished.iter().take(finished.len() - KEEP_FINISHED) {
            table.remove(name);
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.json")));
        }
    }
}
