//! One pod of a [`super::Datacenter`]: its node, its `medusa-sidecar` process (started,
//! killed, stopped like the `medusa` container) and its `medusa-restore` init container.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::sim::{DataDigest, MgmtApiServer, SimNode, digest_data_dir};
use medusa::service::pb;

use crate::{Sidecar, binary};

/// The generated gRPC client.
pub type Client = pb::medusa_client::MedusaClient<tonic::transport::Channel>;

/// Longest a single RPC of the test client may take (the operator sets no deadline; a test must).
const RPC_GUARD: Duration = Duration::from_secs(90);
/// Longest a sidecar may take to listen, or to exit after SIGTERM.
const SIDECAR_LIMIT: Duration = Duration::from_secs(40);
/// Longest one `medusa-restore-init` run may take.
const RESTORE_LIMIT: Duration = Duration::from_secs(180);

/// One Cassandra pod: the node, its Management API, its `medusa.ini` and (while running) its
/// sidecar on `<ip>:<port>`.
pub struct Pod {
    /// Pod name, also the node's name in the bucket.
    pub name: String,
    /// Rack.
    pub rack: String,
    /// Pod IP (`listen_address`, `ENDPOINT_IP`).
    pub ip: String,
    /// gRPC port (`[grpc] port`), kept across sidecar restarts.
    pub port: u16,
    /// The simulated node.
    pub sim: Arc<Mutex<SimNode>>,
    /// Its Management API (fault switches in `api.faults()`).
    pub api: MgmtApiServer,
    /// Node root (`/var/lib/cassandra`).
    pub root: PathBuf,
    /// Its `medusa.ini`.
    pub ini_path: PathBuf,
    /// `MEDUSA_RS_STATE_DIR`.
    pub state_dir: PathBuf,
    /// The pod's work directory (config, state, sidecar logs).
    pub(super) dir: PathBuf,
    pub(super) hosts_file: PathBuf,
    pub(super) sidecar: Mutex<Option<Sidecar>>,
    /// Sidecar starts so far (numbers the log files).
    pub(super) starts: AtomicUsize,
}

impl Pod {
    /// `<ip>:<port>`, where the operator dials.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// A connected client with the operator's options (512 MiB replies), for direct calls.
    pub async fn client(&self) -> Result<Client> {
        let ch = endpoint(self)?.connect().await.with_context(|| format!("connecting to {}", self.name))?;
        Ok(Client::new(ch).max_decoding_message_size(512 << 20))
    }

