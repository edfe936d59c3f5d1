//! Content digests, computed once while the bytes stream past.
//!
//! A stored object's hash comes in one of Medusa's forms (contract §2.5): hex MD5 (S3 single part,
//! `local`), `<hex>-<parts>` (S3 multipart ETag), or base64 MD5 (GCS, Azure). [`matches`]
//! compares a local digest with any of them.

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
/// of the part size has exactly `size / part_size` parts (Medusa's extra empty part, contract §10.16,
/// is not reproduced).
pub struct Hasher {
    /// `None` for [`Hasher::parts_only`].
    whole: Option<Md5>,
    part: Md5,
    part_filled: u64,
    part_size: Option<u64>,
    /// MD5 of each part closed so far.
    parts: Vec<[u8; 16]>,
    size: u64,
}

impl Hasher {
    /// A hasher; `part_size` turns on the multipart ETag.
    pub fn new(part_size: Option<u64>) -> Hasher {
        Hasher {
            whole: Some(Md5::new()),
            part: Md5::new(),
            part_filled: 0,
            part_size: part_size.map(|p| p.max(1)),
            parts: Vec::new(),
            size: 0,
        }
    }

    /// A hasher of the multipart ETag alone (`md5` of its digest is then all zeros): what
    /// checking a download against a recorded multipart ETag needs, at half the hashing work.
    pub fn parts_only(part_size: u64) -> Hasher {
        Hasher { whole: None, ..Hasher::new(Some(part_size)) }
    }

    /// Feeds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        if let Some(w) = &mut self.whole {
            w.update(data);
        }
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
        self.parts.push(digest.into());
        self.part_filled = 0;
    }

    /// Closes the last part, the only one that may be short (an empty content has one empty
    /// part).
    fn close_last_part(&mut self) {
        if self.part_filled > 0 || self.parts.is_empty() {
            self.close_part();
        }
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> ContentDigest {
        let multipart = self.part_size.map(|part_size| {
            self.close_last_part();
            (part_size, multipart_etag(&self.parts))
        });
        let md5 = self.whole.map(|w| w.finalize().into()).unwrap_or_default();
        ContentDigest { md5, size: self.size, multipart }
    }

    /// The MD5 of each part fed (a hasher with a part size): the bytes of a ranged download
    /// that starts on a part boundary, whose parts join those of the other ranges in
    /// [`multipart_etag`].
    pub fn finish_parts(mut self) -> Vec<[u8; 16]> {
        if self.part_size.is_some() {
            self.close_last_part();
        }
        self.parts
    }
}

/// The S3 multipart ETag of the parts whose MD5s are `parts`, in order: the MD5 of their MD5s
/// and the part count.
pub fn multipart_etag(parts: &[[u8; 16]]) -> String {
    let mut all = Md5::new();
    for p in parts {
        all.update(p);
    }
    format!("{}-{}", hex::encode(all.finalize()), parts.len())
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
    // What this reads in from disk leaves the cache again (the node's pages stay).
    let mut f = crate::fsutil::GentleReads::at(std::fs::File::open(path)?, 0);
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
    fn ranges_on_part_boundaries_join_into_the_etag() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = digest(&data, 64).multipart.unwrap().1;
        // Ranges of 3 parts (192 bytes), the last one short, each hashed on its own.
        let parts: Vec<[u8; 16]> = data
            .chunks(192)
            .flat_map(|range| {
                let mut h = Hasher::parts_only(64);
                range.chunks(5).for_each(|c| h.update(c));
                h.finish_parts()
            })
            .collect();
        assert_eq!(parts.len(), 16);
        assert_eq!(multipart_etag(&parts), whole);
        // A range missing or out of order gives another ETag.
        assert_ne!(multipart_etag(&parts[..15]), whole);
        let mut swapped = parts.clone();
        swapped.swap(0, 3);
        assert_ne!(multipart_etag(&swapped), whole);
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
}
