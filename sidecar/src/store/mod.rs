//! The storage contract: one `Arc<dyn ObjectStore>` built once from `[storage]`, plus the few
//! whole-object helpers the bucket layout needs. Backend choice happens here and nowhere else.

pub mod local;
pub mod s3stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    PutPayload, RetryConfig,
};

use crate::config::{Provider, StorageConfig};
use crate::format::layout::Layout;

/// A storage failure, classified for the retry policy and for gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The store could not be reached or failed after retries: waiting may help.
    #[error("storage unavailable during {op} of {key}: {source}")]
    Unavailable {
        /// What was attempted.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The underlying error.
        source: object_store::Error,
    },
    /// The store refused the request (credentials, permissions, bad configuration): a retry
    /// will not help until the configuration changes.
    #[error("storage refused {op} of {key}: {source}")]
    Refused {
        /// What was attempted.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The underlying error.
        source: object_store::Error,
    },
    /// The configuration cannot produce a store.
    #[error("storage configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// Wraps an `object_store` error for operation `op` on `key`.
    pub fn from_store(op: &'static str, key: &str, source: object_store::Error) -> StorageError {
        if !matches!(source, object_store::Error::NotFound { .. }) {
            count_error(op);
        }
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound { key: key.to_string() },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::UnknownConfigurationKey { .. } => {
                StorageError::Refused { op, key: key.to_string(), source }
            }
            source => StorageError::Unavailable { op, key: key.to_string(), source },
        }
    }

    /// Wraps a filesystem error of the `local` provider's bucket directory.
    pub fn local_io(op: &'static str, key: &str, file: &std::path::Path, source: std::io::Error) -> StorageError {
        let path = file.display().to_string();
        let source = match source.kind() {
            std::io::ErrorKind::NotFound => object_store::Error::NotFound { path, source: Box::new(source) },
            std::io::ErrorKind::PermissionDenied => {
                object_store::Error::PermissionDenied { path, source: Box::new(source) }
            }
            _ => object_store::Error::Generic { store: "LocalFileSystem", source: format!("{path}: {source}").into() },
        };
        StorageError::from_store(op, key, source)
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }
}

/// Storage requests that failed after the store's own retries, by operation, since the process
/// started: kept here, where errors are classified, and read by the metrics.
static ERRORS: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn count_error(op: &'static str) {
    *ERRORS.lock().expect("storage error counts").entry(op).or_default() += 1;
}

/// Failed storage requests by operation (see [`StorageError::from_store`]).
pub fn error_counts() -> Vec<(&'static str, u64)> {
    ERRORS.lock().expect("storage error counts").iter().map(|(k, v)| (*k, *v)).collect()
}

/// The bucket: the object store, the key layout and the provider's conventions.
#[derive(Clone)]
pub struct Storage {
    /// The backend.
    pub store: Arc<dyn ObjectStore>,
    /// Key naming for this prefix.
    pub layout: Layout,
    /// Which backend (decides the hash format recorded in manifests).
    pub provider: Provider,
    /// Server-side encryption is on: S3 ETags are then not MD5s.
    pub encrypted: bool,
    /// Storage class / tier for uploads.
    pub storage_class: Option<String>,
    /// The `local` provider's bucket directory: the fast path of [`Storage::local_fast_path`].
    local: Option<LocalBucket>,
    /// medusa-rs' own retries of whole operations, on top of the store's.
    pub retries: Retries,
    /// S3: uploads streamed from the file (see [`s3stream`]).
    stream: Option<Arc<s3stream::S3Stream>>,
}

/// medusa-rs' retries of a whole storage operation, for what the store's client does not retry:
/// a response body cut midway (a LIST page, a GET), a request that is not idempotent for the
/// store (CreateMultipartUpload), an answer lost after the server acted. They share the
/// configured budget: `max` more attempts (`[storage] max_retries`), none started once `budget`
/// (`retry_timeout`) has passed since the first, so an outage is reported within the budget
/// instead of after nested retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Attempts after the first.
    pub max: usize,
    /// No attempt starts later than this after the first.
    pub budget: Duration,
}

