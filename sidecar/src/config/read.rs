//! Reading each section of `medusa.ini` into its typed configuration, every key through its
//! declaration in [`super::keys`].

use std::path::PathBuf;

use super::keys::{KNOWN, Key, cassandra, checks, grpc, kubernetes, logging, monitoring, storage, verification};
use super::{
    CassandraConfig, ChecksConfig, Config, ConfigError, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT, GrpcConfig,
    KubernetesConfig, Provider, StorageConfig, VerificationConfig, bucket_name, parse_bool, parse_size,
};
use crate::config::ini::Ini;

/// The values of one parsed file, read key by key.
pub(super) struct Reader<'a> {
    pub ini: &'a Ini,
}

impl Reader<'_> {
    /// The value of `key`, trimmed; `None` when absent or empty.
    pub fn opt(&self, key: Key) -> Option<String> {
        self.ini.get(key.section, key.name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
    }

    /// A boolean in Medusa's words ([`parse_bool`]).
    pub fn bool(&self, key: Key, default: bool) -> Result<bool, ConfigError> {
        match self.opt(key) {
            None => Ok(default),
            Some(v) => parse_bool(&v)
                .ok_or_else(|| key.bad(format!("{v:?} is not a boolean; use true/false, yes/no, on/off or 1/0"))),
        }
    }

    /// A number; `what` says what kind, in the error.
    pub fn num<T: std::str::FromStr>(&self, key: Key, default: T, what: &str) -> Result<T, ConfigError> {
        match self.opt(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| key.bad(format!("{v:?} is not {what}"))),
        }
    }

    /// A size in Medusa's syntax ([`parse_size`]).
    pub fn size(&self, key: Key, default: &str) -> Result<u64, ConfigError> {
        let v = self.opt(key).unwrap_or_else(|| default.to_string());
        parse_size(&v).ok_or_else(|| {
            key.bad(format!(
                "{v:?} is not a size; use bytes (104857600) or a number with B, KB, MB, GB, TB or PB (50MB)"
            ))
        })
    }
}

/// The configuration in `ini`, and warnings for what it holds that medusa-rs does not know.
pub(super) fn config(ini: &Ini, origin: &str) -> Result<Config, ConfigError> {
    let mut warnings = unknown_keys(ini, origin);
    let r = Reader { ini };
    let (storage, bucket_warning) = read_storage(&r)?;
    warnings.extend(bucket_warning);
    Ok(Config {
        storage,
        cassandra: read_cassandra(&r)?,
        grpc: read_grpc(&r)?,
        kubernetes: read_kubernetes(&r)?,
        checks: ChecksConfig { enable_md5_checks: r.bool(checks::ENABLE_MD5_CHECKS, false)? },
        metrics_port: read_metrics_port(&r)?,
        verification: read_verification(&r)?,
        log_level: r.opt(logging::LEVEL).unwrap_or_else(|| "INFO".into()),
        log_format: r.opt(logging::FORMAT),
        warnings,
    })
}

fn env_or(var: &str, value: Option<String>) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty()).or(value)
}

/// Warnings for sections and keys medusa-rs does not know (Medusa crashes on an unknown
/// section; a warning lets one `medusa.ini` serve both).
fn unknown_keys(ini: &Ini, origin: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    for section in ini.section_names() {
        match KNOWN.iter().find(|(s, _)| *s == section) {
            None => warnings.push(format!("{origin}: unknown section [{section}] ignored")),
            Some((_, keys)) => {
                for key in ini.keys(section).filter(|k| !keys.contains(k)) {
                    warnings.push(format!("{origin}: unknown key [{section}] {key} ignored"));
                }
            }
        }
    }
    warnings
}

