//! A bucket that is not exactly as medusa-rs wrote it: index entries missing, manifests gone or
//! unreadable, garbage tokenmaps, folders with names medusa-rs refuses, objects truncated, grown,
//! renamed or duplicated from another backup. Every command must keep these invariants:
//!
//! - **nothing referenced is deleted**: after a purge or DeleteBackup, every object that a
//!   manifest still in the bucket (and readable) names is still there;
//! - **nothing unrestorable is reported complete**: GetBackups, `list-backups` and `status`
//!   agree, BackupStatus says SUCCESS where they do, and a backup any of them reports SUCCESS
//!   restores exactly, unless only its data objects were damaged (which no listing reads): then
//!   `verify` names the object and the restore fails naming it;
//! - **a restore is exact or fails** naming the object, with the data directory and the commit
//!   log untouched;
//! - **no panic** in any command.
//!
//! The bucket holds two nodes: `demo-dc1-default-sts-0`, written by the real Python Medusa 0.31
//! (`tests/fixtures/medusa-py-0.31`: full-1, diff-1, diff-2), and `rs-node-1`, written by
//! medusa-rs (rs-full, rs-diff), under the prefix `demo`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use harness::services::{LocalStorage, TempDir, copy_dir_all, medusa_py_fixture};
use harness::sim::{DataDigest, digest_data_dir, load_digest_json};
use medusa::format::layout::Mode;
use medusa::service::pb;
use medusa_tests::{Env, EnvOptions, Kind, Sidecar, backup, binary, change_one_data_file, live};
use serde_json::Value;

/// The Python Medusa node of the fixture.
const PY: &str = "demo-dc1-default-sts-0";
/// The node medusa-rs backs up here.
const RS: &str = "rs-node-1";

/// The template bucket and what each backup restores to.
struct World {
    env: Env,
    /// `<base>/medusa/`, the bucket as both writers left it.
    template: PathBuf,
    /// Backup name -> (node, the data directory it restores to).
    expected: BTreeMap<String, (String, DataDigest)>,
}

impl World {
    async fn new() -> World {
        let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
        let ini = std::fs::read_to_string(&env.ini_path).unwrap();
        std::fs::write(&env.ini_path, ini.replace(&format!("fqdn = {PY}\n"), &format!("fqdn = {RS}\n"))).unwrap();
        let node = env.node().unwrap();
        let mut expected = BTreeMap::new();
        backup(&node, "rs-full", Mode::Full).await.unwrap();
        expected.insert("rs-full".to_string(), (RS.to_string(), live(&env).await));
        change_one_data_file(&env).await;
        backup(&node, "rs-diff", Mode::Differential).await.unwrap();
        expected.insert("rs-diff".to_string(), (RS.to_string(), live(&env).await));
        let medusa_tests::Backend::Local(local) = &env.backend else { unreachable!() };
        let template = local.bucket_dir();
        let fixture = medusa_py_fixture();
        copy_dir_all(&fixture.join("bucket"), &template).unwrap();
        for b in ["full-1", "diff-1", "diff-2"] {
            let d = load_digest_json(&fixture.join(format!("digests/{b}.json")));
            expected.insert(b.to_string(), (PY.to_string(), d));
        }
        World { env, template, expected }
    }

    /// A fresh copy of the template bucket.
    fn copy(&self) -> LocalStorage {
        LocalStorage::copy_of(&self.template, "medusa").unwrap()
    }
}

/// One run's bucket copy and the files that use it.
struct Run {
    bucket: LocalStorage,
    dir: TempDir,
    node: String,
}

impl Run {
    fn new(w: &World, node: &str, extra: &str) -> Run {
        let bucket = w.copy();
        let dir = TempDir::new("hostile-bucket").unwrap();
        let env_ini = std::fs::read_to_string(&w.env.ini_path).unwrap();
        // The env's [cassandra] and [kubernetes] sections (the simulated node's Management API),
        // this run's bucket and node.
        let tail = env_ini[env_ini.find("[grpc]").unwrap()..].to_string();
        let cassandra = env_ini[..env_ini.find("[storage]").unwrap()].to_string();
        let ini = format!(
            "{cassandra}{}fqdn = {node}\nmax_retries = 1\nretry_timeout = 5\nbackup_grace_period_in_days = 0\n{extra}\n{tail}",
            bucket.medusa_ini_storage(Some("demo"))
        );
        std::fs::write(dir.path().join("medusa.ini"), ini).unwrap();
        Run { bucket, dir, node: node.to_string() }
    }

