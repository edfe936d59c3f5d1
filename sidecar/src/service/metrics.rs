//! Prometheus metrics: counters and gauges in one process-wide registry, rendered in the text
//! exposition format and served on `[monitoring] metrics_port` (9180 by default, 0 = off).
//!
//! restore-init runs in another container; it writes its final figures to
//! `<state dir>/restore.prom`, which the sidecar appends to its own output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::transfer::progress::Progress;

/// Counters labelled by one value (mode, operation).
#[derive(Default)]
struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    fn add(&self, label: &str, v: u64) {
        *self.0.lock().expect("metrics lock").entry(label.to_string()).or_default() += v;
    }
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    started: Labelled,
    succeeded: Labelled,
    failed: Labelled,
    duration_sum_ms: AtomicU64,
    duration_count: AtomicU64,
    /// Completed backups per bucket of [`DURATION_BUCKETS`] (the first bound at or above their
    /// duration), then beyond the last.
    duration_buckets: Mutex<[u64; DURATION_BUCKETS.len() + 1]>,
    uploaded_bytes: AtomicU64,
    uploaded_files: AtomicU64,
    reused_bytes: AtomicU64,
    reused_files: AtomicU64,
    last_success: AtomicU64,
    running: Mutex<Option<Arc<Progress>>>,
    purges: AtomicU64,
    purge_errors: AtomicU64,
    purged_backups: AtomicU64,
    purged_objects: AtomicU64,
    purged_bytes: AtomicU64,
    restore_file: Mutex<Option<PathBuf>>,
    /// 1 when the last storage check succeeded, else 0 (also before the first check).
    storage_reachable: AtomicU64,
    verifications: AtomicU64,
    verify_last_time: AtomicU64,
    /// 1: the last verification found no problem; 0: it found some or could not run.
    verify_last_ok: AtomicU64,
    verify_last_objects: AtomicU64,
    verify_last_problems: AtomicU64,
}

/// The process's registry.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

impl Metrics {
    /// A backup job was accepted.
    pub fn backup_started(&self, mode: &str) {
        self.started.add(mode, 1);
    }

    /// A backup is running with this progress (until `backup_ended`).
    pub fn backup_running(&self, p: Arc<Progress>) {
        *self.running.lock().expect("metrics lock") = Some(p);
    }

    /// A backup succeeded.
    #[allow(clippy::too_many_arguments)]
    pub fn backup_succeeded(
        &self,
        mode: &str,
        seconds: f64,
        up_bytes: u64,
        up_files: u64,
        all_bytes: u64,
        all_files: u64,
        at: i64,
    ) {
        self.succeeded.add(mode, 1);
        self.duration_sum_ms.fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        // Per bucket (the encoder makes them cumulative): the first bound that holds it.
        let i = DURATION_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets.lock().expect("metrics lock")[i] += 1;
        self.uploaded_bytes.fetch_add(up_bytes, Ordering::Relaxed);
        self.uploaded_files.fetch_add(up_files, Ordering::Relaxed);
        self.reused_bytes.fetch_add(all_bytes.saturating_sub(up_bytes), Ordering::Relaxed);
        self.reused_files.fetch_add(all_files.saturating_sub(up_files), Ordering::Relaxed);
        self.last_success.store(at.max(0) as u64, Ordering::Relaxed);
        *self.running.lock().expect("metrics lock") = None;
    }

    /// A backup failed.
    pub fn backup_failed(&self, mode: &str) {
        self.failed.add(mode, 1);
        *self.running.lock().expect("metrics lock") = None;
    }

