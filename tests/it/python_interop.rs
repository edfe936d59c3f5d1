//! The real Python Medusa 0.31.0 lists, verifies and restores what medusa-rs writes, and
//! medusa-rs reads what Python Medusa wrote.
//!
//! medusa-rs writes `full-1`, `diff-1` and, after a flush and a compaction, `diff-2`; then the
//! Python CLI runs against the same bucket with a `medusa.ini` of its own (contract §7): `list-backups`,
//! `status`, `verify` (with and without `--enable-md5-checks`), `fetch-tokenmap`,
//! `get-last-complete-cluster-backup`, `report-last-backup`, `download` and
//! `restore-node --in-place` (stop/start commands are `/bin/true`). None of these opens a CQL
//! session. Not exercised, because they need a live Cassandra over CQL: `backup`, `build-index`,
//! `restore-cluster` and `restore-node --verify`. Azure is not covered: Python Medusa builds its
//! own `https://<account>.blob.core.<host>` URL and cannot be pointed at azurite. S3 runs on moto:
//! s3s-fs omits `ETag` and `StorageClass` from ListObjectsV2, which Python Medusa's listing reads
//! unconditionally (a `KeyError` it retries for minutes).
//!
//! The Python CLI comes from `scripts/install-test-deps.sh`; a missing install fails the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::services::{LocalStorage, TempDir, medusa_py_fixture, python_medusa};
use harness::sim::{DataDigest, digest_data_dir, load_digest_json};
use medusa::backup::{BackupReport, Engine};
use medusa::format::layout::{IndexEntry, Mode, parse_index_key};
use medusa::format::manifest::Manifest;
use medusa_tests::{ChangedFile, Env, EnvOptions, Kind, backup, change_one_data_file, list_all, live};
use serde_json::Value;

/// One medusa-rs backup of the small node.
/// One Python Medusa command (they take a few seconds here).
const PY_LIMIT: Duration = Duration::from_secs(180);
const FQDN: &str = "demo-dc1-default-sts-0";

// ---------------------------------------------------------------------------------------------
// Driving the Python CLI
// ---------------------------------------------------------------------------------------------

/// The Python Medusa CLI with a `medusa.ini` written for it.
pub(crate) struct PyMedusa {
    exe: PathBuf,
    ini: PathBuf,
    /// Holds the ini and scratch directories (downloads, restore temp dir).
    work: TempDir,
}

/// What a command did.
struct Run {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "medusa {} exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl PyMedusa {
    /// Python Medusa's view of `env`: the same `[storage]` (without medusa-rs' extension keys),
    /// the simulated node's `cassandra.yaml`, no sudo, no gRPC, no Kubernetes, no CQL lookups.
    pub(crate) fn for_env(env: &Env, yaml: &Path) -> PyMedusa {
        let exe = python_medusa().unwrap_or_else(|| {
            panic!(
                "the Python Medusa 0.31.0 CLI (<tools>/venv/bin/medusa) is missing: run \
                 scripts/install-test-deps.sh (or set MEDUSA_RS_TOOLS to where it installed)"
            )
        });
        let work = TempDir::new("py-medusa").unwrap();
        let storage = env.backend.storage_section(Some("demo"), None);
        let ini = format!(
            "[cassandra]\nconfig_file = {}\nstart_cmd = /bin/true\nstop_cmd = /bin/true\ncheck_running = /bin/true\n\
             is_ccm = 0\nuse_sudo = False\nresolve_ip_addresses = False\nnodetool_executable = /bin/false\n\n\
             {storage}fqdn = {FQDN}\nuse_sudo_for_restore = False\nconcurrent_transfers = 4\n\n\
             [grpc]\nenabled = False\n\n[kubernetes]\nenabled = False\n\n[logging]\nenabled = false\n",
            yaml.display()
        );
        let path = work.path().join("medusa-py.ini");
        std::fs::write(&path, ini).unwrap();
        PyMedusa { exe, ini: path, work }
    }

