//! Real storage servers on loopback for integration tests, and the `[storage]` text of a
//! `medusa.ini` that points medusa-rs (or the Python Medusa) at them.
//!
//! - [`S3Server::s3s_fs`]: s3s-fs 0.14.1 in this process (on its own thread and runtime, so a test
//!   that blocks cannot stall it), data in a temp dir, signatures checked (keys `test`/`test`).
//! - [`S3Server::moto`]: moto's server as a child process (accepts any credentials).
//! - [`AzuriteServer::start`]: azurite's blob service as a child process, in memory.
//! - [`LocalStorage`]: a bucket directory for `storage_provider = local`.
//!
//! Each server is new for each test, listens on a free port of 127.0.0.1, waits for readiness with
//! a timeout, and stops when dropped. The external tools come from `scripts/install-test-deps.sh`
//! (see [`tools_dir`]); a missing tool is an error that says so, never a skip.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
/// The HTTP method of [`S3Server::request`].
pub use reqwest::Method;
use reqwest::Response;
use sha2::Sha256;

/// How long an external server may take to become ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an external server is started on a new port when it dies at once (a port race).
const START_ATTEMPTS: usize = 3;
/// Concurrent requests of [`S3Server::upload_dir`] and [`AzuriteServer::upload_dir`].
const UPLOAD_CONCURRENCY: usize = 8;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is <workspace>/tests/harness.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

/// Where `scripts/install-test-deps.sh` put the test tools: `$MEDUSA_RS_TOOLS`, else
/// `<workspace>/.tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("MEDUSA_RS_TOOLS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".tools"),
    }
}

/// `<workspace>/tests/fixtures`. Read only: copy what a test changes (see [`copy_dir_all`]).
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/fixtures")
}

/// The backups written by the real Python Medusa 0.31.0 (see `tests/fixtures/README.md`).
pub fn medusa_py_fixture() -> PathBuf {
    fixtures_dir().join("medusa-py-0.31")
}

/// The Python Medusa 0.31.0 CLI (`<tools>/venv/bin/medusa`), if installed.
pub fn python_medusa() -> Option<PathBuf> {
    existing(tools_dir().join("venv/bin/medusa"))
}

/// grpcurl v1.8.6 (`<tools>/venv/bin/grpcurl`), if installed. It speaks only reflection v1alpha.
pub fn grpcurl() -> Option<PathBuf> {
    existing(tools_dir().join("venv/bin/grpcurl"))
}

/// The Python of the tools venv (with the Medusa gRPC stubs, grpcio and boto3), if installed.
pub fn tools_python() -> Option<PathBuf> {
    existing(tools_dir().join("venv/bin/python"))
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.is_file().then_some(path)
}

fn require_tool(relative: &str) -> Result<PathBuf> {
    require_tool_in(&tools_dir(), relative)
}

fn require_tool_in(tools: &Path, relative: &str) -> Result<PathBuf> {
    let path = tools.join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "test tool {} is missing: run scripts/install-test-deps.sh (or set MEDUSA_RS_TOOLS to \
             the directory it installed into)",
            path.display()
        )
    }
}

/// A port of 127.0.0.1 that was free a moment ago (never a sidecar's default port).
pub fn free_port() -> u16 {
    loop {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0");
        if !SIDECAR_DEFAULT_PORTS.contains(&port) {
            return port;
        }
    }
}

/// The ports a sidecar binds when its configuration names none: gRPC (`[grpc] port`, in the
/// kernel's range of free ports) and metrics (`[monitoring] metrics_port`). [`free_port`] never
/// hands them out: the tests that bind them must find them free.
const SIDECAR_DEFAULT_PORTS: [u16; 2] = [50051, 9180];

/// A directory under the system temp dir with a unique name, removed (with its content) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp>/medusa-rs-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> std::io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("medusa-rs-{label}-{}-{n}-{nanos:x}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (for debugging a failed test) and returns its path.
    pub fn keep(self) -> PathBuf {
        let path = self.path.clone();
        std::mem::forget(self);
        path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Copies the tree `src` into `dst` (created if missing): directories, regular files, and
/// symlinks as symlinks. File modes are copied; mtimes are not.
pub fn copy_dir_all(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in walkdir::WalkDir::new(src).min_depth(1) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(src).expect("walkdir stays below its root");
        let target = dst.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Every regular file below `dir`, as (path relative to `dir` with `/` separators, full path),
/// sorted by the relative path.
pub fn files_below(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry?;
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(dir)?;
            let rel = rel.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", rel.display()))?;
            files.push((rel.replace(std::path::MAIN_SEPARATOR, "/"), entry.path().to_path_buf()));
        }
    }
    Ok(files)
}

