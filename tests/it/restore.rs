//! The restore init container, as the real binary: restores equal the backed-up data file by
//! file, the skip rules, corrupt objects, kills at several points, and backups written by the
//! real Python Medusa.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::services::{LocalStorage, TempDir, medusa_py_fixture};
use harness::sim::{digest_data_dir, load_digest_json};
use medusa::format::layout::Mode;
use medusa_tests::{Env, EnvOptions, Kind, binary, live};

const FQDN: &str = "demo-dc1-default-sts-0";

struct Run {
    code: Option<i32>,
    log: String,
}

fn restore_command(ini: &Path, vars: &[(&str, &str)]) -> std::process::Command {
    let mut c = std::process::Command::new(binary("medusa-restore-init"));
    c.arg("--config").arg(ini).env("RUST_LOG", "info").env_remove("RESTORE_MAPPING");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    c
}

async fn run_restore(ini: &Path, vars: &[(&str, &str)]) -> Run {
    let child = restore_command(ini, vars).spawn().unwrap();
    let out =
        tokio::time::timeout(Duration::from_secs(180), tokio::task::spawn_blocking(move || child.wait_with_output()))
            .await
            .expect("restore did not finish in 180 s")
            .unwrap()
            .unwrap();
    Run {
        code: out.status.code(),
        log: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    }
}

fn in_place_mapping() -> String {
    format!(r#"{{"in_place":true,"host_map":{{"{FQDN}":{{"source":["{FQDN}"],"seed":false}}}}}}"#)
}

fn vars<'a>(backup: &'a str, key: &'a str, mapping: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("BACKUP_NAME", backup), ("RESTORE_KEY", key), ("POD_NAME", FQDN), ("RESTORE_MAPPING", mapping)]
}

