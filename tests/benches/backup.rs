//! Backup throughput and memory benchmark. It prints; it asserts no target (only that the
//! backups did what they should).
//!
//! For each data set it generates a simulated node, then measures, each phase on a warm page
//! cache with no dirty pages left by the phase before:
//! - baselines: `cp -r` of the data directory, `md5sum` of every file (one process, then two);
//! - the engine's transfer path without a backup: `Transfers::hash_file` and
//!   `Transfers::upload_file` over every file, two at a time (in this process);
//! - backups to `local` storage, each in a fresh process of this binary (`--backup-child`) so
//!   that its peak RSS is the backup's alone: full; first differential (it uploads everything:
//!   differentials share one data folder that the full backup did not fill); +10% differential
//!   (after a memtable flush adding 10% new SSTables); unchanged differential.
//!
//! Run: `cargo bench -p medusa-tests --bench backup -- [--small-only|--large-only]
//! [--size-gib X] [--files N]`. See `README.md` beside this file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
/// How often a baseline child's `/proc/<pid>/status` is sampled for its peak RSS.
const POLL: Duration = Duration::from_millis(10);
/// The issue's targets.
const TARGET_FULL_VS_CP: f64 = 0.90;
const TARGET_UNCHANGED_SECS: f64 = 0.5;
const TARGET_RSS: u64 = 64 * MIB;
/// Same as the env's `concurrent_transfers`.
const TRANSFERS: usize = 2;

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
    /// User and system CPU seconds.
    cpu: (f64, f64),
    bytes: u64,
    /// Peak RSS in bytes.
    peak: u64,
    /// Peak minus RSS at the start, where known.
    growth: Option<u64>,
    report: Option<BackupReport>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.first().map(String::as_str) == Some("--backup-child") {
        return rt.block_on(backup_child(&args[1..]));
    }
    for set in parse_args(args.into_iter())? {
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
    let files = list_files(&data_dir)?;
    let bytes: u64 = files.iter().map(|(_, size)| size).sum();
    let mut rows = Vec::new();

    eprintln!("baselines: cp -r, md5sum ...");
    let scratch = TempDir::new("bench-cp")?;
    let probe = Probe::start(&files)?;
    let peak = run_child(Command::new("cp").arg("-r").arg(&data_dir).arg(scratch.path().join("copy")), "cp")?;
    rows.push(probe.children("cp -r", bytes, peak, None)?);
    drop(scratch);
    for (phase, procs) in [("md5sum", 1), ("md5sum, 2 processes", 2)] {
        let probe = Probe::start(&files)?;
        let peak = md5sum(&files, procs)?;
        rows.push(probe.children(phase, bytes, peak, None)?);
    }

    eprintln!("engine transfers without a backup ...");
    let node = env.node()?;
    let probe = Probe::start(&files)?;
    futures::stream::iter(files.iter().map(|(p, s)| node.transfers.hash_file(p.clone(), *s)))
        .buffer_unordered(TRANSFERS)
        .try_collect::<Vec<_>>()
        .await?;
    rows.push(probe.own("engine hash only", bytes)?);
    let probe = Probe::start(&files)?;
    let progress = Progress::default();
    futures::stream::iter(files.iter().enumerate().map(|(i, (p, s))| {
        let (key, transfers, progress) = (format!("bench/{i}"), &node.transfers, &progress);
        async move { transfers.upload_file(p.clone(), *s, &key, progress).await }
    }))
    .buffer_unordered(TRANSFERS)
    .try_collect::<Vec<_>>()
    .await?;
    rows.push(probe.own("engine upload only", bytes)?);
    drop(node);

    eprintln!("full backup ...");
    rows.push(measure_backup(&env, "full backup", "full-1", Mode::Full, false).await?);
    eprintln!("first differential backup ...");
    rows.push(measure_backup(&env, "first differential", "diff-0", Mode::Differential, false).await?);
    eprintln!("flush (+10%) and differential backup ...");
    env.with_sim(|s| s.flush(2, 0.10).map(|_| ())).await?;
    rows.push(measure_backup(&env, "+10% differential", "diff-1", Mode::Differential, false).await?);
    eprintln!("unchanged differential backup ...");
    rows.push(measure_backup(&env, "unchanged differential", "diff-2", Mode::Differential, true).await?);
    print_table(set, bytes, files.len(), &rows);
    Ok(())
}

/// A phase being measured: the clocks and RSS read after warming the cache and resetting this
/// process' RSS high-water mark.
struct Probe {
    t0: Instant,
    cpu: [f64; 4],
    rss: u64,
}

