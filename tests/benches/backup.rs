//! Backup throughput and memory benchmark: prints a table per data set and asserts no target
//! (only that the backups did what they should). `README.md` beside this file explains the
//! phases and columns.
//!
//! After generating a simulated node it measures, each run on a warm page cache with earlier
//! writes flushed: the baselines `cp -r` and `md5sum` (one process, then two); the engine's
//! transfer path alone (`Transfers::hash_file`; `Transfers::upload_files` in batches; two at a
//! time) and the simulated snapshot alone; then backups to `local` storage, each in a fresh process of this
//! binary (`--backup-child`) so that its peak RSS is the backup's own: full, first differential
//! (it uploads everything: differentials share a data folder that full backups do not fill),
//! +10% differential (after a flush adding 10% new SSTables) and unchanged differential.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{Files, GIB, MIB, field, human, kib, list_files, mbps, own_status, settle};
use futures::{StreamExt, TryStreamExt};
use harness::services::TempDir;
use harness::sim::SimSpec;
use medusa::backup::Engine;
use medusa::format::layout::Mode;
use medusa::format::names::BackupName;
use medusa::store::local::Publish;
use medusa::transfer::{Progress, Upload};
use medusa_tests::{Env, EnvOptions, Kind};
use tokio_util::sync::CancellationToken;

/// Files per `md5sum` invocation (about 0.5 MB of arguments, far below `ARG_MAX`).
const MD5SUM_BATCH: usize = 4000;
/// How often a baseline child's `/proc/<pid>/status` is sampled for its peak RSS (and its exit
/// noticed).
const POLL: Duration = Duration::from_millis(2);
/// Targets: a full backup at 90% of `cp -r`'s speed, an unchanged differential in half a second,
/// a peak RSS below 64 MiB (the sidecar shares the pod with Cassandra).
const TARGET_FULL_VS_CP: f64 = 0.90;
const TARGET_UNCHANGED_SECS: f64 = 0.5;
const TARGET_RSS: u64 = 64 * MIB;
/// The env's `concurrent_transfers`.
const TRANSFERS: usize = 2;
const USAGE: &str = "usage: backup [--small-only | --large-only] [--size-gib X] [--files N] [--runs N]\n\
    --size-gib/--files: one data set of that size instead of both (defaults 2 GiB, 3500 files)\n\
    --runs: runs of each repeatable phase, the fastest is shown (default 3)";

/// A data set: total bytes and files of the backed-up data.
#[derive(Debug, Clone, Copy)]
struct DataSet {
    bytes: u64,
    files: usize,
}

const LARGE: DataSet = DataSet { bytes: 2 * GIB, files: 3_500 };
const SMALL: DataSet = DataSet { bytes: 200 * MIB, files: 32_000 };

/// One measured phase.
struct Row {
    phase: &'static str,
    secs: f64,
    /// User and system CPU seconds.
    cpu: (f64, f64),
    bytes: u64,
    /// Peak RSS in bytes.
    peak: u64,
    /// Peak minus RSS at the start, where known.
    growth: Option<u64>,
    /// What a backup uploaded.
    note: String,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.first().map(String::as_str) == Some("--backup-child") {
        return rt.block_on(backup_child(&args[1..]));
    }
    let (sets, runs) = parse_args(args)?;
    // Each set's files are deleted only after the last set: see `run_set`.
    let mut keep = Vec::new();
    for set in sets {
        keep.push(rt.block_on(run_set(set, runs))?);
    }
    rt.block_on(async move { drop(keep) });
    Ok(())
}

fn parse_args(args: Vec<String>) -> Result<(Vec<DataSet>, usize)> {
    let (mut small, mut large, mut custom, mut runs) = (true, true, None::<DataSet>, 3);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--small-only" => large = false,
            "--large-only" => small = false,
            "--size-gib" => {
                let gib: f64 = value()?.parse().context("--size-gib takes a number")?;
                custom.get_or_insert(LARGE).bytes = (gib * GIB as f64) as u64;
            }
            "--files" => {
                custom.get_or_insert(LARGE).files = value()?.parse().context("--files takes a whole number")?
            }
            "--runs" => runs = value()?.parse::<usize>().context("--runs takes a whole number")?.max(1),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let sets = match custom {
        Some(c) => vec![c],
        None => [(large, LARGE), (small, SMALL)].into_iter().filter(|s| s.0).map(|s| s.1).collect(),
    };
    if sets.is_empty() {
        bail!("--small-only and --large-only together select nothing");
    }
    Ok((sets, runs))
}

