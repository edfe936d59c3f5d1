//! `restore-tables` and `restore-cluster`, for users without an operator.
//!
//! `restore-tables --hosts ... --backup-name B --table ks.t [--keyspace ks]`: the online table
//! restore of every node, driven over gRPC (the `medusa_rs.v1.MedusaExtensions` service of each
//! sidecar): RestoreTables on each, RestoreTablesStatus polled until each job ends, a summary,
//! exit 0 only when every node loaded its part.
//!
//! `restore-cluster --backup-name B [--host-list FILE]`: the per-node plan of a restore by the
//! init containers, as Medusa's `restore-cluster` decides it: which backup node each target
//! receives (in place without `--host-list`; Medusa's host list `seed,target,source` per line
//! otherwise), and the `restore-init` environment each target runs with (one restore key, the
//! `RESTORE_MAPPING` of the whole datacenter). It prints the plan; the nodes must be stopped and
//! their init containers run by whoever runs them (Medusa's own command does it over SSH, which
//! medusa-rs has no use for).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::listing::cluster_backups;
use super::{Ctx, EXIT_NOT_SOUND, Failure, backup_name, human_bytes, table};
use crate::restore::mapping::{HostMapping, RestoreMapping};
use crate::service::listing::ClusterState;
use crate::service::pb::ext::{self, medusa_extensions_client::MedusaExtensionsClient};

/// How often the nodes are asked for their status.
const POLL: Duration = Duration::from_secs(2);
/// How long one call (connecting included) may take.
const CALL: Duration = Duration::from_secs(60);

async fn client(host: &str) -> Result<MedusaExtensionsClient<tonic::transport::Channel>, String> {
    Ok(MedusaExtensionsClient::new(super::cluster::channel(host, CALL).await?))
}

/// What `restore-tables` was asked for.
pub(super) struct TablesRequest {
    /// `host:port` of every sidecar.
    pub hosts: Vec<String>,
    /// The backup.
    pub backup_name: String,
    /// `ks.table` names and whole keyspaces.
    pub tables: Vec<String>,
    /// Load into a table re-created since the backup.
    pub allow_new_table_id: bool,
    /// Seconds to wait for the nodes.
    pub timeout: u64,
}

struct NodeJob {
    host: String,
    job: String,
    status: &'static str,
    error: String,
    files: u64,
    bytes: u64,
    sstables: u64,
}

pub(super) async fn restore_tables(ctx: &Ctx, r: TablesRequest) -> Result<u8, Failure> {
    if r.hosts.is_empty() {
        return Err(Failure { code: 2, message: "--hosts: name at least one sidecar (host:port)".into() });
    }
    if r.tables.is_empty() {
        return Err(Failure { code: 2, message: "name what to restore: --table ks.table and/or --keyspace ks".into() });
    }
    let name = backup_name(&r.backup_name)?;
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    for host in &r.hosts {
        let mut n = NodeJob {
            host: host.clone(),
            job: String::new(),
            status: "RUNNING",
            error: String::new(),
            files: 0,
            bytes: 0,
            sstables: 0,
        };
        let started = async {
            let mut c = client(host).await?;
            let req = ext::RestoreTablesRequest {
                backup_name: name.to_string(),
                tables: r.tables.clone(),
                allow_new_table_id: r.allow_new_table_id,
            };
            tokio::time::timeout(CALL, c.restore_tables(req))
                .await
                .map_err(|_| format!("RestoreTables: no answer within {} s", CALL.as_secs()))?
                .map(|r| r.into_inner().job_id)
                .map_err(|s| format!("RestoreTables: {:?}: {}", s.code(), s.message()))
        };
        match started.await {
            Ok(job) => n.job = job,
            Err(e) => (n.status, n.error) = ("FAILED", e),
        }
        nodes.push(n);
    }
    let deadline = t0 + Duration::from_secs(r.timeout);
    while nodes.iter().any(|n| n.status == "RUNNING") {
        if Instant::now() > deadline {
            for n in nodes.iter_mut().filter(|n| n.status == "RUNNING") {
                (n.status, n.error) = ("UNKNOWN", format!("still running after --timeout {} s", r.timeout));
            }
            break;
        }
        tokio::time::sleep(POLL).await;
        for n in nodes.iter_mut().filter(|n| n.status == "RUNNING") {
            let status = async {
                let mut c = client(&n.host).await?;
                let req = ext::RestoreTablesStatusRequest { job_id: n.job.clone() };
                tokio::time::timeout(CALL, c.restore_tables_status(req))
                    .await
                    .map_err(|_| format!("RestoreTablesStatus: no answer within {} s", CALL.as_secs()))?
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("RestoreTablesStatus: {:?}: {}", s.code(), s.message()))
            };
            match status.await {
                Err(e) => tracing::warn!(host = %n.host, error = %e, "status not available; asking again"),
                Ok(s) => {
                    (n.files, n.bytes, n.sstables) = (s.files_done, s.bytes_done, s.sstables_loaded);
                    match ext::RestoreTablesPhase::try_from(s.phase) {
                        Ok(ext::RestoreTablesPhase::Done) => n.status = "DONE",
                        Ok(ext::RestoreTablesPhase::Failed) => (n.status, n.error) = ("FAILED", s.error),
                        _ => {}
                    }
                }
            }
        }
    }
    let ok = nodes.iter().all(|n| n.status == "DONE");
    if ctx.json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| json!({ "host": n.host, "job_id": n.job, "status": n.status, "files": n.files, "bytes": n.bytes, "sstables_loaded": n.sstables, "error": n.error }))
            .collect();
        ctx.print_json(&json!({ "backup_name": name.as_str(), "tables": r.tables, "complete": ok, "nodes": list }));
    } else {
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                vec![
                    n.host.clone(),
                    n.status.into(),
                    n.files.to_string(),
                    human_bytes(n.bytes),
                    n.sstables.to_string(),
                    n.error.clone(),
                ]
            })
            .collect();
        println!("restore of {} from {name} into the running nodes:", r.tables.join(", "));
        table(&["HOST", "STATUS", "FILES", "SIZE", "SSTABLES", "ERROR"], &rows);
    }
    Ok(if ok { 0 } else { EXIT_NOT_SOUND })
}

