//! Restore throughput and memory benchmark (contract §6.5). Targets: a restore reaches at least
//! 90% of `cp -r`'s throughput on the same data (a restore should cost little more than copying
//! the files), with a peak RSS below 64 MiB (it must fit beside Cassandra in a small pod).
//!
//! It generates a simulated node (`--size-mib`, `--files`; default 2 GiB in ~3,500 files), takes
//! a full backup of it to `local` storage with the engine, then runs every phase `--runs` times
//! (default 3, interleaved; the median run counts, every run printed), each on a warm page cache with earlier
//! writes flushed (`sync`):
//! * baselines: `cp -r` of that backup's data folder (a child process, VmHWM sampled every
//!   10 ms), and the same followed by `sync` (a restore makes what it wrote durable, with one
//!   `syncfs` of its staging filesystem before placing);
//! * diagnostics, to see where a restore's time goes (`n` = the first `--transfers` value at a
//!   time): read + MD5 on plain threads, then also writing (no sync, one `sync` at the end,
//!   fsync per file); object_store's local reads alone; the engine's `download_file`;
//! * the restore of the wiped node, in place, per `--transfers` value (`concurrent_transfers`;
//!   default 2 and 4, the env says 2): `medusa::restore::run` in this process (peak = this
//!   process' VmHWM reset via `/proc/self/clear_refs` just before, so it includes the RSS the
//!   bench held, shown as "RSS before"), then the real `medusa-restore-init` binary as a child
//!   (its own RSS; `cargo build --release --workspace --bins` first).
//!
//! After every restore the data directory must equal the backed-up node's digest
//! (`harness::sim::digest_data_dir`), so the bench cannot time a wrong restore. Outputs are set
//! aside, not deleted, until the end of a run, which then waits a minute (see `Ctx::set_aside`).
//!
//! Fresh filesystems (`--fresh-fs yes`, the default; root needed): every phase that writes
//! (the copies, the downloads, each restore's data directory) writes into an ext4 made for it
//! and loop-mounted there (`common::FreshFs`), so no phase inherits the inode and block state
//! earlier phases' deletions left (which swung `cp -r` of 32k files from 1.3 s to 23 s between
//! runs). Without it outputs are set aside and each run waits a minute before starting.
//!
//! Run: `cargo bench -p medusa-tests --bench restore -- [--size-mib N] [--files N]
//! [--transfers 2,4] [--runs N] [--fresh-fs yes|no]`; with `RESTORE_BENCH_PERF=<dir>` the
//! restore-init runs are profiled (`perf record -g`, one file per run in `<dir>`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Files, MIB, Mounts, field, kib, list_files, mbps, mib, own_status, settle};
use futures::{StreamExt, TryStreamExt};
use harness::sim::{DataDigest, SimSpec, digest_data_dir};
use medusa::config::StorageConfig;
use medusa::format::digest::Hasher;
use medusa::format::layout::Mode;
use medusa::format::names::BackupName;
use medusa::restore::{Outcome, RestoreEnv};
use medusa::transfer::{Download, Progress, Transfers};
use medusa_tests::{Backend, Env, EnvOptions, Kind, binary};
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;

const TARGET_VS_CP: f64 = 0.90;
const TARGET_RSS: u64 = 64 * MIB;
const BACKUP: &str = "bench-full";
/// How often a child's `/proc/<pid>/status` is sampled for its peak RSS.
const POLL: Duration = Duration::from_millis(10);
/// ext4 without a journal does not reuse an inode for 60 s after its file was deleted.
const INODE_REUSE: Duration = Duration::from_secs(61);
const USAGE: &str = "usage: restore [--size-mib N] [--files N] [--transfers 2,4] [--runs N] [--fresh-fs yes|no]";

struct Args {
    size_mib: u64,
    files: usize,
    transfers: Vec<usize>,
    runs: usize,
    fresh_fs: bool,
}

/// What is measured (see the module doc); each runs `--runs` times, the median run counts.
#[derive(Clone, Copy)]
enum Phase {
    Cp { sync: bool },
    Md5(Write),
    StoreRead,
    Download,
    Restore(usize),
    RestoreInit(usize),
}

/// What an [`Phase::Md5`] phase does with the bytes besides hashing them.
#[derive(Clone, Copy, PartialEq)]
enum Write {
    No,
    NoSync,
    SyncAtEnd,
    FsyncEach,
}

/// The data set and what phases need.
struct Ctx {
    /// Fresh filesystems mounted for phases: unmounted before the env goes.
    mounts: Mounts,
    env: Env,
    files: Vec<(PathBuf, u64)>,
    source: PathBuf,
    keys: Vec<String>,
    expected: DataDigest,
    root: PathBuf,
    /// Concurrency of the diagnostic phases (the first `--transfers` value).
    n: usize,
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

fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1).collect())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

