//! Prometheus metrics: counters and gauges in one process-wide registry, rendered in the text
//! exposition format and served on `[monitoring] metrics_port` (9180 by default, 0 = off).
//!
//! restore-init runs in another container; it writes its final figures to
//! `<state dir>/restore.prom`, which the sidecar appends to its own output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
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

    /// The last storage check's outcome.
    pub fn storage_reachable(&self, yes: bool) {
        self.storage_reachable.store(u64::from(yes), Ordering::Relaxed);
    }

    /// Where restore-init leaves its figures.
    pub fn set_restore_file(&self, path: PathBuf) {
        *self.restore_file.lock().expect("metrics lock") = Some(path);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        labelled(&mut o, "medusa_backups_started_total", "Backups accepted, by mode.", "mode", &self.started);
        labelled(&mut o, "medusa_backups_succeeded_total", "Backups completed, by mode.", "mode", &self.succeeded);
        labelled(&mut o, "medusa_backups_failed_total", "Backups failed, by mode.", "mode", &self.failed);
        let _ = writeln!(
            o,
            "# HELP medusa_backup_duration_seconds Wall time of completed backups.\n# TYPE medusa_backup_duration_seconds summary\nmedusa_backup_duration_seconds_sum {}\nmedusa_backup_duration_seconds_count {}",
            get(&self.duration_sum_ms) / 1000.0,
            self.duration_count.load(Ordering::Relaxed)
        );
        for (name, kind, help, v) in self.scalars() {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let storage_errors = Labelled::default();
        for (op, n) in crate::store::error_counts() {
            storage_errors.add(op, n);
        }
        let help = "Storage requests that failed after retries, by operation.";
        labelled(&mut o, "medusa_storage_errors_total", help, "operation", &storage_errors);
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

    /// The unlabelled counters and gauges: name, type, help, value.
    fn scalars(&self) -> Vec<(&'static str, &'static str, &'static str, f64)> {
        let (done, total, fdone, ftotal) = match &*self.running.lock().expect("metrics lock") {
            Some(p) => (get(&p.bytes_done), get(&p.bytes_total), get(&p.files_done), get(&p.files_total)),
            None => (0.0, 0.0, 0.0, 0.0),
        };
        let (counter, gauge) = ("counter", "gauge");
        vec![
            (
                "medusa_backup_uploaded_bytes_total",
                counter,
                "Bytes uploaded by completed backups.",
                get(&self.uploaded_bytes),
            ),
            (
                "medusa_backup_uploaded_files_total",
                counter,
                "Files uploaded by completed backups.",
                get(&self.uploaded_files),
            ),
            (
                "medusa_backup_reused_bytes_total",
                counter,
                "Bytes of completed differential backups reused from storage.",
                get(&self.reused_bytes),
            ),
            (
                "medusa_backup_reused_files_total",
                counter,
                "Files of completed differential backups reused from storage.",
                get(&self.reused_files),
            ),
            (
                "medusa_last_successful_backup_timestamp_seconds",
                gauge,
                "Finish time of the last successful backup (Unix seconds).",
                get(&self.last_success),
            ),
            ("medusa_backup_running_bytes_done", gauge, "Bytes done by the running backup.", done),
            ("medusa_backup_running_bytes_total", gauge, "Bytes of the running backup.", total),
            ("medusa_backup_running_files_done", gauge, "Files done by the running backup.", fdone),
            ("medusa_backup_running_files_total", gauge, "Files of the running backup.", ftotal),
            ("medusa_purges_total", counter, "Purges completed.", get(&self.purges)),
            ("medusa_purge_errors_total", counter, "Purges failed.", get(&self.purge_errors)),
            ("medusa_purged_backups_total", counter, "Node backups deleted by purges.", get(&self.purged_backups)),
            ("medusa_purged_objects_total", counter, "Objects deleted by purges.", get(&self.purged_objects)),
            ("medusa_purged_bytes_total", counter, "Bytes deleted by purges.", get(&self.purged_bytes)),
            (
                "medusa_storage_reachable",
                gauge,
                "1 when the last storage check (every 30 s) succeeded, else 0.",
                get(&self.storage_reachable),
            ),
        ]
    }
}

fn get(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

/// A labelled counter family.
fn labelled(o: &mut String, name: &str, help: &str, label: &str, l: &Labelled) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, v) in l.0.lock().expect("metrics lock").iter() {
        let _ = writeln!(o, "{name}{{{label}=\"{k}\"}} {v}");
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
