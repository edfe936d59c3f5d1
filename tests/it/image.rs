//! The image, built from the shipped Dockerfile with podman (`scripts/image.sh build`: local
//! stand-ins for the two registry bases, passed through the Dockerfile's build args) and run as
//! k8ssandra-operator runs it: read-only root, uid 999, the operator's `medusa.ini` and mounts
//! (`/etc/medusa`, `/etc/cassandra`, `/var/lib/cassandra`, `/etc/medusa-secrets`, `/tmp`,
//! `/etc/podinfo`), `POD_NAME`, host network to reach a simulated node's Management API and
//! s3s-fs on loopback. Checks: the probe the operator execs, a backup over gRPC, the CLI inside
//! the container, SIGTERM within the grace period, and `MEDUSA_MODE=RESTORE` into a mounted data
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::services::TempDir;
use harness::sim::digest_data_dir;
use medusa::service::pb;
use medusa::service::pb::StatusType;
use medusa_tests::host::DefaultPorts;
use medusa_tests::{Env, EnvOptions, Kind, live};

const POD: &str = "demo-dc1-default-sts-0";
const IMAGE: &str = "localhost/medusa-rs:test";
/// What the image must stay under.
const SIZE_GOAL: u64 = 30_000_000;
/// The pod's termination grace period in k8s (the operator keeps the default, 30 s).
const GRACE: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a command, killing it after `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

fn podman(args: &[&str], limit: Duration) -> Output {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"]).args(args);
    run(&mut c, limit)
}

fn text(o: &Output) -> String {
    format!("exit {:?}\n{}{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A container removed when the test ends, whatever happens.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0], Duration::from_secs(60));
    }
}

/// The pod's files: what the operator mounts.
struct PodFiles {
    etc_medusa: PathBuf,
    etc_cassandra: PathBuf,
    secrets: PathBuf,
    tmp: PathBuf,
    podinfo: PathBuf,
}

impl PodFiles {
    /// `podman run` arguments of the operator's pod for a node whose root is `root`.
    fn run_args(&self, name: &str, root: &Path, mode: &str) -> Vec<String> {
        let v = |host: &Path, ctr: &str, ro: bool| format!("{}:{ctr}{}", host.display(), if ro { ":ro" } else { "" });
        let mut a: Vec<String> = ["run", "-d", "--name", name, "--network=host", "--read-only", "--user", "999:999"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1000:1000"].map(String::from));
        for (host, ctr, ro) in [
            (&self.etc_medusa, "/etc/medusa", true),
            (&self.etc_cassandra, "/etc/cassandra", true),
            (&self.secrets, "/etc/medusa-secrets", true),
            (&self.podinfo, "/etc/podinfo", true),
            (&self.tmp, "/tmp", false),
            (&root.to_path_buf(), "/var/lib/cassandra", false),
        ] {
            a.extend(["-v".to_string(), v(host, ctr, ro)]);
        }
        for (k, val) in [("MEDUSA_MODE", mode), ("POD_NAME", POD), ("MEDUSA_TMP_DIR", "/var/lib/cassandra")] {
            a.extend(["-e".to_string(), format!("{k}={val}")]);
        }
        a
    }
}

fn chown_999(path: &Path) {
    let out = Command::new("chown").args(["-R", "999:999"]).arg(path).output().unwrap();
    assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
}

/// The pod's configuration for the simulated node of `env`: `medusa.ini` as the operator renders
/// it (paths inside the container), cassandra.yaml with the container's paths, credentials.
fn pod_files(env: &Env, dir: &Path, node_root: &Path) -> PodFiles {
    let files = PodFiles {
        etc_medusa: dir.join("etc-medusa"),
        etc_cassandra: dir.join("etc-cassandra"),
        secrets: dir.join("secrets"),
        tmp: dir.join("tmp"),
        podinfo: dir.join("podinfo"),
    };
    for d in [&files.etc_medusa, &files.etc_cassandra, &files.secrets, &files.tmp, &files.podinfo] {
        std::fs::create_dir_all(d).unwrap();
    }
    chown_999(&files.tmp);
    // Storage: the test's s3s-fs, its credentials file where the operator mounts the secret.
    let storage = env.backend.storage_section(Some("demo"), None);
    let mut section = String::new();
    for line in storage.lines() {
        if let Some(path) = line.strip_prefix("key_file = ") {
            std::fs::copy(path, files.secrets.join("credentials")).unwrap();
            section.push_str("key_file = /etc/medusa-secrets/credentials\n");
        } else {
            section.push_str(line);
            section.push('\n');
        }
    }
    let ini = format!(
        "[cassandra]\nuse_sudo = false\nconfig_file = /etc/cassandra/cassandra.yaml\n\n{section}\
         max_backup_count = 2\nconcurrent_transfers = 2\n\n[grpc]\nenabled = 1\n\n[logging]\nlevel = DEBUG\n\n\
         [kubernetes]\nuse_mgmt_api = 1\nenabled = 1\ncassandra_url = {}\n",
        env.api.snapshot_url
    );
    std::fs::write(files.etc_medusa.join("medusa.ini"), ini).unwrap();
    let yaml_path = env.sim.lock().unwrap().cassandra_yaml.clone();
    let yaml = std::fs::read_to_string(yaml_path).unwrap();
    let yaml = yaml.replace(node_root.to_str().unwrap(), "/var/lib/cassandra");
    std::fs::write(files.etc_cassandra.join("cassandra.yaml"), yaml).unwrap();
    std::fs::write(files.podinfo.join("labels"), "app.kubernetes.io/name=\"cassandra\"\n").unwrap();
    files
}

async fn wait_serving(c: &Container) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = podman(&["exec", &c.0, "/bin/grpc_health_probe", "--addr=:50051"], Duration::from_secs(30));
        if out.status.code() == Some(0) {
            assert!(String::from_utf8_lossy(&out.stdout).contains("status: SERVING"), "{}", text(&out));
            return;
        }
        assert!(Instant::now() < deadline, "the probe never passed: {}\n{}", text(&out), logs(c));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn logs(c: &Container) -> String {
    text(&podman(&["logs", &c.0], Duration::from_secs(30)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_as_the_operator_renders_it() {
    // The container binds the host's default ports; no datacenter runs beside it (see host.rs).
    let _default_ports = DefaultPorts::take().await;
    // Build (cached layers and cargo caches make a rebuild quick).
    let mut build = Command::new("bash");
    build.arg(repo_root().join("scripts/image.sh")).arg("build").env("MEDUSA_RS_IMAGE", IMAGE);
    let out = tokio::task::spawn_blocking(move || run(&mut build, Duration::from_secs(45 * 60))).await.unwrap();
    assert!(out.status.success(), "image build failed: {}", text(&out));
    let size = podman(&["image", "inspect", "--format", "{{.Size}}", IMAGE], Duration::from_secs(30));
    let size: u64 = String::from_utf8_lossy(&size.stdout).trim().parse().expect("image size");
    println!("image {IMAGE}: {size} bytes ({:.1} MB)", size as f64 / 1e6);
    assert!(size < SIZE_GOAL, "the image is {size} bytes, over the {SIZE_GOAL} goal");
    // Labels and the user the operator's pod runs as.
    let meta = podman(
        &[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{index .Config.Labels \"org.opencontainers.image.title\"}}",
            IMAGE,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(String::from_utf8_lossy(&meta.stdout).trim(), "999:999 medusa-rs", "{}", text(&meta));

    let env = Env::new(EnvOptions::new(Kind::S3sFs)).await.unwrap();
    let node_root = env.sim.lock().unwrap().root.clone();
    chown_999(&node_root);
    let dir = TempDir::new("image").unwrap();
    let files = pod_files(&env, dir.path(), &node_root);

    // The medusa container: probe, backup over gRPC, CLI, SIGTERM.
    let name = format!("medusa-rs-test-{}", std::process::id());
    let _ = podman(&["rm", "-f", "-t", "0", &name], Duration::from_secs(60));
    let args = files.run_args(&name, &node_root, "GRPC");
    let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
    full.push(IMAGE);
    let out = podman(&full, Duration::from_secs(120));
    assert!(out.status.success(), "podman run: {}", text(&out));
    let sidecar = Container(name.clone());
    wait_serving(&sidecar).await;

    let backed_up = live(&env).await;
    let ch = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let mut client = pb::medusa_client::MedusaClient::new(ch);
    client
        .async_backup(pb::BackupRequest { name: "image-full".into(), mode: pb::backup_request::Mode::Full as i32 })
        .await
        .unwrap_or_else(|e| panic!("AsyncBackup: {e}\n{}", logs(&sidecar)));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = client
            .backup_status(pb::BackupStatusRequest { backup_name: "image-full".into() })
            .await
            .unwrap()
            .into_inner();
        if s.status == StatusType::Success as i32 {
            break;
        }
        assert_ne!(s.status, StatusType::Failed as i32, "backup failed: {}\n{}", s.error, logs(&sidecar));
        assert!(Instant::now() < deadline, "backup not done in time: {s:?}\n{}", logs(&sidecar));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // `kubectl exec -c medusa -- medusa-rs list-backups` (and Medusa's `medusa` name).
    for cli in ["medusa-rs", "medusa"] {
        let out = podman(&["exec", &name, cli, "list-backups", "--output", "json"], Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(v["backups"][0]["name"], "image-full", "{v}");
        assert_eq!(v["backups"][0]["status"], "SUCCESS", "{v}");
        assert_eq!(v["backups"][0]["objects"].as_u64(), Some(backed_up.files), "{v}");
    }
    let out = podman(&["exec", &name, "medusa-rs", "verify", "--backup-name", "image-full"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // No shell in the image.
    let out = podman(&["exec", &name, "/bin/sh", "-c", "true"], Duration::from_secs(30));
    assert_ne!(out.status.code(), Some(0), "the image has a shell: {}", text(&out));

    // SIGTERM (what the kubelet sends): the container stops well within the grace period.
    let t0 = Instant::now();
    let out = podman(&["stop", "-t", &GRACE.as_secs().to_string(), &name], GRACE + Duration::from_secs(30));
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name], Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "exit code after SIGTERM\n{}", logs(&sidecar));
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    println!("SIGTERM to exit: {:.1} s", took.as_secs_f64());

    // The medusa-restore init container: the backup restored into the pod's data volume.
    medusa_tests::change_one_data_file(&env).await;
    assert!(live(&env).await != backed_up);
    let restore_name = format!("{name}-restore");
    let mut args = files.run_args(&restore_name, &node_root, "RESTORE");
    let mapping = format!(r#"{{"in_place":true,"host_map":{{"{POD}":{{"source":["{POD}"],"seed":false}}}}}}"#);
    for (k, v) in [("BACKUP_NAME", "image-full"), ("RESTORE_KEY", "key-1"), ("RESTORE_MAPPING", mapping.as_str())] {
        args.extend(["-e".to_string(), format!("{k}={v}")]);
    }
    let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
    full.push(IMAGE);
    let out = podman(&full, Duration::from_secs(120));
    assert!(out.status.success(), "podman run: {}", text(&out));
    let restore = Container(restore_name.clone());
    let out = podman(&["wait", &restore_name], Duration::from_secs(300));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "restore exit code\n{}", logs(&restore));
    let got = digest_data_dir(&node_root.join("data"));
    assert!(got == backed_up, "restored data differs:\n{}", backed_up.diff(&got));
    assert_eq!(std::fs::read_to_string(node_root.join(".last-restore")).unwrap(), "key-1\n");
}
