//! PurgeBackups through the sidecar binary against real storage: Medusa's selection and
//! counters, and the safety rules (no prefix matches, a concurrent backup, interruptions).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use medusa::service::pb::backup_request::Mode;
use medusa::service::pb::{self, StatusType};
use medusa_tests::{Env, EnvOptions, Kind, ProxyMode, Sidecar, eventually, list_all};
use tonic::Code;

type Client = pb::medusa_client::MedusaClient<tonic::transport::Channel>;
const LIMIT: Duration = Duration::from_secs(120);
const N: &str = "demo-dc1-default-sts-0";

async fn backup(c: &mut Client, name: &str, mode: Mode) {
    c.async_backup(pb::BackupRequest { name: name.into(), mode: mode as i32 }).await.unwrap();
    wait(c, name).await;
}

async fn wait(c: &mut Client, name: &str) {
    let s = eventually(LIMIT, "backup to finish", || {
        let mut c = c.clone();
        let name = name.to_string();
        async move {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: name }).await.ok()?.into_inner();
            (s.status != StatusType::InProgress as i32).then_some(s)
        }
    })
    .await;
    assert_eq!(s.status, StatusType::Success as i32, "{name}: {}", s.error);
}

async fn purge(c: &mut Client) -> Result<pb::PurgeBackupsResponse, tonic::Status> {
    c.purge_backups(pb::PurgeBackupsRequest {}).await.map(|r| r.into_inner())
}

