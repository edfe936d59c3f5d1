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
//! 4. the same through nodetool (`use_mgmt_api = 0`), as Python Medusa reaches the node here,
//! 5. while Python Medusa 0.31 backs it up (`medusa backup-node --mode full`, nodetool),
//! 6. with no backup, only the Management API calls of the last medusa-rs backup replayed: the
//!    stand-in (`RealMgmtApi`) starts a nodetool JVM for each call, which the real Management
//!    API (inside Cassandra's JVM) does not, so this row is the stand-in's share of row 2,
//! 7. alone again,
//!
//! `LIVE_ROUNDS` times (default 1; the order of 2-6 reversed every other round, the replay
//! last), with `LIVE_TIMELINE` set also per second of each backup: requests, p99, max and the
//! API calls arriving. All to `local` storage on the same disk (where `transfer_max_bandwidth`
//! does not apply: as in Medusa, it caps S3 transfers; Python Medusa cannot list s3s-fs
//! buckets, so both use `local`). For each: the backup's duration and the p50 / p99 of the
//! latencies of the requests sent while the backup ran (the whole run for idle), with the
//! request and error counts. Run:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! MEDUSA_RS_TOOLS=$PWD/.tools cargo test --release -p medusa-tests --test it -- --ignored \
//!     cassandra::live_load::live_load_5_0 --nocapture
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use harness::cassandra::{CASSANDRA_5, TimedCall, WorkDir, cassandra_tools, exclusive, require_installed, scripts_dir};
use medusa::service::pb::backup_request::Mode;
use medusa_tests::{Backend, Kind};

use super::LOCK_LIMIT;
use super::pod::Access;
use super::pod::backup;
use super::python::{PREFIX, PyMedusa, pod_of};

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

/// Per second of `[from, to]`: requests sent, their p99 and max, and the Management API calls
/// that arrived in it (the stand-in starts a nodetool JVM for each): where a backup's cost lands.
fn timeline(file: &Path, from: f64, to: f64, calls: &[TimedCall]) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let seconds = (to - from).ceil().max(1.0) as usize;
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); seconds];
    for line in text.lines() {
        let Ok((t, ms, _)) = serde_json::from_str::<(f64, f64, bool)>(line) else { continue };
        if t >= from && t < to {
            buckets[((t - from) as usize).min(seconds - 1)].push(ms);
        }
    }
    println!("  {:>4} {:>5} {:>8} {:>8}  API calls arriving", "s", "reqs", "p99 ms", "max ms");
    for (i, b) in buckets.iter_mut().enumerate() {
        b.sort_by(f64::total_cmp);
        let arriving: Vec<String> = calls
            .iter()
            .filter(|c| c.start >= from + i as f64 && c.start < from + i as f64 + 1.0)
            .map(|c| format!("{} ({:.1} s)", c.call, c.end - c.start))
            .collect();
        println!(
            "  {i:>4} {:>5} {:>8.1} {:>8.1}  {}",
            b.len(),
            percentile(b, 0.99),
            b.last().copied().unwrap_or(f64::NAN),
            arriving.join(", ")
        );
    }
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
    api: Option<&harness::cassandra::RealMgmtApi>,
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
        Some((t0, t1, secs)) => {
            if std::env::var_os("LIVE_TIMELINE").is_some() {
                println!("[live] {case}: timeline");
                timeline(&out, t0, t1, &api.map(|a| a.timed_calls()).unwrap_or_default());
            }
            stats(case, &out, Some((t0, t1)), Some(secs))
        }
        None => stats(case, &out, None, None),
    }
}

/// The backups measured under load, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// medusa-rs at its defaults (nice 10).
    Rs,
    /// medusa-rs with `MEDUSA_RS_NICE=0`.
    RsNice0,
    /// medusa-rs reaching the node through nodetool (`use_mgmt_api = 0`), as Python Medusa
    /// does here: no Management API stand-in.
    RsNodetool,
    /// Python Medusa 0.31, `backup-node --mode full` (nodetool).
    Python,
    /// No backup: the Management API calls the last medusa-rs backup made, replayed in order
    /// (the stand-in runs a nodetool JVM for each; the real API answers inside Cassandra's).
    ApiOnly,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Rs => "medusa-rs",
            Case::RsNice0 => "medusa-rs, MEDUSA_RS_NICE=0",
            Case::RsNodetool => "medusa-rs, nodetool",
            Case::Python => "Python Medusa 0.31",
            Case::ApiOnly => "API calls of a backup only",
        }
    }
}