    fn ini(&self) -> PathBuf {
        self.dir.path().join("medusa.ini")
    }

    fn root(&self) -> PathBuf {
        self.bucket.bucket_dir()
    }

    fn key_path(&self, key: &str) -> PathBuf {
        self.root().join(key)
    }

    async fn sidecar(&self) -> (Sidecar, Client) {
        let state = self.dir.path().join(format!("state-{}", rand::random::<u32>()));
        let s = Sidecar::start_at(&self.ini(), &state, self.dir.path(), &[]).await.unwrap();
        let c = s.client().await.unwrap();
        (s, c)
    }

    fn cli(&self, args: &[&str]) -> Out {
        let out = Command::new(binary("medusa-rs"))
            .arg("--config")
            .arg(self.ini())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("POD_NAME")
            .output()
            .unwrap();
        Out::of(out)
    }

    /// An in-place restore of `backup` into a fresh node (empty data directory, a commit log
    /// holding one segment): the output, the data directory, and whether the commit log and
    /// the data directory are as they were.
    fn restore(&self, backup: &str) -> Restored {
        let root = self.dir.path().join(format!("node-{backup}-{}", rand::random::<u32>()));
        for d in ["data", "commitlog", "saved_caches", "hints"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("commitlog/CommitLog-7-1.log"), b"segment").unwrap();
        let yaml = root.join("cassandra.yaml");
        std::fs::write(
            &yaml,
            format!(
                "data_file_directories:\n  - {0}/data\ncommitlog_directory: {0}/commitlog\n\
                 saved_caches_directory: {0}/saved_caches\nhints_directory: {0}/hints\n",
                root.display()
            ),
        )
        .unwrap();
        let ini = root.join("medusa.ini");
        let text = format!(
            "[cassandra]\nconfig_file = {}\n{}fqdn = {}\nmax_retries = 1\nretry_timeout = 5\n",
            yaml.display(),
            self.bucket.medusa_ini_storage(Some("demo")),
            self.node
        );
        std::fs::write(&ini, text).unwrap();
        let out = Command::new(binary("medusa-restore-init"))
            .arg("--config")
            .arg(&ini)
            .env_remove("RESTORE_MAPPING")
            .env("MEDUSA_RS_STATE_DIR", root.join("state"))
            .envs([("BACKUP_NAME", backup), ("RESTORE_KEY", "k"), ("POD_NAME", self.node.as_str())])
            .env("MEDUSA_TMP_DIR", &root)
            .output()
            .unwrap();
        let commitlog_kept = root.join("commitlog/CommitLog-7-1.log").exists();
        let done = root.join(".last-restore").exists();
        Restored { out: Out::of(out), data: digest_data_dir(&root.join("data")), commitlog_kept, done }
    }
}

type Client = pb::medusa_client::MedusaClient<tonic::transport::Channel>;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn of(o: std::process::Output) -> Out {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    fn panicked(&self) -> bool {
        self.code == Some(101) || self.stderr.contains("panicked")
    }
}

struct Restored {
    out: Out,
    data: DataDigest,
    commitlog_kept: bool,
    done: bool,
}

/// Every object of the bucket: key -> size.
fn objects(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(true) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let key = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(key, e.metadata().unwrap().len());
        }
    }
    out
}

/// Keys that readable manifests name, over every manifest file in the bucket.
fn referenced(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, _) in objects(root) {
        if !key.ends_with("/meta/manifest.json") {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(root.join(&key)).unwrap()) else { continue };
        let Some(sections) = v.as_array() else { continue };
        for s in sections {
            for o in s["objects"].as_array().into_iter().flatten() {
                if let Some(p) = o["path"].as_str() {
                    out.insert(p.to_string(), key.clone());
                }
            }
        }
    }
    out
}