fn parse_args(args: Vec<String>) -> Result<Args> {
    let mut a = Args { size_mib: 2048, files: 3_500, transfers: vec![2, 4], runs: 3, fresh_fs: true };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--bench" {
            continue; // passed by `cargo bench`
        }
        let v = it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
        let whole = |v: &str| v.trim().parse::<usize>().with_context(|| format!("{arg} takes whole numbers\n{USAGE}"));
        match arg.as_str() {
            "--size-mib" => a.size_mib = whole(&v)? as u64,
            "--files" => a.files = whole(&v)?,
            "--transfers" => a.transfers = v.split(',').map(whole).collect::<Result<_>>()?,
            "--runs" => a.runs = whole(&v)?,
            "--fresh-fs" => a.fresh_fs = matches!(v.as_str(), "yes" | "1" | "true"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        a.size_mib > 0 && a.files > 0 && a.runs > 0 && !a.transfers.is_empty() && !a.transfers.contains(&0),
        "sizes must be positive\n{USAGE}"
    );
    Ok(a)
}

async fn run(a: Args) -> Result<()> {
    eprintln!("generating a node of {} MiB in ~{} files ...", a.size_mib, a.files);
    let opts = EnvOptions { spec: SimSpec::sized(a.size_mib * MIB, a.files, 1), ..EnvOptions::new(Kind::Local) };
    let env = Env::new(opts).await?;
    let Backend::Local(bucket) = &env.backend else { bail!("the bench uses local storage") };
    let bucket = bucket.bucket_dir();
    let expected = env.with_sim(|s| digest_data_dir(&s.data_dir)).await;
    eprintln!("full backup of {} files, {} MiB ...", expected.files, expected.bytes / MIB);
    let report = env
        .node()?
        .backup(&BackupName::new(BACKUP)?, Mode::Full, Arc::new(Progress::default()), CancellationToken::new())
        .await?;
    let (backed_up, on_node) = ((report.files, report.bytes), (expected.files, expected.bytes));
    ensure!(backed_up == on_node, "the backup holds (files, bytes) {backed_up:?}, the node {on_node:?}");
    let source = bucket.join("demo").join(&env.fqdn).join(BACKUP).join("data");
    let files = list_files(&source)?;
    ensure!(files.len() as u64 == report.files, "{} files below {}", files.len(), source.display());
    let keys = files.iter().map(|(p, _)| p.strip_prefix(&bucket).map(|k| k.display().to_string()));
    let keys = keys.collect::<Result<_, _>>()?;
    let root = env.with_sim(|s| s.root.clone()).await;
    let ctx = Ctx {
        mounts: Mounts::new(a.fresh_fs, env.dir.path().join("images")),
        env,
        files,
        source,
        keys,
        expected,
        root,
        n: a.transfers[0],
    };

    let mut phases = vec![Phase::Cp { sync: false }, Phase::Cp { sync: true }];
    phases.extend([Write::No, Write::NoSync, Write::SyncAtEnd, Write::FsyncEach].map(Phase::Md5));
    phases.extend([Phase::StoreRead, Phase::Download]);
    phases.extend(a.transfers.iter().flat_map(|t| [Phase::Restore(*t), Phase::RestoreInit(*t)]));
    let mut all: Vec<Vec<Row>> = phases.iter().map(|_| Vec::new()).collect();
    for r in 0..a.runs {
        ctx.empty_trash()?;
        for (p, rows) in phases.iter().zip(&mut all) {
            let row = measure(&ctx, *p, r).await?;
            eprintln!("run {}: {:<48} {:>7.2} s", r + 1, row.phase, row.secs);
            rows.push(row);
        }
    }
    // The median run of each phase, and every run's time with the spread.
    let mut medians = Vec::new();
    let mut spreads = Vec::new();
    for mut rows in all {
        rows.sort_by(|x, y| x.secs.total_cmp(&y.secs));
        let times: Vec<String> = rows.iter().map(|r| format!("{:.2}", r.secs)).collect();
        let mid = rows.len() / 2;
        let spread = (rows[rows.len() - 1].secs - rows[0].secs) / rows[mid].secs * 100.0;
        spreads.push(format!("  {}: {} s, spread {spread:.0} %", rows[mid].phase, times.join(" ")));
        medians.push(rows.swap_remove(mid));
    }
    print_table(&a, &ctx.files, &medians);
    println!("runs of each phase (sorted):\n{}", spreads.join("\n"));
    Ok(())
}

