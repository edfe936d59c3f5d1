//! Purge benchmark (contract §5): wall time and peak RSS of a purge over a generated `local` bucket of
//! differential backups, and of the steady-state purge that follows (nothing left to delete).
//!
//! The bucket is written as plain files under a `LocalFileSystem` root, with the contract §2.2 keys from
//! `medusa::format::layout`: per node, `--backups` differential backups one day apart, each manifest
//! listing `--files` tiny data files of which `--new-percent` are new in each backup (the rest
//! is shared with the backup before). Each purge runs in a fresh process of this binary
//! (`--purge-child`) on node 0 with `max_backup_count = --keep`, grace 0, exclusive, after
//! resetting the RSS high-water mark (`/proc/self/clear_refs`). The bench then checks that the
//! purge left exactly what the retention keeps. Target: RSS < 64 MiB at full size (a purge must
//! not need memory in proportion to the bucket).
//!
//! Run: `cargo bench -p medusa-tests --bench purge -- [--backups 500] [--nodes 3]
//! [--files 5000] [--new-percent 2] [--keep 7]`.

mod common;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use common::{MIB, own_status};
use harness::services::TempDir;
use medusa::config::Provider;
use medusa::format::layout::{Layout, Meta, Mode, TableFile};
use medusa::format::manifest::{ManifestObject, ManifestSection};
use medusa::format::names::{BackupName, Fqdn};
use medusa::retention::purge::{Limits, PurgeReport, purge};
use medusa::store::Storage;
use object_store::local::LocalFileSystem;

const TARGET_RSS: u64 = 64 * MIB;
const DAY: i64 = 86_400;
const PREFIX: &str = "demo";
const TABLES: usize = 10;
const USAGE: &str = "usage: purge [--backups N] [--nodes N] [--files N] [--new-percent P] [--keep N]";

#[derive(Debug, Clone, Copy)]
struct Size {
    backups: usize,
    nodes: usize,
    files: usize,
    new_percent: usize,
    keep: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--purge-child") {
        return purge_child(&args[1..]);
    }
    let size = parse_args(args)?;
    let dir = TempDir::new("purge-bench")?;
    let root = dir.path().join("bucket");
    let now = epoch_now();
    let t = Instant::now();
    let written = generate(&root, size, now)?;
    eprintln!("generated {written} objects for {size:?} in {:.1?} ({} MiB on disk)", t.elapsed(), du(&root)? / MIB);

    let first = run_child(&root, size)?;
    verify(&root, size)?;
    let second = run_child(&root, size)?;
    let purged = size.backups.saturating_sub(size.keep) as u64;
    if first.report.backups != purged || second.report.backups != 0 || second.report.objects != 0 {
        bail!("unexpected reports: {:?} then {:?}", first.report, second.report);
    }
    println!(
        "purge bench: {} nodes x {} differential backups x {} files ({}% new per backup), local storage",
        size.nodes, size.backups, size.files, size.new_percent
    );
    println!(
        "{:<22} {:>8} {:>10} {:>12} {:>10} {:>14} {:>14}",
        "purge (node 0)", "backups", "objects", "bytes", "wall s", "RSS before MiB", "peak RSS MiB"
    );
    for (label, r) in [(format!("keep {}", size.keep), &first), ("steady state".to_string(), &second)] {
        println!(
            "{label:<22} {:>8} {:>10} {:>12} {:>10.2} {:>14.1} {:>14.1}",
            r.report.backups,
            r.report.objects,
            r.report.bytes,
            r.secs,
            r.rss_before as f64 / MIB as f64,
            r.peak as f64 / MIB as f64
        );
    }
    let worst = first.peak.max(second.peak);
    println!("target: peak RSS < {} MiB: {}", TARGET_RSS / MIB, if worst < TARGET_RSS { "met" } else { "MISSED" });
    Ok(())
}

fn parse_args(args: Vec<String>) -> Result<Size> {
    let mut s = Size { backups: 500, nodes: 3, files: 5_000, new_percent: 2, keep: 7 };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--bench" {
            continue; // passed by `cargo bench`
        }
        let v: usize = args
            .next()
            .with_context(|| format!("{a} needs a value\n{USAGE}"))?
            .parse()
            .with_context(|| format!("{a} takes a whole number"))?;
        match a.as_str() {
            "--backups" => s.backups = v,
            "--nodes" => s.nodes = v,
            "--files" => s.files = v,
            "--new-percent" => s.new_percent = v,
            "--keep" => s.keep = v,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if s.backups == 0 || s.nodes == 0 || s.files == 0 || s.keep == 0 || s.new_percent > 100 {
        bail!("sizes must be positive and --new-percent at most 100\n{USAGE}");
    }
    Ok(s)
}