/// Invariant: every object a manifest names that was there before is still there.
fn check_nothing_referenced_deleted(root: &Path, before: &BTreeMap<String, u64>, what: &str) -> Result<(), String> {
    let now = objects(root);
    for (key, manifest) in referenced(root) {
        if before.contains_key(&key) && !now.contains_key(&key) {
            return Err(format!("{what} deleted {key}, which {manifest} references"));
        }
    }
    Ok(())
}

async fn get_backups(c: &mut Client) -> Result<Vec<pb::BackupSummary>, tonic::Status> {
    Ok(c.get_backups(pb::GetBackupsRequest {}).await?.into_inner().backups)
}

async fn backup_status(c: &mut Client, name: &str) -> Result<pb::BackupStatusResponse, tonic::Status> {
    Ok(c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await?.into_inner())
}

fn status_name(s: i32) -> &'static str {
    match pb::StatusType::try_from(s) {
        Ok(pb::StatusType::Success) => "SUCCESS",
        Ok(pb::StatusType::InProgress) => "IN_PROGRESS",
        Ok(pb::StatusType::Failed) => "FAILED",
        _ => "UNKNOWN",
    }
}

// ---------------------------------------------------------------------------------------------
// One test per class of defect
// ---------------------------------------------------------------------------------------------

/// Class 1: a backup whose index entries are missing still counts for the orphan cleanup; a
/// DeleteBackup of the backup it shares files with, then a purge, leave it restorable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_keeps_the_files_of_a_backup_missing_from_the_index() {
    let w = World::new().await;
    let run = Run::new(&w, PY, "");
    std::fs::remove_dir_all(run.key_path("demo/index/backup_index/diff-2")).unwrap();
    let (sidecar, mut c) = run.sidecar().await;
    c.delete_backup(pb::DeleteBackupRequest { name: "diff-1".into() }).await.unwrap();
    let p = c.purge_backups(pb::PurgeBackupsRequest {}).await.unwrap().into_inner();
    assert!(p.cleanup_deferred.is_empty(), "{p:?}");
    let r = run.restore("diff-2");
    let want = &w.expected["diff-2"].1;
    assert!(
        r.out.code == Some(0) && &r.data == want,
        "diff-2 lost its files to the cleanup ({:?}):\n{}\n{}\nsidecar:\n{}",
        r.out.code,
        r.out.stderr,
        want.diff(&r.data),
        sidecar.log_text()
    );
}

/// Class 1: a backup folder whose name medusa-rs refuses (Python Medusa could have written it)
/// defers the orphan cleanup, reported in the purge's answer and log; its files stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_a_name_medusa_rs_refuses_defers_the_cleanup() {
    let w = World::new().await;
    let run = Run::new(&w, PY, "");
    let node = run.key_path(&format!("demo/{PY}"));
    copy_dir_all(&node.join("diff-2"), &node.join("diff..copy")).unwrap();
    let before = objects(&run.root());
    let (sidecar, mut c) = run.sidecar().await;
    for b in ["diff-1", "diff-2"] {
        c.delete_backup(pb::DeleteBackupRequest { name: b.into() }).await.unwrap();
    }
    let p = c.purge_backups(pb::PurgeBackupsRequest {}).await.unwrap().into_inner();
    check_nothing_referenced_deleted(&run.root(), &before, "DeleteBackup + PurgeBackups").unwrap();
    assert!(p.cleanup_deferred.contains("diff..copy"), "{p:?}");
    assert!(p.total_objects_within_gc_grace > 0, "{p:?}");
    let log = sidecar.log_text();
    assert!(log.contains("orphan cleanup deferred") && log.contains("diff..copy"), "{log}");
}

