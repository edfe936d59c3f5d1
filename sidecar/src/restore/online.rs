//! Placing a backup's SSTables into the directory of a table the running node serves, for the
//! `RestoreTables` extension (the node then loads them with `nodetool refresh`, which gives each
//! one a generation of its own).
//!
//! Each staged SSTable gets a generation no file of the live directory has, far above them
//! ([`GENERATION_GAP`]) so that the node's own flushes cannot reach it before the refresh; all
//! its components are renamed together under that generation, `Data.db` last. An SSTable without
//! `Data.db` is not an SSTable to Cassandra: it never loads one, and at start-up it deletes such
//! orphaned components. So a run killed between two renames leaves no half-placed SSTable the
//! node could load, and the next run finishes from the plan it recorded ([`Placement`]): a
//! staged file still there is renamed, a placed one is left, and one gone from both places was
//! loaded (Cassandra moved it to its own name).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How far above the live directory's highest generation the placed SSTables start.
pub const GENERATION_GAP: u64 = 1_000_000;

/// An SSTable component name of Cassandra 3.0 and later, `<version>-<generation>-<format>-<component>`
/// (`nb-42-big-Data.db`, `oa-3gh1_0xkq_4t5lc2p8s2d9x6u3be-big-Data.db`,
/// `oa-7-big-SAI+aa+GroupMeta.db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentName {
    /// `nb`, `oa`, `da`, …
    pub version: String,
    /// Integer or time-UUID generation.
    pub generation: String,
    /// `big` or `bti`.
    pub format: String,
    /// `Data.db`, `TOC.txt`, …
    pub component: String,
}

impl ComponentName {
    /// Parses a file name; `None` for anything else (`manifest.json`, 2.x names, txn logs).
    pub fn parse(name: &str) -> Option<ComponentName> {
        let mut it = name.splitn(4, '-');
        let (version, generation, format, component) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let ok = version.len() == 2
            && version.chars().all(|c| c.is_ascii_lowercase())
            && !generation.is_empty()
            && generation.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && matches!(format, "big" | "bti")
            && !component.is_empty()
            && !component.contains('/');
        ok.then(|| ComponentName {
            version: version.into(),
            generation: generation.into(),
            format: format.into(),
            component: component.into(),
        })
    }

    fn with_generation(&self, generation: u64) -> String {
        format!("{}-{generation}-{}-{}", self.version, self.format, self.component)
    }
}

/// One rename: a staged file to its name in the live table directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// Staged file.
    pub from: PathBuf,
    /// Its place in the live directory.
    pub to: PathBuf,
}

/// The renames of one table, recorded before the first one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Keyspace.
    pub keyspace: String,
    /// Table name (without the id).
    pub table: String,
    /// The live table directory.
    pub dir: PathBuf,
    /// In order: per SSTable, every component but `Data.db`, then `Data.db`.
    pub moves: Vec<Move>,
}

/// The highest integer generation among the live directory's SSTables (0 when none).
fn highest_generation(live: &Path) -> std::io::Result<u64> {
    let mut max = 0;
    for e in std::fs::read_dir(live)? {
        let name = e?.file_name();
        if let Some(c) = ComponentName::parse(&name.to_string_lossy())
            && let Ok(g) = c.generation.parse::<u64>()
        {
            max = max.max(g);
        }
    }
    Ok(max)
}

/// Plans the renames of the SSTables staged in `staged` (file names `files`) into `live`.
/// Files that are not SSTable components are left out; an SSTable without `Data.db` is an
/// error (the backup lacks it).
pub fn plan(keyspace: &str, table: &str, staged: &Path, live: &Path, files: &[String]) -> Result<Placement, String> {
    let mut sstables: BTreeMap<(String, String, String), Vec<ComponentName>> = BTreeMap::new();
    for f in files {
        if let Some(c) = ComponentName::parse(f) {
            sstables.entry((c.version.clone(), c.generation.clone(), c.format.clone())).or_default().push(c);
        }
    }
    let base = highest_generation(live).map_err(|e| format!("reading {}: {e}", live.display()))? + GENERATION_GAP;
    let mut moves = Vec::new();
    for (i, ((v, g, f), mut comps)) in sstables.into_iter().enumerate() {
        if !comps.iter().any(|c| c.component == "Data.db") {
            return Err(format!("the backup has no Data.db for SSTable {v}-{g}-{f} of {keyspace}.{table}"));
        }
        // Data.db last: until it is there, the SSTable does not exist for Cassandra.
        comps.sort_by_key(|c| (c.component == "Data.db", c.component.clone()));
        let generation = base + i as u64;
        for c in comps {
            let from = staged.join(format!("{}-{}-{}-{}", c.version, c.generation, c.format, c.component));
            moves.push(Move { from, to: live.join(c.with_generation(generation)) });
        }
    }
    Ok(Placement { keyspace: keyspace.into(), table: table.into(), dir: live.to_path_buf(), moves })
}

/// Where a placement stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placed {
    /// Renames done by this call.
    pub renamed: u64,
    /// SSTables whose `Data.db` is in the live directory (to be loaded by a refresh).
    pub waiting: u64,
    /// SSTables gone from staging and from the live directory: the node loaded them.
    pub loaded: u64,
}