fn http_client() -> reqwest::Client {
    // no_proxy: requests go to loopback whatever HTTP(S)_PROXY says.
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A server process, killed (SIGKILL) and reaped on drop. moto ignores SIGTERM, so no grace.
#[derive(Debug)]
struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(mut cmd: Command, log: PathBuf, cwd: &Path) -> Result<ChildGuard> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        Ok(ChildGuard { child, log })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the process's output, for error messages.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Probe {
    Ready,
    NotYet,
}

/// Starts a server with `make_cmd(port)` on a free port and polls `probe(port)` until it says
/// ready. A process that exits at once (another test took the port) is retried on a new port.
async fn start_process<F, P, Fut>(name: &str, dir: &Path, make_cmd: F, probe: P) -> Result<(ChildGuard, u16)>
where
    F: Fn(u16) -> Command,
    P: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = Probe>,
{
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut guard = ChildGuard::spawn(make_cmd(port), log, dir)?;
        let started = Instant::now();
        loop {
            if let Some(status) = guard.exited() {
                if attempt < START_ATTEMPTS {
                    break;
                }
                bail!("{name} exited with {status} before it was ready; its output:\n{}", guard.log_tail());
            }
            if let Probe::Ready = probe(port).await {
                return Ok((guard, port));
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("{name} on port {port} not ready after {READY_TIMEOUT:?}; its output:\n{}", guard.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    unreachable!("the last attempt returns or bails")
}

// ---------------------------------------------------------------------------------------------
// S3
// ---------------------------------------------------------------------------------------------

/// An S3-compatible server on 127.0.0.1 with one bucket, path-style, region `us-east-1`.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// s3s-fs only: the directory the server stores buckets in (`<data_dir>/<bucket>/<key>`).
    pub data_dir: Option<PathBuf>,
    /// AWS shared-credentials file (`[default]` profile) holding the keys: medusa's `key_file`.
    pub credentials_file: PathBuf,
    port: u16,
    client: reqwest::Client,
    // Dropped in field order: stop the server before removing its directory.
    _running: Running,
    _dir: TempDir,
}

/// What keeps the server alive; dropping it stops the server.
enum Running {
    InProcess { _server: InProcessServer },
    Process { _child: ChildGuard },
}

impl S3Server {
    /// s3s-fs 0.14.1 served from this process, storing in a temp dir; the bucket is created as a
    /// directory. It checks SigV4 signatures against the keys `test`/`test`.
    ///
    /// Its ListObjectsV2 entries carry no `ETag` and no `StorageClass`: Python Medusa cannot
    /// list it (a KeyError it retries for minutes); use [`S3Server::moto`] for Python Medusa.
    pub async fn s3s_fs(bucket: &str) -> Result<S3Server> {
        let dir = TempDir::new("s3s-fs")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(data_dir.join(bucket))?;
        let server = InProcessServer::start(&data_dir, S3_ACCESS_KEY, S3_SECRET_KEY)?;
        let port = server.addr.port();
        let s3 = S3Server::new(dir, port, bucket, Some(data_dir), Running::InProcess { _server: server })?;
        Ok(s3)
    }

    /// moto's S3 server (`<tools>/venv/bin/moto_server`), in memory, with the bucket created.
    /// moto accepts any credentials and does not check signatures.
    pub async fn moto(bucket: &str) -> Result<S3Server> {
        let exe = require_tool("venv/bin/moto_server")?;
        let dir = TempDir::new("moto")?;
        let client = http_client();
        let make_cmd = |port: u16| {
            let mut cmd = Command::new(&exe);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            cmd
        };
        let probe = |port: u16| {
            let client = client.clone();
            async move {
                let url = format!("http://127.0.0.1:{port}/moto-api/");
                match client.get(url).timeout(Duration::from_secs(2)).send().await {
                    Ok(r) if r.status().is_success() => Probe::Ready,
                    _ => Probe::NotYet,
                }
            }
        };
        let (child, port) = start_process("moto", dir.path(), make_cmd, probe).await?;
        let s3 = S3Server::new(dir, port, bucket, None, Running::Process { _child: child })?;
        let resp = s3.request(Method::PUT, &format!("/{bucket}"), &[], Vec::new()).await?;
        if !resp.status().is_success() {
            bail!("moto: create bucket {bucket}: {} {}", resp.status(), resp.text().await?);
        }
        Ok(s3)
    }

    fn new(dir: TempDir, port: u16, bucket: &str, data_dir: Option<PathBuf>, running: Running) -> Result<S3Server> {
        let (access_key, secret_key) = (S3_ACCESS_KEY.to_string(), S3_SECRET_KEY.to_string());
        let credentials_file = dir.path().join("credentials");
        std::fs::write(
            &credentials_file,
            format!("[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"),
        )?;
        Ok(S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            access_key,
            secret_key,
            region: "us-east-1".to_string(),
            data_dir,
            credentials_file,
            port,
            client: http_client(),
            _running: running,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `[storage]` section of a `medusa.ini` for this server, ending with a newline so that
    /// more `[storage]` keys (fqdn, ...) can be appended directly.
    pub fn medusa_ini_storage(&self, prefix: Option<&str>) -> String {
        let mut s = format!(
            "[storage]\nstorage_provider = s3_compatible\nbucket_name = {}\nkey_file = {}\nhost = 127.0.0.1\n\
             port = {}\nsecure = False\nssl_verify = False\nregion = {}\n",
            self.bucket,
            self.credentials_file.display(),
            self.port,
            self.region
        );
        push_prefix(&mut s, prefix);
        s
    }

    /// A SigV4-signed request. `path` starts with `/` and names the bucket (`/bucket/key`),
    /// unencoded; query pairs are unencoded too.
    pub async fn request(&self, method: Method, path: &str, query: &[(&str, &str)], body: Vec<u8>) -> Result<Response> {
        let url = url_with_query(&format!("{}{}", self.endpoint, encode_path(path)), query);
        let signed =
            sigv4_headers(&method, &url, &body, (&self.access_key, &self.secret_key), &self.region, SystemTime::now())?;
        let mut req = self.client.request(method, url);
        for (name, value) in signed {
            req = req.header(name, value);
        }
        Ok(req.body(body).send().await?)
    }

    /// PUT one object into the bucket.
    pub async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<()> {
        let resp = self.request(Method::PUT, &format!("/{}/{key}", self.bucket), &[], body).await?;
        check(resp, &format!("S3 PUT {key}")).await.map(drop)
    }

    /// GET one object; `None` when it does not exist.
    pub async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let resp = self.request(Method::GET, &format!("/{}/{key}", self.bucket), &[], Vec::new()).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(resp, &format!("S3 GET {key}")).await?))
    }

    /// Every key in the bucket starting with `prefix`, sorted (ListObjectsV2, all pages).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let resp = self.request(Method::GET, &format!("/{}", self.bucket), &query, Vec::new()).await?;
            let xml = String::from_utf8(check(resp, "S3 ListObjectsV2").await?)?;
            keys.extend(xml_values(&xml, "Key"));
            token = match xml_values(&xml, "IsTruncated").first().map(String::as_str) {
                Some("true") => xml_values(&xml, "NextContinuationToken").into_iter().next(),
                _ => None,
            };
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Uploads every file below `dir` as `<prefix><relative path>`; returns how many.
    /// E.g. `upload_dir(&medusa_py_fixture().join("bucket"), "")` seeds the Python backups.
    pub async fn upload_dir(&self, dir: &Path, prefix: &str) -> Result<usize> {
        let files = files_below(dir)?;
        let n = files.len();
        futures::stream::iter(files)
            .map(|(rel, path)| async move { self.put_object(&format!("{prefix}{rel}"), std::fs::read(path)?).await })
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        Ok(n)
    }
}

/// s3s-fs on a thread of its own with its own runtime: it keeps serving while the test's runtime
/// is blocked (e.g. in a `std::process::Command` running Python Medusa). Stopped on drop.
struct InProcessServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessServer {
    fn start(data_dir: &Path, access_key: &str, secret_key: &str) -> Result<InProcessServer> {
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let fs = s3s_fs::FileSystem::new(data_dir).map_err(|e| anyhow!("s3s-fs on {}: {e:?}", data_dir.display()))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        let service = builder.build();

        // Bound here, so the port is taken before this returns and connections queue at once.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("s3s-fs").enable_all().build()?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("s3s-fs".into()).spawn(move || {
            runtime.block_on(async move {
                use hyper_util::rt::{TokioExecutor, TokioIo};
                use hyper_util::server::conn::auto::Builder as ConnBuilder;

                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let http = ConnBuilder::new(TokioExecutor::new());
                // Dropping the set aborts open connections.
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            // Without it, small responses wait for delayed ACKs (~40 ms each).
                            let _ = socket.set_nodelay(true);
                            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                            conns.spawn(async move {
                                let _ = conn.await;
                            });
                        }
                    }
                }
            });
            // Do not wait for blocking file I/O of aborted requests.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(InProcessServer { addr, shutdown: Some(tx), thread: Some(thread) })
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Azure (azurite)
// ---------------------------------------------------------------------------------------------

