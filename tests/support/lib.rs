//! Shared set-up for medusa-rs' integration tests: a simulated Cassandra node with its
//! Management API, a real storage server of the chosen kind, the `medusa.ini` that joins them,
//! and optionally the harness's fault proxy between medusa-rs and the storage server.

pub mod dc;
pub mod host;
pub mod kill;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::TryStreamExt;
pub use harness::fault_proxy::{FaultProxy, ProxyMode};
use harness::services::{AzuriteServer, LocalStorage, S3Server, TempDir};
use harness::sim::{DataDigest, MgmtApiServer, SimNode, SimSpec, digest_data_dir};
use medusa::backup::{BackupError, BackupReport, Engine};
use medusa::config::Config;
use medusa::format::layout::Mode;
use medusa::format::names::BackupName;
use medusa::transfer::Progress;
use tokio_util::sync::CancellationToken;

/// Kinds of storage the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `storage_provider = local`.
    Local,
    /// s3s-fs in this process.
    S3sFs,
    /// moto server process.
    Moto,
    /// azurite process.
    Azurite,
}

/// A running storage backend.
pub enum Backend {
    /// Local directory.
    Local(LocalStorage),
    /// S3 server.
    S3(S3Server),
    /// Azure emulator.
    Azure(AzuriteServer),
}

impl Backend {
    /// Starts a fresh backend of `kind` with bucket/container `medusa`.
    pub async fn start(kind: Kind) -> Result<Backend> {
        Ok(match kind {
            Kind::Local => Backend::Local(LocalStorage::new("medusa")?),
            Kind::S3sFs => Backend::S3(S3Server::s3s_fs("medusa").await?),
            Kind::Moto => Backend::S3(S3Server::moto("medusa").await?),
            Kind::Azurite => Backend::Azure(AzuriteServer::start("medusa").await?),
        })
    }

    /// The `[storage]` section; `via` (a proxy's port) replaces the server's port.
    pub fn storage_section(&self, prefix: Option<&str>, via: Option<u16>) -> String {
        let mut s = match self {
            Backend::Local(l) => l.medusa_ini_storage(prefix),
            Backend::S3(s) => s.medusa_ini_storage(prefix),
            Backend::Azure(a) => a.medusa_ini_storage(prefix),
        };
        if let Some(p) = via {
            let target_port = self.port().expect("the proxy needs a network backend");
            s = s.replace(&format!(":{target_port}"), &format!(":{p}"));
            s = s.replace(&format!("port = {target_port}\n"), &format!("port = {p}\n"));
        }
        s
    }

    /// TCP port of a network backend.
    pub fn port(&self) -> Option<u16> {
        match self {
            Backend::Local(_) => None,
            Backend::S3(s) => Some(s.port()),
            Backend::Azure(a) => Some(a.port()),
        }
    }
}

/// A simulated node, its Management API, a backend and a config file pointing at both.
pub struct Env {
    /// The node.
    pub sim: Arc<Mutex<SimNode>>,
    /// Its Management API.
    pub api: MgmtApiServer,
    /// The storage backend.
    pub backend: Backend,
    /// The fault proxy between medusa-rs and the backend, if asked for.
    pub proxy: Option<FaultProxy>,
    /// The `medusa.ini` written for this env.
    pub ini_path: PathBuf,
    /// Node name used in the bucket.
    pub fqdn: String,
    /// medusa-rs state directory.
    pub state_dir: PathBuf,
    /// Work directory (node root, config, state).
    pub dir: TempDir,
}

/// Options for [`Env::new`].
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Storage kind.
    pub kind: Kind,
    /// `[storage] prefix`.
    pub prefix: Option<String>,
    /// Put a [`FaultProxy`] in this mode in front of the backend (a network backend only):
    /// [`ProxyMode::Tcp`] to cut the link, [`ProxyMode::Http`] for faults per request too.
    pub proxy: Option<ProxyMode>,
    /// Extra lines for `[storage]`.
    pub storage_extra: String,
    /// The node to generate.
    pub spec: SimSpec,
}

