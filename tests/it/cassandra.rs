//! Scenarios on real Apache Cassandra nodes: the real sidecar and the real restore
//! init container against nodes started from the `cassandra-all` jars
//! (`harness::cassandra`, `scripts/cassandra/`), every restore judged by what the restarted
//! nodes serve over CQL — a digest per table of a full scan, and the answers of the 2i, SASI
//! and SAI indexes — compared with what they served right after the backed-up data was
//! written. Nothing here compares files.
//!
//! - `one_node`: full backup through gRPC (Management API mode), writes, compaction, a
//!   differential backup, writes; the differential restored in place after a drained stop, the
//!   full one after a SIGKILL (unflushed writes in the commit log); then the same with the real
//!   nodetool (`use_mgmt_api = 0`); a selective restore (`RESTORE_TABLES`) of one table; last
//!   the online restore (`RestoreTables` into the running node, see `online_restore`).
//! - `ring`: three nodes, RF 3; a backup of each, the volumes wiped, an in-place restore of all
//!   three; QUORUM reads return every row; a truncated RF-3 table loaded back into the running
//!   ring (`RestoreTables` on each node). Then `remote`: a new ring on 127.0.0.4-6 with other
//!   pod names and its own vnode tokens, restored from the first ring's backup with the
//!   operator's host map: it starts with the old tokens and serves every row.
//!
//! CI runs them on Cassandra 5.0 with `local` storage. The matrix (4.1 and 5.0, `local` and S3
//! through s3s-fs) is `#[ignore]`d here and run by `scripts/soak-cassandra.sh`. Each scenario
//! prints its steps' times and the nodes' start times. The nodes use fixed addresses and
//! ports, so the scenarios hold a machine-wide lock ([`harness::cassandra::exclusive`]).

mod live_load;
mod pod;
mod python;
mod side_by_side;

use std::time::{Duration, Instant};

use harness::cassandra::{
    CASSANDRA_4, CASSANDRA_5, CqlData, Digests, NodeConfig, RealNode, Tokens, WorkDir, diff, exclusive, parse_ring,
    require_installed, ring_nodes, start_all,
};
use medusa::service::pb::backup_request::Mode;
use medusa_tests::dc::uuid4;
use medusa_tests::{Backend, Kind};
use pod::{Access, RealPod, backup, hosts_file, restore_mapping};

/// Longest a scenario waits for another one to release the nodes' addresses.
const LOCK_LIMIT: Duration = Duration::from_secs(1800);

/// Times of a scenario's steps, printed as they end and as a table at the end.
struct Figures {
    name: String,
    t0: Instant,
    step: Instant,
    rows: Vec<(String, Duration)>,
}

impl Figures {
    fn new(name: &str) -> Figures {
        println!("[cassandra] ===== scenario {name} =====");
        Figures { name: name.to_string(), t0: Instant::now(), step: Instant::now(), rows: Vec::new() }
    }

    /// Ends the current step.
    fn done(&mut self, step: &str) {
        let d = self.step.elapsed();
        println!("[cassandra] {}: step `{step}` took {:.1} s", self.name, d.as_secs_f64());
        self.rows.push((step.to_string(), d));
        self.step = Instant::now();
    }

    fn finish(self, nodes: &[&RealNode]) {
        let mut s =
            format!("[cassandra] ===== scenario {} took {:.1} s =====\n", self.name, self.t0.elapsed().as_secs_f64());
        for (step, d) in &self.rows {
            s.push_str(&format!("    {:>7.1} s  {step}\n", d.as_secs_f64()));
        }
        for n in nodes {
            let starts: Vec<String> = n.starts.iter().map(|d| format!("{:.1}", d.as_secs_f64())).collect();
            s.push_str(&format!("    node {} ({}) starts: {} s\n", n.label, n.address(), starts.join(", ")));
        }
        print!("{s}");
    }
}

/// Fails with what differs, per table, and the nodes' WARN/ERROR log lines.
fn assert_same(expected: &Digests, actual: &Digests, what: &str, nodes: &[&RealNode]) {
    let d = diff(expected, actual);
    if d.is_empty() {
        println!("[cassandra] {what}: all {} tables and index answers as expected", actual.len());
        return;
    }
    let mut problems = String::new();
    for n in nodes {
        let p = n.log_problems();
        problems.push_str(&format!("---- {}: {} WARN/ERROR lines, last 15 ----\n", n.label, p.len()));
        problems.push_str(&p[p.len().saturating_sub(15)..].join("\n"));
        problems.push('\n');
    }
    panic!("{what}: {} differences:\n{}\n{problems}", d.len(), d.join("\n"));
}