impl Ctx {
    /// Moves `path` out of the way instead of deleting it: on an ext4 without a journal (this
    /// VM's root file system) every file created within a minute of a deletion makes the inode
    /// allocator skip each recently freed inode (`find_inode_bit` → `recently_deleted`), which
    /// would make each phase pay for the previous one's clean-up.
    fn set_aside(&self, path: &Path) -> Result<()> {
        let trash = self.env.dir.path().join("trash");
        std::fs::create_dir_all(&trash)?;
        let n = std::fs::read_dir(&trash)?.count();
        Ok(std::fs::rename(path, trash.join(n.to_string()))?)
    }

    /// The lost volume the restore starts from: an empty data directory (the old one set aside,
    /// or the last restore's filesystem unmounted), on a fresh filesystem with `--fresh-fs`.
    fn wipe(&self) -> Result<()> {
        let data = self.root.join("data");
        if self.mounts.unmount(&data).is_none() {
            self.set_aside(&data)?;
            std::fs::create_dir(&data)?;
        }
        self.fresh(&data)
    }

    /// With `--fresh-fs`: an ext4 made for one phase, mounted at `dir` (created).
    fn fresh(&self, dir: &Path) -> Result<()> {
        self.mounts.fresh(dir, self.expected.bytes * 3 / 2 + 256 * MIB)
    }

    /// Deletes what was set aside, then waits until ext4 reuses the freed inodes (see above;
    /// not with fresh filesystems, where no measured write lands beside the deletions).
    fn empty_trash(&self) -> Result<()> {
        let trash = self.env.dir.path().join("trash");
        if trash.exists() {
            std::fs::remove_dir_all(&trash)?;
            if self.mounts.on() {
                return Ok(());
            }
            settle(&[])?;
            eprintln!("waiting {} s until the deleted files' inodes may be reused ...", INODE_REUSE.as_secs());
            std::thread::sleep(INODE_REUSE);
        }
        Ok(())
    }
}