impl EnvOptions {
    /// Defaults: prefix `demo`, no proxy, the small node.
    pub fn new(kind: Kind) -> EnvOptions {
        EnvOptions {
            kind,
            prefix: Some("demo".into()),
            proxy: None,
            storage_extra: String::new(),
            spec: SimSpec::small(),
        }
    }
}

impl Env {
    /// Builds everything; nothing is backed up yet.
    pub async fn new(o: EnvOptions) -> Result<Env> {
        let dir = TempDir::new("env")?;
        let root = dir.path().join("cassandra");
        let spec = o.spec.clone();
        let r = root.clone();
        let sim = tokio::task::spawn_blocking(move || SimNode::generate(&r, &spec)).await??;
        let yaml = sim.cassandra_yaml.clone();
        let sim = Arc::new(Mutex::new(sim));
        let api = MgmtApiServer::start(sim.clone()).await?;
        let backend = Backend::start(o.kind).await?;
        let proxy = match (o.proxy, backend.port()) {
            (Some(mode), Some(port)) => Some(FaultProxy::start(port, mode).await?),
            _ => None,
        };
        let fqdn = "demo-dc1-default-sts-0".to_string();
        let state_dir = dir.path().join("state");
        let via = proxy.as_ref().map(|p| p.port);
        let mut storage = backend.storage_section(o.prefix.as_deref(), via);
        storage.push_str(&format!("fqdn = {fqdn}\nmax_retries = 2\nretry_timeout = 10\nconcurrent_transfers = 2\n"));
        storage.push_str(&o.storage_extra);
        let ini = format!(
            // No metrics endpoint: the sidecars of parallel tests would all want the default port.
            "[cassandra]\nconfig_file = {}\n\n{storage}\n[grpc]\nenabled = 1\n\n[kubernetes]\nenabled = 1\nuse_mgmt_api = 1\ncassandra_url = {}\n\n[monitoring]\nmetrics_port = 0\n",
            yaml.display(),
            api.snapshot_url
        );
        let ini_path = dir.path().join("medusa.ini");
        std::fs::write(&ini_path, ini)?;
        Ok(Env { sim, api, backend, proxy, ini_path, fqdn, state_dir, dir })
    }

    /// The parsed configuration.
    pub fn config(&self) -> Result<Config> {
        Ok(Config::load(&self.ini_path)?)
    }

    /// An engine for this env (state in `self.state_dir`).
    pub fn node(&self) -> Result<Engine> {
        let cfg = self.config()?;
        let mut node = Engine::open(&cfg).context("opening the engine")?;
        node.state_dir = self.state_dir.clone();
        Ok(node)
    }

    /// Runs `f` on the simulated node on a blocking thread.
    pub async fn with_sim<T: Send + 'static>(&self, f: impl FnOnce(&mut SimNode) -> T + Send + 'static) -> T {
        let sim = self.sim.clone();
        tokio::task::spawn_blocking(move || f(&mut sim.lock().unwrap())).await.expect("sim task")
    }
}

/// How long an in-process backup of a test may take.
const BACKUP_LIMIT: Duration = Duration::from_secs(240);

/// Runs one backup in this process through `node`, failing the test if it takes longer than
/// four minutes.
pub async fn backup(node: &Engine, name: &str, mode: Mode) -> std::result::Result<BackupReport, BackupError> {
    let name = BackupName::new(name).expect("a valid backup name");
    let job = node.backup(&name, mode, Arc::new(Progress::default()), CancellationToken::new());
    match tokio::time::timeout(BACKUP_LIMIT, job).await {
        Ok(result) => result,
        Err(_) => panic!("backup {name} did not finish in time"),
    }
}

/// The digest of every file in the simulated node's data directory.
pub async fn live(env: &Env) -> DataDigest {
    env.with_sim(|s| digest_data_dir(&s.data_dir)).await
}

/// A data file a test changed.
pub struct ChangedFile {
    /// Its path below the data directory.
    pub rel: String,
    /// Its path.
    pub path: PathBuf,
    /// The content before.
    pub old: Vec<u8>,
    /// The content now.
    pub new: Vec<u8>,
}

