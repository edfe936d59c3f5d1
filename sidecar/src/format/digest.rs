//! Content digests, computed once while the bytes stream past, and the local cache that lets
//! an unchanged SSTable be recognised without reading it again.
//!
//! A stored object's hash comes in one of Medusa's forms (§2.5): hex MD5 (S3 single part,
//! `local`), `<hex>-<parts>` (S3 multipart ETag), or base64 MD5 (GCS, Azure). [`matches`]
//! compares a local digest with any of them.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use base64::Engine;
use md5::{Digest, Md5};

/// What is known about a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// MD5 of the whole content.
    pub md5: [u8; 16],
    /// Bytes.
    pub size: u64,
    /// S3 multipart ETag (`<hex>-<n>`) and the part size it was computed for, when the file is
    /// large enough to be uploaded in parts to an S3 store.
    pub multipart: Option<(u64, String)>,
}

impl ContentDigest {
    /// Lower-case hex MD5.
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }

    /// Base64 MD5 (GCS `md5Hash`, Azure `Content-MD5`).
    pub fn md5_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.md5)
    }
}

/// Incremental hasher: whole-content MD5, plus (when `part_size` is given) the per-part MD5s
/// of an S3 multipart upload with parts of that size. A file whose size is an exact multiple
/// of the part size has exactly `size / part_size` parts (Medusa's extra empty part, §10.16,
/// is not reproduced).
pub struct Hasher {
    whole: Md5,
    part: Md5,
    part_filled: u64,
    part_size: Option<u64>,
    parts: Md5,
    part_count: u64,
    size: u64,
}

impl Hasher {
    /// A hasher; `part_size` turns on the multipart ETag.
    pub fn new(part_size: Option<u64>) -> Hasher {
        Hasher {
            whole: Md5::new(),
            part: Md5::new(),
            part_filled: 0,
            part_size: part_size.map(|p| p.max(1)),
            parts: Md5::new(),
            part_count: 0,
            size: 0,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        let Some(part_size) = self.part_size else { return };
        while !data.is_empty() {
            let room = (part_size - self.part_filled) as usize;
            let take = room.min(data.len());
            self.part.update(&data[..take]);
            self.part_filled += take as u64;
            data = &data[take..];
            if self.part_filled == part_size {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        let digest = std::mem::replace(&mut self.part, Md5::new()).finalize();
        self.parts.update(digest);
        self.part_count += 1;
        self.part_filled = 0;
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> ContentDigest {
        let multipart = self.part_size.map(|part_size| {
            if self.part_filled > 0 || self.part_count == 0 {
                self.close_part();
            }
            let parts = std::mem::replace(&mut self.parts, Md5::new());
            (part_size, format!("{}-{}", hex::encode(parts.finalize()), self.part_count))
        });
        ContentDigest { md5: self.whole.finalize().into(), size: self.size, multipart }
    }
}

/// True when `recorded` (any of Medusa's hash forms) describes content with digest `d`.
/// Unknown forms (`no-md5-hash`, SSE ETags) never match.
pub fn matches(recorded: &str, d: &ContentDigest) -> bool {
    let r = recorded.trim().trim_matches('"');
    if r.contains('-') {
        return d.multipart.as_ref().is_some_and(|(_, etag)| r.eq_ignore_ascii_case(etag));
    }
    if r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        return r.eq_ignore_ascii_case(&d.md5_hex());
    }
    base64::engine::general_purpose::STANDARD.decode(r).map(|b| b.as_slice() == d.md5).unwrap_or(false)
}

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

/// Bytes read per step when hashing or copying a file.
pub const READ_STEP: usize = 1 << 20;

thread_local! {
    /// One read buffer per (blocking-pool) thread, reused across files: a fresh zeroed
    /// megabyte per file cost more than hashing a small file.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's [`READ_STEP`]-byte read buffer. Not reentrant: `f` must not call
/// it again.
pub fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with_borrow_mut(|buf| {
        if buf.len() < READ_STEP {
            buf.resize(READ_STEP, 0);
        }
        f(&mut buf[..READ_STEP])
    })
}

/// Reads the file at `path` through and returns its digest (`part`: as for [`Hasher::new`]).
pub fn hash_path(path: &Path, part: Option<u64>) -> std::io::Result<ContentDigest> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(part);
    with_read_buffer(|buf| {
        loop {
            let n = match f.read(buf) {
                Ok(0) => return Ok(h.finish()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
        }
    })
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

    fn digest(data: &[u8], part: u64) -> ContentDigest {
        let mut h = Hasher::new(Some(part));
        for chunk in data.chunks(7) {
            h.update(chunk);
        }
        h.finish()
    }

    #[test]
    fn md5_and_multipart_etag_follow_s3() {
        let d = digest(b"hello world", 5);
        assert_eq!(d.md5_hex(), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        // parts "hello", " worl", "d"
        let mut parts = Md5::new();
        for p in [&b"hello"[..], b" worl", b"d"] {
            parts.update(Md5::digest(p));
        }
        assert_eq!(d.multipart.as_ref().unwrap().1, format!("{}-3", hex::encode(parts.finalize())));
        // Exact multiple: two parts, no trailing empty part.
        assert!(digest(b"0123456789", 5).multipart.unwrap().1.ends_with("-2"));
        assert!(digest(b"", 5).multipart.unwrap().1.ends_with("-1"));
        let mut plain = Hasher::new(None);
        plain.update(b"hello world");
        let plain = plain.finish();
        assert_eq!(plain.md5, d.md5);
        assert!(plain.multipart.is_none());
        assert!(!matches(&d.multipart.clone().unwrap().1, &plain));
    }

    #[test]
    fn matches_every_recorded_form() {
        let d = digest(b"hello world", 5);
        assert!(matches("5eb63bbbe01eeed093cb22bb8f5acdc3", &d));
        assert!(matches("\"5EB63BBBE01EEED093CB22BB8F5ACDC3\"", &d));
        assert!(matches(&d.md5_base64(), &d));
        assert!(matches(&d.multipart.clone().unwrap().1, &d));
        assert!(!matches("no-md5-hash", &d));
        assert!(!matches("5eb63bbbe01eeed093cb22bb8f5acdc4", &d));
        assert!(!matches("abc", &d));
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
