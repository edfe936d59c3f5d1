//! Where a restore puts each table, decided before anything is downloaded (contract §6.5, §9): the
//! directory the staged table replaces (through symbolic links, which stay links: a keyspace or
//! table an operator put on another volume is restored onto that volume), the filesystem that
//! rename happens on, and a staging area on that same filesystem, so that placing is a rename
//! for every table. A layout that renames cannot place is refused here, naming every path,
//! before a byte is downloaded; so is a filesystem without room for what is staged on it.
//! Blocking: call through `fsutil::blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::RestoreError;
use super::place::Staging;
use super::plan::{Action, RestorePlan};
use crate::format::names::RestoreKey;

/// Where one table goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The directory the staged table replaces: `<data>/<ks>/<table>`, or the directory a
    /// symbolic link of that name points to (the link itself is left as it is).
    pub dir: PathBuf,
    /// The filesystem `dir` is renamed on (that of its parent, or of the data directory when the
    /// keyspace directory is still to be created).
    pub dev: u64,
    /// An existing directory on that filesystem, where a staging area can live.
    home: PathBuf,
}

/// Every table's [`Target`].
#[derive(Debug, Clone, Default)]
pub struct Targets {
    tables: BTreeMap<(String, String), Target>,
}

impl Targets {
    /// The directory table `ks`/`table` replaces (`<data>/<ks>/<table>` when not resolved).
    pub fn dir(&self, data_dir: &Path, ks: &str, table: &str) -> PathBuf {
        match self.tables.get(&(ks.to_string(), table.to_string())) {
            Some(t) => t.dir.clone(),
            None => data_dir.join(ks).join(table),
        }
    }
}

/// An I/O error that names its path (the kind stays).
pub(crate) fn at(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let msg = format!("{what} {}", path.display());
    move |e| std::io::Error::new(e.kind(), format!("{msg}: {e}"))
}

/// The filesystem holding `path`, or its nearest existing ancestor (a directory to be created
/// lands on that one).
pub(crate) fn device_of(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    loop {
        match std::fs::metadata(p) {
            Ok(m) => return Ok(m.dev()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match p.parent() {
                Some(q) if !q.as_os_str().is_empty() => p = q,
                _ => return Err(at("finding the filesystem of", path)(e)),
            },
            Err(e) => return Err(at("reading", p)(e)),
        }
    }
}

/// Creates `dir` and any missing parent, each owned like the nearest existing ancestor (when
/// run as root): a fresh volume has no data, commit log or hints directory yet.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while std::fs::symlink_metadata(p).is_err() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(at("creating", dir))?;
    if nix::unistd::geteuid().is_root()
        && let Ok(owner) = std::fs::metadata(p)
    {
        for m in &missing {
            nix::unistd::chown(m, Some(owner.uid().into()), Some(owner.gid().into()))
                .map_err(|e| at("giving Cassandra's owner to", m)(e.into()))?;
        }
    }
    Ok(())
}

/// What is at `path` without following a last link.
enum Entry {
    Absent,
    Dir,
    /// A link to a directory, resolved.
    Link(PathBuf),
}

/// Reads `path` as a keyspace or table directory; `Err(Ok(reason))` refuses the layout.
fn entry(path: &Path) -> Result<Entry, Result<String, std::io::Error>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Absent),
        Err(e) => return Err(Err(at("reading", path)(e))),
    };
    if meta.is_dir() {
        return Ok(Entry::Dir);
    }
    if !meta.file_type().is_symlink() {
        return Err(Ok(format!("{} is not a directory", path.display())));
    }
    let link = std::fs::read_link(path).map(|l| l.display().to_string()).unwrap_or_default();
    match std::fs::canonicalize(path) {
        Ok(real) if real.is_dir() => Ok(Entry::Link(real)),
        Ok(real) => Err(Ok(format!("{} links to {}, which is not a directory", path.display(), real.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Ok(format!(
            "{} is a symbolic link to {link}, which does not exist: mount that volume or remove the link",
            path.display()
        ))),
        Err(e) => Err(Err(at("following the link", path)(e))),
    }
}

fn dev(path: &Path) -> Result<u64, Result<String, std::io::Error>> {
    std::fs::metadata(path).map(|m| m.dev()).map_err(|e| Err(at("reading", path)(e)))
}

/// Where table `ks`/`table` goes.
fn resolve(data_dir: &Path, ks: &str, table: &str) -> Result<Target, Result<String, std::io::Error>> {
    let ks_dir = data_dir.join(ks);
    // Areas for a linked keyspace live in its real directory: the path an error names is then
    // the volume's.
    let ks_home = match entry(&ks_dir)? {
        Entry::Absent => {
            let home = data_dir.to_path_buf();
            return Ok(Target { dir: ks_dir.join(table), dev: dev(&home)?, home });
        }
        Entry::Dir => ks_dir.clone(),
        Entry::Link(real) => real,
    };
    let ks_dev = dev(&ks_dir)?;
    let dir = ks_dir.join(table);
    let mount_point = |d: &Path| {
        Ok(format!(
            "{} is a mount point: a restore replaces a table directory by rename, which a mount point \
             cannot take; mount the volume one level up (the keyspace) or link the table to a directory in it",
            d.display()
        ))
    };
    match entry(&dir)? {
        Entry::Absent => Ok(Target { dir, dev: ks_dev, home: ks_home }),
        Entry::Dir if dev(&dir)? != ks_dev => Err(mount_point(&dir)),
        Entry::Dir => Ok(Target { dir, dev: ks_dev, home: ks_home }),
        Entry::Link(real) => {
            let parent = real.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
            let parent_dev = dev(&parent)?;
            if dev(&real)? != parent_dev {
                return Err(mount_point(&real));
            }
            Ok(Target { dir: real, dev: parent_dev, home: parent })
        }
    }
}

/// Where DSE's metadata section goes: this node's metadata directory (cassandra.yaml's
/// `metadata_directory`, else `metadata` beside the data directory), resolved like a table
/// directory whose keyspace directory is its parent. Medusa cleans the configured directory
/// but places into `<data_dir>/../<folder>`; medusa-rs uses the configured one for both.
fn resolve_metadata(dir: &Path) -> Result<Target, Result<String, std::io::Error>> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(Ok(format!("{} cannot be DSE's metadata directory", dir.display())));
    };
    let (Some(root), Some(ks)) = (parent.parent(), parent.file_name()) else {
        return Err(Ok(format!("{} cannot be DSE's metadata directory", dir.display())));
    };
    resolve(root, &ks.to_string_lossy(), &name.to_string_lossy())
}