impl Retries {
    /// No retries of our own (the store's still apply).
    pub const NONE: Retries = Retries { max: 0, budget: Duration::ZERO };

    /// From `[storage] max_retries` and `retry_timeout`.
    pub fn from_config(cfg: &StorageConfig) -> Retries {
        Retries { max: cfg.max_retries, budget: Duration::from_secs(cfg.retry_timeout_seconds) }
    }

    /// Whether attempt number `attempt` (1 = the first retry) may start, `started` being the
    /// first attempt's start.
    pub fn allows(&self, attempt: usize, started: std::time::Instant) -> bool {
        attempt <= self.max && started.elapsed() < self.budget
    }

    /// The pause before retry `attempt`: 200 ms doubling, at most 5 s.
    pub fn backoff(attempt: usize) -> Duration {
        Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5).saturating_sub(1))).min(Duration::from_secs(5))
    }

    /// Runs `f` until it succeeds, fails for good, or the budget is spent.
    pub async fn run<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_retryable() && self.allows(attempt + 1, started) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "retrying {what}");
                    tokio::time::sleep(Retries::backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// The bucket directory of the `local` provider, where data files are copied by the kernel
/// instead of streamed through the store (see [`local`]).
#[derive(Debug, Clone)]
pub struct LocalBucket {
    root: PathBuf,
    fs: Arc<LocalFileSystem>,
}

impl LocalBucket {
    /// The file that holds the object `key` (what the store itself would read or write).
    pub fn file(&self, key: &str) -> Result<PathBuf, StorageError> {
        self.fs
            .path_to_filesystem(&object_path(key)?)
            .map_err(|e| StorageError::Config(format!("invalid object key {key:?}: {e}")))
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("store", &self.store.to_string()).field("layout", &self.layout).finish()
    }
}

/// Parses an AWS shared-credentials file: (access key, secret, session token) of `profile`.
pub fn read_aws_credentials(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let ini = crate::config::ini::Ini::parse(text).ok()?;
    let get = |k: &str| ini.get(profile, k).map(str::to_string).filter(|v| !v.is_empty());
    Some((get("aws_access_key_id")?, get("aws_secret_access_key")?, get("aws_session_token")))
}

fn retry(cfg: &StorageConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: cfg.max_retries,
        retry_timeout: Duration::from_secs(cfg.retry_timeout_seconds),
    }
}

fn client_options(cfg: &StorageConfig, endpoint: Option<&str>) -> ClientOptions {
    let mut o = ClientOptions::new();
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        o = o.with_allow_http(true);
    }
    if !cfg.ssl_verify && endpoint.is_some() {
        o = o.with_allow_invalid_certificates(true);
    }
    o.with_read_timeout(read_timeout(cfg))
        // No limit on a whole request: the HTTP client's default (30 s from connecting until the
        // body is read) failed every GET of an SSTable that takes longer to stream, however
        // healthy the connection. Stalls are caught by the read timeout.
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(10).min(read_timeout(cfg)))
}

/// How long a request may wait for the next bytes of an answer (the first included): `[storage]
/// read_timeout` (botocore's socket read timeout, which Medusa passes on), or else what fits
/// `max_retries + 1` attempts into `retry_timeout`, between 5 and 30 s. A store that accepts
/// connections and never answers is then reported within the retry budget, not after the
/// HTTP client's 30 s default per attempt.
pub fn read_timeout(cfg: &StorageConfig) -> Duration {
    match cfg.read_timeout {
        Some(t) => Duration::from_secs(t.max(1)),
        None => {
            let per_attempt = cfg.retry_timeout_seconds / (cfg.max_retries as u64 + 1);
            Duration::from_secs(per_attempt.clamp(5, 30))
        }
    }
}