/// Class 9: a backup whose manifest is gone is FAILED in every view, as restore sees it; verify
/// does not call its manifest validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_manifest_is_gone_is_failed_in_every_view() {
    let w = World::new().await;
    let run = Run::new(&w, PY, "");
    let key = format!("demo/{PY}/diff-2/meta/manifest.json");
    std::fs::remove_file(run.key_path(&key)).unwrap();
    let list = run.cli(&["list-backups", "-o", "json"]).json();
    let entry = list["backups"].as_array().unwrap().iter().find(|b| b["name"] == "diff-2").unwrap().clone();
    assert_eq!(entry["status"], "FAILED", "{entry}");
    assert_eq!(entry["complete"], false, "{entry}");
    let status = run.cli(&["status", "--backup-name", "diff-2", "-o", "json"]);
    assert_eq!(status.code, Some(4), "{}", status.stdout);
    assert_eq!(status.json()["nodes"][0]["status"], "damaged", "{}", status.stdout);
    let verify = run.cli(&["verify", "--backup-name", "diff-2"]);
    assert_eq!(verify.code, Some(4), "{}", verify.stdout);
    assert!(!verify.stdout.contains("Manifest validated: OK"), "{}", verify.stdout);
    assert!(verify.stdout.contains("manifest.json is missing"), "{}", verify.stdout);
    let (_sidecar, mut c) = run.sidecar().await;
    let got = c.get_backup(pb::GetBackupRequest { backup_name: "diff-2".into() }).await.unwrap().into_inner();
    assert_eq!(status_name(got.backup.unwrap().status), "FAILED");
    let st = backup_status(&mut c, "diff-2").await.unwrap();
    assert_eq!(status_name(st.status), "FAILED");
    let r = run.restore("diff-2");
    assert_ne!(r.out.code, Some(0), "{}", r.out.stderr);
}

/// Class 9: a garbage tokenmap index entry falls back to the node's own copy; with both
/// unreadable the backup is FAILED (not IN_PROGRESS forever) and the key is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_tokenmap_is_logged_and_never_in_progress_forever() {
    let w = World::new().await;
    let run = Run::new(&w, PY, "");
    let index_key = format!("demo/index/backup_index/diff-2/tokenmap_{PY}.json");
    std::fs::write(run.key_path(&index_key), b"{not json").unwrap();
    let (sidecar, mut c) = run.sidecar().await;
    let all = get_backups(&mut c).await.unwrap();
    let b = all.iter().find(|b| b.backup_name == "diff-2").unwrap();
    assert_eq!(status_name(b.status), "SUCCESS", "the node's own tokenmap serves: {b:?}");
    assert!(sidecar.log_text().contains(&index_key), "the unreadable key is logged:\n{}", sidecar.log_text());
    drop(sidecar);
    std::fs::write(run.key_path(&format!("demo/{PY}/diff-2/meta/tokenmap.json")), b"[]").unwrap();
    let (sidecar, mut c) = run.sidecar().await;
    let all = get_backups(&mut c).await.unwrap();
    let b = all.iter().find(|b| b.backup_name == "diff-2").unwrap();
    assert_eq!(status_name(b.status), "FAILED", "{b:?}");
    let list = run.cli(&["list-backups", "-o", "json"]).json();
    let entry = list["backups"].as_array().unwrap().iter().find(|b| b["name"] == "diff-2").unwrap().clone();
    assert_eq!(entry["status"], "FAILED", "{entry}");
    assert!(sidecar.log_text().contains("meta/tokenmap.json"), "{}", sidecar.log_text());
}

// ---------------------------------------------------------------------------------------------
// The mutation suite
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    IndexEntries,
    IndexTokenmap,
    Latest,
    Manifest,
    Tokenmap,
    Schema,
    ServerVersion,
    Data,
    FailureMarker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    Delete,
    Truncate,
    Garbage,
    Grow,
    /// Moved to a name medusa-rs refuses (`..` in the backup's or the file's name).
    Rename,
    /// Replaced by the same object of another backup of the node.
    Duplicate,
}

