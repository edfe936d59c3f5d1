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

/// What the journal records: the request whose files the staging directory holds, and the
/// phase it reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The restore key.
    pub key: String,
    /// The backup.
    pub backup: String,
    /// The node whose backup is restored.
    pub source: String,
    /// The node restored onto (absent in journals of older medusa-rs).
    #[serde(default)]
    pub target: Option<String>,
    /// Whether the mapping restores in place (absent in journals of older medusa-rs).
    #[serde(default)]
    pub in_place: Option<bool>,
    /// The phase reached.
    pub phase: Phase,
}

impl Journal {
    /// Whether both record the same request (whatever their phase); a journal of an older
    /// medusa-rs, without target or mapping, matches none.
    pub fn same_request(&self, other: &Journal) -> bool {
        let known = |j: &Journal| j.target.is_some() && j.in_place.is_some();
        known(self)
            && known(other)
            && (&self.key, &self.backup, &self.source, &self.target, self.in_place)
                == (&other.key, &other.backup, &other.source, &other.target, other.in_place)
    }
}

impl std::fmt::Display for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unknown = || "unrecorded".to_string();
        write!(
            f,
            "backup {} of node {} onto {}, in place {}, key {}",
            self.backup,
            self.source,
            self.target.clone().unwrap_or_else(unknown),
            self.in_place.map(|b| b.to_string()).unwrap_or_else(unknown),
            self.key
        )
    }
}

/// Empties staging `s` unless its journal records the request `want` (or there is no journal:
/// a new restore): files staged for another backup, source node or mapping under the same key
/// must not be resumed, since a resumed placement trusts them and the report would name a
/// backup whose data was not restored. Logged.
pub fn discard_other(s: &Staging, want: &Journal) -> Result<(), RestoreError> {
    let found = match std::fs::read(s.journal()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("reading {}", s.journal().display()))(e)),
        Ok(bytes) => serde_json::from_slice::<Journal>(&bytes).ok(),
    };
    match &found {
        Some(j) if j.same_request(want) => return Ok(()),
        Some(j) => {
            tracing::warn!(dir = %s.root.display(), "discarding the staging directory of another restore request ({j}); this one is {want}");
            if j.phase == Phase::Placing {
                tracing::warn!(
                    "that restore had begun placing: tables of its backup that {} does not hold stay in the data directory",
                    want.backup
                );
            }
        }
        None => tracing::warn!(dir = %s.root.display(), "discarding the staging directory: its journal is unreadable"),
    }
    remove(s).map_err(io(format!("discarding {}", s.root.display())))?;
    std::fs::create_dir_all(&s.root).map_err(io(format!("creating {}", s.root.display())))
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

    fn request(backup: &str) -> Journal {
        Journal {
            key: "k1".into(),
            backup: backup.into(),
            source: "n".into(),
            target: Some("n".into()),
            in_place: Some(true),
            phase: Phase::Placing,
        }
    }

    fn journal(s: &Staging) {
        write(s, &request("b")).unwrap();
    }

    #[test]
    fn staging_of_another_request_is_discarded() {
        let tmp = std::env::temp_dir().join(format!("medusa-journal-{}", uuid::Uuid::new_v4()));
        let s = Staging::new(tmp.join("medusa-restore-k1"));
        let staged = s.table("ks", "t-1").join("a-Data.db");
        let stage = |j: Option<&[u8]>| {
            std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
            std::fs::write(&staged, b"x").unwrap();
            if let Some(j) = j {
                std::fs::write(s.journal(), j).unwrap();
            }
        };
        let want = Journal { phase: Phase::Downloading, ..request("b") };
        let json = |j: &Journal| serde_json::to_vec(j).unwrap();
        // The same request, in any phase: kept.
        stage(Some(&json(&request("b"))));
        discard_other(&s, &want).unwrap();
        assert!(staged.exists());
        // No journal (a new restore): nothing to discard.
        std::fs::remove_file(s.journal()).unwrap();
        discard_other(&s, &want).unwrap();
        assert!(staged.exists());
        // Another backup, source, target, mapping or key; an older journal without target and
        // mapping; an unreadable one: emptied, the directory kept.
        let others = [
            request("other"),
            Journal { source: "m".into(), ..request("b") },
            Journal { target: Some("m".into()), ..request("b") },
            Journal { in_place: Some(false), ..request("b") },
            Journal { key: "k0".into(), ..request("b") },
        ];
        let mut journals: Vec<Vec<u8>> = others.iter().map(json).collect();
        journals.push(br#"{"key":"k1","backup":"b","source":"n","phase":"placing"}"#.to_vec());
        journals.push(b"{not json".to_vec());
        for j in journals {
            stage(Some(&j));
            discard_other(&s, &want).unwrap();
            assert!(!staged.exists() && !s.journal().exists(), "{}", String::from_utf8_lossy(&j));
            assert_eq!(std::fs::read_dir(&s.root).unwrap().count(), 0);
        }
        // An older journal is still recognised as ours (so that stale staging is removed).
        std::fs::write(s.journal(), br#"{"key":"k1","backup":"b","source":"n","phase":"placing"}"#).unwrap();
        assert!(read(&s).is_some_and(|j| j.target.is_none() && !j.same_request(&j.clone())));
        std::fs::remove_dir_all(&tmp).unwrap();
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