fn s3_endpoint(cfg: &StorageConfig) -> Option<String> {
    if let Some(e) = &cfg.endpoint {
        return Some(e.clone());
    }
    let host = cfg.host.as_ref()?;
    let scheme = if cfg.secure { "https" } else { "http" };
    Some(match cfg.port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

fn read_key_file(path: &Path) -> Result<String, StorageError> {
    std::fs::read_to_string(path)
        .map_err(|e| StorageError::Config(format!("cannot read [storage] key_file {}: {e}", path.display())))
}

impl Storage {
    /// Builds the store for `cfg`. No request is sent.
    pub fn from_config(cfg: &StorageConfig) -> Result<Storage, StorageError> {
        let (mut local, mut stream) = (None, None);
        let store: Arc<dyn ObjectStore> = match &cfg.provider {
            Provider::Local => {
                let bucket = local_bucket(cfg)?;
                let store = bucket.fs.clone();
                local = Some(bucket);
                store
            }
            p if p.is_s3() => {
                let (s3, region) = s3_store(cfg, p)?;
                let s3 = Arc::new(s3);
                let attributes = storage_class_attributes(cfg.storage_class.as_deref());
                stream = s3stream::S3Stream::for_config(s3.clone(), cfg, &region, attributes)?.map(Arc::new);
                s3
            }
            Provider::AzureBlobs => Arc::new(azure_store(cfg)?),
            Provider::GoogleStorage => Arc::new(gcs_store(cfg)?),
            _ => unreachable!("every provider is handled above"),
        };
        Ok(Storage {
            store,
            layout: Layout::new(cfg.prefix.as_deref()),
            provider: cfg.provider.clone(),
            encrypted: cfg.kms_id.is_some() || cfg.sse_c_key.is_some(),
            storage_class: cfg.storage_class.clone(),
            local,
            retries: Retries::from_config(cfg),
            stream,
        })
    }

    /// A bucket over any object store, without the `local` fast path, server-side encryption,
    /// storage class or retries of our own: for wrappers around a store (tests inject faults or
    /// a simulated clock, and see each one).
    pub fn over(store: Arc<dyn ObjectStore>, layout: Layout, provider: Provider) -> Storage {
        Storage {
            store,
            layout,
            provider,
            encrypted: false,
            storage_class: None,
            local: None,
            retries: Retries::NONE,
            stream: None,
        }
    }

    /// S3's streamed uploads, when this store has them.
    pub fn streamed_uploads(&self) -> Option<&Arc<s3stream::S3Stream>> {
        self.stream.as_ref()
    }

    /// The `local` provider's bucket directory, where transfers copy files directly; `None`
    /// for object stores.
    pub fn local_fast_path(&self) -> Option<&LocalBucket> {
        self.local.as_ref()
    }

    /// Whether uploads answer with S3 ETags that are checksums of the content (MD5, or the
    /// multipart form for multipart uploads) and that manifests record: S3 without server-side
    /// encryption. Transfers then check each upload's ETag and compute the multipart form.
    pub fn checksum_etags(&self) -> bool {
        self.provider.is_s3() && !self.encrypted
    }

    /// Whether large uploads are multipart uploads whose ETag manifests record as such (S3):
    /// their part size is then `multipart_chunksize` and files from
    /// `multi_part_upload_threshold` on go multipart.
    pub fn multipart_etags(&self) -> bool {
        self.provider.is_s3()
    }

    /// For `local`: flushes everything written to the bucket's filesystem to disk (one `syncfs`
    /// instead of an fsync per object). Object stores are durable on their own.
    pub async fn sync_local(&self) -> Result<(), StorageError> {
        let Some(root) = self.local.as_ref().map(|l| l.root.clone()) else { return Ok(()) };
        let r = crate::fsutil::blocking(move || crate::fsutil::syncfs(&root)).await;
        r.map_err(|e| StorageError::Config(format!("flushing the local bucket to disk: {e}")))
    }

    /// Options for every upload (storage class).
    pub fn put_options(&self) -> PutOptions {
        PutOptions { attributes: storage_class_attributes(self.storage_class.as_deref()), ..Default::default() }
    }

    /// Writes a small object in one request (retried as a whole: a PUT of the same bytes is
    /// idempotent).
    pub async fn put_bytes(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StorageError> {
        let path = object_path(key)?;
        let bytes = bytes.into();
        self.retries
            .run("put", || async {
                let payload = PutPayload::from_bytes(bytes.clone());
                self.store
                    .put_opts(&path, payload, self.put_options())
                    .await
                    .map_err(|e| StorageError::from_store("put", key, e))
            })
            .await?;
        Ok(())
    }

    /// Reads a whole (small) object; a body cut midway is read again.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = object_path(key)?;
        self.retries
            .run("get", || async {
                let r = self.store.get(&path).await.map_err(|e| StorageError::from_store("get", key, e))?;
                r.bytes().await.map_err(|e| StorageError::from_store("get", key, e))
            })
            .await
    }

    /// Reads a whole object if it exists.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        match self.get_bytes(key).await {
            Ok(b) => Ok(Some(b)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Metadata of an object, `None` when it does not exist. Any other error is an error
    /// (Medusa's `_stat_blob` turned 403/5xx into "absent", contract §10.18).
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = object_path(key)?;
        self.retries
            .run("head", || async {
                match self.store.head(&path).await {
                    Ok(m) => Ok(Some(m)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StorageError::from_store("head", key, e)),
                }
            })
            .await
    }

    /// Lists every object below `prefix` (which should end with `/`), page by page. A page that
    /// fails (a body cut midway, an outage) is asked for again, resuming after the last key
    /// seen, within the retry budget; `local` listings are not in key order and are not resumed.
    pub fn list(&self, prefix: &str) -> impl futures::Stream<Item = Result<ObjectMeta, StorageError>> + Send + 'static {
        let owned = prefix.to_string();
        let trimmed = prefix.trim_end_matches('/');
        let at = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        let retries = if self.local.is_some() { Retries::NONE } else { self.retries };
        let state = Listing {
            store: self.store.clone(),
            inner: self.store.list(at.as_ref()),
            at,
            prefix: owned,
            last: None,
            retries,
            started: std::time::Instant::now(),
            attempt: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                match s.inner.next().await {
                    None => return None,
                    Some(Ok(meta)) => {
                        s.last = Some(meta.location.clone());
                        return Some((Ok(meta), s));
                    }
                    Some(Err(e)) => {
                        let e = StorageError::from_store("list", &s.prefix, e);
                        if e.is_retryable() && s.retries.allows(s.attempt + 1, s.started) {
                            s.attempt += 1;
                            tracing::debug!(error = %e, attempt = s.attempt, "retrying a listing page");
                            tokio::time::sleep(Retries::backoff(s.attempt)).await;
                            s.inner = match &s.last {
                                Some(last) => s.store.list_with_offset(s.at.as_ref(), last),
                                None => s.store.list(s.at.as_ref()),
                            };
                            continue;
                        }
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }

    /// The sizes of many objects (`None` for an absent one), in the order of `keys`: for
    /// `local` one trip to the blocking pool (a `stat` each), else HEADs, 16 at once.
    pub async fn sizes(&self, keys: Vec<String>) -> Result<Vec<Option<u64>>, StorageError> {
        if let Some(local) = &self.local {
            let local = local.clone();
            return crate::fsutil::blocking(move || {
                let mut out = Vec::with_capacity(keys.len());
                for key in &keys {
                    let file = local.file(key).map_err(std::io::Error::other)?;
                    match std::fs::metadata(&file) {
                        Ok(m) if m.is_file() => out.push(Some(m.len())),
                        Ok(_) => out.push(None),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(None),
                        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| StorageError::local_io("head", "many objects", &self.local.as_ref().expect("local").root, e));
        }
        futures::stream::iter(keys)
            .map(|key| async move { Ok(self.head(&key).await?.map(|m| m.size)) })
            .buffered(16)
            .try_collect()
            .await
    }

    /// The names of the folders directly below `prefix` (which should end with `/`): one
    /// listing with a delimiter, asked for again within the retry budget. A missing prefix has
    /// none.
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let at = ObjectPath::from(prefix.trim_end_matches('/'));
        self.retries
            .run("list", || async {
                match self.store.list_with_delimiter(Some(&at)).await {
                    Ok(r) => Ok(r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect()),
                    Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(StorageError::from_store("list", prefix, e)),
                }
            })
            .await
    }

    /// Folds the key of every object below `prefix` (which should end with `/`), in no order,
    /// into `init` with `f`. For `local` the bucket directory is walked on the blocking pool
    /// without a `stat` per file: object_store's listing takes two per file for sizes and times
    /// that a caller of this does not need (three quarters of a warm GetBackups over 72,000
    /// index entries); and keys are folded as they are found, not collected (a list of every
    /// key, allocated on a blocking thread, left 40 MiB of fragmented heap behind). The same
    /// files are listed: symlinks followed, broken ones and staging names (`name#<digits>`)
    /// left out; names that are no valid key are skipped instead of failing the listing.
    pub async fn fold_keys<T, F>(&self, prefix: &str, init: T, mut f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnMut(&mut T, &str) + Send + 'static,
    {
        let Some(local) = &self.local else {
            let mut acc = init;
            let mut listing = std::pin::pin!(self.list(prefix));
            while let Some(meta) = listing.try_next().await? {
                f(&mut acc, meta.location.as_ref());
            }
            return Ok(acc);
        };
        let root = local.root.clone();
        let (key_prefix, dir) = (prefix.to_string(), root.join(prefix.trim_end_matches('/')));
        let walked = crate::fsutil::blocking(move || {
            let mut acc = init;
            let mut key = String::new();
            for entry in walkdir::WalkDir::new(&dir).follow_links(true) {
                let entry = match entry {
                    Ok(e) => e,
                    // A missing prefix, a broken symlink, a file removed meanwhile: not listed.
                    Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => continue,
                    Err(e) => return Err(std::io::Error::other(e)),
                };
                if entry.file_type().is_dir() {
                    continue;
                }
                let Ok(rel) = entry.path().strip_prefix(&root) else { continue };
                key.clear();
                for (i, part) in rel.components().enumerate() {
                    let Some(part) = part.as_os_str().to_str() else {
                        key.clear();
                        break;
                    };
                    if i > 0 {
                        key.push('/');
                    }
                    key.push_str(part);
                }
                let name = key.rsplit('/').next().unwrap_or_default();
                let staged = name
                    .split_once('#')
                    .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()));
                if !key.is_empty() && !staged && ObjectPath::parse(&key).is_ok() {
                    f(&mut acc, &key);
                }
            }
            Ok(acc)
        })
        .await;
        walked.map_err(|e| StorageError::local_io("list", &key_prefix, &local.root, e))
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = object_path(key)?;
        self.retries
            .run("delete", || async {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(StorageError::from_store("delete", key, e)),
                }
            })
            .await
    }

    /// The hash to record in a manifest for content `d` whose upload returned `etag`.
    pub fn manifest_hash(&self, d: &crate::format::digest::ContentDigest, etag: Option<&str>) -> String {
        match &self.provider {
            p if p.is_s3() => etag.map(|e| e.trim_matches('"').to_string()).unwrap_or_else(|| d.md5_hex()),
            Provider::Local => d.md5_hex(),
            _ => d.md5_base64(),
        }
    }

    /// The hash a listing tells about an object, when the provider's listing carries one that
    /// can be compared with a local digest (S3 ETags without server-side encryption).
    pub fn listing_hash(&self, meta: &ObjectMeta) -> Option<String> {
        if self.checksum_etags() { meta.e_tag.as_ref().map(|e| e.trim_matches('"').to_string()) } else { None }
    }
}

fn storage_class_attributes(class: Option<&str>) -> Attributes {
    let mut attrs = Attributes::new();
    if let Some(c) = class {
        attrs.insert(Attribute::StorageClass, c.to_string().into());
    }
    attrs
}

/// The `local` bucket directory, which must exist: nothing here creates directories, so a
/// mistyped `base_path` or `bucket_name` is an error that names it, not a new empty bucket that
/// lists no backups. Only the sidecar makes the bucket, at its start ([`create_local_bucket`]).
fn local_bucket(cfg: &StorageConfig) -> Result<LocalBucket, StorageError> {
    let base = existing_base_path(cfg)?;
    let root = base.join(&cfg.bucket_name);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StorageError::Config(format!(
                "[storage] bucket_name = {}: {} is not a directory; check bucket_name and base_path",
                cfg.bucket_name,
                root.display()
            )));
        }
        Err(e) => {
            return Err(StorageError::Config(format!(
                "[storage] bucket_name = {}: no bucket directory {} ({e}); check bucket_name and base_path \
                 (the sidecar creates the bucket directory when it starts)",
                cfg.bucket_name,
                root.display()
            )));
        }
    }
    let fs = LocalFileSystem::new_with_prefix(&root).map_err(config_error)?;
    Ok(LocalBucket { root, fs: Arc::new(fs) })
}

/// `[storage] base_path`, which must be an existing directory.
fn existing_base_path(cfg: &StorageConfig) -> Result<&Path, StorageError> {
    let base = cfg
        .base_path
        .as_deref()
        .ok_or_else(|| StorageError::Config("[storage] base_path is required when storage_provider = local".into()))?;
    match std::fs::metadata(base) {
        Ok(m) if m.is_dir() => Ok(base),
        Ok(_) => Err(StorageError::Config(format!(
            "[storage] base_path = {}: not a directory; set base_path to the directory that holds the bucket \
             directory {}",
            base.display(),
            cfg.bucket_name
        ))),
        Err(e) => Err(StorageError::Config(format!(
            "[storage] base_path = {}: {e}; create it (e.g. mount the backup volume there) or correct base_path",
            base.display()
        ))),
    }
}

/// Creates the `local` bucket directory `<base_path>/<bucket_name>` if it is not there yet, for
/// the sidecar, whose first backup needs it (other providers: nothing to do).
///
/// Only that one directory, and only inside a `base_path` that exists: `base_path` is where
/// the operator mounted the backup volume, so a missing one is a typo or a missing mount, and
/// creating it would fill the container's own file system with backups that vanish with the
/// pod. The sidecar refuses to start instead, which shows in the pod's status; every other
/// command, which only reads, refuses a missing bucket directory too ([`Storage::from_config`]).
pub fn create_local_bucket(cfg: &StorageConfig) -> Result<(), StorageError> {
    if cfg.provider != Provider::Local {
        return Ok(());
    }
    let root = existing_base_path(cfg)?.join(&cfg.bucket_name);
    match std::fs::create_dir(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StorageError::Config(format!("cannot create the bucket directory {}: {e}", root.display()))),
    }
}