/// Measures one data set; returns its node and copies, to be deleted by the caller at the very
/// end (deleting thousands of files just before the next set would slow its file creation).
async fn run_set(set: DataSet, runs: usize) -> Result<(Env, TempDir)> {
    eprintln!("generating a node of {} in ~{} files ...", human(set.bytes), set.files);
    let opts = EnvOptions { spec: SimSpec::sized(set.bytes, set.files, 1), ..EnvOptions::new(Kind::Local) };
    let env = Env::new(opts).await?;
    let data_dir = env.with_sim(|s| s.data_dir.clone()).await;
    let files = list_files(&data_dir)?;
    // Nothing is deleted before the end: on ext4, creating files shortly after deleting many
    // is slow (`recently_deleted` inode scans), which would tax whichever run came next.
    let copies = TempDir::new("bench-cp")?;
    let mut rows = baselines(&files, &data_dir, copies.path(), runs).await?;
    rows.extend(engine_only(&env, &files, &data_dir, runs).await?);
    rows.extend(backups(&env, runs).await?);
    print_table(set, &files, runs, &rows);
    Ok((env, copies))
}

/// `cp -r` of the data directory, `md5sum` of its files in one and in two processes.
async fn baselines(files: &Files, data_dir: &Path, copies: &Path, runs: usize) -> Result<Vec<Row>> {
    eprintln!("baselines: cp -r, md5sum ...");
    let bytes = files.iter().map(|f| f.1).sum();
    let cp = best_of(runs, async |r| {
        let probe = Probe::start(files)?;
        let mut cp = Command::new("cp");
        cp.arg("-r").arg(data_dir).arg(copies.join(format!("copy-{r}")));
        probe.children("cp -r", bytes, run_children(vec![cp], 1, "cp")?)
    });
    let mut rows = vec![cp.await?];
    // A backup to `local` flushes the bucket to disk before its manifest says "complete"
    // (syncfs); the fair copy baseline flushes too.
    let cp_sync = best_of(runs, async |r| {
        let probe = Probe::start(files)?;
        let mut cp = Command::new("cp");
        cp.arg("-r").arg(data_dir).arg(copies.join(format!("copy-sync-{r}")));
        probe.children("cp -r + sync", bytes, run_children(vec![cp, Command::new("sync")], 1, "cp")?)
    });
    rows.push(cp_sync.await?);
    for (phase, procs) in [("md5sum", 1), ("md5sum, 2 processes", 2)] {
        rows.push(
            best_of(runs, async |_| {
                let probe = Probe::start(files)?;
                probe.children(phase, bytes, run_children(md5sum_commands(files), procs, "md5sum")?)
            })
            .await?,
        );
    }
    Ok(rows)
}

