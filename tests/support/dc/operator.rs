//! k8ssandra-operator's Medusa controllers (MedusaBackupJob, MedusaTask, MedusaRestoreJob)
//! restated over the generated gRPC client, one reconcile loop each, with the requeue delay
//! shortened and every wait bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use medusa::service::pb::{self, StatusType};

use super::hostmap::{pair_racks, validate_backup_for_restore};
use super::pod::{Client, endpoint, wait_init};
use super::resources::{now, status_name};
use super::{
    BackupJob, Datacenter, MedusaBackup, Pod, PrepareTask, PurgeTask, RestoreJob, RestoreMapping, SyncTask, TaskResult,
    go_error, humanize, uuid4,
};

/// k8ssandra-operator's Medusa controllers for one CassandraDatacenter, with the MedusaBackup
/// objects of its namespace.
pub struct Operator<'a> {
    dc: &'a Datacenter,
    /// `REQUEUE_DEFAULT_DELAY` (the operator's default is 15 s).
    pub requeue: Duration,
    /// Longest any one job or task may take before the test fails.
    pub timeout: Duration,
    backups: Mutex<BTreeMap<String, MedusaBackup>>,
    log: Mutex<Vec<String>>,
}

/// How one `BackupStatus` poll came out for the operator.
enum Polled {
    Known(StatusType),
    /// A status value outside the enum: the operator's switch drops the pod.
    Other(i32),
}

