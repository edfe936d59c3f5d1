//! Progress counters of one backup or restore: written by the transfers, read by status
//! replies, progress logs and metrics. A leaf: it depends on nothing else in the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// How often [`log_every`] logs.
pub const LOG_PERIOD: Duration = Duration::from_secs(5);

/// Logs `p` as `message` every [`LOG_PERIOD`] (files, bytes, rate and ETA) until dropped or
/// aborted: what `kubectl logs` shows of a long backup or restore.
pub async fn log_every(p: Arc<Progress>, message: &'static str) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(LOG_PERIOD).await;
        let (done, total) = (p.bytes_done.load(Ordering::Relaxed), p.bytes_total.load(Ordering::Relaxed));
        let (files, files_total) = (p.files_done.load(Ordering::Relaxed), p.files_total.load(Ordering::Relaxed));
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { (total.saturating_sub(done)) as f64 / rate } else { f64::INFINITY };
        tracing::info!(
            files_done = files,
            files_total,
            bytes_done = done,
            bytes_total = total,
            mib_per_s = format!("{:.1}", rate / 1048576.0),
            eta_s = format!("{eta:.0}"),
            "{message}"
        );
    }
}