/// The engine's read + MD5 path, and its read + MD5 + store path, without a backup around them;
/// the simulated node's snapshot alone.
async fn engine_only(env: &Env, files: &Files, data_dir: &Path, runs: usize) -> Result<Vec<Row>> {
    eprintln!("engine transfers without a backup ...");
    let (node, bytes) = (env.node()?, files.iter().map(|f| f.1).sum());
    let hashed = best_of(runs, async |_| {
        let probe = Probe::start(files)?;
        let work = files.iter().map(|(p, s)| node.transfers.hash_file(p.clone(), *s));
        futures::stream::iter(work).buffer_unordered(TRANSFERS).try_collect::<Vec<_>>().await?;
        probe.own("engine hash only", bytes)
    });
    let hashed = hashed.await?;
    let uploaded = best_of(runs, async |r| {
        let (probe, progress) = (Probe::start(files)?, Arc::new(Progress::default()));
        // In batches as backups make them, of consecutive files (mostly of one directory).
        let (max_files, max_bytes) = node.transfers.batch_limits();
        let mut batches = vec![Vec::new()];
        let mut batch_bytes = 0;
        for (p, size) in files {
            let last = batches.last_mut().expect("non-empty");
            if !last.is_empty() && (last.len() >= max_files || batch_bytes + size > max_bytes) {
                batches.push(Vec::new());
                batch_bytes = 0;
            }
            batch_bytes += size;
            // The data directory's layout, as backups have: one flat directory would be slower.
            let rel = p.strip_prefix(data_dir).unwrap_or(p).to_string_lossy();
            let key = format!("bench-{r}/{rel}");
            let upload = Upload { path: p.clone(), size: *size, key, publish: Publish::InPlace };
            batches.last_mut().expect("non-empty").push(upload);
        }
        let work = batches.into_iter().map(|b| node.transfers.upload_files(b, &progress));
        futures::stream::iter(work).buffer_unordered(TRANSFERS).try_collect::<Vec<_>>().await?;
        probe.own("engine upload only", bytes)
    });
    let uploaded = uploaded.await?;
    // What the simulated Cassandra adds to every backup's wall time (hard links, then unlinks).
    let snapshot = best_of(runs, async |r| {
        let probe = Probe::start(files)?;
        let tag = format!("bench-{r}");
        env.with_sim(move |s| s.take_snapshot(&tag, &[]).and_then(|()| s.clear_snapshot(Some(&tag), &[]))).await?;
        probe.own("sim snapshot + clear", 0)
    });
    Ok(vec![hashed, uploaded, snapshot.await?])
}

/// Full, first differential, +10% differential and unchanged differential backups.
async fn backups(env: &Env, runs: usize) -> Result<Vec<Row>> {
    eprintln!("full backups ...");
    let full =
        best_of(runs, async |r| measure_backup(env, "full backup", &format!("full-{r}"), Mode::Full, false).await);
    let mut rows = vec![full.await?];
    eprintln!("first and +10% differential backups ...");
    rows.push(measure_backup(env, "first differential", "diff-0", Mode::Differential, false).await?);
    env.with_sim(|s| s.flush(2, 0.10).map(|_| ())).await?;
    rows.push(measure_backup(env, "+10% differential", "diff-1", Mode::Differential, false).await?);
    eprintln!("unchanged differential backups ...");
    let same = best_of(runs, async |r| {
        measure_backup(env, "unchanged differential", &format!("same-{r}"), Mode::Differential, true).await
    });
    rows.push(same.await?);
    Ok(rows)
}

/// Runs `run` `runs` times; the run with the shortest wall time.
async fn best_of(runs: usize, mut run: impl AsyncFnMut(usize) -> Result<Row>) -> Result<Row> {
    let mut best: Option<Row> = None;
    for r in 0..runs {
        let row = run(r).await?;
        if best.as_ref().is_none_or(|b| row.secs < b.secs) {
            best = Some(row);
        }
    }
    best.context("no run")
}

/// `md5sum` invocations that together hash every file.
fn md5sum_commands(files: &Files) -> Vec<Command> {
    let batch = MD5SUM_BATCH.min(files.len().div_ceil(2)).max(1); // two at least, for two processes
    let command = |b: &Files| {
        let mut cmd = Command::new("md5sum");
        cmd.args(b.iter().map(|(p, _)| p)).stdout(Stdio::null());
        cmd
    };
    files.chunks(batch).map(command).collect()
}

/// A run being measured: clocks and RSS read after warming the cache and resetting this
/// process' RSS high-water mark.
struct Probe {
    t0: Instant,
    cpu: [f64; 4],
    rss: u64,
}

impl Probe {
    fn start(files: &Files) -> Result<Probe> {
        settle(files)?;
        std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM via /proc/self/clear_refs")?;
        Ok(Probe { rss: own_status("VmRSS:")?, cpu: cpu_times()?, t0: Instant::now() })
    }

    /// A run in this process.
    fn own(self, phase: &'static str, bytes: u64) -> Result<Row> {
        let (secs, cpu, peak) = (self.t0.elapsed().as_secs_f64(), cpu_times()?, own_status("VmHWM:")?);
        let cpu = (cpu[0] - self.cpu[0], cpu[1] - self.cpu[1]);
        Ok(Row { phase, secs, cpu, bytes, peak, growth: Some(peak.saturating_sub(self.rss)), note: String::new() })
    }

