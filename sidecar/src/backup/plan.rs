//! Deciding, file by file, what a backup must upload and what it can reuse (contract §3.5), as pure
//! functions over what is on disk and what is already stored.
//!
//! Medusa reuses a stored file when its name and size match (contract §10.15), which silently keeps a
//! stale object after a node wipe restarts generation numbers, and then overwrites objects that
//! older manifests reference. Here a stored object is reused only when its content digest is
//! known to equal the local file's, and different content never overwrites: it goes to a
//! versioned key instead.

use std::collections::HashMap;

use crate::format::digest::{ContentDigest, matches};
use crate::format::layout::{Layout, Mode, TableFile};
use crate::format::names::{BackupName, Fqdn};

/// What the bucket holds below the node's shared data folder: key -> (size, hash if known).
/// Keys are held as 128-bit hashes: a node's data folder can hold many thousands of objects.
#[derive(Debug, Default)]
pub struct StoredObjects {
    objects: HashMap<[u8; 16], (u64, Option<Box<str>>)>,
    /// Objects whose hash is not known yet.
    unknown: usize,
}

fn key_id(key: &str) -> [u8; 16] {
    let h = blake3::hash(key.as_bytes());
    h.as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

impl StoredObjects {
    /// Records a listed object; `hash` is what the listing says, if it is a content hash.
    pub fn insert(&mut self, key: &str, size: u64, hash: Option<String>) {
        self.unknown += usize::from(hash.is_none());
        if let Some((_, old)) = self.objects.insert(key_id(key), (size, hash.map(String::into_boxed_str))) {
            self.unknown -= usize::from(old.is_none());
        }
    }

    /// Adds a hash learnt elsewhere (a manifest) for a listed object of the same size.
    pub fn learn_hash(&mut self, key: &str, size: u64, hash: &str) {
        if let Some((s, h)) = self.objects.get_mut(&key_id(key))
            && *s == size
            && h.is_none()
        {
            *h = Some(hash.into());
            self.unknown -= 1;
        }
    }

    /// How many objects have no known hash.
    pub fn unknown(&self) -> usize {
        self.unknown
    }

    /// Size and hash of `key`.
    pub fn get(&self, key: &str) -> Option<(u64, Option<&str>)> {
        self.objects.get(&key_id(key)).map(|(s, h)| (*s, h.as_deref()))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// What to do with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The stored object `key` has this content: reference it; `hash` is the stored hash if
    /// known (else record the local digest).
    Reuse {
        /// Key of the stored object.
        key: String,
        /// Its recorded hash, if the store or a manifest told it.
        hash: Option<String>,
    },
    /// Upload to `key`.
    Upload {
        /// Destination key.
        key: String,
        /// Whether `key` is a versioned key, whose name vouches for the content (the MD5):
        /// such an object must never be visible partial.
        versioned: bool,
    },
    /// The decision needs the file's digest first (a stored object of the same name and size
    /// exists, but the local digest is not cached).
    NeedDigest,
}

/// Where a file lives in the bucket.
pub struct FileRef<'a> {
    /// Keyspace.
    pub keyspace: &'a str,
    /// Table directory.
    pub table: &'a str,
    /// Place below the table.
    pub file: &'a TableFile,
    /// Bytes.
    pub size: u64,
}

/// Decides for one file of a node backup.
pub fn decide(
    layout: &Layout,
    mode: Mode,
    node: &Fqdn,
    backup: &BackupName,
    f: &FileRef<'_>,
    local: Option<&ContentDigest>,
    objects: &StoredObjects,
) -> Decision {
    let base = layout.data_key(mode, node, backup, f.keyspace, f.table, f.file);
    if mode == Mode::Full {
        return Decision::Upload { key: base, versioned: false };
    }
    let stored = objects.get(&base);
    let Some(d) = local else {
        return match stored {
            None => Decision::Upload { key: base, versioned: false },
            // Anything stored under the name: the digest decides between reuse and a
            // versioned key (whose name needs the digest).
            Some(_) => Decision::NeedDigest,
        };
    };
    if let Some((size, Some(hash))) = stored
        && size == f.size
        && matches(hash, d)
    {
        return Decision::Reuse { key: base, hash: Some(hash.to_string()) };
    }
    let versioned = layout.versioned_data_key(node, f.keyspace, f.table, f.file, &d.md5_hex());
    if let Some((size, hash)) = objects.get(&versioned) {
        // The key names the content's MD5; a hash from the listing must agree with it too.
        if size == f.size && hash.is_none_or(|h| matches(h, d)) {
            return Decision::Reuse { key: versioned, hash: hash.map(str::to_string) };
        }
    }
    match stored {
        None => Decision::Upload { key: base, versioned: false },
        Some(_) => Decision::Upload { key: versioned, versioned: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::Hasher;

    fn digest(data: &[u8]) -> ContentDigest {
        let mut h = Hasher::new(None);
        h.update(data);
        h.finish()
    }

    struct Fx {
        layout: Layout,
        node: Fqdn,
        backup: BackupName,
        file: TableFile,
    }

    impl Fx {
        fn new() -> Fx {
            Fx {
                layout: Layout::new(Some("p")),
                node: Fqdn::new("n").unwrap(),
                backup: BackupName::new("b2").unwrap(),
                file: TableFile { index_dir: None, name: "nb-1-big-TOC.txt".into() },
            }
        }
        fn decide(&self, mode: Mode, size: u64, local: Option<&ContentDigest>, c: &StoredObjects) -> Decision {
            let f = FileRef { keyspace: "ks", table: "t-1", file: &self.file, size };
            decide(&self.layout, mode, &self.node, &self.backup, &f, local, c)
        }
    }

    const BASE: &str = "p/n/data/ks/t-1/nb-1-big-TOC.txt";

    #[test]
    fn full_always_uploads_under_the_backup() {
        let fx = Fx::new();
        let d = fx.decide(Mode::Full, 3, None, &StoredObjects::default());
        assert_eq!(d, Decision::Upload { key: "p/n/b2/data/ks/t-1/nb-1-big-TOC.txt".into(), versioned: false });
    }

    #[test]
    fn differential_reuses_only_proven_equal_content() {
        let fx = Fx::new();
        let same = digest(b"abc");
        let mut c = StoredObjects::default();
        c.insert(BASE, 3, Some(same.md5_hex()));
        assert_eq!(
            fx.decide(Mode::Differential, 3, Some(&same), &c),
            Decision::Reuse { key: BASE.into(), hash: Some(same.md5_hex()) }
        );
        // Same name and size, different bytes: a new, versioned key; the old object stays.
        let other = digest(b"abd");
        let v = format!("p/n/data/ks/t-1-v{}/nb-1-big-TOC.txt", other.md5_hex());
        assert_eq!(
            fx.decide(Mode::Differential, 3, Some(&other), &c),
            Decision::Upload { key: v.clone(), versioned: true }
        );
        // ...which the next backup reuses.
        c.insert(&v, 3, None);
        assert_eq!(fx.decide(Mode::Differential, 3, Some(&other), &c), Decision::Reuse { key: v, hash: None });
    }

    #[test]
    fn unknown_digests_are_computed_before_deciding() {
        let fx = Fx::new();
        let mut c = StoredObjects::default();
        assert_eq!(fx.decide(Mode::Differential, 3, None, &c), Decision::Upload { key: BASE.into(), versioned: false });
        c.insert(BASE, 3, None);
        assert_eq!(fx.decide(Mode::Differential, 3, None, &c), Decision::NeedDigest);
        // A stored object whose hash is unknown is never assumed equal.
        let d = digest(b"abc");
        assert!(
            matches!(fx.decide(Mode::Differential, 3, Some(&d), &c), Decision::Upload { key, versioned: true } if key.contains("-v"))
        );
        c.learn_hash(BASE, 3, &d.md5_base64());
        assert!(matches!(fx.decide(Mode::Differential, 3, Some(&d), &c), Decision::Reuse { .. }));
    }
}
