//! The real Python Medusa 0.31 CLI and medusa-rs on one REAL Cassandra node, both ways, judged
//! by what the node serves over CQL (digests per table and index answers), never by files.
//!
//! - `python_restores_rs_backup`: medusa-rs (sidecar, gRPC, Management API) takes a full and a
//!   differential backup of the node; Python Medusa's `restore-node --in-place` stops the node
//!   with its `stop_cmd` (node.sh stop), moves the differential in, starts the node with its
//!   `start_cmd` (node.sh start); the node serves the rows of the differential backup.
//! - `rs_restores_python_backup`: Python Medusa's `backup-node` (CQL for the schema and token
//!   map, the real nodetool over JMX for the snapshot) takes a full and a differential backup;
//!   the node is stopped and medusa-rs' restore init container restores the differential in
//!   place, as the operator runs it; the node boots and serves the rows of that backup.
//!
//! CI runs both on Cassandra 5.0 with `local` storage (about 90 s each). The soak matrix
//! (`#[ignore]`d, `scripts/soak-cassandra.sh`) then also restores the full backups: Python's
//! `restore-node` of the medusa-rs full over a node with later unflushed writes, and medusa-rs'
//! restore of Python's full after a SIGKILL (the commit log must not be replayed).
//!
//! Python Medusa runs with `resolve_ip_addresses = False` (its token map is then keyed by the
//! node's address, 127.0.0.1, not by the pod name: there is no PTR record here) and
//! `[kubernetes] enabled = False`, so it stops and starts Cassandra itself. Because of that token
//! map, both the sidecar's GetBackups and Python's own `status` count Python's backups
//! incomplete (the node `127.0.0.1` has no node backup); Python's `status` then crashes on it
//! (`min()` of no node backups). The in-place restore does not depend on the token map.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::cassandra::{
    CASSANDRA_5, CqlData, NodeConfig, RealNode, WorkDir, diff, exclusive, require_installed, scripts_dir,
};
use harness::services::{python_medusa, tools_dir};
use medusa::service::pb::StatusType;
use medusa::service::pb::backup_request::Mode;
use medusa_tests::dc::uuid4;
use medusa_tests::{Backend, Kind};

use super::pod::{Access, RealPod, backup, hosts_file, restore_mapping};
use super::{Figures, LOCK_LIMIT, assert_same, phases};

/// Longest one Python Medusa command may run (a restore stops and starts the node).
const PY_LIMIT: Duration = Duration::from_secs(420);
/// The bucket prefix both sides use.
pub(super) const PREFIX: &str = "interop";
const POD: &str = "rs-dc1-r1-sts-0";

/// The Python CLI with a `medusa.ini` for the real node of `pod`.
pub(super) struct PyMedusa {
    exe: PathBuf,
    ini: PathBuf,
    dir: PathBuf,
}

impl PyMedusa {
    pub(super) fn new(backend: &Backend, pod: &RealPod, dir: &Path) -> PyMedusa {
        let exe = python_medusa().unwrap_or_else(|| {
            panic!(
                "the Python Medusa 0.31 CLI (<tools>/venv/bin/medusa) is missing: run \
                 scripts/install-test-deps.sh (or set MEDUSA_RS_TOOLS to where it installed)"
            )
        });
        let dir = dir.join("py-medusa");
        std::fs::create_dir_all(&dir).unwrap();
        let node = &pod.node;
        let c = &node.config;
        let node_sh = scripts_dir().join("node.sh");
        // The same node as RealNode starts it (NodeConfig::single): node.sh waits for CQL.
        let start = format!(
            "bash {} start {} {} --version {} --cluster {} --dc {} --rack {} --seeds {} --heap {} --num-tokens 16",
            node_sh.display(),
            node.dir.display(),
            c.index,
            c.version,
            c.cluster,
            c.dc,
            c.rack,
            c.seeds.join(","),
            c.heap
        );
        let stop = format!("bash {} stop {}", node_sh.display(), node.dir.display());
        let storage = backend.storage_section(Some(PREFIX), None);
        let ini = format!(
            "[cassandra]\nconfig_file = {yaml}\nstart_cmd = {start}\nstop_cmd = {stop}\nis_ccm = 0\nuse_sudo = False\n\
             resolve_ip_addresses = False\nnodetool_executable = {nodetool}\nnodetool_host = 127.0.0.1\n\
             nodetool_port = {jmx}\n\n{storage}fqdn = {POD}\nuse_sudo_for_restore = False\nconcurrent_transfers = 2\n\n\
             [grpc]\nenabled = False\n\n[kubernetes]\nenabled = False\n\n[logging]\nenabled = false\n",
            yaml = node.yaml().display(),
            nodetool = scripts_dir().join("nodetool").display(),
            jmx = c.jmx_port(),
        );
        let path = dir.join("medusa-py.ini");
        std::fs::write(&path, ini).unwrap();
        PyMedusa { exe, ini: path, dir }
    }

