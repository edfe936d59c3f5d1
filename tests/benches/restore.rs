//! Restore throughput and memory benchmark (§6.5). Targets (the issue): a restore reaches at
//! least 90% of `cp -r`'s throughput on the same data, with a peak RSS below 64 MiB.
//!
//! It generates a simulated node (`--size-mib`, `--files`; default 2 GiB in ~3,500 files), takes
//! a full backup of it to `local` storage with the engine, then measures, each phase on a warm
//! page cache with earlier writes flushed (`sync`):
//! * baselines: `cp -r` of that backup's data folder (a child process, VmHWM sampled every
//!   10 ms), and the same followed by `sync` (a restore fsyncs every file);
//! * diagnostics, to see where a restore's time goes: read + MD5, + write, + fsync per file
//!   (plain threads), object_store's local reads alone, and the engine's `download_file`;
//! * the restore of the wiped node, in place, per `concurrent_transfers` value (`--transfers
//!   2,4`; the env says 2): `medusa::restore::run` in this process (peak = this process' VmHWM
//!   reset via `/proc/self/clear_refs` just before, so it includes what the bench held: shown
//!   as "RSS before"), then the real `medusa-restore-init` binary as a child (its own RSS; run
//!   `cargo build --release --workspace --bins` first).
//!
//! After every restore the data directory must equal the backed-up node's digest
//! (`harness::sim::digest_data_dir`), so the bench cannot time a wrong restore.
//!
//! Run: `cargo bench -p medusa-tests --bench restore -- [--size-mib N] [--files N]
//! [--transfers 2,4]`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use harness::sim::{DataDigest, SimSpec, digest_data_dir};
use medusa::config::StorageConfig;
use medusa::digest::Hasher;
use medusa::layout::Mode;
use medusa::names::BackupName;
use medusa::restore::{Outcome, RestoreEnv};
use medusa::transfer::{Progress, Transfers};
use medusa_tests::{Backend, Env, EnvOptions, Kind, binary};
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;
const TARGET_VS_CP: f64 = 0.90;
const TARGET_RSS: u64 = 64 * MIB;
const BACKUP: &str = "bench-full";
/// How often a child's `/proc/<pid>/status` is sampled for its peak RSS.
const POLL: Duration = Duration::from_millis(10);
const USAGE: &str = "usage: restore [--size-mib N] [--files N] [--transfers 2,4]";

struct Args {
    size_mib: u64,
    files: usize,
    transfers: Vec<usize>,
}

/// One measured phase.
struct Row {
    phase: String,
    secs: f64,
    bytes: u64,
    peak: u64,
    /// RSS before the phase, for phases in this process.
    before: Option<u64>,
}

type Files = [(PathBuf, u64)];

fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1).collect())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

