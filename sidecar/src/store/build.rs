//! Building the store from `[storage]`: the backend, its credentials, client options and
//! the `local` bucket directory. Backend choice happens here and nowhere else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::{Attribute, Attributes, ClientOptions, ObjectStore};

use super::retry::client_retry_config;
use super::{LocalBucket, Retries, Storage, StorageError, s3stream};
use crate::config::{Provider, StorageConfig};
use crate::format::layout::Layout;

/// Parses an AWS shared-credentials file: (access key, secret, session token) of `profile`.
pub fn read_aws_credentials(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let ini = crate::config::ini::Ini::parse(text).ok()?;
    let get = |k: &str| ini.get(profile, k).map(str::to_string).filter(|v| !v.is_empty());
    Some((get("aws_access_key_id")?, get("aws_secret_access_key")?, get("aws_session_token")))
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
    /// Builds the store for `cfg`. No request is sent, except one HEAD of the bucket for
    /// `storage_provider = s3` without a `region` (see `region`).
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
}

pub(super) fn storage_class_attributes(class: Option<&str>) -> Attributes {
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
        // AWS with no region: ask S3 where the bucket is, as botocore follows its answer.
        (_, Provider::S3 { region_hint: None }) => {
            match super::region::discover(endpoint.as_deref(), &cfg.bucket_name, !cfg.ssl_verify) {
                Ok(Some(r)) => {
                    tracing::info!(bucket = %cfg.bucket_name, region = %r, "[storage] region is not set: S3 says the bucket is in this region");
                    r
                }
                Ok(None) => "us-east-1".to_string(),
                Err(e) => {
                    tracing::warn!(bucket = %cfg.bucket_name, error = %e, "[storage] region is not set and S3 could not be asked where the bucket is: using us-east-1 (set region to silence this)");
                    "us-east-1".to_string()
                }
            }
        }
        _ => "us-east-1".to_string(),
    };
    b = b
        .with_bucket_name(&cfg.bucket_name)
        .with_region(region.clone())
        .with_virtual_hosted_style_request(cfg.s3_addressing_style == "virtual")
        .with_retry(client_retry_config(cfg))
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
        .with_retry(client_retry_config(cfg))
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
        .with_retry(client_retry_config(cfg))
        .with_client_options(client_options(cfg, cfg.endpoint.as_deref()));
    if let Some(e) = &cfg.endpoint {
        b = b.with_base_url(e);
    }
    b.build().map_err(config_error)
}