    /// Starts the sidecar (as the `medusa` container starts: the operator's environment, plus
    /// the state directory and the hosts file) and waits until it listens.
    pub async fn start_sidecar(&self) -> Result<()> {
        ensure!(!self.is_running(), "{}: the sidecar runs already", self.name);
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(format!("sidecar-{n}.log"));
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(binary("medusa-sidecar"))
            .arg("--config")
            .arg(&self.ini_path)
            .arg("--listen")
            .arg(self.address())
            .env("MEDUSA_RS_STATE_DIR", &self.state_dir)
            .env("MEDUSA_RS_HOSTS_FILE", &self.hosts_file)
            .env("MEDUSA_MODE", "GRPC")
            .env("MEDUSA_TMP_DIR", &self.root)
            .env("POD_NAME", &self.name)
            .env_remove("RUST_LOG")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let mut sidecar = Sidecar { child: Some(child), port: self.port, log };
        let deadline = Instant::now() + SIDECAR_LIMIT;
        while tokio::net::TcpStream::connect(self.address()).await.is_err() {
            if let Some(code) = sidecar.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{}: the sidecar exited ({code}) before listening; log:\n{}", self.name, sidecar.log_text());
            }
            ensure!(
                Instant::now() < deadline,
                "{}: the sidecar did not listen within {SIDECAR_LIMIT:?}; log:\n{}",
                self.name,
                sidecar.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *self.sidecar.lock().unwrap() = Some(sidecar);
        Ok(())
    }

    /// Whether a sidecar process is running.
    pub fn is_running(&self) -> bool {
        self.sidecar
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|s| s.child.as_mut())
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill_sidecar(&self) -> Result<()> {
        let Some(mut s) = self.sidecar.lock().unwrap().take() else { bail!("{}: no sidecar to kill", self.name) };
        s.signal(nix::sys::signal::Signal::SIGKILL);
        s.wait_exit(Duration::from_secs(10)).await.map(drop)
    }

    /// SIGTERM (a pod being deleted) and waits for the exit; returns its code.
    pub async fn stop_sidecar(&self) -> Result<Option<i32>> {
        let Some(mut s) = self.sidecar.lock().unwrap().take() else { return Ok(None) };
        s.signal(nix::sys::signal::Signal::SIGTERM);
        s.wait_exit(SIDECAR_LIMIT).await
    }

    /// Every sidecar log of this pod so far, oldest start first.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 0..self.starts.load(Ordering::SeqCst) {
            let text = std::fs::read_to_string(self.dir.join(format!("sidecar-{n}.log"))).unwrap_or_default();
            out.push_str(&format!("----- {} sidecar start {n} -----\n{text}", self.name));
        }
        out
    }

    /// Runs `f` on the simulated node on a blocking thread.
    pub async fn with_sim<T: Send + 'static>(&self, f: impl FnOnce(&mut SimNode) -> T + Send + 'static) -> T {
        let sim = self.sim.clone();
        tokio::task::spawn_blocking(move || f(&mut sim.lock().unwrap())).await.expect("sim task")
    }

    /// The digest of the node's data directory.
    pub async fn live(&self) -> DataDigest {
        self.with_sim(|s| digest_data_dir(&s.data_dir)).await
    }

    /// The node's tokens.
    pub fn tokens(&self) -> Vec<i64> {
        self.sim.lock().unwrap().tokens.clone()
    }

    /// Runs the real `medusa-restore-init` as this pod's `medusa-restore` init container: its
    /// config, `POD_NAME`, `MEDUSA_TMP_DIR` = the node root, and `vars` (no `RESTORE_MAPPING`
    /// unless given).
    pub fn restore_init(&self, vars: &[(&str, &str)]) -> Result<std::process::Child> {
        let mut c = std::process::Command::new(binary("medusa-restore-init"));
        c.arg("--config")
            .arg(&self.ini_path)
            .env("RUST_LOG", "info")
            .env_remove("RESTORE_MAPPING")
            .env("MEDUSA_RS_STATE_DIR", &self.state_dir)
            .env("MEDUSA_MODE", "RESTORE")
            .env("POD_NAME", &self.name)
            .env("MEDUSA_TMP_DIR", &self.root)
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Ok(c.spawn()?)
    }

    /// [`Pod::restore_init`] run to its end (at most three minutes).
    pub async fn run_restore_init(&self, vars: &[(&str, &str)]) -> Result<InitRun> {
        let child = self.restore_init(vars)?;
        wait_init(&self.name, child).await
    }
}

/// One `medusa-restore-init` run.
#[derive(Debug, Clone)]
pub struct InitRun {
    /// The pod.
    pub pod: String,
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// stdout and stderr.
    pub log: String,
}

pub(crate) async fn wait_init(pod: &str, child: std::process::Child) -> Result<InitRun> {
    let out = tokio::time::timeout(RESTORE_LIMIT, tokio::task::spawn_blocking(move || child.wait_with_output()))
        .await
        .with_context(|| format!("{pod}: medusa-restore-init did not finish within {RESTORE_LIMIT:?}"))???;
    Ok(InitRun {
        pod: pod.to_string(),
        code: out.status.code(),
        log: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    })
}

pub(crate) fn endpoint(pod: &Pod) -> Result<tonic::transport::Endpoint> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{}", pod.address()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(RPC_GUARD))
}
