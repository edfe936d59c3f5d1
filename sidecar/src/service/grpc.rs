//! The `Medusa` gRPC service (§1): wire-compatible with Medusa and k8ssandra-operator, with
//! Medusa's bugs fixed where §10 lists them. Handlers only look things up or hand work to the
//! job table; no long work runs inside a handler (a client cancel would drop it).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backup::Node;
use crate::format::layout::{Meta, Mode};
use crate::format::names::{BackupName, InvalidName};
use crate::pb;
use crate::pb::medusa_server::Medusa;
use crate::service::jobs::{Jobs, State, SubmitError};
use crate::service::listing::{self, Cache, ClusterBackup};
use crate::store::StorageError;

/// The service state.
pub struct MedusaService {
    node: Arc<Node>,
    jobs: Arc<Jobs>,
    cache: Arc<Cache>,
    limits: crate::retention::purge::Limits,
}

impl MedusaService {
    /// A service over an engine and its job table; `limits` are the retention settings.
    pub fn new(
        node: Arc<Node>,
        jobs: Arc<Jobs>,
        cache: Arc<Cache>,
        limits: crate::retention::purge::Limits,
    ) -> MedusaService {
        MedusaService { node, jobs, cache, limits }
    }
}

/// The one place where errors become gRPC statuses.
pub trait ToStatus {
    /// The status for this error.
    fn to_status(&self) -> Status;
}

impl ToStatus for InvalidName {
    fn to_status(&self) -> Status {
        Status::invalid_argument(self.to_string())
    }
}

impl ToStatus for StorageError {
    fn to_status(&self) -> Status {
        match self {
            StorageError::NotFound { .. } => Status::not_found(self.to_string()),
            StorageError::Unavailable { .. } => Status::unavailable(self.to_string()),
            StorageError::Refused { .. } | StorageError::Config(_) => Status::failed_precondition(format!(
                "{self} (check [storage] credentials, bucket and permissions in medusa.ini)"
            )),
        }
    }
}

impl ToStatus for SubmitError {
    fn to_status(&self) -> Status {
        match self {
            SubmitError::ShuttingDown => Status::unavailable(self.to_string()),
            SubmitError::QueueFull(_) => Status::resource_exhausted(self.to_string()),
            SubmitError::Incomplete { .. } => Status::failed_precondition(self.to_string()),
            SubmitError::Storage(e) => e.to_status(),
        }
    }
}

fn name_of(raw: &str) -> Result<BackupName, Status> {
    BackupName::new(raw).map_err(|e| e.to_status())
}

fn mode_of(mode: i32) -> Mode {
    if mode == pb::backup_request::Mode::Full as i32 { Mode::Full } else { Mode::Differential }
}

