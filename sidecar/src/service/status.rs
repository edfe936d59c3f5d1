//! The one place where errors become gRPC statuses. Handlers fail with an [`RpcError`]; its
//! conversion picks the code and a message that says what to do (the README's table of codes):
//! INVALID_ARGUMENT for bad input, NOT_FOUND, FAILED_PRECONDITION for what the user or the
//! configuration must change, RESOURCE_EXHAUSTED for a full queue, UNAVAILABLE for what waiting
//! can fix (read from each error's `is_retryable()`), INTERNAL only for what should not happen.

use tonic::Status;

use crate::backup::cassandra::NodeError;
use crate::format::names::{BackupName, InvalidName};
use crate::service::jobs::SubmitError;
use crate::store::StorageError;

/// Why an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A name in the request is not valid.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The job table did not accept a backup.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Cassandra could not be asked.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The named backup does not exist (on `node`, when given).
    #[error("backup {name} does not exist{}", node.as_ref().map(|n| format!(" on node {n}")).unwrap_or_default())]
    NoSuchBackup {
        /// The backup.
        name: BackupName,
        /// The node asked about.
        node: Option<String>,
    },
    /// The backup runs on this node, which the request needs finished.
    #[error("backup {0} is running on this node; wait until it finishes")]
    Running(BackupName),
    /// The backup the request waited for failed.
    #[error("backup {name} failed: {source}")]
    BackupFailed {
        /// The backup.
        name: BackupName,
        /// Why.
        source: BackupFailure,
    },
    /// The request cannot be carried out in this cluster as it is (the message says why).
    #[error("{0}")]
    Precondition(String),
    /// The request itself is wrong (the message says what to fix).
    #[error("{0}")]
    Invalid(String),
    /// Something the request names does not exist (the message says what).
    #[error("{0}")]
    NotFound(String),
    /// A local file could not be written.
    #[error("writing {path}: {source}")]
    LocalWrite {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),
}

/// The reason of a failed backup, as the job table recorded it.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct BackupFailure {
    /// The recorded reason.
    pub reason: String,
    /// Whether trying again later can help.
    pub retryable: bool,
    /// Whether a backup of that name was already stored (nothing was done).
    pub name_taken: bool,
}

fn storage_status(e: &StorageError) -> Status {
    match e {
        StorageError::NotFound { .. } => Status::not_found(e.to_string()),
        _ if e.is_retryable() => Status::unavailable(e.to_string()),
        StorageError::Unavailable { .. } | StorageError::Refused { .. } | StorageError::Config(_) => {
            Status::failed_precondition(format!(
                "{e} (check [storage] credentials, bucket and permissions in medusa.ini)"
            ))
        }
    }
}

impl From<RpcError> for Status {
    fn from(e: RpcError) -> Status {
        let msg = e.to_string();
        match &e {
            RpcError::InvalidName(_) => Status::invalid_argument(msg),
            RpcError::Storage(s) => storage_status(s),
            RpcError::Submit(SubmitError::ShuttingDown) => Status::unavailable(msg),
            RpcError::Submit(SubmitError::QueueFull(_)) => Status::resource_exhausted(msg),
            RpcError::Submit(SubmitError::Incomplete { .. }) => Status::failed_precondition(msg),
            RpcError::Node(n) if n.is_retryable() => Status::unavailable(msg),
            RpcError::Node(_) => Status::failed_precondition(msg),
            RpcError::NoSuchBackup { .. } | RpcError::NotFound(_) => Status::not_found(msg),
            RpcError::Invalid(_) => Status::invalid_argument(msg),
            RpcError::Running(_) | RpcError::Precondition(_) => Status::failed_precondition(msg),
            RpcError::BackupFailed { source, .. } if source.name_taken => Status::already_exists(msg),
            RpcError::BackupFailed { source, .. } if source.retryable => Status::unavailable(msg),
            RpcError::BackupFailed { .. } | RpcError::LocalWrite { .. } | RpcError::Internal(_) => {
                Status::internal(msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_error() {
        let name = BackupName::new("b").unwrap();
        let code = |e: RpcError| Status::from(e).code();
        assert_eq!(code(BackupName::new("a/b").unwrap_err().into()), tonic::Code::InvalidArgument);
        assert_eq!(code(StorageError::NotFound { key: "k".into() }.into()), tonic::Code::NotFound);
        assert_eq!(code(StorageError::Config("x".into()).into()), tonic::Code::FailedPrecondition);
        assert_eq!(code(SubmitError::QueueFull(8).into()), tonic::Code::ResourceExhausted);
        assert_eq!(code(SubmitError::ShuttingDown.into()), tonic::Code::Unavailable);
        assert_eq!(code(RpcError::NoSuchBackup { name: name.clone(), node: None }), tonic::Code::NotFound);
        assert_eq!(code(RpcError::Running(name.clone())), tonic::Code::FailedPrecondition);
        let failure = |retryable| BackupFailure { reason: "r".into(), retryable, name_taken: false };
        let failed = |retryable| RpcError::BackupFailed { name: name.clone(), source: failure(retryable) };
        assert_eq!(code(failed(true)), tonic::Code::Unavailable);
        assert_eq!(code(failed(false)), tonic::Code::Internal);
        let source = BackupFailure { reason: "r".into(), retryable: false, name_taken: true };
        assert_eq!(code(RpcError::BackupFailed { name: name.clone(), source }), tonic::Code::AlreadyExists);
        assert_eq!(code(NodeError::Protocol("x".into()).into()), tonic::Code::FailedPrecondition);
        let http = NodeError::Http { method: "GET", url: "u".into(), status: 503, body: String::new() };
        assert_eq!(code(http.into()), tonic::Code::Unavailable);
    }
}