/// The rows of `users` per phase in a digest (to show which phases a restore brought back).
fn phases(d: &Digests) -> String {
    d.get("rs1.users").and_then(|v| v.get("phases")).map(|p| p.to_string()).unwrap_or_default()
}

// --- one node --------------------------------------------------------------------------------

async fn one_node(version: &str, kind: Kind) {
    require_installed(version).unwrap();
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let label = format!("one-node-{version}-{kind:?}");
    let mut f = Figures::new(&label);
    let work = WorkDir::new(&label).unwrap();
    let name = "rs-dc1-r1-sts-0";
    let hosts = work.path().join("hosts");
    hosts_file(&hosts, &[(name, "127.0.0.1".into())]).unwrap();
    let node = RealNode::new(&work.path().join(name), NodeConfig::single(version, 1)).labelled(name);
    let mut pod = RealPod::new(name, node, work.path(), &hosts);
    let backend = Backend::start(kind).await.unwrap();
    pod.node.start().await.unwrap();
    pod.configure(&backend, "real", Access::MgmtApi).await.unwrap();
    pod.start_sidecar().await.unwrap();
    let cql = CqlData::new(&[pod.node.address()], "ONE");
    f.done("start node, Management API, sidecar");

    // Phase 1 flushed, a table dropped (its folder and auto-snapshot stay), phase 2 (updates and
    // deletes of phase 1) only in memtables: the snapshot's flush has to catch it.
    cql.schema("datacenter1").await.unwrap();
    cql.create("dropped_early").await.unwrap();
    cql.create("dropped_late").await.unwrap();
    cql.write(1).await.unwrap();
    pod.node.nodetool(&["flush"]).await.unwrap();
    cql.drop_table("dropped_early").await.unwrap();
    cql.write(2).await.unwrap();
    let at_full = cql.digest().await.unwrap();
    f.done("schema, phases 1 (flushed) and 2 (memtables)");

    backup(&[&pod], "full-1", Mode::Full).await.unwrap();
    let calls = pod.api.as_ref().unwrap().calls();
    assert!(calls.iter().any(|c| c == "POST /api/v0/ops/node/snapshots"), "{calls:?}");
    assert!(
        calls.iter().any(|c| c.starts_with("DELETE /api/v0/ops/node/snapshots?snapshotNames=medusa-full-1")),
        "{calls:?}"
    );
    f.done("full backup (gRPC, Management API)");

    cql.create("late").await.unwrap();
    cql.write(3).await.unwrap();
    pod.node.nodetool(&["compact"]).await.unwrap();
    let at_diff = cql.digest().await.unwrap();
    backup(&[&pod], "diff-1", Mode::Differential).await.unwrap();
    f.done("table created, phase 3, compaction, differential backup");

    cql.write(4).await.unwrap();
    cql.drop_table("dropped_late").await.unwrap();
    let later = cql.digest().await.unwrap();
    assert!(!diff(&at_diff, &later).is_empty(), "phase 4 changed nothing the digest sees");
    f.done("phase 4, a table dropped after the backups");

    // The operator's in-place restore: datacenter stopped (drained), init container, start.
    pod.stop_sidecar().await.unwrap();
    pod.node.stop().await.unwrap();
    pod.restore_init("diff-1", &uuid4(), &restore_mapping(true, &[(name, name)])).await.unwrap();
    pod.node.start().await.unwrap();
    pod.start_sidecar().await.unwrap();
    let got = cql.digest().await.unwrap();
    println!("[cassandra] after restoring diff-1: users per phase {}", phases(&got));
    assert_same(&at_diff, &got, "in-place restore of the differential backup", &[&pod.node]);
    f.done("in-place restore of diff-1 after a drained stop, CQL check");

    // Unflushed writes in the commit log, then SIGKILL: the restore must not replay them.
    cql.write(5).await.unwrap();
    pod.stop_sidecar().await.unwrap();
    pod.node.kill().await.unwrap();
    pod.restore_init("full-1", &uuid4(), &restore_mapping(true, &[(name, name)])).await.unwrap();
    pod.node.start().await.unwrap();
    let got = cql.digest().await.unwrap();
    println!("[cassandra] after restoring full-1: users per phase {}", phases(&got));
    assert_same(&at_full, &got, "in-place restore of the full backup after a SIGKILL", &[&pod.node]);
    f.done("in-place restore of full-1 after a SIGKILL, CQL check");

    // The same node through the real nodetool (use_mgmt_api = 0).
    pod.configure(&backend, "real-nodetool", Access::Nodetool).await.unwrap();
    pod.start_sidecar().await.unwrap();
    cql.write(6).await.unwrap();
    let at_nodetool = cql.digest().await.unwrap();
    backup(&[&pod], "nt-full", Mode::Full).await.unwrap();
    cql.write(7).await.unwrap();
    backup(&[&pod], "nt-diff-after", Mode::Differential).await.unwrap();
    pod.stop_sidecar().await.unwrap();
    pod.node.stop().await.unwrap();
    pod.restore_init("nt-full", &uuid4(), &restore_mapping(true, &[(name, name)])).await.unwrap();
    pod.node.start().await.unwrap();
    let got = cql.digest().await.unwrap();
    assert_same(&at_nodetool, &got, "in-place restore of a backup taken with the real nodetool", &[&pod.node]);
    f.done("nodetool mode: backups, in-place restore, CQL check");

    // Selective restore (RESTORE_TABLES): rs1.events as of nt-full, every other table (and
    // index answer) as it was just before the drained stop.
    cql.write(8).await.unwrap();
    let later = cql.digest().await.unwrap();
    assert_ne!(later.get("rs1.events"), at_nodetool.get("rs1.events"), "phase 8 changed nothing in rs1.events");
    pod.node.stop().await.unwrap();
    let mapping = restore_mapping(true, &[(name, name)]);
    pod.restore_init_with("nt-full", &uuid4(), &mapping, &[("RESTORE_TABLES", "rs1.events")]).await.unwrap();
    pod.node.start().await.unwrap();
    let got = cql.digest().await.unwrap();
    let mut want = later.clone();
    want.insert("rs1.events".into(), at_nodetool["rs1.events"].clone());
    assert_same(&want, &got, "selective restore of rs1.events (RESTORE_TABLES)", &[&pod.node]);
    f.done("selective restore of one table, CQL check");

    online_restore(&mut pod, &backend, &cql, &mut f).await;

    pod.node.stop().await.unwrap();
    f.done("stop");
    f.finish(&[&pod.node]);
}