const OBJECTS: [Object; 9] = [
    Object::IndexEntries,
    Object::IndexTokenmap,
    Object::Latest,
    Object::Manifest,
    Object::Tokenmap,
    Object::Schema,
    Object::ServerVersion,
    Object::Data,
    Object::FailureMarker,
];
const MUTATIONS: [Mutation; 6] =
    [Mutation::Delete, Mutation::Truncate, Mutation::Garbage, Mutation::Grow, Mutation::Rename, Mutation::Duplicate];

/// The keys of `object` for node backup (node, backup).
fn keys_of(root: &Path, object: Object, node: &str, b: &str) -> Vec<String> {
    let meta = |f: &str| vec![format!("demo/{node}/{b}/meta/{f}")];
    match object {
        Object::IndexEntries => objects(root)
            .into_keys()
            .filter(|k| k.starts_with(&format!("demo/index/backup_index/{b}/")) && !k.contains("/tokenmap_"))
            .filter(|k| k.contains(node))
            .collect(),
        Object::IndexTokenmap => vec![format!("demo/index/backup_index/{b}/tokenmap_{node}.json")],
        Object::Latest => vec![format!("demo/index/latest_backup/{node}/backup_name.txt")],
        Object::Manifest => meta("manifest.json"),
        Object::Tokenmap => meta("tokenmap.json"),
        Object::Schema => meta("schema.cql"),
        Object::ServerVersion => meta("server_version.json"),
        Object::FailureMarker => meta("failed.json"),
        Object::Data => {
            // The largest data file the backup's manifest names.
            let m: Value = serde_json::from_slice(
                &std::fs::read(root.join(format!("demo/{node}/{b}/meta/manifest.json"))).unwrap(),
            )
            .unwrap();
            let mut best: Option<(u64, String)> = None;
            for s in m.as_array().unwrap() {
                for o in s["objects"].as_array().unwrap() {
                    let size = o["size"].as_u64().unwrap();
                    if best.as_ref().is_none_or(|(s, _)| size > *s) {
                        best = Some((size, o["path"].as_str().unwrap().to_string()));
                    }
                }
            }
            vec![best.unwrap().1]
        }
    }
}

/// Applies `m` to `keys` (a backup `b` of the node; `other` is another backup of it).
fn mutate(root: &Path, keys: &[String], m: Mutation, b: &str, other: &str) {
    for key in keys {
        let path = root.join(key);
        let exists = path.exists();
        match m {
            Mutation::Delete => {
                let _ = std::fs::remove_file(&path);
            }
            Mutation::Truncate | Mutation::Garbage | Mutation::Grow => {
                let old = std::fs::read(&path).unwrap_or_default();
                let new = match m {
                    Mutation::Truncate => old[..old.len() / 2].to_vec(),
                    Mutation::Garbage => (0..old.len() / 2 + 7).map(|_| rand::random::<u8>()).collect(),
                    _ => [old.as_slice(), &[0u8; 1024]].concat(),
                };
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, new).unwrap();
            }
            Mutation::Rename if exists => {
                let to = if key.contains(&format!("/{b}/")) {
                    key.replacen(&format!("/{b}/"), &format!("/{b}..renamed/"), 1)
                } else {
                    format!("{key}..renamed")
                };
                std::fs::create_dir_all(root.join(&to).parent().unwrap()).unwrap();
                std::fs::rename(&path, root.join(to)).unwrap();
            }
            Mutation::Rename => {}
            Mutation::Duplicate => {
                let from = if key.ends_with("/backup_name.txt") {
                    std::fs::write(&path, other).unwrap();
                    continue;
                } else if key.contains(&format!("/{b}/")) {
                    key.replacen(&format!("/{b}/"), &format!("/{other}/"), 1)
                } else {
                    // A shared data object: another data object of the same table folder.
                    let dir = path.parent().unwrap();
                    let sibling = std::fs::read_dir(dir)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .find(|p| p != &path && p.is_file())
                        .unwrap();
                    sibling.strip_prefix(root).unwrap().to_string_lossy().into_owned()
                };
                if let Ok(bytes) = std::fs::read(root.join(&from)) {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, bytes).unwrap();
                }
            }
        }
    }
}

