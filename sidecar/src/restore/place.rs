//! Putting a verified staging tree into the data directory by renames on one filesystem, so
//! that an interrupted placement is finished by the next run instead of leaving a mix; and the
//! rest of §6.5: commitlog, saved caches and hints cleared, tokens into `cassandra.yaml`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::plan::{Action, RestorePlan};
use crate::fsutil::sync_dir;

/// Where the staging tree, the set-aside old tables and the journal live.
#[derive(Debug, Clone)]
pub struct Staging {
    /// `<tmp>/medusa-restore-<key>`.
    pub root: PathBuf,
}

impl Staging {
    /// Downloaded tables: `<root>/data/<ks>/<table>`.
    pub fn table(&self, ks: &str, table: &str) -> PathBuf {
        self.root.join("data").join(ks).join(table)
    }

    /// Old tables moved aside: `<root>/old/<ks>/<table>`.
    pub fn old(&self, ks: &str, table: &str) -> PathBuf {
        self.root.join("old").join(ks).join(table)
    }

    /// The phase journal.
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal.json")
    }
}

/// Gives a staged tree Cassandra's ownership (that of the data directory) and modes.
fn own_like_cassandra(tree: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.map_err(std::io::Error::other)?;
        let mode = if entry.file_type().is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
        if me == 0 {
            nix::unistd::chown(entry.path(), Some(uid.into()), Some(gid.into())).map_err(std::io::Error::from)?;
        }
    }
    Ok(())
}

/// Applies the plan. Idempotent: every step checks what an earlier, interrupted run already did.
pub fn place(plan: &RestorePlan, staging: &Staging, data_dir: &Path) -> std::io::Result<()> {
    let owner = std::fs::metadata(data_dir)?;
    for t in &plan.tables {
        let dest = data_dir.join(&t.keyspace).join(&t.table);
        let staged = staging.table(&t.keyspace, &t.table);
        let old = staging.old(&t.keyspace, &t.table);
        match &t.action {
            Action::Keep => continue,
            Action::Remove => {
                if dest.exists() && !old.exists() {
                    std::fs::create_dir_all(old.parent().expect("has parent"))?;
                    std::fs::rename(&dest, &old)?;
                } else if dest.exists() {
                    std::fs::remove_dir_all(&dest)?;
                }
            }
            Action::Replace(_) => {
                if !staged.exists() {
                    continue; // placed by an earlier run
                }
                own_like_cassandra(&staged, owner.uid(), owner.gid())?;
                if dest.exists() {
                    if old.exists() {
                        // Set aside before, and something is at dest again: not ours to keep.
                        std::fs::remove_dir_all(&dest)?;
                    } else {
                        std::fs::create_dir_all(old.parent().expect("has parent"))?;
                        std::fs::rename(&dest, &old)?;
                    }
                }
                let ks_dir = data_dir.join(&t.keyspace);
                if !ks_dir.exists() {
                    std::fs::create_dir_all(&ks_dir)?;
                    own_like_cassandra(&ks_dir, owner.uid(), owner.gid())?;
                }
                std::fs::rename(&staged, &dest)?;
            }
        }
        sync_dir(&data_dir.join(&t.keyspace))
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })?;
        // A placement step that only moves things is an important place to be interrupted.
        if let Some(ms) = std::env::var("MEDUSA_RS_TEST_PLACE_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    Ok(())
}

/// Empties a directory, keeping the directory itself (commitlog, saved_caches, hints).
pub fn empty_dir(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Medusa's `cassandra.yaml` edit for a restore onto other nodes (§6.5 step 9): every
/// `initial_token:` line gets the tokens, `num_tokens:` their count, `auto_bootstrap:` false;
/// `initial_token` and `auto_bootstrap` are appended when absent. Written atomically.
pub fn set_tokens(yaml: &Path, tokens: &[String]) -> std::io::Result<()> {
    let text = std::fs::read_to_string(yaml)?;
    let list = tokens.join(",");
    let (mut saw_initial, mut saw_bootstrap) = (false, false);
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("initial_token:") {
                saw_initial = true;
                format!("initial_token: {list}")
            } else if l.starts_with("num_tokens:") {
                format!("num_tokens: {}", tokens.len())
            } else if l.starts_with("auto_bootstrap:") {
                saw_bootstrap = true;
                "auto_bootstrap: false".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !saw_initial {
        out.push(format!("initial_token: {list}"));
    }
    if !saw_bootstrap {
        out.push("auto_bootstrap: false".into());
    }
    let mut body = out.join("\n");
    body.push('\n');
    crate::fsutil::write_atomic(yaml, body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_gets_tokens_like_medusa() {
        let dir = std::env::temp_dir().join(format!("medusa-yaml-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let y = dir.join("cassandra.yaml");
        std::fs::write(&y, "cluster_name: x\nnum_tokens: 16\n# initial_token: commented\n").unwrap();
        set_tokens(&y, &["-5".into(), "7".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&y).unwrap(),
            "cluster_name: x\nnum_tokens: 2\n# initial_token: commented\ninitial_token: -5,7\nauto_bootstrap: false\n"
        );
        set_tokens(&y, &["9".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&y).unwrap(),
            "cluster_name: x\nnum_tokens: 1\n# initial_token: commented\ninitial_token: 9\nauto_bootstrap: false\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