/// An empty node (data, commitlog, caches, hints, cassandra.yaml) and a config for `storage`.
fn empty_node(dir: &Path, storage_section: &str) -> (PathBuf, PathBuf) {
    let root = dir.join("cassandra");
    for d in ["data", "commitlog", "saved_caches", "hints", "conf"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let yaml = root.join("conf/cassandra.yaml");
    std::fs::write(
        &yaml,
        format!(
            "cluster_name: demo\nnum_tokens: 16\ndata_file_directories:\n  - {r}/data\ncommitlog_directory: {r}/commitlog\nsaved_caches_directory: {r}/saved_caches\nhints_directory: {r}/hints\n",
            r = root.display()
        ),
    )
    .unwrap();
    let ini = dir.join("medusa.ini");
    std::fs::write(&ini, format!("[cassandra]\nconfig_file = {}\n\n{storage_section}fqdn = {FQDN}\n", yaml.display()))
        .unwrap();
    (root, ini)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_python_medusa_backups_to_their_digests() {
    let fixture = medusa_py_fixture();
    for backup in ["full-1", "diff-1", "diff-2"] {
        let dir = TempDir::new("py-restore").unwrap();
        let bucket = LocalStorage::copy_of(&fixture.join("bucket"), "bucket").unwrap();
        let (root, ini) = empty_node(dir.path(), &bucket.medusa_ini_storage(Some("demo")));
        let mapping = in_place_mapping();
        let tmp = root.display().to_string();
        let r = run_restore(
            &ini,
            &[vars(backup, "key-1", &mapping).as_slice(), &[("MEDUSA_TMP_DIR", tmp.as_str())]].concat(),
        )
        .await;
        assert_eq!(r.code, Some(0), "{backup}: {}", r.log);
        let got = digest_data_dir(&root.join("data"));
        let want = load_digest_json(&fixture.join(format!("digests/{backup}.json")));
        assert!(got == want, "{backup} differs from its digest:\n{}", want.diff(&got));
        assert_eq!((got.files, got.bytes), (want.files, want.bytes));
        assert_eq!(std::fs::read_to_string(root.join(".last-restore")).unwrap(), "key-1\n");
        assert!(!root.join("medusa-restore-key-1").exists(), "staging left behind");
    }
}

async fn backup(env: &Env, name: &str, mode: Mode) {
    medusa_tests::backup(&env.node().unwrap(), name, mode).await.unwrap();
}

fn restore_vars(env: &Env) -> Vec<(String, String)> {
    let root = env.with_sim_blocking(|s| s.root.clone());
    vec![("MEDUSA_TMP_DIR".into(), root.display().to_string())]
}

trait SimBlocking {
    fn with_sim_blocking<T>(&self, f: impl FnOnce(&harness::sim::SimNode) -> T) -> T;
}

impl SimBlocking for Env {
    fn with_sim_blocking<T>(&self, f: impl FnOnce(&harness::sim::SimNode) -> T) -> T {
        f(&self.sim.lock().unwrap())
    }
}

fn with<'a>(base: &'a [(String, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    v.extend_from_slice(more);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_round_trip_over_s3_skip_rules_and_idempotence() {
    let env = Env::new(EnvOptions::new(Kind::S3sFs)).await.unwrap();
    backup(&env, "full-1", Mode::Full).await;
    let at_full = live(&env).await;
    env.with_sim(|s| {
        s.flush(3, 0.1).unwrap();
        s.compact(4).unwrap();
    })
    .await;
    backup(&env, "diff-1", Mode::Differential).await;
    let at_diff = live(&env).await;
    let root = env.with_sim_blocking(|s| s.root.clone());
    let base = restore_vars(&env);
    let mapping = in_place_mapping();

    // Skip rules: each exits 0, says why in one line, and touches nothing.
    let r = run_restore(&env.ini_path, &with(&base, &[("POD_NAME", FQDN)])).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    assert!(r.log.contains("no restore requested"), "{}", r.log);
    // A backup that is not in the bucket is an error naming it, the bucket and the prefix
    // (a typo must not boot Cassandra on its old data), and touches nothing either.
    let r = run_restore(&env.ini_path, &with(&base, &vars("nope", "k0", &mapping))).await;
    assert_eq!(r.code, Some(1), "{}", r.log);
    assert!(r.log.contains("backup nope has no part for node") && r.log.contains("in bucket "), "{}", r.log);
    assert!(r.log.contains("prefix \"demo\""), "{}", r.log);
    let remote = r#"{"in_place":false,"host_map":{"other-pod":{"source":["x"],"seed":false}}}"#;
    let r = run_restore(&env.ini_path, &with(&base, &vars("diff-1", "k0", remote))).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    assert!(r.log.contains("is not in the restore mapping"), "{}", r.log);
    assert!(!root.join(".last-restore").exists());
    assert!(live(&env).await == at_diff);

    // Wipe the node and restore the differential: file for file what was backed up.
    env.with_sim(|s| s.wipe().unwrap()).await;
    let r = run_restore(&env.ini_path, &with(&base, &vars("diff-1", "k1", &mapping))).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    let got = live(&env).await;
    assert!(got == at_diff, "{}", at_diff.diff(&got));
    for d in ["commitlog", "saved_caches", "hints"] {
        assert_eq!(std::fs::read_dir(root.join(d)).unwrap().count(), 0, "{d} not emptied");
    }
    // Same key again: nothing happens.
    let before = std::fs::metadata(root.join(".last-restore")).unwrap().modified().unwrap();
    let r = run_restore(&env.ini_path, &with(&base, &vars("diff-1", "k1", &mapping))).await;
    assert_eq!(r.code, Some(0));
    assert!(r.log.contains("already done"), "{}", r.log);
    assert_eq!(std::fs::metadata(root.join(".last-restore")).unwrap().modified().unwrap(), before);
    // A new key restores the older full backup over the current data.
    let r = run_restore(&env.ini_path, &with(&base, &vars("full-1", "k2", &mapping))).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    let got = live(&env).await;
    // Tables created after full-1 are left alone (Medusa's rule); every table of full-1 is exact.
    for (rel, d) in &at_full.entries {
        assert_eq!(got.entries.get(rel), Some(d), "{rel}");
    }
    let full_tables: std::collections::HashSet<String> =
        at_full.entries.keys().map(|k| k.rsplit_once('/').unwrap().0.to_string()).collect();
    for rel in got.entries.keys() {
        let table = rel.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
        if full_tables.iter().any(|t| t.starts_with(&table)) {
            assert!(at_full.entries.contains_key(rel), "{rel} is not from full-1");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_restore_drops_identity_keeps_auth_and_sets_tokens() {
    let env = Env::new(EnvOptions::new(Kind::S3sFs)).await.unwrap();
    backup(&env, "b1", Mode::Differential).await;
    let backed_up = live(&env).await;
    let tokens = env.with_sim(|s| s.tokens.clone()).await;
    // A different node "new-0" with its own auth data.
    let dir = TempDir::new("remote").unwrap();
    let storage = std::fs::read_to_string(&env.ini_path).unwrap();
    let storage = storage[storage.find("[storage]").unwrap()..storage.find("[grpc]").unwrap()]
        .replace(&format!("fqdn = {FQDN}\n"), "");
    let (root, ini) = empty_node(dir.path(), &storage);
    let auth_dir = backed_up
        .entries
        .keys()
        .find(|k| k.starts_with("system_auth/"))
        .unwrap()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    std::fs::create_dir_all(root.join("data").join(&auth_dir)).unwrap();
    std::fs::write(root.join("data").join(&auth_dir).join("nb-9-big-Data.db"), b"target's own roles").unwrap();
    let mapping = format!(r#"{{"in_place":false,"host_map":{{"new-0":{{"source":["{FQDN}"],"seed":false}}}}}}"#);
    let tmp = root.display().to_string();
    let r = run_restore(
        &ini,
        &[
            ("BACKUP_NAME", "b1"),
            ("RESTORE_KEY", "rk"),
            ("POD_NAME", "new-0"),
            ("RESTORE_MAPPING", &mapping),
            ("MEDUSA_TMP_DIR", &tmp),
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    let got = digest_data_dir(&root.join("data"));
    for (rel, d) in &backed_up.entries {
        let identity =
            rel.starts_with("system/local-") || rel.starts_with("system/peers-") || rel.starts_with("system/peers_v2-");
        if identity || rel.starts_with("system_auth/") {
            assert!(!got.entries.contains_key(rel), "{rel} restored onto another node");
        } else {
            assert_eq!(got.entries.get(rel), Some(d), "{rel}");
        }
    }
    assert_eq!(
        std::fs::read(root.join("data").join(&auth_dir).join("nb-9-big-Data.db")).unwrap(),
        b"target's own roles"
    );
    let yaml = std::fs::read_to_string(root.join("conf/cassandra.yaml")).unwrap();
    let list: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    assert!(yaml.contains(&format!("initial_token: {}\n", list.join(","))), "{yaml}");
    assert!(yaml.contains(&format!("num_tokens: {}\n", tokens.len())), "{yaml}");
    assert!(yaml.contains("auto_bootstrap: false\n"), "{yaml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_fails_with_its_key_and_leaves_the_data_alone() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    backup(&env, "b1", Mode::Full).await;
    let node = env.node().unwrap();
    let m = node.storage.get_bytes(&format!("demo/{FQDN}/b1/meta/manifest.json")).await.unwrap();
    let m = medusa::format::manifest::parse(&m).unwrap();
    let victim = m.iter().flat_map(|s| &s.objects).find(|o| o.size > 100 && o.path.contains("/ks")).unwrap().clone();
    let mut bytes = node.storage.get_bytes(&victim.path).await.unwrap().to_vec();
    bytes[10] ^= 1;
    node.storage.put_bytes(&victim.path, bytes).await.unwrap();
    env.with_sim(|s| s.flush(5, 0.05).unwrap()).await;
    let before = live(&env).await;
    let base = restore_vars(&env);
    let r = run_restore(&env.ini_path, &with(&base, &vars("b1", "k1", &in_place_mapping()))).await;
    assert_eq!(r.code, Some(1), "{}", r.log);
    assert!(r.log.contains(&victim.path) && r.log.contains("corrupt"), "{}", r.log);
    assert!(live(&env).await == before, "data directory changed");
    // A missing object, likewise.
    node.storage.delete(&victim.path).await.unwrap();
    let r = run_restore(&env.ini_path, &with(&base, &vars("b1", "k1", &in_place_mapping()))).await;
    assert_eq!(r.code, Some(1), "{}", r.log);
    assert!(r.log.contains(&victim.path) && r.log.contains("missing"), "{}", r.log);
    assert!(live(&env).await == before);
}

async fn kill_when(mut child: std::process::Child, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the kill point
        }
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(std::time::Instant::now() < deadline, "kill point never reached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn staged_files(root: &Path) -> usize {
    walk_count(&root.join("medusa-restore-k1/data"))
}

/// A staged file that carries its final name (verified), with content.
fn first_staged_file(dir: &Path) -> Option<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    entries.sort();
    entries.into_iter().find_map(|p| {
        let hidden = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_dir() {
            first_staged_file(&p)
        } else {
            (!hidden && p.metadata().is_ok_and(|m| m.len() > 0)).then_some(p)
        }
    })
}

fn walk_count(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten().map(|e| if e.path().is_dir() { walk_count(&e.path()) } else { 1 }).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_download_or_placement_resumes_to_the_same_result() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "transfer_max_bandwidth = 1MB/s\n".into();
    let env = Env::new(o).await.unwrap();
    backup(&env, "b1", Mode::Differential).await;
    let backed_up = live(&env).await;
    let root = env.with_sim_blocking(|s| s.root.clone());
    let base = restore_vars(&env);
    let mapping = in_place_mapping();
    env.with_sim(|s| {
        s.flush(11, 0.2).unwrap();
        s.compact(12).unwrap();
    })
    .await;

    // 1. Killed mid-download: the data directory is untouched, staged files survive.
    let mutated = live(&env).await;
    let child = restore_command(&env.ini_path, &with(&base, &vars("b1", "k1", &mapping))).spawn().unwrap();
    let killed = kill_when(child, || staged_files(&root) > 20).await;
    assert!(killed, "the restore finished before it could be killed");
    assert!(live(&env).await == mutated, "data touched before the download finished");
    let staged = staged_files(&root);
    assert!(staged > 0);
    // A staged file damaged while the restore was down (same size) is found on resume: files
    // are not fsynced one by one, so a resumed run checks what it finds instead of trusting it.
    let damaged = first_staged_file(&root.join("medusa-restore-k1/data")).expect("a verified staged file");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();

    // 2. Killed mid-placement (slowed down so the kill lands between tables).
    let child = restore_command(
        &env.ini_path,
        &with(&base, &[vars("b1", "k1", &mapping).as_slice(), &[("MEDUSA_RS_TEST_PLACE_DELAY_MS", "20")]].concat()),
    )
    .spawn()
    .unwrap();
    let journal = root.join("medusa-restore-k1/journal.json");
    let killed = kill_when(child, || {
        std::fs::read_to_string(&journal).is_ok_and(|j| j.contains("placing")) && staged_files(&root) < staged
    })
    .await;
    assert!(killed, "the restore finished before placement could be interrupted");
    assert!(!root.join(".last-restore").exists(), "marked done while half placed");

    // 3. Run again: exactly the backed-up files.
    let r = run_restore(&env.ini_path, &with(&base, &vars("b1", "k1", &mapping))).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    assert!(r.log.contains("resuming an interrupted placement"), "{}", r.log);
    let got = live(&env).await;
    assert!(got == backed_up, "{}", backed_up.diff(&got));
    assert!(!root.join("medusa-restore-k1").exists());
}

/// `RESTORE_TABLES` / `RESTORE_KEYSPACES`: those tables as of the backup, every other table
/// (system keyspaces included) and the commit log as they were; a name the backup does not
/// hold is refused before anything is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_restore_puts_back_only_what_is_named() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    backup(&env, "full-1", Mode::Full).await;
    let at_backup = live(&env).await;
    env.with_sim(|s| s.flush(5, 0.2).unwrap()).await;
    let root = env.with_sim_blocking(|s| s.root.clone());
    std::fs::write(root.join("commitlog/CommitLog-8-1.log"), b"unflushed writes").unwrap();
    let later = live(&env).await;
    let tables: Vec<(String, String)> =
        env.with_sim_blocking(|s| s.user_tables().iter().map(|t| (t.keyspace.clone(), t.name.clone())).collect());
    let (ks, table) = tables[0].clone();
    let other_ks = tables.iter().map(|t| &t.0).find(|k| **k != ks).expect("two user keyspaces").clone();
    let picked = |path: &str| {
        let mut parts = path.split('/');
        let (k, dir) = (parts.next().unwrap(), parts.next().unwrap_or_default());
        k == other_ks || (k == ks && dir.split_once('-').map(|(n, _)| n) == Some(table.as_str()))
    };
    assert!(later.entries.keys().any(|k| picked(k) && !at_backup.entries.contains_key(k)), "the flush changed them");
    assert!(later.entries.keys().any(|k| !picked(k) && !at_backup.entries.contains_key(k)), "and others");
    let base = restore_vars(&env);
    let mapping = in_place_mapping();
    let named = format!("{ks}.{table}");

    // A table the backup does not hold: refused, nothing touched.
    let wrong = format!("{ks}.no_such_table");
    let r = run_restore(
        &env.ini_path,
        &with(&base, &[&vars("full-1", "k1", &mapping)[..], &[("RESTORE_TABLES", &wrong)]].concat()),
    )
    .await;
    assert_eq!(r.code, Some(1), "{}", r.log);
    assert!(r.log.contains("RESTORE_TABLES names") && r.log.contains("nothing was touched"), "{}", r.log);
    assert!(live(&env).await == later);

    let sel = [("RESTORE_TABLES", named.as_str()), ("RESTORE_KEYSPACES", other_ks.as_str())];
    let r = run_restore(&env.ini_path, &with(&base, &[&vars("full-1", "k2", &mapping)[..], &sel].concat())).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    let got = live(&env).await;
    let part = |d: &harness::sim::DataDigest, want: bool| -> Vec<(String, String)> {
        d.entries.iter().filter(|(k, _)| picked(k) == want).map(|(k, v)| (k.clone(), format!("{v:?}"))).collect()
    };
    assert_eq!(part(&got, true), part(&at_backup, true), "the named tables are as backed up");
    assert_eq!(part(&got, false), part(&later, false), "everything else is as it was");
    assert_eq!(std::fs::read(root.join("commitlog/CommitLog-8-1.log")).unwrap(), b"unflushed writes");
}
