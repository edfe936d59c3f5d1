//! The local cache of file digests that lets a differential backup recognise an unchanged
//! SSTable without reading it again.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::format::digest::ContentDigest;

/// Identity of a local file for the digest cache: SSTable components are immutable, so the
/// same inode with the same name, size and modification time holds the same bytes. (A
/// `Statistics.db` rewritten by repair gets a new inode; a wiped node gets new inodes.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    name: String,
}

impl FileId {
    /// A 128-bit hash of the identity: how the loaded cache keys its entries.
    fn key(&self) -> [u8; 16] {
        let mut h = blake3::Hasher::new();
        h.update(&self.dev.to_le_bytes()).update(&self.ino.to_le_bytes()).update(&self.size.to_le_bytes());
        h.update(&self.mtime_ns.to_le_bytes()).update(self.name.as_bytes());
        h.finalize().as_bytes()[..16].try_into().expect("16 of 32 bytes")
    }

    /// The identity of `path` from its metadata.
    pub fn of(path: &Path, meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }
}

/// Digests of local files from earlier runs, persisted under the state directory.
#[derive(Debug, Default)]
pub struct DigestCache {
    /// By [`FileId::key`]: the names need not be held, only recognised.
    entries: HashMap<[u8; 16], ContentDigest>,
}

impl DigestCache {
    /// Loads the cache at `path`; a missing, old or damaged file gives an empty cache (the
    /// only cost is reading files again).
    pub fn load(path: &Path) -> DigestCache {
        let entries = std::fs::read(path).ok().and_then(|bytes| parse_cache(&bytes)).unwrap_or_default();
        DigestCache { entries }
    }

    /// The cached digest of a file; when `part_size` is given the digest must carry the
    /// multipart ETag for exactly that part size.
    pub fn get(&self, id: &FileId, part_size: Option<u64>) -> Option<&ContentDigest> {
        self.entries.get(&id.key()).filter(|d| match part_size {
            None => true,
            Some(p) => d.multipart.as_ref().is_some_and(|(q, _)| *q == p),
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes `entries` (the files of the latest snapshot: older ones are dropped) atomically to
    /// the cache file at `path`.
    pub fn save_to<'a>(
        path: &Path,
        entries: impl IntoIterator<Item = (&'a FileId, &'a ContentDigest)>,
    ) -> std::io::Result<()> {
        let mut body = Vec::new();
        body.extend_from_slice(b"medusa-rs digest cache v1\n");
        for (id, d) in entries {
            let (part_size, etag) = match &d.multipart {
                Some((p, e)) => (*p, e.as_str()),
                None => (0, "-"),
            };
            writeln!(
                body,
                "{} {} {} {} {} {} {} {}",
                id.dev,
                id.ino,
                id.size,
                id.mtime_ns,
                d.md5_hex(),
                part_size,
                etag,
                id.name
            )?;
        }
        let sum = blake3::hash(&body);
        writeln!(body, "# {}", sum.to_hex())?;
        crate::fsutil::write_atomic(path, &body)
    }
}

fn parse_cache(bytes: &[u8]) -> Option<HashMap<[u8; 16], ContentDigest>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
    let (body, trailer) = text.split_at(body_end);
    let sum = trailer.trim().strip_prefix("# ")?;
    if blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != "medusa-rs digest cache v1" {
        return None;
    }
    let mut out = HashMap::new();
    for line in lines {
        let mut f = line.splitn(8, ' ');
        let id = FileId {
            dev: f.next()?.parse().ok()?,
            ino: f.next()?.parse().ok()?,
            size: f.next()?.parse().ok()?,
            mtime_ns: f.next()?.parse().ok()?,
            name: String::new(),
        };
        let md5: [u8; 16] = hex::decode(f.next()?).ok()?.try_into().ok()?;
        let part_size: u64 = f.next()?.parse().ok()?;
        let etag = f.next()?;
        let multipart = (part_size > 0).then(|| (part_size, etag.to_string()));
        let id = FileId { name: f.next()?.to_string(), ..id };
        let size = id.size;
        out.insert(id.key(), ContentDigest { md5, size, multipart });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::Hasher;

    fn digest(data: &[u8], part: u64) -> ContentDigest {
        let mut h = Hasher::new(Some(part));
        h.update(data);
        h.finish()
    }

    #[test]
    fn cache_round_trips_and_rejects_damage() {
        let dir = std::env::temp_dir().join(format!("medusa-dc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nb-1-big-Data.db");
        std::fs::write(&file, b"abc").unwrap();
        let id = FileId::of(&file, &std::fs::metadata(&file).unwrap());
        let cache_path = dir.join("cache");
        let d = digest(b"abc", 8 << 20);
        DigestCache::save_to(&cache_path, [(&id, &d)]).unwrap();
        let c = DigestCache::load(&cache_path);
        assert_eq!(c.get(&id, Some(8 << 20)), Some(&d));
        assert_eq!(c.get(&id, Some(5 << 20)), None);
        assert_eq!(c.get(&id, None), Some(&d));
        let mut bytes = std::fs::read(&cache_path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&cache_path, bytes).unwrap();
        assert!(DigestCache::load(&cache_path).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