/// `rs1.events` as `cqldata.py schema` creates it.
const EVENTS: &str = "CREATE TABLE rs1.events (user_id int, ts int, kind text, phase int, payload blob, \
    tags list<text>, PRIMARY KEY ((user_id), ts, kind)) WITH CLUSTERING ORDER BY (ts DESC, kind ASC)";

/// Fails if a table directory of `ks_dir` holds a `Data.db` without every component its
/// `TOC.txt` lists: an SSTable the node could load half.
fn assert_no_half_sstable(ks_dir: &std::path::Path) {
    for table in std::fs::read_dir(ks_dir).unwrap().flatten() {
        for f in std::fs::read_dir(table.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_suffix("Data.db") else { continue };
            let toc = table.path().join(format!("{prefix}TOC.txt"));
            let listed =
                std::fs::read_to_string(&toc).unwrap_or_else(|e| panic!("{name} without {}: {e}", toc.display()));
            for c in listed.lines().filter(|l| !l.trim().is_empty()) {
                assert!(table.path().join(format!("{prefix}{c}")).exists(), "{name}: {c} missing");
            }
        }
    }
}

/// RestoreTables into the running node through the Management API: a truncated table back as
/// of the backup (its indexes answering), the sidecar killed mid-job and the job finished by the
/// same request, a table the node no longer has refused, a dropped and re-created table refused
/// and then loaded when asked; every other table as it was; the node never restarts.
async fn online_restore(pod: &mut RealPod, backend: &Backend, cql: &CqlData, f: &mut Figures) {
    use medusa::service::pb::ext;
    pod.configure(backend, "real", Access::MgmtApi).await.unwrap();
    pod.start_sidecar().await.unwrap();
    let starts = pod.node.starts.len();
    cql.create("late").await.unwrap();
    cql.write(9).await.unwrap();
    let at_backup = cql.digest().await.unwrap();
    backup(&[&*pod], "online-1", Mode::Full).await.unwrap();
    cql.write(10).await.unwrap();
    cql.execute("TRUNCATE rs1.users").await.unwrap();
    cql.execute("DROP TABLE rs1.late").await.unwrap();
    let later = cql.digest().await.unwrap();
    assert_ne!(later.get("rs1.users"), at_backup.get("rs1.users"));
    f.done("online: rs1.late created, phase 9, backup, phase 10, rs1.users truncated, rs1.late dropped");

    let req = |tables: &[&str], allow: bool| ext::RestoreTablesRequest {
        backup_name: "online-1".into(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        allow_new_table_id: allow,
    };
    let job =
        pod.ext_client().await.unwrap().restore_tables(req(&["rs1.users"], false)).await.unwrap().into_inner().job_id;
    pod.kill_sidecar().await.unwrap();
    assert_no_half_sstable(&pod.node.data_dir().join("rs1"));
    pod.start_sidecar().await.unwrap();
    let s = pod::wait_restore_tables(pod, &job).await.unwrap();
    println!(
        "[cassandra] restore-tables killed at once: after the restart {:?} {}",
        ext::RestoreTablesPhase::try_from(s.phase),
        s.error
    );
    pod::restore_tables(&[&*pod], "online-1", &["rs1.users"], false).await.unwrap();
    let got = cql.digest().await.unwrap();
    let mut want = later.clone();
    for k in ["rs1.users", "rs1.users#indexes"] {
        want.insert(k.into(), at_backup[k].clone());
    }
    assert_same(&want, &got, "rs1.users loaded into the running node (RestoreTables)", &[&pod.node]);
    f.done("online: RestoreTables rs1.users, sidecar killed and the job finished, CQL check");

    let mut c = pod.ext_client().await.unwrap();
    let e = c.restore_tables(req(&["rs1.late"], false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not served by this node"), "{e:?}");
    cql.execute("DROP TABLE rs1.events").await.unwrap();
    cql.execute(EVENTS).await.unwrap();
    let e = c.restore_tables(req(&["rs1.events"], false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("dropped and created again"), "{e:?}");
    for dir in std::fs::read_dir(pod.node.data_dir().join("rs1")).unwrap().flatten() {
        if dir.file_name().to_string_lossy().starts_with("events-") {
            let placed: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with("Data.db"))
                .map(|f| f.file_name())
                .collect();
            assert!(placed.is_empty(), "refused, yet {placed:?} in {}", dir.path().display());
        }
    }
    pod::restore_tables(&[&*pod], "online-1", &["rs1.events"], true).await.unwrap();
    let got = cql.digest().await.unwrap();
    want.insert("rs1.events".into(), at_backup["rs1.events"].clone());
    assert_same(&want, &got, "rs1.events re-created, then loaded with allow_new_table_id", &[&pod.node]);
    assert_eq!(pod.node.starts.len(), starts, "the node was restarted");
    assert!(pod.node.is_running());
    pod.stop_sidecar().await.unwrap();
    f.done("online: a dropped table and a re-created one refused, then loaded when asked");
}

// --- a ring of three -------------------------------------------------------------------------

const SOURCE_PODS: [&str; 3] = ["rs-dc1-r1-sts-0", "rs-dc1-r1-sts-1", "rs-dc1-r1-sts-2"];
const TARGET_PODS: [&str; 3] = ["rt-dc1-r1-sts-0", "rt-dc1-r1-sts-1", "rt-dc1-r1-sts-2"];

fn pods_of(nodes: Vec<RealNode>, names: &[&str], dir: &std::path::Path, hosts: &std::path::Path) -> Vec<RealPod> {
    nodes.into_iter().zip(names).map(|(n, name)| RealPod::new(name, n, dir, hosts)).collect()
}

async fn start_ring(pods: &mut [RealPod], keep_conf: bool) -> Duration {
    let mut nodes: Vec<&mut RealNode> = pods.iter_mut().map(|p| &mut p.node).collect();
    start_all(&mut nodes, keep_conf).await.unwrap()
}

async fn ring(version: &str, kind: Kind) {
    require_installed(version).unwrap();
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let label = format!("ring-{version}-{kind:?}");
    let mut f = Figures::new(&label);
    let work = WorkDir::new(&label).unwrap();
    let hosts = work.path().join("hosts");
    let addresses: Vec<(&str, String)> =
        SOURCE_PODS.iter().chain(&TARGET_PODS).enumerate().map(|(i, p)| (*p, format!("127.0.0.{}", i + 1))).collect();
    hosts_file(&hosts, &addresses).unwrap();
    let ring = ring_nodes(work.path(), version, "rs", 1, &SOURCE_PODS);
    let mut pods = pods_of(ring, &SOURCE_PODS, work.path(), &hosts);
    let backend = Backend::start(kind).await.unwrap();
    start_ring(&mut pods, false).await;
    for p in &mut pods {
        p.configure(&backend, "ring", Access::MgmtApi).await.unwrap();
        p.start_sidecar().await.unwrap();
    }
    let addrs: Vec<String> = pods.iter().map(|p| p.node.address()).collect();
    let cql = CqlData::new(&addrs, "ALL");
    f.done("start 3 nodes, APIs, sidecars");

    cql.schema("datacenter1").await.unwrap();
    cql.create("dropped_late").await.unwrap();
    cql.write(1).await.unwrap();
    for p in &pods {
        p.node.nodetool(&["flush"]).await.unwrap();
    }
    cql.write(2).await.unwrap();
    let at_backup = cql.at("QUORUM").digest().await.unwrap();
    f.done("schema, phases 1 (flushed) and 2 (memtables), written at ALL");

    let refs: Vec<&RealPod> = pods.iter().collect();
    backup(&refs, "ring-full", Mode::Full).await.unwrap();
    {
        let mut c = pods[0].client().await.unwrap();
        let all = c.get_backups(medusa::service::pb::GetBackupsRequest {}).await.unwrap().into_inner();
        let s = all.backups.iter().find(|b| b.backup_name == "ring-full").expect("summary of ring-full");
        let mut hosts: Vec<&str> = s.nodes.iter().map(|n| n.host.as_str()).collect();
        hosts.sort();
        assert_eq!(hosts, SOURCE_PODS, "the tokenmap names the pods: {s:?}");
        assert_eq!((s.finished_nodes, s.total_nodes), (3, 3), "{s:?}");
    }
    cql.write(3).await.unwrap();
    cql.drop_table("dropped_late").await.unwrap();
    f.done("backup of the three nodes, phase 3, a table dropped");

    // Lost volumes: every node stopped and wiped, then the operator's in-place restore.
    for p in &mut pods {
        p.stop_sidecar().await.unwrap();
        p.node.stop().await.unwrap();
        p.node.wipe().unwrap();
    }
    let pairs: Vec<(&str, &str)> = SOURCE_PODS.iter().map(|p| (*p, *p)).collect();
    let mapping = restore_mapping(true, &pairs);
    let key = uuid4();
    for p in &mut pods {
        p.restore_init("ring-full", &key, &mapping).await.unwrap();
    }
    f.done("stop, wipe, restore init containers");
    start_ring(&mut pods, false).await;
    let got = cql.at("QUORUM").digest().await.unwrap();
    let nodes: Vec<&RealNode> = pods.iter().map(|p| &p.node).collect();
    assert_same(&at_backup, &got, "in-place restore of a ring of three, QUORUM reads", &nodes);
    f.done("ring restarted on the restored volumes, CQL check at QUORUM");

    // Online: rs3.events (RF 3) truncated across the ring, then loaded back into the three
    // running nodes, each from its own part of the backup (`medusa-rs restore-tables`).
    for p in &mut pods {
        p.start_sidecar().await.unwrap();
    }
    cql.execute("TRUNCATE rs3.events").await.unwrap();
    // Through the CLI, as a user without an operator runs it.
    let sidecars: Vec<String> =
        pods.iter().map(|p| format!("127.0.0.1:{}", p.sidecar.as_ref().unwrap().port)).collect();
    let out = tokio::process::Command::new(medusa_tests::binary("medusa-rs"))
        .arg("--config")
        .arg(&pods[0].ini)
        .args(["restore-tables", "--hosts", &sidecars.join(","), "--backup-name", "ring-full", "--table", "rs3.events"])
        .args(["--timeout", "300", "-o", "json"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(330), out).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["complete"], true, "{text}");
    assert!(
        v["nodes"].as_array().unwrap().iter().all(|n| n["status"] == "DONE" && n["sstables_loaded"].as_u64() > Some(0)),
        "{text}"
    );
    let got = cql.at("QUORUM").digest().await.unwrap();
    let nodes: Vec<&RealNode> = pods.iter().map(|p| &p.node).collect();
    assert_same(&at_backup, &got, "rs3.events truncated, then loaded into the running ring", &nodes);
    for p in &mut pods {
        p.stop_sidecar().await.unwrap();
    }
    f.done("online: rs3.events truncated and restored into the running ring, QUORUM check");

    // Another datacenter: new addresses, new pod names, its own vnodes; the operator's remote
    // restore (host map by sorted pod names) brings the old tokens and every row.
    let source_tokens: Vec<Vec<String>> = {
        let out = pods[0].node.nodetool(&["ring"]).await.unwrap();
        let members = parse_ring(&out);
        pods.iter().map(|p| members.iter().find(|m| m.ip == p.node.address()).unwrap().tokens.clone()).collect()
    };
    for p in &mut pods {
        p.node.stop().await.unwrap();
    }
    let mut target = ring_nodes(work.path(), version, "rt", 4, &TARGET_PODS);
    for n in &mut target {
        n.config.tokens = Tokens::Vnodes(16);
    }
    let mut targets = pods_of(target, &TARGET_PODS, work.path(), &hosts);
    start_ring(&mut targets, false).await;
    for t in &mut targets {
        t.configure(&backend, "ring", Access::MgmtApi).await.unwrap();
        t.node.stop().await.unwrap();
    }
    f.done("another ring started empty (vnodes) on 127.0.0.4-6, stopped");
    let pairs: Vec<(&str, &str)> = TARGET_PODS.iter().copied().zip(SOURCE_PODS).collect();
    let mapping = restore_mapping(false, &pairs);
    let key = uuid4();
    for t in &mut targets {
        t.restore_init("ring-full", &key, &mapping).await.unwrap();
    }
    start_ring(&mut targets, true).await;
    let out = targets[0].node.nodetool(&["ring"]).await.unwrap();
    let members = parse_ring(&out);
    for (t, tokens) in targets.iter().zip(&source_tokens) {
        let m = members.iter().find(|m| m.ip == t.node.address()).unwrap_or_else(|| panic!("{} not in\n{out}", t.name));
        assert_eq!(&m.tokens, tokens, "{} took the tokens of its source", t.name);
    }
    let target_cql = CqlData::new(&targets.iter().map(|t| t.node.address()).collect::<Vec<_>>(), "QUORUM");
    let got = target_cql.digest().await.unwrap();
    let nodes: Vec<&RealNode> = targets.iter().map(|p| &p.node).collect();
    assert_same(&at_backup, &got, "remote restore into a new ring, QUORUM reads", &nodes);
    f.done("remote restore into the new ring, CQL check at QUORUM");

    for t in &mut targets {
        t.node.stop().await.unwrap();
    }
    let mut all: Vec<&RealNode> = pods.iter().map(|p| &p.node).collect();
    all.extend(targets.iter().map(|t| &t.node));
    f.done("stop");
    f.finish(&all);
}

// --- CI: Cassandra 5.0, local storage ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_5_0_local() {
    one_node(CASSANDRA_5, Kind::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_5_0_local() {
    ring(CASSANDRA_5, Kind::Local).await
}

// --- the soak matrix: scripts/soak-cassandra.sh -------------------------------------------------

mod matrix {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn one_node_5_0_s3() {
        one_node(CASSANDRA_5, Kind::S3sFs).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn ring_5_0_s3() {
        ring(CASSANDRA_5, Kind::S3sFs).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn one_node_4_1_local() {
        one_node(CASSANDRA_4, Kind::Local).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn one_node_4_1_s3() {
        one_node(CASSANDRA_4, Kind::S3sFs).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn ring_4_1_local() {
        ring(CASSANDRA_4, Kind::Local).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "soak matrix: scripts/soak-cassandra.sh"]
    async fn ring_4_1_s3() {
        ring(CASSANDRA_4, Kind::S3sFs).await
    }
}