async fn measure(c: &Ctx, phase: Phase, run: usize) -> Result<Row> {
    let (bytes, n, scratch) = (c.expected.bytes, c.n, c.env.dir.path().join("scratch"));
    let writes_scratch = match phase {
        Phase::Cp { .. } | Phase::Download => true,
        Phase::Md5(w) => w != Write::No,
        _ => false,
    };
    if writes_scratch {
        c.fresh(&scratch)?;
    }
    let row = match phase {
        Phase::Cp { sync } => {
            settle(&c.files)?;
            let t0 = Instant::now();
            let peak = run_child(Command::new("cp").arg("-r").arg(&c.source).arg(&scratch), "cp")?;
            if sync {
                run_child(&mut Command::new("sync"), "sync")?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let copied: u64 = list_files(&scratch)?.iter().map(|f| f.1).sum();
            ensure!(copied == bytes, "cp -r copied {copied} bytes");
            let phase = (if sync { "cp -r; sync" } else { "cp -r" }).into();
            Row { phase, secs, bytes, peak, before: None }
        }
        Phase::Md5(w) => {
            std::fs::create_dir_all(&scratch)?;
            let probe = Probe::start(&c.files)?;
            threads(&c.files, n, |i, src| {
                md5_copy(src, (w != Write::No).then(|| scratch.join(i.to_string())).as_deref(), w == Write::FsyncEach)
            })?;
            if w == Write::SyncAtEnd {
                run_child(&mut Command::new("sync"), "sync")?;
            }
            let what = [
                "read + MD5",
                "read + MD5 + write",
                "read + MD5 + write, one sync at the end",
                "read + MD5 + write + fsync each file",
            ][w as usize];
            probe.finish(format!("{what}, {n} threads"), bytes)?
        }
        Phase::StoreRead | Phase::Download => {
            let cfg = c.env.config()?;
            let storage = medusa::store::Storage::from_config(&cfg.storage)?;
            std::fs::create_dir_all(&scratch)?;
            let probe = Probe::start(&c.files)?;
            if let Phase::StoreRead = phase {
                let read = c.keys.iter().map(|k| async {
                    let stream = storage.store.get(&k.as_str().into()).await?.into_stream();
                    stream.try_fold(0, |n, b| async move { Ok(n + b.len() as u64) }).await
                });
                let got: u64 =
                    futures::stream::iter(read).buffer_unordered(n).try_collect::<Vec<_>>().await?.iter().sum();
                ensure!(got == bytes, "object_store read {got} bytes");
                probe.finish(format!("object_store get, stream only, {n} at a time"), bytes)?
            } else {
                let transfers =
                    Transfers::new(storage.clone(), &StorageConfig { concurrent_transfers: n, ..cfg.storage.clone() });
                let progress = Arc::new(Progress::default());
                let fetch = c.keys.iter().enumerate().zip(&c.files).map(|((i, k), (_, size))| {
                    let file = Download { key: k.clone(), dest: scratch.join(i.to_string()), part: None, size: *size };
                    transfers.download_file(file, &progress)
                });
                futures::stream::iter(fetch).buffer_unordered(n * 2).try_collect::<Vec<_>>().await?;
                probe.finish(format!("engine download_file, {n} transfers"), bytes)?
            }
        }
        Phase::Restore(t) => restore_here(c, t, run).await?,
        Phase::RestoreInit(t) => restore_child(c, t, run).await?,
    };
    if c.mounts.unmount(&scratch).is_some() {
        std::fs::remove_dir(&scratch)?;
    } else if scratch.exists() {
        c.set_aside(&scratch)?;
    }
    Ok(row)
}

fn restore_env(c: &Ctx, key: String) -> RestoreEnv {
    RestoreEnv {
        backup_name: Some(BACKUP.into()),
        restore_key: Some(key),
        mapping: Some(format!(
            r#"{{"in_place":true,"host_map":{{"{f}":{{"source":["{f}"],"seed":false}}}}}}"#,
            f = c.env.fqdn
        )),
        pod_name: Some(c.env.fqdn.clone()),
        tmp_dir: Some(c.root.clone()),
        keyspaces: None,
        tables: None,
    }
}

/// The restore in this process, on the wiped node; checked against the backed-up digest.
async fn restore_here(c: &Ctx, transfers: usize, run: usize) -> Result<Row> {
    c.wipe()?;
    let mut cfg = c.env.config()?;
    cfg.storage.concurrent_transfers = transfers;
    let renv = restore_env(c, format!("bench-{transfers}-{run}"));
    let probe = Probe::start(&c.files)?;
    let outcome = medusa::restore::run(&cfg, renv).await?;
    let row = probe.finish(format!("restore in-process, {transfers} transfers *"), c.expected.bytes)?;
    let Outcome::Restored(r) = outcome else { bail!("restore skipped: {outcome:?}") };
    ensure!((r.files, r.bytes, r.size_only) == (c.expected.files, c.expected.bytes, 0), "restored {r:?}");
    check_restored(c).await?;
    Ok(row)
}

/// The real init container binary as a child process (its own RSS), same checks.
async fn restore_child(c: &Ctx, transfers: usize, run: usize) -> Result<Row> {
    c.wipe()?;
    let ini = c.env.dir.path().join(format!("medusa-{transfers}.ini"));
    let text = std::fs::read_to_string(&c.env.ini_path)?;
    ensure!(text.contains("concurrent_transfers = 2\n"), "unexpected medusa.ini");
    std::fs::write(&ini, text.replace("concurrent_transfers = 2\n", &format!("concurrent_transfers = {transfers}\n")))?;
    let key = format!("bench-child-{transfers}-{run}");
    let r = restore_env(c, key.clone());
    // `RESTORE_BENCH_PERF=<dir>`: the binary runs under `perf record -g`, a profile per run there
    // (its times then include perf's overhead).
    let mut cmd = match std::env::var_os("RESTORE_BENCH_PERF") {
        Some(dir) => {
            let mut c = Command::new("perf");
            let out = PathBuf::from(dir).join(format!("restore-init-{transfers}-{run}.perf"));
            c.args(["record", "-q", "-F", "2000", "-g", "-o"]).arg(out).arg("--").arg(binary("medusa-restore-init"));
            c
        }
        None => Command::new(binary("medusa-restore-init")),
    };
    cmd.arg("--config").arg(&ini).env("RUST_LOG", "warn").env("POD_NAME", &c.env.fqdn).env("MEDUSA_TMP_DIR", &c.root);
    for (k, v) in [("BACKUP_NAME", r.backup_name), ("RESTORE_KEY", r.restore_key), ("RESTORE_MAPPING", r.mapping)] {
        cmd.env(k, v.unwrap_or_default());
    }
    settle(&c.files)?;
    let t0 = Instant::now();
    let peak = run_child(&mut cmd, "medusa-restore-init")?;
    let secs = t0.elapsed().as_secs_f64();
    check_restored(c).await?;
    let done = std::fs::read_to_string(c.root.join(".last-restore")).unwrap_or_default();
    ensure!(done.trim() == key, "the binary did not mark the restore done");
    let (phase, bytes) = (format!("medusa-restore-init, {transfers} transfers *"), c.expected.bytes);
    Ok(Row { phase, secs, bytes, peak, before: None })
}

async fn check_restored(c: &Ctx) -> Result<()> {
    let got = c.env.with_sim(|s| digest_data_dir(&s.data_dir)).await;
    ensure!(got == c.expected, "restored data differs from the backup:\n{}", c.expected.diff(&got));
    Ok(())
}

/// Runs `op(index, path)` over `files` on `n` threads (file `i` on thread `i % n`).
fn threads(files: &Files, n: usize, op: impl Fn(usize, &Path) -> std::io::Result<()> + Sync) -> Result<()> {
    std::thread::scope(|s| {
        let op = &op;
        let workers: Vec<_> = (0..n)
            .map(|k| s.spawn(move || files.iter().enumerate().skip(k).step_by(n).try_for_each(|(i, f)| op(i, &f.0))))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?.map_err(anyhow::Error::from))
    })
}

