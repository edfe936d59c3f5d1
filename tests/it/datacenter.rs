//! A datacenter of three simulated nodes, each with its own Management API and real sidecar,
//! driven as k8ssandra-operator drives them (see `tests/support/dc.rs`): backup jobs and their
//! summaries, a pod killed mid-backup, the purge task, PrepareRestore with the
//! CassandraDatacenter's object name, in-place and remote restores by the real init container,
//! and a restore of a backup that does not exist. Every test runs against `local` storage and S3 (s3s-fs).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use harness::sim::{DataDigest, SimSpec};
use medusa::service::pb::{self, StatusType};
use medusa_tests::dc::{BackupJob, Datacenter, DcSpec, Operator, RestoreMapping, humanize, uuid4};
use medusa_tests::{Backend, Kind, eventually};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(Kind::Local).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(Kind::S3sFs).await
            }
        }
    )*};
}

on_both_backends!(
    backup_jobs_full_then_differential,
    pod_killed_mid_upload_fails_the_backup_on_every_pod,
    pod_killed_during_its_snapshot_fails_the_backup_on_every_pod,
    purge_task_purges_every_pod_and_sync_follows,
    prepare_restore_with_the_object_name_writes_every_mapping,
    in_place_restore_of_every_pod,
    restore_into_another_datacenter,
    restore_of_a_missing_backup_fails_naming_it,
);

async fn lives(dc: &Datacenter) -> Vec<DataDigest> {
    let mut out = Vec::new();
    for p in &dc.pods {
        out.push(p.live().await);
    }
    out
}

/// Flushes and compacts every node differently (new SSTables, some replaced).
async fn mutate(dc: &Datacenter, seed: u64) {
    for (i, p) in dc.pods.iter().enumerate() {
        let s = seed + 10 * i as u64;
        p.with_sim(move |n| {
            n.flush(s, 0.1).unwrap();
            n.compact(s + 1).unwrap();
        })
        .await;
    }
}

async fn get_backups(dc: &Datacenter, pod: usize) -> pb::GetBackupsResponse {
    let mut c = dc.pods[pod].client().await.unwrap();
    c.get_backups(pb::GetBackupsRequest {}).await.unwrap().into_inner()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A backup job that succeeded on every pod, with the summary the operator recorded checked
/// against the bucket (the three manifests) and the nodes (`at_backup`: each pod's data then).
async fn assert_succeeded(dc: &Datacenter, job: &BackupJob, name: &str, kind: &str, at_backup: &[DataDigest]) {
    let ctx = || format!("{job:#?}\n{}", dc.log_tail(40));
    assert!(job.failed.is_empty() && job.terminal_error.is_none(), "{}", ctx());
    assert_eq!(sorted(job.finished.clone()), dc.pod_names(), "{}", ctx());
    let b = job.backup.as_ref().unwrap_or_else(|| panic!("no MedusaBackup: {}", ctx()));
    let s = job.summary.as_ref().unwrap();
    assert_eq!(s.backup_name, name);
    assert_eq!(b.status, "SUCCESS", "{}", ctx());
    assert_eq!(s.status, StatusType::Success as i32);
    assert_eq!((b.total_nodes, b.finished_nodes), (3, 3), "{}", ctx());
    assert_eq!(s.backup_type, kind);
    assert!(s.start_time > 0 && s.finish_time >= s.start_time, "{s:?}");
    let (mut objects, mut bytes) = (0, 0);
    for p in &dc.pods {
        let (o, b) = dc.manifest_totals(&p.name, name).await.unwrap();
        objects += o;
        bytes += b;
    }
    assert_eq!((s.total_objects as u64, s.total_size as u64), (objects, bytes), "totals = sum of the 3 manifests");
    let live_files: u64 = at_backup.iter().map(|d| d.files).sum();
    let live_bytes: u64 = at_backup.iter().map(|d| d.bytes).sum();
    assert_eq!((objects, bytes), (live_files, live_bytes), "the manifests hold what the nodes held");
    assert_eq!(b.total_files, s.total_objects);
    assert_eq!(b.total_size, humanize(s.total_size));
    let hosts: Vec<String> = s.nodes.iter().map(|n| n.host.clone()).collect();
    assert_eq!(sorted(hosts), dc.pod_names(), "tokenmap hosts are the pod names: {:?}", s.nodes);
    for n in &s.nodes {
        let pod = dc.pod(&n.host);
        assert_eq!((n.datacenter.as_str(), n.rack.as_str()), ("dc1", pod.rack.as_str()), "{n:?}");
        assert_eq!(n.tokens, pod.tokens(), "tokens of {}", n.host);
    }
}

async fn backup_jobs_full_then_differential(kind: Kind) {
    let backend = Backend::start(kind).await.unwrap();
    let dc = Datacenter::start(DcSpec::demo(), &backend).await.unwrap();
    let op = Operator::new(&dc);

    let at_full = lives(&dc).await;
    let job = op.backup_job("medusa-backup-full", "full").await.unwrap();
    assert_succeeded(&dc, &job, "medusa-backup-full", "full", &at_full).await;

    mutate(&dc, 100).await;
    let at_diff = lives(&dc).await;
    let job = op.backup_job("medusa-backup-diff", "differential").await.unwrap();
    assert_succeeded(&dc, &job, "medusa-backup-diff", "differential", &at_diff).await;

    // Every pod gives the same answer about the whole datacenter.
    let first = get_backups(&dc, 0).await;
    // Sorted by start time, in seconds: two backups of one second may come in either order.
    let names: Vec<String> = first.backups.iter().map(|b| b.backup_name.clone()).collect();
    assert_eq!(sorted(names), ["medusa-backup-diff", "medusa-backup-full"]);
    assert!(first.backups.windows(2).all(|w| w[0].start_time <= w[1].start_time), "{first:?}");
    assert_eq!(first.overall_status, StatusType::Success as i32);
    for i in 1..dc.pods.len() {
        let other = get_backups(&dc, i).await;
        assert_eq!(other, first, "{} and {} disagree", dc.pods[0].name, dc.pods[i].name);
    }
    // A sync finds both backups already known and keeps them.
    let sync = op.sync_task().await.unwrap();
    assert!(sync.created.is_empty() && sync.deleted.is_empty(), "{sync:?}");
    let known: Vec<String> = op.medusa_backups().into_keys().collect();
    assert_eq!(known, ["medusa-backup-diff", "medusa-backup-full"]);
}

/// Where the victim's sidecar is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// While files are being uploaded (the backup has begun in storage).
    Upload,
    /// While the node takes its snapshot (nothing of the backup is in storage yet).
    Snapshot,
}