async fn names(c: &mut Client) -> Vec<String> {
    let mut v: Vec<String> = c
        .get_backups(pb::GetBackupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .backups
        .into_iter()
        .map(|b| b.backup_name)
        .collect();
    v.sort();
    v
}

/// Keys referenced by the manifests of the node backups still in the bucket.
async fn referenced(env: &Env, keys: &BTreeMap<String, u64>) -> HashSet<String> {
    let node = env.node().unwrap();
    let mut out = HashSet::new();
    for k in keys.keys().filter(|k| k.starts_with(&format!("demo/{N}/")) && k.ends_with("/meta/manifest.json")) {
        let m = medusa::format::manifest::parse(&node.storage.get_bytes(k).await.unwrap()).unwrap();
        out.extend(m.into_iter().flat_map(|s| s.objects).map(|o| o.path));
    }
    out
}

/// What a purge of `purged` must delete, as Medusa counts it: the backups' folders plus the
/// shared files the remaining manifests do not reference.
async fn expected_deletions(
    env: &Env,
    before: &BTreeMap<String, u64>,
    purged: &[&str],
) -> (u64, u64, BTreeMap<String, u64>) {
    let mut after = before.clone();
    after.retain(|k, _| !purged.iter().any(|b| k.starts_with(&format!("demo/{N}/{b}/"))));
    let folders = before.len() - after.len();
    let folder_bytes: u64 = before.iter().filter(|(k, _)| !after.contains_key(*k)).map(|(_, s)| s).sum();
    after.retain(|k, _| !purged.iter().any(|b| k.starts_with(&format!("demo/index/backup_index/{b}/"))));
    let refs = referenced(env, &after).await;
    let shared = format!("demo/{N}/data/");
    let orphans: Vec<(String, u64)> = after
        .iter()
        .filter(|(k, _)| k.starts_with(&shared) && !refs.contains(*k))
        .map(|(k, s)| (k.clone(), *s))
        .collect();
    for (k, _) in &orphans {
        after.remove(k);
    }
    (folders as u64 + orphans.len() as u64, folder_bytes + orphans.iter().map(|(_, s)| s).sum::<u64>(), after)
}

fn without_latest(keys: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    keys.iter().filter(|(k, _)| !k.contains("/latest_backup/")).map(|(k, v)| (k.clone(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_purge_counts_exactly_and_keeps_what_remains_restorable() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "max_backup_count = 2\nbackup_grace_period_in_days = 0\n".into();
    let env = Env::new(o).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    backup(&mut c, "full-0", Mode::Full).await;
    backup(&mut c, "d1", Mode::Differential).await;
    env.with_sim(|s| s.flush(1, 0.1).unwrap()).await;
    backup(&mut c, "d2", Mode::Differential).await;
    env.with_sim(|s| s.compact(2).unwrap()).await;
    backup(&mut c, "d3", Mode::Differential).await;
    let node = env.node().unwrap();
    let before = list_all(&node).await.unwrap();
    let (objects, bytes, expected_after) = expected_deletions(&env, &before, &["full-0", "d1"]).await;
    let r = purge(&mut c).await.unwrap();
    assert_eq!(r.nb_backups_purged, 2);
    assert_eq!((r.nb_objects_purged as u64, r.total_purged_size as u64), (objects, bytes));
    assert_eq!(r.total_objects_within_gc_grace, 0);
    assert_eq!(names(&mut c).await, ["d2", "d3"]);
    let after = list_all(&node).await.unwrap();
    assert_eq!(without_latest(&after), without_latest(&expected_after));
    // Every object the remaining backups reference is still there.
    for k in referenced(&env, &after).await {
        assert!(after.contains_key(&k), "{k} deleted while referenced");
    }
    // Nothing left to do.
    let r = purge(&mut c).await.unwrap();
    assert_eq!((r.nb_backups_purged, r.nb_objects_purged), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_purge_and_prefix_names() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "max_backup_age = 1\nbackup_grace_period_in_days = 0\n".into();
    let env = Env::new(o).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    for b in ["b1", "b10", "b1-old"] {
        backup(&mut c, b, Mode::Full).await;
    }
    // Make b1 three days old: its start is what its index entry says.
    let node = env.node().unwrap();
    let keys = list_all(&node).await.unwrap();
    let started = keys.keys().find(|k| k.starts_with("demo/index/backup_index/b1/started_")).unwrap().clone();
    let epoch: i64 = started.rsplit('_').next().unwrap().trim_end_matches(".timestamp").parse().unwrap();
    let old = epoch - 3 * 86_400;
    node.storage.put_bytes(&started.replace(&epoch.to_string(), &old.to_string()), old.to_string()).await.unwrap();
    node.storage.delete(&started).await.unwrap();
    let before = list_all(&node).await.unwrap();
    let (objects, bytes, _) = expected_deletions(&env, &before, &["b1"]).await;
    let r = purge(&mut c).await.unwrap();
    assert_eq!(r.nb_backups_purged, 1);
    assert_eq!((r.nb_objects_purged as u64, r.total_purged_size as u64), (objects, bytes));
    assert_eq!(names(&mut c).await, ["b1-old", "b10"]);
    let after = list_all(&node).await.unwrap();
    for (k, size) in &before {
        let parts: Vec<&str> = k.split('/').collect();
        if parts.contains(&"b10") || parts.contains(&"b1-old") || k.contains("_b10") {
            assert_eq!(after.get(k), Some(size), "{k} of another backup was touched");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_during_a_running_differential_backup_keeps_it_restorable() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "max_backup_count = 1\nbackup_grace_period_in_days = 0\n".into();
    let env = Env::new(o).await.unwrap();
    let mut sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    backup(&mut c, "d1", Mode::Differential).await;
    drop(c);
    sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    sidecar.wait_exit(Duration::from_secs(30)).await.unwrap();
    // Slow uploads from now on, so that the purge lands while d2 runs: d2 uploads about 1 MB
    // of new SSTables, for seconds at this rate (at 256 KB/s it sometimes ended before the
    // purge began).
    let ini = std::fs::read_to_string(&env.ini_path)
        .unwrap()
        .replace("[storage]\n", "[storage]\ntransfer_max_bandwidth = 64KB/s\n");
    std::fs::write(&env.ini_path, ini).unwrap();
    env.with_sim(|s| {
        s.flush(5, 0.15).unwrap();
        s.compact(6).unwrap();
    })
    .await;
    let at_d2 = env.with_sim(|s| harness::sim::digest_data_dir(&s.data_dir)).await;
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    c.async_backup(pb::BackupRequest { name: "d2".into(), mode: Mode::Differential as i32 }).await.unwrap();
    let s = eventually(LIMIT, "d2 to upload", || {
        let mut c = c.clone();
        async move {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: "d2".into() }).await.ok()?.into_inner();
            (s.bytes_done > 0 || s.status != StatusType::InProgress as i32).then_some(s)
        }
    })
    .await;
    assert_eq!(s.status, StatusType::InProgress as i32, "d2 ended before the purge: {s:?}\n{}", sidecar.log_text());
    let r = purge(&mut c).await.unwrap();
    let s = c.backup_status(pb::BackupStatusRequest { backup_name: "d2".into() }).await.unwrap().into_inner();
    assert_eq!(s.status, StatusType::InProgress as i32, "d2 still runs after the purge: {s:?}");
    // d1 is the only complete backup: the count (complete backups only, contract §10.8 fixed)
    // keeps it while d2 runs, and nothing is deleted under the running backup.
    assert_eq!(r.nb_backups_purged, 0, "d1 is the only complete backup; d2 runs and is kept");
    assert_eq!(r.nb_objects_purged, 0, "nothing is deleted while d2 runs");
    wait(&mut c, "d2").await;
    let listed = names(&mut c).await;
    assert_eq!(listed, ["d1", "d2"], "GetBackups after d2 finished; sidecar log:\n{}", sidecar.log_text());
    // d2 restores exactly.
    env.with_sim(|s| s.wipe().unwrap()).await;
    let out = medusa_tests::restore_in_place(&env, "d2", "k");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = env.with_sim(|s| harness::sim::digest_data_dir(&s.data_dir)).await;
    assert!(got == at_d2, "{}", at_d2.diff(&got));
    // Now nothing runs and d2 is complete: the next purge removes d1 and what only d1 used.
    let r = purge(&mut c).await.unwrap();
    assert_eq!(r.nb_backups_purged, 1);
    assert_eq!(names(&mut c).await, ["d2"]);
    assert!(r.nb_objects_purged > 0);
    assert_eq!(r.total_objects_within_gc_grace, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_off_from_storage_midway_is_finished_by_the_next_one() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Tcp);
    o.storage_extra = "max_backup_count = 1\nbackup_grace_period_in_days = 0\n".into();
    let env = Env::new(o).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    backup(&mut c, "f1", Mode::Full).await;
    backup(&mut c, "d1", Mode::Differential).await;
    env.with_sim(|s| s.compact(3).unwrap()).await;
    backup(&mut c, "d2", Mode::Differential).await;
    let node = env.node().unwrap();
    let before = list_all(&node).await.unwrap();
    let (_, _, expected_after) = expected_deletions(&env, &before, &["f1", "d1"]).await;
    let proxy = env.proxy.as_ref().unwrap();
    proxy.break_after(40 << 10);
    let e = purge(&mut c).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    proxy.heal();
    let mid = list_all(&node).await.unwrap();
    assert!(mid.len() < before.len() && mid.len() > expected_after.len(), "the purge stopped midway");
    let r = purge(&mut c).await.unwrap();
    assert!(r.nb_objects_purged > 0);
    let after = list_all(&node).await.unwrap();
    assert_eq!(without_latest(&after), without_latest(&expected_after));
    assert_eq!(names(&mut c).await, ["d2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_a_bucket_written_by_python_medusa() {
    let mut o = EnvOptions::new(Kind::Local);
    o.storage_extra = "max_backup_count = 1\nbackup_grace_period_in_days = 0\n".into();
    let env = Env::new(o).await.unwrap();
    let medusa_tests::Backend::Local(local) = &env.backend else { unreachable!() };
    let fixture = harness::services::medusa_py_fixture();
    harness::services::copy_dir_all(&fixture.join("bucket"), &local.bucket_dir()).unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    assert_eq!(names(&mut c).await, ["diff-1", "diff-2", "full-1"]);
    let node = env.node().unwrap();
    let before = list_all(&node).await.unwrap();
    let (objects, bytes, expected_after) = expected_deletions(&env, &before, &["full-1", "diff-1"]).await;
    let r = purge(&mut c).await.unwrap();
    assert_eq!(r.nb_backups_purged, 2);
    assert_eq!((r.nb_objects_purged as u64, r.total_purged_size as u64), (objects, bytes));
    assert_eq!(names(&mut c).await, ["diff-2"]);
    assert_eq!(without_latest(&list_all(&node).await.unwrap()), without_latest(&expected_after));
    // diff-2 still restores to its digest.
    let dir = harness::services::TempDir::new("py-purged").unwrap();
    let root = dir.path().join("cassandra");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let yaml = root.join("cassandra.yaml");
    std::fs::write(&yaml, format!("data_file_directories:\n  - {}/data\ncommitlog_directory: {0}/cl\nsaved_caches_directory: {0}/sc\nhints_directory: {0}/h\n", root.display())).unwrap();
    let ini = dir.path().join("medusa.ini");
    std::fs::write(
        &ini,
        format!(
            "[cassandra]\nconfig_file = {}\n{}fqdn = {N}\n",
            yaml.display(),
            local.medusa_ini_storage(Some("demo"))
        ),
    )
    .unwrap();
    let out = std::process::Command::new(medusa_tests::binary("medusa-restore-init"))
        .arg("--config")
        .arg(&ini)
        .env_remove("RESTORE_MAPPING")
        .envs([
            ("BACKUP_NAME", "diff-2"),
            ("RESTORE_KEY", "k"),
            ("POD_NAME", N),
            ("MEDUSA_TMP_DIR", root.to_str().unwrap()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = harness::sim::digest_data_dir(&root.join("data"));
    let want = harness::sim::load_digest_json(&fixture.join("digests/diff-2.json"));
    assert!(got == want, "{}", want.diff(&got));
}