    /// A run by child processes, whose peak RSS the caller sampled.
    fn children(self, phase: &'static str, bytes: u64, peak: u64) -> Result<Row> {
        let (secs, cpu) = (self.t0.elapsed().as_secs_f64(), cpu_times()?);
        let cpu = (cpu[2] - self.cpu[2], cpu[3] - self.cpu[3]);
        Ok(Row { phase, secs, cpu, bytes, peak, growth: None, note: String::new() })
    }
}

/// Runs one backup in a fresh process of this binary; `unchanged`: nothing may be uploaded.
async fn measure_backup(env: &Env, phase: &'static str, name: &str, mode: Mode, unchanged: bool) -> Result<Row> {
    let files = list_files(&env.with_sim(|s| s.data_dir.clone()).await)?;
    let probe = Probe::start(&files)?;
    // Not `current_exe()`: a rebuild may replace the file while the bench runs.
    let out = tokio::process::Command::new("/proc/self/exe")
        .arg("--backup-child")
        .args([env.ini_path.as_os_str(), env.state_dir.as_os_str()])
        .args([name, mode.as_str()])
        .output() // captures stderr too, whatever `.stderr()` says: passed on below
        .await
        .context("starting the backup process")?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find_map(|l| l.strip_prefix("RESULT ")).with_context(|| format!("{phase}: {}", out.status))?;
    let v: Vec<u64> = line.split_whitespace().map(|x| x.parse().unwrap_or(u64::MAX)).collect();
    let [nanos, files_n, bytes, uploaded_files, uploaded_bytes, hashed_files, rss, peak] = v[..] else {
        bail!("{phase}: bad result {line}")
    };
    let on_disk: u64 = files.iter().map(|f| f.1).sum();
    if files_n > files.len() as u64 || bytes > on_disk || (unchanged && uploaded_files > 0) {
        bail!("{phase}: unexpected result {line} for {} files on disk", files.len());
    }
    let hashed = if hashed_files > 0 { format!(", {hashed_files} read to hash") } else { String::new() };
    let mut row = probe.children(phase, bytes, peak)?;
    row.note = format!("{uploaded_files} files {} (of {files_n}{hashed})", human(uploaded_bytes));
    (row.secs, row.growth) = (nanos as f64 / 1e9, Some(peak.saturating_sub(rss)));
    Ok(row)
}

/// `--backup-child <ini> <state dir> <name> <full|differential>`: one backup, then
/// `RESULT nanos files bytes uploaded_files uploaded_bytes hashed_files rss_before peak_rss`.
async fn backup_child(args: &[String]) -> Result<()> {
    let [ini, state, name, mode] = args else { bail!("--backup-child <ini> <state dir> <name> <mode>") };
    let mode = if mode == "full" { Mode::Full } else { Mode::Differential };
    let mut node = Engine::open(&medusa::config::Config::load(Path::new(ini))?)?;
    node.state_dir = PathBuf::from(state);
    let (name, rss) = (BackupName::new(name.as_str())?, own_status("VmRSS:")?);
    let t0 = Instant::now();
    let r = node.backup(&name, mode, Arc::new(Progress::default()), CancellationToken::new()).await?;
    let (nanos, peak) = (t0.elapsed().as_nanos(), own_status("VmHWM:")?);
    let (f, b, uf, ub, h) = (r.files, r.bytes, r.uploaded_files, r.uploaded_bytes, r.hashed_files);
    println!("RESULT {nanos} {f} {b} {uf} {ub} {h} {rss} {peak}");
    Ok(())
}

/// Runs `cmds`, `parallel` at a time, to completion; returns the peak RSS of any of them, sampled
/// from `/proc/<pid>/status` (only samples after the exec of `name`: before it a child shares
/// our memory).
fn run_children(cmds: Vec<Command>, parallel: usize, name: &str) -> Result<u64> {
    let (mut queue, mut running, mut peak) = (cmds.into_iter(), Vec::new(), 0);
    loop {
        while running.len() < parallel
            && let Some(mut cmd) = queue.next()
        {
            running.push(cmd.spawn().with_context(|| format!("starting {name}"))?);
        }
        if running.is_empty() {
            return Ok(peak);
        }
        for child in &running {
            // Read before reaping: once waited for, the pid's status is gone.
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                && field(&text, "Name:") == Some(name)
            {
                peak = peak.max(kib(&text, "VmHWM:").unwrap_or(0));
            }
        }
        let before = running.len();
        for i in (0..running.len()).rev() {
            if running[i].try_wait()?.is_some() {
                let status = running.swap_remove(i).wait()?; // already reaped: returns at once
                if !status.success() {
                    bail!("{name} failed: {status}");
                }
            }
        }
        if running.len() == before {
            std::thread::sleep(POLL);
        }
    }
}

