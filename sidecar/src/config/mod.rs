//! `medusa.ini`, read the way Medusa reads it (contract §7), with better errors.
//!
//! Differences from Medusa, all deliberate: an unknown section or key is a warning (Medusa
//! crashes on unknown sections); a bad value is an error that names the section, the key and
//! what is accepted; `host`/`port` are honoured for every S3 flavour; `endpoint` (medusa-rs
//! only, ignored by Python Medusa) sets a storage endpoint URL verbatim; `bucket_name` must be
//! a bucket name by its provider's rules ([`bucket_name`]), so that `..` or a path cannot point
//! the bucket somewhere else.

pub mod bucket_name;
pub mod cassandra_yaml;
pub mod ini;
mod keys;
mod read;

use std::path::{Path, PathBuf};

use crate::config::ini::Ini;
use crate::format::names::{Fqdn, InvalidName};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/medusa/medusa.ini";
/// The Prometheus port when `[monitoring] metrics_port` is not set: no container of a
/// k8ssandra pod uses it (Cassandra 7000/7001/7199/9042/9142, Management API 8080, metrics 9000,
/// Medusa 50051).
pub const DEFAULT_METRICS_PORT: u16 = 9180;
/// Default gRPC port (Medusa's and the operator's).
pub const DEFAULT_GRPC_PORT: u16 = 50051;

/// A configuration problem, phrased so that the user knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid INI.
    #[error("{path}: {source}")]
    Syntax {
        /// The file.
        path: String,
        /// The syntax error.
        source: crate::config::ini::IniError,
    },
    /// A value is missing or wrong.
    #[error("[{section}] {key}: {message}")]
    Value {
        /// Section name.
        section: &'static str,
        /// Key name.
        key: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// `cassandra.yaml` could not be used.
    #[error("cassandra.yaml {path}: {message}")]
    CassandraYaml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The node name could not be determined or is invalid.
    #[error("node identity: {0}")]
    Fqdn(#[from] InvalidName),
}

/// The storage backend, from `[storage] storage_provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Files under `<base_path>/<bucket_name>/`.
    Local,
    /// AWS S3; `region_hint` is the region encoded in a libcloud-style name (`s3_us_west_oregon`).
    S3 {
        /// Region from the provider name, if any.
        region_hint: Option<String>,
    },
    /// Any S3-compatible store at `host:port`.
    S3Compatible,
    /// Ceph RADOS gateway.
    S3Rgw,
    /// IBM Cloud Object Storage.
    IbmStorage,
    /// Google Cloud Storage.
    GoogleStorage,
    /// Azure Blob Storage.
    AzureBlobs,
}

impl Provider {
    fn parse(value: &str) -> Result<Provider, ConfigError> {
        let p = match value {
            "local" => Provider::Local,
            "s3" => Provider::S3 { region_hint: None },
            "s3_compatible" => Provider::S3Compatible,
            "s3_rgw" => Provider::S3Rgw,
            "ibm_storage" => Provider::IbmStorage,
            "google_storage" => Provider::GoogleStorage,
            "azure_blobs" => Provider::AzureBlobs,
            other => match other.strip_prefix("s3_").and_then(libcloud_region) {
                Some(region) => Provider::S3 { region_hint: Some(region.to_string()) },
                None => {
                    return Err(keys::storage::STORAGE_PROVIDER.bad(format!(
                        "unknown provider {other:?}; use one of local, s3, s3_<region> (e.g. s3_us_west_oregon), \
                             s3_compatible, s3_rgw, ibm_storage, google_storage, azure_blobs"
                    )));
                }
            },
        };
        Ok(p)
    }

    /// The provider's `storage_provider` word (`s3` for every AWS region).
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::S3 { .. } => "s3",
            Provider::S3Compatible => "s3_compatible",
            Provider::S3Rgw => "s3_rgw",
            Provider::IbmStorage => "ibm_storage",
            Provider::GoogleStorage => "google_storage",
            Provider::AzureBlobs => "azure_blobs",
        }
    }

    /// True for every S3 flavour.
    pub fn is_s3(&self) -> bool {
        matches!(self, Provider::S3 { .. } | Provider::S3Compatible | Provider::S3Rgw | Provider::IbmStorage)
    }
}

