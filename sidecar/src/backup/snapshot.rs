//! What a snapshot put on disk: `<data_dir>/<ks>/<table>/snapshots/<tag>/` in every table
//! (contract §3.4), read into a list of tables and files. Blocking: call through `fsutil::blocking`.

use std::path::{Path, PathBuf};

use crate::backup::digest_cache::FileId;
use crate::format::layout::TableFile;
use crate::format::names::BackupName;

/// Keyspace that Medusa never backs up.
pub const SKIPPED_KEYSPACE: &str = "system_traces";

/// The snapshot tag Medusa uses for a backup.
pub fn tag_for(b: &BackupName) -> String {
    format!("medusa-{b}")
}

/// One file of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// Place below the table directory.
    pub file: TableFile,
    /// Bytes.
    pub size: u64,
    /// Identity for the digest cache.
    pub id: FileId,
}

/// One table directory of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    /// Keyspace directory name.
    pub keyspace: String,
    /// Table directory name (with id suffix).
    pub table: String,
    /// The snapshot directory (file paths are derived from it, not stored per file).
    pub dir: PathBuf,
    /// Files, sorted by place.
    pub files: Vec<SnapshotFile>,
    /// The table's CQL from Cassandra's `schema.cql` in the snapshot, if any.
    pub schema_cql: Option<String>,
}

impl SnapshotTable {
    /// Absolute path of the hard link of `f` in this snapshot.
    pub fn path_of(&self, f: &SnapshotFile) -> PathBuf {
        self.dir.join(f.file.rel())
    }
}

/// A path in an I/O error's message: the kind stays, so callers can still match on it.
fn at(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let path = path.display().to_string();
    let what = what.to_string();
    move |e| std::io::Error::new(e.kind(), format!("{what} {path}: {e}"))
}