/// The Prometheus port: on by default ([`DEFAULT_METRICS_PORT`]: k8ssandra-operator renders the
/// container and never writes this key), `0` switches it off.
fn read_metrics_port(r: &Reader<'_>) -> Result<Option<u16>, ConfigError> {
    let Some(v) = r.opt(monitoring::METRICS_PORT) else { return Ok(Some(DEFAULT_METRICS_PORT)) };
    let port = v
        .parse::<u16>()
        .map_err(|_| monitoring::METRICS_PORT.bad(format!("{v:?} is not a TCP port number (1-65535), or 0 for off")))?;
    Ok((port > 0).then_some(port))
}

fn read_verification(r: &Reader<'_>) -> Result<VerificationConfig, ConfigError> {
    let interval_hours = match r.opt(verification::INTERVAL_HOURS) {
        None => 0.0,
        Some(v) => match v.parse::<f64>() {
            Ok(h) if h.is_finite() && h >= 0.0 => h,
            _ => {
                return Err(verification::INTERVAL_HOURS
                    .bad(format!("{v:?} is not a number of hours (e.g. 24, or 0.5); 0 switches it off")));
            }
        },
    };
    Ok(VerificationConfig { interval_hours, deep: r.bool(verification::DEEP, false)? })
}

fn read_cassandra(r: &Reader<'_>) -> Result<CassandraConfig, ConfigError> {
    Ok(CassandraConfig {
        config_file: r.opt(cassandra::CONFIG_FILE).unwrap_or_else(|| "/etc/cassandra/cassandra.yaml".into()).into(),
        nodetool_executable: r.opt(cassandra::NODETOOL_EXECUTABLE).unwrap_or_else(|| "nodetool".into()),
        nodetool_flags: r
            .opt(cassandra::NODETOOL_FLAGS)
            .unwrap_or_else(|| "-Dcom.sun.jndi.rmiURLParsing=legacy".into())
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        nodetool_username: env_or("MEDUSA_NODETOOL_USERNAME", r.opt(cassandra::NODETOOL_USERNAME)),
        nodetool_password: env_or("MEDUSA_NODETOOL_PASSWORD", r.opt(cassandra::NODETOOL_PASSWORD)),
        nodetool_password_file_path: r.opt(cassandra::NODETOOL_PASSWORD_FILE_PATH),
        nodetool_host: r.opt(cassandra::NODETOOL_HOST),
        nodetool_port: r.opt(cassandra::NODETOOL_PORT),
        nodetool_ssl: r.bool(cassandra::NODETOOL_SSL, false)?,
        resolve_ip_addresses: match env_or("MEDUSA_RESOLVE_IP_ADDRESSES", None) {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                cassandra::RESOLVE_IP_ADDRESSES
                    .bad(format!("MEDUSA_RESOLVE_IP_ADDRESSES={v:?} is not a boolean; use True or False"))
            })?,
            None => r.bool(cassandra::RESOLVE_IP_ADDRESSES, true)?,
        },
    })
}

fn read_grpc(r: &Reader<'_>) -> Result<GrpcConfig, ConfigError> {
    let grpc = GrpcConfig {
        enabled: r.bool(grpc::ENABLED, false)?,
        port: r.num(grpc::PORT, DEFAULT_GRPC_PORT, "a TCP port number (1-65535)")?,
        max_send_message_length: r.num(grpc::MAX_SEND_MESSAGE_LENGTH, 536_870_912, "a number of bytes")?,
        max_receive_message_length: r.num(grpc::MAX_RECEIVE_MESSAGE_LENGTH, 134_217_728, "a number of bytes")?,
        ca_cert: r.opt(grpc::CA_CERT).map(PathBuf::from),
        tls_cert: r.opt(grpc::TLS_CERT).map(PathBuf::from),
        tls_key: r.opt(grpc::TLS_KEY).map(PathBuf::from),
    };
    if grpc.tls_cert.is_some() && (grpc.tls_key.is_none() || grpc.ca_cert.is_none()) {
        return Err(grpc::TLS_CERT
            .bad("TLS needs tls_cert, tls_key and ca_cert (client certificates are required, as in Medusa)"));
    }
    Ok(grpc)
}

