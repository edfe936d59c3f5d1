//! Shared differential files (`P/N/data/`) that no manifest below the node's folder references:
//! counted, or deleted once older than the grace period. Runs only while no backup runs on the
//! node (the caller holds its backup slot): a running differential backup may be about to
//! reference any of them. Memory: one manifest at a time, and a set of 16-byte key hashes of
//! the referenced objects.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;

use crate::format::names::{BackupName, Fqdn};
use crate::store::{Storage, StorageError};

fn key_hash(key: &str) -> [u8; 16] {
    let h = blake3::hash(key.as_bytes());
    h.as_bytes()[..16].try_into().expect("16 bytes")
}

#[derive(Deserialize)]
struct PathOnly {
    path: String,
}

#[derive(Deserialize)]
struct SectionPaths {
    objects: Vec<PathOnly>,
}

/// What the node's folder says about the objects its backups need: the keys its readable
/// manifests reference, and why that set may be incomplete.
#[derive(Debug, Default)]
pub struct References {
    keys: HashSet<[u8; 16]>,
    /// A folder whose manifest could not be read, or whose name medusa-rs does not accept: any
    /// shared file may be one it needs.
    pub unknown: Option<String>,
}

impl References {
    /// Whether a readable manifest names `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(&key_hash(key))
    }
}

/// Keys referenced by the manifests of every backup folder below `P/N/` but those `skip`
/// names, read one manifest at a time. The folders are listed, not taken from the index: a
/// backup whose index entries are missing (a writer that died between writes, folders copied
/// by hand, a name the index parser refuses) is still restorable from its folder, so its files
/// still count. A folder whose name medusa-rs refuses is read by its raw key all the same (its
/// references protect what it names), but makes the set [`References::unknown`].
pub async fn referenced(
    storage: &Storage,
    n: &Fqdn,
    skip: &(dyn Fn(&str) -> bool + Sync),
) -> Result<References, StorageError> {
    let mut out = References::default();
    let node_dir = storage.layout.node_dir(n);
    for folder in storage.folders(&node_dir).await? {
        if folder == "data" || skip(&folder) {
            continue;
        }
        let key = format!("{node_dir}{folder}/meta/manifest.json");
        if BackupName::new(folder.clone()).is_err() {
            out.unknown
                .get_or_insert_with(|| format!("the folder {node_dir}{folder}/ has a name medusa-rs does not accept"));
        }
        let bytes = match storage.get_opt(&key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(StorageError::Config(e)) => {
                out.unknown.get_or_insert_with(|| format!("the manifest {key} cannot be read ({e})"));
                continue;
            }
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<Vec<SectionPaths>>(&bytes) {
            Ok(sections) => out.keys.extend(sections.iter().flat_map(|s| &s.objects).map(|o| key_hash(&o.path))),
            Err(e) => {
                out.unknown.get_or_insert_with(|| format!("the manifest {key} is unreadable ({e})"));
            }
        }
    }
    Ok(out)
}

/// What a cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Objects deleted.
    pub objects: u64,
    /// Bytes deleted.
    pub bytes: u64,
    /// Unreferenced objects kept because they are younger than the grace period (all
    /// unreferenced candidates when the cleanup was deferred).
    pub within_grace: u64,
    /// Why nothing was deleted, when a manifest could not be read.
    pub deferred: Option<String>,
}

/// Deletes objects below `P/N/data/` that no manifest of node `n` references and that are
/// older than the grace period. When some manifest cannot be read, nothing is deleted: the
/// reason is returned (and logged) and the objects are only counted.
pub async fn clean(storage: &Storage, n: &Fqdn, now: i64, grace_days: u32) -> Result<Cleaned, StorageError> {
    let refs = referenced(storage, n, &|_| false).await?;
    if let Some(why) = refs.unknown {
        tracing::warn!(node = %n, reason = %why, "orphan cleanup deferred: no shared file is deleted until this is fixed");
        let within_grace = count_unreferenced(storage, n, &References::default()).await?;
        return Ok(Cleaned { within_grace, deferred: Some(why), ..Cleaned::default() });
    }
    let cutoff = now - i64::from(grace_days) * 86_400;
    let prefix = storage.layout.shared_data_dir(n);
    let mut out = Cleaned::default();
    let mut batch: Vec<(ObjectPath, u64)> = Vec::with_capacity(1000);
    let mut listing = std::pin::pin!(storage.list(&prefix));
    while let Some(meta) = listing.try_next().await? {
        if refs.contains(meta.location.as_ref()) {
            continue;
        }
        if meta.last_modified.timestamp() > cutoff {
            out.within_grace += 1;
            continue;
        }
        batch.push((meta.location, meta.size));
        if batch.len() == 1000 {
            let (o, b) = delete_batch(storage, std::mem::take(&mut batch)).await?;
            out.objects += o;
            out.bytes += b;
        }
    }
    let (o, b) = delete_batch(storage, batch).await?;
    out.objects += o;
    out.bytes += b;
    Ok(out)
}

/// Counts the unreferenced objects below `P/N/data/` without deleting anything (all of them
/// when some manifest cannot be read: none may be deleted then).
pub async fn count(storage: &Storage, n: &Fqdn) -> Result<u64, StorageError> {
    let mut refs = referenced(storage, n, &|_| false).await?;
    if refs.unknown.is_some() {
        refs = References::default();
    }
    count_unreferenced(storage, n, &refs).await
}

async fn count_unreferenced(storage: &Storage, n: &Fqdn, refs: &References) -> Result<u64, StorageError> {
    let listing = storage.list(&storage.layout.shared_data_dir(n));
    listing.try_fold(0u64, |c, m| futures::future::ready(Ok(c + u64::from(!refs.contains(m.location.as_ref()))))).await
}

async fn delete_batch(storage: &Storage, batch: Vec<(ObjectPath, u64)>) -> Result<(u64, u64), StorageError> {
    if batch.is_empty() {
        return Ok((0, 0));
    }
    let sizes: std::collections::HashMap<String, u64> = batch.iter().map(|(p, s)| (p.to_string(), *s)).collect();
    let paths = futures::stream::iter(batch.into_iter().map(|(p, _)| Ok(p))).boxed();
    let mut results = storage.store.delete_stream(paths);
    let (mut objects, mut bytes) = (0, 0);
    while let Some(r) = results.next().await {
        match r {
            Ok(p) => {
                objects += 1;
                bytes += sizes.get(p.as_ref()).copied().unwrap_or(0);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StorageError::from_store("delete", "orphaned data", e)),
        }
    }
    Ok((objects, bytes))
}