impl Probe {
    fn start(files: &[(PathBuf, u64)]) -> Result<Probe> {
        settle(files)?;
        prefault(files.iter().map(|f| f.1).sum())?;
        reset_peak_rss()?;
        Ok(Probe { rss: own_status("VmRSS:")?, cpu: cpu_times()?, t0: Instant::now() })
    }

    /// A phase run in this process.
    fn own(self, phase: &'static str, bytes: u64) -> Result<Row> {
        let (secs, cpu, peak) = (self.t0.elapsed().as_secs_f64(), cpu_times()?, own_status("VmHWM:")?);
        let cpu = (cpu[0] - self.cpu[0], cpu[1] - self.cpu[1]);
        Ok(Row { phase, secs, cpu, bytes, peak, growth: Some(peak.saturating_sub(self.rss)), report: None })
    }

    /// A phase run by child processes, with their peak RSS.
    fn children(self, phase: &'static str, bytes: u64, peak: u64, secs: Option<f64>) -> Result<Row> {
        let (wall, cpu) = (self.t0.elapsed().as_secs_f64(), cpu_times()?);
        let cpu = (cpu[2] - self.cpu[2], cpu[3] - self.cpu[3]);
        Ok(Row { phase, secs: secs.unwrap_or(wall), cpu, bytes, peak, growth: None, report: None })
    }
}

/// Runs one backup in a fresh process of this binary; `unchanged`: nothing may be uploaded.
async fn measure_backup(env: &Env, phase: &'static str, name: &str, mode: Mode, unchanged: bool) -> Result<Row> {
    let data_dir = env.with_sim(|s| s.data_dir.clone()).await;
    let files = list_files(&data_dir)?;
    let probe = Probe::start(&files)?;
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--backup-child")
        .args([env.ini_path.as_os_str(), env.state_dir.as_os_str()])
        .args([name, mode.as_str()])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("RESULT ")).with_context(|| format!("{phase}: {}", out.status))?;
    let v: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN)).collect();
    let [secs, files_n, bytes, up_files, up_bytes, hashed, rss, peak] = v[..] else { bail!("{phase}: bad result {line}") };
    let report = BackupReport {
        files: files_n as u64,
        bytes: bytes as u64,
        uploaded_files: up_files as u64,
        uploaded_bytes: up_bytes as u64,
        hashed_files: hashed as u64,
        seconds: secs,
        ..Default::default()
    };
    if report.files > files.len() as u64 || report.bytes > files.iter().map(|f| f.1).sum() || (unchanged && report.uploaded_files > 0) {
        bail!("{phase}: unexpected {report:?} for {} files on disk", files.len());
    }
    let mut row = probe.children(phase, report.bytes, peak as u64, Some(secs))?;
    (row.growth, row.report) = (Some((peak - rss).max(0.0) as u64), Some(report));
    Ok(row)
}

/// `--backup-child <ini> <state dir> <name> <full|differential>`: one backup, then
/// `RESULT secs files bytes uploaded_files uploaded_bytes hashed_files rss_before peak_rss`.
async fn backup_child(args: &[String]) -> Result<()> {
    let [ini, state, name, mode] = args else { bail!("--backup-child <ini> <state dir> <name> <mode>") };
    let mode = if mode == "full" { Mode::Full } else { Mode::Differential };
    let mut node = Node::open(&medusa::config::Config::load(Path::new(ini))?)?;
    node.state_dir = PathBuf::from(state);
    let name = BackupName::new(name.as_str())?;
    let rss = own_status("VmRSS:")?;
    let t0 = Instant::now();
    let r = node.backup(&name, mode, Arc::new(Progress::default()), CancellationToken::new()).await?;
    let secs = t0.elapsed().as_secs_f64();
    let peak = own_status("VmHWM:")?;
    let (f, b, uf, ub, h) = (r.files, r.bytes, r.uploaded_files, r.uploaded_bytes, r.hashed_files);
    println!("RESULT {secs} {f} {b} {uf} {ub} {h} {rss} {peak}");
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
                        cmd.args(batch.iter().map(|(p, _)| p)).stdout(Stdio::null());
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

/// Runs `cmd` to completion; returns the peak RSS seen by sampling `/proc/<pid>/status` (only
/// samples taken after the exec of `name` count: before it the child shares our memory).
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

/// Warms the page cache (every file read once) and writes back the dirty pages of earlier
/// phases, so that no phase pays for another's writes.
fn settle(files: &[(PathBuf, u64)]) -> Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    for (path, _) in files {
        let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        while f.read(&mut buf)? > 0 {}
    }
    if !Command::new("sync").status().context("running sync")?.success() {
        bail!("sync failed");
    }
    Ok(())
}

