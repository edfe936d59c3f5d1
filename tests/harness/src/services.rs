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
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, Response};
use sha2::{Digest, Sha256};

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

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

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
        let server = InProcessServer::start(&data_dir, "test", "test")?;
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
        let (access_key, secret_key) = ("test".to_string(), "test".to_string());
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
        let now = SystemTime::now();
        let amz_date = UtcTime::from(now).amz();
        let date = &amz_date[..8];
        let host = format!("127.0.0.1:{}", self.port);
        let canonical_uri = encode_path(path);
        let canonical_query = canonical_query(query);
        let payload_hash = hex::encode(Sha256::digest(&body));
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical_request = format!(
            "{method}\n{canonical_uri}\n{canonical_query}\nhost:{host}\nx-amz-content-sha256:{payload_hash}\n\
             x-amz-date:{amz_date}\n\n{signed_headers}\n{payload_hash}"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let string_to_sign =
            format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request)));
        let mut key = hmac_sha256(format!("AWS4{}", self.secret_key).as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );
        let mut url = format!("{}{canonical_uri}", self.endpoint);
        if !canonical_query.is_empty() {
            url = format!("{url}?{canonical_query}");
        }
        let resp = self
            .client
            .request(method, url)
            .header("x-amz-date", amz_date)
            .header("x-amz-content-sha256", payload_hash)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await?;
        Ok(resp)
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
        let date = UtcTime::from(SystemTime::now()).rfc1123();
        let mut ms_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .filter(|(k, _)| k.starts_with("x-ms-"))
            .collect();
        ms_headers.push(("x-ms-date".into(), date));
        ms_headers.push(("x-ms-version".into(), AZURE_API_VERSION.into()));
        ms_headers.sort();
        let content_type = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map_or("", |(_, v)| *v);
        let content_length = if body.is_empty() { String::new() } else { body.len().to_string() };
        let encoded_path = encode_path(path);
        let mut resource = format!("/{0}/{0}{encoded_path}", self.account);
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
        let key = base64_decode(&self.key).context("azure key is not base64")?;
        let signature = base64_encode(&hmac_sha256(&key, string_to_sign.as_bytes()));

        let mut url = format!("{}{encoded_path}", self.endpoint);
        let query = canonical_query(query);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut req = self
            .client
            .request(method, url)
            .header("authorization", format!("SharedKey {}:{signature}", self.account))
            .header("content-length", body.len().to_string());
        for (k, v) in &ms_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
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
// Small protocol helpers (kept here so the harness needs no hmac/base64/date crates)
// ---------------------------------------------------------------------------------------------

/// The body of a 2xx response, or an error with the status and body.
async fn check(resp: Response, what: &str) -> Result<Vec<u8>> {
    let status = resp.status();
    let body = resp.bytes().await?.to_vec();
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// Percent-encodes all but RFC 3986 unreserved characters (and `/` when `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

/// HMAC-SHA256 (RFC 2104) over sha2.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c).ok_or_else(|| anyhow!("invalid base64 byte {c:#x}"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// A UTC time broken down, for `x-amz-date` and `x-ms-date`.
struct UtcTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    weekday: usize, // 0 = Sunday
}

impl From<SystemTime> for UtcTime {
    fn from(t: SystemTime) -> UtcTime {
        let secs = t.duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            weekday: (days + 4).rem_euclid(7) as usize,
        }
    }
}

impl UtcTime {
    /// `20261121T203933Z`
    fn amz(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `Sat, 21 Nov 2026 20:39:33 GMT`
    fn rfc1123(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[self.weekday],
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn hmac_hashes_long_keys() {
        // RFC 4231 test case 6: a 131-byte key.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        let empty = TempDir::new("no-tools").unwrap();
        let err = require_tool_in(empty.path(), "venv/bin/moto_server").unwrap_err().to_string();
        assert!(err.contains("scripts/install-test-deps.sh"), "{err}");
        assert!(err.contains("venv/bin/moto_server"), "{err}");
    }

    #[test]
    fn base64_round_trips() {
        for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        assert_eq!(base64_decode(AZURITE_KEY).unwrap().len(), 64);
        assert!(base64_decode("a*b").is_err());
    }

    #[test]
    fn formats_utc_times() {
        let t = UtcTime::from(UNIX_EPOCH + Duration::from_secs(1_795_290_519));
        assert_eq!(t.amz(), "20261121T194839Z");
        assert_eq!(t.rfc1123(), "Sat, 21 Nov 2026 19:48:39 GMT");
        let leap = UtcTime::from(UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(leap.rfc1123(), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn encodes_for_sigv4() {
        assert_eq!(encode_path("/b/a b/c+d~e"), "/b/a%20b/c%2Bd~e");
        assert_eq!(canonical_query(&[("prefix", "x/y"), ("list-type", "2")]), "list-type=2&prefix=x%2Fy");
    }

    #[test]
    fn reads_xml_values() {
        let xml = "<R><Key>a&amp;b</Key><Key>c</Key><IsTruncated>false</IsTruncated></R>";
        assert_eq!(xml_values(xml, "Key"), ["a&b", "c"]);
        assert!(xml_values(xml, "Name").is_empty());
    }
}