    /// A purge finished.
    pub fn purged(&self, backups: u64, objects: u64, bytes: u64) {
        self.purges.fetch_add(1, Ordering::Relaxed);
        self.purged_backups.fetch_add(backups, Ordering::Relaxed);
        self.purged_objects.fetch_add(objects, Ordering::Relaxed);
        self.purged_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A purge failed.
    pub fn purge_failed(&self) {
        self.purge_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The finish time of the last successful backup known from before this process started
    /// (the job journal), so that a "time since the last backup" alert does not fire on every
    /// restart.
    pub fn restore_last_success(&self, at: i64) {
        self.last_success.fetch_max(at.max(0) as u64, Ordering::Relaxed);
    }

    /// A verification ended at `at`: `objects` checked, `problems` found (`None`: it could
    /// not run).
    pub fn verified(&self, at: i64, objects: u64, problems: Option<u64>) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.verify_last_time.store(at.max(0) as u64, Ordering::Relaxed);
        self.verify_last_ok.store(u64::from(problems == Some(0)), Ordering::Relaxed);
        self.verify_last_objects.store(objects, Ordering::Relaxed);
        self.verify_last_problems.store(problems.unwrap_or(0), Ordering::Relaxed);
    }

    /// The last storage check's outcome.
    pub fn storage_reachable(&self, yes: bool) {
        self.storage_reachable.store(u64::from(yes), Ordering::Relaxed);
    }

    /// Where restore-init leaves its figures.
    pub fn set_restore_file(&self, path: PathBuf) {
        *self.restore_file.lock().expect("metrics lock") = Some(path);
    }

    /// The text exposition (Prometheus text format 0.0.4, encoded by `prometheus-client`), then
    /// restore-init's figures when they are well-formed.
    pub fn render(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Scrape));
        let mut o = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut o, &registry).expect("writing to a String");
        if let Some(p) = &*self.restore_file.lock().expect("metrics lock")
            && let Ok(text) = std::fs::read_to_string(p)
        {
            if valid_exposition(&text) {
                o.push_str(&text);
            } else {
                tracing::warn!(path = %p.display(), "restore figures are damaged: left out of the scrape");
            }
        }
        o
    }

    /// Counters (names without `_total`, which the encoder adds) and gauges: name, help, value.
    #[allow(clippy::type_complexity)]
    fn scalars(&self) -> (Vec<(&'static str, &'static str, u64)>, Vec<(&'static str, &'static str, i64)>) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (done, total, fdone, ftotal) = match &*self.running.lock().expect("metrics lock") {
            Some(p) => (v(&p.bytes_done), v(&p.bytes_total), v(&p.files_done), v(&p.files_total)),
            None => (0, 0, 0, 0),
        };
        let counters = vec![
            ("medusa_backup_uploaded_bytes", "Bytes uploaded by completed backups.", v(&self.uploaded_bytes)),
            ("medusa_backup_uploaded_files", "Files uploaded by completed backups.", v(&self.uploaded_files)),
            (
                "medusa_backup_reused_bytes",
                "Bytes of completed differential backups reused from storage.",
                v(&self.reused_bytes),
            ),
            (
                "medusa_backup_reused_files",
                "Files of completed differential backups reused from storage.",
                v(&self.reused_files),
            ),
            ("medusa_purges", "Purges completed.", v(&self.purges)),
            ("medusa_purge_errors", "Purges failed.", v(&self.purge_errors)),
            ("medusa_purged_backups", "Node backups deleted by purges.", v(&self.purged_backups)),
            ("medusa_purged_objects", "Objects deleted by purges.", v(&self.purged_objects)),
            ("medusa_purged_bytes", "Bytes deleted by purges.", v(&self.purged_bytes)),
            ("medusa_verifications", "Backup verifications run (VerifyBackup and scheduled).", v(&self.verifications)),
        ];
        let i = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let gauges = vec![
            (
                "medusa_last_successful_backup_timestamp_seconds",
                "Finish time of the last successful backup (Unix seconds).",
                i(v(&self.last_success)),
            ),
            ("medusa_backup_running_bytes_done", "Bytes done by the running backup.", i(done)),
            ("medusa_backup_running_bytes_total", "Bytes of the running backup.", i(total)),
            ("medusa_backup_running_files_done", "Files done by the running backup.", i(fdone)),
            ("medusa_backup_running_files_total", "Files of the running backup.", i(ftotal)),
            (
                "medusa_storage_reachable",
                "1 when the last storage check (every 30 s) succeeded, else 0.",
                i(v(&self.storage_reachable)),
            ),
            (
                "medusa_verify_last_timestamp_seconds",
                "End of the last backup verification (Unix seconds), 0 before the first.",
                i(v(&self.verify_last_time)),
            ),
            (
                "medusa_verify_last_success",
                "1 when the last verification found every object sound, else 0.",
                i(v(&self.verify_last_ok)),
            ),
            (
                "medusa_verify_last_objects_checked",
                "Objects the last verification checked.",
                i(v(&self.verify_last_objects)),
            ),
            ("medusa_verify_last_problems", "Problems the last verification found.", i(v(&self.verify_last_problems))),
        ];
        (counters, gauges)
    }
}

