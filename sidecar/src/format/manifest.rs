//! `manifest.json` (contract §2.4): the list of every object a node backup needs, per table.

use serde::{Deserialize, Serialize};

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestObject {
    /// Full object key, prefix included.
    pub path: String,
    /// The store's content hash (hex MD5, S3 multipart ETag, or base64 MD5); `null` when
    /// unknown (Python Medusa writes `null` for re-used files in `local` storage).
    #[serde(rename = "MD5")]
    pub md5: Option<String>,
    /// Bytes.
    pub size: u64,
}

/// One table directory of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSection {
    /// Keyspace directory name.
    pub keyspace: String,
    /// Table directory name including the `-<id>` suffix.
    pub columnfamily: String,
    /// Files; 2i files are listed with their base table.
    pub objects: Vec<ManifestObject>,
}

/// A whole manifest.
pub type Manifest = Vec<ManifestSection>;

/// Parses a manifest.
pub fn parse(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Calls `f(path, hash, size)` for every object of a manifest, in order, without building the
/// manifest in memory (a node's manifest can list tens of thousands of objects): one section
/// at a time, its strings borrowed from `bytes` where they need no unescaping.
pub fn for_each_object(bytes: &[u8], f: impl FnMut(&str, Option<&str>, u64)) -> Result<(), serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    EachSection(f).deserialize(&mut de)?;
    de.end()
}

#[derive(Deserialize)]
struct ObjectRef<'a> {
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(rename = "MD5", borrow)]
    md5: Option<std::borrow::Cow<'a, str>>,
    size: u64,
}

#[derive(Deserialize)]
struct SectionRef<'a> {
    #[serde(borrow)]
    objects: Vec<ObjectRef<'a>>,
}

/// Visits the top-level list section by section.
struct EachSection<F>(F);

impl<'de, F: FnMut(&str, Option<&str>, u64)> serde::de::DeserializeSeed<'de> for EachSection<F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(&str, Option<&str>, u64)> serde::de::Visitor<'de> for EachSection<F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of manifest sections")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(section) = seq.next_element::<SectionRef<'de>>()? {
            for o in &section.objects {
                (self.0)(&o.path, o.md5.as_deref(), o.size);
            }
        }
        Ok(())
    }
}

/// (objects, bytes) of a manifest, from its `size` fields alone: the other fields are skipped
/// without being decoded (which halves the time a fresh sidecar's first GetBackups spends on
/// every manifest of the bucket). Checks only what counting needs: a list of sections whose
/// `objects` each have a `size`.
pub fn count_objects(bytes: &[u8]) -> Result<(u64, u64), serde_json::Error> {
    #[derive(Deserialize)]
    struct Sized {
        size: u64,
    }
    #[derive(Deserialize)]
    struct Section {
        objects: Vec<Sized>,
    }
    let sections: Vec<Section> = serde_json::from_slice(bytes)?;
    let objects = sections.iter().flat_map(|s| &s.objects);
    Ok(objects.fold((0, 0), |(n, b), o| (n + 1, b + o.size)))
}

/// Serialises a manifest exactly as Medusa does (one line, Python separators).
pub fn to_bytes(m: &[ManifestSection]) -> Vec<u8> {
    crate::format::pyjson::to_vec(m).expect("manifest serialisation cannot fail")
}

/// Totals of a manifest: (objects, bytes).
pub fn totals(m: &[ManifestSection]) -> (u64, u64) {
    m.iter().flat_map(|s| &s.objects).fold((0, 0), |(n, b), o| (n + 1, b + o.size))
}

/// Where a manifest object of `keyspace` is placed below its table directory: the file name,
/// inside its 2i sub-directory when the object's parent folder starts with `.`, or, in DSE's
/// metadata section, inside a `*nodes` folder (the rules both Medusa and medusa-rs restore by).
pub fn placement(keyspace: &str, object_key: &str) -> Option<crate::format::layout::TableFile> {
    let mut parts = object_key.rsplit('/');
    let name = parts.next().filter(|n| !n.is_empty() && *n != "." && *n != "..")?;
    let parent = parts.next().filter(|p| *p != "." && *p != "..");
    let dse = keyspace == crate::format::dse::SECTION;
    Some(crate::format::layout::TableFile {
        index_dir: parent
            .filter(|p| p.starts_with('.') || (dse && crate::format::dse::keeps_parent(p)))
            .map(str::to_string),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_medusa_format() {
        let text = r#"[{"keyspace": "shop", "columnfamily": "orders-0a1b", "objects": [{"path": "demo/n/data/shop/orders-0a1b/nb-7-big-Data.db", "MD5": "9c2e", "size": 10}, {"path": "demo/n/data/shop/orders-0a1b/.idx/nb-3-big-Data.db", "MD5": null, "size": 0}]}, {"keyspace": "system_auth", "columnfamily": "roles-5bc5", "objects": []}]"#;
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].objects[1].md5, None);
        assert_eq!(String::from_utf8(to_bytes(&m)).unwrap(), text);
        assert_eq!(totals(&m), (2, 10));
    }

    #[test]
    fn streaming_visits_what_parsing_finds() {
        let text = r#"[{"keyspace": "shop", "columnfamily": "orders-0a1b", "objects": [{"path": "demo/n/data/shop/orders-0a1b/nb-7-big-Data.db", "MD5": "9c2e", "size": 10}, {"path": "d/\u00e9/x", "MD5": null, "size": 0}], "extra": {"a": [1]}}, {"objects": [], "keyspace": "system_auth", "columnfamily": "roles-5bc5"}]"#;
        let mut seen = Vec::new();
        for_each_object(text.as_bytes(), |p, h, s| seen.push((p.to_string(), h.map(str::to_string), s))).unwrap();
        let parsed: Vec<_> = parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .flat_map(|s| s.objects)
            .map(|o| (o.path, o.md5, o.size))
            .collect();
        assert_eq!(seen, parsed);
        assert_eq!(seen[1].0, "d/\u{e9}/x");
        for bad in ["", "{}", "[1]", "[{\"objects\": [{\"path\": 1}]}]", "[] x"] {
            assert!(for_each_object(bad.as_bytes(), |_, _, _| ()).is_err(), "{bad}");
        }
        let totals = (seen.len() as u64, seen.iter().map(|s| s.2).sum());
        assert_eq!(count_objects(text.as_bytes()).unwrap(), totals);
        for bad in
            ["", "{}", "[1]", "[{\"objects\": [{\"path\": \"a\"}]}]", "[{\"objects\": [{\"size\": -1}]}]", "[] x"]
        {
            assert!(count_objects(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn placement_follows_the_2i_rule() {
        let p = placement("ks", "demo/n/data/ks/t-1/.t_idx/nb-1-big-Data.db").unwrap();
        assert_eq!(p.rel(), ".t_idx/nb-1-big-Data.db");
        let p = placement("ks", "demo/n/data/ks/t-1-vabc/nb-1-big-Data.db").unwrap();
        assert_eq!(p.rel(), "nb-1-big-Data.db");
        assert!(placement("ks", "demo/n/data/ks/t-1/..").is_none());
        assert!(placement("ks", "demo/").is_none());
        // DSE's metadata: `nodes/` kept (only there), other folders flattened, as Medusa does.
        assert_eq!(placement("dse", "demo/n/data/dse/metadata/nodes/local").unwrap().rel(), "nodes/local");
        assert_eq!(placement("dse", "demo/n/data/dse/metadata/version").unwrap().rel(), "version");
        assert_eq!(placement("ks", "demo/n/data/ks/nodes/nb-1-big-Data.db").unwrap().rel(), "nb-1-big-Data.db");
    }
}
