//! DSE's metadata directory in a backup (contract §9.1): DSE 6 rewrites its files in place, so
//! they are copied (not linked) into `<metadata>/snapshots/<tag>/` when the snapshot is taken,
//! read from that copy as the manifest section `dse`/`<folder>`, and the copy is removed with
//! the snapshot. Blocking: call through `fsutil::blocking`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::backup::digest_cache::FileId;
use crate::backup::snapshot::{SnapshotFile, SnapshotTable};
use crate::format::dse::{self, MARKER_KEYSPACE};
use crate::format::layout::TableFile;

/// Whether the node is DSE: its data directory has DSE's own system keyspace.
pub fn is_dse(data_dir: &Path) -> bool {
    data_dir.join(MARKER_KEYSPACE).is_dir()
}

/// `<metadata>/snapshots/<tag>`.
fn copy_dir(metadata_dir: &Path, tag: &str) -> PathBuf {
    metadata_dir.join("snapshots").join(tag)
}

/// Copies the metadata directory (without `snapshots/`, `*.txn*` and `*.old*`, as Medusa) to
/// the snapshot `tag` and reads it as a table; `None` when there is no metadata directory
/// (DSE 5.1 keeps that state in system tables). Each file is copied to the place its key will
/// have: it keeps its parent folder when Medusa's key rule keeps it (`*nodes`), any other
/// sub-folder is flattened away (a second file of the same flattened name is left out with a
/// warning: Medusa's layout has no place for it).
pub fn snapshot(metadata_dir: &Path, tag: &str) -> std::io::Result<Option<SnapshotTable>> {
    if !metadata_dir.is_dir() {
        tracing::warn!(dir = %metadata_dir.display(), "DSE node without a metadata directory: nothing of it to back up");
        return Ok(None);
    }
    let dest = copy_dir(metadata_dir, tag);
    remove(metadata_dir, tag)?;
    std::fs::create_dir_all(&dest)?;
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let walk = walkdir::WalkDir::new(metadata_dir).min_depth(1).sort_by_file_name().into_iter();
    for entry in walk.filter_entry(|e| !dse::skipped(&e.file_name().to_string_lossy())) {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let parent = entry.path().parent().filter(|p| *p != metadata_dir).and_then(Path::file_name);
        let index_dir = parent.map(|p| p.to_string_lossy().into_owned()).filter(|p| dse::keeps_parent(p));
        let file = TableFile { index_dir, name: entry.file_name().to_string_lossy().into_owned() };
        if !seen.insert(file.rel()) {
            tracing::warn!(file = %entry.path().display(), "left out of the backup: Medusa's layout flattens it onto another file's key");
            continue;
        }
        let to = dest.join(file.rel());
        std::fs::create_dir_all(to.parent().expect("a parent"))?;
        std::fs::copy(entry.path(), &to)
            .map_err(|e| std::io::Error::new(e.kind(), format!("copying {}: {e}", entry.path().display())))?;
        let meta = std::fs::metadata(&to)?;
        files.push(SnapshotFile { size: meta.len(), id: FileId::of(&to, &meta), file });
    }
    files.sort_by(|a, b| a.file.cmp(&b.file));
    let folder = metadata_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(dse::METADATA.into());
    Ok(Some(SnapshotTable { keyspace: dse::SECTION.into(), table: folder, dir: dest, files, schema_cql: None }))
}

/// Removes the copy of snapshot `tag` (absent is fine).
pub fn remove(metadata_dir: &Path, tag: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(copy_dir(metadata_dir, tag)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Tags of medusa copies (`medusa-*`) in the metadata directory.
pub fn tags(metadata_dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(metadata_dir.join("snapshots")) else { return BTreeSet::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("medusa-"))
        .collect()
}