async fn pod_killed_mid_upload_fails_the_backup_on_every_pod(kind: Kind) {
    pod_killed_mid_backup(kind, KillPoint::Upload).await
}

async fn pod_killed_during_its_snapshot_fails_the_backup_on_every_pod(kind: Kind) {
    pod_killed_mid_backup(kind, KillPoint::Snapshot).await
}

async fn pod_killed_mid_backup(kind: Kind, point: KillPoint) {
    const VICTIM: usize = 1;
    let name = "medusa-backup-killed";
    let backend = Backend::start(kind).await.unwrap();
    let mut spec = DcSpec::demo();
    if point == KillPoint::Upload {
        // Slow the victim's upload so that the kill lands in it: S3 transfers obey the
        // bandwidth cap; `local` copies ignore it, so the victim holds more data instead.
        match kind {
            Kind::Local => spec.pods[VICTIM].sim = SimSpec::sized(256 << 20, 700, spec.pods[VICTIM].sim.seed),
            _ => spec.pods[VICTIM].storage_extra.push("transfer_max_bandwidth = 1MB/s".into()),
        }
    }
    let dc = Datacenter::start(spec, &backend).await.unwrap();
    let victim = &dc.pods[VICTIM];
    if point == KillPoint::Snapshot {
        victim.api.faults().delay_snapshot_ms.store(2000, std::sync::atomic::Ordering::SeqCst);
    }
    let op = Operator::new(&dc);
    let killer = async {
        match point {
            KillPoint::Upload => {
                // Polled closely: the victim's upload must still be running when the kill lands.
                let mut c = victim.client().await.unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let request = pb::BackupStatusRequest { backup_name: name.into() };
                    if let Ok(s) = c.backup_status(request).await.map(|r| r.into_inner()) {
                        assert_ne!(s.status, StatusType::Success as i32, "the victim finished before the kill");
                        if s.bytes_done > 0 {
                            break;
                        }
                    }
                    assert!(std::time::Instant::now() < deadline, "the victim's upload did not start in 60 s");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            KillPoint::Snapshot => {
                eventually(Duration::from_secs(60), "the victim's snapshot request", || {
                    let calls = victim.api.calls();
                    async move { calls.iter().any(|c| c.starts_with("POST /api/v0/ops/node/snapshots")).then_some(()) }
                })
                .await;
            }
        }
        victim.kill_sidecar().await.unwrap();
        victim.start_sidecar().await.unwrap();
    };
    let (job, ()) = tokio::join!(op.backup_job(name, "full"), killer);
    let job = job.unwrap();

    let ctx = || format!("{job:#?}\n{}", dc.log_tail(40));
    assert_eq!(job.failed, std::slice::from_ref(&victim.name), "{}", ctx());
    let others: Vec<String> = dc.pods.iter().filter(|p| p.name != victim.name).map(|p| p.name.clone()).collect();
    assert_eq!(sorted(job.finished.clone()), others, "{}", ctx());
    assert!(job.backup.is_none(), "no MedusaBackup for a failed job");

    // The victim says why.
    let mut c = victim.client().await.unwrap();
    let s = c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await.unwrap().into_inner();
    assert_eq!(s.status, StatusType::Failed as i32, "{s:?}");
    assert!(s.error.contains("stopped while this backup was running"), "{}", s.error);

    // Every pod reports the backup FAILED with the two finished nodes, soon and for good.
    // Failures from here on are collected, so that one run reports every broken promise.
    let mut broken = Vec::new();
    let (mut objects, mut bytes) = (0, 0);
    for p in &others {
        let (o, b) = dc.manifest_totals(p, name).await.unwrap();
        objects += o;
        bytes += b;
    }
    if let Err(e) = reported_failed_everywhere(&dc, name, (objects, bytes)).await {
        broken.push(e);
    }

    // A sync does not make a MedusaBackup of it; the datacenter backs up again.
    let sync = op.sync_task().await.unwrap();
    assert!(!op.medusa_backups().contains_key(name), "{sync:?}");
    victim.api.faults().delay_snapshot_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let at = lives(&dc).await;
    let job = op.backup_job("medusa-backup-after", "differential").await.unwrap();
    assert_succeeded(&dc, &job, "medusa-backup-after", "differential", &at).await;
    // No snapshot is left behind, the interrupted one included (Cassandra completes a snapshot
    // whose client was killed, possibly after the restarted sidecar cleaned up).
    for p in &dc.pods {
        eventually(Duration::from_secs(30), "snapshots in flight to end", || {
            let n = p.api.snapshots_in_flight();
            async move { (n == 0).then_some(()) }
        })
        .await;
    }
    // A snapshot finished after every cleanup so far is cleared by the sidecar's periodic
    // check (every 30 s, while no backup runs).
    for p in &dc.pods {
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        loop {
            let tags: std::collections::BTreeSet<String> =
                p.with_sim(|s| s.list_snapshots()).await.into_iter().map(|i| i.tag).collect();
            if tags.is_empty() {
                break;
            }
            if std::time::Instant::now() > deadline {
                broken.push(format!("{}: snapshots left behind after 45 s: {tags:?}", p.name));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(broken.is_empty(), "{}\n{}", broken.join("\n\n"), dc.log_tail(20));
}

/// Whether every pod's GetBackups reports `name` FAILED within 10 s, and then three times in a
/// row FAILED with 2 of 3 nodes finished and the two finished nodes' `totals`.
async fn reported_failed_everywhere(dc: &Datacenter, name: &str, totals: (u64, u64)) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen = Vec::new();
        for i in 0..dc.pods.len() {
            let r = get_backups(dc, i).await;
            let b = r.backups.iter().find(|b| b.backup_name == name).expect("the backup is listed");
            seen.push((dc.pods[i].name.clone(), status_name(b.status), b.finished_nodes, b.total_nodes));
        }
        if seen.iter().all(|s| s.1 == "FAILED") {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "after 10 s not every pod reports {name} FAILED: (pod, status, finishedNodes, totalNodes) = {seen:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for round in 0..3 {
        for i in 0..dc.pods.len() {
            let r = get_backups(dc, i).await;
            let b = r.backups.iter().find(|b| b.backup_name == name).expect("the backup is listed");
            let pod = &dc.pods[i].name;
            let got =
                (status_name(b.status), b.total_nodes, b.finished_nodes, b.total_objects as u64, b.total_size as u64);
            let want = ("FAILED".to_string(), 3, 2, totals.0, totals.1);
            if got != want || r.overall_status != StatusType::Failed as i32 {
                return Err(format!(
                    "round {round}, {pod}: (status, total, finished, objects, size) = {got:?}, want {want:?}; overall {}",
                    status_name(r.overall_status)
                ));
            }
        }
    }
    Ok(())
}

fn status_name(v: i32) -> String {
    StatusType::try_from(v).map_or_else(|_| v.to_string(), |s| s.as_str_name().to_string())
}

/// Every object in the bucket: key -> size.
async fn bucket(dc: &Datacenter) -> BTreeMap<String, u64> {
    let storage = dc.storage().unwrap();
    let objects: Vec<_> = storage.list("").try_collect().await.unwrap();
    objects.into_iter().map(|m| (m.location.to_string(), m.size)).collect()
}

/// What purging node backup `backup` of `pod` deletes, as Medusa counts it: the backup's folder
/// plus the pod's shared files no remaining manifest of it references. (objects, bytes).
async fn expected_purge(dc: &Datacenter, keys: &BTreeMap<String, u64>, pod: &str, backup: &str) -> (u64, u64) {
    let folder = format!("demo/{pod}/{backup}/");
    let gone: Vec<(&String, &u64)> = keys.iter().filter(|(k, _)| k.starts_with(&folder)).collect();
    let storage = dc.storage().unwrap();
    let mut referenced = HashSet::new();
    for k in keys.keys().filter(|k| k.starts_with(&format!("demo/{pod}/")) && k.ends_with("/meta/manifest.json")) {
        if k.starts_with(&folder) {
            continue;
        }
        let m = medusa::format::manifest::parse(&storage.get_bytes(k).await.unwrap()).unwrap();
        referenced.extend(m.into_iter().flat_map(|s| s.objects).map(|o| o.path));
    }
    let shared = format!("demo/{pod}/data/");
    let orphans: Vec<(&String, &u64)> =
        keys.iter().filter(|(k, _)| k.starts_with(&shared) && !referenced.contains(*k)).collect();
    let objects = (gone.len() + orphans.len()) as u64;
    let bytes = gone.iter().chain(&orphans).map(|(_, s)| **s).sum();
    (objects, bytes)
}

async fn purge_task_purges_every_pod_and_sync_follows(kind: Kind) {
    let backend = Backend::start(kind).await.unwrap();
    let mut spec = DcSpec::demo();
    spec.storage_extra = vec!["max_backup_count = 2".into(), "backup_grace_period_in_days = 0".into()];
    let dc = Datacenter::start(spec, &backend).await.unwrap();
    let op = Operator::new(&dc);
    for (i, (name, mode)) in [("b1", "full"), ("b2", "differential"), ("b3", "differential")].into_iter().enumerate() {
        if i > 0 {
            mutate(&dc, 200 + i as u64).await;
        }
        let job = op.backup_job(name, mode).await.unwrap();
        assert!(job.backup.is_some(), "{job:#?}\n{}", dc.log_tail(40));
    }
    let before = bucket(&dc).await;
    let mut expected = Vec::new();
    for p in &dc.pods {
        expected.push(expected_purge(&dc, &before, &p.name, "b1").await);
    }

    let task = op.purge_task().await.unwrap();
    assert!(task.failed.is_empty(), "{task:#?}\n{}", dc.log_tail(40));
    let pods: Vec<&str> = task.finished.iter().map(|r| r.pod.as_str()).collect();
    assert_eq!(pods, dc.pod_names(), "one result per pod, in order");
    for (r, (objects, bytes)) in task.finished.iter().zip(&expected) {
        assert_eq!(r.backups_purged, 1, "{r:?}");
        assert!(*objects > 0);
        assert_eq!((r.objects_purged as u64, r.purged_size as u64), (*objects, *bytes), "{r:?}");
        assert_eq!(r.within_gc_grace, 0, "{r:?}");
    }
    // Gone from every node; the sync the purge scheduled drops its MedusaBackup.
    assert_eq!(task.sync.deleted, ["b1"], "{:?}", task.sync);
    assert_eq!(op.medusa_backups().into_keys().collect::<Vec<_>>(), ["b2", "b3"]);
    let after = bucket(&dc).await;
    assert!(!after.keys().any(|k| k.contains("/b1/")), "b1 left behind");
    let storage = dc.storage().unwrap();
    for k in after.keys().filter(|k| k.ends_with("/meta/manifest.json")) {
        let m = medusa::format::manifest::parse(&storage.get_bytes(k).await.unwrap()).unwrap();
        for o in m.iter().flat_map(|s| &s.objects) {
            assert!(after.contains_key(&o.path), "{} deleted while {k} references it", o.path);
        }
    }
    for i in 0..dc.pods.len() {
        let r = get_backups(&dc, i).await;
        let mut v: Vec<_> = r.backups.iter().map(|b| (b.backup_name.as_str(), b.status, b.finished_nodes)).collect();
        v.sort();
        let ok = StatusType::Success as i32;
        assert_eq!(v, [("b2", ok, 3), ("b3", ok, 3)], "{}", dc.pods[i].name);
    }
    // Nothing more to purge.
    let again = op.purge_task().await.unwrap();
    assert!(again.failed.is_empty());
    for r in &again.finished {
        assert_eq!((r.backups_purged, r.objects_purged, r.purged_size), (0, 0, 0), "{r:?}");
    }
}

async fn prepare_restore_with_the_object_name_writes_every_mapping(kind: Kind) {
    let backend = Backend::start(kind).await.unwrap();
    let dc = Datacenter::start(DcSpec::demo(), &backend).await.unwrap();
    assert_ne!(dc.spec.object_name, dc.spec.dc, "the test needs an object name unlike the DC name");
    let op = Operator::new(&dc);
    let at_backup = lives(&dc).await;
    let job = op.backup_job("b1", "full").await.unwrap();
    assert!(job.backup.is_some(), "{job:#?}");

    let key = uuid4();
    let task = op.prepare_restore_task("b1", &key).await;
    assert!(task.failed.is_empty(), "PrepareRestore(datacenter = {}) failed: {:#?}", dc.spec.object_name, task.failed);
    assert_eq!(task.finished, dc.pod_names());
    for p in &dc.pods {
        let path = p.root.join(".restore_mapping").join(&key);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["in_place"], serde_json::Value::Bool(true), "{}: {text}", p.name);
        let map = v["host_map"].as_object().unwrap_or_else(|| panic!("{}: {text}", p.name));
        let targets: Vec<String> = map.keys().cloned().collect();
        assert_eq!(sorted(targets), dc.pod_names(), "{text}");
        for (target, m) in map {
            assert_eq!(m["source"], serde_json::json!([target]), "{text}");
        }
    }
    // The init container finds the prepared mapping when the operator gives none.
    let pod = &dc.pods[2];
    pod.stop_sidecar().await.unwrap();
    pod.with_sim(|s| s.wipe().unwrap()).await;
    let run = pod.run_restore_init(&[("BACKUP_NAME", "b1"), ("RESTORE_KEY", &key)]).await.unwrap();
    assert_eq!(run.code, Some(0), "{}", run.log);
    let got = pod.live().await;
    assert!(got == at_backup[2], "{}", at_backup[2].diff(&got));
}

async fn in_place_restore_of_every_pod(kind: Kind) {
    let backend = Backend::start(kind).await.unwrap();
    let dc = Datacenter::start(DcSpec::demo(), &backend).await.unwrap();
    let op = Operator::new(&dc);
    assert!(op.backup_job("b1", "full").await.unwrap().backup.is_some());
    mutate(&dc, 300).await;
    let at_b2 = lives(&dc).await;
    let job = op.backup_job("b2", "differential").await.unwrap();
    assert!(job.backup.is_some(), "{job:#?}");

    // A lost volume, more writes, a dropped keyspace.
    dc.pods[0].with_sim(|s| s.wipe().unwrap()).await;
    mutate(&dc, 400).await;
    dc.pods[2].with_sim(|s| std::fs::remove_dir_all(s.data_dir.join("ks1")).unwrap()).await;

    let job = op.restore_job("b2").await.unwrap();
    assert_eq!(job.message, None);
    let mapping = job.mapping.clone().unwrap();
    let expected =
        RestoreMapping { in_place: true, host_map: dc.pod_names().into_iter().map(|p| (p.clone(), p)).collect() };
    assert_eq!(mapping, expected);
    assert_eq!(
        mapping.to_json(),
        r#"{"in_place":true,"host_map":{"demo-dc1-r1-sts-0":{"source":["demo-dc1-r1-sts-0"],"seed":false},"demo-dc1-r1-sts-1":{"source":["demo-dc1-r1-sts-1"],"seed":false},"demo-dc1-r2-sts-0":{"source":["demo-dc1-r2-sts-0"],"seed":false}}}"#
    );
    for (run, (p, want)) in job.runs.iter().zip(dc.pods.iter().zip(&at_b2)) {
        assert_eq!(run.code, Some(0), "{}: {}", run.pod, run.log);
        let got = p.live().await;
        assert!(got == *want, "{} differs from b2:\n{}", p.name, want.diff(&got));
        assert_eq!(std::fs::read_to_string(p.root.join(".last-restore")).unwrap(), format!("{}\n", job.key));
    }
    // The datacenter starts again and still sees both backups.
    dc.start_all().await.unwrap();
    let mut names: Vec<_> = get_backups(&dc, 1).await.backups.into_iter().map(|b| (b.backup_name, b.status)).collect();
    names.sort();
    let ok = StatusType::Success as i32;
    assert_eq!(names, [("b1".to_string(), ok), ("b2".to_string(), ok)]);
}

/// What a remote restore does to a table directory (`ks/table-id`).
#[derive(Debug, PartialEq, Eq)]
enum RemoteRule {
    /// `system.local`, `system.peers`, `system.peers_v2`: removed (the target node gets a new
    /// identity, and its tokens from `initial_token`, which a kept `system.local` would override).
    Identity,
    /// `system_auth`: the target's own, untouched.
    Auth,
    /// Everything else.
    Data,
}

fn remote_rule(table: &str) -> RemoteRule {
    if ["system/local-", "system/peers-", "system/peers_v2-"].iter().any(|p| table.starts_with(p)) {
        RemoteRule::Identity
    } else if table.starts_with("system_auth/") {
        RemoteRule::Auth
    } else {
        RemoteRule::Data
    }
}

/// `ks/table-id` of a data file's relative path.
fn table_of(rel: &str) -> String {
    rel.splitn(3, '/').take(2).collect::<Vec<_>>().join("/")
}

/// The files of `d` per table directory.
fn by_table(d: &DataDigest) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rel, f) in &d.entries {
        out.entry(table_of(rel)).or_default().insert(rel.clone(), format!("{} {}", f.size, f.sha256));
    }
    out
}

