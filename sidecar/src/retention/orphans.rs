//! Shared differential files (`P/N/data/`) that no finished manifest of the node references:
//! counted, or deleted once older than the grace period. Runs only while no backup runs on the
//! node (the caller holds its backup slot): a running differential backup may be about to
//! reference any of them. Memory: one manifest at a time, and a set of 16-byte key hashes of
//! the referenced objects.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;

use crate::bucket::index::node_backups;
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

/// Keys referenced by this node's finished differential backups (only those reference the
/// shared folder), read one manifest at a time.
async fn referenced(storage: &Storage, n: &Fqdn) -> Result<HashSet<[u8; 16]>, StorageError> {
    let mut set = HashSet::new();
    for nb in node_backups(storage, None).await?.into_iter().filter(|b| b.fqdn == n.as_str()) {
        let Ok(b) = BackupName::new(nb.name.clone()) else { continue };
        let Some(bytes) = node_backup::manifest(storage, n, &b).await? else { continue };
        match serde_json::from_slice::<Vec<SectionPaths>>(&bytes) {
            Ok(sections) => set.extend(sections.iter().flat_map(|s| &s.objects).map(|o| key_hash(&o.path))),
            Err(e) => {
                // An unreadable manifest makes every decision unsafe: stop the cleanup.
                return Err(StorageError::Config(format!(
                    "manifest of {} is unreadable ({e}); orphan cleanup stopped",
                    nb.name
                )));
            }
        }
    }
    Ok(set)
}

/// Deletes objects below `P/N/data/` that no finished manifest of node `n` references and that
/// are older than the grace period; returns (objects, bytes, within_grace).
pub async fn clean(storage: &Storage, n: &Fqdn, now: i64, grace_days: u32) -> Result<(u64, u64, u64), StorageError> {
    let refs = referenced(storage, n).await?;
    let cutoff = now - i64::from(grace_days) * 86_400;
    let prefix = storage.layout.shared_data_dir(n);
    let (mut objects, mut bytes, mut within) = (0u64, 0u64, 0u64);
    let mut batch: Vec<(ObjectPath, u64)> = Vec::with_capacity(1000);
    let mut listing = std::pin::pin!(storage.list(&prefix));
    while let Some(meta) = listing.try_next().await? {
        if refs.contains(&key_hash(meta.location.as_ref())) {
            continue;
        }
        if meta.last_modified.timestamp() > cutoff {
            within += 1;
            continue;
        }
        batch.push((meta.location, meta.size));
        if batch.len() == 1000 {
            let (o, b) = delete_batch(storage, std::mem::take(&mut batch)).await?;
            objects += o;
            bytes += b;
        }
    }
    let (o, b) = delete_batch(storage, batch).await?;
    Ok((objects + o, bytes + b, within))
}

/// Counts the unreferenced objects below `P/N/data/` without deleting anything.
pub async fn count(storage: &Storage, n: &Fqdn) -> Result<u64, StorageError> {
    let refs = referenced(storage, n).await?;
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
