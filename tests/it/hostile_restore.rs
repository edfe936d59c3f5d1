//! Hostile input for the restore init container, through the real `medusa-restore-init`: a
//! tokenmap whose tokens cannot boot the node, a journal left by a restore of another backup,
//! objects larger than their manifest entry, and restore mappings that are not the operator's
//! format. Each must be refused (or, for the journal, discarded) before anything is touched, with
//! a message that says what is wrong; none may end with `.last-restore` written over the wrong
//! data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::services::TempDir;
use harness::sim::{DataDigest, digest_data_dir};
use medusa::format::layout::Mode;
use medusa_tests::{Env, EnvOptions, Kind, binary, live, restore_command};

const FQDN: &str = "demo-dc1-default-sts-0";

struct Run {
    code: Option<i32>,
    log: String,
}

fn output(cmd: &mut std::process::Command) -> Run {
    let out = cmd.env("RUST_LOG", "info").output().expect("medusa-restore-init runs");
    Run {
        code: out.status.code(),
        log: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    }
}

/// Runs `cmd` on the blocking pool (the storage server may run on this test's runtime).
async fn run(mut cmd: std::process::Command) -> Run {
    tokio::time::timeout(Duration::from_secs(180), tokio::task::spawn_blocking(move || output(&mut cmd)))
        .await
        .expect("restore did not finish in 180 s")
        .unwrap()
}

async fn backup(env: &Env, name: &str, mode: Mode) {
    medusa_tests::backup(&env.node().unwrap(), name, mode).await.unwrap();
}

fn root_of(env: &Env) -> PathBuf {
    env.sim.lock().unwrap().root.clone()
}

/// A restore that must have been refused: exit non-zero, the data directory, `cassandra.yaml`
/// and the Cassandra root as they were, no `.last-restore`, no staging left.
struct Untouched {
    data: DataDigest,
    yaml: Vec<u8>,
    root_entries: Vec<String>,
}

fn root_entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(root).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

impl Untouched {
    fn take(root: &Path, yaml: &Path) -> Untouched {
        Untouched {
            data: digest_data_dir(&root.join("data")),
            yaml: std::fs::read(yaml).unwrap(),
            root_entries: root_entries(root),
        }
    }

    fn check(&self, root: &Path, yaml: &Path, what: &str, r: &Run) {
        self.check_data(root, yaml, what, r);
        assert_eq!(root_entries(root), self.root_entries, "{what}: something was created in the Cassandra root");
    }