fn config_error(e: object_store::Error) -> StorageError {
    StorageError::Config(e.to_string())
}

/// The S3 store and its region.
fn s3_store(cfg: &StorageConfig, provider: &Provider) -> Result<(object_store::aws::AmazonS3, String), StorageError> {
    let endpoint = s3_endpoint(cfg);
    let mut b = match &cfg.key_file {
        // Explicit credentials: do not let the environment add or override anything.
        Some(path) => {
            let profile = cfg.api_profile.as_deref().unwrap_or("default");
            let (id, secret, token) = read_aws_credentials(&read_key_file(path)?, profile).ok_or_else(|| {
                StorageError::Config(format!(
                    "[storage] key_file {} has no aws_access_key_id/aws_secret_access_key in profile [{profile}]",
                    path.display()
                ))
            })?;
            let b = AmazonS3Builder::new().with_access_key_id(id).with_secret_access_key(secret);
            match token {
                Some(t) => b.with_token(t),
                None => b,
            }
        }
        // The SDK default chain: env vars, web identity (IRSA), instance metadata.
        None => AmazonS3Builder::from_env(),
    };
    let region = match (&cfg.region, provider) {
        (r, _) if r != "default" => r.clone(),
        (_, Provider::S3 { region_hint: Some(h) }) => h.clone(),
        _ => "us-east-1".to_string(),
    };
    b = b
        .with_bucket_name(&cfg.bucket_name)
        .with_region(region.clone())
        .with_virtual_hosted_style_request(cfg.s3_addressing_style == "virtual")
        .with_retry(retry(cfg))
        .with_client_options(client_options(cfg, endpoint.as_deref()));
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    if let Some(k) = &cfg.kms_id {
        b = b.with_sse_kms_encryption(k);
    }
    if let Some(k) = &cfg.sse_c_key {
        b = b.with_ssec_encryption(k);
    }
    Ok((b.build().map_err(config_error)?, region))
}

