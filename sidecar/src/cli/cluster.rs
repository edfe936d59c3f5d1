//! `backup-cluster --hosts ...`: a cluster backup without an operator, driven over gRPC as the
//! operator drives it (Medusa's own `backup-cluster` runs `backup-node` on every host over SSH):
//! AsyncBackup on each sidecar in turn (`--stagger` seconds apart), BackupStatus polled until
//! every node has finished or `--timeout` passes, a summary per node, exit 0 only when every
//! node succeeded (4 otherwise). Plain-text gRPC: the sidecars' `[grpc]` TLS is not spoken here.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ctx, EXIT_NOT_SOUND, Failure, human_bytes, table};
use crate::service::pb::{self, medusa_client::MedusaClient};

/// How often the nodes are asked for their status.
const POLL: Duration = Duration::from_secs(2);
/// How long one call (connecting included) may take.
const CALL: Duration = Duration::from_secs(20);

/// One node's part of the run.
struct Node {
    host: String,
    status: &'static str,
    error: String,
    files: i64,
    bytes: i64,
    seconds: f64,
}

/// What `backup-cluster` was asked for.
pub(super) struct Request {
    /// `host:port` of every sidecar.
    pub hosts: Vec<String>,
    /// The backup's name (default: the time, `%Y%m%dT%H%M` UTC as Medusa's).
    pub name: Option<String>,
    /// `full` or `differential`.
    pub mode: String,
    /// Seconds between starting two nodes.
    pub stagger: u64,
    /// Seconds to wait for the nodes to finish.
    pub timeout: u64,
}

/// A plain-text channel to the sidecar at `host` (`host:port` or a URL), connected within
/// `limit`; the error says which host and why. Shared by the commands that drive sidecars.
pub(super) async fn channel(host: &str, limit: Duration) -> Result<tonic::transport::Channel, String> {
    let url = if host.contains("://") { host.to_string() } else { format!("http://{host}") };
    let endpoint = tonic::transport::Endpoint::from_shared(url).map_err(|e| format!("{host}: {e}"))?;
    tokio::time::timeout(limit, endpoint.connect_timeout(limit).connect())
        .await
        .map_err(|_| format!("no answer from {host} within {} s", limit.as_secs()))?
        .map_err(|e| format!("cannot connect to {host}: {e}"))
}

async fn client(host: &str) -> Result<MedusaClient<tonic::transport::Channel>, String> {
    Ok(MedusaClient::new(channel(host, CALL).await?).max_decoding_message_size(512 << 20))
}

pub(super) async fn backup_cluster(ctx: &Ctx, r: Request) -> Result<u8, Failure> {
    let mode = match r.mode.as_str() {
        "full" => pb::backup_request::Mode::Full,
        "differential" => pb::backup_request::Mode::Differential,
        other => return Err(Failure { code: 2, message: format!("--mode {other:?}: use full or differential") }),
    };
    if r.hosts.is_empty() {
        return Err(Failure { code: 2, message: "--hosts: name at least one sidecar (host:port)".into() });
    }
    let name = r.name.unwrap_or_else(|| chrono::Utc::now().format("%Y%m%dT%H%M").to_string());
    crate::format::names::BackupName::new(name.clone())
        .map_err(|e| Failure { code: 2, message: format!("--backup-name: {e}") })?;
    let t0 = Instant::now();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, host) in r.hosts.iter().enumerate() {
        if i > 0 && r.stagger > 0 {
            tokio::time::sleep(Duration::from_secs(r.stagger)).await;
        }
        let mut node =
            Node { host: host.clone(), status: "IN_PROGRESS", error: String::new(), files: 0, bytes: 0, seconds: 0.0 };
        let started = async {
            let mut c = client(host).await?;
            let req = pb::BackupRequest { name: name.clone(), mode: mode as i32 };
            tokio::time::timeout(CALL, c.async_backup(req))
                .await
                .map_err(|_| format!("AsyncBackup: no answer within {} s", CALL.as_secs()))?
                .map_err(|s| format!("AsyncBackup: {}: {}", s.code(), s.message()))
        };
        match started.await {
            Ok(_) => tracing::info!(host = %host, backup = %name, "backup started"),
            Err(e) => (node.status, node.error) = ("FAILED", e),
        }
        nodes.push(node);
    }
    let deadline = t0 + Duration::from_secs(r.timeout);
    while nodes.iter().any(|n| n.status == "IN_PROGRESS") {
        if Instant::now() > deadline {
            for n in nodes.iter_mut().filter(|n| n.status == "IN_PROGRESS") {
                (n.status, n.error) = ("UNKNOWN", format!("still running after --timeout {} s", r.timeout));
            }
            break;
        }
        tokio::time::sleep(POLL).await;
        for n in nodes.iter_mut().filter(|n| n.status == "IN_PROGRESS") {
            let status = async {
                let mut c = client(&n.host).await?;
                let req = pb::BackupStatusRequest { backup_name: name.clone() };
                tokio::time::timeout(CALL, c.backup_status(req))
                    .await
                    .map_err(|_| format!("BackupStatus: no answer within {} s", CALL.as_secs()))?
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("BackupStatus: {}: {}", s.code(), s.message()))
            };
            match status.await {
                // A sidecar that is restarting: asked again at the next round, until the timeout.
                Err(e) => tracing::warn!(host = %n.host, error = %e, "status not available; asking again"),
                Ok(s) => {
                    (n.files, n.bytes, n.seconds) = (s.files_done, s.bytes_done, t0.elapsed().as_secs_f64());
                    match pb::StatusType::try_from(s.status) {
                        Ok(pb::StatusType::InProgress) => {}
                        Ok(pb::StatusType::Success) => n.status = "SUCCESS",
                        _ => (n.status, n.error) = ("FAILED", s.error),
                    }
                }
            }
        }
    }
    let ok = nodes.iter().all(|n| n.status == "SUCCESS");
    if ctx.json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| json!({ "host": n.host, "status": n.status, "files": n.files, "bytes": n.bytes, "seconds": n.seconds, "error": n.error }))
            .collect();
        ctx.print_json(&json!({ "backup_name": name, "mode": r.mode, "complete": ok, "nodes": list }));
    } else {
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                let bytes = u64::try_from(n.bytes).unwrap_or_default();
                vec![
                    n.host.clone(),
                    n.status.into(),
                    n.files.to_string(),
                    human_bytes(bytes),
                    format!("{:.1}", n.seconds),
                    n.error.clone(),
                ]
            })
            .collect();
        println!("backup {name} ({}), {} nodes:", r.mode, nodes.len());
        table(&["HOST", "STATUS", "FILES", "SIZE", "SECONDS", "ERROR"], &rows);
    }
    Ok(if ok { 0 } else { EXIT_NOT_SOUND })
}
