//! [`DataDigest`]: what a restore must reproduce in a data directory, in the format of the
//! Medusa fixture digests (`digests/<backup>.json`): path -> size + SHA-256, with totals.
//!
//! Excluded, as in the fixture: `snapshots/` and `backups/` directly under a table directory,
//! the keyspace `system_traces`, and directories (an empty table directory contributes nothing).
//!
//! `tree_digest_sha1`: the fixture's value comes from a script that is not part of the fixture,
//! and none of the obvious formulas (SHA-1 over sorted `path size sha256` lines, over the JSON
//! of the entries, over file contents, ...) reproduces it. This module therefore defines its own
//! (SHA-1 over sorted `"<path> <size> <sha256>\n"` lines), and equality compares entries only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Size and SHA-256 of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// File size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// Files of a data directory, keyed by path relative to it (`ks/table-id/[.idx/]file`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataDigest {
    /// Relative path -> size and hash.
    pub entries: BTreeMap<String, FileDigest>,
    /// Number of entries.
    pub files: u64,
    /// Sum of entry sizes.
    pub bytes: u64,
    /// A quick equality value; see the module docs for why fixture values differ from ours.
    pub tree_digest_sha1: String,
}

/// Equality of the file sets (names, sizes, hashes); totals follow, `tree_digest_sha1` is
/// ignored so that fixture digests compare equal to computed ones.
impl PartialEq for DataDigest {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl DataDigest {
    /// Builds a digest (totals and tree digest) from entries.
    pub fn from_entries(entries: BTreeMap<String, FileDigest>) -> Self {
        let files = entries.len() as u64;
        let bytes = entries.values().map(|e| e.size).sum();
        let mut h = Sha1::new();
        for (path, e) in &entries {
            h.update(format!("{path} {} {}\n", e.size, e.sha256).as_bytes());
        }
        DataDigest { entries, files, bytes, tree_digest_sha1: hex::encode(h.finalize()) }
    }

    /// Human-readable differences (`-` only in self, `+` only in other, `~` changed), or an
    /// empty string when equal. Long lists are cut after 50 lines.
    pub fn diff(&self, other: &DataDigest) -> String {
        let mut lines = Vec::new();
        for (p, a) in &self.entries {
            match other.entries.get(p) {
                None => lines.push(format!("- {p} ({} bytes)", a.size)),
                Some(b) if a != b => lines.push(format!(
                    "~ {p} (size {} -> {}, sha256 {} -> {})",
                    a.size,
                    b.size,
                    &a.sha256[..a.sha256.len().min(12)],
                    &b.sha256[..b.sha256.len().min(12)]
                )),
                Some(_) => {}
            }
        }
        for (p, b) in &other.entries {
            if !self.entries.contains_key(p) {
                lines.push(format!("+ {p} ({} bytes)", b.size));
            }
        }
        if lines.is_empty() {
            return String::new();
        }
        let total = lines.len();
        let mut out = format!(
            "{total} differing paths (self: {} files/{} bytes, other: {} files/{} bytes):\n",
            self.files, self.bytes, other.files, other.bytes
        );
        for l in lines.iter().take(50) {
            let _ = writeln!(out, "  {l}");
        }
        if total > 50 {
            let _ = writeln!(out, "  ... and {} more", total - 50);
        }
        out
    }
}

/// Digests a data directory (see the module docs for what is excluded). Panics with the path on
/// I/O errors: a test helper; use [`try_digest_data_dir`] to handle them.
pub fn digest_data_dir(data_dir: &Path) -> DataDigest {
    try_digest_data_dir(data_dir).unwrap_or_else(|e| panic!("digest of {} failed: {e}", data_dir.display()))
}

/// Digests a data directory, hashing files on two threads.
pub fn try_digest_data_dir(data_dir: &Path) -> io::Result<DataDigest> {
    let files = included_files(data_dir)?;
    let threads = 2.min(files.len().max(1));
    let results: Vec<io::Result<Vec<(String, FileDigest)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let files = &files;
                s.spawn(move || {
                    files
                        .iter()
                        .skip(i)
                        .step_by(threads)
                        .map(|(rel, path)| Ok((rel.clone(), hash_file(path)?)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("hash thread panicked"))))
            .collect()
    });
    let mut entries = BTreeMap::new();
    for r in results {
        entries.extend(r?);
    }
    Ok(DataDigest::from_entries(entries))
}

/// (relative path with `/` separators, absolute path) of every included file.
fn included_files(data_dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    // Keyspace and table directories may be links to other volumes: read through them.
    let walker = walkdir::WalkDir::new(data_dir).min_depth(1).follow_links(true).into_iter().filter_entry(|e| {
        let name = e.file_name();
        let excluded = (e.depth() == 1 && name == "system_traces")
            || (e.depth() == 3 && (name == "snapshots" || name == "backups"));
        !(excluded && e.file_type().is_dir())
    });
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(data_dir)
            .map_err(io::Error::other)?
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push((rel, entry.into_path()));
    }
    Ok(out)
}

fn hash_file(path: &Path) -> io::Result<FileDigest> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigest { size, sha256: hex::encode(h.finalize()) })
}

/// Loads a digest JSON (a fixture's `digests/<backup>.json` or [`DataDigest`] serialised).
/// Extra fields are ignored; `files`/`bytes` are taken from the file as written. Panics on
/// errors: a test helper; use [`try_load_digest_json`] to handle them.
pub fn load_digest_json(path: &Path) -> DataDigest {
    try_load_digest_json(path).unwrap_or_else(|e| panic!("cannot load digest {}: {e}", path.display()))
}

/// Fallible [`load_digest_json`].
pub fn try_load_digest_json(path: &Path) -> io::Result<DataDigest> {
    let text = fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