fn azure_store(cfg: &StorageConfig) -> Result<object_store::azure::MicrosoftAzure, StorageError> {
    let mut b = match &cfg.key_file {
        Some(path) => {
            let v: serde_json::Value = serde_json::from_str(&read_key_file(path)?)
                .map_err(|e| StorageError::Config(format!("[storage] key_file {} is not JSON: {e}", path.display())))?;
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let account = field("storage_account").ok_or_else(|| {
                StorageError::Config(format!("[storage] key_file {} lacks \"storage_account\"", path.display()))
            })?;
            let b = MicrosoftAzureBuilder::new().with_account(account);
            match field("key") {
                Some(k) => b.with_access_key(k),
                None => b,
            }
        }
        // DefaultAzureCredential-like: env, workload identity federated token, MSI.
        None => {
            let account = std::env::var("AZURE_STORAGE_ACCOUNT")
                .map_err(|_| StorageError::Config("azure_blobs without key_file needs AZURE_STORAGE_ACCOUNT".into()))?;
            MicrosoftAzureBuilder::from_env().with_account(account)
        }
    };
    let endpoint = cfg.endpoint.clone().or_else(|| {
        // Medusa: https://<account>.blob.core.<host>[:port]/
        cfg.host.as_ref().map(|h| {
            let acct = b.get_config_value(&object_store::azure::AzureConfigKey::AccountName).unwrap_or_default();
            match cfg.port {
                Some(p) => format!("https://{acct}.blob.core.{h}:{p}"),
                None => format!("https://{acct}.blob.core.{h}"),
            }
        })
    });
    b = b
        .with_container_name(&cfg.bucket_name)
        .with_retry(retry(cfg))
        .with_client_options(client_options(cfg, endpoint.as_deref()));
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e.clone()).with_allow_http(e.starts_with("http://"));
    }
    b.build().map_err(config_error)
}

