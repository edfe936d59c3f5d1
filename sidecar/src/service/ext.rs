//! The `medusa_rs.v1.MedusaExtensions` gRPC service (`proto/medusa_rs.proto`), served beside
//! `Medusa`: online table restore ([`crate::service::online`]), backup verification
//! ([`crate::service::verify`]) and purge-decommissioned ([`crate::service::decommissioned`]);
//! and the scheduled verification of `[verification]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::backup::Engine;
use crate::bucket::node_backup;
use crate::format::names::BackupName;
use crate::service::online::{OnlineRestores, Phase};
use crate::service::pb::ext;
use crate::service::pb::ext::medusa_extensions_server::MedusaExtensions;
use crate::service::status::RpcError;
use crate::service::verify::{NodeVerification, Verifier};

/// The service state.
pub struct ExtensionService {
    engine: Arc<Engine>,
    online: Arc<OnlineRestores>,
    chunk: u64,
    concurrency: usize,
    grace_days: u32,
}

impl ExtensionService {
    /// Over the sidecar's engine; `chunk` and `concurrency` are `[storage]`'s.
    pub fn new(engine: Arc<Engine>, chunk: u64, concurrency: usize, grace_days: u32) -> ExtensionService {
        let online = Arc::new(OnlineRestores::open(engine.clone(), chunk, concurrency));
        ExtensionService { engine, online, chunk, concurrency, grace_days }
    }
}

fn phase(p: Phase) -> ext::RestoreTablesPhase {
    match p {
        Phase::Checking => ext::RestoreTablesPhase::Checking,
        Phase::Downloading => ext::RestoreTablesPhase::Downloading,
        Phase::Loading => ext::RestoreTablesPhase::Loading,
        Phase::Done => ext::RestoreTablesPhase::Done,
        Phase::Failed => ext::RestoreTablesPhase::Failed,
    }
}

/// Verifies this node's part of `name` (its latest complete backup when `None`), records the
/// outcome in the metrics and logs every problem.
pub async fn verify_node(
    engine: &Engine,
    chunk: u64,
    concurrency: usize,
    name: Option<BackupName>,
    deep: bool,
) -> Result<(BackupName, NodeVerification), RpcError> {
    let (storage, me) = (&engine.storage, &engine.fqdn);
    let name = match name {
        Some(n) => n,
        None => node_backup::latest(storage, me)
            .await?
            .ok_or_else(|| RpcError::NotFound(format!("node {me} has no complete backup to verify; take one first")))?,
    };
    if node_backup::manifest(storage, me, &name).await?.is_none() {
        return Err(RpcError::NotFound(format!(
            "node {me} has no complete part of backup {name} (no manifest); GetBackups lists the backups"
        )));
    }
    let how =
        Verifier { storage, transfers: engine.transfers.clone(), chunk, concurrency, tmp_dir: scratch_dir(engine) };
    let run = crate::service::verify::node(&how, me, &name, deep).await;
    let now = chrono::Utc::now().timestamp();
    let v = match run {
        Ok(v) => v,
        Err(e) => {
            crate::service::metrics::global().verified(now, 0, None);
            return Err(e.into());
        }
    };
    crate::service::metrics::global().verified(now, v.objects, Some(v.problems.len() as u64));
    for (key, problem) in &v.problems {
        tracing::error!(backup = %name, key = key.as_deref().unwrap_or("-"), problem, "verification found a problem");
    }
    tracing::info!(
        backup = %name, deep, objects = v.objects, bytes = v.bytes, rehashed = v.hashed,
        problems = v.problems.len(), "verification finished"
    );
    Ok((name, v))
}

/// Verifies the latest complete backup every `interval`, the first time one interval after
/// start-up; a run that fails is logged and counted, the next one comes all the same.
pub async fn verify_every(engine: Arc<Engine>, chunk: u64, concurrency: usize, interval: Duration, deep: bool) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = verify_node(&engine, chunk, concurrency, None, deep).await {
            tracing::warn!(error = %e, "scheduled verification could not run");
        }
    }
}

#[tonic::async_trait]
impl MedusaExtensions for ExtensionService {
    async fn restore_tables(
        &self,
        request: Request<ext::RestoreTablesRequest>,
    ) -> Result<Response<ext::RestoreTablesResponse>, Status> {
        let r = request.into_inner();
        let job_id = self.online.start(&r.backup_name, &r.tables, r.allow_new_table_id).await?;
        Ok(Response::new(ext::RestoreTablesResponse { job_id }))
    }

    async fn restore_tables_status(
        &self,
        request: Request<ext::RestoreTablesStatusRequest>,
    ) -> Result<Response<ext::RestoreTablesStatusResponse>, Status> {
        let id = request.into_inner().job_id;
        let Some(s) = self.online.status(&id) else {
            return Err(RpcError::NotFound(format!("no restore-tables job {id:?} on this node")).into());
        };
        Ok(Response::new(ext::RestoreTablesStatusResponse {
            job_id: s.job_id,
            backup_name: s.backup_name,
            tables: s.tables,
            phase: phase(s.phase) as i32,
            files_done: s.files_done,
            files_total: s.files_total,
            bytes_done: s.bytes_done,
            bytes_total: s.bytes_total,
            error: s.error.unwrap_or_default(),
            started_at: s.started_at,
            finished_at: s.finished_at,
            sstables_loaded: s.sstables_loaded,
        }))
    }

    async fn verify_backup(
        &self,
        request: Request<ext::VerifyBackupRequest>,
    ) -> Result<Response<ext::VerifyBackupResponse>, Status> {
        let r = request.into_inner();
        let name =
            if r.backup_name.is_empty() { None } else { Some(BackupName::new(r.backup_name).map_err(RpcError::from)?) };
        let (name, v) = verify_node(&self.engine, self.chunk, self.concurrency, name, r.deep).await?;
        Ok(Response::new(ext::VerifyBackupResponse {
            backup_name: name.to_string(),
            ok: v.problems.is_empty(),
            objects_checked: v.objects,
            bytes_checked: v.bytes,
            objects_rehashed: v.hashed,
            objects_size_only: v.size_only,
            problems: v
                .problems
                .into_iter()
                .map(|(key, problem)| ext::VerificationProblem { key: key.unwrap_or_default(), problem })
                .collect(),
        }))
    }

    async fn purge_decommissioned(
        &self,
        request: Request<ext::PurgeDecommissionedRequest>,
    ) -> Result<Response<ext::PurgeDecommissionedResponse>, Status> {
        let apply = request.into_inner().apply;
        let d = crate::service::decommissioned::run(&self.engine.storage, self.grace_days, apply)
            .await
            .map_err(RpcError::from)?;
        Ok(Response::new(ext::PurgeDecommissionedResponse {
            nodes: d
                .planned
                .into_iter()
                .map(|(node, p)| ext::DecommissionedNode { node, delete: p.delete, keep: p.keep })
                .collect(),
            applied: apply,
            objects_deleted: d.objects,
            bytes_deleted: d.bytes,
        }))
    }
}

/// Where deep verifications download to.
pub fn scratch_dir(engine: &Engine) -> PathBuf {
    engine.state_dir.join("verify")
}
