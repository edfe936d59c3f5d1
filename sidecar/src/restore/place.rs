//! Putting a verified staging tree into the data directory by renames on one filesystem, so
//! that an interrupted placement is finished by the next run instead of leaving a mix; and the
//! rest of contract §6.5: commitlog, saved caches and hints cleared, tokens into `cassandra.yaml`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::plan::{Action, RestorePlan};
use super::targets::{Targets, at, device_of};
use crate::fsutil::sync_dir;

/// Where the staging tree, the set-aside old tables and the journal live.
#[derive(Debug, Clone, Default)]
pub struct Staging {
    /// `<tmp>/medusa-restore-<key>`: the journal, and the tables placed on its filesystem.
    pub root: PathBuf,
    /// Tables placed on another filesystem: (keyspace, table) → a staging area on theirs, so
    /// that placing them is a rename too (see [`super::targets`]).
    pub areas: BTreeMap<(String, String), PathBuf>,
}

impl Staging {
    /// A staging tree at `root`, every table staged in it.
    pub fn new(root: PathBuf) -> Staging {
        Staging { root, areas: BTreeMap::new() }
    }

    /// The staging directory of table `ks`/`table`: its area, else the root.
    pub fn area(&self, ks: &str, table: &str) -> &Path {
        self.areas.get(&(ks.to_string(), table.to_string())).unwrap_or(&self.root)
    }

    /// Downloaded tables: `<area>/data/<ks>/<table>`.
    pub fn table(&self, ks: &str, table: &str) -> PathBuf {
        self.area(ks, table).join("data").join(ks).join(table)
    }

    /// Old tables moved aside: `<area>/old/<ks>/<table>`.
    pub fn old(&self, ks: &str, table: &str) -> PathBuf {
        self.area(ks, table).join("old").join(ks).join(table)
    }

    /// The phase journal.
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal.json")
    }
}

/// Gives a staged tree Cassandra's ownership (that of the data directory) and modes. Entries
/// below the root are changed relative to their open parent directory (`fchmodat`,
/// `fchownat`): one name looked up per call instead of the whole path (in the profile of a
/// restore of 31,624 small files the two path-based calls per file took 9 % of its CPU).
fn own_like_cassandra(tree: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
    let me = nix::unistd::geteuid().as_raw();
    let mut parent: Option<(PathBuf, std::fs::File)> = None;
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.map_err(std::io::Error::other)?;
        let mode = if entry.file_type().is_dir() { 0o755 } else { 0o644 };
        let path = entry.path();
        let (Some(dir), Some(name), false) = (path.parent(), path.file_name(), entry.depth() == 0) else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(at("setting the mode of", path))?;
            if me == 0 {
                nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| at("setting the owner of", path)(e.into()))?;
            }
            continue;
        };
        let (_, fd) = match parent.take() {
            Some((p, f)) if p == dir => parent.insert((p, f)),
            _ => parent.insert((dir.to_path_buf(), std::fs::File::open(dir).map_err(at("opening", dir))?)),
        };
        let fd = &*fd;
        fchmodat(fd, name, Mode::from_bits_truncate(mode), FchmodatFlags::FollowSymlink)
            .map_err(|e| at("setting the mode of", path)(e.into()))?;
        if me == 0 {
            nix::unistd::fchownat(fd, name, Some(uid.into()), Some(gid.into()), nix::fcntl::AtFlags::empty())
                .map_err(|e| at("setting the owner of", path)(e.into()))?;
        }
    }
    Ok(())
}

/// Checks, before anything moves, that every rename left to do stays on one filesystem, so
/// that a layout changed since the download (a volume mounted or a link changed) fails the
/// placement with the paths instead of leaving a half-placed node.
fn check_renames(plan: &RestorePlan, staging: &Staging, targets: &Targets, data_dir: &Path) -> std::io::Result<()> {
    let mut crossing = Vec::new();
    for t in &plan.tables {
        let dest = targets.dir(data_dir, &t.keyspace, &t.table);
        let from = match &t.action {
            Action::Keep => continue,
            Action::Replace(_) => staging.table(&t.keyspace, &t.table),
            Action::Remove if dest.exists() => staging.area(&t.keyspace, &t.table).to_path_buf(),
            Action::Remove => continue,
        };
        if !from.exists() {
            continue;
        }
        let into = dest.parent().unwrap_or(data_dir);
        if device_of(&from)? != device_of(into)? {
            crossing.push(format!("{} and {}", from.display(), dest.display()));
        }
    }
    if crossing.is_empty() {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::CrossesDevices,
        format!(
            "staged tables and their places are on different filesystems now ({}); nothing was placed: \
             run the restore again to stage them anew",
            crossing.join("; ")
        ),
    ))
}

fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)
        .map_err(|e| std::io::Error::new(e.kind(), format!("renaming {} to {}: {e}", from.display(), to.display())))
}

fn create_parent(p: &Path) -> std::io::Result<()> {
    let parent = p.parent().expect("has parent");
    std::fs::create_dir_all(parent).map_err(at("creating", parent))
}

/// Applies the plan, each table into its target (through links, see [`super::targets`]).
/// Idempotent: every step checks what an earlier, interrupted run already did. Every error
/// names its path.
pub fn place(plan: &RestorePlan, staging: &Staging, targets: &Targets, data_dir: &Path) -> std::io::Result<()> {
    let owner = std::fs::metadata(data_dir).map_err(at("reading", data_dir))?;
    check_renames(plan, staging, targets, data_dir)?;
    for t in &plan.tables {
        let dest = targets.dir(data_dir, &t.keyspace, &t.table);
        // A table directory that a link puts elsewhere: the link stays, its target is replaced.
        let linked = dest != data_dir.join(&t.keyspace).join(&t.table);
        let staged = staging.table(&t.keyspace, &t.table);
        let old = staging.old(&t.keyspace, &t.table);
        match &t.action {
            Action::Keep => continue,
            Action::Remove => {
                if dest.exists() && !old.exists() {
                    create_parent(&old)?;
                    rename(&dest, &old)?;
                } else if dest.exists() {
                    std::fs::remove_dir_all(&dest).map_err(at("removing", &dest))?;
                }
                if linked {
                    std::fs::create_dir_all(&dest).map_err(at("creating", &dest))?;
                    own_like_cassandra(&dest, owner.uid(), owner.gid())?;
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
                        std::fs::remove_dir_all(&dest).map_err(at("removing", &dest))?;
                    } else {
                        create_parent(&old)?;
                        rename(&dest, &old)?;
                    }
                }
                // The keyspace directory (or, for DSE's metadata, the Cassandra root).
                let ks_dir = dest.parent().unwrap_or(data_dir);
                if !ks_dir.exists() {
                    std::fs::create_dir_all(ks_dir).map_err(at("creating", ks_dir))?;
                    own_like_cassandra(ks_dir, owner.uid(), owner.gid())?;
                }
                rename(&staged, &dest)?;
            }
        }
        let parent = dest.parent().unwrap_or(data_dir);
        sync_dir(parent)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(at("flushing", parent))?;
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

/// Medusa's `cassandra.yaml` edit for a restore onto other nodes (contract §6.5 step 9): every
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