/// A target node after a remote restore of `want` (the source node's data at backup time),
/// `before` being the target's data before: every backed-up table exactly as backed up, the
/// identity tables gone, auth and the tables the backup lacks as they were.
fn check_remote_restore(pod: &str, want: &DataDigest, before: &DataDigest, got: &DataDigest) {
    let (want, before, got) = (by_table(want), by_table(before), by_table(got));
    let none = BTreeMap::new();
    let tables: std::collections::BTreeSet<&String> = want.keys().chain(before.keys()).chain(got.keys()).collect();
    for t in tables {
        let g = got.get(t).unwrap_or(&none);
        match remote_rule(t) {
            RemoteRule::Identity => assert!(g.is_empty(), "{pod}: {t} kept on a remote restore: {g:?}"),
            RemoteRule::Auth => assert_eq!(g, before.get(t).unwrap_or(&none), "{pod}: its own {t} changed"),
            RemoteRule::Data if want.contains_key(t) => assert_eq!(g, &want[t], "{pod}: {t} differs from the backup"),
            RemoteRule::Data => assert_eq!(g, before.get(t).unwrap_or(&none), "{pod}: {t} (not in the backup) changed"),
        }
    }
}

async fn restore_into_another_datacenter(kind: Kind) {
    let backend = Backend::start(kind).await.unwrap();
    let source = Datacenter::start(DcSpec::demo(), &backend).await.unwrap();
    let op = Operator::new(&source);
    assert!(op.backup_job("b1", "full").await.unwrap().backup.is_some());
    mutate(&source, 500).await;
    let backed_up = lives(&source).await;
    let job = op.backup_job("b2", "differential").await.unwrap();
    assert!(job.backup.is_some(), "{job:#?}");

    // Another cluster's datacenter of the same name, other pod names, its own data and schema.
    let target = Datacenter::start(DcSpec::new("other", "dc1", &["r1", "r2"], 3, 11, 101), &backend).await.unwrap();
    let before: Vec<DataDigest> = lives(&target).await;
    let op2 = Operator::new(&target);
    let sync = op2.sync_task().await.unwrap();
    assert_eq!(sorted(sync.created.clone()), ["b1", "b2"], "{sync:?}");
    let job = op2.restore_job("b2").await.unwrap();
    assert_eq!(job.message, None);
    let mapping = job.mapping.clone().unwrap();
    assert!(!mapping.in_place);
    assert_eq!(
        mapping.to_json(),
        r#"{"in_place":false,"host_map":{"other-dc1-r1-sts-0":{"source":["demo-dc1-r1-sts-0"],"seed":false},"other-dc1-r1-sts-1":{"source":["demo-dc1-r1-sts-1"],"seed":false},"other-dc1-r2-sts-0":{"source":["demo-dc1-r2-sts-0"],"seed":false}}}"#
    );
    for (i, (run, p)) in job.runs.iter().zip(&target.pods).enumerate() {
        assert_eq!(run.code, Some(0), "{}: {}", run.pod, run.log);
        let src = source.pod(&mapping.host_map[&p.name]);
        let want = &backed_up[source.pods.iter().position(|s| s.name == src.name).unwrap()];
        check_remote_restore(&p.name, want, &before[i], &p.live().await);
        let yaml = std::fs::read_to_string(&p.sim.lock().unwrap().cassandra_yaml).unwrap();
        let tokens: Vec<String> = src.tokens().iter().map(i64::to_string).collect();
        assert!(yaml.contains(&format!("initial_token: {}\n", tokens.join(","))), "{}:\n{yaml}", p.name);
        assert!(yaml.contains(&format!("num_tokens: {}\n", tokens.len())), "{yaml}");
        assert!(yaml.contains("auto_bootstrap: false"), "{yaml}");
    }
}

