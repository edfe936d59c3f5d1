//! Benchmark, not a test (`#[ignore]`, run by hand): what a backup does to the clients of the
//! live node it backs up. One real Cassandra 5.0 node filled with `LIVE_GIB` GiB (default 2) of
//! 4 KiB values (`scripts/cassandra/load.py fill`), flushed; then a steady open-loop CQL load
//! (`load.py run`: `LIVE_RATE` requests/s, default 300, half reads of random keys, half
//! overwrites, each request's latency recorded) runs
//!
//! 1. alone (idle, 40 s),
//! 2. while medusa-rs backs the node up (sidecar, AsyncBackup full, Management API mode) at its
//!    default CPU priority (nice 10),
//! 3. the same with `MEDUSA_RS_NICE=0` (the priority Cassandra has),
//! 4. while Python Medusa 0.31 backs it up (`medusa backup-node --mode full`, nodetool),
//! 5. alone again,
//!
//! all to `local` storage on the same disk (where `transfer_max_bandwidth` does not apply: as in
//! Medusa, it caps S3 transfers; Python Medusa cannot list s3s-fs buckets, so both use `local`). For each: the backup's duration and the p50 / p99
//! of the latencies of the requests sent while the backup ran (the whole run for idle), with the
//! request and error counts. Run:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! MEDUSA_RS_TOOLS=$PWD/.tools cargo test --release -p medusa-tests --test it -- --ignored \
//!     cassandra::live_load::live_load_5_0 --nocapture
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use harness::cassandra::{CASSANDRA_5, WorkDir, cassandra_tools, exclusive, require_installed, scripts_dir};
use medusa::service::pb::backup_request::Mode;
use medusa_tests::{Backend, Kind};

use super::LOCK_LIMIT;
use super::pod::backup;
use super::python::{PyMedusa, pod_of};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load_py() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(cassandra_tools().join("venv/bin/python"));
    c.arg(scripts_dir().join("load.py")).kill_on_drop(true);
    c
}

/// One row of the result.
struct Row {
    case: String,
    backup_secs: Option<f64>,
    p50: f64,
    p99: f64,
    requests: usize,
    errors: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// The latencies of `file` sent within `[from, to]` (Unix seconds; all when `None`).
fn stats(case: &str, file: &Path, window: Option<(f64, f64)>, backup_secs: Option<f64>) -> Row {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut lat = Vec::new();
    let mut errors = 0;
    for line in text.lines() {
        let v: (f64, f64, bool) = serde_json::from_str(line).unwrap();
        if window.is_some_and(|(a, b)| v.0 < a || v.0 > b) {
            continue;
        }
        if v.2 { lat.push(v.1) } else { errors += 1 }
    }
    lat.sort_by(f64::total_cmp);
    Row {
        case: case.into(),
        backup_secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        requests: lat.len() + errors,
        errors,
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Runs the load while `work` runs (plus 3 s on each side); the row for the window of `work`.
async fn under_load<F: std::future::Future<Output = ()>>(
    case: &str,
    dir: &Path,
    rate: f64,
    rows: u64,
    work: Option<F>,
) -> Row {
    let out = dir.join(format!("load-{}.jsonl", case.replace(' ', "-")));
    let stop = dir.join("stop");
    let _ = std::fs::remove_file(&stop);
    let seconds = if work.is_some() { 3600.0 } else { 40.0 };
    let mut load = load_py();
    load.args(["run", "--rate", &rate.to_string(), "--seconds", &seconds.to_string(), "--rows", &rows.to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--stop")
        .arg(&stop);
    let child = load.output();
    let driver = async {
        let work = work?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (t0, i0) = (now(), Instant::now());
        work.await;
        let (t1, secs) = (now(), i0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(&stop, "").unwrap();
        Some((t0, t1, secs))
    };
    let (out_status, window) = tokio::join!(child, driver);
    let o = out_status.unwrap();
    assert!(o.status.success(), "load.py: {}", String::from_utf8_lossy(&o.stderr));
    println!("[live] {case}: load.py says {}", String::from_utf8_lossy(&o.stdout).trim());
    match window {
        Some((t0, t1, secs)) => stats(case, &out, Some((t0, t1)), Some(secs)),
        None => stats(case, &out, None, None),
    }
}

async fn live_load(version: &str) {
    require_installed(version).unwrap();
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let (gib, rate) = (env_or("LIVE_GIB", 2.0f64), env_or("LIVE_RATE", 300.0f64));
    let work = WorkDir::new("live-load").unwrap();
    let backend = Backend::start(Kind::Local).await.unwrap();
    let mut pod = pod_of(version, &work, &backend).await;
    let py = PyMedusa::new(&backend, &pod, work.path());
    pod.start_sidecar().await.unwrap();

    let t = Instant::now();
    let out = load_py().args(["fill", "--gib", &gib.to_string()]).output().await.unwrap();
    assert!(out.status.success(), "fill: {}", String::from_utf8_lossy(&out.stderr));
    let filled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    pod.node.nodetool(&["flush"]).await.unwrap();
    let rows = filled["rows"].as_u64().unwrap();
    println!("[live] filled {gib} GiB ({rows} rows) in {:.0} s, flushed", t.elapsed().as_secs_f64());

    let dir = work.path().to_path_buf();
    let mut table = Vec::new();
    table.push(under_load::<std::future::Ready<()>>("idle", &dir, rate, rows, None).await);
    let p = &pod;
    table.push(
        under_load(
            "medusa-rs",
            &dir,
            rate,
            rows,
            Some(async move {
                backup(&[p], "live-1", Mode::Full).await.unwrap();
            }),
        )
        .await,
    );
    pod.stop_sidecar().await.unwrap();
    pod.sidecar_env = vec![("MEDUSA_RS_NICE".into(), "0".into())];
    pod.start_sidecar().await.unwrap();
    let p = &pod;
    table.push(
        under_load(
            "medusa-rs, MEDUSA_RS_NICE=0",
            &dir,
            rate,
            rows,
            Some(async move {
                backup(&[p], "live-2", Mode::Full).await.unwrap();
            }),
        )
        .await,
    );
    let py_ref = &py;
    table.push(
        under_load(
            "Python Medusa 0.31",
            &dir,
            rate,
            rows,
            Some(async move {
                py_ref.ok(&["backup-node", "--backup-name", "py-live-1", "--mode", "full"], version).await;
            }),
        )
        .await,
    );
    table.push(under_load::<std::future::Ready<()>>("idle again", &dir, rate, rows, None).await);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\n== live node under {rate} requests/s (half reads, half writes), {gib} GiB, Cassandra {version} ==");
    println!("{:<32} {:>9} {:>8} {:>8} {:>9} {:>7}", "while", "backup s", "p50 ms", "p99 ms", "requests", "errors");
    for r in &table {
        let secs = r.backup_secs.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
        println!("{:<32} {secs:>9} {:>8.2} {:>8.2} {:>9} {:>7}", r.case, r.p50, r.p99, r.requests, r.errors);
    }
    let idle = (table[0].p99 + table[4].p99) / 2.0;
    println!("p99 over the idle p99 (mean of both idle runs, {idle:.2} ms):");
    for r in &table[1..4] {
        println!("  {:<32} {:.2}x", r.case, r.p99 / idle);
    }
    println!("load average at the end: {}", load.trim());
    pod.stop_sidecar().await.unwrap();
    pod.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand (see the module)"]
async fn live_load_5_0() {
    live_load(CASSANDRA_5).await;
}