/// Reads `src` in 1 MiB pieces into MD5 (and `dest`, fsynced if asked).
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
            std::io::Write::write_all(o, &buf[..n])?;
        }
    }
    if let (Some(o), true) = (out, fsync) {
        o.sync_all()?;
    }
    std::hint::black_box(h.finish());
    Ok(())
}

/// Runs `cmd` to completion; its peak RSS, sampled from `/proc/<pid>/status` every [`POLL`]
/// (only samples after the exec of `name`: before it the child shares our memory).
fn run_child(cmd: &mut Command, name: &str) -> Result<u64> {
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let (mut peak, comm) = (0, &name[..name.len().min(15)]); // the kernel keeps 15 bytes of a name
    loop {
        // Read before reaping: once waited for, the pid's status is gone.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            && field(&text, "Name:") == Some(comm)
        {
            peak = peak.max(kib(&text, "VmHWM:").unwrap_or(0));
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

fn print_table(a: &Args, files: &Files, rows: &[Row]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let bytes: u64 = files.iter().map(|f| f.1).sum();
    println!(
        "\nrestore of a full backup in local storage: {:.1} MiB in {} files (asked {} MiB, ~{} files); \
         load average {load}",
        mib(bytes),
        files.len(),
        a.size_mib,
        a.files
    );
    println!(
        "{:<52} {:>7} {:>7} {:>10} {:>11} {:>11} {:>7} {:>9}",
        "phase", "wall s", "MB/s", "peak RSS", "RSS before", "RSS growth", "/ cp -r", "/ cp;sync"
    );
    let base = |p: &str| rows.iter().find(|r| r.phase == p).map(|r| mbps(r.bytes, r.secs)).unwrap_or(f64::NAN);
    let (cp, cp_sync) = (base("cp -r"), base("cp -r; sync"));
    for r in rows {
        let (before, growth) = r.before.map_or(("-".into(), "-".into()), |b| {
            (format!("{:.1} MiB", mib(b)), format!("{:.1} MiB", mib(r.peak.saturating_sub(b))))
        });
        let (phase, secs, rate, peak) = (&r.phase, r.secs, mbps(r.bytes, r.secs), mib(r.peak));
        println!(
            "{phase:<52} {secs:>7.2} {rate:>7.1} {peak:>6.1} MiB {before:>11} {growth:>11} {:>7.2} {:>9.2}",
            rate / cp,
            rate / cp_sync
        );
    }
    println!(
        "(median of {} runs, phases interleaved; warm page cache, earlier writes flushed before each phase; \
         every write into a fresh ext4 unless --fresh-fs no; \
         MB/s = 10^6 bytes/s of the backup's data. Child processes (cp, medusa-restore-init): VmHWM sampled \
         every {} ms. In-process phases: VmHWM since a reset just before, so it includes the RSS the bench \
         held (RSS before). * = a restore, after \
         which the data directory was checked equal to the backed-up node's digest.)",
        a.runs,
        POLL.as_millis()
    );
    let ok = |met: bool| if met { "met" } else { "MISSED" };
    for r in rows.iter().filter(|r| r.phase.ends_with('*')) {
        let (vs, peak) = (mbps(r.bytes, r.secs) / cp, r.peak);
        let held = r.before.map_or(String::new(), |b| format!(", of which the bench held {:.1} MiB before", mib(b)));
        println!(
            "{}: {vs:.2} of cp -r (target >= {TARGET_VS_CP}: {}), peak RSS {:.1} MiB{held} (target < {} MiB: {})",
            r.phase,
            ok(vs >= TARGET_VS_CP),
            mib(peak),
            TARGET_RSS / MIB,
            ok(peak < TARGET_RSS)
        );
    }
}
