//! A datacenter of simulated Cassandra nodes, each with its own Management API and a real
//! `medusa-sidecar`, sharing one bucket; and [`Operator`], a client that drives them the way
//! k8ssandra-operator's controllers do.
//!
//! - [`DcSpec`] / [`Datacenter`]: pods named as cass-operator names them
//!   (`<cluster>-<dc>-<rack>-sts-<ordinal>`, racks filled by its `SplitRacks`), one loopback
//!   address each (`127.0.0.<n>`), a ring whose gossip lists every node, a hosts file that names
//!   the addresses as a headless service's PTR records would (`MEDUSA_RS_HOSTS_FILE`), and the
//!   `medusa.ini` the operator renders.
//! - [`Operator`]: MedusaBackupJob, MedusaTask (`sync`, `purge`, `prepare_restore`) and
//!   MedusaRestoreJob, restated from the operator's Go code (`controllers/medusa/*.go`,
//!   `pkg/medusa/hostmap.go`) with its rules, including the unfriendly ones: errors only
//!   logged, a failed status poll aborting the round, the first summary of that name wins.
//!   Only the requeue delay is shorter (the operator waits 15 s) and every wait is bounded.
//!
//! Files: this one (the datacenter), `dc/pod.rs` (one pod: node, sidecar process, init
//! container), `dc/resources.rs` (the operator's custom resources and small rules),
//! `dc/operator.rs` (the controllers), `dc/hostmap.rs` (restore host map and backup validation).

mod hostmap;
mod operator;
mod pod;
mod resources;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use harness::services::{TempDir, free_port};
use harness::sim::{MgmtApiServer, NodeIdentity, SimNode, SimSpec};

pub use hostmap::{pair_racks, validate_backup_for_restore};
pub use operator::Operator;
pub use pod::{Client, InitRun, Pod};
pub use resources::{
    BackupJob, MedusaBackup, PrepareTask, PurgeTask, RestoreJob, RestoreMapping, SyncTask, TaskResult, go_error,
    humanize, uuid4,
};

use crate::Backend;
use crate::host::DefaultPorts;

/// Kubernetes namespace in the names of the hosts file.
const NAMESPACE: &str = "k8ssandra";

/// What one pod's node holds and how its sidecar is configured beyond the datacenter's defaults.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// The simulated node (its seed gives tokens and file contents).
    pub sim: SimSpec,
    /// Extra `[storage]` lines for this pod only (`key = value`; replace the defaults).
    pub storage_extra: Vec<String>,
}

/// A datacenter as a CassandraDatacenter describes it.
#[derive(Debug, Clone)]
pub struct DcSpec {
    /// `spec.clusterName`.
    pub cluster: String,
    /// The Cassandra datacenter name (`spec.datacenterName`, else the object's name).
    pub dc: String,
    /// The CassandraDatacenter object's name (what MedusaTask and MedusaBackupJob name).
    pub object_name: String,
    /// `spec.racks` names, in spec order.
    pub racks: Vec<String>,
    /// Address of the first pod is `127.0.0.<first_address>`, then one up per pod.
    pub first_address: u8,
    /// Seed of the cluster's schema (table ids), shared by its nodes.
    pub schema_seed: u64,
    /// `[storage] prefix` (the operator defaults it to the K8ssandraCluster's name).
    pub prefix: String,
    /// Extra `[storage]` lines for every pod (`key = value`; replace the defaults).
    pub storage_extra: Vec<String>,
    /// One per pod, in pod-name order; `spec.size` is their count.
    pub pods: Vec<PodSpec>,
}