/// Writes and deletes a file of `bytes`, so that the page cache a phase then fills lands on
/// memory the machine has touched before. On a VM whose RAM the host backs lazily, writes into
/// never-touched memory run at a fraction of the speed (measured here: 0.4 vs 3 GB/s for `dd`),
/// which would otherwise penalise whichever phase first grows the page cache.
fn prefault(bytes: u64) -> Result<()> {
    let dir = TempDir::new("bench-ballast")?;
    let mut f = std::fs::File::create(dir.path().join("ballast"))?;
    let buf = vec![0x5a_u8; 4 * MIB as usize];
    for _ in 0..bytes.div_ceil(buf.len() as u64) {
        std::io::Write::write_all(&mut f, &buf)?;
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

/// Resets this process' `VmHWM` to its current RSS (Linux `clear_refs` value 5).
fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the RSS high-water mark via /proc/self/clear_refs")
}

/// CPU seconds so far: [user, system] of this process, [user, system] of its reaped children
/// (`/proc/self/stat` fields 14-17, in clock ticks of 1/100 s).
fn cpu_times() -> Result<[f64; 4]> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').context("malformed /proc/self/stat")?.1;
    let f: Vec<f64> = after.split_whitespace().skip(11).take(4).map(|v| v.parse::<f64>().unwrap_or(0.0) / 100.0).collect();
    f.try_into().map_err(|_| anyhow::anyhow!("malformed /proc/self/stat"))
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

/// Refuses to start when the temp dir cannot hold node, copy and bucket (three full uploads).
fn check_free_space(bytes: u64) -> Result<()> {
    let tmp = std::env::temp_dir();
    let out = Command::new("df").arg("-Pk").arg(&tmp).output().context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let avail = text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|k| k.parse::<u64>().ok());
    let need = bytes * 6;
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
        "\ndata set: {} in {dir_files} files in the data directory (asked for {} in ~{} backed-up files)",
        human(dir_bytes),
        human(set.bytes),
        set.files
    );
    println!("{:<23} {:>9} {:>8} {:>11} {:>10} {:>10}   uploaded", "phase", "wall", "MB/s", "CPU usr+sys", "peak RSS", "RSS growth");
    for r in rows {
        let cpu = format!("{:.2}+{:.2}", r.cpu.0, r.cpu.1);
        let growth = r.growth.map_or("-".to_string(), human);
        let uploaded = r.report.as_ref().map_or(String::new(), |b| {
            let hashed = if b.hashed_files > 0 { format!(", {} read to hash", b.hashed_files) } else { String::new() };
            format!("{} files {} (of {}{hashed})", b.uploaded_files, human(b.uploaded_bytes), b.files)
        });
        let (wall, speed) = (r.secs, mbps(r.bytes, r.secs));
        println!("{:<23} {wall:>7.2} s {speed:>8.1} {cpu:>11} {:>10} {growth:>10}   {uploaded}", r.phase, human(r.peak));
    }
    println!(
        "(warm page cache, dirty pages written back before each phase; MB/s = 10^6 bytes/s over the data directory \
         for baselines and engine rows, over the manifest for backups; CPU in seconds; backups run in a child \
         process, RSS growth = its peak minus its RSS before the backup; baseline RSS sampled every {} ms)",
        POLL.as_millis()
    );
    let find = |p: &str| rows.iter().find(|r| r.phase == p);
    let (Some(cp), Some(md5), Some(full), Some(same)) =
        (find("cp -r"), find("md5sum"), find("full backup"), find("unchanged differential"))
    else {
        return;
    };
    let ratio = mbps(full.bytes, full.secs) / mbps(cp.bytes, cp.secs);
    let max_rss = rows.iter().filter(|r| r.report.is_some()).map(|r| r.peak).max().unwrap_or(0);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let md5_ratio = mbps(full.bytes, full.secs) / mbps(md5.bytes, md5.secs);
    println!("full backup / cp -r: {ratio:.2} (target >= {TARGET_FULL_VS_CP:.2}: {})   full backup / md5sum: {md5_ratio:.2}", verdict(ratio >= TARGET_FULL_VS_CP));
    let target = if set.files <= LARGE.files {
        format!("target < {TARGET_UNCHANGED_SECS} s for ~3,500 files: {}", verdict(same.secs < TARGET_UNCHANGED_SECS))
    } else {
        "the target is set for ~3,500 files".to_string()
    };
    println!("unchanged differential: {:.2} s ({target})", same.secs);
    println!("max backup peak RSS: {} (target < {}: {})", human(max_rss), human(TARGET_RSS), verdict(max_rss < TARGET_RSS));
}