async fn restore_of_a_missing_backup_fails_naming_it(kind: Kind) {
    let backend = Backend::start(kind).await.unwrap();
    let dc = Datacenter::create(DcSpec::demo(), &backend).await.unwrap();
    let before = lives(&dc).await;
    let mapping =
        RestoreMapping { in_place: true, host_map: dc.pod_names().into_iter().map(|p| (p.clone(), p)).collect() }
            .to_json();
    let key = uuid4();
    for (p, want) in dc.pods.iter().zip(&before) {
        let vars = [("BACKUP_NAME", "no-such-backup"), ("RESTORE_KEY", key.as_str()), ("RESTORE_MAPPING", &mapping)];
        let run = p.run_restore_init(&vars).await.unwrap();
        assert!(run.code.is_some_and(|c| c != 0), "{}: exit {:?}\n{}", p.name, run.code, run.log);
        assert!(run.log.contains("no-such-backup"), "{}: the message must name the backup:\n{}", p.name, run.log);
        assert!(!p.root.join(".last-restore").exists(), "{}: marked restored", p.name);
        assert!(p.live().await == *want, "{}: data changed", p.name);
    }
}

/// The operator's pure rules as restated in `dc`: a wrong restatement would make every test
/// above drive the sidecars unlike the operator.
mod operator_rules {
    use std::collections::BTreeMap;