impl<'a> Operator<'a> {
    /// The controllers for `dc`: requeue after 200 ms, jobs bounded by two minutes.
    pub fn new(dc: &'a Datacenter) -> Operator<'a> {
        Operator {
            dc,
            requeue: Duration::from_millis(200),
            timeout: Duration::from_secs(120),
            backups: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
        }
    }

    /// The MedusaBackup objects of the namespace.
    pub fn medusa_backups(&self) -> BTreeMap<String, MedusaBackup> {
        self.backups.lock().unwrap().clone()
    }

    /// What the operator logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    /// `newClient`: a fresh connection per operation, dialled lazily as `grpc.NewClient` does
    /// (an unreachable pod fails the RPC, not the client).
    fn client(&self, pod: &Pod) -> Result<Client, String> {
        let ep = endpoint(pod).map_err(|e| e.to_string())?;
        Ok(Client::new(ep.connect_lazy()).max_decoding_message_size(512 << 20))
    }

    async fn get_backups(&self, pod: &Pod) -> Result<Vec<pb::BackupSummary>, String> {
        let mut c = self.client(pod)?;
        match c.get_backups(pb::GetBackupsRequest {}).await {
            Ok(r) => Ok(r.into_inner().backups),
            Err(e) => Err(format!("failed to get backups: {}", go_error(&e))),
        }
    }

    // --- MedusaBackupJob ----------------------------------------------------------------------

    /// A MedusaBackupJob named `name` of `backup_type` (`full` / `differential`), reconciled to
    /// its end: AsyncBackup on each pod in turn (errors only logged), BackupStatus rounds every
    /// requeue until no pod is in progress, then, if no pod failed, the first GetBackups summary
    /// of that name (pods in order) becomes a MedusaBackup.
    pub async fn backup_job(&self, name: &str, backup_type: &str) -> Result<BackupJob> {
        let started = now();
        let deadline = Instant::now() + self.timeout;
        let mut job = BackupJob::default();
        let mut in_progress = Vec::new();
        for pod in &self.dc.pods {
            let mode = if backup_type == "full" {
                pb::backup_request::Mode::Full
            } else {
                pb::backup_request::Mode::Differential
            };
            let request = pb::BackupRequest { name: name.to_string(), mode: mode as i32 };
            let sent = match self.client(pod) {
                Ok(mut c) => c.async_backup(request).await.map(drop).map_err(|e| go_error(&e)),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                self.note(format!("backup failed (pod {}): {e}", pod.name));
            }
            in_progress.push(pod.name.clone());
        }
        while !in_progress.is_empty() {
            ensure!(
                Instant::now() < deadline,
                "MedusaBackupJob {name}: still in progress on {in_progress:?} after {:?}; operator log: {:?}\n{}",
                self.timeout,
                self.log(),
                self.dc.log_tail(30)
            );
            tokio::time::sleep(self.requeue).await;
            match self.status_round(name, &in_progress).await {
                Ok((progress, finished, failed)) => {
                    in_progress = progress;
                    job.finished.extend(finished);
                    job.failed.extend(failed);
                    job.rounds += 1;
                }
                Err(e) => {
                    self.note(format!("reconcile error: {e}"));
                    job.reconcile_errors.push(e);
                }
            }
        }
        if !job.failed.is_empty() {
            self.note(format!("Backup failed on some nodes: {:?}", job.failed));
            return Ok(job);
        }
        loop {
            match self.backup_summary(name).await {
                Ok(Some(summary)) => {
                    job.backup = Some(self.create_medusa_backup(&summary, backup_type, started));
                    job.summary = Some(summary);
                    return Ok(job);
                }
                Ok(None) => {
                    job.terminal_error = Some("backup summary couldn't be found".into());
                    return Ok(job);
                }
                Err(e) => {
                    self.note(format!("Failed to get backup summary: {e}"));
                    job.reconcile_errors.push(e);
                    ensure!(Instant::now() < deadline, "MedusaBackupJob {name}: no summary in time: {:?}", self.log());
                    tokio::time::sleep(self.requeue).await;
                }
            }
        }
    }

    /// One reconcile's status check: pods still in progress, finished, failed. The first RPC
    /// error that is not a `NotFound` aborts the round (nothing of it is kept), as the
    /// reconcile returns the error before patching the status.
    async fn status_round(
        &self,
        name: &str,
        in_progress: &[String],
    ) -> Result<(Vec<String>, Vec<String>, Vec<String>), String> {
        let (mut progress, mut finished, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for pod_name in in_progress {
            let Some(pod) = self.dc.pods.iter().find(|p| &p.name == pod_name) else { continue };
            match self.backup_status(name, pod).await? {
                Polled::Known(StatusType::InProgress) => progress.push(pod_name.clone()),
                Polled::Known(StatusType::Success) => finished.push(pod_name.clone()),
                Polled::Known(StatusType::Failed | StatusType::Unknown) => failed.push(pod_name.clone()),
                Polled::Other(v) => self.note(format!("pod {pod_name}: status value {v} matches no case; dropped")),
            }
        }
        Ok((progress, finished, failed))
    }

    async fn backup_status(&self, name: &str, pod: &Pod) -> Result<Polled, String> {
        let mut c = self.client(pod)?;
        match c.backup_status(pb::BackupStatusRequest { backup_name: name.to_string() }).await {
            Ok(r) => {
                let v = r.into_inner().status;
                Ok(StatusType::try_from(v).map_or(Polled::Other(v), Polled::Known))
            }
            Err(e) => {
                let text = go_error(&e);
                if text.contains("NotFound") {
                    self.note(format!("did not find backup {name} for pod {}", pod.name));
                    return Ok(Polled::Known(StatusType::Unknown));
                }
                Err(format!("getting backup status for backup {name} and pod {} failed: {text}", pod.name))
            }
        }
    }

    /// `getBackupSummary`: pods in order, the first summary named `name`; an RPC error aborts.
    async fn backup_summary(&self, name: &str) -> Result<Option<pb::BackupSummary>, String> {
        for pod in &self.dc.pods {
            let all = self.get_backups(pod).await?;
            if let Some(s) = all.into_iter().find(|s| s.backup_name == name) {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn create_medusa_backup(&self, s: &pb::BackupSummary, backup_type: &str, started: i64) -> MedusaBackup {
        let b = MedusaBackup {
            name: s.backup_name.clone(),
            cassandra_datacenter: self.dc.spec.object_name.clone(),
            backup_type: backup_type.to_string(),
            start_time: started,
            finish_time: now(),
            total_nodes: s.total_nodes,
            finished_nodes: s.finished_nodes,
            total_files: s.total_objects,
            total_size: humanize(s.total_size),
            nodes: s.nodes.clone(),
            status: status_name(s.status),
        };
        self.backups.lock().unwrap().entry(b.name.clone()).or_insert(b).clone()
    }

    // --- MedusaTask ---------------------------------------------------------------------------

    /// A `sync` MedusaTask: GetBackups on the first pod that answers; a MedusaBackup for every
    /// SUCCESS summary that has none; MedusaBackups of this datacenter absent from the answer
    /// deleted (present with any status: kept).
    pub async fn sync_task(&self) -> Result<SyncTask> {
        let deadline = Instant::now() + self.timeout;
        loop {
            for pod in &self.dc.pods {
                let remote = match self.get_backups(pod).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.note(format!("failed to list backups (pod {}): {e}", pod.name));
                        continue;
                    }
                };
                let mut task = SyncTask { pod: pod.name.clone(), ..Default::default() };
                let mut store = self.backups.lock().unwrap();
                for s in remote.iter().filter(|s| s.status == StatusType::Success as i32) {
                    if !store.contains_key(&s.backup_name) {
                        let b = MedusaBackup {
                            name: s.backup_name.clone(),
                            cassandra_datacenter: self.dc.spec.object_name.clone(),
                            backup_type: s.backup_type.clone(),
                            start_time: s.start_time,
                            finish_time: s.finish_time,
                            total_nodes: s.total_nodes,
                            finished_nodes: s.finished_nodes,
                            total_files: 0,
                            total_size: String::new(),
                            nodes: s.nodes.clone(),
                            status: status_name(s.status),
                        };
                        task.created.push(b.name.clone());
                        store.insert(b.name.clone(), b);
                    }
                }
                let gone: Vec<String> = store
                    .values()
                    .filter(|b| b.cassandra_datacenter == self.dc.spec.object_name)
                    .filter(|b| !remote.iter().any(|s| s.backup_name == b.name))
                    .map(|b| b.name.clone())
                    .collect();
                for name in gone {
                    store.remove(&name);
                    task.deleted.push(name);
                }
                return Ok(task);
            }
            ensure!(Instant::now() < deadline, "sync: no pod answered GetBackups; {:?}", self.log());
            tokio::time::sleep(self.requeue).await;
        }
    }

    /// A `purge` MedusaTask: PurgeBackups on every pod, one after the other, then the
    /// `<task>-sync` task it schedules.
    pub async fn purge_task(&self) -> Result<PurgeTask> {
        let mut task = PurgeTask::default();
        for pod in &self.dc.pods {
            let r = match self.client(pod) {
                Ok(mut c) => c.purge_backups(pb::PurgeBackupsRequest {}).await.map_err(|e| go_error(&e)),
                Err(e) => Err(e),
            };
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    task.finished.push(TaskResult {
                        pod: pod.name.clone(),
                        backups_purged: r.nb_backups_purged,
                        objects_purged: r.nb_objects_purged,
                        purged_size: r.total_purged_size,
                        within_gc_grace: r.total_objects_within_gc_grace,
                    });
                }
                Err(e) => {
                    self.note(format!("pod operation failed (purge, pod {}): {e}", pod.name));
                    task.failed.push((pod.name.clone(), e));
                }
            }
        }
        task.sync = self.sync_task().await?;
        Ok(task)
    }

    /// A `prepare_restore` MedusaTask: PrepareRestore on every pod, one after the other, with
    /// `datacenter` = the CassandraDatacenter object's name (`spec.cassandraDatacenter`).
    pub async fn prepare_restore_task(&self, backup: &str, key: &str) -> PrepareTask {
        let mut task = PrepareTask::default();
        for pod in &self.dc.pods {
            let request = pb::PrepareRestoreRequest {
                backup_name: backup.to_string(),
                datacenter: self.dc.spec.object_name.clone(),
                restore_key: key.to_string(),
            };
            let r = match self.client(pod) {
                Ok(mut c) => c.prepare_restore(request).await.map(drop).map_err(|e| go_error(&e)),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => task.finished.push(pod.name.clone()),
                Err(e) => task.failed.push((pod.name.clone(), e)),
            }
        }
        task
    }

    // --- MedusaRestoreJob ---------------------------------------------------------------------

    /// A MedusaRestoreJob of MedusaBackup `backup` into this datacenter: a new restore key, the
    /// backup validated against the datacenter, the host map from the first pod's GetBackups,
    /// the datacenter stopped, then the `medusa-restore` init container of every pod with
    /// `BACKUP_NAME`, `RESTORE_KEY` and `RESTORE_MAPPING`. The sidecars stay stopped.
    pub async fn restore_job(&self, backup: &str) -> Result<RestoreJob> {
        let mut job = RestoreJob { key: uuid4(), ..Default::default() };
        let medusa_backup = self.backups.lock().unwrap().get(backup).cloned();
        let medusa_backup = medusa_backup.with_context(|| format!("MedusaBackup {backup} not found"))?;
        if let Err(message) = validate_backup_for_restore(&medusa_backup, &self.dc.spec) {
            job.message = Some(message);
            return Ok(job);
        }
        let mapping = self.host_map(backup).await.map_err(|e| anyhow::anyhow!("Failed to prepare restore: {e}"))?;
        let json = mapping.to_json();
        job.mapping = Some(mapping);
        self.dc.stop_all().await?;
        let vars = [("BACKUP_NAME", backup), ("RESTORE_KEY", job.key.as_str()), ("RESTORE_MAPPING", json.as_str())];
        let mut children = Vec::new();
        for pod in &self.dc.pods {
            children.push((pod.name.clone(), pod.restore_init(&vars)?));
        }
        for (pod, child) in children {
            job.runs.push(wait_init(&pod, child).await?);
        }
        Ok(job)
    }

    /// `GetHostMap` + `ToMedusaRestoreMapping`, from the first pod a client can be made for.
    async fn host_map(&self, backup: &str) -> Result<RestoreMapping, String> {
        let pod = self.dc.pods.first().ok_or("no pods")?;
        let backups = self.get_backups(pod).await?;
        if backups.is_empty() {
            return Err("no backups found".into());
        }
        let named = backups.iter().find(|b| b.backup_name == backup).ok_or("could not find named backup")?;
        let mut source: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in named.nodes.iter().filter(|n| n.datacenter == self.dc.spec.dc) {
            source.entry(n.rack.clone()).or_default().push(n.host.clone());
        }
        let dest: BTreeMap<String, Vec<String>> = self.dc.spec.rack_pods().into_iter().collect();
        let pairs = pair_racks(&source, &dest)?;
        if pairs.iter().any(|(s, t)| s.is_empty() || t.is_empty()) {
            return Err("source or target was undefined".into());
        }
        let in_place = pairs.iter().all(|(s, t)| s == t);
        Ok(RestoreMapping { in_place, host_map: pairs.into_iter().map(|(s, t)| (t, s)).collect() })
    }
}
