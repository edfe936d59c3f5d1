//! Backup throughput and memory benchmark (not a timed test: it prints, it does not assert
//! targets).
//!
//! For each data set it generates a simulated node, then measures on a warm page cache:
//! `cp -r` of the data directory and `md5sum` of every file (the baselines, as child
//! processes), then a full, a first differential (which uploads everything: differentials share
//! one data folder that the full backup did not fill), a +10% differential (after a memtable
//! flush adding 10% new SSTables) and an unchanged differential backup to `local` storage, in
//! this process.
//! Each row gives wall time, MB/s (10^6 bytes per second) and peak RSS. The targets printed
//! below each table come from the project's issue.
//!
//! Run: `cargo bench -p medusa-tests --bench backup -- [--small-only|--large-only]
//! [--size-gib X] [--files N]`. See `README.md` beside this file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use harness::services::TempDir;
use harness::sim::SimSpec;
use medusa::backup::{BackupReport, Node};
use medusa::layout::Mode;
use medusa::names::BackupName;
use medusa::transfer::Progress;
use medusa_tests::{Env, EnvOptions, Kind};
use tokio_util::sync::CancellationToken;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Files per `md5sum` invocation (keeps the command line far below `ARG_MAX`).
const MD5SUM_BATCH: usize = 1000;
/// How often a child's `/proc/<pid>/status` is sampled for its peak RSS.
const POLL: Duration = Duration::from_millis(10);
/// Issue targets.
const TARGET_FULL_VS_CP: f64 = 0.90;
const TARGET_UNCHANGED_SECS: f64 = 0.5;
const TARGET_RSS: u64 = 64 * MIB;

/// One data set: total bytes and files of the backed-up data.
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
    /// CPU seconds (this process, or the children of a baseline) per wall second.
    cores: f64,
    bytes: u64,
    /// Peak RSS in bytes.
    peak: u64,
    /// Peak minus RSS at the start (in-process phases only).
    growth: Option<u64>,
    report: Option<BackupReport>,
}

/// Starts measuring a phase: warm cache, RSS high-water mark reset, clocks read.
struct Probe {
    t0: Instant,
    cpu: (f64, f64),
    rss: u64,
}

impl Probe {
    fn start(files: &[(PathBuf, u64)]) -> Result<Probe> {
        settle(files)?;
        reset_peak_rss()?;
        Ok(Probe { rss: own_status("VmRSS:")?, cpu: cpu_secs()?, t0: Instant::now() })
    }

    /// An in-process phase: peak RSS is this process' high-water mark.
    fn done(self, phase: &'static str, bytes: u64, report: Option<BackupReport>) -> Result<Row> {
        let (secs, cpu) = (self.t0.elapsed().as_secs_f64(), cpu_secs()?);
        let peak = own_status("VmHWM:")?;
        let cores = (cpu.0 - self.cpu.0) / secs;
        eprintln!("DEBUG {phase}: {}", debug_cpu());
        Ok(Row { phase, secs, cores, bytes, peak, growth: Some(peak.saturating_sub(self.rss)), report })
    }

    /// A phase run by child processes whose peak RSS was sampled.
    fn done_child(self, phase: &'static str, bytes: u64, peak: u64) -> Result<Row> {
        let (secs, cpu) = (self.t0.elapsed().as_secs_f64(), cpu_secs()?);
        let cores = (cpu.1 - self.cpu.1) / secs;
        Ok(Row { phase, secs, cores, bytes, peak, growth: None, report: None })
    }
}

fn main() -> Result<()> {
    let sets = parse_args(std::env::args().skip(1))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for set in sets {
        rt.block_on(run_set(set))?;
    }
    Ok(())
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Vec<DataSet>> {
    let (mut small, mut large, mut custom) = (true, true, None::<DataSet>);
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--small-only" => large = false,
            "--large-only" => small = false,
            "--size-gib" => {
                let gib: f64 = value()?.parse().context("--size-gib takes a number")?;
                custom.get_or_insert(LARGE).bytes = (gib * GIB as f64) as u64;
            }
            "--files" => custom.get_or_insert(LARGE).files = value()?.parse().context("--files takes a whole number")?,
            other => bail!(
                "unknown argument {other:?}\nusage: backup [--small-only | --large-only] [--size-gib X] [--files N]\n\
                 (--size-gib/--files replace both data sets by one of that size; defaults 2 GiB, 3500 files)"
            ),
        }
    }
    if let Some(c) = custom {
        return Ok(vec![c]);
    }
    let sets: Vec<DataSet> = [(large, LARGE), (small, SMALL)].into_iter().filter(|(on, _)| *on).map(|(_, s)| s).collect();
    if sets.is_empty() {
        bail!("--small-only and --large-only together select nothing");
    }
    Ok(sets)
}

