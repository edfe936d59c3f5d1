//! One node's part of a backup (`P/N/B/`, contract §2.7): the one owner of its state. Whether it exists,
//! is complete or failed is read here and nowhere else, and every write that changes that state
//! happens here too: the start (meta objects and index start entries), the publish (manifest,
//! index finish entries, latest pointer), the failure marker, and the deletion.
//!
//! The states, as the bucket tells them:
//! - absent: no `meta/schema.cql` (never started on this node, or deleted);
//! - incomplete: `schema.cql` without `manifest.json` (running, interrupted or failed; the
//!   failure marker `meta/failed.json` says which, with the reason);
//! - complete: `manifest.json` exists, which is written only after every object it names.
//!
//! Deletion (contract §5.2 with §10.9 fixed) matches keys by exact folder (`P/N/B/`, with the slash) and
//! by parsed index entries, so `b1` never takes `b10` with it; shared differential data is never
//! deleted here (the purge's orphan cleanup does that, after the grace period).

use bytes::Bytes;
use futures::TryStreamExt;

use crate::format::layout::{Meta, Mode, parse_index_key};
use crate::format::names::{BackupName, Fqdn};
use crate::store::{Storage, StorageError};

/// What the bucket says about a node backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No `schema.cql`.
    Absent,
    /// Started, not complete.
    Incomplete {
        /// When `schema.cql` was written (epoch seconds, store clock).
        started: i64,
        /// The reason recorded by the failure marker, when the backup is known to have failed.
        failure: Option<String>,
    },
    /// The manifest exists.
    Complete {
        /// When `schema.cql` was written.
        started: i64,
        /// When the manifest was written.
        finished: i64,
    },
}