/// libcloud's S3 driver names, as Medusa maps them to AWS regions.
fn libcloud_region(name: &str) -> Option<&'static str> {
    Some(match name {
        "us_east" => "us-east-1",
        "us_east2" => "us-east-2",
        "us_west" => "us-west-1",
        "us_west_oregon" => "us-west-2",
        "us_gov_west" => "us-gov-west-1",
        "eu_west" => "eu-west-1",
        "eu_west2" => "eu-west-2",
        "eu_central" => "eu-central-1",
        "eu_north_1" => "eu-north-1",
        "ap_south" => "ap-south-1",
        "ap_southeast" => "ap-southeast-1",
        "ap_southeast2" => "ap-southeast-2",
        "ap_northeast" | "ap_northeast1" => "ap-northeast-1",
        "ap_northeast2" => "ap-northeast-2",
        "ap_northeast3" => "ap-northeast-3",
        "sa_east" => "sa-east-1",
        "ca_central" => "ca-central-1",
        "cn_north" => "cn-north-1",
        "cn_northwest" => "cn-northwest-1",
        _ => return None,
    })
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Backend.
    pub provider: Provider,
    /// Bucket, container, or directory under `base_path`.
    pub bucket_name: String,
    /// Credentials file (contract §7.6).
    pub key_file: Option<PathBuf>,
    /// Top-level folder in the bucket (`None` when empty).
    pub prefix: Option<String>,
    /// Explicit node identity.
    pub fqdn: Option<String>,
    /// The storage class (S3, upper-cased) or access tier (Azure, capitalised); `None` for the
    /// providers that take none.
    pub storage_class: Option<String>,
    /// Root directory for `local`.
    pub base_path: Option<PathBuf>,
    /// Days; 0 = no age-based purge.
    pub max_backup_age: u32,
    /// 0 = no count-based purge.
    pub max_backup_count: u32,
    /// AWS profile inside `key_file`.
    pub api_profile: Option<String>,
    /// Bytes per second shared by all S3 transfers; `None` = unlimited.
    pub transfer_max_bandwidth: Option<u64>,
    /// Parallel file transfers.
    pub concurrent_transfers: usize,
    /// Files at least this large are uploaded in parts.
    pub multi_part_upload_threshold: u64,
    /// Part size.
    pub multipart_chunksize: u64,
    /// Parts in flight per file.
    pub multipart_max_concurrency: usize,
    /// Endpoint host (S3-compatible) or Azure domain suffix.
    pub host: Option<String>,
    /// Endpoint port.
    pub port: Option<u16>,
    /// S3 region (`default` = derive).
    pub region: String,
    /// https (true) or http (false) for S3-compatible endpoints.
    pub secure: bool,
    /// Verify TLS certificates of S3-compatible endpoints.
    pub ssl_verify: bool,
    /// SSE-KMS key id.
    pub kms_id: Option<String>,
    /// SSE-C key (base64 of 32 bytes).
    pub sse_c_key: Option<String>,
    /// Orphaned differential files younger than this are kept.
    pub backup_grace_period_in_days: u32,
    /// Seconds.
    pub read_timeout: Option<u64>,
    /// `auto`, `path` or `virtual`.
    pub s3_addressing_style: String,
    /// medusa-rs extension: endpoint URL used verbatim (e.g. an Azure emulator).
    pub endpoint: Option<String>,
    /// medusa-rs extension: retries of one storage request.
    pub max_retries: usize,
    /// medusa-rs extension: seconds after which a storage request is no longer retried.
    pub retry_timeout_seconds: u64,
}

/// `[cassandra]` and what `cassandra.yaml` says.
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    /// Path of `cassandra.yaml`.
    pub config_file: PathBuf,
    /// `nodetool` executable.
    pub nodetool_executable: String,
    /// Extra flags after the executable.
    pub nodetool_flags: Vec<String>,
    /// `-u`.
    pub nodetool_username: Option<String>,
    /// `-pw` (a secret: never logged).
    pub nodetool_password: Option<String>,
    /// `-pwf`.
    pub nodetool_password_file_path: Option<String>,
    /// `-h`.
    pub nodetool_host: Option<String>,
    /// `-p`.
    pub nodetool_port: Option<String>,
    /// `--ssl`.
    pub nodetool_ssl: bool,
    /// Whether the ring's other nodes are named by their addresses' DNS names (Medusa's
    /// default) or by the addresses themselves (`False`); `MEDUSA_RESOLVE_IP_ADDRESSES`
    /// overrides it, as in Medusa.
    pub resolve_ip_addresses: bool,
}