    /// `medusa --config-file <ini> <args>`; fails the test with both outputs unless it exits 0.
    pub(super) async fn ok(&self, args: &[&str], version: &str) -> String {
        let (code, text) = self.run(args, version).await;
        assert_eq!(code, Some(0), "medusa {} exited {code:?}:\n{text}", args.join(" "));
        text
    }

    /// `medusa --config-file <ini> <args>`: its exit code and output (stdout and stderr).
    async fn run(&self, args: &[&str], version: &str) -> (Option<i32>, String) {
        let t0 = Instant::now();
        let log = self.dir.join(format!("{}.log", args[0]));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--config-file").arg(&self.ini).args(args).current_dir(&self.dir);
        // stdout and stderr to a file: node.sh's java must not hold a pipe of ours.
        cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).kill_on_drop(true);
        for var in ["POD_IP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
            cmd.env_remove(var);
        }
        // For node.sh and the nodetool wrapper.
        cmd.env("MEDUSA_RS_TOOLS", tools_dir()).env("CASSANDRA_VERSION", version);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running {}: {e}", self.exe.display()));
        let status = tokio::time::timeout(PY_LIMIT, child.wait()).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let code = match status {
            Ok(s) => s.unwrap().code(),
            Err(_) => panic!("medusa {} ran over {PY_LIMIT:?}:\n{text}", args.join(" ")),
        };
        println!("[cassandra] Python medusa {} exited {code:?} in {:.1} s", args.join(" "), t0.elapsed().as_secs_f64());
        (code, text)
    }
}

/// A pod of one real node with the Management API configured, the sidecar not started.
pub(super) async fn pod_of(version: &str, work: &WorkDir, backend: &Backend) -> RealPod {
    let hosts = work.path().join("hosts");
    hosts_file(&hosts, &[(POD, "127.0.0.1".into())]).unwrap();
    let node = RealNode::new(&work.path().join(POD), NodeConfig::single(version, 1)).labelled(POD);
    let mut pod = RealPod::new(POD, node, work.path(), &hosts);
    pod.node.start().await.unwrap();
    pod.configure(backend, PREFIX, Access::MgmtApi).await.unwrap();
    pod
}

