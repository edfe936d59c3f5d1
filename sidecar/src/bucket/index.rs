//! The backup index (`P/index/backup_index/`, contract §4.1), listed once and parsed exactly (no
//! substring matching, contract §10.10) into node backups. A node backup exists in the index iff its
//! tokenmap entry does.

use std::collections::BTreeMap;

use crate::bucket::node_backup;
use crate::format::layout::{IndexEntry, parse_index_key};
use crate::format::names::{BackupName, Fqdn};
use crate::store::{Storage, StorageError};

/// One node's part of a backup, as the index tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBackup {
    /// Backup name.
    pub name: String,
    /// Node name.
    pub fqdn: String,
    /// Start, epoch seconds.
    pub started: Option<i64>,
    /// Finish, epoch seconds; `None` while incomplete.
    pub finished: Option<i64>,
    /// Differential marker present.
    pub differential: bool,
    /// Only index entries remain and no start can be found: what an interrupted deletion left.
    /// Hidden from summaries; purges and deletes finish removing it.
    pub leftover: bool,
    /// Why the part cannot be restored although the index says it finished (its manifest is
    /// missing or unreadable): set by the summaries, which then count it as not finished.
    pub damaged: Option<String>,
}

impl NodeBackup {
    /// The validated backup and node names, `None` for names no valid backup can have (a
    /// foreign object in the index): callers skip those.
    pub fn names(&self) -> Option<(BackupName, Fqdn)> {
        Some((BackupName::new(self.name.clone()).ok()?, Fqdn::new(self.fqdn.clone()).ok()?))
    }
}

/// Lists node backups from the index: all of them, or those of one backup name.
pub async fn node_backups(storage: &Storage, name: Option<&BackupName>) -> Result<Vec<NodeBackup>, StorageError> {
    let l = &storage.layout;
    let prefix = match name {
        Some(n) => l.index_dir(n),
        None => l.index_root(),
    };
    #[derive(Default)]
    struct Acc {
        tokenmap: bool,
        started: Option<i64>,
        finished: Option<i64>,
        differential: bool,
    }
    let layout = l.clone();
    let acc = storage
        .fold_keys(&prefix, BTreeMap::new(), move |acc: &mut BTreeMap<(String, String), Acc>, key| {
            let Some((backup, fqdn, entry)) = parse_index_key(&layout, key) else { return };
            let a = acc.entry((backup, fqdn)).or_default();
            match entry {
                IndexEntry::Tokenmap => a.tokenmap = true,
                IndexEntry::Started(t) => a.started = Some(t),
                IndexEntry::Finished(t) => a.finished = Some(t),
                IndexEntry::Differential => a.differential = true,
                IndexEntry::Schema | IndexEntry::Manifest => {}
            }
        })
        .await?;
    let mut out = Vec::with_capacity(acc.len());
    for ((name, fqdn), a) in acc {
        // A node backup exists in the index iff its tokenmap entry does (contract §4.1).
        if !a.tokenmap {
            continue;
        }
        let mut nb = NodeBackup {
            name,
            fqdn,
            started: a.started,
            finished: a.finished,
            differential: a.differential,
            leftover: false,
            damaged: None,
        };
        // Older writers may lack the timestamp entries: fall back to the meta objects' times.
        if nb.started.is_none() || nb.finished.is_none() {
            let Some((b, n)) = nb.names() else { continue };
            if nb.started.is_none() {
                nb.started = node_backup::started(storage, &n, &b).await?;
            }
            if nb.finished.is_none() {
                nb.finished = node_backup::finished(storage, &n, &b).await?;
            }
        }
        // No start: the backup's folder (schema.cql first of all) is gone and only index entries
        // remain, which a deletion that was interrupted leaves. Reported so it can be finished.
        nb.leftover = nb.started.is_none();
        out.push(nb);
    }
    out.sort_by(|a, b| (&a.name, a.started).cmp(&(&b.name, b.started)));
    Ok(out)
}

/// Checks, for each node backup the index calls finished, that its manifest exists and can be
/// read, as a restore needs it; those whose manifest is missing or unreadable are marked
/// [`NodeBackup::damaged`] and no longer count as finished. Reads each manifest (several at
/// once): for purges, which must not count a backup that cannot be restored as one to keep.
pub async fn confirm_finished(storage: &Storage, nbs: &mut [NodeBackup]) -> Result<(), StorageError> {
    use futures::{StreamExt, TryStreamExt};
    let owned: Vec<NodeBackup> = nbs.to_vec();
    let checks: Vec<Option<String>> = futures::stream::iter(owned)
        .map(|nb: NodeBackup| async move {
            let Some((b, n)) = nb.names() else { return Ok(None) };
            if nb.finished.is_none() || nb.leftover {
                return Ok::<_, StorageError>(None);
            }
            node_backup::damage(storage, &n, &b).await
        })
        .buffered(8)
        .try_collect()
        .await?;
    for (nb, damage) in nbs.iter_mut().zip(checks) {
        if let Some(why) = damage {
            nb.finished = None;
            nb.damaged = Some(why);
        }
    }
    Ok(())
}
