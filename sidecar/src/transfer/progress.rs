//! Progress counters of one backup or restore: written by the transfers, read by status
//! replies, progress logs and metrics. A leaf: it depends on nothing else in the engine.

use std::sync::atomic::AtomicU64;

/// Counters shared with status reporting.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read and sent so far (uploads) or verified (reuse).
    pub bytes_done: AtomicU64,
    /// Total bytes of the backup.
    pub bytes_total: AtomicU64,
    /// Files finished.
    pub files_done: AtomicU64,
    /// Files in the backup.
    pub files_total: AtomicU64,
    /// Bytes actually uploaded.
    pub bytes_uploaded: AtomicU64,
    /// Files actually uploaded.
    pub files_uploaded: AtomicU64,
}
