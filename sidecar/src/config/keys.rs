//! Every section and key of `medusa.ini`, declared once: the readers ([`super::read`]) take a
//! key's declaration (`keys::storage::BUCKET_NAME`), and the unknown-key check ([`KNOWN`]) is
//! made from the same declarations. A key listed under `read` that no reader uses is dead code,
//! and a reader cannot name a key that is not declared, so the two cannot drift apart.
//!
//! `accepted` keys are Medusa's own that medusa-rs has no use for (ssh, sstableloader, the
//! command lines of a VM install): they are accepted silently, so that one `medusa.ini` serves
//! both, and never read.

use super::ConfigError;

/// One key of one section.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    /// Its section, without brackets.
    pub section: &'static str,
    /// Its name.
    pub name: &'static str,
}

impl Key {
    /// The error for a missing or wrong value of this key.
    pub fn bad(self, message: impl Into<String>) -> ConfigError {
        ConfigError::Value { section: self.section, key: self.name, message: message.into() }
    }
}

/// Declares each section as a module of [`Key`] constants (the keys medusa-rs reads), and
/// [`KNOWN`], every key of every section (read or only accepted).
macro_rules! sections {
    ($( $section:ident {
        read: [$($konst:ident = $name:literal),* $(,)?],
        accepted: [$($other:literal),* $(,)?] $(,)?
    } )*) => {
        $(
            #[doc = concat!("`[", stringify!($section), "]`.")]
            pub(super) mod $section {
                $(
                    #[doc = concat!("`[", stringify!($section), "] ", $name, "`.")]
                    pub(in crate::config) const $konst: super::Key =
                        super::Key { section: stringify!($section), name: $name };
                )*
            }
        )*
        /// Every section, with every key it may hold.
        pub(super) const KNOWN: &[(&str, &[&str])] = &[$( (stringify!($section), &[$($name,)* $($other,)*]), )*];
    };
}

sections! {
    storage {
        read: [
            STORAGE_PROVIDER = "storage_provider",
            BUCKET_NAME = "bucket_name",
            KEY_FILE = "key_file",
            PREFIX = "prefix",
            FQDN = "fqdn",
            STORAGE_CLASS = "storage_class",
            BASE_PATH = "base_path",
            MAX_BACKUP_AGE = "max_backup_age",
            MAX_BACKUP_COUNT = "max_backup_count",
            API_PROFILE = "api_profile",
            TRANSFER_MAX_BANDWIDTH = "transfer_max_bandwidth",
            CONCURRENT_TRANSFERS = "concurrent_transfers",
            MULTI_PART_UPLOAD_THRESHOLD = "multi_part_upload_threshold",
            MULTIPART_CHUNKSIZE = "multipart_chunksize",
            MULTIPART_MAX_CONCURRENCY = "multipart_max_concurrency",
            HOST = "host",
            PORT = "port",
            REGION = "region",
            SECURE = "secure",
            SSL_VERIFY = "ssl_verify",
            KMS_ID = "kms_id",
            SSE_C_KEY = "sse_c_key",
            BACKUP_GRACE_PERIOD_IN_DAYS = "backup_grace_period_in_days",
            READ_TIMEOUT = "read_timeout",
            S3_ADDRESSING_STYLE = "s3_addressing_style",
            ENDPOINT = "endpoint",
            MAX_RETRIES = "max_retries",
            RETRY_TIMEOUT = "retry_timeout",
        ],
        accepted: ["host_file_separator", "aws_cli_path", "use_sudo_for_restore", "k8s_mode"],
    }
    cassandra {
        read: [
            CONFIG_FILE = "config_file",
            NODETOOL_USERNAME = "nodetool_username",
            NODETOOL_PASSWORD = "nodetool_password",
            NODETOOL_PASSWORD_FILE_PATH = "nodetool_password_file_path",
            NODETOOL_HOST = "nodetool_host",
            NODETOOL_PORT = "nodetool_port",
            NODETOOL_EXECUTABLE = "nodetool_executable",
            NODETOOL_FLAGS = "nodetool_flags",
            NODETOOL_SSL = "nodetool_ssl",
            RESOLVE_IP_ADDRESSES = "resolve_ip_addresses",
        ],
        accepted: [
            "start_cmd",
            "stop_cmd",
            "check_running",
            "cql_username",
            "cql_password",
            "cql_k8s_secrets_path",
            "nodetool_k8s_secrets_path",
            "certfile",
            "usercert",
            "userkey",
            "sstableloader_bin",
            "sstableloader_ts",
            "sstableloader_tspw",
            "sstableloader_ks",
            "sstableloader_kspw",
            "use_sudo",
            "is_ccm",
            "sstableloader_truststore",
            "sstableloader_keystore",
        ],
    }
    grpc {
        read: [
            ENABLED = "enabled",
            PORT = "port",
            MAX_SEND_MESSAGE_LENGTH = "max_send_message_length",
            MAX_RECEIVE_MESSAGE_LENGTH = "max_receive_message_length",
            CA_CERT = "ca_cert",
            TLS_CERT = "tls_cert",
            TLS_KEY = "tls_key",
        ],
        accepted: [],
    }
    kubernetes {
        read: [
            ENABLED = "enabled",
            CASSANDRA_URL = "cassandra_url",
            USE_MGMT_API = "use_mgmt_api",
            CA_CERT = "ca_cert",
            TLS_CERT = "tls_cert",
            TLS_KEY = "tls_key",
        ],
        accepted: [],
    }
    checks {
        read: [ENABLE_MD5_CHECKS = "enable_md5_checks"],
        accepted: ["health_check", "query", "expected_rows", "expected_result", "md5_check_concurrency"],
    }
    monitoring {
        read: [METRICS_PORT = "metrics_port"],
        accepted: ["monitoring_provider", "send_backup_name_tag"],
    }
    verification {
        read: [INTERVAL_HOURS = "interval_hours", DEEP = "deep"],
        accepted: [],
    }
    logging {
        read: [LEVEL = "level", FORMAT = "format"],
        accepted: ["enabled", "file", "maxbytes", "backupcount"],
    }
    ssh {
        read: [],
        accepted: ["username", "key_file", "port", "cert_file", "use_pty", "keepalive_seconds", "login_shell"],
    }
}

#[cfg(test)]
mod tests {
    use super::KNOWN;

    #[test]
    fn every_key_is_declared_once() {
        for (section, keys) in KNOWN {
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), keys.len(), "[{section}] declares a key twice");
        }
        let sections: Vec<_> = KNOWN.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sections,
            ["storage", "cassandra", "grpc", "kubernetes", "checks", "monitoring", "verification", "logging", "ssh"]
        );
        let count: usize = KNOWN.iter().map(|(_, k)| k.len()).sum();
        assert_eq!(count, 98, "the keys of Medusa's medusa.ini, and medusa-rs' own (endpoint, max_retries, ...)");
    }
}