/// Carries out (or finishes) `p`: idempotent, every step checked against what is on disk. A
/// placed file never overwrites one of the node's (that would be a generation the node took
/// meanwhile): the run stops with the names instead.
pub fn apply(p: &Placement) -> std::io::Result<Placed> {
    let owner = std::fs::metadata(&p.dir)?;
    let root = nix::unistd::geteuid().is_root();
    let mut out = Placed::default();
    for m in &p.moves {
        let is_data = m.to.to_string_lossy().ends_with("-Data.db");
        if m.from.exists() {
            if m.to.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists already (the node wrote that generation meanwhile); nothing of it was \
                         replaced: run the restore again to pick other generations",
                        m.to.display()
                    ),
                ));
            }
            std::fs::set_permissions(&m.from, std::fs::Permissions::from_mode(0o644))?;
            if root {
                nix::unistd::chown(&m.from, Some(owner.uid().into()), Some(owner.gid().into()))?;
            }
            std::fs::rename(&m.from, &m.to).map_err(|e| {
                std::io::Error::new(e.kind(), format!("renaming {} to {}: {e}", m.from.display(), m.to.display()))
            })?;
            out.renamed += 1;
            if is_data {
                out.waiting += 1;
            }
        } else if is_data {
            if m.to.exists() {
                out.waiting += 1;
            } else {
                out.loaded += 1;
            }
        }
    }
    crate::fsutil::sync_dir(&p.dir)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed when dropped.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new() -> Tmp {
            let p = std::env::temp_dir().join(format!("medusa-rs-online-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), name).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn component_names_parse_and_others_do_not() {
        let c = ComponentName::parse("oa-3gh1_0xkq_4t5lc2p8s2d9x6u3be-big-Data.db").unwrap();
        assert_eq!((c.version.as_str(), c.format.as_str(), c.component.as_str()), ("oa", "big", "Data.db"));
        assert_eq!(ComponentName::parse("oa-7-big-SAI+aa+idx+Meta.db").unwrap().component, "SAI+aa+idx+Meta.db");
        for other in ["manifest.json", "schema.cql", "ks-t-ka-1-Data.db", "la-1-big", "nb_txn_flush_1.log"] {
            assert_eq!(ComponentName::parse(other), None, "{other}");
        }
    }

    /// Killed after any number of renames, the live directory never holds a `Data.db` whose
    /// other components are missing, and the next run finishes the placement.
    #[test]
    fn every_interruption_leaves_no_half_sstable_and_a_rerun_finishes() {
        let comps = ["Data.db", "Index.db", "Statistics.db", "TOC.txt", "Filter.db"];
        let files: Vec<String> =
            ["nb-1-big", "nb-2-big"].iter().flat_map(|s| comps.iter().map(move |c| format!("{s}-{c}"))).collect();
        let total = files.len();
        for cut in 0..=total {
            let tmp = Tmp::new();
            let (staged, live) = (tmp.path().join("staged"), tmp.path().join("live"));
            std::fs::create_dir_all(&staged).unwrap();
            std::fs::create_dir_all(&live).unwrap();
            files.iter().for_each(|f| touch(&staged, f));
            touch(&live, "nb-5-big-Data.db");
            let p = plan("ks", "t", &staged, &live, &files).unwrap();
            assert_eq!(p.moves.len(), total);
            // The crash: only the first `cut` renames happened.
            for m in &p.moves[..cut] {
                std::fs::rename(&m.from, &m.to).unwrap();
            }
            for name in names(&live).iter().filter(|n| n.ends_with("-Data.db") && *n != "nb-5-big-Data.db") {
                let prefix = name.trim_end_matches("Data.db");
                for c in comps {
                    assert!(live.join(format!("{prefix}{c}")).exists(), "cut {cut}: {name} without {c}");
                }
            }
            let done = apply(&p).unwrap();
            assert_eq!(done.renamed as usize, total - cut);
            assert_eq!(done.waiting, 2);
            assert!(names(&staged).is_empty());
            let generations: Vec<String> =
                names(&live).iter().map(|n| n.split('-').nth(1).unwrap().to_string()).collect();
            assert!(generations.iter().all(|g| g == "5" || g == "1000005" || g == "1000006"), "{generations:?}");
            // The node loads them (moves them to names of its own): a rerun sees them loaded.
            for m in &p.moves {
                std::fs::rename(&m.to, tmp.path().join(m.to.file_name().unwrap())).unwrap();
            }
            assert_eq!(apply(&p).unwrap(), Placed { renamed: 0, waiting: 0, loaded: 2 });
        }
    }

    #[test]
    fn a_placed_file_never_replaces_one_of_the_node() {
        let tmp = Tmp::new();
        let (staged, live) = (tmp.path().join("s"), tmp.path().join("l"));
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        touch(&staged, "nb-1-big-Data.db");
        let p = plan("ks", "t", &staged, &live, &["nb-1-big-Data.db".into()]).unwrap();
        std::fs::write(&p.moves[0].to, "the node's").unwrap();
        let e = apply(&p).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read_to_string(&p.moves[0].to).unwrap(), "the node's");
        assert!(plan("ks", "t", &staged, &live, &["nb-1-big-TOC.txt".into()]).is_err(), "an SSTable without Data.db");
    }
}
