//! medusa-rs against rclone on the same S3 server: full backup and restore of a simulated node
//! through the real binaries, timed and measured side by side. A benchmark, not a test: it prints
//! tables and fails only when a backup or restore fails or restores the wrong data. `README.md`
//! beside this file explains the rows and columns.
//!
//! Per data set (`--sets`, default all: `large`, `small`, `huge-sstables`) and server
//! (`--servers`, default s3s-fs in this process; moto and azurite get a smaller set), a node is
//! generated and the real `medusa-sidecar` started with the operator's multipart settings and
//! `concurrent_transfers = --transfers`. Then `--rounds` rounds, each: a full backup over gRPC
//! (AsyncBackup, BackupStatus polled until SUCCESS), `rclone copy` of the data directory to
//! another bucket of the same server, the real `medusa-restore-init` into an emptied data
//! directory, `rclone copy` back into a fresh directory. Both restores end with `sync` and are
//! checked file by file against the node's digest. Medians are printed.
//!
//! Peak RSS: the sidecar's VmHWM after a reset through `/proc/<pid>/clear_refs`; for
//! restore-init and rclone, `ru_maxrss` of the child: this binary runs itself as a wrapper
//! (`--rusage-child`) that starts the command, waits for it and reads `getrusage(RUSAGE_CHILDREN)`
//! (the workspace forbids the `unsafe` a direct `wait4` would need).
//!
//! Latency (`--delay-ms 10,40`): both tools reach the server through the fault proxy (HTTP
//! mode), which holds every request that long before forwarding it: the first byte of every
//! answer comes that much later, as from cloud object storage. 0 (the default) means direct.
//!
//! CPU per byte: the client's CPU seconds per GiB of the data set, ours beside rclone's, and
//! their ratio (this does not depend on the server).
//!
//! Run: `cargo build --release --workspace --bins` first, then
//! `cargo bench -p medusa-tests --bench s3 -- [--sets large,small,huge-sstables]
//! [--servers s3s-fs,moto,azurite] [--transfers N] [--rounds N] [--size-scale X]
//! [--server-scale X] [--settle SECS] [--delay-ms 0,10,40] [--fresh-fs yes|no]`.
//!
//! Fresh filesystems (`--fresh-fs yes`, the default): each restore, ours and rclone's, writes
//! into an ext4 image made for it (`mkfs.ext4`, inode tables initialised up front, one inode per
//! 4 KiB) and loop-mounted at the target directory, so that no round inherits the free-inode
//! and free-block state earlier rounds' deletions left (ext4 skips recently freed inodes). The
//! server's objects stay on the work directory's filesystem (not yet one per round).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{GIB, MIB, Mounts, human, status_kib};
use harness::services::{AZURITE_ACCOUNT, AZURITE_KEY, S3_ACCESS_KEY, S3_SECRET_KEY, tools_dir, workspace_root};
use harness::sim::{DataDigest, SimSpec, digest_data_dir};
use medusa::service::pb;
use medusa_tests::{Backend, Env, EnvOptions, Kind, Sidecar, live, restore_command};
use rand::{RngCore, SeedableRng};

/// The operator's multipart settings in `medusa.ini` (k8ssandra-operator's defaults).
const MULTIPART: &str = "multi_part_upload_threshold = 104857600\nmultipart_chunksize = 52428800\n";
/// Free space kept aside when deciding whether a data set's rounds may keep their outputs.
const DISK_RESERVE: u64 = 5 * GIB;
/// A server using this share of one core or more during an operation is its bottleneck.
const SERVER_BOUND: f64 = 0.8;
/// rclone filters that leave exactly what a backup takes (and the digest compares).
const RCLONE_EXCLUDES: [&str; 3] = ["/system_traces/**", "/*/*/backups/**", "/*/*/snapshots/**"];
const USAGE: &str = "usage: s3 [--sets large,small,huge-sstables] [--servers s3s-fs,moto,azurite] [--transfers N]\n\
    [--rounds N] [--size-scale X] [--server-scale X] [--settle SECS] [--delay-ms 0,10,40]\n\
    --size-scale: bytes and files of every set times X (0.05 for a quick look)\n\
    --server-scale: the moto/azurite set is the small set times X (default 0.25)\n\
    --settle: pause between data sets after deleting the previous one's files (default 61)\n\
    --delay-ms: per-request delays added by a proxy in front of the server, one run each (default 0: direct)\n\
    --fresh-fs yes|no: every restore (both tools) into an ext4 made for it, loop-mounted (default yes; needs root)";

struct Args {
    sets: Vec<Set>,
    servers: Vec<Server>,
    transfers: usize,
    rounds: usize,
    scale: f64,
    server_scale: f64,
    settle: Duration,
    /// Per-request delays (ms) to run with; 0 = no proxy.
    delays: Vec<u64>,
    /// Restore into a filesystem made for each restore (loop-mounted ext4).
    fresh_fs: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    S3sFs,
    Moto,
    Azurite,
}

