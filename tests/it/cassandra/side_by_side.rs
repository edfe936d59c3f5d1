//! Python Medusa 0.31's own gRPC server and medusa-rs' sidecar, side by side on the same REAL
//! Cassandra node: `scripts/cassandra/side_by_side.py` (Medusa's generated stubs) sends one
//! scripted sequence of every RPC of the `Medusa` service (and the health check) to each server
//! in turn, each with a `local` bucket of its own, and records per call the gRPC code, a class
//! of the status message and the response's fields, normalised (times and sizes as booleans).
//! The two records are compared call by call against [`KNOWN`], the differences we know of,
//! each with its reason; any other difference, or a known one that is gone or changed, fails.
//!
//! Both servers reach the node the way the operator configures them: the Management API (here
//! [`harness::cassandra::RealMgmtApi`] over the real nodetool) for snapshots, CQL for schema and
//! token map. Python runs with `resolve_ip_addresses = False` and `fqdn = 127.0.0.1` (there is no
//! PTR record here), so its token map and node folder are keyed by the node's address; the
//! sidecar names the node by its pod name as in a pod (`POD_NAME`, the hosts file).
//!
//! Python's PrepareRestore writes to `/var/lib/cassandra/.restore_mapping/<key>` (hard-coded);
//! the script reads and removes each file, the test removes the directories it made. About 90 s
//! (node start, Python's sequence about 16 s, medusa-rs' about 55 s: the test's Management API
//! runs a nodetool JVM per call).
//!
//! `MEDUSA_RS_TOOLS=<tools> cargo test --release -p medusa-tests --test it side_by_side`

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::cassandra::{CASSANDRA_5, NodeConfig, RealNode, WorkDir, exclusive, require_installed};
use harness::services::{free_port, tools_python, workspace_root};
use medusa_tests::{Backend, Kind};
use serde_json::Value;

use super::pod::{Access, RealPod, hosts_file};
use super::{Figures, LOCK_LIMIT};

const POD: &str = "rs-dc1-r1-sts-0";
const PREFIX: &str = "sbs";
/// Longest the script may run against one server (its own waits are bounded by 240 s each).
const SCRIPT_LIMIT: Duration = Duration::from_secs(420);
/// Longest Python's server may take to listen.
const LISTEN_LIMIT: Duration = Duration::from_secs(60);
/// Where Python Medusa's PrepareRestore writes its mapping files (hard-coded in server.py).
const PY_MAPPING_DIR: &str = "/var/lib/cassandra/.restore_mapping";