/// Writes `nb-999-big-Data.db` of `bytes` pseudo-random bytes into the node's first user
/// table (an SSTable large enough for multipart uploads); returns its file name.
pub async fn plant_big_sstable(env: &Env, bytes: u32) -> String {
    const NAME: &str = "nb-999-big-Data.db";
    env.with_sim(move |s| {
        let t = s.user_tables()[0].clone();
        let data: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        std::fs::write(s.table_dir(&t).join(NAME), data).unwrap();
    })
    .await;
    NAME.to_string()
}

/// Changes the first byte of one non-empty `Data.db` file of keyspace `ks*` (a new file
/// replaces it, as a compaction would).
pub async fn change_one_data_file(env: &Env) -> ChangedFile {
    let (rel, victim) = env
        .with_sim(|s| {
            let d = digest_data_dir(&s.data_dir);
            let (rel, _) =
                d.entries.iter().find(|(k, v)| k.starts_with("ks") && k.ends_with("-Data.db") && v.size > 0).unwrap();
            (rel.clone(), s.data_dir.join(rel))
        })
        .await;
    let old = std::fs::read(&victim).unwrap();
    let mut changed = old.clone();
    changed[0] ^= 0xff;
    let tmp = victim.with_extension("tmp");
    std::fs::write(&tmp, &changed).unwrap();
    std::fs::rename(&tmp, &victim).unwrap();
    ChangedFile { rel, path: victim, old, new: changed }
}

/// Every object in the bucket: key -> size.
pub async fn list_all(node: &Engine) -> Result<BTreeMap<String, u64>> {
    let objects: Vec<_> = node.storage.list("").try_collect().await?;
    Ok(objects.into_iter().map(|m| (m.location.to_string(), m.size)).collect())
}

/// Names of the `medusa-rs` multi-call binary, as the image links them.
pub const ROLES: &[&str] =
    &["medusa-sidecar", "medusa-restore-init", "medusa-entrypoint", "grpc_health_probe", "medusa"];