fn parse_args(args: Vec<String>) -> Result<Args> {
    let mut a = Args { size_mib: 2048, files: 3_500, transfers: vec![2, 4] };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--bench" {
            continue; // passed by `cargo bench`
        }
        let v = it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
        match arg.as_str() {
            "--size-mib" => a.size_mib = v.parse().context("--size-mib takes a whole number")?,
            "--files" => a.files = v.parse().context("--files takes a whole number")?,
            "--transfers" => {
                a.transfers = v.split(',').map(|t| t.trim().parse::<usize>()).collect::<Result<_, _>>().context("--transfers takes numbers like 2,4")?
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(a.size_mib > 0 && a.files > 0 && !a.transfers.is_empty() && !a.transfers.contains(&0), "sizes must be positive\n{USAGE}");
    Ok(a)
}

async fn run(a: Args) -> Result<()> {
    eprintln!("generating a node of {} MiB in ~{} files ...", a.size_mib, a.files);
    let opts = EnvOptions { spec: SimSpec::sized(a.size_mib * MIB, a.files, 1), ..EnvOptions::new(Kind::Local) };
    let env = Env::new(opts).await?;
    let Backend::Local(bucket) = &env.backend else { bail!("the bench uses local storage") };
    let expected = env.with_sim(|s| digest_data_dir(&s.data_dir)).await;
    eprintln!("full backup of {} files, {} MiB ...", expected.files, expected.bytes / MIB);
    let name = BackupName::new(BACKUP)?;
    let report = env.node()?.backup(&name, Mode::Full, Arc::new(Progress::default()), CancellationToken::new()).await?;
    ensure!((report.files, report.bytes) == (expected.files, expected.bytes), "the backup holds {} files, {} bytes; the node {} files, {} bytes", report.files, report.bytes, expected.files, expected.bytes);
    let source = bucket.bucket_dir().join("demo").join(&env.fqdn).join(BACKUP).join("data");
    let files = list_files(&source)?;
    ensure!(files.len() as u64 == report.files, "{} files in {}, {} in the manifest", files.len(), source.display(), report.files);

    let mut rows = Vec::new();
    for (phase, then_sync) in [("cp -r", false), ("cp -r; sync", true)] {
        eprintln!("{phase} ...");
        rows.push(copy(&files, &source, &env.dir.path().join("cp-copy"), phase, then_sync, report.bytes)?);
    }
    rows.extend(diagnostics(&env, &files, a.transfers[0], report.bytes).await?);
    for t in &a.transfers {
        eprintln!("restore, concurrent_transfers = {t} ...");
        rows.push(restore_here(&env, &files, *t, &expected).await?);
        eprintln!("medusa-restore-init, concurrent_transfers = {t} ...");
        rows.push(restore_child(&env, &files, *t, &expected).await?);
    }
    print_table(&a, &files, &rows);
    Ok(())
}

fn restore_env(env: &Env, root: &Path, key: String) -> RestoreEnv {
    RestoreEnv {
        backup_name: Some(BACKUP.into()),
        restore_key: Some(key),
        mapping: Some(format!(r#"{{"in_place":true,"host_map":{{"{f}":{{"source":["{f}"],"seed":false}}}}}}"#, f = env.fqdn)),
        pod_name: Some(env.fqdn.clone()),
        tmp_dir: Some(root.to_path_buf()),
    }
}

/// The restore in this process, on the wiped node; checked against the backed-up digest.
async fn restore_here(env: &Env, files: &Files, transfers: usize, expected: &DataDigest) -> Result<Row> {
    let root = env.with_sim(|s| s.root.clone()).await;
    env.with_sim(|s| s.wipe()).await?;
    let mut cfg = env.config()?;
    cfg.storage.concurrent_transfers = transfers;
    let renv = restore_env(env, &root, format!("bench-{transfers}"));
    let bytes = expected.bytes;
    let probe = Probe::start(files)?;
    let outcome = medusa::restore::run(&cfg, renv).await?;
    let mut row = probe.finish(format!("restore in-process, {transfers} transfers"), bytes)?;
    let Outcome::Restored(r) = outcome else { bail!("restore skipped: {outcome:?}") };
    ensure!((r.files, r.bytes, r.size_only) == (expected.files, expected.bytes, 0), "restored {r:?}");
    check_restored(env, expected).await?;
    row.phase.push_str(" *");
    Ok(row)
}

/// The real init container binary as a child process (its own RSS), same checks.
async fn restore_child(env: &Env, files: &Files, transfers: usize, expected: &DataDigest) -> Result<Row> {
    let root = env.with_sim(|s| s.root.clone()).await;
    env.with_sim(|s| s.wipe()).await?;
    let ini = env.dir.path().join(format!("medusa-{transfers}.ini"));
    let text = std::fs::read_to_string(&env.ini_path)?;
    ensure!(text.contains("concurrent_transfers = 2\n"), "unexpected medusa.ini");
    std::fs::write(&ini, text.replace("concurrent_transfers = 2\n", &format!("concurrent_transfers = {transfers}\n")))?;
    let r = restore_env(env, &root, format!("bench-child-{transfers}"));
    let mut cmd = Command::new(binary("medusa-restore-init"));
    cmd.arg("--config").arg(&ini).env("RUST_LOG", "warn").env("POD_NAME", &env.fqdn).env("MEDUSA_TMP_DIR", &root);
    for (k, v) in [("BACKUP_NAME", r.backup_name), ("RESTORE_KEY", r.restore_key), ("RESTORE_MAPPING", r.mapping)] {
        cmd.env(k, v.unwrap_or_default());
    }
    settle(files)?;
    let t0 = Instant::now();
    let peak = run_child(cmd, "medusa-restore-init")?;
    let secs = t0.elapsed().as_secs_f64();
    check_restored(env, expected).await?;
    let done = std::fs::read_to_string(root.join(".last-restore")).unwrap_or_default();
    ensure!(done.trim() == format!("bench-child-{transfers}"), "the binary did not mark the restore done");
    Ok(Row { phase: format!("medusa-restore-init, {transfers} transfers *"), secs, bytes: expected.bytes, peak, before: None })
}

async fn check_restored(env: &Env, expected: &DataDigest) -> Result<()> {
    let got = env.with_sim(|s| digest_data_dir(&s.data_dir)).await;
    ensure!(got == *expected, "restored data differs from the backup:\n{}", expected.diff(&got));
    Ok(())
}

/// Where a restore's time can go, each part alone with `n` at a time: reading and hashing,
/// writing, fsync per file (plain threads, 1 MiB reads), object_store's local reads, and the
/// engine's `Transfers::download_file` (read via object_store, MD5, write, fsync).
async fn diagnostics(env: &Env, files: &Files, n: usize, bytes: u64) -> Result<Vec<Row>> {
    eprintln!("diagnostics ...");
    let scratch = env.dir.path().join("diag");
    let mut rows = Vec::new();
    for (phase, write, fsync) in [("read + MD5", false, false), ("read + MD5 + write", true, false), ("read + MD5 + write + fsync each", true, true)] {
        std::fs::create_dir_all(&scratch)?;
        let probe = Probe::start(files)?;
        threads(files, n, |i, src| md5_copy(src, write.then(|| scratch.join(i.to_string())).as_deref(), fsync))?;
        rows.push(probe.finish(format!("{phase}, {n} threads"), bytes)?);
        std::fs::remove_dir_all(&scratch)?;
    }
    let cfg = env.config()?;
    let storage = medusa::storage::Storage::from_config(&cfg.storage)?;
    let bucket = cfg.storage.base_path.clone().context("local base_path")?.join(&cfg.storage.bucket_name);
    let keys: Vec<String> = files.iter().map(|(p, _)| p.strip_prefix(&bucket).map(|k| k.to_string_lossy().into_owned())).collect::<Result<_, _>>()?;
    let probe = Probe::start(files)?;
    let read = keys.iter().map(|k| async {
        let mut stream = storage.store.get(&object_store::path::Path::from(k.as_str())).await?.into_stream();
        let mut got = 0;
        while let Some(b) = stream.next().await {
            got += b?.len() as u64;
        }
        Ok::<u64, object_store::Error>(got)
    });
    let got: Vec<u64> = futures::stream::iter(read).buffer_unordered(n).try_collect().await?;
    ensure!(got.iter().sum::<u64>() == bytes, "object_store read {} bytes", got.iter().sum::<u64>());
    rows.push(probe.finish(format!("object_store get, stream only, {n} at a time"), bytes)?);
    std::fs::create_dir_all(&scratch)?;
    let transfers = Transfers::new(storage.clone(), &StorageConfig { concurrent_transfers: n, ..cfg.storage.clone() });
    let progress = Progress::default();
    let probe = Probe::start(files)?;
    let fetch = keys.iter().enumerate().map(|(i, k)| transfers.download_file(k, scratch.join(i.to_string()), None, &progress));
    futures::stream::iter(fetch).buffer_unordered(n * 2).try_collect::<Vec<_>>().await?;
    rows.push(probe.finish(format!("engine download_file, {n} transfers"), bytes)?);
    std::fs::remove_dir_all(&scratch)?;
    Ok(rows)
}

/// Runs `op(index, path)` over `files` on `n` threads.
fn threads(files: &Files, n: usize, op: impl Fn(usize, &Path) -> std::io::Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| -> std::io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, _)) = files.get(i) else { return Ok(()) };
                        op(i, path)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| Ok::<_, anyhow::Error>(w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??))
    })
}