/// Upper bounds of the backup duration histogram, in seconds (a minute to two days).
const DURATION_BUCKETS: [f64; 9] = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 43_200.0, 172_800.0];

/// Reads the process's figures at scrape time for `prometheus-client`'s encoder.
#[derive(Debug)]
struct Scrape;

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut e: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let m = global();
        let storage_errors = Labelled::default();
        for (op, n) in crate::store::error_counts() {
            storage_errors.add(op, n);
        }
        let families = [
            ("medusa_backups_started", "Backups accepted, by mode.", "mode", &m.started),
            ("medusa_backups_succeeded", "Backups completed, by mode.", "mode", &m.succeeded),
            ("medusa_backups_failed", "Backups failed, by mode.", "mode", &m.failed),
            (
                "medusa_storage_errors",
                "Storage requests that failed after retries, by operation.",
                "operation",
                &storage_errors,
            ),
        ];
        for (name, help, label, values) in families {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, n) in values.0.lock().expect("metrics lock").iter() {
                let labels = vec![(label.to_string(), value.clone())];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let sum = m.duration_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let count = m.duration_count.load(Ordering::Relaxed);
        let buckets: Vec<(f64, u64)> = {
            let counts = m.duration_buckets.lock().expect("metrics lock");
            DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]).zip(counts.iter().copied()).collect()
        };
        let help = "Wall time of completed backups.";
        let mut d = e.encode_descriptor("medusa_backup_duration_seconds", help, None, MetricType::Histogram)?;
        d.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        let (counters, gauges) = m.scalars();
        for (name, help, v) in counters {
            ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

/// Serves `GET` and `HEAD /metrics` on `listener` until the task is dropped (axum over hyper).
pub async fn serve(listener: tokio::net::TcpListener) {
    async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], global().render())
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found: try /metrics\n") });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the metrics endpoint stopped");
    }
}

/// Whether `text` is made of Prometheus text-format lines (comments, blanks, and
/// `name[{labels}] value [timestamp]` samples): a damaged `restore.prom` must not break the
/// whole scrape.
fn valid_exposition(text: &str) -> bool {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).all(|l| {
        let (series, rest) = match l.find('}') {
            Some(i) if l.contains('{') => (&l[..=i], &l[i + 1..]),
            _ => l.split_once(' ').map_or((l, ""), |(a, b)| (a, b)),
        };
        let name = series.split('{').next().unwrap_or("");
        let name_ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        let mut fields = rest.split_whitespace();
        let value_ok = fields.next().is_some_and(|v| v.parse::<f64>().is_ok());
        name_ok && value_ok && fields.all(|t| t.parse::<i64>().is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::valid_exposition;

    #[test]
    fn damaged_restore_figures_are_recognised() {
        assert!(valid_exposition("# HELP a b\n# TYPE a gauge\na 1\nb{x=\"y z\"} 2.5 1700000000\n\n"));
        assert!(!valid_exposition("a 1\nthis is not a sample\n"));
        assert!(!valid_exposition("a\n"));
        assert!(!valid_exposition("a one\n"));
        assert!(!valid_exposition("\u{0}\u{1}garbage 1 2 3\n"));
    }
}