/// Medusa's `--host-list` file: `seed,target,source` per line (`True`/`False` for the seed).
fn parse_host_list(text: &str) -> Result<BTreeMap<String, HostMapping>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let [seed, target, source] = cols[..] else {
            return Err(format!("line {}: {line:?} is not `seed,target,source` (e.g. True,node1,old-node1)", i + 1));
        };
        let seed = match seed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("line {}: seed {seed:?} is not True or False", i + 1)),
        };
        if target.is_empty() || source.is_empty() {
            return Err(format!("line {}: empty host name", i + 1));
        }
        if out.insert(target.to_string(), HostMapping { source: vec![source.to_string()], seed }).is_some() {
            return Err(format!("line {}: target {target} is listed twice", i + 1));
        }
    }
    Ok(out)
}

pub(super) async fn restore_cluster(ctx: &Ctx, name: &str, host_list: Option<&std::path::Path>) -> Result<u8, Failure> {
    let name = backup_name(name)?;
    let Some(b) = cluster_backups(ctx, Some(&name)).await?.into_iter().find(|b| b.name == name.as_str()) else {
        return Err(Failure::not_found(format!(
            "no backup named {name}; `medusa-rs list-backups` shows the backups there are"
        )));
    };
    if b.status != ClusterState::Success {
        return Err(Failure {
            code: EXIT_NOT_SOUND,
            message: format!(
                "backup {name} is not complete ({} of {} nodes finished): it cannot be restored whole",
                b.finished_nodes,
                b.tokenmap.0.len()
            ),
        });
    }
    let sources: Vec<String> = b.tokenmap.0.iter().map(|n| n.host.clone()).collect();
    let mapping = match host_list {
        None => RestoreMapping {
            in_place: Some(true),
            host_map: sources
                .iter()
                .map(|s| (s.clone(), HostMapping { source: vec![s.clone()], seed: false }))
                .collect(),
        },
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure { code: 2, message: format!("--host-list {}: {e}", path.display()) })?;
            let host_map = parse_host_list(&text)
                .map_err(|e| Failure { code: 2, message: format!("--host-list {}: {e}", path.display()) })?;
            let in_place = host_map.iter().all(|(t, m)| m.source.first() == Some(t));
            RestoreMapping { in_place: Some(in_place), host_map }
        }
    };
    let mapped: Vec<&str> = mapping.host_map.values().filter_map(|m| m.source.first()).map(String::as_str).collect();
    if let Some(unknown) = mapped.iter().find(|s| !sources.iter().any(|x| x == *s)) {
        return Err(Failure {
            code: 2,
            message: format!(
                "--host-list names {unknown}, which is not a node of backup {name} ({})",
                sources.join(", ")
            ),
        });
    }
    let missing: Vec<&String> = sources.iter().filter(|s| !mapped.contains(&s.as_str())).collect();
    if !missing.is_empty() {
        let m: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(Failure {
            code: 2,
            message: format!(
                "--host-list restores no node from {}: every node of the backup needs a target",
                m.join(", ")
            ),
        });
    }
    let key = format!("restore-cluster-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let mapping_json = String::from_utf8(mapping.to_bytes()).unwrap_or_default();
    let part = |source: &str| b.nodes.iter().find(|n| n.fqdn == source);
    if ctx.json {
        let nodes: Vec<_> = mapping
            .host_map
            .iter()
            .map(|(t, m)| json!({ "target": t, "source": m.source.first(), "seed": m.seed }))
            .collect();
        ctx.print_json(&json!({
            "backup_name": name.as_str(), "in_place": mapping.is_in_place(), "restore_key": key,
            "restore_mapping": serde_json::from_str::<serde_json::Value>(&mapping_json).unwrap_or_default(),
            "nodes": nodes,
        }));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = mapping
        .host_map
        .iter()
        .map(|(t, m)| {
            let s = m.source.first().cloned().unwrap_or_default();
            let finished = part(&s).and_then(|p| p.finished).map(|_| "complete").unwrap_or("?");
            vec![t.clone(), s, m.seed.to_string(), finished.into()]
        })
        .collect();
    println!(
        "restore of {name} ({}, {} nodes, {}):",
        if mapping.is_in_place() { "in place" } else { "onto other nodes" },
        rows.len(),
        human_bytes(b.total_size)
    );
    table(&["TARGET", "SOURCE", "SEED", "PART"], &rows);
    println!("\nStop Cassandra on every target, then run on each one, with its own POD_NAME:");
    println!("  BACKUP_NAME={name} RESTORE_KEY={key} RESTORE_MAPPING='{mapping_json}' medusa-rs restore-init");
    println!("then start the nodes (seeds first).");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_are_medusas_seed_target_source_lines() {
        let m = parse_host_list("True,new1,old1\nFalse, new2 ,old2\n\n").unwrap();
        assert_eq!(m["new1"], HostMapping { source: vec!["old1".into()], seed: true });
        assert_eq!(m["new2"].source, ["old2"]);
        assert!(parse_host_list("new1,old1").is_err());
        assert!(parse_host_list("maybe,new1,old1").is_err());
        assert!(parse_host_list("True,new1,old1\nFalse,new1,old2").is_err());
    }
}