    /// Runs `medusa --config-file <ini> <args>`; killed after [`PY_LIMIT`], which fails the test
    /// with what it printed so far.
    async fn run(&self, args: &[&str]) -> Run {
        use tokio::io::AsyncReadExt;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--config-file").arg(&self.ini).args(args).current_dir(self.work.path());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // Variables Python Medusa would prefer to the ini (contract §7.4) or boto3 to the key file.
        for var in ["POD_IP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running {}: {e}", self.exe.display()));
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let out = tokio::spawn(async move {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b).await;
            b
        });
        let err = tokio::spawn(async move {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b).await;
            b
        });
        let status = tokio::time::timeout(PY_LIMIT, child.wait()).await;
        if status.is_err() {
            let _ = child.kill().await;
        }
        // Output ends with the process (a grandchild holding the pipes must not hang the test).
        let grab = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
            let bytes =
                tokio::time::timeout(Duration::from_secs(10), h).await.ok().and_then(Result::ok).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let run = Run { args: args.join(" "), code: None, stdout: grab(out).await, stderr: grab(err).await };
        match status {
            Ok(s) => Run { code: s.unwrap().code(), ..run },
            Err(_) => panic!("did not finish within {PY_LIMIT:?}: {run}"),
        }
    }

    /// Runs a command that must succeed.
    async fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args).await;
        assert!(run.ok(), "Python Medusa rejected it: {run}");
        run
    }

    /// `list-backups --show-all --output json`.
    async fn list_json(&self) -> Vec<Value> {
        let run = self.ok(&["list-backups", "--show-all", "--output", "json"]).await;
        match serde_json::from_str(run.stdout.trim()) {
            Ok(Value::Array(v)) => v,
            other => panic!("list-backups did not print a JSON array ({other:?}): {run}"),
        }
    }

    /// `verify`, which must end with both OK lines.
    pub(crate) async fn verify(&self, backup: &str, md5: bool) {
        let mut args = vec!["verify", "--backup-name", backup];
        if md5 {
            args.push("--enable-md5-checks");
        }
        let run = self.ok(&args).await;
        assert!(run.stdout.contains(&format!("Validating {backup} ...")), "{run}");
        assert!(run.stdout.contains("- Completion: OK!"), "{run}");
        assert!(run.stdout.contains("- Manifest validated: OK!!"), "{run}");
    }

    /// `download` into a fresh directory; returns the data files (digest) and the three
    /// metadata files Python puts at the top (`manifest.json`, `schema.cql`, `tokenmap.json`).
    pub(crate) async fn download(&self, backup: &str) -> (DataDigest, BTreeMap<String, Vec<u8>>) {
        let dest = self.work.path().join(format!("download-{backup}"));
        std::fs::create_dir(&dest).unwrap();
        let d = dest.to_str().unwrap();
        self.ok(&["download", "--backup-name", backup, "--download-destination", d]).await;
        let digest = digest_data_dir(&dest);
        let mut meta = BTreeMap::new();
        for name in ["manifest.json", "schema.cql", "tokenmap.json"] {
            let bytes = std::fs::read(dest.join(name)).unwrap_or_else(|e| panic!("download of {backup}: {name}: {e}"));
            meta.insert(name.to_string(), bytes);
        }
        // The data files are the ones below `<keyspace>/<table>/`.
        let entries = digest.entries.into_iter().filter(|(k, _)| k.contains('/')).collect();
        (DataDigest::from_entries(entries), meta)
    }

    /// `restore-node --in-place` into the node of `env` (Cassandra "stops" and "starts" with
    /// `/bin/true`).
    async fn restore_in_place(&self, backup: &str) {
        let tmp = self.work.path().join(format!("restore-tmp-{backup}"));
        std::fs::create_dir(&tmp).unwrap();
        let run = self
            .ok(&["restore-node", "--backup-name", backup, "--in-place", "--temp-dir", tmp.to_str().unwrap()])
            .await;
        assert!(run.stderr.contains("Moving backup data to Cassandra data directory"), "{run}");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "restore left its download behind: {left:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// medusa-rs side
// ---------------------------------------------------------------------------------------------

async fn manifest(node: &Engine, b: &str) -> Manifest {
    medusa::format::manifest::parse(
        &node.storage.get_bytes(&format!("demo/{FQDN}/{b}/meta/manifest.json")).await.unwrap(),
    )
    .unwrap()
}

fn same_files(what: &str, got: &DataDigest, want: &DataDigest) {
    assert!(
        got == want,
        "{what}: files differ from the node's ({} vs {} files):\n{}",
        got.files,
        want.files,
        got.diff(want)
    );
}

/// Waits until the clock has passed the epoch second `t`. Medusa's times are whole seconds and
/// its "latest backup" picks the first of equal times, so each backup starts in a later second.
async fn after_second(t: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 <= t {
        assert!(tokio::time::Instant::now() < deadline, "the clock is far behind the store's time {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bucket written by medusa-rs: `full-1`, `diff-1`, then flush + compaction, `diff-2`.
struct Written {
    env: Env,
    node: Engine,
    reports: BTreeMap<&'static str, BackupReport>,
    /// The node's files when each backup was taken.
    live: BTreeMap<&'static str, DataDigest>,
}

const NAMES: [&str; 3] = ["full-1", "diff-1", "diff-2"];

async fn write_three(o: EnvOptions) -> Written {
    let env = Env::new(o).await.unwrap();
    let node = env.node().unwrap();
    let mut reports = BTreeMap::new();
    let mut states = BTreeMap::new();
    states.insert("full-1", live(&env).await);
    reports.insert("full-1", backup(&node, "full-1", Mode::Full).await.unwrap());
    after_second(reports["full-1"].finished).await;
    states.insert("diff-1", live(&env).await);
    reports.insert("diff-1", backup(&node, "diff-1", Mode::Differential).await.unwrap());
    after_second(reports["diff-1"].finished).await;
    env.with_sim(|s| {
        s.flush(7, 0.1).unwrap();
        s.compact(8).unwrap();
    })
    .await;
    states.insert("diff-2", live(&env).await);
    reports.insert("diff-2", backup(&node, "diff-2", Mode::Differential).await.unwrap());
    assert!(states["diff-2"] != states["diff-1"], "the flush and compaction changed nothing");
    for b in NAMES {
        assert_eq!((reports[b].files, reports[b].bytes), (states[b].files, states[b].bytes), "{b}: report vs node");
    }
    assert!(
        reports["full-1"].finished < reports["diff-1"].started
            && reports["diff-1"].finished < reports["diff-2"].started
    );
    Written { env, node, reports, live: states }
}

// ---------------------------------------------------------------------------------------------
// Rust -> Python
// ---------------------------------------------------------------------------------------------

/// One element of `list-backups --output json` / `status -o json` (contract §4.2) for a backup
/// medusa-rs finished on the single node.
fn check_listed(b: &str, mode: Mode, r: &BackupReport, v: &Value) {
    let ctx = format!("{b}: {v}");
    assert_eq!(v["name"], b, "{ctx}");
    assert_eq!(v["backup_type"], mode.as_str(), "{ctx}");
    assert_eq!(v["completed_nodes"], 1, "{ctx}");
    assert_eq!((v["incomplete_nodes"].as_u64(), v["missing_nodes"].as_u64()), (Some(0), Some(0)), "{ctx}");
    assert_eq!(v["num_objects"].as_u64(), Some(r.files), "num_objects vs BackupReport.files: {ctx}");
    assert_eq!(v["size"].as_u64(), Some(r.bytes), "size vs BackupReport.bytes: {ctx}");
    assert_eq!(v["started"].as_i64(), Some(r.started), "started vs BackupReport.started: {ctx}");
    assert_eq!(v["finished"].as_i64(), Some(r.finished), "finished vs BackupReport.finished: {ctx}");
    let nodes = v["nodes"].as_array().unwrap_or_else(|| panic!("no nodes: {ctx}"));
    assert_eq!(nodes.len(), 1, "{ctx}");
    let n = &nodes[0];
    assert_eq!(n["fqdn"], FQDN, "{ctx}");
    assert_eq!((n["server_type"].as_str(), n["release_version"].as_str()), (Some("cassandra"), Some("4.1.5")), "{ctx}");
    assert_eq!((n["num_objects"].as_u64(), n["size"].as_u64()), (Some(r.files), Some(r.bytes)), "{ctx}");
    assert_eq!((n["started"].as_i64(), n["finished"].as_i64()), (Some(r.started), Some(r.finished)), "{ctx}");
}

/// `list-backups --output json` keyed by backup name, in Python's order, which must be by start
/// time (backups starting in the same second may come in any order).
fn by_name(listed: Vec<Value>) -> BTreeMap<&'static str, Value> {
    let mut last = i64::MIN;
    let mut out = BTreeMap::new();
    for v in listed {
        let started = v["started"].as_i64().unwrap_or_else(|| panic!("no start time: {v}"));
        assert!(started >= last, "list-backups is not in start order: {v}");
        last = started;
        let name = NAMES.into_iter().find(|n| v["name"] == *n).unwrap_or_else(|| panic!("unexpected backup {v}"));
        assert!(out.insert(name, v).is_none(), "{name} listed twice");
    }
    out
}

/// Every read-only command, then `download` of each backup, then `restore-node` of `full-1` into
/// an emptied data directory and of `diff-2` over it.
async fn python_reads_what_we_write(o: EnvOptions) -> Written {
    let w = write_three(o).await;
    let yaml = w.env.with_sim(|s| s.cassandra_yaml.clone()).await;
    let py = PyMedusa::for_env(&w.env, &yaml);
    let bucket_before = list_all(&w.node).await.unwrap();

    // list-backups, JSON and text.
    let listed = by_name(py.list_json().await);
    assert_eq!(
        listed.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(NAMES),
        "Python lists exactly our backups"
    );
    for b in NAMES {
        let mode = if b == "full-1" { Mode::Full } else { Mode::Differential };
        check_listed(b, mode, &w.reports[b], &listed[b]);
    }
    let text = py.ok(&["list-backups", "--show-all"]).await;
    for b in NAMES {
        assert!(
            text.stdout.lines().any(|l| l.starts_with(&format!("{b} (started: ")) && !l.contains("Incomplete")),
            "{text}"
        );
    }
    assert!(!text.stdout.contains("Incomplete"), "{text}");

    // status, JSON (the same object as in the list) and text.
    for (b, v) in &listed {
        let run = py.ok(&["status", "--backup-name", b, "-o", "json"]).await;
        let status: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run}"));
        assert_eq!(&status, v, "status -o json of {b} vs its list-backups entry");
    }
    let run = py.ok(&["status", "--backup-name", "diff-2"]).await;
    assert!(run.stdout.starts_with("diff-2\n"), "{run}");
    assert!(run.stdout.contains("- 1 nodes completed, 0 nodes incomplete, 0 nodes missing"), "{run}");
    assert!(run.stdout.contains(&format!("- {} files, ", w.reports["diff-2"].files)), "{run}");
    let unknown = py.run(&["status", "--backup-name", "nope", "-o", "json"]).await;
    assert!(unknown.code == Some(1) && unknown.stdout.trim() == "{}", "an unknown backup: {unknown}");

    // verify: completeness, every manifest object with its size, and (S3) the recorded MD5
    // against the stored object's ETag.
    let s3 = w.env.backend.port().is_some();
    for b in NAMES {
        py.verify(b, false).await;
        if s3 {
            // `local` has no hashes to compare, so the flag only matters on S3.
            py.verify(b, true).await;
        }
    }

    // Token map, latest backup pointers.
    let tokens = w.env.with_sim(|s| s.tokens.clone()).await;
    let run = py.ok(&["fetch-tokenmap", "--backup-name", "diff-2"]).await;
    let lines: Vec<_> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run}");
    assert_eq!(lines[0], FQDN, "{run}");
    let got: Vec<i64> = lines[1].trim_matches(['[', ']']).split(", ").map(|t| t.parse().unwrap()).collect();
    assert_eq!(got, tokens, "{run}");
    let run = py.ok(&["get-last-complete-cluster-backup"]).await;
    assert_eq!(run.stdout.trim(), "diff-2", "{run}");
    let run = py.ok(&["report-last-backup"]).await;
    assert!(run.stderr.contains("Latest node backup finished"), "the latest_backup pointer was not followed: {run}");
    assert!(run.stderr.contains("Latest complete backup:"), "{run}");
    assert!(run.stderr.contains("- Name: diff-2"), "{run}");
    assert!(run.stderr.contains(&format!("- Total files: {}", w.reports["diff-2"].files)), "{run}");
    assert!(!run.stderr.contains("ERROR"), "{run}");

    // download: each backup yields exactly the node's files of its time, and the metadata.
    for b in NAMES {
        let (files, meta) = py.download(b).await;
        same_files(&format!("Python download of {b}"), &files, &w.live[b]);
        for (name, key) in
            [("manifest.json", "manifest.json"), ("schema.cql", "schema.cql"), ("tokenmap.json", "tokenmap.json")]
        {
            let stored = w.node.storage.get_bytes(&format!("demo/{FQDN}/{b}/meta/{key}")).await.unwrap();
            assert_eq!(meta[name], &stored[..], "{b}: downloaded {name}");
        }
    }

    // Nothing Python read made it "repair" the bucket (it deletes index entries of node backups
    // it believes missing, contract §4.1).
    assert_eq!(list_all(&w.node).await.unwrap(), bucket_before, "Python Medusa changed the bucket");

    // restore-node: full-1 into an emptied data directory, then diff-2 in place over it.
    let data_dir = w.env.with_sim(|s| s.data_dir.clone()).await;
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }.unwrap();
    }
    assert_eq!(live(&w.env).await.files, 0);
    py.restore_in_place("full-1").await;
    same_files("data directory after Python restore-node of full-1", &live(&w.env).await, &w.live["full-1"]);
    py.restore_in_place("diff-2").await;
    same_files("data directory after Python restore-node of diff-2", &live(&w.env).await, &w.live["diff-2"]);
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lists_verifies_and_restores_local() {
    python_reads_what_we_write(EnvOptions::new(Kind::Local)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lists_verifies_and_restores_moto() {
    let w = python_reads_what_we_write(EnvOptions::new(Kind::Moto)).await;
    let hashes: Vec<String> =
        manifest(&w.node, "diff-2").await.into_iter().flat_map(|s| s.objects).filter_map(|o| o.md5).collect();
    assert!(hashes.iter().all(|h| h.len() == 32 && !h.contains('-')), "single-part uploads record hex MD5s");
}

/// moto with a small multipart threshold: files of 64 KiB and more go up in parts, so their
/// manifest `MD5` is a multipart ETag (`<hex>-<parts>`), which Python's MD5 check compares
/// verbatim with the ETag moto lists; Python downloads them intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_verifies_and_downloads_moto_multipart() {
    let mut o = EnvOptions::new(Kind::Moto);
    o.storage_extra = "multi_part_upload_threshold = 64KB\n".into();
    let w = write_three(o).await;
    let mut multipart = 0;
    for b in NAMES {
        for o in manifest(&w.node, b).await.iter().flat_map(|s| &s.objects) {
            multipart += usize::from(o.md5.as_deref().is_some_and(|h| h.contains('-')));
        }
    }
    assert!(multipart > 0, "no manifest object has a multipart ETag: the test did not exercise multipart");
    let yaml = w.env.with_sim(|s| s.cassandra_yaml.clone()).await;
    let py = PyMedusa::for_env(&w.env, &yaml);
    let listed = by_name(py.list_json().await);
    for b in NAMES {
        let mode = if b == "full-1" { Mode::Full } else { Mode::Differential };
        check_listed(b, mode, &w.reports[b], &listed[b]);
        py.verify(b, true).await;
    }
    for b in ["full-1", "diff-2"] {
        let (files, _) = py.download(b).await;
        same_files(&format!("Python download of {b}"), &files, &w.live[b]);
    }
}

/// A file changed under the same name and size goes to a versioned key (`<table>-v<md5>/`);
/// Python verifies both backups and restores each with its own content.
async fn python_restores_changed_content(kind: Kind) {
    let env = Env::new(EnvOptions::new(kind)).await.unwrap();
    let node = env.node().unwrap();
    backup(&node, "diff-1", Mode::Differential).await.unwrap();
    let before = live(&env).await;
    let ChangedFile { rel, path: victim, new: changed, .. } = change_one_data_file(&env).await;
    let after = live(&env).await;
    let r = backup(&node, "diff-2", Mode::Differential).await.unwrap();
    assert_eq!(r.uploaded_files, 1, "only the changed file travels");
    let (ks, rest) = rel.split_once('/').unwrap();
    let table = rest.split('/').next().unwrap();
    let file = rel.rsplit('/').next().unwrap();
    let versioned: Vec<_> = manifest(&node, "diff-2")
        .await
        .into_iter()
        .flat_map(|s| s.objects)
        .filter(|o| o.path.contains(&format!("/data/{ks}/{table}-v")) && o.path.ends_with(&format!("/{file}")))
        .collect();
    assert_eq!(versioned.len(), 1, "diff-2 must reference the changed file under a versioned key");
    assert_eq!(&node.storage.get_bytes(&versioned[0].path).await.unwrap()[..], &changed[..]);

    let yaml = env.with_sim(|s| s.cassandra_yaml.clone()).await;
    let py = PyMedusa::for_env(&env, &yaml);
    let listed = by_name(py.list_json().await);
    assert_eq!(listed.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from(["diff-1", "diff-2"]), "{listed:?}");
    check_listed("diff-2", Mode::Differential, &r, &listed["diff-2"]);
    for b in ["diff-1", "diff-2"] {
        py.verify(b, false).await;
        py.verify(b, true).await;
    }
    let (files, _) = py.download("diff-2").await;
    assert_eq!(files.entries[&rel].sha256, after.entries[&rel].sha256, "diff-2 restores the NEW content of {rel}");
    same_files("Python download of diff-2", &files, &after);
    let (files, _) = py.download("diff-1").await;
    assert_eq!(files.entries[&rel].sha256, before.entries[&rel].sha256, "diff-1 keeps the OLD content of {rel}");
    same_files("Python download of diff-1", &files, &before);
    py.restore_in_place("diff-2").await;
    same_files("data directory after Python restore-node of diff-2", &live(&env).await, &after);
    assert_eq!(std::fs::read(&victim).unwrap(), changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_restores_changed_content_local() {
    python_restores_changed_content(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_restores_changed_content_moto() {
    python_restores_changed_content(Kind::Moto).await;
}

/// The Python checks above can fail: damage in the bucket makes `verify` fail and name the
/// object (a same-size change only with `--enable-md5-checks`, which therefore really compares
/// our manifest MD5 with the stored object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_verify_catches_damage() {
    let env = Env::new(EnvOptions::new(Kind::Moto)).await.unwrap();
    let node = env.node().unwrap();
    backup(&node, "full-1", Mode::Full).await.unwrap();
    let yaml = env.with_sim(|s| s.cassandra_yaml.clone()).await;
    let py = PyMedusa::for_env(&env, &yaml);
    py.verify("full-1", true).await;

    let objects: Vec<_> = manifest(&node, "full-1")
        .await
        .into_iter()
        .flat_map(|s| s.objects)
        .filter(|o| o.path.ends_with("-Data.db") && o.size > 1)
        .collect();
    assert!(objects.len() >= 3, "the node has too few Data.db files");
    let expect_failure = |run: Run, needle: String| {
        assert_eq!(run.code, Some(1), "verify must fail: {run}");
        assert!(run.stdout.contains("- Manifest validation: Failed!"), "{run}");
        assert!(run.stdout.contains(&needle), "expected {needle:?}: {run}");
    };

    // Same size, different bytes: invisible to the size check, caught by the MD5 check.
    let same_size = &objects[0];
    let mut bytes = node.storage.get_bytes(&same_size.path).await.unwrap().to_vec();
    bytes[0] ^= 0xff;
    node.storage.put_bytes(&same_size.path, bytes).await.unwrap();
    py.verify("full-1", false).await;
    let run = py.run(&["verify", "--backup-name", "full-1", "--enable-md5-checks"]).await;
    expect_failure(run, format!("  - [{}] Blob different", same_size.path));

    // Truncated: a size mismatch.
    let truncated = &objects[1];
    let bytes = node.storage.get_bytes(&truncated.path).await.unwrap();
    node.storage.put_bytes(&truncated.path, bytes.slice(..bytes.len() - 1)).await.unwrap();
    let run = py.run(&["verify", "--backup-name", "full-1"]).await;
    expect_failure(run, format!("  - [{}] Blob different", truncated.path));

    // Missing.
    let missing = &objects[2];
    node.storage.delete(&missing.path).await.unwrap();
    let run = py.run(&["verify", "--backup-name", "full-1"]).await;
    expect_failure(run, format!("  - [{}] Doesn't exists", missing.path));

    // An unknown backup.
    let run = py.run(&["verify", "--backup-name", "nope"]).await;
    assert_eq!(run.code, Some(1), "{run}");
}

// ---------------------------------------------------------------------------------------------
// Python -> Rust
// ---------------------------------------------------------------------------------------------

/// medusa-rs reads the bucket Python Medusa 0.31.0 wrote: every index key parses, every
/// manifest object exists with its recorded size, and the manifests describe exactly the node
/// files of the fixture's digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medusa_rs_reads_the_python_fixture() {
    let fixture = medusa_py_fixture();
    let bucket = LocalStorage::copy_of(&fixture.join("bucket"), "bucket").unwrap();
    let text = format!("{}fqdn = {FQDN}\n", bucket.medusa_ini_storage(Some("demo")));
    let cfg = medusa::config::Config::parse(&text, "fixture").unwrap();
    let storage = medusa::store::Storage::from_config(&cfg.storage).unwrap();

    // The index: every key is one of the known shapes, for our three backups of our node.
    let index: Vec<String> = {
        use futures::TryStreamExt;
        let metas: Vec<_> = storage.list("demo/index/backup_index/").try_collect().await.unwrap();
        metas.into_iter().map(|m| m.location.to_string()).collect()
    };
    let mut entries: BTreeMap<String, Vec<IndexEntry>> = BTreeMap::new();
    for key in &index {
        let (b, n, e) = parse_index_key(&storage.layout, key).unwrap_or_else(|| panic!("unparsed index key {key}"));
        assert_eq!(n, FQDN, "{key}");
        entries.entry(b).or_default().push(e);
    }
    assert_eq!(entries.keys().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(NAMES));
    for (b, es) in &entries {
        let has = |f: fn(&IndexEntry) -> bool| es.iter().filter(|e| f(e)).count();
        assert_eq!(has(|e| *e == IndexEntry::Tokenmap), 1, "{b}");
        assert_eq!(has(|e| *e == IndexEntry::Schema), 1, "{b}");
        assert_eq!(has(|e| *e == IndexEntry::Manifest), 1, "{b}");
        assert_eq!(has(|e| matches!(e, IndexEntry::Started(t) if *t > 0)), 1, "{b}");
        assert_eq!(has(|e| matches!(e, IndexEntry::Finished(t) if *t > 0)), 1, "{b}");
        assert_eq!(has(|e| *e == IndexEntry::Differential), usize::from(b != "full-1"), "{b}");
    }

    // Manifests: objects exist with their sizes and are exactly the digest's files.
    let mut nulls = 0;
    for b in NAMES {
        let key = format!("demo/{FQDN}/{b}/meta/manifest.json");
        let bytes = storage.get_bytes(&key).await.unwrap();
        let index_copy = storage.get_bytes(&format!("demo/index/backup_index/{b}/manifest_{FQDN}.json")).await.unwrap();
        assert_eq!(bytes, index_copy, "{b}: index copy of the manifest");
        let m = medusa::format::manifest::parse(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        let want = load_digest_json(&fixture.join(format!("digests/{b}.json")));
        let mut seen = BTreeMap::new();
        for sec in &m {
            for o in &sec.objects {
                let head = storage.head(&o.path).await.unwrap().unwrap_or_else(|| panic!("{b}: {} is missing", o.path));
                assert_eq!(head.size, o.size, "{b}: {}", o.path);
                nulls += usize::from(o.md5.is_none());
                let place = medusa::format::manifest::placement(&sec.keyspace, &o.path)
                    .unwrap_or_else(|| panic!("{b}: {}", o.path));
                let rel = format!("{}/{}/{}", sec.keyspace, sec.columnfamily, place.rel());
                assert!(seen.insert(rel.clone(), o.size).is_none(), "{b}: {rel} twice");
            }
        }
        let expected: BTreeMap<_, _> = want.entries.iter().map(|(k, v)| (k.clone(), v.size)).collect();
        assert!(seen == expected, "{b}: manifest vs digests/{b}.json: {} vs {} files", seen.len(), expected.len());
        assert_eq!(medusa::format::manifest::totals(&m), (want.files, want.bytes), "{b}");
        let prefix = if b == "full-1" { format!("demo/{FQDN}/full-1/data/") } else { format!("demo/{FQDN}/data/") };
        assert!(m.iter().flat_map(|s| &s.objects).all(|o| o.path.starts_with(&prefix)), "{b}: data outside {prefix}");
    }
    assert!(nulls > 0, "the fixture's re-used files carry \"MD5\": null; parsing must keep them");
}