fn epoch_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn fqdn(i: usize) -> Fqdn {
    Fqdn::new(format!("demo-dc1-default-sts-{i}")).expect("valid node name")
}

fn backup_name(i: usize) -> BackupName {
    BackupName::new(format!("medusa-backup-{i:05}")).expect("valid backup name")
}

fn table(t: usize) -> (String, String) {
    (format!("ks{}", t % 3), format!("table{t}-{:032x}", t * 7919))
}

fn new_files(size: Size) -> usize {
    (size.files * size.new_percent).div_ceil(100)
}

/// Writes plain files below the bucket root, creating each directory once.
struct Writer {
    root: PathBuf,
    dirs: HashSet<PathBuf>,
    objects: u64,
}

impl Writer {
    fn put(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(key);
        let parent = path.parent().context("key without parent")?;
        if !self.dirs.contains(parent) {
            std::fs::create_dir_all(parent)?;
            self.dirs.insert(parent.to_path_buf());
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.objects += 1;
        Ok(())
    }
}

/// The bucket: every node's backups, contract §2.2 objects in §2.7 order, one day apart, the last
/// starting a day before `now`.
fn generate(root: &Path, size: Size, now: i64) -> Result<u64> {
    let l = Layout::new(Some(PREFIX));
    let mut w = Writer { root: root.to_path_buf(), dirs: HashSet::new(), objects: 0 };
    let md5 = "0123456789abcdef0123456789abcdef".to_string();
    for node in 0..size.nodes {
        let n = fqdn(node);
        let tokenmap = format!(
            r#"{{"{n}": {{"tokens": [{}], "is_up": true, "rack": "r1", "dc": "dc1"}}}}"#,
            node as i64 * 1_000_000
        );
        // Live generations, oldest first; each backup flushes `new` files and compacts as many away.
        let mut live: VecDeque<usize> = (1..=size.files).collect();
        let mut next_gen = size.files;
        for i in 0..size.backups {
            let b = backup_name(i);
            let new = if i == 0 { size.files } else { new_files(size) };
            if i > 0 {
                for _ in 0..new {
                    live.pop_front();
                    next_gen += 1;
                    live.push_back(next_gen);
                }
            }
            let started = now - (size.backups - i) as i64 * DAY;
            let schema = format!(
                "CREATE KEYSPACE ks0 WITH replication = {{'class': 'NetworkTopologyStrategy', 'dc1': 3}};\n-- {b}\n"
            );
            w.put(&l.meta(&n, &b, Meta::Schema), schema.as_bytes())?;
            w.put(&l.meta(&n, &b, Meta::Tokenmap), tokenmap.as_bytes())?;
            w.put(
                &l.meta(&n, &b, Meta::ServerVersion),
                br#"{"server_type": "cassandra", "release_version": "4.1.5"}"#,
            )?;
            w.put(&l.meta(&n, &b, Meta::Differential), b"differential")?;
            w.put(&l.index_tokenmap(&b, &n), tokenmap.as_bytes())?;
            w.put(&l.index_schema(&b, &n), schema.as_bytes())?;
            w.put(&l.index_started(&b, &n, started), started.to_string().as_bytes())?;
            w.put(&l.index_differential(&b, &n), b"differential")?;
            let mut sections: Vec<ManifestSection> = (0..TABLES)
                .map(|t| {
                    let (ks, dir) = table(t);
                    ManifestSection {
                        keyspace: ks,
                        columnfamily: dir,
                        objects: Vec::with_capacity(size.files / TABLES + 1),
                    }
                })
                .collect();
            for (j, &generation) in live.iter().enumerate() {
                let t = generation % TABLES;
                let (ks, dir) = table(t);
                let key = l.data_key(
                    Mode::Differential,
                    &n,
                    &b,
                    &ks,
                    &dir,
                    &TableFile { index_dir: None, name: format!("nb-{generation}-big-Data.db") },
                );
                if j >= size.files - new {
                    w.put(&key, b"tiny")?;
                }
                sections[t].objects.push(ManifestObject { path: key, md5: Some(md5.clone()), size: 4 });
            }
            let manifest = medusa::format::manifest::to_bytes(&sections);
            w.put(&l.meta(&n, &b, Meta::Manifest), &manifest)?;
            w.put(&l.index_manifest(&b, &n), &manifest)?;
            w.put(&l.index_finished(&b, &n, started + 600), (started + 600).to_string().as_bytes())?;
            w.put(&l.latest_tokenmap(&n), tokenmap.as_bytes())?;
            w.put(&l.latest_backup_name(&n), b.as_str().as_bytes())?;
            if i % 100 == 99 {
                eprintln!("  node {node}: {} backups written", i + 1);
            }
        }
    }
    Ok(w.objects)
}

/// One purge, measured in its own process.
struct Measured {
    report: PurgeReport,
    secs: f64,
    rss_before: u64,
    peak: u64,
}

fn run_child(root: &Path, size: Size) -> Result<Measured> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--purge-child")
        .arg(root)
        .arg(size.keep.to_string())
        .output()
        .context("starting the purge child")?;
    if !out.status.success() {
        bail!("purge child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("RESULT ")).context("no RESULT line from the purge child")?;
    let mut v = line.split_whitespace().map(|f| f.split_once('=').map(|(_, v)| v).unwrap_or(""));
    let mut next = || v.next().context("short RESULT line");
    let report = PurgeReport {
        backups: next()?.parse()?,
        objects: next()?.parse()?,
        bytes: next()?.parse()?,
        within_grace: next()?.parse()?,
        deferred: next()?.parse()?,
        cleanup_deferred: None,
    };
    Ok(Measured { report, secs: next()?.parse()?, rss_before: next()?.parse()?, peak: next()?.parse()? })
}

fn purge_child(args: &[String]) -> Result<()> {
    let [root, keep] = args else { bail!("--purge-child <bucket dir> <keep>") };
    let keep: u32 = keep.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let storage =
        Storage::over(Arc::new(LocalFileSystem::new_with_prefix(root)?), Layout::new(Some(PREFIX)), Provider::Local);
    let limits = Limits { max_backup_age: 0, max_backup_count: keep, grace_days: 0 };
    let now = epoch_now() + 1;
    let rss_before = own_status("VmRSS:")?;
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the RSS high-water mark")?;
    let t = Instant::now();
    let r = rt.block_on(purge(&storage, &fqdn(0), limits, now, &|_| false, true))?;
    let secs = t.elapsed().as_secs_f64();
    let peak = own_status("VmHWM:")?;
    println!(
        "RESULT backups={} objects={} bytes={} within={} deferred={} secs={secs} rss_before={rss_before} peak={peak}",
        r.backups, r.objects, r.bytes, r.within_grace, r.deferred
    );
    Ok(())
}

/// The purge kept exactly the newest `keep` backups of node 0 and their files, and touched no
/// other node.
fn verify(root: &Path, size: Size) -> Result<()> {
    let node_dir = |i: usize| root.join(PREFIX).join(fqdn(i).as_str());
    let shared = |i: usize| count_files(&node_dir(i).join("data"));
    let new = new_files(size);
    let kept = size.keep.min(size.backups);
    let expect0 = size.files + (kept - 1) * new;
    let expect_other = size.files + (size.backups - 1) * new;
    let got0 = shared(0)?;
    if got0 != expect0 {
        bail!("node 0 keeps {got0} shared files, its {kept} remaining backups reference {expect0}");
    }
    for i in 1..size.nodes {
        let got = shared(i)?;
        if got != expect_other {
            bail!("node {i} was touched: {got} shared files instead of {expect_other}");
        }
    }
    // Emptied directories may stay behind (`LocalFileSystem` does not remove them).
    let mut folders = 0;
    for e in std::fs::read_dir(node_dir(0))? {
        let e = e?;
        folders += usize::from(e.file_name() != "data" && count_files(&e.path())? > 0);
    }
    if folders != kept {
        bail!("node 0 keeps {folders} backup folders instead of {kept}");
    }
    Ok(())
}

fn count_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() { count_files(&e.path())? } else { 1 };
    }
    Ok(n)
}

fn du(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() { du(&e.path())? } else { e.metadata()?.len() };
    }
    Ok(n)
}
