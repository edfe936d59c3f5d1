//! Snapshots as Cassandra 4.1 takes them: per table directory, `snapshots/<tag>/` holding hard
//! links to every live SSTable component (2i files under `.<index>/`), plus `manifest.json` and
//! `schema.cql`.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::json;

use super::node::SimNode;
use super::schema::TableDef;
use super::util::rfc3339;

/// One table's snapshot directory, as `nodetool listsnapshots` / JMX `getSnapshotDetails` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Snapshot tag (directory name).
    pub tag: String,
    /// Keyspace name.
    pub keyspace: String,
    /// Table name (without the id suffix).
    pub table: String,
    /// The live table directory.
    pub table_dir: PathBuf,
    /// `<table dir>/snapshots/<tag>`.
    pub dir: PathBuf,
    /// Files in the snapshot, `manifest.json` and `schema.cql` excluded.
    pub files: usize,
    /// Bytes of every file in the snapshot directory.
    pub size_on_disk: u64,
    /// Bytes not shared with live SSTables (what clearing the snapshot would free).
    pub true_size: u64,
    /// `created_at` from `manifest.json`, if present.
    pub created_at: Option<String>,
}

/// A table directory a snapshot covers.
struct Target {
    dir: PathBuf,
    def: Option<TableDef>,
    keyspace: String,
    table: String,
}

impl SimNode {
    /// `nodetool snapshot -t <tag> [keyspaces...]`: every table of the given keyspaces (all
    /// keyspaces, `system_traces` included, when empty). Fails like Cassandra, before touching
    /// anything, when the tag already exists in one of them.
    pub fn take_snapshot(&self, tag: &str, keyspaces: &[String]) -> io::Result<()> {
        let keyspaces = if keyspaces.is_empty() { self.keyspaces() } else { keyspaces.to_vec() };
        let mut targets = Vec::new();
        for ks in &keyspaces {
            targets.extend(self.keyspace_targets(ks)?);
        }
        self.snapshot_targets(tag, &targets)
    }

    /// `nodetool snapshot -t <tag> -kt ks.t1,ks.t2`: only the named tables (`"ks.table"`).
    pub fn take_table_snapshot(&self, tag: &str, tables: &[String]) -> io::Result<()> {
        let mut targets = Vec::new();
        for kt in tables {
            let (ks, table) = kt
                .split_once('.')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("Invalid keyspace.table: {kt}")))?;
            let target = self
                .keyspace_targets(ks)?
                .into_iter()
                .find(|t| t.table == table)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("Table {table} does not exist")))?;
            targets.push(target);
        }
        self.snapshot_targets(tag, &targets)
    }

    fn snapshot_targets(&self, tag: &str, targets: &[Target]) -> io::Result<()> {
        if tag.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "You must supply a snapshot name."));
        }
        if tag.contains('/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "Snapshot name cannot contain /"));
        }
        if targets.iter().any(|t| t.dir.join("snapshots").join(tag).exists()) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("Snapshot {tag} already exists.")));
        }
        let created_at = rfc3339(SystemTime::now());
        for t in targets {
            snapshot_table(t, tag, &created_at)?;
        }
        Ok(())
    }

    /// Every table directory of a keyspace: the schema's, plus unknown ones found on disk
    /// (e.g. restored from another node).
    fn keyspace_targets(&self, keyspace: &str) -> io::Result<Vec<Target>> {
        let ks_dir = self.data_dir.join(keyspace);
        let mut targets: Vec<Target> = self
            .tables
            .iter()
            .filter(|t| t.keyspace == keyspace)
            .map(|t| Target {
                dir: self.table_dir(t),
                def: Some(t.clone()),
                keyspace: keyspace.to_string(),
                table: t.name.clone(),
            })
            .collect();
        if targets.is_empty() && !ks_dir.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("Keyspace {keyspace} does not exist")));
        }
        if let Ok(entries) = fs::read_dir(&ks_dir) {
            let mut extra = Vec::new();
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() && !targets.iter().any(|t| t.dir == path) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    extra.push(Target {
                        table: table_name_of_dir(&name).to_string(),
                        dir: path,
                        def: None,
                        keyspace: keyspace.to_string(),
                    });
                }
            }
            extra.sort_by(|a, b| a.dir.cmp(&b.dir));
            targets.extend(extra);
        }
        Ok(targets)
    }

    /// `nodetool clearsnapshot [-t <tag>] [keyspaces...]`: removes `snapshots/<tag>` (every
    /// tag when `None`) in the given keyspaces (all when empty). Missing tags are not an error.
    pub fn clear_snapshot(&self, tag: Option<&str>, keyspaces: &[String]) -> io::Result<()> {
        for info in self.list_snapshots() {
            let tag_ok = tag.is_none_or(|t| t == info.tag);
            let ks_ok = keyspaces.is_empty() || keyspaces.contains(&info.keyspace);
            if tag_ok && ks_ok {
                fs::remove_dir_all(&info.dir)?;
                // Cassandra also drops the then-empty `snapshots/` directory.
                let _ = fs::remove_dir(info.table_dir.join("snapshots"));
            }
        }
        Ok(())
    }

    /// True when any table directory holds `snapshots/<tag>`.
    pub fn snapshot_exists(&self, tag: &str) -> bool {
        self.list_snapshots().iter().any(|s| s.tag == tag)
    }

    /// Every `<data_dir>/<ks>/<table dir>/snapshots/<tag>` on disk, sorted by tag, keyspace, table.
    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        let mut out = Vec::new();
        for ks in subdirs(&self.data_dir) {
            let keyspace = file_name(&ks);
            for table_dir in subdirs(&ks) {
                for dir in subdirs(&table_dir.join("snapshots")) {
                    out.push(snapshot_info(&keyspace, &table_dir, &dir));
                }
            }
        }
        out.sort_by(|a, b| (&a.tag, &a.keyspace, &a.table).cmp(&(&b.tag, &b.keyspace, &b.table)));
        out
    }
}

