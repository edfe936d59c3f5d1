//! Shared differential files (`P/N/data/`) that no manifest below the node's folder references:
//! counted, or deleted once older than the grace period. Runs only while no backup runs on the
//! node (the caller holds its backup slot): a running differential backup may be about to
//! reference any of them. Memory: one manifest at a time, and a set of 16-byte key hashes of
//! the referenced objects.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;

use crate::bucket::node_backup;
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

/// What the node's folder says about the shared files: the keys its manifests reference, or
/// why no decision about them is safe.
enum References {
    /// Every manifest below `P/N/` was read.
    Known(HashSet<[u8; 16]>),
    /// A folder whose manifest could not be read, or whose name medusa-rs does not accept: any
    /// shared file may be one it needs.
    Unknown(String),
}

/// Keys referenced by the manifests of every backup folder below `P/N/`, read one manifest at
/// a time. The folders are listed, not taken from the index: a backup whose index entries are
/// missing (a writer that died between writes, folders copied by hand, a name the index parser
/// refuses) is still restorable from its folder, so its files still count.
async fn referenced(storage: &Storage, n: &Fqdn) -> Result<References, StorageError> {
    let mut set = HashSet::new();
    let node_dir = storage.layout.node_dir(n);
    for folder in storage.folders(&node_dir).await? {
        if folder == "data" {
            continue;
        }
        let Ok(b) = BackupName::new(folder.clone()) else {
            return Ok(References::Unknown(format!(
                "the folder {node_dir}{folder}/ has a name medusa-rs does not accept, so its manifest was not read"
            )));
        };
        let Some(bytes) = node_backup::manifest(storage, n, &b).await? else { continue };
        match serde_json::from_slice::<Vec<SectionPaths>>(&bytes) {
            Ok(sections) => set.extend(sections.iter().flat_map(|s| &s.objects).map(|o| key_hash(&o.path))),
            Err(e) => {
                let key = storage.layout.meta(n, &b, crate::format::layout::Meta::Manifest);
                return Ok(References::Unknown(format!("the manifest {key} is unreadable ({e})")));
            }
        }
    }
    Ok(References::Known(set))
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
    let refs = match referenced(storage, n).await? {
        References::Known(refs) => refs,
        References::Unknown(why) => {
            tracing::warn!(node = %n, reason = %why, "orphan cleanup deferred: no shared file is deleted until this is fixed");
            let within_grace = count_unreferenced(storage, n, &HashSet::new()).await?;
            return Ok(Cleaned { within_grace, deferred: Some(why), ..Cleaned::default() });
        }
    };
    let cutoff = now - i64::from(grace_days) * 86_400;
    let prefix = storage.layout.shared_data_dir(n);
    let mut out = Cleaned::default();
    let mut batch: Vec<(ObjectPath, u64)> = Vec::with_capacity(1000);
    let mut listing = std::pin::pin!(storage.list(&prefix));
    while let Some(meta) = listing.try_next().await? {
        if refs.contains(&key_hash(meta.location.as_ref())) {
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
    let refs = match referenced(storage, n).await? {
        References::Known(refs) => refs,
        References::Unknown(_) => HashSet::new(),
    };
    count_unreferenced(storage, n, &refs).await
}

async fn count_unreferenced(storage: &Storage, n: &Fqdn, refs: &HashSet<[u8; 16]>) -> Result<u64, StorageError> {
    let listing = storage.list(&storage.layout.shared_data_dir(n));
    listing
        .try_fold(0u64, |c, m| {
            futures::future::ready(Ok(c + u64::from(!refs.contains(&key_hash(m.location.as_ref())))))
        })
        .await
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