fn md5_copy(src: &Path, dest: Option<&Path>, fsync: bool) -> std::io::Result<()> {
    let mut f = std::fs::File::open(src)?;
    let mut out = dest.map(std::fs::File::create).transpose()?;
    let (mut h, mut buf) = (Hasher::new(None), vec![0u8; MIB as usize]);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if let Some(o) = &mut out {
            o.write_all(&buf[..n])?;
        }
    }
    if let (Some(o), true) = (out, fsync) {
        o.sync_all()?;
    }
    std::hint::black_box(h.finish());
    Ok(())
}

/// `cp -r source dest` (then `sync` if asked) as child processes; `dest` is removed after.
fn copy(files: &Files, source: &Path, dest: &Path, phase: &str, then_sync: bool, bytes: u64) -> Result<Row> {
    settle(files)?;
    let t0 = Instant::now();
    let mut cp = Command::new("cp");
    cp.arg("-r").arg(source).arg(dest);
    let peak = run_child(cp, "cp")?;
    if then_sync {
        run_child(Command::new("sync"), "sync")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let copied = list_files(dest)?;
    ensure!(copied.len() == files.len() && copied.iter().map(|f| f.1).sum::<u64>() == bytes, "cp -r copied {} files", copied.len());
    std::fs::remove_dir_all(dest)?;
    Ok(Row { phase: phase.to_string(), secs, bytes, peak, before: None })
}

/// Runs `cmd` to completion; its peak RSS, sampled from `/proc/<pid>/status` every [`POLL`]
/// (only samples after the exec of `name`: before it the child shares our memory).
fn run_child(mut cmd: Command, name: &str) -> Result<u64> {
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let (mut peak, comm) = (0, &name[..name.len().min(15)]); // the kernel keeps 15 bytes of a name
    loop {
        // Read before reaping: once waited for, the pid's status is gone.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            && field(&text, "Name:") == Some(comm)
        {
            peak = peak.max(field(&text, "VmHWM:").and_then(parse_kib).unwrap_or(0));
        }
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "{name} failed: {status}");
            return Ok(peak);
        }
        std::thread::sleep(POLL);
    }
}