async fn live_load(version: &str) {
    require_installed(version).unwrap();
    let _lock = exclusive(LOCK_LIMIT).await.unwrap();
    let (gib, rate) = (env_or("LIVE_GIB", 2.0f64), env_or("LIVE_RATE", 300.0f64));
    let rounds = env_or("LIVE_ROUNDS", 1usize);
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
    let mut idle = vec![under_load::<std::future::Ready<()>>("idle", &dir, rate, rows, None, None).await];
    let mut rows_of: Vec<(Case, Vec<Row>)> = Vec::new();
    let mut last_rs_calls: Vec<TimedCall> = Vec::new();
    let mut running = (Case::Rs, Access::MgmtApi);
    for round in 0..rounds {
        let mut cases = vec![Case::Rs, Case::RsNice0, Case::RsNodetool, Case::Python, Case::ApiOnly];
        if round % 2 == 1 {
            cases.reverse();
            // The replay needs a medusa-rs backup's calls first.
            cases.retain(|c| *c != Case::ApiOnly);
            cases.push(Case::ApiOnly);
        }
        for case in cases {
            let name = format!("live-{round}-{case:?}").to_lowercase();
            let access = if case == Case::RsNodetool { Access::Nodetool } else { Access::MgmtApi };
            let sidecar = (if case == Case::RsNice0 { Case::RsNice0 } else { Case::Rs }, access);
            let ours = matches!(case, Case::Rs | Case::RsNice0 | Case::RsNodetool);
            if ours && running != sidecar {
                pod.stop_sidecar().await.unwrap();
                pod.sidecar_env = match sidecar.0 {
                    Case::RsNice0 => vec![("MEDUSA_RS_NICE".into(), "0".into())],
                    _ => vec![],
                };
                pod.configure(&backend, PREFIX, access).await.unwrap();
                pod.start_sidecar().await.unwrap();
                running = sidecar;
            }
            let api = pod.api.as_ref().unwrap();
            let before = api.timed_calls().len();
            let p = &pod;
            let py_ref = &py;
            let replayed = last_rs_calls.clone();
            let row = under_load(
                case.label(),
                &dir,
                rate,
                rows,
                Some(async move {
                    match case {
                        Case::Rs | Case::RsNice0 | Case::RsNodetool => {
                            backup(&[p], &name, Mode::Full).await.unwrap();
                        }
                        Case::Python => {
                            py_ref.ok(&["backup-node", "--backup-name", &name, "--mode", "full"], version).await;
                        }
                        Case::ApiOnly => p.api.as_ref().unwrap().replay(&replayed).await.unwrap(),
                    }
                }),
                Some(api),
            )
            .await;
            if matches!(case, Case::Rs | Case::RsNice0) {
                // The calls of a backup through the Management API. Readiness probes of the sidecar's start are not part of a backup.
                last_rs_calls =
                    api.timed_calls()[before..].iter().filter(|c| !c.call.contains("/probes/")).cloned().collect();
            }
            match rows_of.iter_mut().find(|(c, _)| *c == case) {
                Some((_, v)) => v.push(row),
                None => rows_of.push((case, vec![row])),
            }
        }
        idle.push(under_load::<std::future::Ready<()>>("idle", &dir, rate, rows, None, None).await);
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n== live node under {rate} requests/s (half reads, half writes), {gib} GiB, Cassandra {version}, {rounds} round(s) =="
    );
    println!("{:<32} {:>9} {:>8} {:>8} {:>9} {:>7}", "while", "backup s", "p50 ms", "p99 ms", "requests", "errors");
    let print = |r: &Row| {
        let secs = r.backup_secs.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
        println!("{:<32} {secs:>9} {:>8.2} {:>8.2} {:>9} {:>7}", r.case, r.p50, r.p99, r.requests, r.errors);
    };
    idle.iter().for_each(print);
    for (_, v) in &rows_of {
        v.iter().for_each(print);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let idle_p99 = median(idle.iter().map(|r| r.p99).collect());
    println!(
        "p99 over the idle p99 (median of {} idle runs, {idle_p99:.2} ms), median over rounds [each round]:",
        idle.len()
    );
    for (case, v) in &rows_of {
        let ratios: Vec<String> = v.iter().map(|r| format!("{:.2}", r.p99 / idle_p99)).collect();
        let secs = median(v.iter().filter_map(|r| r.backup_secs).collect());
        println!(
            "  {:<32} {:.2}x [{}], backup {secs:.1} s",
            case.label(),
            median(v.iter().map(|r| r.p99).collect()) / idle_p99,
            ratios.join(" ")
        );
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