/// medusa-rs backs up, Python Medusa restores in place (stopping and starting the node itself).
/// With `full`, then Python restores the full backup too (the soak's variant: over 2 minutes).
async fn python_restores_rs_backup(version: &str, kind: Kind, full: bool) {
    require_installed(version).unwrap();
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let label = format!("py-restores-rs-{version}-{kind:?}");
    let mut f = Figures::new(&label);
    let work = WorkDir::new(&label).unwrap();
    let backend = Backend::start(kind).await.unwrap();
    let mut pod = pod_of(version, &work, &backend).await;
    pod.start_sidecar().await.unwrap();
    let py = PyMedusa::new(&backend, &pod, work.path());
    let cql = CqlData::new(&[pod.node.address()], "ONE");
    f.done("start node, Management API, sidecar");

    cql.schema("datacenter1").await.unwrap();
    cql.write(1).await.unwrap();
    pod.node.nodetool(&["flush"]).await.unwrap();
    cql.write(2).await.unwrap();
    let at_full = cql.digest().await.unwrap();
    backup(&[&pod], "rs-full", Mode::Full).await.unwrap();
    cql.create("late").await.unwrap();
    cql.write(3).await.unwrap();
    pod.node.nodetool(&["compact"]).await.unwrap();
    let at_diff = cql.digest().await.unwrap();
    backup(&[&pod], "rs-diff", Mode::Differential).await.unwrap();
    cql.write(4).await.unwrap();
    let later = cql.digest().await.unwrap();
    assert!(!diff(&at_diff, &later).is_empty(), "phase 4 changed nothing the digest sees");
    f.done("schema, phases 1-3, medusa-rs full and differential backups, phase 4");

    let listed = py.ok(&["list-backups"], version).await;
    assert!(listed.contains("rs-full") && listed.contains("rs-diff"), "Python does not list our backups:\n{listed}");
    pod.stop_sidecar().await.unwrap();
    let tmp = work.path().join("py-restore-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = py
        .ok(&["restore-node", "--backup-name", "rs-diff", "--in-place", "--temp-dir", tmp.to_str().unwrap()], version)
        .await;
    assert!(out.contains("Stopping Cassandra") && out.contains("Starting Cassandra"), "{out}");
    assert!(pod.node.is_running(), "Python Medusa's start_cmd left no node running:\n{out}");
    f.done("Python restore-node --in-place of rs-diff (stop_cmd, move, start_cmd)");

    let got = cql.digest().await.unwrap();
    println!("[cassandra] after Python restored rs-diff: users per phase {}", phases(&got));
    assert_same(&at_diff, &got, "Python Medusa's in-place restore of a medusa-rs differential backup", &[&pod.node]);
    f.done("CQL check");

    if full {
        // Back to the full backup, over a node that took writes since (unflushed: in the commit
        // log, which Python's restore empties).
        cql.write(5).await.unwrap();
        let out = py
            .ok(
                &["restore-node", "--backup-name", "rs-full", "--in-place", "--temp-dir", tmp.to_str().unwrap()],
                version,
            )
            .await;
        assert!(out.contains("Moving backup data to Cassandra data directory"), "{out}");
        let got = cql.digest().await.unwrap();
        println!("[cassandra] after Python restored rs-full: users per phase {}", phases(&got));
        assert_same(&at_full, &got, "Python Medusa's in-place restore of a medusa-rs full backup", &[&pod.node]);
        f.done("phase 5, Python restore-node --in-place of rs-full, CQL check");
    }

    pod.node.stop().await.unwrap();
    f.done("stop");
    f.finish(&[&pod.node]);
}

/// Python Medusa backs up the live node; medusa-rs' restore init container restores in place.
/// With `full`, then medusa-rs restores the full backup too after a SIGKILL (the soak's variant).
async fn rs_restores_python_backup(version: &str, kind: Kind, full: bool) {
    require_installed(version).unwrap();
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let label = format!("rs-restores-py-{version}-{kind:?}");
    let mut f = Figures::new(&label);
    let work = WorkDir::new(&label).unwrap();
    let backend = Backend::start(kind).await.unwrap();
    let mut pod = pod_of(version, &work, &backend).await;
    let py = PyMedusa::new(&backend, &pod, work.path());
    let cql = CqlData::new(&[pod.node.address()], "ONE");
    f.done("start node");

    cql.schema("datacenter1").await.unwrap();
    cql.write(1).await.unwrap();
    pod.node.nodetool(&["flush"]).await.unwrap();
    cql.write(2).await.unwrap();
    let at_full = cql.digest().await.unwrap();
    let out = py.ok(&["backup-node", "--backup-name", "py-full", "--mode", "full"], version).await;
    assert!(!out.contains(" ERROR "), "{out}");
    cql.create("late").await.unwrap();
    cql.write(3).await.unwrap();
    pod.node.nodetool(&["compact"]).await.unwrap();
    let at_diff = cql.digest().await.unwrap();
    py.ok(&["backup-node", "--backup-name", "py-diff", "--mode", "differential"], version).await;
    cql.write(4).await.unwrap();
    let later = cql.digest().await.unwrap();
    assert!(!diff(&at_diff, &later).is_empty(), "phase 4 changed nothing the digest sees");
    f.done("schema, phases 1-3, Python backup-node full and differential, phase 4");

    // The sidecar's GetBackups (what the operator syncs MedusaBackups from) and Python's
    // `status` agree on Python's backups: with no PTR record, Python's token map names the node
    // 127.0.0.1, for which the bucket has no node backup (it is under the pod name), so neither
    // counts the backup complete. In a pod, Python resolves the address to the pod name.
    pod.start_sidecar().await.unwrap();
    {
        let mut c = pod.client().await.unwrap();
        let all = c.get_backups(medusa::service::pb::GetBackupsRequest {}).await.unwrap().into_inner();
        for (name, kind) in [("py-full", "full"), ("py-diff", "differential")] {
            let s = all.backups.iter().find(|b| b.backup_name == name).unwrap_or_else(|| panic!("{name}: {all:?}"));
            let hosts: Vec<&str> = s.nodes.iter().map(|n| n.host.as_str()).collect();
            println!(
                "[cassandra] GetBackups: {name} {} {:?} nodes {}/{}, {} objects, {} bytes, hosts {hosts:?}",
                s.backup_type,
                StatusType::try_from(s.status),
                s.finished_nodes,
                s.total_nodes,
                s.total_objects,
                s.total_size,
            );
            assert_eq!((s.finished_nodes, s.total_nodes, s.backup_type.as_str()), (0, 1, kind), "{s:?}");
            assert_eq!(hosts, ["127.0.0.1"], "{s:?}");
            assert_ne!(s.status, StatusType::Success as i32, "{s:?}");
            // Python says so, then fails on it: `ClusterBackup.started` takes the min() of no
            // node backups (ValueError, exit 1).
            let (code, status) = py.run(&["status", "--backup-name", name], version).await;
            assert!(status.starts_with(&format!("{name} [Incomplete!]")), "{status}");
            let crash = status.contains("ValueError: min() arg is an empty sequence");
            println!("[cassandra] Python status {name}: Incomplete!, exit {code:?}, min() crash: {crash}");
        }
    }
    pod.stop_sidecar().await.unwrap();
    f.done("GetBackups and Python's status on Python's backups");

    // The operator's in-place restore: the node stopped (drained), the init container, start.
    pod.node.stop().await.unwrap();
    pod.restore_init("py-diff", &uuid4(), &restore_mapping(true, &[(POD, POD)])).await.unwrap();
    pod.node.start().await.unwrap();
    let got = cql.digest().await.unwrap();
    println!("[cassandra] after medusa-rs restored py-diff: users per phase {}", phases(&got));
    assert_same(&at_diff, &got, "medusa-rs' in-place restore of a Python Medusa backup", &[&pod.node]);
    f.done("medusa-rs restore init container of py-diff, start, CQL check");

    if full {
        // Python's token map names the node by its address (no PTR record here), not by the pod.
        let tokenmap = py.ok(&["fetch-tokenmap", "--backup-name", "py-full"], version).await;
        let printed: Vec<&str> = tokenmap.lines().filter(|l| !l.contains(" INFO ") && !l.contains(" DEBUG ")).collect();
        println!("[cassandra] Python's token map of py-full: {:.160}", printed.join(" "));

        // Unflushed writes, SIGKILL, then the full backup: the commit log must not be replayed.
        cql.write(5).await.unwrap();
        pod.node.kill().await.unwrap();
        let log = pod.restore_init("py-full", &uuid4(), &restore_mapping(true, &[(POD, POD)])).await.unwrap();
        for l in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
            println!("[cassandra] restore init: {l}");
        }
        pod.node.start().await.unwrap();
        let got = cql.digest().await.unwrap();
        println!("[cassandra] after medusa-rs restored py-full: users per phase {}", phases(&got));
        assert_same(&at_full, &got, "medusa-rs' in-place restore of a Python Medusa full backup", &[&pod.node]);
        f.done("phase 5, SIGKILL, medusa-rs restore init container of py-full, start, CQL check");
    }

    pod.node.stop().await.unwrap();
    f.done("stop");
    f.finish(&[&pod.node]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_restores_rs_backup_5_0_local() {
    python_restores_rs_backup(CASSANDRA_5, Kind::Local, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_restores_python_backup_5_0_local() {
    rs_restores_python_backup(CASSANDRA_5, Kind::Local, false).await
}

/// The soak matrix (`scripts/soak-cassandra.sh`): the full backups restored too. Local storage
/// only: Python Medusa cannot list s3s-fs buckets (see `tests/it/python_interop.rs`).
mod matrix {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn python_restores_rs_full_and_diff_5_0_local() {
        python_restores_rs_backup(CASSANDRA_5, Kind::Local, true).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn rs_restores_python_full_and_diff_5_0_local() {
        rs_restores_python_backup(CASSANDRA_5, Kind::Local, true).await
    }
}