    /// As [`Untouched::check`], except that a staging directory kept for a rerun may remain.
    fn check_data(&self, root: &Path, yaml: &Path, what: &str, r: &Run) {
        assert_ne!(r.code, Some(0), "{what}: the restore must fail: {}", r.log);
        assert!(!root.join(".last-restore").exists(), "{what}: marked done");
        let data = digest_data_dir(&root.join("data"));
        assert!(data == self.data, "{what}: data directory changed:\n{}", self.data.diff(&data));
        assert_eq!(std::fs::read(yaml).unwrap(), self.yaml, "{what}: cassandra.yaml changed");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Tokens of a restore into another ring are checked before anything is touched.

/// An empty node named `new-0` (data, commitlog, caches, hints, cassandra.yaml with
/// `partitioner`) and a config for `storage_section`.
fn empty_node(dir: &Path, storage_section: &str, partitioner: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = dir.join("cassandra");
    for d in ["data", "commitlog", "saved_caches", "hints", "conf"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::create_dir_all(root.join("data/ks_target/t-1")).unwrap();
    std::fs::write(root.join("data/ks_target/t-1/nb-1-big-Data.db"), b"the target's own data").unwrap();
    let yaml = root.join("conf/cassandra.yaml");
    std::fs::write(
        &yaml,
        format!(
            "cluster_name: demo\nnum_tokens: 16\npartitioner: {partitioner}\ndata_file_directories:\n  - {r}/data\ncommitlog_directory: {r}/commitlog\nsaved_caches_directory: {r}/saved_caches\nhints_directory: {r}/hints\n",
            r = root.display()
        ),
    )
    .unwrap();
    let ini = dir.join("medusa.ini");
    std::fs::write(&ini, format!("[cassandra]\nconfig_file = {}\n\n{storage_section}fqdn = new-0\n", yaml.display()))
        .unwrap();
    (root, yaml, ini)
}

fn remote_command(ini: &Path, root: &Path, backup: &str, key: &str) -> std::process::Command {
    let mapping = format!(r#"{{"in_place":false,"host_map":{{"new-0":{{"source":["{FQDN}"],"seed":false}}}}}}"#);
    let mut c = std::process::Command::new(binary("medusa-restore-init"));
    c.arg("--config").arg(ini).envs([
        ("BACKUP_NAME", backup),
        ("RESTORE_KEY", key),
        ("POD_NAME", "new-0"),
        ("RESTORE_MAPPING", mapping.as_str()),
    ]);
    c.env("MEDUSA_TMP_DIR", root);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_restore_refuses_tokens_that_cannot_boot_the_node() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    backup(&env, "b1", Mode::Full).await;
    let node = env.node().unwrap();
    let tokenmap_key = format!("demo/{FQDN}/b1/meta/tokenmap.json");
    let original = node.storage.get_bytes(&tokenmap_key).await.unwrap().to_vec();
    let storage = std::fs::read_to_string(&env.ini_path).unwrap();
    let storage = storage[storage.find("[storage]").unwrap()..storage.find("[grpc]").unwrap()]
        .replace(&format!("fqdn = {FQDN}\n"), "");
    let entry = |tokens: &str| format!(r#""tokens": {tokens}, "is_up": true, "rack": "default", "dc": "dc1""#);
    let murmur = "org.apache.cassandra.dht.Murmur3Partitioner";
    let random = "org.apache.cassandra.dht.RandomPartitioner";
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "no entry for the source node (host key mismatch)",
            format!(r#"{{"10.0.0.1": {{{}}}}}"#, entry("[1, 2]")),
            murmur,
            &["no tokens", "10.0.0.1"],
        ),
        ("an empty token list", format!(r#"{{"{FQDN}": {{{}}}}}"#, entry("[]")), murmur, &["no tokens"]),
        (
            "a token beyond Murmur3's range",
            format!(r#"{{"{FQDN}": {{{}}}}}"#, entry("[1, 9223372036854775808]")),
            murmur,
            &["9223372036854775808", "Murmur3Partitioner"],
        ),
        (
            "a token that is not an integer",
            format!(r#"{{"{FQDN}": {{{}}}}}"#, entry("[1, 2.5]")),
            murmur,
            &["2.5", "not an integer"],
        ),
        (
            "a negative token for RandomPartitioner",
            format!(r#"{{"{FQDN}": {{{}}}}}"#, entry("[-5, 7]")),
            random,
            &["-5", "RandomPartitioner"],
        ),
        (
            "a token above 2^127 for RandomPartitioner",
            format!(r#"{{"{FQDN}": {{{}}}}}"#, entry("[170141183460469231731687303715884105729]")),
            random,
            &["170141183460469231731687303715884105729", "RandomPartitioner"],
        ),
        ("a token given twice", format!(r#"{{"{FQDN}": {{{}}}}}"#, entry("[3, 3]")), murmur, &["3", "twice"]),
    ];
    for (what, tokenmap, partitioner, words) in cases {
        node.storage.put_bytes(&tokenmap_key, tokenmap.into_bytes()).await.unwrap();
        let dir = TempDir::new("hostile-tokens").unwrap();
        let (root, yaml, ini) = empty_node(dir.path(), &storage, partitioner);
        let before = Untouched::take(&root, &yaml);
        let r = run(remote_command(&ini, &root, "b1", "rk")).await;
        before.check(&root, &yaml, what, &r);
        assert!(r.log.contains(FQDN), "{what}: the message names the source node: {}", r.log);
        for w in words {
            assert!(r.log.contains(w), "{what}: the message says {w:?}: {}", r.log);
        }
    }
    // Tokens RandomPartitioner accepts (beyond 64 bits, up to 2^127) and Murmur3's extremes are
    // written as they are.
    for (tokens, partitioner) in [
        ("[0, 170141183460469231731687303715884105728]", random),
        ("[-9223372036854775808, 9223372036854775807]", murmur),
    ] {
        let tokenmap = format!(r#"{{"{FQDN}": {{{}}}}}"#, entry(tokens));
        node.storage.put_bytes(&tokenmap_key, tokenmap.into_bytes()).await.unwrap();
        let dir = TempDir::new("hostile-tokens").unwrap();
        let (root, yaml, ini) = empty_node(dir.path(), &storage, partitioner);
        let r = run(remote_command(&ini, &root, "b1", "rk")).await;
        assert_eq!(r.code, Some(0), "{tokens}: {}", r.log);
        let list = tokens.trim_matches(['[', ']']).replace(' ', "");
        let written = std::fs::read_to_string(&yaml).unwrap();
        assert!(written.contains(&format!("initial_token: {list}\n")), "{written}");
        assert!(written.contains("num_tokens: 2\n"), "{written}");
    }
    node.storage.put_bytes(&tokenmap_key, original).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 8. A journal left by a restore of another request is discarded, not resumed.

/// The staging directory of restore `key`, wherever it was put below `dir`.
fn find_staging(dir: &Path, key: &str) -> Option<PathBuf> {
    let name = format!("medusa-restore-{key}");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy() == name && p.join("journal.json").exists() {
                return Some(p);
            }
            if p.strip_prefix(dir).map(|r| r.components().count()).unwrap_or(9) < 4 {
                stack.push(p);
            }
        }
    }
    None
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum()
}

/// Starts an in-place restore of `backup` under `key`, slowed down in placement, and SIGKILLs
/// it once it has placed part of the tables; returns its staging directory.
async fn kill_in_placement(env: &Env, backup: &str, key: &str) -> PathBuf {
    let mut cmd = restore_command(env, backup, key);
    cmd.env("MEDUSA_RS_TEST_PLACE_DELAY_MS", "20")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let dir = env.dir.path().to_path_buf();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut full = 0;
    loop {
        assert!(child.try_wait().unwrap().is_none(), "restore of {backup} finished before it could be killed");
        if let Some(s) = find_staging(&dir, key) {
            let placing = std::fs::read_to_string(s.join("journal.json")).is_ok_and(|j| j.contains("placing"));
            let staged = count_files(&s.join("data"));
            if placing && full == 0 {
                full = staged;
            } else if placing && staged < full && staged > 0 {
                child.kill().unwrap();
                child.wait().unwrap();
                return s;
            }
        }
        assert!(std::time::Instant::now() < deadline, "placement of {backup} never reached");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_another_backup_is_discarded_not_resumed() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    backup(&env, "first", Mode::Full).await;
    let at_first = live(&env).await;
    env.with_sim(|s| {
        s.flush(21, 0.3).unwrap();
        s.compact(22).unwrap();
    })
    .await;
    backup(&env, "second", Mode::Full).await;
    let at_second = live(&env).await;
    assert!(at_first != at_second);
    let root = root_of(&env);

    // A restore of `first` killed half-way through placement, then the operator asks for
    // `second` under the same key.
    kill_in_placement(&env, "first", "k1").await;
    let r = run(restore_command(&env, "second", "k1")).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    let got = live(&env).await;
    assert!(got == at_second, "the data is not the backup the restore reports:\n{}", at_second.diff(&got));
    assert!(r.log.contains("discard"), "the discarded staging is logged: {}", r.log);
    assert!(r.log.contains("first"), "the log names the other backup: {}", r.log);
    assert_eq!(std::fs::read_to_string(root.join(".last-restore")).unwrap(), "k1\n");
    assert!(find_staging(env.dir.path(), "k1").is_none(), "staging left behind");

    // A journal of an older medusa-rs (no target, no in_place) names the backup asked for, but
    // holds another one's files: it cannot be trusted, and is discarded too.
    kill_in_placement(&env, "first", "k2").await;
    let staging = find_staging(env.dir.path(), "k2").unwrap();
    std::fs::write(
        staging.join("journal.json"),
        format!(r#"{{"key":"k2","backup":"second","source":"{FQDN}","phase":"placing"}}"#),
    )
    .unwrap();
    let r = run(restore_command(&env, "second", "k2")).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    let got = live(&env).await;
    assert!(got == at_second, "an old journal was trusted:\n{}", at_second.diff(&got));
    assert!(r.log.contains("discard"), "{}", r.log);

    // The same request killed and run again still resumes.
    kill_in_placement(&env, "first", "k3").await;
    let r = run(restore_command(&env, "first", "k3")).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
    assert!(r.log.contains("resuming an interrupted placement"), "{}", r.log);
    let got = live(&env).await;
    assert!(got == at_first, "{}", at_first.diff(&got));
}

// ---------------------------------------------------------------------------------------------
// 11. Downloads stop at the size the manifest records.

/// Appends `extra` bytes to one data object of `backup` in the bucket; returns its key, its
/// recorded size and its place below the data directory.
async fn grow_object(env: &Env, backup: &str, extra: usize) -> (String, u64, String) {
    let node = env.node().unwrap();
    let m = node.storage.get_bytes(&format!("demo/{FQDN}/{backup}/meta/manifest.json")).await.unwrap();
    let m = medusa::format::manifest::parse(&m).unwrap();
    let (section, victim) = m
        .iter()
        .flat_map(|s| s.objects.iter().map(move |o| (s, o)))
        .find(|(s, o)| o.size > 100 && s.keyspace.starts_with("ks"))
        .unwrap();
    let mut bytes = node.storage.get_bytes(&victim.path).await.unwrap().to_vec();
    bytes.resize(bytes.len() + extra, 7);
    node.storage.put_bytes(&victim.path, bytes).await.unwrap();
    let name = victim.path.rsplit('/').next().unwrap();
    (victim.path.clone(), victim.size, format!("{}/{}/{name}", section.keyspace, section.columnfamily))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_larger_than_its_manifest_entry_is_refused_without_filling_staging() {
    const EXTRA: usize = 48 << 20;
    for kind in [Kind::Local, Kind::S3sFs] {
        let env = Env::new(EnvOptions::new(kind)).await.unwrap();
        backup(&env, "b1", Mode::Full).await;
        let (key, recorded, rel) = grow_object(&env, "b1", EXTRA).await;
        let stored = recorded + EXTRA as u64;
        env.with_sim(|s| s.flush(5, 0.05).unwrap()).await;
        let root = root_of(&env);
        let yaml = env.sim.lock().unwrap().cassandra_yaml.clone();
        let before = Untouched::take(&root, &yaml);
        // Watch the staged file while the restore runs: it must never hold much more than the
        // manifest records.
        let log = env.dir.path().join("restore.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = restore_command(&env, "b1", "k1")
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let dir = env.dir.path().to_path_buf();
        let watcher = std::thread::spawn(move || {
            let (mut child, mut peak, mut staging) = (child, 0u64, None);
            loop {
                if staging.is_none() {
                    staging = find_staging(&dir, "k1");
                }
                if let Some(s) = &staging {
                    peak = peak.max(std::fs::metadata(s.join("data").join(&rel)).map(|m| m.len()).unwrap_or(0));
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (child.wait().unwrap(), peak)
        });
        let (status, peak) = tokio::task::spawn_blocking(move || watcher.join().unwrap()).await.unwrap();
        let r = Run { code: status.code(), log: std::fs::read_to_string(&log).unwrap() };
        before.check_data(&root, &yaml, &format!("{kind:?}"), &r);
        assert!(r.log.contains(&key), "{kind:?}: the failure names the object: {}", r.log);
        assert!(
            r.log.contains(&format!("{stored} bytes")) && r.log.contains(&format!("{recorded} bytes")),
            "{kind:?}: the failure gives both sizes ({stored} stored, {recorded} recorded): {}",
            r.log
        );
        assert!(!r.log.contains("records ,"), "{kind:?}: an empty field: {}", r.log);
        assert!(peak <= recorded + (1 << 20), "{kind:?}: {peak} bytes staged for an object of {recorded}");

        // `medusa-rs download` shares the download code: same refusal.
        let dest = env.dir.path().join("dl");
        let out = std::process::Command::new(binary("medusa-rs"))
            .arg("--config")
            .arg(&env.ini_path)
            .args(["download", "--backup-name", "b1", "--destination", dest.to_str().unwrap()])
            .env_remove("POD_NAME")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {stderr}");
        assert!(stderr.contains(&key) && stderr.contains(&format!("{recorded} bytes")), "{kind:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// 13. RESTORE_MAPPING (and the PrepareRestore file) in the operator's format only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_mapping_not_in_the_operators_format_is_refused() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    backup(&env, "b1", Mode::Full).await;
    env.with_sim(|s| s.flush(5, 0.1).unwrap()).await;
    let root = root_of(&env);
    let yaml = env.sim.lock().unwrap().cassandra_yaml.clone();
    let target = |body: &str| format!(r#"{{"{FQDN}":{body}}}"#);
    let cases: Vec<(String, &str)> = vec![
        ("[]".into(), "object"),
        ("null".into(), "object"),
        ("\"in_place\"".into(), "object"),
        (r#"{"inplace":false,"host_map":{}}"#.into(), "inplace"),
        (format!(r#"{{"in_place":false,"hostmap":{}}}"#, target(r#"{"source":["x"]}"#)), "hostmap"),
        (r#"{"in_place":"false"}"#.into(), "in_place"),
        (r#"{"in_place":0}"#.into(), "in_place"),
        (r#"{"in_place":false,"host_map":[]}"#.into(), "host_map"),
        (r#"{"in_place":false}"#.into(), "host_map"),
        (r#"{"in_place":false,"host_map":{}}"#.into(), "host_map"),
        (format!(r#"{{"in_place":false,"host_map":{}}}"#, target(r#"{"source":"x","seed":false}"#)), "source"),
        (format!(r#"{{"in_place":false,"host_map":{}}}"#, target(r#"{"source":[],"seed":false}"#)), "source"),
        (format!(r#"{{"in_place":false,"host_map":{}}}"#, target(r#"{"source":[""],"seed":false}"#)), "source"),
        (format!(r#"{{"in_place":false,"host_map":{}}}"#, target(r#"{"sources":["x"],"seed":false}"#)), "sources"),
        (format!(r#"{{"in_place":false,"host_map":{}}}"#, target(r#"{"source":["x"],"seed":"no"}"#)), "seed"),
        (format!(r#"{{"in_place":false,"host_map":{}}}"#, target("[\"x\"]")), FQDN),
    ];
    for (mapping, word) in &cases {
        let before = Untouched::take(&root, &yaml);
        let r = run({
            let mut c = restore_command(&env, "b1", "k1");
            c.env("RESTORE_MAPPING", mapping);
            c
        })
        .await;
        before.check(&root, &yaml, mapping, &r);
        assert!(r.log.contains("RESTORE_MAPPING"), "{mapping}: the message names the variable: {}", r.log);
        assert!(r.log.contains(word), "{mapping}: the message names {word:?}: {}", r.log);
    }

    // The file PrepareRestore wrote, likewise, named by its path.
    let file = root.join(".restore_mapping").join("k1");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, r#"{"in_place": true, "hostmap": {}}"#).unwrap();
    let before = Untouched::take(&root, &yaml);
    let r = run(restore_command(&env, "b1", "k1")).await;
    before.check(&root, &yaml, "mapping file", &r);
    assert!(r.log.contains(".restore_mapping") && r.log.contains("hostmap"), "{}", r.log);

    // What the operator (Go, `in_place` null when unset, `host_map` omitted when empty) and
    // Python Medusa's PrepareRestore write is accepted.
    let before = live(&env).await;
    for mapping in [
        r#"{"in_place":true}"#.to_string(),
        r#"{"in_place":null}"#.to_string(),
        format!(r#"{{"in_place":false,"host_map":{{"other-pod":{{"source":["{FQDN}"],"seed":true}}}}}}"#),
    ] {
        let r = run({
            let mut c = restore_command(&env, "b1", "k-skip");
            c.env("RESTORE_MAPPING", &mapping).env("BACKUP_NAME", "not-there");
            c
        })
        .await;
        // A backup name that is not there: the mapping was accepted if the failure is about
        // the backup (or the pod was skipped), never about the mapping.
        assert!(!r.log.contains("RESTORE_MAPPING"), "{mapping} refused: {}", r.log);
    }
    assert!(live(&env).await == before);
    std::fs::write(
        &file,
        format!(r#"{{"in_place": true, "host_map": {{"{FQDN}": {{"source": ["{FQDN}"], "seed": false}}}}}}"#),
    )
    .unwrap();
    let r = run(restore_command(&env, "b1", "k1")).await;
    assert_eq!(r.code, Some(0), "{}", r.log);
}