fn read_kubernetes(r: &Reader<'_>) -> Result<KubernetesConfig, ConfigError> {
    let kubernetes = KubernetesConfig {
        enabled: r.bool(kubernetes::ENABLED, false)?,
        cassandra_url: r.opt(kubernetes::CASSANDRA_URL),
        use_mgmt_api: r.bool(kubernetes::USE_MGMT_API, false)?,
        ca_cert: r.opt(kubernetes::CA_CERT).map(PathBuf::from),
        tls_cert: r.opt(kubernetes::TLS_CERT).map(PathBuf::from),
        tls_key: r.opt(kubernetes::TLS_KEY).map(PathBuf::from),
    };
    if kubernetes.use_mgmt_api && kubernetes.cassandra_url.is_none() {
        return Err(kubernetes::CASSANDRA_URL.bad("use_mgmt_api is on but cassandra_url is empty; set it to e.g. http://127.0.0.1:8080/api/v0/ops/node/snapshots",
        ));
    }
    Ok(kubernetes)
}

/// Where the bucket is, validated.
struct Bucket {
    provider: Provider,
    name: String,
    prefix: Option<String>,
    base_path: Option<PathBuf>,
    /// A name only a legacy S3 bucket can have.
    warning: Option<String>,
}

/// Where the bucket is: provider, bucket name (by the provider's naming rules), prefix and
/// (for `local`) base path. Whether `base_path` exists is the store's business: the sidecar
/// may create the bucket directory in it, and a configuration can be read anywhere.
fn read_bucket(r: &Reader<'_>) -> Result<Bucket, ConfigError> {
    let provider_name = r.opt(storage::STORAGE_PROVIDER).ok_or_else(|| {
        storage::STORAGE_PROVIDER.bad("is required (e.g. s3, s3_compatible, azure_blobs, google_storage, local)")
    })?;
    let provider = Provider::parse(&provider_name)?;
    let bucket_name = r.opt(storage::BUCKET_NAME).ok_or_else(|| storage::BUCKET_NAME.bad("is required"))?;
    let warning = bucket_name::check(&provider, &bucket_name).map_err(|why| {
        storage::BUCKET_NAME
            .bad(format!("{bucket_name:?} is not a bucket name for storage_provider = {provider_name}: {why}"))
    })?;
    let prefix = r.opt(storage::PREFIX);
    if let Some(p) = &prefix
        && (p.contains('/') || p == "." || p == "..")
    {
        return Err(storage::PREFIX.bad(format!("{p:?} must be one folder name without '/'")));
    }
    let base_path = r.opt(storage::BASE_PATH).map(PathBuf::from);
    if provider == Provider::Local && base_path.is_none() {
        return Err(storage::BASE_PATH
            .bad("is required when storage_provider = local: the directory that holds the bucket directory"));
    }
    Ok(Bucket { provider, name: bucket_name, prefix, base_path, warning })
}