fn gcs_store(cfg: &StorageConfig) -> Result<object_store::gcp::GoogleCloudStorage, StorageError> {
    let mut b = match &cfg.key_file {
        Some(path) => GoogleCloudStorageBuilder::new().with_service_account_path(path.to_string_lossy()),
        None => GoogleCloudStorageBuilder::from_env(),
    };
    b = b
        .with_bucket_name(&cfg.bucket_name)
        .with_retry(retry(cfg))
        .with_client_options(client_options(cfg, cfg.endpoint.as_deref()));
    if let Some(e) = &cfg.endpoint {
        b = b.with_base_url(e);
    }
    b.build().map_err(config_error)
}

/// The state of a resumable listing ([`Storage::list`]).
struct Listing {
    store: Arc<dyn ObjectStore>,
    inner: futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>,
    at: Option<ObjectPath>,
    prefix: String,
    last: Option<ObjectPath>,
    retries: Retries,
    started: std::time::Instant,
    attempt: usize,
    done: bool,
}

/// A validated object path.
pub fn object_path(key: &str) -> Result<ObjectPath, StorageError> {
    ObjectPath::parse(key).map_err(|e| StorageError::Config(format!("invalid object key {key:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(text: &str) -> StorageConfig {
        Config::parse(text, "t").unwrap().storage
    }

    #[test]
    fn aws_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = S\n[other]\naws_access_key_id = B\naws_secret_access_key = T\naws_session_token = X\n";
        assert_eq!(read_aws_credentials(text, "default"), Some(("A".into(), "S".into(), None)));
        assert_eq!(read_aws_credentials(text, "other"), Some(("B".into(), "T".into(), Some("X".into()))));
        assert_eq!(read_aws_credentials(text, "missing"), None);
    }

    /// `fold_keys` on `local` lists what object_store's own listing lists, without its stats.
    #[tokio::test]
    async fn local_list_keys_matches_the_store_listing() {
        let base = std::env::temp_dir().join(format!("medusa-list-{}", uuid::Uuid::new_v4()));
        let text = format!("[storage]\nstorage_provider = local\nbucket_name = b\nbase_path = {}\n", base.display());
        let root = base.join("b");
        std::fs::create_dir_all(&root).unwrap();
        let s = Storage::from_config(&cfg(&text)).unwrap();
        for f in ["p/index/a/tokenmap_n1.json", "p/index/a/x#12", "p/index/a/y#ab", "p/index/b/c/d", "p/other/e"] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("p/index/empty")).unwrap();
        std::os::unix::fs::symlink(root.join("p/other/e"), root.join("p/index/a/link")).unwrap();
        std::os::unix::fs::symlink(root.join("p/nowhere"), root.join("p/index/a/broken")).unwrap();
        std::os::unix::fs::symlink(root.join("p/other"), root.join("p/index/dirlink")).unwrap();
        let keys = |prefix: &'static str| s.fold_keys(prefix, Vec::new(), |v: &mut Vec<String>, k| v.push(k.into()));
        let mut fast = keys("p/index/").await.unwrap();
        fast.sort();
        let mut slow: Vec<String> = s.list("p/index/").map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        slow.sort();
        assert_eq!(fast, slow);
        assert_eq!(
            fast,
            ["p/index/a/link", "p/index/a/tokenmap_n1.json", "p/index/a/y#ab", "p/index/b/c/d", "p/index/dirlink/e"]
        );
        assert!(keys("p/absent/").await.unwrap().is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A `local` bucket is opened, never made, except by the sidecar's `create_local_bucket`,
    /// which makes the bucket directory and never `base_path`.
    #[test]
    fn local_directories_are_not_invented() {
        let base = std::env::temp_dir().join(format!("medusa-local-{}", uuid::Uuid::new_v4()));
        let text = format!("[storage]\nstorage_provider = local\nbucket_name = bkt\nbase_path = {}\n", base.display());
        let c = cfg(&text);
        for e in [Storage::from_config(&c).err().unwrap(), create_local_bucket(&c).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains(&format!("[storage] base_path = {}", base.display())) && e.contains("create it"), "{e}");
        }
        assert!(!base.exists());
        std::fs::create_dir(&base).unwrap();
        let e = Storage::from_config(&c).err().unwrap().to_string();
        assert!(e.contains("[storage] bucket_name = bkt: no bucket directory"), "{e}");
        assert!(!base.join("bkt").exists());
        create_local_bucket(&c).unwrap();
        create_local_bucket(&c).unwrap();
        Storage::from_config(&c).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn missing_key_file_is_named() {
        let e = Storage::from_config(&cfg(
            "[storage]\nstorage_provider = s3\nbucket_name = bucket\nkey_file = /nonexistent/creds\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/creds"), "{e}");
        let e = Storage::from_config(&cfg(
            "[storage]\nstorage_provider = azure_blobs\nbucket_name = bucket\nkey_file = /nonexistent/k.json\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("key_file"), "{e}");
    }

    /// GCS cannot be emulated on this machine (object_store speaks GCS's XML API, which the only
    /// available emulator lacks), so this goes as far as possible without a server: the store is
    /// built from a service-account key file, and a request to a closed endpoint is reported as a
    /// retryable outage naming the object.
    #[tokio::test]
    async fn gcs_configuration_path_without_a_server() {
        let dir = std::env::temp_dir().join(format!("medusa-gcs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("sa.json");
        std::fs::write(&key, r#"{"private_key":"unused","private_key_id":"unused","client_email":"medusa@example.invalid","disable_oauth":true}"#).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = cfg(&format!(
            "[storage]\nstorage_provider = google_storage\nbucket_name = medusa\nprefix = demo\nkey_file = {}\nendpoint = http://127.0.0.1:{port}\nmax_retries = 0\nretry_timeout = 1\n",
            key.display()
        ));
        let s = Storage::from_config(&c).unwrap();
        assert_eq!(s.provider, Provider::GoogleStorage);
        assert_eq!(s.layout.root(), "demo/");
        let e = s.head("demo/n/b/meta/schema.cql").await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("demo/n/b/meta/schema.cql"), "{e}");
        // The recorded hash format for GCS is base64 MD5 (Medusa's md5Hash).
        let mut h = crate::format::digest::Hasher::new(None);
        h.update(b"abc");
        assert_eq!(s.manifest_hash(&h.finish(), Some("\"etag\"")), "kAFQmDzST7DWlj99KOF/cg==");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