fn snapshot_table(t: &Target, tag: &str, created_at: &str) -> io::Result<()> {
    let snap = t.dir.join("snapshots").join(tag);
    fs::create_dir_all(&snap)?;
    let mut data_files = Vec::new();
    link_live_files(&t.dir, &snap, "", &mut data_files)?;
    for sub in subdirs(&t.dir) {
        let name = file_name(&sub);
        if name.starts_with('.') {
            let target = snap.join(&name);
            fs::create_dir_all(&target)?;
            link_live_files(&sub, &target, &format!("{name}/"), &mut data_files)?;
        }
    }
    data_files.sort();
    let manifest = json!({
        "files": data_files,
        "created_at": created_at,
        "expires_at": null,
        "ephemeral": false,
    });
    let text = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
    fs::write(snap.join("manifest.json"), text)?;
    let cql = match &t.def {
        Some(def) => def.schema_cql(),
        None => format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (\n\tkey text,\n\tvalue blob,\n\tPRIMARY KEY (key));\n",
            t.keyspace, t.table
        ),
    };
    fs::write(snap.join("schema.cql"), cql)
}

/// Hard-links every live component file of `from` into `to`; records `Data.db` names (with the
/// 2i directory prefix) for the manifest. Transaction logs and temporary files are skipped.
fn link_live_files(from: &Path, to: &Path, prefix: &str, data_files: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tmp") || name.contains("_txn_") {
            continue;
        }
        fs::hard_link(entry.path(), to.join(&name))?;
        if name.ends_with("-Data.db") {
            data_files.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}

fn snapshot_info(keyspace: &str, table_dir: &Path, dir: &Path) -> SnapshotInfo {
    let mut info = SnapshotInfo {
        tag: file_name(dir),
        keyspace: keyspace.to_string(),
        table: table_name_of_dir(&file_name(table_dir)).to_string(),
        table_dir: table_dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files: 0,
        size_on_disk: 0,
        true_size: 0,
        created_at: None,
    };
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        let name = e.file_name().to_string_lossy();
        if name != "manifest.json" && name != "schema.cql" {
            info.files += 1;
        }
        info.size_on_disk += meta.len();
        let live = fs::metadata(table_dir.join(rel));
        let shared = live.is_ok_and(|l| l.ino() == meta.ino() && l.dev() == meta.dev());
        if !shared {
            info.true_size += meta.len();
        }
    }
    info.created_at = fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("created_at")?.as_str().map(str::to_string));
    info
}

/// `table1-cd61...` -> `table1` (directories without an id suffix keep their name).
fn table_name_of_dir(dir_name: &str) -> &str {
    match dir_name.rsplit_once('-') {
        Some((name, id)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => name,
        _ => dir_name,
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        // `Path::is_dir` follows links, as Cassandra does for keyspaces on other volumes.
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