/// CPU seconds so far: user and system of this process, then of its reaped children
/// (`/proc/self/stat` fields 14-17, in ticks of 1/100 s).
fn cpu_times() -> Result<[f64; 4]> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').context("malformed /proc/self/stat")?.1;
    let ticks = after.split_whitespace().skip(11).take(4).map(|v| v.parse::<f64>().unwrap_or(0.0) / 100.0);
    ticks.collect::<Vec<_>>().try_into().map_err(|_| anyhow::anyhow!("malformed /proc/self/stat"))
}

fn print_table(set: DataSet, files: &Files, runs: usize, rows: &[Row]) {
    let (n, bytes) = (files.len(), human(files.iter().map(|f| f.1).sum()));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!(
        "\ndata set: {bytes} in {n} files in the data directory (asked: {} in ~{} backed-up files); load average {load}",
        human(set.bytes),
        set.files
    );
    println!(
        "{:<23} {:>9} {:>8} {:>11} {:>10} {:>10}   uploaded",
        "phase", "wall", "MB/s", "CPU usr+sys", "peak RSS", "RSS growth"
    );
    for r in rows {
        let cpu = format!("{:.2}+{:.2}", r.cpu.0, r.cpu.1);
        let growth = r.growth.map_or("-".to_string(), human);
        println!(
            "{:<23} {:>7.2} s {:>8} {cpu:>11} {:>10} {growth:>10}   {}",
            r.phase,
            r.secs,
            if r.bytes > 0 { format!("{:.1}", mbps(r.bytes, r.secs)) } else { "-".into() },
            human(r.peak),
            r.note
        );
    }
    println!(
        "(fastest of {runs} runs; first and +10% differential: one run. Warm page cache, earlier writes flushed. \
         MB/s = 10^6 bytes/s of the data directory (baselines, engine rows) or of the manifest (backups). CPU in \
         seconds. Each backup runs in its own process; RSS growth = its peak minus its RSS before the backup.)"
    );
    let [cp, cp_sync, md5, full, same] = ["cp -r", "cp -r + sync", "md5sum", "full backup", "unchanged differential"]
        .map(|p| rows.iter().find(|r| r.phase == p));
    let (Some(cp), Some(cp_sync), Some(md5), Some(full), Some(same)) = (cp, cp_sync, md5, full, same) else { return };
    let ok = |met: bool| if met { "met" } else { "MISSED" };
    let ratio = mbps(full.bytes, full.secs) / mbps(cp.bytes, cp.secs);
    let max_rss = rows.iter().filter(|r| !r.note.is_empty()).map(|r| r.peak).max().unwrap_or(0);
    let same_ok = if set.files <= LARGE.files { ok(same.secs < TARGET_UNCHANGED_SECS) } else { "set for ~3,500 files" };
    let vs_md5 = mbps(full.bytes, full.secs) / mbps(md5.bytes, md5.secs);
    println!("full backup / cp -r: {ratio:.2} (target >= {TARGET_FULL_VS_CP}: {})", ok(ratio >= TARGET_FULL_VS_CP));
    println!(
        "full backup / (cp -r + sync): {:.2} (the backup makes its data durable before the manifest)",
        mbps(full.bytes, full.secs) / mbps(cp_sync.bytes, cp_sync.secs)
    );
    println!("full backup / md5sum: {vs_md5:.2}");
    println!("unchanged differential: {:.2} s (target < {TARGET_UNCHANGED_SECS} s: {same_ok})", same.secs);
    println!("max backup peak RSS: {} (target < {}: {})", human(max_rss), human(TARGET_RSS), ok(max_rss < TARGET_RSS));
}