impl DcSpec {
    /// `size` small nodes (seeds `seed`, `seed + 1`, ...) of cluster `cluster`, datacenter `dc`
    /// (object `<cluster>-<dc>-object`), racks `racks`, prefix `demo`.
    pub fn new(cluster: &str, dc: &str, racks: &[&str], size: usize, first_address: u8, seed: u64) -> DcSpec {
        DcSpec {
            cluster: cluster.to_string(),
            dc: dc.to_string(),
            object_name: format!("{cluster}-{dc}-object"),
            racks: racks.iter().map(|r| r.to_string()).collect(),
            first_address,
            schema_seed: seed * 1000,
            prefix: "demo".to_string(),
            storage_extra: Vec::new(),
            pods: (0..size)
                .map(|i| PodSpec {
                    sim: SimSpec { seed: seed + i as u64, ..SimSpec::small() },
                    storage_extra: Vec::new(),
                })
                .collect(),
        }
    }

    /// The default datacenter of the suites: cluster `demo`, `dc1`, 3 pods in racks `r1`
    /// (2 pods) and `r2` (1 pod), addresses 127.0.0.1-3.
    pub fn demo() -> DcSpec {
        DcSpec::new("demo", "dc1", &["r1", "r2"], 3, 1, 1)
    }

    /// `spec.size`.
    pub fn size(&self) -> usize {
        self.pods.len()
    }

    /// The StatefulSet of a rack: `<cluster>-<dc>-<rack>-sts`.
    pub fn statefulset(&self, rack: &str) -> String {
        format!("{}-{}-{}-sts", self.cluster, self.dc, rack)
    }

    /// Pod names per rack as cass-operator creates them (and as the operator's
    /// `getTargetRackFQDNs` computes them): `SplitRacks(size, racks)`, ordinals from 0.
    pub fn rack_pods(&self) -> Vec<(String, Vec<String>)> {
        let counts = split_racks(self.size(), self.racks.len());
        self.racks
            .iter()
            .zip(counts)
            .map(|(rack, n)| (rack.clone(), (0..n).map(|j| format!("{}-{j}", self.statefulset(rack))).collect()))
            .collect()
    }
}

/// cass-operator's `SplitRacks`: `nodes` spread over `racks`, the first racks taking one more.
pub fn split_racks(nodes: usize, racks: usize) -> Vec<usize> {
    if racks == 0 {
        return Vec::new();
    }
    let (per, extra) = (nodes / racks, nodes % racks);
    (0..racks).map(|i| per + usize::from(i < extra)).collect()
}

/// N pods forming one Cassandra datacenter, their sidecars sharing one bucket.
pub struct Datacenter {
    /// What it was built from.
    pub spec: DcSpec,
    /// Pods in name order (the order the operator lists them in).
    pub pods: Vec<Pod>,
    /// The hosts(5) file every sidecar names ring nodes by.
    pub hosts_file: PathBuf,
    dir: TempDir,
    /// The sidecars bind the default metrics port (see [`crate::host`]); last, so that it is
    /// let go after the pods (their sidecars) are gone.
    _default_ports: DefaultPorts,
}

impl Datacenter {
    /// Generates the nodes, starts their Management APIs as one ring, writes the hosts file and
    /// every `medusa.ini` for `backend`, and starts every sidecar.
    pub async fn start(spec: DcSpec, backend: &Backend) -> Result<Datacenter> {
        let dc = Datacenter::create(spec, backend).await?;
        dc.start_all().await?;
        Ok(dc)
    }

