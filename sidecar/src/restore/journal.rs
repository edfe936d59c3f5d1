//! The restore's journal and its staging directory: where a restore keeps what it downloaded
//! and which phase it reached, so that a killed run resumes instead of starting over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::place::Staging;
use super::{RestoreError, io};
use crate::format::names::RestoreKey;

/// The phase a restore reached.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Downloading into staging; the data directory is untouched.
    Downloading,
    /// Every file is staged, verified and flushed; placing into the data directory.
    Placing,
}

/// What the journal records.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    /// The restore key.
    pub key: String,
    /// The backup.
    pub backup: String,
    /// The node whose backup is restored.
    pub source: String,
    /// The phase reached.
    pub phase: Phase,
}

fn device(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.dev())
}

/// The staging directory of restore `key`, created: `<tmp_dir>/medusa-restore-<key>` when
/// `tmp_dir` (default `/tmp`) is on the data directory's filesystem, so that placing is a
/// rename, else in the Cassandra root. Staging directories of older restores are removed.
pub fn staging(
    key: &RestoreKey,
    tmp_dir: Option<&Path>,
    data_dir: &Path,
    root: &Path,
) -> Result<Staging, RestoreError> {
    let base = tmp_dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/tmp"));
    let base = if device(&base).is_some() && device(&base) == device(data_dir) { base } else { root.to_path_buf() };
    let staging = Staging::new(base.join(format!("medusa-restore-{key}")));
    remove_stale_staging(&base, &staging.root);
    std::fs::create_dir_all(&staging.root).map_err(io(format!("creating {}", staging.root.display())))?;
    Ok(staging)
}

/// Removes staging directories that earlier restores (other keys) of medusa-rs left behind:
/// only those holding our journal, so that nothing else in a shared directory is touched.
fn remove_stale_staging(base: &Path, ours: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let stale = p != ours
            && e.file_name().to_string_lossy().starts_with("medusa-restore-")
            && read(&Staging::new(p.clone())).is_some();
        if stale {
            tracing::info!(dir = %p.display(), "removing the staging directory of an older restore");
            if let Err(e) = remove(&Staging::new(p.clone())) {
                tracing::warn!(dir = %p.display(), error = %e, "could not remove the staging directory");
            }
        }
    }
}

/// Removes the staging directory of restore `key` that is already done: a restore killed after
/// writing `.last-restore` and before removing its staging would otherwise leave it behind for
/// good (every later run skips). Looked for where [`staging`] may have put it; only a directory
/// holding our journal is removed.
pub fn remove_finished(key: &RestoreKey, tmp_dir: Option<&Path>, root: &Path) {
    let base = tmp_dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/tmp"));
    for dir in [base, root.to_path_buf()] {
        let s = Staging::new(dir.join(format!("medusa-restore-{key}")));
        if read(&s).is_some() {
            tracing::info!(dir = %s.root.display(), "removing the staging directory of the finished restore");
            if let Err(e) = remove(&s) {
                tracing::warn!(dir = %s.root.display(), error = %e, "could not remove the staging directory");
            }
        } else {
            // A run killed between removing the journal (last file) and the directory left it
            // empty; `remove_dir` removes only an empty directory, so nothing else is at risk.
            let _ = std::fs::remove_dir(&s.root);
        }
    }
}

/// Removes a staging directory with its journal last, so that a kill part-way leaves either a
/// directory still recognisable by its journal or an empty one, never an unrecognisable tree.
pub fn remove(s: &Staging) -> std::io::Result<()> {
    for e in std::fs::read_dir(&s.root)?.flatten() {
        let p = e.path();
        if p == s.journal() {
            continue;
        }
        if e.file_type()?.is_dir() { std::fs::remove_dir_all(&p)? } else { std::fs::remove_file(&p)? }
    }
    match std::fs::remove_file(s.journal()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::remove_dir(&s.root)
}

/// The journal in `s`, if there is a readable one.
pub fn read(s: &Staging) -> Option<Journal> {
    std::fs::read(s.journal()).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// Writes the journal atomically.
pub fn write(s: &Staging, j: &Journal) -> Result<(), RestoreError> {
    crate::fsutil::write_atomic(&s.journal(), &serde_json::to_vec(j).expect("json"))
        .map_err(io("writing the restore journal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(s: &Staging) {
        let j = Journal { key: "k1".into(), backup: "b".into(), source: "n".into(), phase: Phase::Placing };
        write(s, &j).unwrap();
    }

    #[test]
    fn a_finished_staging_is_removed_whatever_moment_the_last_removal_was_killed_at() {
        let tmp = std::env::temp_dir().join(format!("medusa-journal-{}", uuid::Uuid::new_v4()));
        let root = tmp.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let key = RestoreKey::new("k1".to_string()).unwrap();
        let s = Staging::new(tmp.join("medusa-restore-k1"));
        // Killed part-way through `remove`: some tables gone, the journal still there.
        std::fs::create_dir_all(s.table("ks", "t-1")).unwrap();
        std::fs::write(s.table("ks", "t-1").join("a-Data.db"), b"x").unwrap();
        journal(&s);
        remove_finished(&key, Some(&tmp), &root);
        assert!(!s.root.exists());
        // Killed after the journal (removed last) and before the directory: left empty.
        std::fs::create_dir_all(&s.root).unwrap();
        remove_finished(&key, Some(&tmp), &root);
        assert!(!s.root.exists());
        // A directory of that name that is not ours (no journal, not empty) is left alone.
        std::fs::create_dir_all(s.root.join("someone-else")).unwrap();
        remove_finished(&key, Some(&tmp), &root);
        assert!(s.root.join("someone-else").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