    use medusa_tests::dc::{DcSpec, RestoreMapping, humanize, pair_racks, split_racks};

    #[test]
    fn racks_split_and_pod_names_as_cass_operator() {
        assert_eq!(split_racks(3, 2), [2, 1]);
        assert_eq!(split_racks(5, 3), [2, 2, 1]);
        assert_eq!(split_racks(3, 3), [1, 1, 1]);
        let pods = DcSpec::demo().rack_pods();
        let want = [
            ("r1".to_string(), vec!["demo-dc1-r1-sts-0".to_string(), "demo-dc1-r1-sts-1".to_string()]),
            ("r2".to_string(), vec!["demo-dc1-r2-sts-0".to_string()]),
        ];
        assert_eq!(pods, want);
    }

    #[test]
    fn host_map_pairs_sorted_racks_and_sorted_hosts() {
        let m = |v: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            v.iter().map(|(r, h)| (r.to_string(), h.iter().map(|s| s.to_string()).collect())).collect()
        };
        // Hosts as strings: "n-10" sorts before "n-9"; racks by name on both sides.
        let source = m(&[("b", &["n-9", "n-10"]), ("a", &["n-1"])]);
        let dest = m(&[("x", &["t-0"]), ("y", &["t-1", "t-0"])]);
        let pairs = pair_racks(&source, &dest).unwrap();
        let want = [("n-1", "t-0"), ("n-10", "t-0"), ("n-9", "t-1")];
        assert_eq!(pairs, want.map(|(s, t)| (s.to_string(), t.to_string())));
        assert!(pair_racks(&source, &m(&[("x", &["t-0"])])).unwrap_err().starts_with("number of racks"));
        assert!(pair_racks(&m(&[("a", &["n-1", "n-2"])]), &m(&[("x", &["t-0"])])).is_err());
    }

    #[test]
    fn mapping_json_and_sizes_as_go_prints_them() {
        let mapping = RestoreMapping {
            in_place: false,
            host_map: [("b".to_string(), "s2".to_string()), ("a".to_string(), "s1".to_string())].into(),
        };
        assert_eq!(
            mapping.to_json(),
            r#"{"in_place":false,"host_map":{"a":{"source":["s1"],"seed":false},"b":{"source":["s2"],"seed":false}}}"#
        );
        assert_eq!(RestoreMapping { in_place: true, host_map: BTreeMap::new() }.to_json(), r#"{"in_place":true}"#);
        assert_eq!(humanize(0), "0.00 B");
        assert_eq!(humanize(1023), "1023.00 B");
        assert_eq!(humanize(1536), "1.50 KB");
        assert_eq!(humanize(3 << 30), "3.00 GB");
    }
}