/// `%Y-%m-%d %H:%M:%S` in the server's local time zone, as Medusa formats status times.
pub fn local_time(epoch: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(epoch, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn status_of(state: State) -> pb::StatusType {
    match state {
        State::Queued | State::Running => pb::StatusType::InProgress,
        State::Success => pb::StatusType::Success,
        State::Failed => pb::StatusType::Failed,
    }
}

fn summary(c: &ClusterBackup) -> pb::BackupSummary {
    let nodes = c
        .tokenmap
        .0
        .iter()
        .map(|n| pb::BackupNode {
            host: n.host.clone(),
            // Tokens beyond int64 (RandomPartitioner) cannot travel in this field (§10.34).
            tokens: n.tokens.iter().filter_map(|t| t.parse::<i64>().ok()).collect(),
            datacenter: n.dc.clone().unwrap_or_default(),
            rack: n.rack.clone().unwrap_or_default(),
        })
        .collect();
    pb::BackupSummary {
        backup_name: c.name.clone(),
        start_time: c.started,
        finish_time: c.finished.unwrap_or(0),
        total_nodes: c.tokenmap.0.len() as i32,
        finished_nodes: c.finished_nodes as i32,
        nodes,
        status: match c.status {
            listing::Status::InProgress => pb::StatusType::InProgress,
            listing::Status::Success => pb::StatusType::Success,
            listing::Status::Failed => pb::StatusType::Failed,
        } as i32,
        backup_type: c.backup_type.to_string(),
        total_size: c.total_size as i64,
        total_objects: c.total_objects as i64,
    }
}

impl MedusaService {
    async fn cluster_backups(&self, name: Option<&BackupName>) -> Result<Vec<ClusterBackup>, Status> {
        let nbs = listing::node_backups(&self.node.storage, name).await.map_err(|e| e.to_status())?;
        let local = self.node.fqdn.as_str().to_string();
        let jobs = self.jobs.clone();
        // This node's unfinished parts: failed unless a job here is still on them.
        let local_failed = move |nb: &listing::NodeBackup| (nb.fqdn == local).then(|| !jobs.is_active(&nb.name));
        listing::summarize(&self.node.storage, &self.cache, nbs, &local_failed).await.map_err(|e| e.to_status())
    }

    async fn start(&self, raw_name: &str, mode: i32) -> Result<(BackupName, pb::StatusType), Status> {
        let name = name_of(raw_name)?;
        let view = self.jobs.submit(name.clone(), mode_of(mode)).await.map_err(|e| e.to_status())?;
        Ok((name, status_of(view.state)))
    }
}

#[tonic::async_trait]
impl Medusa for MedusaService {
    async fn async_backup(&self, req: Request<pb::BackupRequest>) -> Result<Response<pb::BackupResponse>, Status> {
        let r = req.into_inner();
        let (name, status) = self.start(&r.name, r.mode).await?;
        Ok(Response::new(pb::BackupResponse { backup_name: name.to_string(), status: status as i32 }))
    }

    async fn backup(&self, req: Request<pb::BackupRequest>) -> Result<Response<pb::BackupResponse>, Status> {
        let r = req.into_inner();
        let (name, _) = self.start(&r.name, r.mode).await?;
        // The job runs on its own; only the wait belongs to this call.
        let view = self.jobs.wait(name.as_str()).await;
        match view {
            Some(v) if v.state == State::Failed => {
                Err(Status::internal(format!("backup {name} failed: {}", v.error.unwrap_or_default())))
            }
            _ => Ok(Response::new(pb::BackupResponse {
                backup_name: name.to_string(),
                status: pb::StatusType::Success as i32,
            })),
        }
    }

    async fn backup_status(
        &self,
        req: Request<pb::BackupStatusRequest>,
    ) -> Result<Response<pb::BackupStatusResponse>, Status> {
        let name = name_of(&req.into_inner().backup_name)?;
        if let Some(v) = self.jobs.get(name.as_str()) {
            let (bd, bt, fd, ft) = v.progress;
            return Ok(Response::new(pb::BackupStatusResponse {
                start_time: local_time(v.accepted),
                finish_time: v.finished.map(local_time).unwrap_or_default(),
                status: status_of(v.state) as i32,
                bytes_done: bd as i64,
                bytes_total: bt as i64,
                files_done: fd as i64,
                files_total: ft as i64,
                error: v.error.unwrap_or_default(),
            }));
        }
        // Not a job of this process: what storage says about this node's part.
        let s = &self.node.storage;
        let n = &self.node.fqdn;
        let schema = s.head(&s.layout.meta(n, &name, Meta::Schema)).await.map_err(|e| e.to_status())?;
        let Some(schema) = schema else {
            return Err(Status::not_found(format!("backup {name} does not exist on node {n}")));
        };
        let manifest = s.head(&s.layout.meta(n, &name, Meta::Manifest)).await.map_err(|e| e.to_status())?;
        let (status, error) = match &manifest {
            Some(_) => (pb::StatusType::Success, String::new()),
            None => {
                let marker = s.get_opt(&listing::failure_marker(s, n, &name)).await.map_err(|e| e.to_status())?;
                let reason = marker
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                    .unwrap_or_else(|| "incomplete: no backup of this name is running on this node".into());
                (pb::StatusType::Failed, reason)
            }
        };
        Ok(Response::new(pb::BackupStatusResponse {
            start_time: local_time(schema.last_modified.timestamp()),
            finish_time: manifest.map(|m| local_time(m.last_modified.timestamp())).unwrap_or_default(),
            status: status as i32,
            error,
            ..Default::default()
        }))
    }

    async fn delete_backup(
        &self,
        req: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        let name = name_of(&req.into_inner().name)?;
        if self.jobs.is_active(name.as_str()) {
            return Err(Status::failed_precondition(format!(
                "backup {name} is running on this node; wait until it finishes"
            )));
        }
        let nbs = listing::node_backups(&self.node.storage, Some(&name)).await.map_err(|e| e.to_status())?;
        if nbs.is_empty() {
            return Err(Status::not_found(format!("backup {name} does not exist")));
        }
        for nb in &nbs {
            let fqdn = crate::format::names::Fqdn::new(nb.fqdn.clone()).map_err(|e| Status::internal(e.to_string()))?;
            let d = crate::retention::delete::delete_node_backup(&self.node.storage, &fqdn, &name)
                .await
                .map_err(|e| e.to_status())?;
            tracing::info!(backup = %name, node = %fqdn, objects = d.objects, bytes = d.bytes, "node backup deleted");
        }
        self.cache.forget(name.as_str());
        self.jobs.forget(name.as_str());
        // Shared files only this backup used: cleaned here for this node, under the same rules
        // as a purge (other nodes clean their own folders when they purge).
        if let Some(_slot) = self.jobs.try_exclusive() {
            let now = chrono::Utc::now().timestamp();
            crate::retention::purge::clean_orphans(&self.node.storage, &self.node.fqdn, now, self.limits.grace_days)
                .await
                .map_err(|e| e.to_status())?;
        }
        Ok(Response::new(pb::DeleteBackupResponse { name: name.to_string(), status: pb::StatusType::Success as i32 }))
    }

    async fn get_backup(&self, req: Request<pb::GetBackupRequest>) -> Result<Response<pb::GetBackupResponse>, Status> {
        let name = name_of(&req.into_inner().backup_name)?;
        let all = self.cluster_backups(Some(&name)).await?;
        let Some(c) = all.iter().find(|c| c.name == name.as_str()) else {
            return Err(Status::not_found(format!("backup {name} does not exist")));
        };
        let s = summary(c);
        Ok(Response::new(pb::GetBackupResponse { status: s.status, backup: Some(s) }))
    }

    async fn get_backups(
        &self,
        _req: Request<pb::GetBackupsRequest>,
    ) -> Result<Response<pb::GetBackupsResponse>, Status> {
        let all = self.cluster_backups(None).await?;
        let backups: Vec<pb::BackupSummary> = all.iter().map(summary).collect();
        Ok(Response::new(pb::GetBackupsResponse { overall_status: overall(&backups) as i32, backups }))
    }

    async fn purge_backups(
        &self,
        _req: Request<pb::PurgeBackupsRequest>,
    ) -> Result<Response<pb::PurgeBackupsResponse>, Status> {
        let slot = self.jobs.try_exclusive();
        let jobs = self.jobs.clone();
        let running = move |name: &str| jobs.is_active(name);
        let now = chrono::Utc::now().timestamp();
        let r = match crate::retention::purge::purge(
            &self.node.storage,
            &self.node.fqdn,
            self.limits,
            now,
            &running,
            slot.is_some(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                crate::service::metrics::global().purge_failed();
                return Err(e.to_status());
            }
        };
        crate::service::metrics::global().purged(r.backups, r.objects, r.bytes);
        drop(slot);
        let sat = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        Ok(Response::new(pb::PurgeBackupsResponse {
            nb_backups_purged: sat(r.backups),
            nb_objects_purged: sat(r.objects),
            total_purged_size: r.bytes as i64,
            total_objects_within_gc_grace: sat(r.within_grace),
        }))
    }

    async fn prepare_restore(
        &self,
        req: Request<pb::PrepareRestoreRequest>,
    ) -> Result<Response<pb::PrepareRestoreResponse>, Status> {
        let r = req.into_inner();
        let name = name_of(&r.backup_name)?;
        let key = crate::format::names::RestoreKey::new(r.restore_key).map_err(|e| e.to_status())?;
        let all = self.cluster_backups(Some(&name)).await?;
        let Some(c) = all.into_iter().find(|c| c.name == name.as_str()) else {
            return Err(Status::not_found(format!("backup {name} does not exist")));
        };
        let mut backup_ring = (*c.tokenmap).clone();
        if !r.datacenter.is_empty() {
            backup_ring.0.retain(|n| n.dc.as_deref().is_none_or(|dc| dc == r.datacenter));
            if backup_ring.0.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "backup {name} has no node in datacenter {}",
                    r.datacenter
                )));
            }
        }
        let facts =
            self.node.cassandra.facts(&self.node.fqdn, &[]).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mapping = crate::restore::mapping::host_map(&backup_ring, &facts.tokenmap, &[])
            .map_err(|e| Status::failed_precondition(format!("cannot restore {name} here: {e}")))?;
        let path = self.node.paths.root().join(".restore_mapping").join(key.as_str());
        crate::fsutil::write_atomic(&path, &mapping.to_bytes())
            .map_err(|e| Status::internal(format!("writing {}: {e}", path.display())))?;
        tracing::info!(backup = %name, key = %key, in_place = mapping.is_in_place(), path = %path.display(), "restore prepared");
        Ok(Response::new(pb::PrepareRestoreResponse {}))
    }
}

/// Medusa's `overallStatus` (§1.6): UNKNOWN when empty; then, later rules winning, all SUCCESS
/// → SUCCESS, any IN_PROGRESS → IN_PROGRESS, any FAILED → FAILED.
pub fn overall(backups: &[pb::BackupSummary]) -> pb::StatusType {
    let has = |s: pb::StatusType| backups.iter().any(|b| b.status == s as i32);
    if backups.is_empty() {
        pb::StatusType::Unknown
    } else if has(pb::StatusType::Failed) {
        pb::StatusType::Failed
    } else if has(pb::StatusType::InProgress) {
        pb::StatusType::InProgress
    } else if backups.iter().all(|b| b.status == pb::StatusType::Success as i32) {
        pb::StatusType::Success
    } else {
        pb::StatusType::Unknown
    }
}
