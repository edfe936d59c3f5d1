//! Deleting a node backup without touching anything else (§5.2 with §10.9 fixed): keys are
//! matched by exact folder (`P/N/B/`, with the slash) and by parsed index entries, so `b1`
//! never takes `b10` with it. Shared differential data is never deleted here: objects that no
//! remaining backup references are removed by the purge's orphan cleanup, after the grace period.

use futures::TryStreamExt;

use crate::format::layout::parse_index_key;
use crate::format::names::{BackupName, Fqdn};
use crate::store::{Storage, StorageError};

/// What a deletion removed, counted as Medusa counts it (§5.4): the objects of the backup's
/// folder; index entries are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Objects removed.
    pub objects: u64,
    /// Bytes removed.
    pub bytes: u64,
}

/// Deletes node backup `(n, b)`: its folder (meta, and data of a full backup), its index
/// entries, and the latest-backup pointer when it points at `b`. The index entries go after the
/// folder, the tokenmap entry last: an interrupted deletion stays visible in the index (as a
/// leftover once `schema.cql` and `started_` are gone, see `catalog::NodeBackup::leftover`) and
/// the next purge or delete finishes it.
pub async fn delete_node_backup(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Deleted, StorageError> {
    let l = &s.layout;
    let mut out = Deleted::default();
    // Data and meta first, the manifest last of them, so that a half-deleted backup never
    // looks complete.
    let folder = l.node_backup_dir(n, b);
    let mut keys: Vec<(String, u64)> =
        s.list(&folder).map_ok(|m| (m.location.to_string(), m.size)).try_collect().await?;
    let manifest = l.meta(n, b, crate::format::layout::Meta::Manifest);
    keys.sort_by_key(|(k, _)| (*k == manifest, k.ends_with("/meta/schema.cql")));
    for (key, size) in keys {
        s.delete(&key).await?;
        out.objects += 1;
        out.bytes += size;
    }
    let index: Vec<(String, u64)> = s
        .list(&l.index_dir(b))
        .try_filter(|m| {
            let mine = parse_index_key(l, m.location.as_ref())
                .is_some_and(|(name, node, _)| name == b.as_str() && node == n.as_str());
            futures::future::ready(mine)
        })
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await?;
    // The tokenmap entry is what makes a node backup exist in the index: remove it last.
    let mut index = index;
    index.sort_by_key(|(k, _)| k.contains("/tokenmap_"));
    for (key, _) in index {
        s.delete(&key).await?;
    }
    if let Some(latest) = s.get_opt(&l.latest_backup_name(n)).await?
        && latest.as_ref() == b.as_str().as_bytes()
    {
        s.delete(&l.latest_backup_name(n)).await?;
        s.delete(&l.latest_tokenmap(n)).await?;
    }
    Ok(out)
}