/// `[grpc]`.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// `enabled`.
    pub enabled: bool,
    /// Listen port.
    pub port: u16,
    /// Bytes.
    pub max_send_message_length: usize,
    /// Bytes.
    pub max_receive_message_length: usize,
    /// CA for client certificates (mTLS).
    pub ca_cert: Option<PathBuf>,
    /// Server certificate; TLS is on iff set.
    pub tls_cert: Option<PathBuf>,
    /// Server key.
    pub tls_key: Option<PathBuf>,
}

/// `[kubernetes]`.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Running in Kubernetes.
    pub enabled: bool,
    /// Management API snapshot URL.
    pub cassandra_url: Option<String>,
    /// Snapshots through the Management API (else Jolokia, unsupported).
    pub use_mgmt_api: bool,
    /// CA of the Management API server certificate.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate for the Management API.
    pub tls_cert: Option<PathBuf>,
    /// Client key for the Management API.
    pub tls_key: Option<PathBuf>,
}

/// `[checks]`.
#[derive(Debug, Clone)]
pub struct ChecksConfig {
    /// Medusa's flag; medusa-rs always compares content digests.
    pub enable_md5_checks: bool,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[cassandra]`.
    pub cassandra: CassandraConfig,
    /// `[grpc]`.
    pub grpc: GrpcConfig,
    /// `[kubernetes]`.
    pub kubernetes: KubernetesConfig,
    /// `[checks]`.
    pub checks: ChecksConfig,
    /// `[monitoring] metrics_port` (medusa-rs): Prometheus endpoint port; [`DEFAULT_METRICS_PORT`]
    /// when absent, `None` (off) when 0.
    pub metrics_port: Option<u16>,
    /// `[verification]` (medusa-rs).
    pub verification: VerificationConfig,
    /// `[logging] level`.
    pub log_level: String,
    /// `[logging] format`: `json` asks for JSON lines (Medusa's Python format strings are not
    /// honoured: any other value means plain text).
    pub log_format: Option<String>,
    /// Things that were accepted but deserve a look (unknown sections and keys).
    pub warnings: Vec<String>,
}

/// `[verification]` (medusa-rs): the sidecar verifies this node's latest complete backup in
/// storage every `interval_hours` (0 or absent: never), re-hashing every object when `deep`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerificationConfig {
    /// Hours between two verifications; 0 = off.
    pub interval_hours: f64,
    /// Download and re-hash every object (else presence and size).
    pub deep: bool,
}

/// Parses Medusa's size syntax: `50MB/s`, `20MB`, `104857600` (powers of 1024, suffix
/// case-sensitive, a bare fraction rejected).
pub fn parse_size(value: &str) -> Option<u64> {
    let v: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let v = v.strip_suffix("/s").unwrap_or(&v);
    const UNITS: [(&str, u64); 6] =
        [("PB", 1 << 50), ("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)];
    for (suffix, mult) in UNITS {
        if let Some(num) = v.strip_suffix(suffix) {
            let n: f64 = num.parse().ok()?;
            if !n.is_finite() || n < 0.0 {
                return None;
            }
            return Some((n * mult as f64) as u64);
        }
    }
    v.parse::<u64>().ok()
}

/// Medusa's boolean words.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl Config {
    /// Reads and validates the file at `path`, resolving the node's `cassandra.yaml` lazily.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let ini = Ini::parse(text).map_err(|source| ConfigError::Syntax { path: origin.to_string(), source })?;
        read::config(&ini, origin)
    }

    /// The node identity: `[storage] fqdn`, else `$POD_NAME`, else the host name (contract §7.3).
    pub fn fqdn(&self) -> Result<Fqdn, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let host = || nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        Ok(Fqdn::new(self.node_name(var("POD_IP"), var("POD_NAME"), host))?)
    }

    /// The node's name from `POD_IP`, `POD_NAME` and the host name: with `[kubernetes] enabled`,
    /// `POD_IP` wins over everything, `[storage] fqdn` included (Medusa's rule: backups it took
    /// with `POD_IP` set are stored under that address); then `[storage] fqdn`, then `POD_NAME`
    /// (which k8ssandra-operator sets, and not `POD_IP`), then the host name.
    fn node_name(&self, pod_ip: Option<String>, pod_name: Option<String>, host: impl FnOnce() -> String) -> String {
        match (pod_ip, &self.storage.fqdn, pod_name) {
            (Some(ip), _, _) if self.kubernetes.enabled => ip,
            (_, Some(f), _) => f.clone(),
            (_, None, Some(pod)) => pod,
            _ => host(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR_INI: &str = "    [cassandra]
    use_sudo = false

    [storage]
    use_sudo_for_restore = false
    storage_provider = s3_compatible
    bucket_name = medusa-bucket
    key_file = /etc/medusa-secrets/credentials
    prefix = demo
    max_backup_age = 0
    max_backup_count = 7
    region = us-east-1
    host = minio.minio.svc.cluster.local
    port = 9000
    secure = False
    ssl_verify = False
    transfer_max_bandwidth = 50MB/s
    concurrent_transfers = 1
    multi_part_upload_threshold = 104857600

    [grpc]
    enabled = 1

    [logging]
    level = DEBUG

    [kubernetes]
    use_mgmt_api = 1
    enabled = 1
    cassandra_url = http://127.0.0.1:8080/api/v0/ops/node/snapshots
";

    #[test]
    fn node_name_follows_medusa_with_pod_ip() {
        let mut c = Config::parse(OPERATOR_INI, "medusa.ini").unwrap();
        let ip = || Some("10.0.0.7".to_string());
        let pod = || Some("dc1-r1-sts-0".to_string());
        let host = || "host".to_string();
        // The operator's pods: POD_NAME, no POD_IP.
        assert_eq!(c.node_name(None, pod(), host), "dc1-r1-sts-0");
        // Medusa's Kubernetes mode with POD_IP: the address, even over [storage] fqdn.
        assert_eq!(c.node_name(ip(), pod(), host), "10.0.0.7");
        c.storage.fqdn = Some("n1".into());
        assert_eq!(c.node_name(ip(), pod(), host), "10.0.0.7");
        assert_eq!(c.node_name(None, pod(), host), "n1");
        // Outside Kubernetes mode POD_IP means nothing.
        c.kubernetes.enabled = false;
        assert_eq!(c.node_name(ip(), pod(), host), "n1");
        c.storage.fqdn = None;
        assert_eq!(c.node_name(ip(), None, host), "host");
    }

    #[test]
    fn reads_what_the_operator_writes() {
        let c = Config::parse(OPERATOR_INI, "medusa.ini").unwrap();
        assert_eq!(c.storage.provider, Provider::S3Compatible);
        assert_eq!(c.storage.bucket_name, "medusa-bucket");
        assert_eq!(c.storage.prefix.as_deref(), Some("demo"));
        assert_eq!(c.storage.max_backup_count, 7);
        assert_eq!(c.storage.port, Some(9000));
        assert!(!c.storage.secure);
        assert_eq!(c.storage.transfer_max_bandwidth, Some(52_428_800));
        assert_eq!(c.storage.multi_part_upload_threshold, 104_857_600);
        assert_eq!(c.storage.multipart_chunksize, 52_428_800);
        assert_eq!(c.storage.backup_grace_period_in_days, 10);
        assert!(c.grpc.enabled);
        assert_eq!(c.grpc.port, 50051);
        assert!(c.kubernetes.enabled && c.kubernetes.use_mgmt_api);
        assert!(c.cassandra.resolve_ip_addresses, "Medusa's default");
        let off = OPERATOR_INI.replace("use_sudo = false", "use_sudo = false\n    resolve_ip_addresses = False");
        assert!(!Config::parse(&off, "medusa.ini").unwrap().cassandra.resolve_ip_addresses);
        assert_eq!(c.log_level, "DEBUG");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn unknown_sections_and_keys_are_warnings() {
        let c = Config::parse(
            "[storage]\nstorage_provider = local\nbase_path = /b\nbucket_name = x\nfrobnicate = 1\n[orchestration]\na = b\n",
            "m.ini",
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("[orchestration]")));
        assert!(c.warnings.iter().any(|w| w.contains("frobnicate")));
    }

    #[test]
    fn bad_values_name_section_key_and_choices() {
        let cases = [
            ("[storage]\nbucket_name = b\n", "[storage] storage_provider"),
            ("[storage]\nstorage_provider = dropbox\nbucket_name = bucket\n", "unknown provider \"dropbox\""),
            ("[storage]\nstorage_provider = s3\n", "[storage] bucket_name: is required"),
            (
                "[storage]\nstorage_provider = s3\nbucket_name = a/b\n",
                "[storage] bucket_name: \"a/b\" is not a bucket name",
            ),
            (
                "[storage]\nstorage_provider = local\nbase_path = /b\nbucket_name = ..\n",
                "[storage] bucket_name: \"..\" is not a bucket name for storage_provider = local",
            ),
            (
                "[storage]\nstorage_provider = s3\nbucket_name = bucket\nsecure = maybe\n",
                "[storage] secure: \"maybe\" is not a boolean",
            ),
            (
                "[storage]\nstorage_provider = s3\nbucket_name = bucket\nconcurrent_transfers = many\n",
                "[storage] concurrent_transfers",
            ),
            (
                "[storage]\nstorage_provider = s3\nbucket_name = bucket\nmultipart_chunksize = 1.5\n",
                "[storage] multipart_chunksize",
            ),
            ("[storage]\nstorage_provider = s3\nbucket_name = bucket\n[grpc]\nport = 99999\n", "[grpc] port"),
            ("[storage]\nstorage_provider = local\nbucket_name = b\n", "base_path: is required"),
            (
                "[storage]\nstorage_provider = s3\nbucket_name = bucket\n[kubernetes]\nuse_mgmt_api = 1\n",
                "cassandra_url",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "m.ini").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn storage_class_and_part_size_follow_each_provider() {
        let parse = |provider: &str, extra: &str| {
            let base = if provider == "local" { "base_path = /b\n" } else { "" };
            Config::parse(
                &format!("[storage]\nstorage_provider = {provider}\nbucket_name = bucket\n{base}{extra}"),
                "m.ini",
            )
        };
        let class = |provider: &str, value: &str| {
            let c = parse(provider, &format!("storage_class = {value}\n")).unwrap();
            (c.storage.storage_class, c.warnings)
        };
        assert_eq!(class("s3", "standard_ia").0.as_deref(), Some("STANDARD_IA"));
        assert_eq!(class("s3_compatible", "Glacier").0.as_deref(), Some("GLACIER"));
        assert_eq!(class("azure_blobs", "COOL").0.as_deref(), Some("Cool"), "Azure's tiers are capitalised");
        assert_eq!(class("azure_blobs", "hot").0.as_deref(), Some("Hot"));
        for provider in ["google_storage", "local"] {
            let (c, warnings) = class(provider, "STANDARD");
            assert_eq!(c, None, "{provider} takes no storage class");
            assert!(
                warnings.iter().any(|w| w.contains("storage_class = STANDARD ignored") && w.contains(provider)),
                "{warnings:?}"
            );
        }
        // Medusa's Azure block size and GCS download chunk may be below S3's 5 MB part minimum.
        for provider in ["azure_blobs", "google_storage"] {
            assert_eq!(parse(provider, "multipart_chunksize = 4MB\n").unwrap().storage.multipart_chunksize, 4 << 20);
        }
        let err = parse("s3", "multipart_chunksize = 4MB\n").unwrap_err().to_string();
        assert!(err.contains("[storage] multipart_chunksize: must be at least 5MB"), "{err}");
        let err = parse("azure_blobs", "multipart_chunksize = 0\n").unwrap_err().to_string();
        assert!(err.contains("must be more than 0 bytes"), "{err}");
    }

    #[test]
    fn sizes_and_booleans_follow_medusa() {
        assert_eq!(parse_size("50MB/s"), Some(52_428_800));
        assert_eq!(parse_size("20 MB"), Some(20_971_520));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("104857600"), Some(104_857_600));
        assert_eq!(parse_size("1.5"), None);
        assert_eq!(parse_size("50mb"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("OFF"), Some(false));
        assert_eq!(parse_bool("2"), None);
    }

    #[test]
    fn libcloud_region_names() {
        let c = Config::parse("[storage]\nstorage_provider = s3_us_west_oregon\nbucket_name = bucket\n", "m").unwrap();
        assert_eq!(c.storage.provider, Provider::S3 { region_hint: Some("us-west-2".into()) });
    }
}