    /// Like [`Datacenter::start`] without starting the sidecars.
    pub async fn create(spec: DcSpec, backend: &Backend) -> Result<Datacenter> {
        let default_ports = DefaultPorts::share().await;
        let dir = TempDir::new("dc")?;
        let mut placed: Vec<(String, String)> = spec
            .rack_pods()
            .into_iter()
            .flat_map(|(rack, pods)| pods.into_iter().map(move |p| (p, rack.clone())))
            .collect();
        placed.sort();
        ensure!(placed.len() == spec.size(), "{} pods placed for size {}", placed.len(), spec.size());
        let ips: Vec<String> =
            (0..placed.len()).map(|i| format!("127.0.0.{}", spec.first_address as usize + i)).collect();
        let seeds = vec![format!("{}:7000", ips[0])];
        let mut jobs = Vec::new();
        for (i, ((_, rack), ip)) in placed.iter().zip(&ips).enumerate() {
            let root = dir.path().join(format!("pod-{i}")).join("cassandra");
            let who = NodeIdentity {
                cluster_name: spec.cluster.clone(),
                dc: spec.dc.clone(),
                rack: rack.clone(),
                listen_address: ip.clone(),
                schema_seed: Some(spec.schema_seed),
                seeds: seeds.clone(),
            };
            let sim = spec.pods[i].sim.clone();
            jobs.push(tokio::task::spawn_blocking(move || SimNode::generate_with(&root, &sim, &who)));
        }
        let mut sims = Vec::new();
        for j in jobs {
            sims.push(j.await??);
        }
        let all_tokens: Vec<i64> = sims.iter().flat_map(|s| s.tokens.clone()).collect();
        let distinct: BTreeSet<i64> = all_tokens.iter().copied().collect();
        ensure!(distinct.len() == all_tokens.len(), "two nodes of the ring share a token");
        let ring: Vec<Arc<Mutex<SimNode>>> = sims.into_iter().map(|s| Arc::new(Mutex::new(s))).collect();

        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts_text(&spec, &placed, &ips))?;
        let mut pods = Vec::new();
        for (i, ((name, rack), ip)) in placed.into_iter().zip(ips).enumerate() {
            let sim = ring[i].clone();
            let api = MgmtApiServer::start_in_ring(sim.clone(), ring.clone()).await?;
            let (root, yaml) = {
                let s = sim.lock().unwrap();
                (s.root.clone(), s.cassandra_yaml.clone())
            };
            let pod_dir = dir.path().join(format!("pod-{i}"));
            let port = free_port();
            let ini_path = pod_dir.join("medusa.ini");
            let extra: Vec<String> = spec.storage_extra.iter().chain(&spec.pods[i].storage_extra).cloned().collect();
            std::fs::write(&ini_path, medusa_ini(backend, &spec.prefix, &yaml, port, &api.snapshot_url, &extra))?;
            pods.push(Pod {
                name,
                rack,
                ip,
                port,
                sim,
                api,
                root,
                ini_path,
                state_dir: pod_dir.join("state"),
                dir: pod_dir,
                hosts_file: hosts_file.clone(),
                sidecar: Mutex::new(None),
                starts: AtomicUsize::new(0),
            });
        }
        Ok(Datacenter { spec, pods, hosts_file, dir, _default_ports: default_ports })
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Pod names in list order.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.name.clone()).collect()
    }

    /// Starts every sidecar that is not running.
    pub async fn start_all(&self) -> Result<()> {
        for p in &self.pods {
            if !p.is_running() {
                p.start_sidecar().await?;
            }
        }
        Ok(())
    }

    /// SIGTERM to every sidecar (the datacenter is stopped), waiting for each exit.
    pub async fn stop_all(&self) -> Result<()> {
        for p in &self.pods {
            p.stop_sidecar().await?;
        }
        Ok(())
    }

    /// The last `lines` lines of every pod's sidecar logs at INFO and above (DEBUG, which the
    /// operator's `medusa.ini` asks for, is mostly HTTP/2 frames), for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in &self.pods {
            let all = strip_ansi(&p.logs());
            let v: Vec<&str> = all.lines().filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE ")).collect();
            out.push_str(&format!("===== {} (last {lines} lines, INFO and above) =====\n", p.name));
            out.push_str(&v[v.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// The bucket as the first pod's configuration reaches it.
    pub fn storage(&self) -> Result<medusa::store::Storage> {
        let cfg = medusa::config::Config::load(&self.pods[0].ini_path)?;
        Ok(medusa::store::Storage::from_config(&cfg.storage)?)
    }

    /// (objects, bytes) of `pod`'s manifest of `backup`.
    pub async fn manifest_totals(&self, pod: &str, backup: &str) -> Result<(u64, u64)> {
        let storage = self.storage()?;
        let n = medusa::format::names::Fqdn::new(pod)?;
        let b = medusa::format::names::BackupName::new(backup)?;
        let bytes = medusa::bucket::node_backup::manifest(&storage, &n, &b)
            .await?
            .with_context(|| format!("{pod} has no manifest for {backup}"))?;
        Ok(medusa::format::manifest::totals(&medusa::format::manifest::parse(&bytes)?))
    }

    /// The work directory (pods, hosts file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The names a headless service gives the pod addresses: an IP-shaped pod record first (which
/// Medusa's rule skips), then `<pod>.<service>...`.
fn hosts_text(spec: &DcSpec, placed: &[(String, String)], ips: &[String]) -> String {
    let mut s = format!("# {} {}: pod addresses as the headless service names them\n", spec.cluster, spec.dc);
    for ((pod, _), ip) in placed.iter().zip(ips) {
        let dashed = ip.replace('.', "-");
        let service = format!("{}-{}-all-pods-service", spec.cluster, spec.dc);
        s.push_str(&format!(
            "{ip}\t{dashed}.{NAMESPACE}.pod.cluster.local {pod}.{service}.{NAMESPACE}.svc.cluster.local\n"
        ));
    }
    s
}

/// A `medusa.ini` as k8ssandra-operator renders it (`CreateMedusaIni`: every line indented by
/// four spaces), plus what the simulation needs: `[cassandra] config_file` (the operator relies
/// on the default path) and the backend's own keys (`base_path`, the emulator's host and port).
fn medusa_ini(backend: &Backend, prefix: &str, yaml: &Path, port: u16, snapshot_url: &str, extra: &[String]) -> String {
    let storage = operator_storage(backend, prefix, extra);
    let text = format!(
        "[cassandra]\nuse_sudo = false\nconfig_file = {}\n\n[storage]\n{storage}\n[grpc]\nenabled = 1\nport = {port}\n\n\
         [logging]\nlevel = DEBUG\n\n[kubernetes]\nuse_mgmt_api = 1\nenabled = 1\ncassandra_url = {snapshot_url}\n",
        yaml.display()
    );
    operator_indent(&text)
}

/// The `[storage]` lines k8ssandra-operator renders for `backend`, one `key = value` each: the
/// backend's own keys, the operator's defaults where the backend sets none, then `extra`
/// (`key = value` lines) overriding either.
pub fn operator_storage(backend: &Backend, prefix: &str, extra: &[String]) -> String {
    let mut storage: Vec<(String, String)> = vec![("use_sudo_for_restore".into(), "false".into())];
    let section = backend.storage_section(Some(prefix), None);
    for line in section.lines().skip_while(|l| l.trim() != "[storage]").skip(1) {
        if let Some((k, v)) = line.split_once('=') {
            storage.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let defaults = [
        ("max_backup_age", "0"),
        ("max_backup_count", "0"),
        ("secure", "False"),
        ("ssl_verify", "False"),
        ("transfer_max_bandwidth", "50MB/s"),
        ("concurrent_transfers", "1"),
        ("multi_part_upload_threshold", "104857600"),
    ];
    for (k, v) in defaults {
        if !storage.iter().any(|(key, _)| key == k) {
            storage.push((k.into(), v.into()));
        }
    }
    for line in extra {
        let (k, v) = line.split_once('=').expect("storage_extra lines are `key = value`");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match storage.iter_mut().find(|(key, _)| *key == k) {
            Some(entry) => entry.1 = v,
            None => storage.push((k, v)),
        }
    }
    storage.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// `text` with every non-empty line indented by four spaces, as the operator's
/// `CreateMedusaIni` writes `medusa.ini`.
pub fn operator_indent(text: &str) -> String {
    text.lines().map(|l| if l.is_empty() { "\n".to_string() } else { format!("    {l}\n") }).collect()
}