/// `medusa-rs backup-cluster`: a cluster backup without an operator, over gRPC to every
/// sidecar (started a second apart), polled to the end, a summary and exit 0; the sidecars then
/// list it complete on every node and `report-last-backup` reports it. A sidecar that does not
/// answer makes the run exit 4 with that node FAILED and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_cluster_cli_drives_the_sidecars_without_an_operator() {
    let backend = Backend::start(Kind::Local).await.unwrap();
    let dc = Datacenter::start(DcSpec::demo(), &backend).await.unwrap();
    let hosts: Vec<String> = dc.pods.iter().map(|p| p.address()).collect();
    let ini = dc.pods[0].ini_path.clone();
    let run = |args: Vec<String>| {
        let ini = ini.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(medusa_tests::binary("medusa-rs"))
                .arg("--config")
                .arg(&ini)
                .args(args)
                .env("POD_NAME", "demo-dc1-r1-sts-0")
                .output()
                .unwrap()
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let json = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
    };

    let list = hosts.join(",");
    let t0 = std::time::Instant::now();
    let out = run(args(&[
        "backup-cluster",
        "--hosts",
        &list,
        "--backup-name",
        "bc-1",
        "--mode",
        "full",
        "--stagger",
        "1",
        "-o",
        "json",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t0.elapsed() >= Duration::from_secs(2), "three nodes a second apart");
    let v = json(&out);
    assert_eq!(v["complete"], true, "{v}");
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(n["status"], "SUCCESS", "{n}");
        assert!(n["files"].as_i64().unwrap() > 0, "{n}");
    }
    let all = get_backups(&dc, 2).await;
    let b = all.backups.iter().find(|b| b.backup_name == "bc-1").expect("listed");
    assert_eq!((b.status, b.finished_nodes, b.backup_type.as_str()), (StatusType::Success as i32, 3, "full"));

    let out = run(args(&["report-last-backup", "-o", "json"])).await.unwrap();
    let v = json(&out);
    assert_eq!(v["latest_cluster_backup"]["name"], "bc-1", "{v}");
    assert_eq!(v["latest_cluster_backup"]["complete_nodes"].as_array().unwrap().len(), 3, "{v}");

    // restore-cluster: in place by default, Medusa's host list otherwise; the mapping is what
    // the init containers read.
    let out = run(args(&["restore-cluster", "--backup-name", "bc-1", "-o", "json"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["in_place"], true, "{v}");
    let sources: Vec<String> =
        v["nodes"].as_array().unwrap().iter().map(|n| n["source"].as_str().unwrap().to_string()).collect();
    assert_eq!(sources.len(), 3, "{v}");
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["source"] == n["target"]), "{v}");
    let mapping = medusa::restore::mapping::RestoreMapping::parse(&v["restore_mapping"].to_string(), "out").unwrap();
    assert!(mapping.is_in_place() && mapping.host_map.len() == 3, "{v}");
    let dir = harness::services::TempDir::new("restore-cluster").unwrap();
    let list_file = dir.path().join("hosts.csv");
    let lines: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{},new-{i},{s}", if i == 0 { "True" } else { "False" }))
        .collect();
    std::fs::write(&list_file, lines.join("\n")).unwrap();
    let file = list_file.to_string_lossy().into_owned();
    let out = run(args(&["restore-cluster", "--backup-name", "bc-1", "--host-list", &file])).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("onto other nodes") && text.contains("new-2") && text.contains("RESTORE_MAPPING='"),
        "{text}"
    );
    let mapping_text = text.split("RESTORE_MAPPING='").nth(1).unwrap().split('\'').next().unwrap();
    let m = medusa::restore::mapping::RestoreMapping::parse(mapping_text, "printed").unwrap();
    assert!(!m.is_in_place() && m.source_of("new-1") == Some(sources[1].as_str()), "{mapping_text}");
    std::fs::write(&list_file, lines[..2].join("\n")).unwrap();
    let out = run(args(&["restore-cluster", "--backup-name", "bc-1", "--host-list", &file])).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "a node of the backup without a target");
    assert!(String::from_utf8_lossy(&out.stderr).contains(sources[2].as_str()));

    // One sidecar that does not answer: that node FAILED with why, the others succeed, exit 4.
    let with_dead = format!("{list},127.0.0.1:1");
    let out =
        run(args(&["backup-cluster", "--hosts", &with_dead, "--backup-name", "bc-2", "-o", "json"])).await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.iter().filter(|n| n["status"] == "SUCCESS").count(), 3, "{v}");
    let dead = nodes.iter().find(|n| n["host"] == "127.0.0.1:1").unwrap();
    assert_eq!(dead["status"], "FAILED");
    assert!(dead["error"].as_str().unwrap().contains("connect"), "{dead}");
}