/// What each view said about the mutated backup.
#[derive(Debug, Default)]
struct Views {
    get_backups: String,
    backup_status: String,
    list: String,
    status_exit: Option<i32>,
}

impl Views {
    fn success(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.get_backups == "SUCCESS" {
            v.push("GetBackups");
        }
        if self.backup_status == "SUCCESS" {
            v.push("BackupStatus");
        }
        if self.list == "SUCCESS" {
            v.push("list-backups");
        }
        if self.status_exit == Some(0) {
            v.push("status");
        }
        v
    }
}

/// Runs every command on one mutated bucket and checks the invariants; returns the number of
/// commands run.
async fn one_case(w: &World, node: &str, b: &str, other: &str, object: Object, m: Mutation) -> Result<u32, String> {
    let run = Run::new(w, node, "");
    let keys = keys_of(&run.root(), object, node, b);
    let last_segment: Vec<String> =
        keys.iter().map(|k| k.rsplit('/').next().unwrap().trim_end_matches("..renamed").to_string()).collect();
    mutate(&run.root(), &keys, m, b, other);
    let mut commands = 0;
    let mut views = Views::default();
    let (sidecar, mut c) = run.sidecar().await;
    let ctx = |what: &str| format!("{what} (sidecar log:\n{})", sidecar.log_text());

    // Read-only views.
    match get_backups(&mut c).await {
        Ok(all) => {
            views.get_backups =
                all.iter().find(|s| s.backup_name == b).map(|s| status_name(s.status)).unwrap_or("ABSENT").into()
        }
        Err(e) => views.get_backups = format!("error {:?}", e.code()),
    }
    commands += 1;
    match backup_status(&mut c, b).await {
        Ok(s) => views.backup_status = status_name(s.status).into(),
        Err(e) if e.code() == tonic::Code::Internal => return Err(ctx(&format!("BackupStatus INTERNAL: {e:?}"))),
        Err(e) => views.backup_status = format!("error {:?}", e.code()),
    }
    commands += 1;
    let list = run.cli(&["list-backups", "-o", "json"]);
    commands += 1;
    let listed = list.json();
    views.list = listed["backups"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == b))
        .and_then(|e| e["status"].as_str())
        .unwrap_or("ABSENT")
        .to_string();
    let status = run.cli(&["status", "--backup-name", b, "-o", "json"]);
    commands += 1;
    views.status_exit = status.code;
    let verify = run.cli(&["verify", "--backup-name", b, "-o", "json"]);
    commands += 1;
    for (what, out) in [("list-backups", &list), ("status", &status), ("verify", &verify)] {
        if out.panicked() {
            return Err(format!("{what} panicked: {}", out.stderr));
        }
    }
    let restored = run.restore(b);
    commands += 1;
    if restored.out.panicked() {
        return Err(format!("restore-init panicked: {}", restored.out.stderr));
    }

    // A restore is exact or fails, naming the object, leaving the node as it was.
    let (_, want) = &w.expected[b];
    let source = w.expected.get(other).map(|(_, d)| d);
    let exact = restored.out.code == Some(0)
        && restored.done
        && (&restored.data == want || (m == Mutation::Duplicate && Some(&restored.data) == source));
    if restored.out.code == Some(0) && !exact {
        return Err(format!(
            "restore-init exited 0 but the data is not the backup's:\n{}\n{}",
            want.diff(&restored.data),
            restored.out.stderr
        ));
    }
    if !exact {
        if restored.data.files != 0 || !restored.commitlog_kept || restored.done {
            return Err(format!(
                "a failed restore touched the node (files {}, commit log kept {}, .last-restore {}):\n{}",
                restored.data.files, restored.commitlog_kept, restored.done, restored.out.stderr
            ));
        }
        let text = format!("{}{}", restored.out.stdout, restored.out.stderr);
        let named = last_segment.iter().any(|s| text.contains(s.as_str())) || text.contains("manifest");
        if !named {
            return Err(format!("the failed restore does not name the object {keys:?}:\n{text}"));
        }
    }

    // Nothing unrestorable is reported complete; the views agree.
    // The cluster views (GetBackups, list-backups, status) agree, and a SUCCESS there is this
    // node's SUCCESS too. BackupStatus, which reads only this node's folder, may say SUCCESS
    // where the cluster views do not (the index lost the backup, its ring is unreadable) when
    // the node's part restores exactly.
    let success = views.success();
    let cluster = success.iter().filter(|v| **v != "BackupStatus").count();
    if cluster != 0 && (cluster != 3 || !success.contains(&"BackupStatus")) {
        return Err(ctx(&format!("the views disagree: {views:?}")));
    }
    if !success.is_empty() && !exact {
        // Only damage to data objects is invisible to the listings; verify must name it.
        let named = verify.json()["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["key"].as_str().is_some_and(|k| keys.iter().any(|x| x == k))));
        if object != Object::Data || verify.code != Some(4) || !named {
            return Err(ctx(&format!(
                "{success:?} report {b} SUCCESS but it does not restore:\n{}\nverify: {}",
                restored.out.stderr, verify.stdout
            )));
        }
    }

    // Destructive commands keep every referenced object.
    let before = objects(&run.root());
    let purge = c.purge_backups(pb::PurgeBackupsRequest {}).await;
    commands += 1;
    if let Err(e) = &purge
        && e.code() == tonic::Code::Internal
    {
        return Err(ctx(&format!("PurgeBackups INTERNAL: {e:?}")));
    }
    check_nothing_referenced_deleted(&run.root(), &before, "PurgeBackups").map_err(|e| ctx(&e))?;
    let before = objects(&run.root());
    let del = c.delete_backup(pb::DeleteBackupRequest { name: other.into() }).await;
    commands += 1;
    if let Err(e) = &del
        && e.code() == tonic::Code::Internal
    {
        return Err(ctx(&format!("DeleteBackup INTERNAL: {e:?}")));
    }
    check_nothing_referenced_deleted(&run.root(), &before, "DeleteBackup").map_err(|e| ctx(&e))?;
    drop(sidecar);
    let before = objects(&run.root());
    let limited = Run { bucket: run.bucket, dir: TempDir::new("hostile-limited").unwrap(), node: node.to_string() };
    let text = std::fs::read_to_string(run.dir.path().join("medusa.ini")).unwrap();
    std::fs::write(
        limited.ini(),
        text.replace("backup_grace_period_in_days = 0\n", "backup_grace_period_in_days = 0\nmax_backup_count = 1\n"),
    )
    .unwrap();
    let purge = limited.cli(&["purge", "--apply"]);
    commands += 1;
    if purge.panicked() {
        return Err(format!("purge panicked: {}", purge.stderr));
    }
    check_nothing_referenced_deleted(&limited.root(), &before, "purge --apply (max_backup_count = 1)")?;
    Ok(commands)
}

/// Every mutation of every kind of object, on a backup of each writer, against every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_keeps_the_invariants() {
    let w = World::new().await;
    let started = Instant::now();
    let targets = [(PY, "diff-1", "diff-2"), (RS, "rs-full", "rs-diff")];
    let (mut cases, mut commands) = (0u32, 0u32);
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    for (node, b, other) in targets {
        for object in OBJECTS {
            for m in MUTATIONS {
                cases += 1;
                match one_case(&w, node, b, other, object, m).await {
                    Ok(n) => commands += n,
                    Err(e) => {
                        let id = format!("{node}/{b}: {object:?} x {m:?}");
                        if seen.insert(id.clone()) {
                            failures.push(format!("{id}: {e}"));
                        }
                    }
                }
            }
        }
    }
    // Written past the test harness's capture, so that CI's log shows the count.
    use std::io::Write;
    let line = format!(
        "bucket mutations: {cases} mutations ({} objects x {} mutations x {} backups), {commands} commands run, {} violations, {:.0} s",
        OBJECTS.len(),
        MUTATIONS.len(),
        targets.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(std::io::stderr(), "{line}");
    assert!(failures.is_empty(), "{} of {cases} cases broke an invariant:\n{}", failures.len(), failures.join("\n\n"));
}