impl Server {
    fn name(self) -> &'static str {
        ["s3s-fs", "moto", "azurite"][self as usize]
    }

    fn kind(self) -> Kind {
        [Kind::S3sFs, Kind::Moto, Kind::Azurite][self as usize]
    }
}

/// A data set: the node's size and file count, and `Data.db` sizes planted in it.
#[derive(Clone)]
struct Set {
    name: String,
    bytes: u64,
    files: usize,
    planted: Vec<u64>,
}

fn set(name: &str) -> Result<Set> {
    let (bytes, files, planted) = match name {
        "large" => (2 * GIB, 3_500, vec![]),
        "small" => (200 * MIB, 32_000, vec![]),
        // A 0.5 GiB node whose two largest Data.db files become 1.0 and 1.5 GiB.
        "huge-sstables" => (GIB / 2, 700, vec![GIB, 3 * GIB / 2]),
        other => bail!("unknown data set {other:?}\n{USAGE}"),
    };
    Ok(Set { name: name.into(), bytes, files, planted })
}

impl Set {
    fn scaled(&self, x: f64, name: String) -> Set {
        let s = |b: u64| (b as f64 * x) as u64;
        // The huge-SSTable set keeps its files: the big ones need user tables to go into.
        let files = if self.planted.is_empty() { ((self.files as f64 * x) as usize).max(300) } else { self.files };
        Set { name, bytes: s(self.bytes), files, planted: self.planted.iter().map(|b| s(*b)).collect() }
    }
}

/// What is measured, in the order of even rounds; odd rounds run rclone first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    OursBackup,
    RcloneBackup,
    OursRestore,
    RcloneRestore,
}

/// One measured operation.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    /// Peak RSS of the client process, bytes.
    rss: u64,
    /// CPU seconds of the client process.
    cpu: f64,
    /// CPU seconds of the server (for s3s-fs: this process, which also runs the simulated node).
    server_cpu: f64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rusage-child") {
        return rusage_child(&args[1..]);
    }
    let args = parse_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