/// A phase in this process: clock and RSS high-water mark, taken after warming the cache.
struct Probe {
    t0: Instant,
    rss: u64,
}

impl Probe {
    fn start(files: &Files) -> Result<Probe> {
        settle(files)?;
        std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM via /proc/self/clear_refs")?;
        Ok(Probe { rss: own_status("VmRSS:")?, t0: Instant::now() })
    }

    fn finish(self, phase: String, bytes: u64) -> Result<Row> {
        let secs = self.t0.elapsed().as_secs_f64();
        Ok(Row { phase, secs, bytes, peak: own_status("VmHWM:")?, before: Some(self.rss) })
    }
}

/// Warms the page cache (every file read once) and writes back the dirty pages of earlier
/// phases, so that no phase pays for another's writes.
fn settle(files: &Files) -> Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    for (path, _) in files {
        let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        while f.read(&mut buf)? > 0 {}
    }
    ensure!(Command::new("sync").status().context("running sync")?.success(), "sync failed");
    Ok(())
}

/// Every regular file below `dir` with its size, sorted by path.
fn list_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let (mut out, mut stack) = (Vec::new(), vec![dir.to_path_buf()]);
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

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn mbps(r: &Row) -> f64 {
    r.bytes as f64 / r.secs.max(1e-9) / 1e6
}

fn print_table(a: &Args, files: &Files, rows: &[Row]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let bytes: u64 = files.iter().map(|f| f.1).sum();
    println!("\nrestore of a full backup in local storage: {:.1} MiB in {} files (asked {} MiB, ~{} files); load average {load}", mib(bytes), files.len(), a.size_mib, a.files);
    println!("{:<42} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8} {:>10}", "phase", "wall s", "MB/s", "peak RSS", "RSS before", "RSS growth", "/ cp -r", "/ cp+sync");
    let base = |p: &str| rows.iter().find(|r| r.phase == p).map(mbps);
    let (cp, cp_sync) = (base("cp -r"), base("cp -r; sync"));
    let ratio = |b: Option<f64>, r: &Row| b.map_or("-".to_string(), |b| format!("{:.2}", mbps(r) / b));
    for r in rows {
        let (before, growth) = match r.before {
            Some(b) => (format!("{:.1} MiB", mib(b)), format!("{:.1} MiB", mib(r.peak.saturating_sub(b)))),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<42} {:>8.2} {:>8.1} {:>6.1} MiB {before:>11} {growth:>11} {:>8} {:>10}",
            r.phase,
            r.secs,
            mbps(r),
            mib(r.peak),
            ratio(cp, r),
            ratio(cp_sync, r)
        );
    }
    println!(
        "(warm page cache, earlier writes flushed before each phase; MB/s = 10^6 bytes/s of the backup's data. cp: a child \
         process, VmHWM sampled every {} ms. restore: medusa::restore::run in this process, peak = VmHWM since a reset just \
         before, including the RSS the bench held before)",
        POLL.as_millis()
    );
    println!("(* = a restore; the data directory was then checked equal to the backed-up node's digest)");
    for r in rows.iter().filter(|r| r.phase.ends_with('*')) {
        let vs = cp.map_or(0.0, |c| mbps(r) / c);
        let ok = |met: bool| if met { "met" } else { "MISSED" };
        println!(
            "{}: {vs:.2} of cp -r (target >= {TARGET_VS_CP}: {}), peak RSS {:.1} MiB (target < {} MiB: {})",
            r.phase,
            ok(vs >= TARGET_VS_CP),
            mib(r.peak),
            TARGET_RSS / MIB,
            ok(r.peak < TARGET_RSS)
        );
    }
}
