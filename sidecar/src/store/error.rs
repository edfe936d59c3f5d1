//! Storage errors, classified for the retry policy and for gRPC status codes, and the count of
//! failed requests by operation that the metrics read.

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

pub(super) fn count_error(op: &'static str) {
    *ERRORS.lock().expect("storage error counts").entry(op).or_default() += 1;
}

/// Failed storage requests by operation (see [`StorageError::from_store`]).
pub fn error_counts() -> Vec<(&'static str, u64)> {
    ERRORS.lock().expect("storage error counts").iter().map(|(k, v)| (*k, *v)).collect()
}