async fn run_set(set: DataSet) -> Result<()> {
    check_free_space(set.bytes)?;
    eprintln!("generating a node of {} in ~{} files ...", human(set.bytes), set.files);
    let opts = EnvOptions { spec: SimSpec::sized(set.bytes, set.files, 1), ..EnvOptions::new(Kind::Local) };
    let env = Env::new(opts).await?;
    let data_dir = env.with_sim(|s| s.data_dir.clone()).await;
    let node = env.node()?;
    let mut rows = Vec::new();

    let files = list_files(&data_dir)?;
    let bytes: u64 = files.iter().map(|(_, size)| size).sum();
    eprintln!("baselines: cp -r, md5sum ...");
    let scratch = TempDir::new("bench-cp")?;
    let probe = Probe::start(&files)?;
    let peak = run_child(Command::new("cp").arg("-r").arg(&data_dir).arg(scratch.path().join("copy")), "cp")?;
    rows.push(probe.done_child("cp -r", bytes, peak)?);
    drop(scratch);
    for (phase, procs) in [("md5sum", 1), ("md5sum, 2 processes", 2)] {
        let probe = Probe::start(&files)?;
        let peak = md5sum(&files, procs)?;
        rows.push(probe.done_child(phase, bytes, peak)?);
    }
    // The engine's read + MD5 path alone, and its read + MD5 + write path alone, as many at
    // once as the backup runs (`concurrent_transfers = 2`).
    eprintln!("engine transfers without a backup ...");
    let probe = Probe::start(&files)?;
    futures::stream::iter(files.iter().map(|(p, s)| node.transfers.hash_file(p.clone(), *s)))
        .buffer_unordered(2)
        .try_collect::<Vec<_>>()
        .await?;
    rows.push(probe.done("engine hash only", bytes, None)?);
    let probe = Probe::start(&files)?;
    let progress = Progress::default();
    futures::stream::iter(files.iter().enumerate().map(|(i, (p, s))| {
        let key = format!("bench/{i}");
        let (transfers, progress) = (&node.transfers, &progress);
        async move { transfers.upload_file(p.clone(), *s, &key, progress).await }
    }))
    .buffer_unordered(2)
    .try_collect::<Vec<_>>()
    .await?;
    rows.push(probe.done("engine upload only", bytes, None)?);

    eprintln!("full backup ...");
    rows.push(measure_backup(&node, "full backup", "full-1", Mode::Full, false, &data_dir).await?);
    // Full backups keep their own copy; differentials share `<node>/data/`, so the first
    // differential uploads everything again (Medusa's layout) and only later ones reuse.
    eprintln!("first differential backup ...");
    rows.push(measure_backup(&node, "first differential", "diff-0", Mode::Differential, false, &data_dir).await?);
    eprintln!("flush (+10%) and differential backup ...");
    env.with_sim(|s| s.flush(2, 0.10).map(|_| ())).await?;
    rows.push(measure_backup(&node, "+10% differential", "diff-1", Mode::Differential, false, &data_dir).await?);
    eprintln!("unchanged differential backup ...");
    rows.push(measure_backup(&node, "unchanged differential", "diff-2", Mode::Differential, true, &data_dir).await?);
    print_table(set, bytes, files.len(), &rows);
    Ok(())
}

/// `md5sum` over all files in `procs` parallel streams of invocations; returns the peak RSS.
fn md5sum(files: &[(PathBuf, u64)], procs: usize) -> Result<u64> {
    let share = files.len().div_ceil(procs).max(1);
    let peaks = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(share)
            .map(|part| {
                scope.spawn(move || -> Result<u64> {
                    let mut peak = 0;
                    for batch in part.chunks(MD5SUM_BATCH) {
                        let mut cmd = Command::new("md5sum");
                        cmd.args(batch.iter().map(|(p, _)| p)).stdout(std::process::Stdio::null());
                        peak = peak.max(run_child(&mut cmd, "md5sum")?);
                    }
                    Ok(peak)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("md5sum worker")).collect::<Result<Vec<u64>>>()
    })?;
    Ok(peaks.into_iter().max().unwrap_or(0))
}

/// Runs one backup as a measured phase.
/// `unchanged`: nothing changed since the last backup, so nothing may be uploaded.
async fn measure_backup(node: &Node, phase: &'static str, name: &str, mode: Mode, unchanged: bool, data_dir: &Path) -> Result<Row> {
    let files = list_files(data_dir)?;
    let probe = Probe::start(&files)?;
    let report = node.backup(&BackupName::new(name)?, mode, Arc::new(Progress::default()), CancellationToken::new()).await?;
    let expected = files.len() as u64;
    if report.files > expected || (unchanged && report.uploaded_files != 0) {
        bail!("{phase}: unexpected report {report:?} for {expected} files on disk");
    }
    probe.done(phase, report.bytes, Some(report))
}

/// Warm page cache (every file read once) and no dirty pages of an earlier phase left to write
/// back during the next measurement.
fn settle(files: &[(PathBuf, u64)]) -> Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    for (path, _) in files {
        let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        while f.read(&mut buf)? > 0 {}
    }
    let ok = Command::new("sync").status().context("running sync")?.success();
    if !ok {
        bail!("sync failed");
    }
    Ok(())
}