/// The state of node backup `(n, b)`: two HEADs, and a GET of the failure marker when the
/// backup is incomplete.
pub async fn state(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<State, StorageError> {
    let Some(started) = started(s, n, b).await? else { return Ok(State::Absent) };
    if let Some(finished) = finished(s, n, b).await? {
        return Ok(State::Complete { started, finished });
    }
    Ok(State::Incomplete { started, failure: failure(s, n, b).await? })
}

/// When the node backup started (its `schema.cql` was written), `None` when it is absent.
pub async fn started(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Option<i64>, StorageError> {
    modified(s, &s.layout.meta(n, b, Meta::Schema)).await
}

/// When the node backup was completed (its manifest was written), `None` while incomplete.
pub async fn finished(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Option<i64>, StorageError> {
    modified(s, &s.layout.meta(n, b, Meta::Manifest)).await
}

async fn modified(s: &Storage, key: &str) -> Result<Option<i64>, StorageError> {
    Ok(s.head(key).await?.map(|m| m.last_modified.timestamp()))
}

/// The reason recorded by the failure marker, if the node backup is marked failed (a marker
/// whose body cannot be read still marks it failed).
pub async fn failure(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Option<String>, StorageError> {
    let Some(body) = s.get_opt(&s.layout.meta(n, b, Meta::Failed)).await? else { return Ok(None) };
    let reason = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string));
    Ok(Some(reason.unwrap_or_else(|| "failed (the failure marker has no reason)".into())))
}

/// Whether the node backup carries the failure marker (one HEAD).
pub async fn is_marked_failed(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<bool, StorageError> {
    Ok(s.head(&s.layout.meta(n, b, Meta::Failed)).await?.is_some())
}

/// Marks a node backup that did not complete failed, with `reason`, so that every node's
/// GetBackups reports FAILED instead of IN_PROGRESS forever (contract §10.5): an incomplete one, and an
/// absent one too (its node failed before writing anything: the other nodes' summaries then find
/// the marker where its part should be). A complete backup is left alone. Returns whether the
/// marker was written.
pub async fn mark_failed(s: &Storage, n: &Fqdn, b: &BackupName, reason: &str) -> Result<bool, StorageError> {
    if finished(s, n, b).await?.is_some() {
        return Ok(false);
    }
    let body = serde_json::json!({"reason": reason, "failed_at": chrono::Utc::now().timestamp()}).to_string();
    s.put_bytes(&s.layout.meta(n, b, Meta::Failed), body).await?;
    Ok(true)
}

/// The manifest's bytes, `None` while the node backup is incomplete or absent.
pub async fn manifest(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Option<Bytes>, StorageError> {
    s.get_opt(&s.layout.meta(n, b, Meta::Manifest)).await
}

/// Why a node backup that looks complete cannot be restored from, `None` when it can: it needs
/// its `schema.cql` (without it, it is what an interrupted deletion or a partial copy leaves)
/// and a readable manifest, as a restore does. Logs the key of the object that fails it.
pub async fn damage(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Option<String>, StorageError> {
    if started(s, n, b).await?.is_none() {
        let key = s.layout.meta(n, b, Meta::Schema);
        tracing::warn!(key = %key, "this node backup has lost its schema.cql");
        return Ok(Some(format!("damaged: its {key} is missing (partly deleted or copied incompletely)")));
    }
    let key = s.layout.meta(n, b, Meta::Manifest);
    let Some(bytes) = manifest(s, n, b).await? else {
        tracing::warn!(key = %key, "this node backup's manifest is missing");
        return Ok(Some(format!("damaged: its manifest {key} is missing")));
    };
    let counted =
        crate::fsutil::blocking(move || crate::format::manifest::count_objects(&bytes).map_err(std::io::Error::other))
            .await;
    Ok(counted.err().map(|e| {
        tracing::warn!(key = %key, error = %e, "unreadable manifest");
        format!("damaged: its manifest {key} is unreadable ({e})")
    }))
}

/// The node backup's own `tokenmap.json`.
pub async fn tokenmap(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Bytes, StorageError> {
    s.get_bytes(&s.layout.meta(n, b, Meta::Tokenmap)).await
}

/// The name the latest-backup pointer of node `n` holds, if any (and if it is a valid name).
pub async fn latest(s: &Storage, n: &Fqdn) -> Result<Option<BackupName>, StorageError> {
    let name = s.get_opt(&s.layout.latest_backup_name(n)).await?;
    Ok(name.and_then(|b| BackupName::new(String::from_utf8_lossy(&b).trim().to_string()).ok()))
}

/// What a starting node backup writes before any data (contract §2.7 steps 2-4).
#[derive(Debug, Clone)]
pub struct Start {
    /// `schema.cql`.
    pub schema: String,
    /// `tokenmap.json`.
    pub tokenmap: Vec<u8>,
    /// `server_version.json`.
    pub server_version: Vec<u8>,
    /// Full or differential.
    pub mode: Mode,
}

/// Writes the start of node backup `(n, b)`: the meta objects (`schema.cql` first: from then on
/// the backup exists), then the index start entries. Returns the start time (store clock).
pub async fn begin(s: &Storage, n: &Fqdn, b: &BackupName, start: &Start) -> Result<i64, StorageError> {
    let l = &s.layout;
    let differential = start.mode == Mode::Differential;
    // A marker an earlier attempt of this name left when it failed before writing anything
    // (see `mark_failed`) must not make this attempt look failed.
    s.delete(&l.meta(n, b, Meta::Failed)).await?;
    s.put_bytes(&l.meta(n, b, Meta::Schema), start.schema.clone()).await?;
    s.put_bytes(&l.meta(n, b, Meta::Tokenmap), start.tokenmap.clone()).await?;
    s.put_bytes(&l.meta(n, b, Meta::ServerVersion), start.server_version.clone()).await?;
    if differential {
        s.put_bytes(&l.meta(n, b, Meta::Differential), "differential").await?;
    }
    s.put_bytes(&l.index_tokenmap(b, n), start.tokenmap.clone()).await?;
    s.put_bytes(&l.index_schema(b, n), start.schema.clone()).await?;
    let started = started(s, n, b).await?.ok_or_else(|| vanished(l.meta(n, b, Meta::Schema)))?;
    s.put_bytes(&l.index_started(b, n, started), started.to_string()).await?;
    if differential {
        s.put_bytes(&l.index_differential(b, n), "differential").await?;
    }
    Ok(started)
}

/// Completes node backup `(n, b)` (contract §2.7 steps 7-9): flushes the `local` bucket so that every
/// data object is durable, then writes the manifest (from then on the backup is complete), the
/// index finish entries and the latest pointer. Returns the finish time (store clock).
pub async fn publish(
    s: &Storage,
    n: &Fqdn,
    b: &BackupName,
    manifest: Bytes,
    tokenmap: &[u8],
) -> Result<i64, StorageError> {
    let l = &s.layout;
    s.sync_local().await?;
    s.put_bytes(&l.meta(n, b, Meta::Manifest), manifest.clone()).await?;
    s.put_bytes(&l.index_manifest(b, n), manifest).await?;
    let finished = finished(s, n, b).await?.ok_or_else(|| vanished(l.meta(n, b, Meta::Manifest)))?;
    s.put_bytes(&l.index_finished(b, n, finished), finished.to_string()).await?;
    s.put_bytes(&l.latest_tokenmap(n), tokenmap.to_vec()).await?;
    s.put_bytes(&l.latest_backup_name(n), b.to_string()).await?;
    s.sync_local().await?;
    Ok(finished)
}

/// Writes what [`publish`] writes after the manifest (index manifest and finish entries, latest
/// pointer), for a node backup whose manifest is stored but whose process died before the rest:
/// idempotent. Returns the finish time.
pub async fn republish(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<i64, StorageError> {
    let l = &s.layout;
    let manifest = manifest(s, n, b).await?.ok_or_else(|| vanished(l.meta(n, b, Meta::Manifest)))?;
    let tokenmap = s.get_bytes(&l.meta(n, b, Meta::Tokenmap)).await?;
    s.put_bytes(&l.index_manifest(b, n), manifest).await?;
    let finished = finished(s, n, b).await?.ok_or_else(|| vanished(l.meta(n, b, Meta::Manifest)))?;
    s.put_bytes(&l.index_finished(b, n, finished), finished.to_string()).await?;
    s.put_bytes(&l.latest_tokenmap(n), tokenmap).await?;
    s.put_bytes(&l.latest_backup_name(n), b.to_string()).await?;
    s.sync_local().await?;
    Ok(finished)
}

fn vanished(key: String) -> StorageError {
    StorageError::NotFound { key }
}

/// What a deletion removed, counted as Medusa counts it (contract §5.4): the objects of the backup's
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
/// leftover once `schema.cql` and `started_` are gone, see [`crate::bucket::index::NodeBackup`])
/// and the next purge or delete finishes it.
pub async fn delete(s: &Storage, n: &Fqdn, b: &BackupName) -> Result<Deleted, StorageError> {
    delete_keeping(s, n, b, &|_| false).await
}

/// [`delete`], leaving in place every object of the folder that `keep` names: what another
/// readable manifest of the node references (a manifest copied or moved into another folder
/// names this folder's data), which a deletion must never take with it.
pub async fn delete_keeping(
    s: &Storage,
    n: &Fqdn,
    b: &BackupName,
    keep: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Deleted, StorageError> {
    let l = &s.layout;
    let mut out = Deleted::default();
    // Data and meta first, then `schema.cql`, the failure marker, and the manifest last, so
    // that a deletion cut short anywhere never leaves a backup that looks complete, nor a failed
    // one that looks running: once `schema.cql` is gone the listing calls the part failed
    // whether or not the marker is still there (the index entries go after the folder).
    let folder = l.node_backup_dir(n, b);
    let mut keys: Vec<(String, u64)> =
        s.list(&folder).map_ok(|m| (m.location.to_string(), m.size)).try_collect().await?;
    let manifest = l.meta(n, b, Meta::Manifest);
    let schema = l.meta(n, b, Meta::Schema);
    let marker = l.meta(n, b, Meta::Failed);
    keys.sort_by_key(|(k, _)| (*k == manifest, *k == marker, *k == schema));
    let kept = keys.len();
    keys.retain(|(k, _)| !keep(k));
    if keys.len() != kept {
        tracing::warn!(backup = %b, node = %n, kept = kept - keys.len(), "objects another manifest references are kept");
    }
    for (key, size) in keys {
        s.delete(&key).await?;
        out.objects += 1;
        out.bytes += size;
    }
    let mut index: Vec<String> = s
        .list(&l.index_dir(b))
        .try_filter(|m| {
            let mine = parse_index_key(l, m.location.as_ref())
                .is_some_and(|(name, node, _)| name == b.as_str() && node == n.as_str());
            futures::future::ready(mine)
        })
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await?;
    // The tokenmap entry is what makes a node backup exist in the index: remove it last.
    index.sort_by_key(|k| k.contains("/tokenmap_"));
    for key in index {
        s.delete(&key).await?;
    }
    if latest(s, n).await?.as_ref() == Some(b) {
        s.delete(&l.latest_backup_name(n)).await?;
        s.delete(&l.latest_tokenmap(n)).await?;
    }
    Ok(out)
}
