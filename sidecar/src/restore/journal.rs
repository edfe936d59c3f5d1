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
    let staging = Staging { root: base.join(format!("medusa-restore-{key}")) };
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
            && read(&Staging { root: p.clone() }).is_some();
        if stale {
            tracing::info!(dir = %p.display(), "removing the staging directory of an older restore");
            let _ = std::fs::remove_dir_all(&p);
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
        let s = Staging { root: dir.join(format!("medusa-restore-{key}")) };
        if read(&s).is_some() {
            tracing::info!(dir = %s.root.display(), "removing the staging directory of the finished restore");
            if let Err(e) = std::fs::remove_dir_all(&s.root) {
                tracing::warn!(dir = %s.root.display(), error = %e, "could not remove the staging directory");
            }
        }
    }
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
