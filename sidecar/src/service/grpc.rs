//! The `Medusa` gRPC service (contract §1): wire-compatible with Medusa and k8ssandra-operator, with
//! Medusa's bugs fixed where contract §10 lists them. Handlers only look things up or hand work to the
//! job table; no long work runs inside a handler (a client cancel would drop it). Each RPC is
//! an inherent method failing with an [`RpcError`]; the trait implementation only converts
//! ([`crate::service::status`] picks the codes).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backup::Engine;
use crate::bucket::index::{self, NodeBackup};
use crate::bucket::node_backup::{self, State};
use crate::format::layout::Mode;
use crate::format::names::{BackupName, Fqdn, RestoreKey, check_printable};
use crate::format::tokenmap::TokenMap;
use crate::service::jobs::{JobState, Jobs};
use crate::service::listing::{Cache, ClusterBackup};
use crate::service::pb;
use crate::service::pb::medusa_server::Medusa;
use crate::service::status::{BackupFailure, RpcError};

/// The service state.
pub struct MedusaService {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    cache: Arc<Cache>,
    limits: crate::retention::purge::Limits,
}

impl MedusaService {
    /// A service over an engine and its job table; `limits` are the retention settings.
    pub fn new(
        engine: Arc<Engine>,
        jobs: Arc<Jobs>,
        cache: Arc<Cache>,
        limits: crate::retention::purge::Limits,
    ) -> MedusaService {
        MedusaService { engine, jobs, cache, limits }
    }
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

fn status_of(state: JobState) -> pb::StatusType {
    match state {
        JobState::Queued | JobState::Running => pb::StatusType::InProgress,
        JobState::Success => pb::StatusType::Success,
        JobState::Failed => pb::StatusType::Failed,
    }
}

/// The nodes of `backup` to restore here. k8ssandra-operator sends the CassandraDatacenter
/// object's name as `datacenter`, which differs from Cassandra's datacenter name whenever
/// `datacenterName` overrides it (Medusa ignores the field): a name that is a datacenter of the
/// backup selects it; any other selects the datacenter of this node, if the backup has it;
/// else every node of the backup is a candidate and the host map decides.
fn ring_of_datacenter(backup: &TokenMap, datacenter: &str, local_ring: &TokenMap, me: &Fqdn) -> TokenMap {
    let in_dc =
        |dc: &str| TokenMap(backup.0.iter().filter(|n| n.dc.as_deref().is_none_or(|d| d == dc)).cloned().collect());
    let names_a_dc = |dc: &str| backup.0.iter().any(|n| n.dc.as_deref() == Some(dc));
    if datacenter.is_empty() || names_a_dc(datacenter) {
        return if datacenter.is_empty() { backup.clone() } else { in_dc(datacenter) };
    }
    let local_dc = local_ring.node(me.as_str()).and_then(|n| n.dc.clone());
    match local_dc {
        Some(dc) if names_a_dc(&dc) => {
            tracing::info!(datacenter, local_dc = %dc, "PrepareRestore: the datacenter field names no datacenter of the backup (a CassandraDatacenter object's name); using this node's");
            in_dc(&dc)
        }
        _ => backup.clone(),
    }
}

impl MedusaService {
    async fn cluster_backups(&self, name: Option<&BackupName>) -> Result<Vec<ClusterBackup>, RpcError> {
        let storage = &self.engine.storage;
        let nbs = index::node_backups(storage, name).await?;
        let local = self.engine.fqdn.as_str().to_string();
        let jobs = self.jobs.clone();
        // This node's unfinished parts: failed unless a job here is still on them.
        let local_failed = move |nb: &NodeBackup| (nb.fqdn == local).then(|| !jobs.is_active(&nb.name));
        Ok(crate::service::listing::summarize(storage, &self.cache, nbs, &local_failed).await?)
    }

    async fn cluster_backup(&self, name: &BackupName) -> Result<ClusterBackup, RpcError> {
        let all = self.cluster_backups(Some(name)).await?;
        let found = all.into_iter().find(|c| c.name == name.as_str());
        found.ok_or_else(|| RpcError::NoSuchBackup { name: name.clone(), node: None })
    }

    async fn start(&self, raw_name: &str, mode: i32) -> Result<(BackupName, pb::StatusType), RpcError> {
        let name = BackupName::new(raw_name)?;
        let view = self.jobs.submit(name.clone(), mode_of(mode)).await?;
        Ok((name, status_of(view.state)))
    }