/// The name of a staging area of restore `key` on another filesystem than the journal's.
fn area_name(key: &RestoreKey) -> String {
    format!(".medusa-restore-{key}")
}

/// Resolves every table the plan touches and gives each a staging area on the filesystem it is
/// renamed on: `staging.root` for tables on that one, else `.medusa-restore-<key>` in the data
/// directory (when it is on another filesystem than the staging root) or in the directory a
/// link leads to. Areas of older restores found there are removed. Nothing in the data
/// directory is changed (the caller creates the data directory itself when absent).
pub fn prepare(
    plan: &RestorePlan,
    data_dir: &Path,
    metadata_dir: &Path,
    staging: Staging,
    key: &RestoreKey,
) -> Result<(Staging, Targets), RestoreError> {
    let io =
        |e: std::io::Error| RestoreError::Io { context: "resolving where the restored tables go".into(), source: e };
    let root_dev = device_of(&staging.root).map_err(io)?;
    let data_dev = device_of(data_dir).map_err(io)?;
    let mut targets = Targets::default();
    let mut refusals = Vec::new();
    for t in plan.tables.iter().filter(|t| t.action != Action::Keep) {
        let resolved = if t.keyspace == crate::format::dse::SECTION {
            resolve_metadata(metadata_dir)
        } else {
            resolve(data_dir, &t.keyspace, &t.table)
        };
        match resolved {
            Ok(target) => {
                targets.tables.insert((t.keyspace.clone(), t.table.clone()), target);
            }
            Err(Ok(reason)) => refusals.push(reason),
            Err(Err(e)) => return Err(io(e)),
        }
    }
    if !refusals.is_empty() {
        refusals.dedup();
        return Err(RestoreError::Invalid(format!(
            "the data directory's layout cannot be restored into: {}; nothing was downloaded or touched",
            refusals.join("; ")
        )));
    }
    // One area per filesystem other than the staging root's.
    let mut homes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for target in targets.tables.values().filter(|t| t.dev != root_dev) {
        let home = if target.dev == data_dev { data_dir.to_path_buf() } else { target.home.clone() };
        homes.entry(target.dev).or_insert(home);
    }
    let areas: BTreeMap<u64, PathBuf> = homes.iter().map(|(d, h)| (*d, h.join(area_name(key)))).collect();
    // Areas are created by the download, after the space check: a refused restore leaves none.
    for (home, area) in homes.values().zip(areas.values()) {
        remove_stale_areas(home, area);
    }
    let mut staging = staging;
    for ((ks, table), target) in &targets.tables {
        if let Some(area) = areas.get(&target.dev) {
            staging.areas.insert((ks.clone(), table.clone()), area.clone());
        }
    }
    if !areas.is_empty() {
        let dirs: Vec<_> = areas.values().map(|a| a.display().to_string()).collect();
        tracing::info!(areas = %dirs.join(", "), "staging tables on the filesystems they are placed on");
    }
    Ok((staging, targets))
}

/// Removes `.medusa-restore-*` areas of other restores (a failed one, then a new key) in `home`.
fn remove_stale_areas(home: &Path, ours: &Path) {
    let Ok(entries) = std::fs::read_dir(home) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let ours_by_name = e.file_name().to_string_lossy().starts_with(".medusa-restore-");
        if p != ours && ours_by_name && e.file_type().is_ok_and(|t| t.is_dir()) {
            tracing::info!(dir = %p.display(), "removing the staging area of an older restore");
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!(dir = %p.display(), error = %e, "could not remove the staging area");
            }
        }
    }
}

/// Free bytes of the filesystem `dir` will be on (that of its nearest existing ancestor).
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    nix::sys::statvfs::statvfs(existing).ok().map(|s| s.blocks_available() * s.fragment_size())
}

/// Refuses, before downloading, a staging area whose filesystem has no room for the files still
/// to be staged in it (files already staged at their size count as there).
pub fn check_space(plan: &RestorePlan, staging: &Staging) -> Result<(), RestoreError> {
    let mut needed: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for t in &plan.tables {
        if let Action::Replace(files) = &t.action {
            let dir = staging.table(&t.keyspace, &t.table);
            let area = staging.area(&t.keyspace, &t.table).to_path_buf();
            for f in files {
                if !std::fs::metadata(dir.join(f.file.rel())).is_ok_and(|m| m.len() == f.size) {
                    *needed.entry(area.clone()).or_default() += f.size;
                }
            }
        }
    }
    for (dir, needed) in needed {
        if let Some(available) = free_bytes(&dir)
            && needed > available
        {
            return Err(RestoreError::NoSpace { dir, needed, available });
        }
    }
    Ok(())
}

/// Every staging area but the root that exists (one with nothing to download may not).
pub fn areas(staging: &Staging) -> BTreeSet<PathBuf> {
    staging.areas.values().filter(|a| a.exists()).cloned().collect()
}