/// `[storage]`, and warnings about the bucket's name or the storage class if they deserve one.
fn read_storage(r: &Reader<'_>) -> Result<(StorageConfig, Vec<String>), ConfigError> {
    let Bucket { provider, name: bucket_name, prefix, base_path, warning } = read_bucket(r)?;
    let bandwidth = match r.opt(storage::TRANSFER_MAX_BANDWIDTH) {
        None => Some(parse_size("50MB/s").expect("valid default")),
        Some(v) => {
            let n = parse_size(&v).ok_or_else(|| {
                storage::TRANSFER_MAX_BANDWIDTH.bad(format!("{v:?} is not a rate; use e.g. 50MB/s, or 0 for unlimited"))
            })?;
            (n > 0).then_some(n)
        }
    };
    let concurrent: usize = r.num(storage::CONCURRENT_TRANSFERS, 1, "a whole number of transfers")?;
    let chunk = r.size(storage::MULTIPART_CHUNKSIZE, "50MB")?;
    // S3 refuses parts below 5 MiB, and the part size is in every multipart ETag a manifest
    // records. Elsewhere the key is Medusa's Azure block size or GCS download chunk, which may
    // be smaller; medusa-rs sends 8 MiB blocks there whatever it says (see transfer::PLAIN_PART).
    if provider.is_s3() && chunk < 5 << 20 {
        return Err(storage::MULTIPART_CHUNKSIZE.bad("must be at least 5MB (the S3 minimum part size)"));
    }
    if chunk == 0 {
        return Err(storage::MULTIPART_CHUNKSIZE.bad("must be more than 0 bytes"));
    }
    let (storage_class, class_warning) = storage_class(&provider, r.opt(storage::STORAGE_CLASS));
    let port = match r.opt(storage::PORT) {
        None => None,
        Some(v) => Some(v.parse::<u16>().map_err(|_| storage::PORT.bad(format!("{v:?} is not a TCP port number")))?),
    };
    let storage = StorageConfig {
        provider,
        bucket_name,
        key_file: r.opt(storage::KEY_FILE).map(PathBuf::from),
        prefix,
        fqdn: r.opt(storage::FQDN),
        storage_class,
        base_path,
        max_backup_age: r.num(storage::MAX_BACKUP_AGE, 0, "a whole number of days")?,
        max_backup_count: r.num(storage::MAX_BACKUP_COUNT, 0, "a whole number of backups")?,
        api_profile: r.opt(storage::API_PROFILE),
        transfer_max_bandwidth: bandwidth,
        concurrent_transfers: concurrent.max(1),
        multi_part_upload_threshold: r.size(storage::MULTI_PART_UPLOAD_THRESHOLD, "20MB")?,
        multipart_chunksize: chunk,
        multipart_max_concurrency: r.num(storage::MULTIPART_MAX_CONCURRENCY, 4usize, "a whole number")?.max(1),
        host: r.opt(storage::HOST),
        port,
        region: r.opt(storage::REGION).unwrap_or_else(|| "default".into()),
        secure: r.bool(storage::SECURE, true)?,
        ssl_verify: r.bool(storage::SSL_VERIFY, false)?,
        kms_id: r.opt(storage::KMS_ID),
        sse_c_key: r.opt(storage::SSE_C_KEY),
        backup_grace_period_in_days: r.num(storage::BACKUP_GRACE_PERIOD_IN_DAYS, 10, "a whole number of days")?,
        read_timeout: r.num(storage::READ_TIMEOUT, 0u64, "a whole number of seconds").map(|v| (v > 0).then_some(v))?,
        s3_addressing_style: r.opt(storage::S3_ADDRESSING_STYLE).unwrap_or_else(|| "auto".into()),
        endpoint: r.opt(storage::ENDPOINT),
        max_retries: r.num(storage::MAX_RETRIES, 7usize, "a whole number of retries")?,
        retry_timeout_seconds: r.num(storage::RETRY_TIMEOUT, 180u64, "a whole number of seconds")?,
    };
    Ok((storage, warning.into_iter().chain(class_warning).collect()))
}

/// `[storage] storage_class` as each provider takes it, the way Medusa passes it on: S3's
/// storage classes upper-cased (`STANDARD_IA`), Azure's access tiers capitalised (`Hot`,
/// `Cool`, `Cold`, `Archive`); Google Cloud Storage and `local` take none (Medusa ignores the
/// key there, and a class the provider does not know would fail every upload), with a warning.
fn storage_class(provider: &Provider, value: Option<String>) -> (Option<String>, Option<String>) {
    let Some(class) = value else { return (None, None) };
    match provider {
        p if p.is_s3() => (Some(class.to_uppercase()), None),
        Provider::AzureBlobs => {
            let mut chars = class.chars();
            let tier = chars.next().map(|c| c.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect());
            (tier, None)
        }
        _ => (
            None,
            Some(format!(
                "[storage] storage_class = {class} ignored: storage_provider = {} takes no storage class (as in \
                 Medusa); set the bucket's default class instead",
                provider.name()
            )),
        ),
    }
}