/// The S3 servers' access key id (distinctive, so that a test can look for it in logs).
pub const S3_ACCESS_KEY: &str = "AKIAMEDUSARS7TESTKEY";
/// The S3 servers' secret access key (idem).
pub const S3_SECRET_KEY: &str = "mRs+SecretKey/9f2c41d7e6b85a03c1e4d7f2a9b6c3e8";

/// azurite's built-in storage account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The well-known (public) key of [`AZURITE_ACCOUNT`], base64.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const AZURE_API_VERSION: &str = "2021-08-06";

/// azurite's blob service (`<tools>/npm/node_modules/.bin/azurite-blob`), in memory, with one
/// container created.
pub struct AzuriteServer {
    /// `http://127.0.0.1:PORT/devstoreaccount1` (path-style account, as object_store's
    /// `MicrosoftAzureBuilder::with_endpoint` wants it).
    pub endpoint: String,
    pub account: String,
    /// The account key, base64.
    pub key: String,
    pub container: String,
    /// `{"storage_account": .., "key": ..}`: medusa's `key_file` for `azure_blobs`.
    pub key_file: PathBuf,
    port: u16,
    client: reqwest::Client,
    _running: ChildGuard,
    _dir: TempDir,
}

impl AzuriteServer {
    pub async fn start(container: &str) -> Result<AzuriteServer> {
        let exe = require_tool("npm/node_modules/.bin/azurite-blob")?;
        let dir = TempDir::new("azurite")?;
        let client = http_client();
        let make_cmd = |port: u16| {
            let mut cmd = Command::new(&exe);
            cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()]);
            cmd.args(["--inMemoryPersistence", "--disableTelemetry"]);
            cmd
        };
        let probe = |port: u16| {
            let client = client.clone();
            // Any HTTP answer (403 for this unsigned request) means it is serving.
            async move {
                let url = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list");
                match client.get(url).timeout(Duration::from_secs(2)).send().await {
                    Ok(_) => Probe::Ready,
                    Err(_) => Probe::NotYet,
                }
            }
        };
        let (child, port) = start_process("azurite", dir.path(), make_cmd, probe).await?;
        let key_file = dir.path().join("azure_credentials.json");
        let json = serde_json::json!({ "storage_account": AZURITE_ACCOUNT, "key": AZURITE_KEY });
        std::fs::write(&key_file, serde_json::to_vec_pretty(&json)?)?;
        let server = AzuriteServer {
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            account: AZURITE_ACCOUNT.to_string(),
            key: AZURITE_KEY.to_string(),
            container: container.to_string(),
            key_file,
            port,
            client,
            _running: child,
            _dir: dir,
        };
        let resp =
            server.request(Method::PUT, &format!("/{container}"), &[("restype", "container")], &[], Vec::new()).await?;
        check(resp, &format!("azurite: create container {container}")).await?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `[storage]` section of a `medusa.ini` for this server. Medusa's own Azure URL
    /// (`https://<account>.blob.core.<host>:<port>/`) cannot point at azurite, so this also emits
    /// `endpoint = <url>`, a medusa-rs extension key (Python Medusa ignores unknown keys).
    pub fn medusa_ini_storage(&self, prefix: Option<&str>) -> String {
        let mut s = format!(
            "[storage]\nstorage_provider = azure_blobs\nbucket_name = {}\nkey_file = {}\nendpoint = {}\n",
            self.container,
            self.key_file.display(),
            self.endpoint
        );
        push_prefix(&mut s, prefix);
        s
    }

    /// A SharedKey-signed request. `path` starts with `/` and names the container
    /// (`/container/blob`), unencoded, relative to [`AzuriteServer::endpoint`]. `headers` may hold
    /// `content-type` and `x-ms-*` headers.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response> {
        let encoded_path = encode_path(path);
        let url = url_with_query(&format!("{}{encoded_path}", self.endpoint), query);
        let signed = shared_key_headers(
            (&self.account, &self.key),
            &method,
            &encoded_path,
            query,
            headers,
            body.len(),
            SystemTime::now(),
        )?;
        let mut req = self.client.request(method, url).header("content-length", body.len().to_string());
        for (name, value) in &signed {
            req = req.header(name.as_str(), value.as_str());
        }
        Ok(req.body(body).send().await?)
    }

    /// PUT one block blob into the container.
    pub async fn put_blob(&self, name: &str, body: Vec<u8>) -> Result<()> {
        let path = format!("/{}/{name}", self.container);
        let resp = self.request(Method::PUT, &path, &[], &[("x-ms-blob-type", "BlockBlob")], body).await?;
        check(resp, &format!("azure PUT {name}")).await.map(drop)
    }

    /// GET one blob; `None` when it does not exist.
    pub async fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let resp = self.request(Method::GET, &format!("/{}/{name}", self.container), &[], &[], Vec::new()).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(resp, &format!("azure GET {name}")).await?))
    }

    /// Every blob name in the container starting with `prefix`, sorted (List Blobs, all pages).
    pub async fn list_blobs(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![("restype", "container"), ("comp", "list"), ("prefix", prefix)];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            let path = format!("/{}", self.container);
            let resp = self.request(Method::GET, &path, &query, &[], Vec::new()).await?;
            let xml = String::from_utf8(check(resp, "azure List Blobs").await?)?;
            // Blob entries are <Blob><Name>..</Name>..</Blob>; the container name is an attribute.
            names.extend(xml_values(&xml, "Name"));
            marker = xml_values(&xml, "NextMarker").into_iter().next().unwrap_or_default();
            if marker.is_empty() {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    /// Uploads every file below `dir` as `<prefix><relative path>`; returns how many.
    pub async fn upload_dir(&self, dir: &Path, prefix: &str) -> Result<usize> {
        let files = files_below(dir)?;
        let n = files.len();
        futures::stream::iter(files)
            .map(|(rel, path)| async move { self.put_blob(&format!("{prefix}{rel}"), std::fs::read(path)?).await })
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Local storage
// ---------------------------------------------------------------------------------------------

/// A `storage_provider = local` bucket: the directory `<base_path>/<bucket>` in a temp dir.
pub struct LocalStorage {
    pub base_path: PathBuf,
    pub bucket: String,
    _dir: TempDir,
}

impl LocalStorage {
    /// An empty bucket directory.
    pub fn new(bucket: &str) -> Result<LocalStorage> {
        let dir = TempDir::new("local")?;
        let base_path = dir.path().to_path_buf();
        std::fs::create_dir_all(base_path.join(bucket))?;
        Ok(LocalStorage { base_path, bucket: bucket.to_string(), _dir: dir })
    }

    /// A bucket holding a copy of the directory `src` (e.g. `medusa_py_fixture().join("bucket")`).
    pub fn copy_of(src: &Path, bucket: &str) -> Result<LocalStorage> {
        let storage = LocalStorage::new(bucket)?;
        copy_dir_all(src, &storage.bucket_dir()).with_context(|| format!("copy {}", src.display()))?;
        Ok(storage)
    }

    /// `<base_path>/<bucket>`
    pub fn bucket_dir(&self) -> PathBuf {
        self.base_path.join(&self.bucket)
    }

    /// The `[storage]` section of a `medusa.ini` for this bucket (ends with a newline).
    pub fn medusa_ini_storage(&self, prefix: Option<&str>) -> String {
        let mut s = format!(
            "[storage]\nstorage_provider = local\nbase_path = {}\nbucket_name = {}\n",
            self.base_path.display(),
            self.bucket
        );
        push_prefix(&mut s, prefix);
        s
    }
}

fn push_prefix(ini: &mut String, prefix: Option<&str>) {
    if let Some(p) = prefix {
        ini.push_str(&format!("prefix = {p}\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Request signing and small protocol helpers
// ---------------------------------------------------------------------------------------------

/// The headers that sign an S3 request to `url` (its path and query already encoded) with
/// SigV4, by aws-sigv4: `x-amz-date`, `x-amz-content-sha256` and `authorization`, over the
/// headers `host;x-amz-content-sha256;x-amz-date` and the SHA-256 of `body`.
fn sigv4_headers(
    method: &Method,
    url: &str,
    body: &[u8],
    (access_key, secret_key): (&str, &str),
    region: &str,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>> {
    let identity = Credentials::new(access_key, secret_key, None, None, "medusa-harness").into();
    // S3's flavour: the path is signed as sent (no double encoding, no normalisation) and the
    // payload hash travels in x-amz-content-sha256.
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(time)
        .settings(settings)
        .build()?
        .into();
    let request = SignableRequest::new(method.as_str(), url, std::iter::empty(), SignableBody::Bytes(body))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(request, &params)?.into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers.into_iter().map(|h| (h.name(), h.value().to_string())).collect())
}

/// The headers of an Azure Blob request signed with SharedKey (the string to sign is assembled
/// here, its HMAC-SHA256, base64 and HTTP date come from crates): `authorization`, the
/// `x-ms-*` headers of `headers` plus `x-ms-date` and `x-ms-version`, and `content-type` when
/// `headers` has one. `encoded_path` is relative to the path-style account endpoint
/// (`/container/blob`); `query` is unencoded. Other `headers` are dropped.
fn shared_key_headers(
    (account, key): (&str, &str),
    method: &Method,
    encoded_path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body_len: usize,
    time: SystemTime,
) -> Result<Vec<(String, String)>> {
    let mut ms_headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    ms_headers.push(("x-ms-date".into(), httpdate::fmt_http_date(time)));
    ms_headers.push(("x-ms-version".into(), AZURE_API_VERSION.into()));
    ms_headers.sort();
    let content_type = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map_or("", |(_, v)| *v);
    let content_length = if body_len == 0 { String::new() } else { body_len.to_string() };
    // Path-style (emulator) accounts name the account twice.
    let mut resource = format!("/{account}/{account}{encoded_path}");
    let mut sorted_query: Vec<(String, &str)> = query.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect();
    sorted_query.sort();
    for (k, v) in &sorted_query {
        resource.push_str(&format!("\n{k}:{v}"));
    }
    // VERB, Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since,
    // If-Match, If-None-Match, If-Unmodified-Since, Range, then headers and resource.
    let mut string_to_sign = format!("{method}\n\n\n{content_length}\n\n{content_type}\n\n\n\n\n\n\n");
    for (k, v) in &ms_headers {
        string_to_sign.push_str(&format!("{k}:{v}\n"));
    }
    string_to_sign.push_str(&resource);
    let key = BASE64.decode(key).context("azure key is not base64")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());

    let mut signed = vec![("authorization".to_string(), format!("SharedKey {account}:{signature}"))];
    signed.extend(ms_headers);
    if !content_type.is_empty() {
        signed.push(("content-type".into(), content_type.into()));
    }
    Ok(signed)
}

/// The body of a 2xx response, or an error with the status and body.
async fn check(resp: Response, what: &str) -> Result<Vec<u8>> {
    let status = resp.status();
    let body = resp.bytes().await?.to_vec();
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// Every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`) gets encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// As [`NOT_UNRESERVED`], but `/` stays: for paths.
const NOT_UNRESERVED_OR_SLASH: &AsciiSet = &NOT_UNRESERVED.remove(b'/');

/// Percent-encodes all but RFC 3986 unreserved characters (and `/` when `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let set = if keep_slash { NOT_UNRESERVED_OR_SLASH } else { NOT_UNRESERVED };
    utf8_percent_encode(s, set).to_string()
}

fn encode_path(path: &str) -> String {
    uri_encode(path, true)
}

/// `k=v&...`, encoded and sorted, as SigV4 wants it (and fine as a URL query).
fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// `base` (scheme, authority, encoded path) with the encoded `query`, if any.
fn url_with_query(base: &str, query: &[(&str, &str)]) -> String {
    match canonical_query(query) {
        q if q.is_empty() => base.to_string(),
        q => format!("{base}?{q}"),
    }
}

/// The text of every `<tag>..</tag>` element, XML entities decoded. Enough for S3/Azure listings.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21T19:48:39Z
    fn fixed_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_290_519)
    }

    fn header<'a, K: AsRef<str>>(headers: &'a [(K, String)], name: &str) -> &'a str {
        headers.iter().find(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    // The expected signatures below were computed independently with Python's hmac/hashlib from
    // the SigV4 and SharedKey specifications.

    #[test]
    fn signs_s3_requests_with_sigv4() {
        let keys = ("AKIDEXAMPLE", "secret/key+1");
        let scope = "Credential=AKIDEXAMPLE/20261121/us-east-1/s3/aws4_request, \
                     SignedHeaders=host;x-amz-content-sha256;x-amz-date";

        let query = [("list-type", "2"), ("prefix", "dir/a b+c"), ("continuation-token", "x=/y")];
        let url = url_with_query(&format!("http://127.0.0.1:9000{}", encode_path("/bkt")), &query);
        let h = sigv4_headers(&Method::GET, &url, b"", keys, "us-east-1", fixed_time()).unwrap();
        assert_eq!(header(&h, "x-amz-date"), "20261121T194839Z");
        assert_eq!(
            header(&h, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            header(&h, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 {scope}, \
                 Signature=20dc07aa31e9b80636397a33dbf711c705eb5463fdd1965fcc9eb299c61291b1"
            )
        );

        let url = format!("http://127.0.0.1:9000{}", encode_path("/bkt/dir/a b+c~d.db"));
        let h = sigv4_headers(&Method::PUT, &url, b"hello", keys, "us-east-1", fixed_time()).unwrap();
        assert_eq!(
            header(&h, "x-amz-content-sha256"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(
            header(&h, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 {scope}, \
                 Signature=af92882c17678141e1ae39856cfc84ee5aa27eb5b17284e2eab91bbceb97d26f"
            )
        );
    }

    #[test]
    fn signs_azure_requests_with_shared_key() {
        let creds = (AZURITE_ACCOUNT, AZURITE_KEY);
        let headers = [("x-ms-blob-type", "BlockBlob"), ("Content-Type", "text/plain"), ("accept", "*/*")];
        let path = encode_path("/cont/dir/a b.txt");
        let h = shared_key_headers(creds, &Method::PUT, &path, &[], &headers, 5, fixed_time()).unwrap();
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["authorization", "x-ms-blob-type", "x-ms-date", "x-ms-version", "content-type"]);
        assert_eq!(header(&h, "x-ms-date"), "Sat, 21 Nov 2026 19:48:39 GMT");
        assert_eq!(
            header(&h, "authorization"),
            "SharedKey devstoreaccount1:8GsC/xdwWI0AOp5vc44sVf/LyziL04AmFKo7tK/kiEQ="
        );

        let query = [("restype", "container"), ("comp", "list"), ("prefix", "p/q r")];
        let h = shared_key_headers(creds, &Method::GET, "/cont", &query, &[], 0, fixed_time()).unwrap();
        assert_eq!(
            header(&h, "authorization"),
            "SharedKey devstoreaccount1:6gCxWgkyJjIcgg1vYCi49RTnB0qimPKMpMNyUTJQPD0="
        );

        let bad_key = shared_key_headers((AZURITE_ACCOUNT, "a*b"), &Method::GET, "/c", &[], &[], 0, fixed_time());
        assert!(bad_key.unwrap_err().to_string().contains("not base64"));
    }

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        let empty = TempDir::new("no-tools").unwrap();
        let err = require_tool_in(empty.path(), "venv/bin/moto_server").unwrap_err().to_string();
        assert!(err.contains("scripts/install-test-deps.sh"), "{err}");
        assert!(err.contains("venv/bin/moto_server"), "{err}");
    }

    #[test]
    fn encodes_for_sigv4() {
        assert_eq!(encode_path("/b/a b/c+d~e"), "/b/a%20b/c%2Bd~e");
        assert_eq!(encode_path("/b/é"), "/b/%C3%A9");
        assert_eq!(canonical_query(&[("prefix", "x/y"), ("list-type", "2")]), "list-type=2&prefix=x%2Fy");
        assert_eq!(url_with_query("http://h/b", &[]), "http://h/b");
        assert_eq!(url_with_query("http://h/b", &[("a", "=")]), "http://h/b?a=%3D");
    }

    #[test]
    fn reads_xml_values() {
        let xml = "<R><Key>a&amp;b</Key><Key>c</Key><IsTruncated>false</IsTruncated></R>";
        assert_eq!(xml_values(xml, "Key"), ["a&b", "c"]);
        assert!(xml_values(xml, "Name").is_empty());
    }
}
