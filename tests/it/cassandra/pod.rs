//! One pod of a real datacenter: a real Cassandra node, the Management API in front of it (or
//! the real nodetool), its `medusa.ini` as k8ssandra-operator renders it, the real
//! `medusa-sidecar`, and the real `medusa-restore-init` run as the pod's init container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::cassandra::{RealMgmtApi, RealNode, scripts_dir};
use harness::services::tools_dir;
use medusa::service::pb::{self, StatusType, ext};
use medusa_tests::{Backend, Sidecar, binary};

/// How medusa-rs reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `[kubernetes] use_mgmt_api = 1` against a [`RealMgmtApi`] (what the operator configures).
    MgmtApi,
    /// `use_mgmt_api = 0`: `scripts/cassandra/nodetool` (the real NodeTool class) over JMX.
    Nodetool,
}

/// Longest a backup of one pod may take from AsyncBackup to SUCCESS.
const BACKUP_LIMIT: Duration = Duration::from_secs(300);
/// Longest one restore init container may run.
const RESTORE_LIMIT: Duration = Duration::from_secs(300);

/// A pod: node, API, config, sidecar.
pub struct RealPod {
    /// Pod name (`<cluster>-<dc>-<rack>-sts-<n>`), the node's name in the bucket.
    pub name: String,
    /// The node.
    pub node: RealNode,
    /// The Management API in front of it, while the pod runs.
    pub api: Option<RealMgmtApi>,
    /// The running sidecar.
    pub sidecar: Option<Sidecar>,
    /// The `medusa.ini` last written.
    pub ini: PathBuf,
    /// The hosts file naming every pod address (a headless service's PTR records).
    pub hosts_file: PathBuf,
    /// Sidecar logs and restore logs.
    pub log_dir: PathBuf,
    /// More environment for the sidecar (`MEDUSA_RS_NICE`, ...).
    pub sidecar_env: Vec<(String, String)>,
    restores: usize,
}

impl RealPod {
    /// A pod named `name` around `node`; config and logs in `dir`.
    pub fn new(name: &str, node: RealNode, dir: &Path, hosts_file: &Path) -> RealPod {
        let log_dir = dir.join(format!("{name}-pod"));
        std::fs::create_dir_all(&log_dir).expect("pod directory");
        RealPod {
            name: name.to_string(),
            node,
            api: None,
            sidecar: None,
            ini: log_dir.join("medusa.ini"),
            hosts_file: hosts_file.to_path_buf(),
            log_dir,
            sidecar_env: Vec::new(),
            restores: 0,
        }
    }

    /// Where medusa-rs keeps its state: `.medusa-rs` in the Cassandra root, as in a pod.
    pub fn state_dir(&self) -> PathBuf {
        self.node.root().join(".medusa-rs")
    }

    /// Starts the Management API (if not running) and writes `medusa.ini` for `access` and
    /// `backend` (prefix `prefix`).
    pub async fn configure(&mut self, backend: &Backend, prefix: &str, access: Access) -> Result<()> {
        if access == Access::MgmtApi && self.api.is_none() {
            self.api = Some(RealMgmtApi::start(self.node.target()).await?);
        }
        let ini = medusa_ini(backend, prefix, &self.node, access, self.api.as_ref());
        std::fs::write(&self.ini, ini)?;
        Ok(())
    }