/// Every regular file below `dir` with its size, sorted by path.
fn list_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), entry.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `cmd` to completion; returns the peak RSS seen by sampling `/proc/<pid>/status` (only
/// samples taken after the exec of `name` count).
fn run_child(cmd: &mut Command, name: &str) -> Result<u64> {
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        // Read before reaping: once waited for, the pid's status is gone.
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && field(&text, "Name:").is_some_and(|n| n == name)
        {
            peak = peak.max(field(&text, "VmHWM:").and_then(parse_kib).unwrap_or(0));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(POLL);
    };
    if !status.success() {
        bail!("{name} failed: {status}");
    }
    Ok(peak)
}

/// Resets this process' `VmHWM` to its current RSS (Linux `clear_refs` value 5).
fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the RSS high-water mark via /proc/self/clear_refs")
}

/// CPU seconds used so far by this process and by its reaped children (`/proc/self/stat`
/// utime + stime, cutime + cstime; clock ticks of 1/100 s).
fn cpu_secs() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').context("malformed /proc/self/stat")?.1;
    let f: Vec<f64> = after.split_whitespace().skip(11).take(4).map(|v| v.parse().unwrap_or(0.0)).collect();
    let [ut, st, cut, cst] = f[..] else { bail!("malformed /proc/self/stat") };
    Ok(((ut + st) / 100.0, (cut + cst) / 100.0))
}

fn debug_cpu() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    format!("minflt {} majflt {} utime {} stime {}", f[7], f[9], f[11], f[12])
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn own_status(key: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    field(&text, key).and_then(parse_kib).with_context(|| format!("no {key} in /proc/self/status"))
}

fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

fn parse_kib(v: &str) -> Option<u64> {
    v.trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

/// Refuses to start when the temp dir cannot hold node, copy and bucket (two full uploads).
fn check_free_space(bytes: u64) -> Result<()> {
    let tmp = std::env::temp_dir();
    let out = Command::new("df").arg("-Pk").arg(&tmp).output().context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let avail = text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|k| k.parse::<u64>().ok());
    let need = bytes * 5;
    match avail {
        Some(kib) if kib * 1024 < need => {
            bail!("{} has {} free; this data set needs about {}", tmp.display(), human(kib * 1024), human(need))
        }
        _ => Ok(()),
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= GIB => format!("{:.2} GiB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

fn print_table(set: DataSet, dir_bytes: u64, dir_files: usize, rows: &[Row]) {
    println!(
        "\ndata set: {} in {dir_files} files in the data directory (asked for {} in ~{} backed-up files; warm page cache)",
        human(dir_bytes),
        human(set.bytes),
        set.files
    );
    println!("{:<23} {:>9} {:>8} {:>6} {:>10} {:>10}   uploaded", "phase", "wall", "MB/s", "cores", "peak RSS", "RSS growth");
    for r in rows {
        let growth = r.growth.map_or("-".to_string(), human);
        let uploaded = r.report.as_ref().map_or(String::new(), |b| {
            let hashed = if b.hashed_files > 0 { format!(", {} only hashed", b.hashed_files) } else { String::new() };
            format!("{} files {} (of {} files{hashed})", b.uploaded_files, human(b.uploaded_bytes), b.files)
        });
        let (wall, speed) = (r.secs, mbps(r.bytes, r.secs));
        println!("{:<23} {wall:>7.2} s {speed:>8.1} {:>6.2} {:>10} {growth:>10}   {uploaded}", r.phase, r.cores, human(r.peak));
    }
    let find = |p: &str| rows.iter().find(|r| r.phase == p);
    let (Some(cp), Some(md5), Some(full), Some(same)) =
        (find("cp -r"), find("md5sum"), find("full backup"), find("unchanged differential"))
    else {
        return;
    };
    let ratio = mbps(full.bytes, full.secs) / mbps(cp.bytes, cp.secs);
    let max_rss = rows.iter().filter(|r| r.report.is_some()).map(|r| r.peak).max().unwrap_or(0);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "full/cp -r: {ratio:.2} (target >= {TARGET_FULL_VS_CP:.2}: {})   full/md5sum: {:.2}",
        verdict(ratio >= TARGET_FULL_VS_CP),
        mbps(full.bytes, full.secs) / mbps(md5.bytes, md5.secs)
    );
    let target = if set.files <= LARGE.files {
        format!("target < {TARGET_UNCHANGED_SECS} s for ~3,500 files: {}", verdict(same.secs < TARGET_UNCHANGED_SECS))
    } else {
        "the target is set for ~3,500 files".to_string()
    };
    println!("unchanged differential: {:.2} s ({target})", same.secs);
    println!("max backup RSS: {} (target < {}: {})", human(max_rss), human(TARGET_RSS), verdict(max_rss < TARGET_RSS));
}