    async fn backup_sync(&self, r: pb::BackupRequest) -> Result<pb::BackupResponse, RpcError> {
        let (name, _) = self.start(&r.name, r.mode).await?;
        // The job runs on its own; only the wait belongs to this call.
        if let Some(v) = self.jobs.wait(name.as_str()).await
            && v.state == JobState::Failed
        {
            let source =
                BackupFailure { reason: v.error.unwrap_or_default(), retryable: v.retryable, name_taken: v.name_taken };
            return Err(RpcError::BackupFailed { name, source });
        }
        Ok(pb::BackupResponse { backup_name: name.to_string(), status: pb::StatusType::Success as i32 })
    }

    async fn status(&self, r: pb::BackupStatusRequest) -> Result<pb::BackupStatusResponse, RpcError> {
        let name = BackupName::new(r.backup_name)?;
        let (s, n) = (&self.engine.storage, &self.engine.fqdn);
        if let Some(v) = self.jobs.get(name.as_str()) {
            let (bd, bt, fd, ft) = v.progress;
            // A job that succeeded here is SUCCESS only while storage still holds a readable
            // manifest: the same notion of complete as GetBackups and restore.
            let damage = if v.state == JobState::Success { node_backup::damage(s, n, &name).await? } else { None };
            let state = if damage.is_some() { pb::StatusType::Failed } else { status_of(v.state) };
            return Ok(pb::BackupStatusResponse {
                start_time: local_time(v.accepted),
                finish_time: v.finished.map(local_time).unwrap_or_default(),
                status: state as i32,
                bytes_done: bd as i64,
                bytes_total: bt as i64,
                files_done: fd as i64,
                files_total: ft as i64,
                error: damage.or(v.error).unwrap_or_default(),
            });
        }
        // Not a job of this process: what storage says about this node's part.
        let (status, started, finished, error) = match node_backup::state(s, n, &name).await? {
            State::Absent => {
                // A manifest without schema.cql: partly deleted or copied, not absent.
                let manifest = s.layout.meta(n, &name, crate::format::layout::Meta::Manifest);
                let Some(m) = s.head(&manifest).await? else {
                    return Err(RpcError::NoSuchBackup { name, node: Some(n.to_string()) });
                };
                let schema = s.layout.meta(n, &name, crate::format::layout::Meta::Schema);
                let why = format!("damaged: {schema} is missing (partly deleted or copied incompletely)");
                (pb::StatusType::Failed, m.last_modified.timestamp(), None, Some(why))
            }
            State::Complete { started, finished } => match node_backup::damage(s, n, &name).await? {
                None => (pb::StatusType::Success, started, Some(finished), None),
                Some(why) => (pb::StatusType::Failed, started, None, Some(why)),
            },
            State::Incomplete { started, failure } => {
                let reason =
                    failure.unwrap_or_else(|| "incomplete: no backup of this name is running on this node".into());
                (pb::StatusType::Failed, started, None, Some(reason))
            }
        };
        Ok(pb::BackupStatusResponse {
            start_time: local_time(started),
            finish_time: finished.map(local_time).unwrap_or_default(),
            status: status as i32,
            error: error.unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn delete(&self, r: pb::DeleteBackupRequest) -> Result<pb::DeleteBackupResponse, RpcError> {
        let name = BackupName::new(r.name)?;
        if self.jobs.is_active(name.as_str()) {
            return Err(RpcError::Running(name));
        }
        let storage = &self.engine.storage;
        let mut nodes: Vec<Fqdn> = Vec::new();
        for nb in index::node_backups(storage, Some(&name)).await? {
            nodes.push(Fqdn::new(nb.fqdn).map_err(|e| RpcError::Internal(e.to_string()))?);
        }
        // This node's folder counts even when the index lost its entries: a restore reads the
        // folder, so the backup exists for the user.
        let here = &self.engine.fqdn;
        if !nodes.contains(here) && node_backup::state(storage, here, &name).await? != State::Absent {
            tracing::warn!(backup = %name, "this node's part has no index entries; deleting its folder all the same");
            nodes.push(here.clone());
        }
        if nodes.is_empty() {
            return Err(RpcError::NoSuchBackup { name, node: None });
        }
        for fqdn in &nodes {
            let skip = |folder: &str| folder == name.as_str();
            let refs = crate::retention::orphans::referenced(storage, fqdn, &skip).await?;
            let d = node_backup::delete_keeping(storage, fqdn, &name, &|k| refs.contains(k)).await?;
            tracing::info!(backup = %name, node = %fqdn, objects = d.objects, bytes = d.bytes, "node backup deleted");
        }
        self.cache.forget(name.as_str());
        self.jobs.forget(name.as_str());
        // Shared files only this backup used: cleaned here for this node, under the same rules
        // as a purge (other nodes clean their own folders when they purge).
        if let Some(_slot) = self.jobs.try_exclusive() {
            let now = chrono::Utc::now().timestamp();
            let c = crate::retention::orphans::clean(storage, &self.engine.fqdn, now, self.limits.grace_days).await?;
            tracing::info!(
                objects = c.objects,
                bytes = c.bytes,
                deferred = c.deferred.as_deref().unwrap_or("no"),
                "shared files no backup references cleaned"
            );
        }
        Ok(pb::DeleteBackupResponse { name: name.to_string(), status: pb::StatusType::Success as i32 })
    }

    async fn purge(&self) -> Result<pb::PurgeBackupsResponse, RpcError> {
        let slot = self.jobs.try_exclusive();
        let jobs = self.jobs.clone();
        let running = move |name: &str| jobs.is_active(name);
        let now = chrono::Utc::now().timestamp();
        let (storage, fqdn, exclusive) = (&self.engine.storage, &self.engine.fqdn, slot.is_some());
        let r = crate::retention::purge::purge(storage, fqdn, self.limits, now, &running, exclusive).await;
        let metrics = crate::service::metrics::global();
        let r = r.inspect_err(|_| metrics.purge_failed())?;
        metrics.purged(r.backups, r.objects, r.bytes);
        drop(slot);
        let sat = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        Ok(pb::PurgeBackupsResponse {
            nb_backups_purged: sat(r.backups),
            nb_objects_purged: sat(r.objects),
            total_purged_size: r.bytes as i64,
            total_objects_within_gc_grace: sat(r.within_grace),
            cleanup_deferred: r.cleanup_deferred.unwrap_or_default(),
        })
    }

    async fn prepare(&self, r: pb::PrepareRestoreRequest) -> Result<(), RpcError> {
        let name = BackupName::new(r.backup_name)?;
        let key = RestoreKey::new(r.restore_key)?;
        // Matched against datacenter names, never used in a path; bounded so that what is logged
        // and answered stays readable. (Kubernetes object names are at most 253 bytes.)
        check_printable("datacenter", &r.datacenter)?;
        let c = self.cluster_backup(&name).await?;
        let facts = self.engine.cassandra.facts(&self.engine.fqdn, &[]).await?;
        let backup_ring = ring_of_datacenter(&c.tokenmap, &r.datacenter, &facts.tokenmap, &self.engine.fqdn);
        if backup_ring.0.is_empty() {
            let dc = r.datacenter;
            return Err(RpcError::Precondition(format!("backup {name} has no node in datacenter {dc}")));
        }
        let mapping = crate::restore::mapping::host_map(&backup_ring, &facts.tokenmap, &[])
            .map_err(|e| RpcError::Precondition(format!("cannot restore {name} here: {e}")))?;
        let path = self.engine.paths.root().join(".restore_mapping").join(key.as_str());
        crate::fsutil::write_atomic(&path, &mapping.to_bytes())
            .map_err(|source| RpcError::LocalWrite { path: path.clone(), source })?;
        tracing::info!(backup = %name, key = %key, in_place = mapping.is_in_place(), path = %path.display(), "restore prepared");
        Ok(())
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
        Ok(Response::new(self.backup_sync(req.into_inner()).await?))
    }

    async fn backup_status(
        &self,
        req: Request<pb::BackupStatusRequest>,
    ) -> Result<Response<pb::BackupStatusResponse>, Status> {
        Ok(Response::new(self.status(req.into_inner()).await?))
    }

    async fn delete_backup(
        &self,
        req: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        Ok(Response::new(self.delete(req.into_inner()).await?))
    }

    async fn get_backup(&self, req: Request<pb::GetBackupRequest>) -> Result<Response<pb::GetBackupResponse>, Status> {
        let name = BackupName::new(req.into_inner().backup_name).map_err(RpcError::from)?;
        let s = crate::service::reply::summary(&self.cluster_backup(&name).await?);
        Ok(Response::new(pb::GetBackupResponse { status: s.status, backup: Some(s) }))
    }

    async fn get_backups(
        &self,
        _req: Request<pb::GetBackupsRequest>,
    ) -> Result<Response<pb::GetBackupsResponse>, Status> {
        // Summarised one backup at a time while tonic encodes the reply (see `reply`).
        Ok(Response::new(pb::GetBackupsResponse::of(self.cluster_backups(None).await?)))
    }

    async fn purge_backups(
        &self,
        _req: Request<pb::PurgeBackupsRequest>,
    ) -> Result<Response<pb::PurgeBackupsResponse>, Status> {
        Ok(Response::new(self.purge().await?))
    }

    async fn prepare_restore(
        &self,
        req: Request<pb::PrepareRestoreRequest>,
    ) -> Result<Response<pb::PrepareRestoreResponse>, Status> {
        self.prepare(req.into_inner()).await?;
        Ok(Response::new(pb::PrepareRestoreResponse {}))
    }
}