    /// Starts the sidecar on the current `medusa.ini` (as the `medusa` container starts).
    pub async fn start_sidecar(&mut self) -> Result<()> {
        ensure!(self.sidecar.is_none(), "{}: the sidecar runs already", self.name);
        let root = self.node.root();
        let tools = tools_dir();
        let vars = [
            ("POD_NAME", self.name.as_str()),
            ("MEDUSA_MODE", "GRPC"),
            ("MEDUSA_TMP_DIR", root.to_str().unwrap()),
            ("MEDUSA_RS_HOSTS_FILE", self.hosts_file.to_str().unwrap()),
            // The nodetool wrapper's jars and Java.
            ("MEDUSA_RS_TOOLS", tools.to_str().unwrap()),
            ("CASSANDRA_VERSION", self.node.config.version.as_str()),
        ];
        let state = self.state_dir();
        std::fs::create_dir_all(&state)?;
        let mut vars = vars.to_vec();
        vars.extend(self.sidecar_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.sidecar = Some(Sidecar::start_at(&self.ini, &state, &self.log_dir, &vars).await?);
        Ok(())
    }

    /// Stops the sidecar (SIGTERM, as a deleted pod).
    pub async fn stop_sidecar(&mut self) -> Result<()> {
        if let Some(mut s) = self.sidecar.take() {
            s.signal(nix::sys::signal::Signal::SIGTERM);
            s.wait_exit(Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// The sidecar's log so far.
    pub fn sidecar_log(&self) -> String {
        self.sidecar.as_ref().map(Sidecar::log_text).unwrap_or_default()
    }

    /// Kills the sidecar (SIGKILL: a crashed or OOM-killed container).
    pub async fn kill_sidecar(&mut self) -> Result<()> {
        if let Some(mut s) = self.sidecar.take() {
            s.signal(nix::sys::signal::Signal::SIGKILL);
            s.wait_exit(Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// A client of the running sidecar's extension service.
    pub async fn ext_client(&self) -> Result<ExtClient> {
        let url = self.sidecar.as_ref().context("no sidecar")?.url();
        Ok(ExtClient::connect(url).await?)
    }

    /// A gRPC client of the running sidecar.
    pub async fn client(&self) -> Result<pb::medusa_client::MedusaClient<tonic::transport::Channel>> {
        self.sidecar.as_ref().context("no sidecar")?.client().await
    }

    /// Runs `medusa-restore-init` as the pod's `medusa-restore` init container with the
    /// operator's variables; fails unless it exits 0. Returns its log.
    pub async fn restore_init(&mut self, backup: &str, key: &str, mapping: &str) -> Result<String> {
        self.restore_init_with(backup, key, mapping, &[]).await
    }

    /// [`RealPod::restore_init`] with more variables (`RESTORE_TABLES`, `RESTORE_KEYSPACES`).
    pub async fn restore_init_with(
        &mut self,
        backup: &str,
        key: &str,
        mapping: &str,
        vars: &[(&str, &str)],
    ) -> Result<String> {
        ensure!(!self.node.is_running(), "{}: restore init container while Cassandra runs", self.name);
        self.restores += 1;
        let log = self.log_dir.join(format!("restore-{}.log", self.restores));
        let file = std::fs::File::create(&log)?;
        let root = self.node.root();
        let child = std::process::Command::new(binary("medusa-restore-init"))
            .arg("--config")
            .arg(&self.ini)
            .env("RUST_LOG", "info")
            .env("MEDUSA_MODE", "RESTORE")
            .env("POD_NAME", &self.name)
            .env("MEDUSA_TMP_DIR", &root)
            .env("MEDUSA_RS_STATE_DIR", self.state_dir())
            .env("MEDUSA_RS_HOSTS_FILE", &self.hosts_file)
            .env("BACKUP_NAME", backup)
            .env("RESTORE_KEY", key)
            .env("RESTORE_MAPPING", mapping)
            .envs(vars.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let t0 = Instant::now();
        let status = tokio::time::timeout(RESTORE_LIMIT, tokio::task::spawn_blocking(move || wait(child)))
            .await
            .with_context(|| format!("{}: medusa-restore-init ran over {RESTORE_LIMIT:?}", self.name))???;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if !status.success() {
            bail!("{}: medusa-restore-init {backup} exited with {status}; log:\n{text}", self.name);
        }
        println!(
            "[cassandra] {}: restore init container ({backup}) done in {:.1} s",
            self.name,
            t0.elapsed().as_secs_f64()
        );
        Ok(text)
    }
}

fn wait(mut child: std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    child.wait()
}

/// `{"in_place":true|false,"host_map":{target:{"source":[source],"seed":false}}}` as the
/// operator's Go code encodes it.
pub fn restore_mapping(in_place: bool, pairs: &[(&str, &str)]) -> String {
    let map: Vec<String> = pairs.iter().map(|(t, s)| format!(r#""{t}":{{"source":["{s}"],"seed":false}}"#)).collect();
    format!(r#"{{"in_place":{in_place},"host_map":{{{}}}}}"#, map.join(","))
}

/// A `medusa.ini` as k8ssandra-operator renders it (every line indented by four spaces), with
/// `[cassandra] config_file` pointing at the node's `cassandra.yaml`; for [`Access::Nodetool`],
/// no `[kubernetes]` section but the nodetool keys.
fn medusa_ini(backend: &Backend, prefix: &str, node: &RealNode, access: Access, api: Option<&RealMgmtApi>) -> String {
    let storage = medusa_tests::dc::operator_storage(backend, prefix, &[]);
    let mut cassandra = format!("use_sudo = false\nconfig_file = {}\n", node.yaml().display());
    let kubernetes = match (access, api) {
        (Access::MgmtApi, Some(api)) => {
            format!("\n[kubernetes]\nuse_mgmt_api = 1\nenabled = 1\ncassandra_url = {}\n", api.snapshot_url)
        }
        _ => {
            cassandra.push_str(&format!(
                "nodetool_executable = {}\nnodetool_host = 127.0.0.1\nnodetool_port = {}\n",
                scripts_dir().join("nodetool").display(),
                node.config.jmx_port()
            ));
            String::new()
        }
    };
    let text = format!(
        "[cassandra]\n{cassandra}\n[storage]\n{storage}\n[grpc]\nenabled = 1\n\n[logging]\nlevel = DEBUG\n\n\
         [monitoring]\nmetrics_port = 0\n{kubernetes}"
    );
    medusa_tests::dc::operator_indent(&text)
}

/// AsyncBackup `name` on every pod in turn, then BackupStatus on each until it is no longer
/// in progress (as the operator's MedusaBackupJob); fails on a failed pod with its error and
/// sidecar log. Returns the wall time.
pub async fn backup(pods: &[&RealPod], name: &str, mode: pb::backup_request::Mode) -> Result<Duration> {
    let t0 = Instant::now();
    for p in pods {
        let mut c = p.client().await?;
        c.async_backup(pb::BackupRequest { name: name.to_string(), mode: mode as i32 })
            .await
            .with_context(|| format!("{}: AsyncBackup {name}", p.name))?;
    }
    for p in pods {
        let mut c = p.client().await?;
        loop {
            let s = c
                .backup_status(pb::BackupStatusRequest { backup_name: name.to_string() })
                .await
                .with_context(|| format!("{}: BackupStatus {name}", p.name))?
                .into_inner();
            match StatusType::try_from(s.status) {
                Ok(StatusType::Success) => break,
                Ok(StatusType::InProgress) => {}
                other => bail!(
                    "{}: backup {name} ended {other:?}: {}\n---- sidecar log (tail) ----\n{}",
                    p.name,
                    s.error,
                    tail(&p.sidecar_log(), 40)
                ),
            }
            ensure!(t0.elapsed() < BACKUP_LIMIT, "{}: backup {name} still running after {BACKUP_LIMIT:?}", p.name);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let took = t0.elapsed();
    println!("[cassandra] backup {name} ({mode:?}) on {} pod(s) in {:.1} s", pods.len(), took.as_secs_f64());
    Ok(took)
}

/// The extension service's client.
pub type ExtClient = ext::medusa_extensions_client::MedusaExtensionsClient<tonic::transport::Channel>;

/// Longest an online table restore may take.
const RESTORE_TABLES_LIMIT: Duration = Duration::from_secs(300);

/// RestoreTablesStatus of `job` until it is no longer running; its last status.
pub async fn wait_restore_tables(p: &RealPod, job: &str) -> Result<ext::RestoreTablesStatusResponse> {
    let t0 = Instant::now();
    let mut c = p.ext_client().await?;
    loop {
        let s = c
            .restore_tables_status(ext::RestoreTablesStatusRequest { job_id: job.into() })
            .await
            .with_context(|| format!("{}: RestoreTablesStatus {job}", p.name))?
            .into_inner();
        let phase = ext::RestoreTablesPhase::try_from(s.phase).unwrap_or_default();
        if matches!(phase, ext::RestoreTablesPhase::Done | ext::RestoreTablesPhase::Failed) {
            return Ok(s);
        }
        ensure!(
            t0.elapsed() < RESTORE_TABLES_LIMIT,
            "{}: job {job} still {phase:?} after {RESTORE_TABLES_LIMIT:?}",
            p.name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// RestoreTables on every pod, then each job to its end; fails unless every one is DONE.
pub async fn restore_tables(pods: &[&RealPod], backup: &str, tables: &[&str], allow_new_table_id: bool) -> Result<()> {
    let t0 = Instant::now();
    let mut jobs = Vec::new();
    for p in pods {
        let req = ext::RestoreTablesRequest {
            backup_name: backup.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            allow_new_table_id,
        };
        let r =
            p.ext_client().await?.restore_tables(req).await.with_context(|| format!("{}: RestoreTables", p.name))?;
        jobs.push(r.into_inner().job_id);
    }
    for (p, job) in pods.iter().zip(&jobs) {
        let s = wait_restore_tables(p, job).await?;
        ensure!(
            s.phase == ext::RestoreTablesPhase::Done as i32,
            "{}: restore-tables {job} ended {:?}: {}\n---- sidecar log (tail) ----\n{}",
            p.name,
            ext::RestoreTablesPhase::try_from(s.phase),
            s.error,
            tail(&p.sidecar_log(), 40)
        );
        println!(
            "[cassandra] {}: {tables:?} of {backup} loaded: {} SSTables, {} files",
            p.name, s.sstables_loaded, s.files_total
        );
    }
    println!("[cassandra] restore-tables on {} pod(s) in {:.1} s", pods.len(), t0.elapsed().as_secs_f64());
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The hosts(5) file a headless service's PTR records amount to: each pod address named by
/// an IP-shaped record first, then `<pod>.<service>...`.
pub fn hosts_file(path: &Path, pods: &[(&str, String)]) -> Result<()> {
    let mut s = String::from("# pod addresses as the headless service names them\n");
    for (pod, ip) in pods {
        let dashed = ip.replace('.', "-");
        s.push_str(&format!(
            "{ip}\t{dashed}.k8ssandra.pod.cluster.local {pod}.rs-dc1-all-pods-service.k8ssandra.svc.cluster.local\n"
        ));
    }
    std::fs::write(path, s)?;
    Ok(())
}