/// The differences we know of: (call, Python Medusa 0.31's answer, medusa-rs' answer, why; the
/// sections are docs/contract.md's). An answer reads `CODE "message class" {field=value, ...}`
/// (see [`Answer::summary`]). README.md's "Side by side with Python Medusa's gRPC server" shows
/// the same table.
const KNOWN: &[(&str, &str, &str, &str)] = &[
    (
        "GetBackup unknown",
        r#"INTERNAL "not found""#,
        r#"NOT_FOUND "not found""#,
        "Medusa turns every GetBackup error into INTERNAL (its KeyError is caught by `except \
         Exception`); medusa-rs says what happened (contract §1.5). Kept: no client branches on it.",
    ),
    (
        "DeleteBackup unknown (fresh server)",
        "OK {name=sbs-nope, status=FAILED}",
        r#"NOT_FOUND "not found""#,
        "Medusa's DeleteBackup works only on names its in-memory job table knows; before any \
         backup call it answers OK/FAILED and deletes nothing (§10.2). medusa-rs looks in storage.",
    ),
    (
        "AsyncBackup empty name",
        r#"INTERNAL "empty name""#,
        r#"INVALID_ARGUMENT "empty name""#,
        "The same refusal; medusa-rs uses the code of a bad argument (§1.5). The operator ignores \
         AsyncBackup's answer.",
    ),
    ("Backup (sync) empty name", r#"INTERNAL "empty name""#, r#"INVALID_ARGUMENT "empty name""#, "As for AsyncBackup."),
    (
        "BackupStatus empty name",
        r#"NOT_FOUND "not found""#,
        r#"INVALID_ARGUMENT "empty name""#,
        "medusa-rs checks the name before looking it up; either way no status.",
    ),
    (
        "BackupStatus sbs-1 polled",
        "OK {finishTime set=true, seen=NOT_FOUND (not found) -> IN_PROGRESS -> SUCCESS, startTime set=true, \
         status=SUCCESS}",
        "OK {finishTime set=true, seen=IN_PROGRESS -> SUCCESS, startTime set=true, status=SUCCESS}",
        "Medusa answers NOT_FOUND for an accepted backup until its schema.cql is uploaded, and the \
         operator counts NOT_FOUND as a failed pod (§10.3). Fixed: IN_PROGRESS from the job table.",
    ),
    (
        "GetBackup sbs-1: the node's name in the token map",
        "OK {host=127.0.0.1}",
        "OK {host=rs-dc1-r1-sts-0}",
        "Set-up, not behaviour: without a PTR record here Python runs with resolve_ip_addresses = \
         False and keys its token map by address; in a pod it resolves the pod name, which medusa-rs \
         takes from POD_NAME and the hosts file. Everywhere else this name reads <node>.",
    ),
    (
        "DeleteBackup unknown (after a backup)",
        r#"UNKNOWN "name unknown to this process""#,
        r#"NOT_FOUND "not found""#,
        "Medusa's job table raises RuntimeError for a name this process never registered, uncaught \
         (§10.2).",
    ),
    (
        "BackupStatus sbs-2 polled",
        "OK {finishTime set=true, seen=NOT_FOUND (not found) -> IN_PROGRESS -> SUCCESS, startTime set=true, \
         status=SUCCESS}",
        "OK {finishTime set=true, seen=IN_PROGRESS -> SUCCESS, startTime set=true, status=SUCCESS}",
        "As for sbs-1 (§10.3).",
    ),
    (
        "BackupStatus sbs-3 polled",
        "OK {seen before the last answer=NOT_FOUND (not found) -> IN_PROGRESS, startTime set=true}",
        "OK {seen before the last answer=IN_PROGRESS, startTime set=true}",
        "Medusa runs both calls (two threads, one snapshot name: one fails on `nodetool snapshot`, \
         the other completes), its status says SUCCESS or FAILED depending on the thread it tracks; \
         medusa-rs runs one job (a re-sent name is the same job). And NOT_FOUND first (§10.3, §10.4).",
    ),
    (
        "PrepareRestore unknown backup",
        r#"INTERNAL "not found" {mapping=none written}"#,
        r#"NOT_FOUND "not found" {mapping=none written}"#,
        "Medusa: INTERNAL for every PrepareRestore error. Kept as for GetBackup.",
    ),
    (
        "DeleteBackup sbs-2",
        "OK {name=sbs-2, status=UNKNOWN}",
        "OK {name=sbs-2, status=SUCCESS}",
        "Medusa answers UNKNOWN (sic) after a deletion; medusa-rs SUCCESS (§1.6). Nothing reads it.",
    ),
    (
        "Backup (sync) sbs-1 (stored)",
        r#"INTERNAL "already exists""#,
        r#"ALREADY_EXISTS "already exists""#,
        "The same refusal with gRPC's own code (§1.6).",
    ),
    (
        "BackupStatus sbs-1 (end)",
        "OK {finishTime set=true, startTime set=true, status=SUCCESS}",
        "OK {finishTime set=true, startTime set=true, status=FAILED}",
        "After the refused re-sends of the stored name, medusa-rs' journalled job table keeps the \
         failed job, so BackupStatus says FAILED (`already exists`) while GetBackup says SUCCESS: on \
         purpose, a re-created MedusaBackupJob of that name must fail (§1.6). Python said FAILED \
         after the async re-send too, SUCCESS again only because the sync Backup's entry (no \
         future) replaced it.",
    ),
    (
        "Health.Check \"Medusa\"",
        "NOT_FOUND",
        "OK {status=SERVING}",
        "Medusa registers the health servicer without statuses; medusa-rs also answers for the \
         service's name (§1.5). The operator's probe asks for \"\".",
    ),
];

/// One recorded call.
struct Answer {
    call: String,
    code: String,
    class: String,
    message: String,
    fields: serde_json::Map<String, Value>,
}

impl Answer {
    fn of(v: &Value) -> Answer {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Answer {
            call: s("call"),
            code: s("code"),
            class: s("message_class"),
            message: s("message"),
            fields: v.get("fields").and_then(Value::as_object).cloned().unwrap_or_default(),
        }
    }

    /// What is compared: code, message class, the fields not starting with `_`.
    fn summary(&self) -> String {
        let mut s = self.code.clone();
        if !self.class.is_empty() {
            s.push_str(&format!(" \"{}\"", self.class));
        }
        let compared: Vec<String> = self
            .fields
            .iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| format!("{k}={}", render(v)))
            .collect();
        if !compared.is_empty() {
            s.push_str(&format!(" {{{}}}", compared.join(", ")));
        }
        s
    }

    /// What is shown only: the raw message and the `_` fields.
    fn extra(&self) -> String {
        let mut parts: Vec<String> =
            self.fields.iter().filter(|(k, _)| k.starts_with('_')).map(|(k, v)| format!("{k}={}", render(v))).collect();
        if !self.message.is_empty() {
            parts.insert(0, format!("message {:?}", self.message));
        }
        parts.join("; ")
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join("; ")),
        Value::Object(o) => {
            format!("{{{}}}", o.iter().map(|(k, v)| format!("{k}={}", render(v))).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

fn answers(path: &Path) -> Result<Vec<Answer>> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let calls = doc.get("calls").and_then(Value::as_array).context("no `calls` in the record")?;
    Ok(calls.iter().map(Answer::of).collect())
}

/// Compares the two records against `known`; returns the side-by-side table and the problems.
fn compare(py: &[Answer], rs: &[Answer], known: &[(&str, &str, &str, &str)]) -> (String, Vec<String>) {
    let mut table = String::from("[side-by-side] call | verdict | Python Medusa 0.31 | medusa-rs\n");
    let mut problems = Vec::new();
    let py_calls: Vec<&str> = py.iter().map(|a| a.call.as_str()).collect();
    let rs_calls: Vec<&str> = rs.iter().map(|a| a.call.as_str()).collect();
    if py_calls != rs_calls {
        problems.push(format!("the two runs made different calls:\n  {py_calls:?}\n  {rs_calls:?}"));
        return (table, problems);
    }
    for (p, r) in py.iter().zip(rs) {
        let (ps, rss) = (p.summary(), r.summary());
        let entry = known.iter().find(|k| k.0 == p.call);
        let verdict = match (ps == rss, entry) {
            (true, None) => "same".to_string(),
            (true, Some(_)) => {
                problems.push(format!("{}: listed in KNOWN but both now answer {ps}", p.call));
                "SAME BUT LISTED".to_string()
            }
            (false, None) => {
                problems.push(format!("{}: unexpected difference:\n    Python: {ps}\n    rs:     {rss}", p.call));
                "UNEXPECTED".to_string()
            }
            (false, Some(k)) if k.1 == ps && k.2 == rss => "known".to_string(),
            (false, Some(k)) => {
                problems.push(format!(
                    "{}: differs otherwise than KNOWN says:\n    Python: {ps}\n    known:  {}\n    rs:     {rss}\n    known:  {}",
                    p.call, k.1, k.2
                ));
                "CHANGED".to_string()
            }
        };
        table.push_str(&format!("[side-by-side] {} | {verdict} | {ps} | {rss}\n", p.call));
        for (who, a) in [("Python", p), ("rs", r)] {
            let extra = a.extra();
            if !extra.is_empty() {
                table.push_str(&format!("[side-by-side]     {who}: {extra}\n"));
            }
        }
    }
    for k in known {
        if !py_calls.contains(&k.0) {
            problems.push(format!("KNOWN lists `{}`, which the script no longer calls", k.0));
        }
    }
    (table, problems)
}

/// Python Medusa's gRPC server (`python -m medusa.service.grpc.server x <ini>`: the config is
/// argv[2]), killed on drop.
struct PyServer {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl PyServer {
    async fn start(python: &Path, ini: &Path, dir: &Path, port: u16) -> Result<PyServer> {
        let log = dir.join("py-server.log");
        let file = std::fs::File::create(&log)?;
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut cmd = tokio::process::Command::new(python);
        cmd.args(["-m", "medusa.service.grpc.server", "x"]).arg(ini).current_dir(dir);
        for var in ["POD_IP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
            cmd.env_remove(var);
        }
        // Its in-progress marker (`$TMPDIR/medusa_backup_in_progress`) stays in the work dir.
        cmd.env("TMPDIR", &tmp);
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("running {}", python.display()))?;
        let t0 = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("Python's server exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            if t0.elapsed() > LISTEN_LIMIT {
                bail!("Python's server did not listen within {LISTEN_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "[side-by-side] Python Medusa's gRPC server listens on {port} after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        Ok(PyServer { child, port, log })
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("Python's server died during the run ({status}); log: {}", self.log.display());
        }
        self.child.start_kill()?;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("Python's server did not exit")??;
        Ok(())
    }
}

/// Python's `medusa.ini`: the same node, Management API and storage rendering as the sidecar's
/// (pod.rs), its own bucket, `fqdn = 127.0.0.1`, `resolve_ip_addresses = False`, gRPC enabled.
fn py_ini(backend: &Backend, node: &RealNode, snapshot_url: &str, port: u16) -> String {
    let storage = medusa_tests::dc::operator_storage(backend, PREFIX, &["fqdn = 127.0.0.1".to_string()]);
    format!(
        "[cassandra]\nuse_sudo = False\nconfig_file = {}\nresolve_ip_addresses = False\n\n[storage]\n{storage}\n\
         [grpc]\nenabled = True\nport = {port}\n\n[logging]\nlevel = DEBUG\n\n\
         [kubernetes]\nenabled = True\nuse_mgmt_api = True\ncassandra_url = {snapshot_url}\n",
        node.yaml().display()
    )
}

/// Runs the script against `target`; its record.
async fn run_script(
    python: &Path,
    target: &str,
    label: &str,
    dir: &Path,
    mapping_dir: &Path,
    node_name: &str,
) -> Result<Vec<Answer>> {
    let out = dir.join(format!("{label}.json"));
    let log = dir.join(format!("{label}-script.log"));
    let file = std::fs::File::create(&log)?;
    let script = workspace_root().join("scripts/cassandra/side_by_side.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&script).args([target, label]).arg(&out);
    cmd.arg("--mapping-dir").arg(mapping_dir).args(["--node-name", node_name]);
    cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
    let t0 = Instant::now();
    let status = tokio::time::timeout(SCRIPT_LIMIT, cmd.status())
        .await
        .with_context(|| format!("side_by_side.py against {label} ran over {SCRIPT_LIMIT:?}"))??;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        bail!("side_by_side.py against {label} exited with {status}:\n{text}");
    }
    println!("[side-by-side] {label}: script done in {:.1} s", t0.elapsed().as_secs_f64());
    answers(&out)
}

/// Removes what Python's PrepareRestore created under `/var/lib/cassandra` (the script removed
/// the files it read), directories only when empty and absent before.
fn remove_created_dirs(created: &[PathBuf]) {
    for d in created {
        let _ = std::fs::remove_dir(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_rs_servers_side_by_side_5_0_local() {
    require_installed(CASSANDRA_5).unwrap();
    let python = tools_python()
        .expect("the tools venv (<tools>/venv/bin/python with Medusa 0.31): run scripts/install-test-deps.sh");
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let label = "side-by-side-5.0-local";
    let mut f = Figures::new(label);
    let work = WorkDir::new(label).unwrap();
    let hosts = work.path().join("hosts");
    hosts_file(&hosts, &[(POD, "127.0.0.1".into())]).unwrap();
    let node = RealNode::new(&work.path().join(POD), NodeConfig::single(CASSANDRA_5, 1)).labelled(POD);
    let mut pod = RealPod::new(POD, node, work.path(), &hosts);
    let rs_backend = Backend::start(Kind::Local).await.unwrap();
    let py_backend = Backend::start(Kind::Local).await.unwrap();
    pod.node.start().await.unwrap();
    pod.configure(&rs_backend, PREFIX, Access::MgmtApi).await.unwrap();
    f.done("start node and Management API");

    // Python Medusa's server.
    let py_dir = work.path().join("py-server");
    std::fs::create_dir_all(&py_dir).unwrap();
    let port = free_port();
    let snapshot_url = pod.api.as_ref().unwrap().snapshot_url.clone();
    let ini = py_dir.join("medusa.ini");
    std::fs::write(&ini, py_ini(&py_backend, &pod.node, &snapshot_url, port)).unwrap();
    let created: Vec<PathBuf> =
        [PY_MAPPING_DIR, "/var/lib/cassandra"].iter().map(PathBuf::from).filter(|d| !d.exists()).collect();
    let server = PyServer::start(&python, &ini, &py_dir, port).await.unwrap();
    let target = format!("127.0.0.1:{}", server.port);
    let py = run_script(&python, &target, "python", work.path(), Path::new(PY_MAPPING_DIR), "127.0.0.1").await;
    let stopped = server.stop().await;
    remove_created_dirs(&created);
    let py = py.unwrap();
    stopped.unwrap();
    f.done("Python Medusa's gRPC server: the sequence");

    // medusa-rs' sidecar.
    pod.start_sidecar().await.unwrap();
    let target = format!("127.0.0.1:{}", pod.sidecar.as_ref().unwrap().port);
    let mapping_dir = pod.node.root().join(".restore_mapping");
    let rs = run_script(&python, &target, "medusa-rs", work.path(), &mapping_dir, POD).await;
    pod.stop_sidecar().await.unwrap();
    let rs = rs.unwrap();
    f.done("medusa-rs' sidecar: the sequence");

    let (table, problems) = compare(&py, &rs, KNOWN);
    print!("{table}");
    pod.node.stop().await.unwrap();
    f.done("stop");
    f.finish(&[&pod.node]);
    assert!(problems.is_empty(), "{} unexpected answers:\n{}", problems.len(), problems.join("\n"));
}

/// The comparison itself, without servers: a difference not in the table, a known difference
/// that changed, one that is gone, and an entry for a call no longer made all fail.
#[test]
fn side_by_side_comparison_fails_on_what_the_table_does_not_say() {
    let answer = |call: &str, code: &str, status: &str| Answer {
        call: call.into(),
        code: code.into(),
        class: String::new(),
        message: String::new(),
        fields: serde_json::from_str(&format!(r#"{{"status": "{status}", "_shown": "only"}}"#)).unwrap(),
    };
    let py = [answer("a", "OK", "X"), answer("b", "OK", "X"), answer("c", "OK", "X"), answer("d", "OK", "X")];
    let rs = [answer("a", "OK", "X"), answer("b", "OK", "X"), answer("c", "OK", "Y"), answer("d", "OK", "X")];
    assert_eq!(py[0].summary(), "OK {status=X}");
    let table = [("c", "OK {status=X}", "OK {status=Y}", "known")];
    let (_, problems) = compare(&py, &rs, &table);
    assert!(problems.is_empty(), "{problems:?}");

    let unexpected =
        [answer("a", "OK", "X"), answer("b", "NOT_FOUND", "X"), answer("c", "OK", "Y"), answer("d", "OK", "X")];
    let (_, problems) = compare(&py, &unexpected, &table);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("b: unexpected difference"), "{problems:?}");

    let changed = [("c", "OK {status=X}", "OK {status=Z}", "known")];
    let (_, problems) = compare(&py, &rs, &changed);
    assert!(problems.iter().any(|p| p.starts_with("c: differs otherwise")), "{problems:?}");

    let stale = [("a", "OK {status=X}", "OK {status=Y}", "gone"), ("e", "", "", "no such call")];
    let (_, problems) = compare(&py, &py, &stale);
    assert!(problems.iter().any(|p| p.starts_with("a: listed in KNOWN")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("`e`")), "{problems:?}");
}