/// Path of a workspace binary built in the same profile as this test
/// (`cargo build --release --workspace --bins` first; scripts/test.sh does). The roles of the
/// multi-call binary ([`ROLES`]) are symbolic links to `medusa-rs` in `<profile>/multicall/`,
/// as in the image, so every test runs the binary the image ships under the name it is run by.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target profile dir");
    let target = if ROLES.contains(&name) { "medusa-rs" } else { name };
    let bin = dir.join(target);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` (scripts/test.sh does)",
        bin.display()
    );
    if target == name {
        return bin;
    }
    let links = dir.join("multicall");
    std::fs::create_dir_all(&links).expect("creating the multicall link directory");
    let link = links.join(name);
    if std::fs::read_link(&link).ok().as_deref() != Some(Path::new("../medusa-rs")) {
        // Made under a private name and renamed: test processes run side by side.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = links.join(format!(".{name}.{}.{n}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink("../medusa-rs", &tmp).expect("creating a multicall link");
        std::fs::rename(&tmp, &link).expect("placing a multicall link");
    }
    link
}

/// A running `medusa-sidecar` process on a free loopback port, killed on drop.
pub struct Sidecar {
    /// The child process.
    pub child: Option<std::process::Child>,
    /// gRPC port.
    pub port: u16,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Sidecar {
    /// Starts the sidecar with `env`'s config and state directory and waits (up to 20 s) until
    /// the port accepts connections.
    pub async fn start(env: &Env) -> Result<Sidecar> {
        Sidecar::start_with(env, &[]).await
    }

    /// Same, with extra environment variables.
    pub async fn start_with(env: &Env, vars: &[(&str, &str)]) -> Result<Sidecar> {
        Sidecar::start_at(&env.ini_path, &env.state_dir, env.dir.path(), vars).await
    }

    /// Starts the sidecar with the config `ini` and state directory `state_dir`, its log in
    /// `log_dir`, and waits (up to 20 s) until the port accepts connections.
    pub async fn start_at(ini: &Path, state_dir: &Path, log_dir: &Path, vars: &[(&str, &str)]) -> Result<Sidecar> {
        let port = harness::services::free_port();
        let log = log_dir.join(format!("sidecar-{port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(binary("medusa-sidecar"))
            .arg("--config")
            .arg(ini)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("MEDUSA_RS_STATE_DIR", state_dir)
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let s = Sidecar { child: Some(child), port, log };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "sidecar did not listen within 20 s; log:\n{}",
                s.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(s)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client with Medusa's generated stubs.
    pub async fn client(&self) -> Result<medusa::service::pb::medusa_client::MedusaClient<tonic::transport::Channel>> {
        let ch = tonic::transport::Endpoint::from_shared(self.url())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .connect()
            .await?;
        Ok(medusa::service::pb::medusa_client::MedusaClient::new(ch).max_decoding_message_size(512 << 20))
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Waits up to `limit` for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<Option<i32>> {
        let deadline = std::time::Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st.code());
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "sidecar did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PEM files of a test CA, a server certificate for `localhost`/`127.0.0.1` and a client
/// certificate, both signed by the CA.
pub struct Certs {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// Client certificate.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

/// Writes a fresh CA, server and client key pair into `dir`; `prefix` names the files.
pub fn test_certs(dir: &std::path::Path) -> Certs {
    test_certs_named(dir, "")
}

/// As [`test_certs`], with file names starting with `prefix` (for a second, unrelated CA).
pub fn test_certs_named(dir: &std::path::Path, prefix: &str) -> Certs {
    test_certs_for(dir, prefix, &["localhost", "127.0.0.1"])
}

/// A CA, a server certificate for `server_names` and a client certificate, under `dir` with
/// `prefix`.
pub fn test_certs_for(dir: &std::path::Path, prefix: &str, server_names: &[&str]) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(server_names.iter().map(|n| n.to_string()).collect());
    let (client_cert, client_key) = leaf(vec!["client".into()]);
    let w = |name: &str, text: &str| {
        let p = dir.join(format!("{prefix}{name}"));
        std::fs::write(&p, text).unwrap();
        p
    };
    Certs {
        ca: w("ca.crt", &ca_cert.pem()),
        cert: w("tls.crt", &server_cert),
        key: w("tls.key", &server_key),
        client_cert: w("client.crt", &client_cert),
        client_key: w("client.key", &client_key),
    }
}

/// Enables mTLS in `env`'s `medusa.ini` with `c`.
pub fn enable_tls(env: &Env, c: &Certs) {
    let ini = std::fs::read_to_string(&env.ini_path).unwrap().replace(
        "[grpc]\nenabled = 1\n",
        &format!(
            "[grpc]\nenabled = 1\nca_cert = {}\ntls_cert = {}\ntls_key = {}\n",
            c.ca.display(),
            c.cert.display(),
            c.key.display()
        ),
    );
    std::fs::write(&env.ini_path, ini).unwrap();
}

/// The `medusa-restore-init` command for an in-place restore of `backup` under `key` with
/// `env`'s config, staging in the node's root as the operator's pods do.
pub fn restore_command(env: &Env, backup: &str, key: &str) -> std::process::Command {
    let root = env.sim.lock().unwrap().root.clone();
    let mut c = std::process::Command::new(binary("medusa-restore-init"));
    c.arg("--config")
        .arg(&env.ini_path)
        .env_remove("RESTORE_MAPPING")
        .env("MEDUSA_RS_STATE_DIR", &env.state_dir)
        .envs([("BACKUP_NAME", backup), ("RESTORE_KEY", key), ("POD_NAME", env.fqdn.as_str())])
        .env("MEDUSA_TMP_DIR", root);
    c
}

/// Runs [`restore_command`] and returns its output.
pub fn restore_in_place(env: &Env, backup: &str, key: &str) -> std::process::Output {
    restore_command(env, backup, key).output().expect("medusa-restore-init runs")
}