fn parse_args(args: Vec<String>) -> Result<Args> {
    let mut a = Args {
        sets: ["large", "small", "huge-sstables"].into_iter().map(set).collect::<Result<_>>()?,
        servers: vec![Server::S3sFs],
        transfers: 4,
        rounds: 3,
        scale: 1.0,
        server_scale: 0.25,
        settle: Duration::from_secs(61),
        delays: vec![0],
        fresh_fs: true,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--bench" {
            continue; // passed by `cargo bench`
        }
        let v = it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<f64>().ok().filter(|x| *x > 0.0).with_context(|| format!("{arg}: {v}\n{USAGE}"));
        match arg.as_str() {
            "--sets" => a.sets = v.split(',').map(set).collect::<Result<_>>()?,
            "--servers" => {
                a.servers = v
                    .split(',')
                    .map(|s| match s {
                        "s3s-fs" => Ok(Server::S3sFs),
                        "moto" => Ok(Server::Moto),
                        "azurite" => Ok(Server::Azurite),
                        other => bail!("unknown server {other:?}\n{USAGE}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--transfers" => a.transfers = num(&v)? as usize,
            "--rounds" => a.rounds = num(&v)? as usize,
            "--size-scale" => a.scale = num(&v)?,
            "--server-scale" => a.server_scale = num(&v)?,
            "--settle" => a.settle = Duration::from_secs(v.parse().context("--settle takes seconds")?),
            "--delay-ms" => {
                a.delays =
                    v.split(',').map(|d| d.trim().parse::<u64>()).collect::<Result<_, _>>().context("--delay-ms")?
            }
            "--fresh-fs" => a.fresh_fs = matches!(v.as_str(), "yes" | "1" | "true"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        a.transfers > 0 && a.rounds > 0 && !a.sets.is_empty() && !a.servers.is_empty() && !a.delays.is_empty(),
        "{USAGE}"
    );
    Ok(a)
}

async fn run(a: Args) -> Result<()> {
    let rclone = rclone_version();
    print_conditions(&a, rclone.as_deref());
    let mut jobs = Vec::new();
    for delay in &a.delays {
        for server in &a.servers {
            if *server == Server::S3sFs {
                jobs.extend(a.sets.iter().map(|s| (Server::S3sFs, s.scaled(a.scale, s.name.clone()), *delay)));
            } else {
                let x = a.scale * a.server_scale;
                jobs.push((*server, set("small")?.scaled(x, format!("small x{x}")), *delay));
            }
        }
    }
    for (i, (server, set, delay)) in jobs.iter().enumerate() {
        if i > 0 && !a.settle.is_zero() {
            // ext4 without a journal skips recently freed inodes for a minute: creating the
            // next set's files right after deleting the last one's would be slowed.
            eprintln!("waiting {} s after deleting the previous set's files ...", a.settle.as_secs());
            tokio::time::sleep(a.settle).await;
        }
        run_set(&a, *server, set, *delay, rclone.is_some()).await?;
    }
    println!("\nload average at the end: {}", loadavg());
    Ok(())
}

/// Everything one data set on one server needs. Field order is drop order: the sidecar stops
/// before its node and server go.
struct Bench<'a> {
    /// Fresh filesystems mounted for restores: unmounted first.
    mounts: Mounts,
    a: &'a Args,
    set: Set,
    server: Server,
    sidecar: Sidecar,
    env: Env,
    expected: DataDigest,
    data_dir: PathBuf,
    /// Scratch below the env: logs, the rclone restores, data directories set aside.
    work: PathBuf,
    limit: Duration,
    rclone: Option<Rclone>,
    /// Why rclone stopped on this server, if it failed there (moto, azurite).
    rclone_failed: Option<String>,
    /// Delete each round's outputs at its end (when keeping them all would not fit on disk).
    per_round_cleanup: bool,
    /// Milliseconds the proxy holds every request (0: no proxy).
    delay_ms: u64,
}

async fn run_set(a: &Args, server: Server, set: &Set, delay_ms: u64, rclone: bool) -> Result<()> {
    let load_before = loadavg();
    eprintln!("\n{}: generating {} in ~{} files ...", set.name, human(set.bytes), set.files);
    let mut o = EnvOptions::new(server.kind());
    o.spec = SimSpec::sized(set.bytes, set.files, 1);
    o.storage_extra = MULTIPART.into();
    if delay_ms > 0 {
        o.proxy = Some(medusa_tests::ProxyMode::Http);
    }
    let env = Env::new(o).await?;
    if let Some(p) = &env.proxy {
        p.set_delay(Duration::from_millis(delay_ms));
    }
    operator_settings(&env, a.transfers)?;
    let data_dir = env.with_sim(|s| s.data_dir.clone()).await;
    plant(&data_dir, &set.planted).await?;
    let expected = live(&env).await;
    let work = env.dir.path().join("bench");
    std::fs::create_dir_all(&work)?;
    let free = nix::sys::statvfs::statvfs(&work)?;
    let free = free.blocks_available() * free.fragment_size();
    // Per round: our bucket copy, rclone's, the data set aside, rclone's restore.
    let need = expected.bytes * (4 * a.rounds as u64) + GIB;
    let via = env.proxy.as_ref().map(|p| p.port);
    let rclone = rclone.then(|| Rclone::for_backend(&env.backend, via, &work)).transpose()?;
    let mut b = Bench {
        mounts: Mounts::new(a.fresh_fs, work.join("images")),
        a,
        set: set.clone(),
        server,
        sidecar: Sidecar::start(&env).await?,
        expected,
        data_dir,
        work,
        limit: time_limit(set),
        rclone,
        rclone_failed: None,
        per_round_cleanup: need + DISK_RESERVE > free,
        delay_ms,
        env,
    };
    let mut samples: BTreeMap<Op, Vec<Sample>> = BTreeMap::new();
    for round in 0..a.rounds {
        let mut order = [Op::OursBackup, Op::RcloneBackup, Op::OursRestore, Op::RcloneRestore];
        if round % 2 == 1 {
            order = [Op::RcloneBackup, Op::OursBackup, Op::RcloneRestore, Op::OursRestore];
        }
        for op in order {
            if let Some(s) = b.measure(op, round).await? {
                eprintln!("round {}: {op:?} {:.2} s", round + 1, s.secs);
                samples.entry(op).or_default().push(s);
            }
        }
        if b.per_round_cleanup {
            b.clean_round(round)?;
        }
    }
    print_set(&b, &samples, &load_before);
    Ok(())
}

/// The env's `medusa.ini` as the operator writes it: `--transfers` transfers, and Medusa's
/// retry defaults (7 retries within 180 s, so a 22 s read timeout) instead of the test env's
/// quick-failing 2 within 10 s (a 5 s read timeout, shorter than s3s-fs takes to complete a
/// 1 GiB multipart upload).
fn operator_settings(env: &Env, transfers: usize) -> Result<()> {
    let ini = std::fs::read_to_string(&env.ini_path)?;
    let test_env = "max_retries = 2\nretry_timeout = 10\nconcurrent_transfers = 2\n";
    ensure!(ini.contains(test_env), "the env's medusa.ini changed: {ini}");
    let ini = ini.replace(test_env, &format!("concurrent_transfers = {transfers}\n"));
    Ok(std::fs::write(&env.ini_path, ini)?)
}

/// Makes the largest `Data.db` files of the user tables `sizes` long (new random content,
/// written beside and renamed over, as a compaction would), one per table while there are
/// tables enough, for the huge-SSTable set.
async fn plant(data_dir: &Path, sizes: &[u64]) -> Result<()> {
    if sizes.is_empty() {
        return Ok(());
    }
    let d = digest_data_dir(data_dir);
    let mut data: Vec<(&String, u64)> = d
        .entries
        .iter()
        .filter(|(k, _)| k.starts_with("ks") && k.ends_with("-Data.db") && !k.contains("/."))
        .map(|(k, v)| (k, v.size))
        .collect();
    ensure!(data.len() >= sizes.len(), "only {} user SSTables to plant big files in", data.len());
    // Largest first; then the first of each table before the second of any.
    data.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    let table = |rel: &str| rel.rsplit_once('/').map(|t| t.0.to_string()).unwrap_or_default();
    let mut seen = Vec::new();
    let mut rank: Vec<(usize, &String)> = Vec::new();
    for (rel, _) in data {
        let t = table(rel);
        rank.push((seen.iter().filter(|s| **s == t).count(), rel));
        seen.push(t);
    }
    rank.sort_by_key(|r| r.0);
    for (i, ((_, rel), size)) in rank.into_iter().zip(sizes.iter().copied()).enumerate() {
        let path = data_dir.join(rel);
        eprintln!("planting a {} Data.db: {}", human(size), path.display());
        tokio::task::spawn_blocking(move || write_random(&path, size, i as u64)).await??;
    }
    Ok(())
}

fn write_random(path: &Path, size: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("planting");
    let mut f = std::io::BufWriter::with_capacity(4 * MIB as usize, std::fs::File::create(&tmp)?);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    drop(f);
    Ok(std::fs::rename(tmp, path)?)
}

/// Generous: a stuck operation fails the bench instead of hanging it.
fn time_limit(set: &Set) -> Duration {
    let total = set.bytes + set.planted.iter().sum::<u64>();
    Duration::from_secs(300 + total / 2_000_000 + set.files as u64 / 20)
}

impl Bench<'_> {
    fn backup_name(&self, round: usize) -> String {
        format!("{}-r{round}", self.set.name.replace([' ', '.'], "-"))
    }

    fn rclone_prefix(&self, round: usize) -> String {
        format!("rclone/{}", self.backup_name(round))
    }

    fn sidecar_pid(&self) -> Result<u32> {
        Ok(self.sidecar.child.as_ref().context("the sidecar exited")?.id())
    }

    /// The server's CPU seconds so far: the moto or azurite process, or this process for s3s-fs.
    fn server_cpu(&self) -> Result<f64> {
        let port = self.env.backend.port().context("a network server")?.to_string();
        match self.server {
            Server::S3sFs => cpu_secs("self"),
            Server::Moto => cpu_secs(&pid_with_args(&["-p", &port])?.to_string()),
            Server::Azurite => cpu_secs(&pid_with_args(&["--blobPort", &port])?.to_string()),
        }
    }

    async fn measure(&mut self, op: Op, round: usize) -> Result<Option<Sample>> {
        nix::unistd::sync();
        match op {
            Op::OursBackup => self.ours_backup(round).await.map(Some),
            Op::OursRestore => self.ours_restore(round).await.map(Some),
            Op::RcloneBackup | Op::RcloneRestore if self.rclone.is_none() || self.rclone_failed.is_some() => Ok(None),
            Op::RcloneBackup | Op::RcloneRestore => match self.rclone_op(op, round).await {
                Ok(s) => Ok(Some(s)),
                // rclone against an emulator other than s3s-fs may not work: say so, go on.
                Err(e) if self.server != Server::S3sFs => {
                    eprintln!("rclone failed on {}: {e:#}", self.server.name());
                    let text = format!("{e:#}");
                    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
                    self.rclone_failed = Some(last.to_string());
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// A full backup through the sidecar: AsyncBackup, then BackupStatus every 20 ms until SUCCESS.
    async fn ours_backup(&self, round: usize) -> Result<Sample> {
        let (name, pid) = (self.backup_name(round), self.sidecar_pid()?);
        let mut c = self.sidecar.client().await?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting the sidecar's VmHWM")?;
        let (cpu0, server0) = (cpu_secs(&pid.to_string())?, self.server_cpu()?);
        let t0 = Instant::now();
        let full = pb::backup_request::Mode::Full as i32;
        c.async_backup(pb::BackupRequest { name: name.clone(), mode: full }).await?;
        let status = loop {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: name.clone() }).await?.into_inner();
            if s.status == pb::StatusType::Success as i32 {
                break s;
            }
            if s.status == pb::StatusType::Failed as i32 {
                bail!("backup {name} failed: {}\nthe sidecar's log ends:\n{}", s.error, tail(&self.sidecar.log_text()));
            }
            ensure!(t0.elapsed() < self.limit, "backup {name} not done after {:?}", self.limit);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let secs = t0.elapsed().as_secs_f64();
        let (files, bytes) = (status.files_total as u64, status.bytes_total as u64);
        let want = (self.expected.files, self.expected.bytes);
        ensure!(
            (files, bytes) == want,
            "backup {name} took (files, bytes) {:?}, the node holds {want:?}",
            (files, bytes)
        );
        let rss = status_kib(pid, "VmHWM:")?;
        let (cpu, server_cpu) = (cpu_secs(&pid.to_string())? - cpu0, self.server_cpu()? - server0);
        Ok(Sample { secs, rss, cpu, server_cpu })
    }

    /// restore-init into an emptied data directory (the old one set aside), then `sync`.
    async fn ours_restore(&self, round: usize) -> Result<Sample> {
        // The data directory of the last restore, if on a fresh filesystem, goes with it.
        if self.mounts.unmount(&self.data_dir).is_none() {
            self.set_aside(&self.data_dir)?;
            std::fs::create_dir(&self.data_dir)?;
        }
        self.fresh(&self.data_dir)?;
        nix::unistd::sync();
        let key = format!("key-{}", self.backup_name(round));
        let mut cmd = restore_command(&self.env, &self.backup_name(round), &key);
        cmd.env("RUST_LOG", "info").env("MEDUSA_RS_LOG_FORMAT", "json");
        let log = self.work.join(format!("restore-init-{round}.log"));
        let server0 = self.server_cpu()?;
        let mut run = run_measured(&cmd, &log, self.limit).await?;
        let t = Instant::now();
        nix::unistd::sync();
        run.secs += t.elapsed().as_secs_f64();
        run.server_cpu = self.server_cpu()? - server0;
        let done = restore_report(&log)?;
        let want = [self.expected.files, self.expected.bytes, self.expected.files];
        ensure!(done == want, "restore-init reported [files, bytes, downloaded] {done:?}, expected {want:?}");
        let root = self.data_dir.parent().context("data dir has a parent")?;
        ensure!(std::fs::read_to_string(root.join(".last-restore"))?.trim() == key, "no .last-restore");
        self.check(&self.data_dir, "restore-init").await?;
        Ok(run)
    }

    /// `rclone copy` up (the data directory) or down (into a fresh directory, then `sync`).
    async fn rclone_op(&self, op: Op, round: usize) -> Result<Sample> {
        let rclone = self.rclone.as_ref().context("rclone")?;
        // The trailing slash says "a directory": without it rclone first HEADs the path as an
        // object, which s3s-fs answers 500 (a directory on its disk) instead of 404, and rclone
        // retries that for about 90 s.
        let remote = format!("bench:{}/", self.rclone_prefix(round));
        let restored = self.work.join(format!("rclone-restore-{round}"));
        let mut cmd = rclone.command();
        cmd.args(["copy", "--transfers", &self.a.transfers.to_string()]);
        if op == Op::RcloneBackup {
            for x in RCLONE_EXCLUDES {
                cmd.args(["--exclude", x]);
            }
            cmd.arg(&self.data_dir).arg(&remote);
        } else {
            cmd.arg(&remote).arg(&restored);
        }
        if op == Op::RcloneRestore {
            self.fresh(&restored)?;
        }
        let log = self.work.join(format!("rclone-{op:?}-{round}.log"));
        let server0 = self.server_cpu()?;
        let mut run = run_measured(&cmd, &log, self.limit).await?;
        if op == Op::RcloneRestore {
            let t = Instant::now();
            nix::unistd::sync();
            run.secs += t.elapsed().as_secs_f64();
        }
        run.server_cpu = self.server_cpu()? - server0;
        if op == Op::RcloneRestore {
            self.check(&restored, "rclone").await?;
        }
        Ok(run)
    }

    async fn check(&self, dir: &Path, who: &str) -> Result<()> {
        let dir = dir.to_path_buf();
        let got = tokio::task::spawn_blocking(move || digest_data_dir(&dir)).await?;
        ensure!(got == self.expected, "{who} restored other data:\n{}", self.expected.diff(&got));
        Ok(())
    }

    /// Moves `path` below `work/trash/` (deleting many files just before the next operation
    /// would slow its file creation: see the README).
    /// With `--fresh-fs`: an ext4 made for this restore, mounted at `dir` (created).
    fn fresh(&self, dir: &Path) -> Result<()> {
        self.mounts.fresh(dir, self.expected.bytes * 3 / 2 + 256 * MIB)
    }

    fn set_aside(&self, path: &Path) -> Result<()> {
        let trash = self.work.join("trash");
        std::fs::create_dir_all(&trash)?;
        let n = std::fs::read_dir(&trash)?.count();
        Ok(std::fs::rename(path, trash.join(n.to_string()))?)
    }

    /// Deletes what a round left on disk (s3s-fs keeps objects as files): only when keeping
    /// every round's outputs would not fit.
    fn clean_round(&self, round: usize) -> Result<()> {
        let mut dirs = vec![self.work.join("trash"), self.work.join(format!("rclone-restore-{round}"))];
        if let Backend::S3(s3) = &self.env.backend
            && let Some(d) = &s3.data_dir
        {
            dirs.push(d.join(&s3.bucket).join("demo").join(&self.env.fqdn).join(self.backup_name(round)));
            dirs.push(d.join(self.rclone_prefix(round)));
        }
        for d in &dirs {
            self.mounts.unmount(d);
        }
        for d in dirs.iter().filter(|d| d.exists()) {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        nix::unistd::sync();
        if round + 1 < self.a.rounds && !self.a.settle.is_zero() {
            eprintln!("waiting {} s after deleting round {}'s files ...", self.a.settle.as_secs(), round + 1);
            std::thread::sleep(self.a.settle);
        }
        Ok(())
    }
}

/// rclone configured through `RCLONE_CONFIG_BENCH_*` for the remote `bench:`.
struct Rclone {
    vars: Vec<(String, String)>,
    /// An empty config file, so that no user configuration interferes.
    config: PathBuf,
}

impl Rclone {
    /// `via`: the port of a proxy in front of the server.
    fn for_backend(backend: &Backend, via: Option<u16>, work: &Path) -> Result<Rclone> {
        let vars: Vec<(&str, String)> = match backend {
            Backend::S3(s3) => vec![
                ("TYPE", "s3".into()),
                ("PROVIDER", "Other".into()),
                ("ENDPOINT", via.map(|p| format!("http://127.0.0.1:{p}")).unwrap_or_else(|| s3.endpoint.clone())),
                ("ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
                ("SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
                ("REGION", "us-east-1".into()),
            ],
            // rclone 1.60 builds `https://<account>.<endpoint>` from an account and key, which
            // cannot reach azurite on loopback; a SAS URL it takes as given.
            Backend::Azure(az) => vec![("TYPE", "azureblob".into()), ("SAS_URL", azurite_sas_url(&az.endpoint)?)],
            Backend::Local(_) => bail!("rclone rows need a network server"),
        };
        let config = work.join("rclone.conf");
        std::fs::write(&config, "")?;
        let vars = vars.into_iter().map(|(k, v)| (format!("RCLONE_CONFIG_BENCH_{k}"), v)).collect();
        Ok(Rclone { vars, config })
    }

    fn command(&self) -> Command {
        let mut c = Command::new("rclone");
        // rclone refuses to start with this machine's AWS_CA_BUNDLE set.
        c.env_remove("AWS_CA_BUNDLE").envs(self.vars.iter().map(|(k, v)| (k, v))).arg("--config").arg(&self.config);
        c
    }
}

/// An account SAS URL (blob service; containers and objects; read, write, delete, list, add,
/// create) for azurite's well-known account at `endpoint` (`http://127.0.0.1:PORT/<account>`).
fn azurite_sas_url(endpoint: &str) -> Result<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (version, permissions, expiry) = ("2019-12-12", "rwdlac", "2099-01-01T00:00:00Z");
    // Account SAS string to sign: account, permissions, services, resource types, start,
    // expiry, IP, protocol, version, each followed by a newline.
    let to_sign = [AZURITE_ACCOUNT, permissions, "b", "sco", "", expiry, "", "", version, ""].join("\n");
    let signature = b64.encode(hmac_sha256(&b64.decode(AZURITE_KEY)?, to_sign.as_bytes()));
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    Ok(format!("{endpoint}?sv={version}&ss=b&srt=sco&sp={permissions}&se={}&sig={}", enc(expiry), enc(&signature)))
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > k.len() {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// `[files, bytes, downloaded]` of restore-init's `restore complete` log line (JSON logs).
fn restore_report(log: &Path) -> Result<[u64; 3]> {
    let text = std::fs::read_to_string(log)?;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let f = &v["fields"];
        if f["message"] == "restore complete" {
            let n = |k: &str| f[k].as_u64().with_context(|| format!("no {k} in {line}"));
            return Ok([n("files")?, n("bytes")?, n("downloaded")?]);
        }
    }
    bail!("no `restore complete` line in {}:\n{}", log.display(), tail(&text))
}

/// Runs `cmd` through this binary's `--rusage-child` wrapper, output to `log`; its wall time,
/// `ru_maxrss` and CPU seconds. Fails on a non-zero exit or after `limit`.
async fn run_measured(cmd: &Command, log: &Path, limit: Duration) -> Result<Sample> {
    let out = log.with_extension("rusage");
    let mut w = Command::new(std::env::current_exe()?);
    w.arg("--rusage-child").arg(&out).arg(limit.as_secs().to_string()).arg("--");
    w.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    let file = std::fs::File::create(log)?;
    w.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    let t0 = Instant::now();
    let mut child = w.spawn()?;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > limit + Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{:?} did not end within {limit:?}", cmd.get_program());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let secs = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    ensure!(status.success(), "{:?} failed ({status}); its output ends:\n{}", cmd.get_program(), tail(&text));
    let r: Vec<f64> = std::fs::read_to_string(&out)?.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    ensure!(r.len() == 3, "bad rusage record {r:?}");
    Ok(Sample { secs, rss: r[0] as u64 * 1024, cpu: r[1], server_cpu: 0.0 })
}

/// `--rusage-child OUT LIMIT_SECS -- PROGRAM ARGS...`: runs the program, kills it after the
/// limit, writes `ru_maxrss` (KiB) and user + system CPU seconds of its child to OUT, exits with
/// the program's code.
fn rusage_child(args: &[String]) -> Result<()> {
    use nix::sys::resource::{UsageWho, getrusage};
    let [out, limit, dashes, program, rest @ ..] = args else { bail!("--rusage-child OUT SECS -- PROGRAM ...") };
    ensure!(dashes == "--", "--rusage-child OUT SECS -- PROGRAM ...");
    let deadline = Instant::now() + Duration::from_secs(limit.parse()?);
    let mut child = Command::new(program).args(rest).spawn().with_context(|| format!("starting {program}"))?;
    let code = loop {
        if let Some(st) = child.try_wait()? {
            break st.code().unwrap_or(128);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{program} killed after {limit} s");
            break 124;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let u = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let cpu = secs(u.user_time()) + secs(u.system_time());
    std::fs::write(out, format!("{} {cpu:.3} 0\n", u.max_rss()))?;
    std::process::exit(code)
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100);
    Ok(ticks as f64 / hz as f64)
}

/// The process whose command line holds `args` in a row (a server started on a known port).
fn pid_with_args(args: &[&str]) -> Result<u32> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if argv.windows(args.len()).any(|w| w.iter().zip(args).all(|(a, b)| *a == b.as_bytes())) {
            return Ok(pid);
        }
    }
    bail!("no process with arguments {args:?}")
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `rclone version`'s first line; `None` when rclone is not installed.
fn rclone_version() -> Option<String> {
    let out = Command::new("rclone").arg("version").env_remove("AWS_CA_BUNDLE").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("rclone (version unknown)").to_string())
}

/// The defaults of rclone's flags that shape these transfers.
fn rclone_defaults() -> Vec<String> {
    const FLAGS: [&str; 8] = [
        "--s3-upload-cutoff ",
        "--s3-chunk-size ",
        "--s3-upload-concurrency ",
        "--azureblob-chunk-size ",
        "--azureblob-upload-concurrency ",
        "--multi-thread-cutoff ",
        "--multi-thread-streams ",
        "--checkers ",
    ];
    let out = Command::new("rclone").args(["help", "flags"]).env_remove("AWS_CA_BUNDLE").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let default = |l: &str| l.rsplit_once("(default ").map(|d| d.1.trim_end_matches(')').to_string());
    FLAGS
        .iter()
        .filter_map(|f| {
            let line = text.lines().find(|l| l.trim_start().starts_with(f))?;
            Some(format!("{}={}", f.trim(), default(line)?))
        })
        .collect()
}

/// Versions of the servers: s3s-fs from Cargo.lock, moto and azurite from their installs.
fn server_version(server: Server) -> String {
    let found = match server {
        Server::S3sFs => {
            let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
            lock.split("[[package]]")
                .find(|p| p.contains("name = \"s3s-fs\""))
                .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
                .map(|v| v.trim_matches('"').to_string())
        }
        Server::Moto => glob_version(&tools_dir().join("venv/lib"), "moto-", ".dist-info"),
        Server::Azurite => {
            let p = tools_dir().join("npm/node_modules/azurite/package.json");
            let v: Option<serde_json::Value> = std::fs::read(p).ok().and_then(|b| serde_json::from_slice(&b).ok());
            v.and_then(|v| v["version"].as_str().map(str::to_string))
        }
    };
    found.unwrap_or_else(|| "unknown".into())
}

/// `<dir>/python*/site-packages/<prefix>VERSION<suffix>` → VERSION.
fn glob_version(dir: &Path, prefix: &str, suffix: &str) -> Option<String> {
    for py in std::fs::read_dir(dir).ok()?.flatten() {
        for e in std::fs::read_dir(py.path().join("site-packages")).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)) {
                return Some(v.to_string());
            }
        }
    }
    None
}

fn print_conditions(a: &Args, rclone: Option<&str>) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("medusa-rs vs rclone on S3 (full backup and restore of a simulated node)");
    println!("machine: nproc {nproc}, kernel {}, load average at the start {}", kernel.trim(), loadavg());
    match rclone {
        Some(v) => println!("rclone: {v}; defaults used: {}", rclone_defaults().join(" ")),
        None => println!("rclone not found (Debian: apt-get install rclone, 1.60)"),
    }
    for s in &a.servers {
        let how = if *s == Server::S3sFs { " in this process, TCP_NODELAY" } else { ", own process" };
        println!("server: {} {}{how}", s.name(), server_version(*s));
    }
    println!(
        "settings: medusa.ini multi_part_upload_threshold = 104857600, multipart_chunksize = 52428800, \
         concurrent_transfers = {t}, max_retries and retry_timeout unset (7, 180 s), no bandwidth limit; \
         rclone copy --transfers {t}, no bandwidth limit; \
         {} rounds, size scale {}; restores into a fresh ext4 each: {}",
        a.rounds,
        a.scale,
        if a.fresh_fs { "yes" } else { "no" },
        t = a.transfers
    );
    println!(
        "columns: medians over the rounds; MB/s = 10^6 bytes/s of the data set's bytes (what a backup takes); \
         ratio = rclone s / ours s (> 1: medusa-rs faster). Rounds alternate: odd rounds run ours first, even \
         rounds rclone first; every operation starts after a sync. ours backup = AsyncBackup to SUCCESS, RSS = \
         the sidecar's VmHWM after a clear_refs reset, CPU = the sidecar's. Restores include a final sync; RSS \
         and CPU of restore-init and rclone from getrusage of the child. server CPU s: for s3s-fs this bench \
         process (s3s-fs, the simulated node's Management API and the latency proxy if any), else the server \
         process (/proc/<pid>/stat). CPU/GiB = client CPU s per GiB of the set; CPU ratio = ours / rclone's \
         (< 1: medusa-rs uses less). spread = (slowest - fastest) / median of the rounds."
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one operation's samples.
struct Medians {
    secs: f64,
    rss: f64,
    cpu: f64,
    server_cpu: f64,
}

impl Medians {
    fn of(samples: &BTreeMap<Op, Vec<Sample>>, op: Op) -> Option<Medians> {
        let s = samples.get(&op)?;
        let m = |f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
        Some(Medians {
            secs: m(|s| s.secs),
            rss: m(|s| s.rss as f64),
            cpu: m(|s| s.cpu),
            server_cpu: m(|s| s.server_cpu),
        })
    }

    fn columns(&self, bytes: u64) -> String {
        let mbps = bytes as f64 / self.secs / 1e6;
        let per_gib = self.cpu / (bytes as f64 / GIB as f64);
        format!("{:>8.2} {mbps:>7.1} {:>8.1} {:>6.1} {per_gib:>7.2}", self.secs, self.rss / MIB as f64, self.cpu)
    }
}

fn print_set(b: &Bench, samples: &BTreeMap<Op, Vec<Sample>>, load_before: &str) {
    let e = &b.expected;
    let largest = e.entries.values().map(|f| f.size).max().unwrap_or(0);
    let (set, server, rounds) = (&b.set.name, b.server.name(), b.a.rounds);
    println!(
        "\n== {set} on {server}{}: {} ({} bytes) in {} files, largest file {}; medians of {rounds} rounds ==",
        if b.delay_ms > 0 { format!(" through a proxy adding {} ms per request", b.delay_ms) } else { String::new() },
        human(e.bytes),
        e.bytes,
        e.files,
        human(largest),
    );
    let rclone = samples.contains_key(&Op::RcloneBackup);
    let head = |who: &str| format!("{who:>8} {:>7} {:>8} {:>6} {:>7}", "MB/s", "RSS MiB", "CPU s", "CPU/GiB");
    let theirs = if rclone { format!(" | {} | ratio | CPU ratio", head("rclone s")) } else { String::new() };
    println!("{:<9} {}{theirs} | server CPU s", "operation", head("ours s"));
    for (what, ours, theirs) in
        [("backup", Op::OursBackup, Op::RcloneBackup), ("restore", Op::OursRestore, Op::RcloneRestore)]
    {
        let Some(ours) = Medians::of(samples, ours) else { continue };
        let theirs = Medians::of(samples, theirs);
        let mut line = format!("{what:<9} {}", ours.columns(e.bytes));
        if let Some(t) = &theirs {
            line.push_str(&format!(
                " | {} | {:>5.2} | {:>9.2}",
                t.columns(e.bytes),
                t.secs / ours.secs,
                ours.cpu / t.cpu
            ));
        }
        line.push_str(&format!(" | {:.1}", ours.server_cpu));
        if let Some(t) = &theirs {
            line.push_str(&format!(" / {:.1}", t.server_cpu));
        }
        let share = |m: &Medians| m.server_cpu / m.secs;
        if b.server != Server::S3sFs
            && (share(&ours) >= SERVER_BOUND || theirs.as_ref().is_some_and(|t| share(t) >= SERVER_BOUND))
        {
            line.push_str(&format!(" (server-bound: {server} is the bottleneck)"));
        }
        println!("{line}");
    }
    for (op, s) in samples {
        let v: Vec<String> = s.iter().map(|s| format!("{:.2}", s.secs)).collect();
        let server: Vec<String> = s.iter().map(|s| format!("{:.1}", s.server_cpu)).collect();
        let secs: Vec<f64> = s.iter().map(|s| s.secs).collect();
        let (lo, hi) = secs.iter().fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        let spread =
            if secs.len() > 1 { format!(", spread {:.0} %", (hi - lo) / median(secs) * 100.0) } else { String::new() };
        println!("  {op:?} per round (s): {}{spread}; server CPU s: {}", v.join(" "), server.join(" "));
    }
    if let Some(why) = &b.rclone_failed {
        println!("  rclone did not work against {server}: {why}");
    }
    if b.per_round_cleanup {
        println!("  each round's outputs were deleted at its end: keeping them all would not fit on disk");
    }
    println!("  load average before {load_before}, after {}", loadavg());
}