/// Sub-directories of `dir` (names starting with `.` left out), sorted by name. Symbolic links
/// to directories count: operators put keyspaces and tables on other volumes with them, and
/// Cassandra snapshots through them (so does Medusa). A link whose target is missing is an
/// error naming it: whatever it held would be left out of the backup without a word.
fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(at(dir, "reading"))? {
        let entry = entry.map_err(at(dir, "reading"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(at(&path, "reading"))?;
        let is_dir = if kind.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) => m.is_dir(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{} is a symbolic link to {target}, which does not exist: mount that volume or remove the link",
                            path.display()
                        ),
                    ));
                }
                Err(e) => return Err(at(&path, "following the link")(e)),
            }
        } else {
            kind.is_dir()
        };
        if is_dir {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` is a directory; `Ok(false)` when nothing is there.
fn is_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(dir) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(at(dir, "reading")(e)),
    }
}

/// Keyspace directories of the data directory (without `system_traces`).
pub fn keyspaces(data_dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(sorted_dirs(data_dir)?.into_iter().map(|(n, _)| n).filter(|n| n != SKIPPED_KEYSPACE).collect())
}

/// True when any table already has a snapshot called `tag`.
pub fn exists(data_dir: &Path, tag: &str) -> std::io::Result<bool> {
    for (_, ks) in sorted_dirs(data_dir)? {
        for (_, table) in sorted_dirs(&ks)? {
            if table.join("snapshots").join(tag).is_dir() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Tags of every medusa snapshot (`medusa-*`) on disk, in any table.
pub fn medusa_tags(data_dir: &Path) -> std::io::Result<std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeSet::new();
    for (_, ks) in sorted_dirs(data_dir)? {
        for (_, table) in sorted_dirs(&ks)? {
            let Ok(snaps) = sorted_dirs(&table.join("snapshots")) else { continue };
            out.extend(snaps.into_iter().map(|(n, _)| n).filter(|n| n.starts_with("medusa-")));
        }
    }
    Ok(out)
}

/// Reads the snapshot `tag`: every regular file below each `snapshots/<tag>/` (2i
/// sub-directories included), except Cassandra's own `manifest.json` and `schema.cql`.
/// Keyspace and table directories behind symbolic links are read through them. A table
/// directory that disappears while it is read fails the scan with its path, and so does a
/// snapshot found in no table at all (not even `system`'s): the data directory read is not the
/// one Cassandra wrote the snapshot to, and a backup of it would hold nothing.
pub fn scan(data_dir: &Path, tag: &str) -> std::io::Result<Vec<SnapshotTable>> {
    let mut tables = Vec::new();
    let mut searched = Vec::new();
    for (ks_name, ks) in sorted_dirs(data_dir)? {
        if ks_name == SKIPPED_KEYSPACE {
            continue;
        }
        searched.push(ks_name.clone());
        for (table_name, table) in sorted_dirs(&ks)? {
            let snap = table.join("snapshots").join(tag);
            if !is_dir(&snap)? {
                if !is_dir(&table)? {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("table directory {} disappeared while the snapshot was read", table.display()),
                    ));
                }
                continue;
            }
            tables.push(scan_table(ks_name.clone(), table_name, snap)?);
        }
    }
    if tables.is_empty() {
        return Err(no_tables(data_dir, tag, &searched));
    }
    Ok(tables)
}

fn no_tables(data_dir: &Path, tag: &str, searched: &[String]) -> std::io::Error {
    let keyspaces = if searched.is_empty() { "none".to_string() } else { searched.join(", ") };
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!(
            "snapshot {tag} is in no table of data directory {} (keyspace directories searched: {keyspaces}); \
             data_file_directories in cassandra.yaml must name the directory this Cassandra node writes to",
            data_dir.display()
        ),
    )
}

/// A walk error as an I/O error of the same kind that names the path.
fn walk_error(e: walkdir::Error, fallback: &Path) -> std::io::Error {
    let path = e.path().unwrap_or(fallback).display().to_string();
    let kind = e.io_error().map(std::io::Error::kind).unwrap_or(std::io::ErrorKind::Other);
    std::io::Error::new(kind, format!("reading snapshot file {path}: {e}"))
}

/// One table's snapshot directory, read.
fn scan_table(keyspace: String, table: String, snap: PathBuf) -> std::io::Result<SnapshotTable> {
    let mut files = Vec::new();
    let mut schema_cql = None;
    for entry in walkdir::WalkDir::new(&snap).min_depth(1).max_depth(2).sort_by_file_name() {
        let entry = entry.map_err(|e| walk_error(e, &snap))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let index_dir = if entry.depth() == 2 {
            let parent = entry.path().parent().and_then(Path::file_name).map(|p| p.to_string_lossy().into_owned());
            match parent {
                Some(p) if p.starts_with('.') => Some(p),
                // Not a secondary index folder: nothing Cassandra puts in a snapshot.
                _ => continue,
            }
        } else {
            if name == "manifest.json" {
                continue;
            }
            if name == "schema.cql" {
                schema_cql = std::fs::read_to_string(entry.path()).ok();
                continue;
            }
            None
        };
        let meta = entry.metadata().map_err(|e| walk_error(e, entry.path()))?;
        files.push(SnapshotFile {
            id: FileId::of(entry.path(), &meta),
            size: meta.len(),
            file: TableFile { index_dir, name },
        });
    }
    files.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(SnapshotTable { keyspace, table, dir: snap, files, schema_cql })
}

/// `schema.cql` for the bucket: keyspace statements, then every table's statements from the
/// snapshot, each `;`-terminated and fully qualified, separated by blank lines (contract §2.4).
pub fn assemble_schema(keyspace_cql: &[String], tables: &[SnapshotTable]) -> String {
    let mut parts: Vec<String> = keyspace_cql.iter().map(|s| s.trim().to_string()).collect();
    for t in tables {
        if let Some(cql) = &t.schema_cql {
            let cql = cql.trim();
            if cql.is_empty() {
                continue;
            }
            let mut s = cql.to_string();
            if !s.ends_with(';') {
                s.push(';');
            }
            parts.push(s);
        }
    }
    let mut out = parts.join("\n\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_tables_2i_and_skips_metadata() {
        let root = std::env::temp_dir().join(format!("medusa-snap-{}", uuid::Uuid::new_v4()));
        let t = root.join("ks/t-0123/snapshots/medusa-b1");
        std::fs::create_dir_all(t.join(".t_idx")).unwrap();
        std::fs::write(t.join("nb-1-big-Data.db"), b"data").unwrap();
        std::fs::write(t.join("manifest.json"), b"{}").unwrap();
        std::fs::write(t.join("schema.cql"), b"CREATE TABLE ks.t (k int PRIMARY KEY)").unwrap();
        std::fs::write(t.join(".t_idx/nb-2-big-Data.db"), b"ix").unwrap();
        std::fs::create_dir_all(root.join("system_traces/events-1/snapshots/medusa-b1")).unwrap();
        std::fs::write(root.join("system_traces/events-1/snapshots/medusa-b1/x"), b"x").unwrap();
        std::fs::create_dir_all(root.join("ks/empty-1/snapshots/medusa-b1")).unwrap();
        let tables = scan(&root, "medusa-b1").unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].table, "empty-1");
        assert!(tables[0].files.is_empty());
        let rels: Vec<_> = tables[1].files.iter().map(|f| f.file.rel()).collect();
        assert_eq!(rels, ["nb-1-big-Data.db", ".t_idx/nb-2-big-Data.db"]);
        assert!(exists(&root, "medusa-b1").unwrap());
        assert!(!exists(&root, "medusa-b2").unwrap());
        let schema = assemble_schema(&["CREATE KEYSPACE ks WITH replication = {};".into()], &tables);
        assert_eq!(schema, "CREATE KEYSPACE ks WITH replication = {};\n\nCREATE TABLE ks.t (k int PRIMARY KEY);\n");
        assert_eq!(keyspaces(&root).unwrap(), ["ks"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn follows_linked_keyspaces_and_tables_and_names_what_is_missing() {
        let tmp = std::env::temp_dir().join(format!("medusa-snap-{}", uuid::Uuid::new_v4()));
        let (data, other) = (tmp.join("data"), tmp.join("other"));
        for t in [other.join("ks1/t-1"), other.join("t-2"), data.join("ks2")] {
            std::fs::create_dir_all(t.join("snapshots/medusa-b1")).unwrap();
            std::fs::write(t.join("snapshots/medusa-b1/nb-1-big-Data.db"), b"d").unwrap();
        }
        std::os::unix::fs::symlink(other.join("ks1"), data.join("ks1")).unwrap();
        std::os::unix::fs::symlink(other.join("t-2"), data.join("ks2/t-2")).unwrap();
        let tables = scan(&data, "medusa-b1").unwrap();
        let names: Vec<_> = tables.iter().map(|t| format!("{}/{}", t.keyspace, t.table)).collect();
        assert_eq!(names, ["ks1/t-1", "ks2/t-2"]);
        assert!(tables.iter().all(|t| t.files.len() == 1));
        assert_eq!(medusa_tags(&data).unwrap().into_iter().collect::<Vec<_>>(), ["medusa-b1"]);
        // A table whose volume is gone: the backup fails, naming the link.
        std::fs::remove_dir_all(other.join("t-2")).unwrap();
        let e = scan(&data, "medusa-b1").unwrap_err().to_string();
        assert!(e.contains(&data.join("ks2/t-2").display().to_string()) && e.contains("does not exist"), "{e}");
        // A data directory that holds no snapshot of that tag: fails, naming what was searched.
        std::fs::remove_file(data.join("ks2/t-2")).unwrap();
        let e = scan(&data, "medusa-b2").unwrap_err().to_string();
        assert!(e.contains(&data.display().to_string()) && e.contains("searched: ks1, ks2"), "{e}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
