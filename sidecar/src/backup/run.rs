//! One node backup, full or differential (contract §2.7, §3), in stages: take the snapshot → scan it →
//! describe the node and begin the node backup in the bucket → decide and upload, batch by batch
//! → save the digest cache → publish the manifest → clear the snapshot. The snapshot is always
//! cleared, also on failure; the manifest (the "complete" marker) is written only after every
//! object it names exists, and before the snapshot is cleared.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::cassandra::NodeError;
use super::digest_cache::DigestCache;
use super::dse;
use super::plan::{Decision, FileRef, StoredObjects, decide};
use super::snapshot::{self, SnapshotFile, SnapshotTable};
use crate::bucket::index;
use crate::bucket::node_backup::{self, Start};
use crate::format::digest::ContentDigest;
use crate::format::layout::Mode;
use crate::format::manifest::{ManifestObject, ManifestSection};
use crate::format::names::BackupName;
use crate::store::StorageError;
use crate::store::local::Publish;
use crate::transfer::{Progress, TransferError, Upload, batch_ranges};

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A backup of that name exists for this node.
    #[error("backup {0} already exists for this node; choose another name or delete it first")]
    AlreadyExists(BackupName),
    /// Cassandra could not snapshot or describe itself.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A transfer failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// Local disk work failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Stopped on request (shutdown).
    #[error("backup cancelled: {0}")]
    Cancelled(String),
}

impl BackupError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        move |source| BackupError::Io { context: context.into(), source }
    }

    /// Whether trying again later can help (storage or Cassandra unavailable): recorded with a
    /// failed job, and the code of the synchronous `Backup` RPC's error.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Node(e) => e.is_retryable(),
            BackupError::Storage(e) => e.is_retryable(),
            BackupError::Transfer(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// What a finished backup did.
#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    /// Files in the manifest.
    pub files: u64,
    /// Bytes in the manifest.
    pub bytes: u64,
    /// Files uploaded.
    pub uploaded_files: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Files read only to compute a digest (no cached digest).
    pub hashed_files: u64,
    /// Start (epoch seconds, from the store's clock as Medusa records it).
    pub started: i64,
    /// Finish (epoch seconds, store clock).
    pub finished: i64,
    /// Wall time.
    pub seconds: f64,
}

/// Batches handled at once. Transfers are bounded separately by `concurrent_transfers`; reuse
/// decisions are cheap, so more of them run than transfer slots.
const BATCHES_IN_FLIGHT: usize = 16;

/// Consecutive files of one table, handled as one unit (see [`crate::transfer::Transfers::batch_limits`]).
#[derive(Debug, Clone)]
struct Batch {
    table: usize,
    files: std::ops::Range<usize>,
}

/// The order batches are started in: alternately from the first and from the last. Two
/// transfers then mostly create files in different directories, which a filesystem serializes
/// within one directory (creating a file costs about a millisecond on ext4 here).
fn two_ends(n: usize, total: usize) -> Option<usize> {
    (n < total).then(|| if n.is_multiple_of(2) { n / 2 } else { total - 1 - n / 2 })
}

/// A file's outcome: the manifest entry, and whether it was uploaded.
struct Done {
    object: ManifestObject,
    uploaded: bool,
    digest: Option<ContentDigest>,
}

/// What every batch of one backup shares.
struct Job<'a> {
    name: &'a BackupName,
    mode: Mode,
    stored: &'a StoredObjects,
    cache: &'a DigestCache,
    progress: &'a Arc<Progress>,
    cancel: &'a CancellationToken,
}

/// The outcome of the upload stage: the manifest's sections, and the digest of each file
/// (table index, file index) for the digest cache.
struct Uploaded {
    sections: Vec<ManifestSection>,
    digests: Vec<(usize, usize, ContentDigest)>,
}

impl Engine {
    /// Runs one node backup. `cancel` stops it at the next file boundary; a cancelled or
    /// failed backup leaves no manifest, so it never counts as complete.
    pub async fn backup(
        &self,
        name: &BackupName,
        mode: Mode,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        let t0 = Instant::now();
        if node_backup::started(&self.storage, &self.fqdn, name).await?.is_some() {
            return Err(BackupError::AlreadyExists(name.clone()));
        }
        self.clear_stale_snapshots(None).await;
        let tag = self.take_snapshot(name).await?;
        let result = self.backup_snapshot(name, mode, &tag, &progress, &cancel).await;
        let cleared = self.cassandra.clear_snapshot(&tag).await;
        self.remove_dse_copy(&tag).await;
        self.clear_stale_snapshots(Some(&tag)).await;
        let mut report = result?;
        cleared?;
        report.seconds = t0.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Clears every medusa snapshot on disk but `keep`. Backups run one at a time per node and
    /// clear their own, so any other is stale: one whose clear failed, or one that Cassandra
    /// finished after a killed sidecar's restart had cleared it (snapshots complete even when
    /// their client is gone). Each would hold hard links to data Cassandra has compacted away.
    /// Failures are logged: the next backup tries again.
    pub async fn clear_stale_snapshots(&self, keep: Option<&str>) {
        let d = self.paths.data_dir.clone();
        let tags = match crate::fsutil::blocking(move || snapshot::medusa_tags(&d)).await {
            Ok(t) => t,
            Err(e) => return tracing::warn!(error = %e, "could not look for stale snapshots"),
        };
        for tag in tags.iter().filter(|t| Some(t.as_str()) != keep) {
            tracing::info!(%tag, "clearing a stale snapshot of an earlier backup");
            if let Err(e) = self.cassandra.clear_snapshot(tag).await {
                tracing::warn!(%tag, error = %e, "could not clear a stale snapshot");
            }
        }
        let md = self.paths.metadata_dir.clone();
        let copies = crate::fsutil::blocking(move || Ok(dse::tags(&md))).await.unwrap_or_default();
        for tag in copies.iter().filter(|t| Some(t.as_str()) != keep) {
            self.remove_dse_copy(tag).await;
        }
    }

    /// Removes the copy of DSE's metadata directory of snapshot `tag`, if any (logged on failure:
    /// the next backup tries again).
    async fn remove_dse_copy(&self, tag: &str) {
        let (md, t) = (self.paths.metadata_dir.clone(), tag.to_string());
        if let Err(e) = crate::fsutil::blocking(move || dse::remove(&md, &t)).await {
            tracing::warn!(%tag, error = %e, "could not remove the copy of DSE's metadata directory");
        }
    }

    /// Takes the snapshot of backup `name` and returns its tag. A leftover snapshot of an
    /// interrupted attempt is stale: it is cleared and taken anew, never reused (contract §10.19).
    async fn take_snapshot(&self, name: &BackupName) -> Result<String, BackupError> {
        let tag = snapshot::tag_for(name);
        let (d, t) = (self.paths.data_dir.clone(), tag.clone());
        if crate::fsutil::blocking(move || snapshot::exists(&d, &t))
            .await
            .map_err(BackupError::io("looking for an old snapshot"))?
        {
            tracing::warn!(%name, %tag, "clearing a stale snapshot left by an interrupted backup");
            self.cassandra.clear_snapshot(&tag).await?;
        }
        self.cassandra.take_snapshot(&tag).await?;
        Ok(tag)
    }

    /// Everything between taking the snapshot and clearing it.
    async fn backup_snapshot(
        &self,
        name: &BackupName,
        mode: Mode,
        tag: &str,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        let (d, t) = (self.paths.data_dir.clone(), tag.to_string());
        let md = self.paths.metadata_dir.clone();
        let (mut tables, is_dse, metadata) = crate::fsutil::blocking(move || {
            let tables = snapshot::scan(&d, &t)?;
            let is_dse = dse::is_dse(&d);
            let metadata = if is_dse { dse::snapshot(&md, &t)? } else { None };
            Ok((tables, is_dse, metadata))
        })
        .await
        .map_err(BackupError::io("reading the snapshot"))?;
        let start = self.describe(&tables, mode, is_dse).await?;
        tables.extend(metadata);
        let total_files: u64 = tables.iter().map(|t| t.files.len() as u64).sum();
        let total_bytes: u64 = tables.iter().flat_map(|t| &t.files).map(|f| f.size).sum();
        progress.files_total.store(total_files, Ordering::Relaxed);
        progress.bytes_total.store(total_bytes, Ordering::Relaxed);
        let started = node_backup::begin(&self.storage, &self.fqdn, name, &start).await?;
        tracing::info!(backup = %name, mode = mode.as_str(), files = total_files, bytes = total_bytes, "backup started");

        let stored = match mode {
            Mode::Differential => self.stored_objects().await?,
            Mode::Full => StoredObjects::default(),
        };
        let cache_path = self.digest_cache_path();
        let cache = crate::fsutil::blocking(move || Ok(DigestCache::load(&cache_path)))
            .await
            .map_err(BackupError::io("loading the digest cache"))?;
        let mut report = BackupReport { started, ..Default::default() };
        let job = Job { name, mode, stored: &stored, cache: &cache, progress, cancel };
        let uploaded = self.upload_all(&job, &tables, &mut report).await?;
        report.hashed_files = progress.files_done.load(Ordering::Relaxed).saturating_sub(report.files);
        // Done with what was read for the decisions: free it before the manifest is built.
        drop((stored, cache));
        self.save_digest_cache(tables, uploaded.digests).await;
        let manifest = bytes::Bytes::from(crate::format::manifest::to_bytes(&uploaded.sections));
        report.finished = node_backup::publish(&self.storage, &self.fqdn, name, manifest, &start.tokenmap).await?;
        Ok(report)
    }

    /// The node's facts, turned into the meta objects a node backup starts with (`is_dse`: the
    /// server type recorded).
    async fn describe(&self, tables: &[SnapshotTable], mode: Mode, is_dse: bool) -> Result<Start, BackupError> {
        let mut keyspaces: Vec<String> = tables.iter().map(|t| t.keyspace.clone()).collect();
        keyspaces.dedup();
        let facts = self.cassandra.facts(&self.fqdn, &keyspaces).await?;
        let server_type = if is_dse { "dse" } else { "cassandra" };
        let version = serde_json::json!({"server_type": server_type, "release_version": facts.release_version});
        Ok(Start {
            schema: snapshot::assemble_schema(&facts.keyspace_cql, tables),
            tokenmap: facts.tokenmap.to_bytes(),
            server_version: crate::format::pyjson::to_vec(&version).expect("static JSON"),
            mode,
        })
    }

    /// Decides and uploads every file, in one bounded window over the batches of every table,
    /// finishing in any order, so that neither a table boundary nor one large file leaves
    /// transfers idle; results are put back in snapshot order per table.
    async fn upload_all(
        &self,
        job: &Job<'_>,
        tables: &[SnapshotTable],
        report: &mut BackupReport,
    ) -> Result<Uploaded, BackupError> {
        let limits = self.transfers.batch_limits();
        let batches: Vec<Batch> = (tables.iter().enumerate())
            .flat_map(|(table, t)| {
                let ranges = batch_ranges(t.files.iter().map(|f| f.size), limits);
                ranges.into_iter().map(move |files| Batch { table, files })
            })
            .collect();
        let mut next = 0;
        let mut window = futures::stream::FuturesUnordered::new();
        // Per table: newly uploaded objects, then re-used ones (Medusa's order), by file index.
        type Objects = Vec<(usize, ManifestObject)>;
        let mut per_table: Vec<(Objects, Objects)> = vec![Default::default(); tables.len()];
        let mut digests = Vec::with_capacity(tables.iter().map(|t| t.files.len()).sum());
        loop {
            while window.len() < BATCHES_IN_FLIGHT
                && let Some(b) = two_ends(next, batches.len())
            {
                next += 1;
                let b = &batches[b];
                window.push(self.backup_batch(job, &tables[b.table], b));
            }
            let Some(done) = window.next().await else { break };
            let (i, done) = done?;
            for (j, d) in done {
                report.files += 1;
                report.bytes += d.object.size;
                if d.uploaded {
                    report.uploaded_files += 1;
                    report.uploaded_bytes += d.object.size;
                    per_table[i].0.push((j, d.object));
                } else {
                    per_table[i].1.push((j, d.object));
                }
                digests.extend(d.digest.map(|d| (i, j, d)));
            }
        }
        drop(window);
        let sections = (tables.iter().zip(per_table))
            .map(|(table, (mut uploaded, mut reused))| {
                uploaded.sort_unstable_by_key(|o| o.0);
                reused.sort_unstable_by_key(|o| o.0);
                ManifestSection {
                    keyspace: table.keyspace.clone(),
                    columnfamily: table.table.clone(),
                    objects: uploaded.into_iter().chain(reused).map(|o| o.1).collect(),
                }
            })
            .collect();
        Ok(Uploaded { sections, digests })
    }

    /// Backs up one batch: decides for each file, hashes those whose decision needs it, uploads
    /// the rest as one batch. Returns the table index and each file's index and outcome.
    async fn backup_batch(
        &self,
        job: &Job<'_>,
        table: &SnapshotTable,
        batch: &Batch,
    ) -> Result<(usize, Vec<(usize, Done)>), BackupError> {
        if job.cancel.is_cancelled() {
            return Err(BackupError::Cancelled("the sidecar is shutting down".into()));
        }
        let files = &table.files[batch.files.clone()];
        let decided = self.decide_batch(job, table, files).await?;
        let mut uploads = Vec::new();
        for (k, (_, decision)) in decided.iter().enumerate() {
            if let Decision::Upload { key, versioned } = decision {
                // A new key nothing references yet may be written in place: the manifest that
                // will name it is written only after every copy is flushed.
                let publish = if *versioned { Publish::Whole } else { Publish::InPlace };
                let f = &files[k];
                uploads.push(Upload { path: table.path_of(f), size: f.size, key: key.clone(), publish });
            }
        }
        let mut uploaded = self.transfers.upload_files(uploads, job.progress).await?.into_iter();
        let mut out = Vec::with_capacity(files.len());
        for (k, (local, decision)) in decided.into_iter().enumerate() {
            let size = files[k].size;
            let done = match decision {
                Decision::Reuse { key, hash } => {
                    let d = local.expect("reuse needs a digest");
                    let hash = hash.unwrap_or_else(|| self.storage.manifest_hash(&d, None));
                    job.progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                    let object = ManifestObject { path: key, md5: Some(hash), size };
                    Done { object, uploaded: false, digest: Some(d) }
                }
                Decision::Upload { key, .. } => {
                    let up = uploaded.next().expect("one result per upload");
                    let object = ManifestObject { path: key, md5: Some(up.hash), size };
                    Done { object, uploaded: true, digest: Some(up.digest) }
                }
                Decision::NeedDigest => unreachable!("a digest was supplied"),
            };
            job.progress.files_done.fetch_add(1, Ordering::Relaxed);
            out.push((batch.files.start + k, done));
        }
        Ok((batch.table, out))
    }

    /// The decision for each file of a batch, with its digest: from the cache where it has
    /// one, read from the file (in one blocking task) where the decision needs it.
    async fn decide_batch(
        &self,
        job: &Job<'_>,
        table: &SnapshotTable,
        files: &[SnapshotFile],
    ) -> Result<Vec<(Option<ContentDigest>, Decision)>, BackupError> {
        let l = &self.storage.layout;
        let decide_with = |f: &SnapshotFile, d: Option<&ContentDigest>| {
            let file = FileRef { keyspace: &table.keyspace, table: &table.table, file: &f.file, size: f.size };
            decide(l, job.mode, &self.fqdn, job.name, &file, d, job.stored)
        };
        let mut decided: Vec<(Option<ContentDigest>, Decision)> = files
            .iter()
            .map(|f| {
                let local = job.cache.get(&f.id, self.transfers.etag_part_size(f.size)).cloned();
                let decision = decide_with(f, local.as_ref());
                (local, decision)
            })
            .collect();
        let unknown: Vec<usize> = (0..files.len()).filter(|k| decided[*k].1 == Decision::NeedDigest).collect();
        if unknown.is_empty() {
            return Ok(decided);
        }
        let paths = unknown.iter().map(|k| (table.path_of(&files[*k]), files[*k].size)).collect();
        let digests = self.transfers.hash_files(paths).await?;
        for (k, d) in unknown.into_iter().zip(digests) {
            job.progress.files_done.fetch_add(1, Ordering::Relaxed);
            let decision = decide_with(&files[k], Some(&d));
            decided[k] = (Some(d), decision);
        }
        Ok(decided)
    }

    /// Everything stored below `P/N/data/`, with hashes from the listing (S3) or else from the
    /// manifests that reference those objects: the node's differential backups, newest first,
    /// until every object's hash is known. (The latest manifest alone is not enough: after a full
    /// backup it names only the full backup's own folder, and a differential backup would then
    /// upload every file again.)
    async fn stored_objects(&self) -> Result<StoredObjects, BackupError> {
        let (n, s) = (&self.fqdn, &self.storage);
        let mut stored = StoredObjects::default();
        let mut listing = std::pin::pin!(s.list(&s.layout.shared_data_dir(n)));
        while let Some(meta) = listing.try_next().await? {
            let hash = s.listing_hash(&meta);
            stored.insert(meta.location.as_ref(), meta.size, hash);
        }
        if stored.unknown() == 0 {
            return Ok(stored);
        }
        for b in self.differential_backups_newest_first().await? {
            let Some(bytes) = node_backup::manifest(s, n, &b).await? else { continue };
            let learnt = crate::format::manifest::for_each_object(&bytes, |path, hash, size| {
                if let Some(h) = hash {
                    stored.learn_hash(path, size, h);
                }
            });
            if let Err(e) = learnt {
                tracing::warn!(backup = %b, error = %e, "manifest unreadable; its digests will be recomputed");
            }
            if stored.unknown() == 0 {
                break;
            }
        }
        Ok(stored)
    }

    /// This node's complete differential backups, newest first: the latest backup first when it
    /// is one (the usual case: its manifest alone tells every hash), then the index's.
    async fn differential_backups_newest_first(&self) -> Result<Vec<BackupName>, BackupError> {
        let (n, s) = (&self.fqdn, &self.storage);
        let mut mine: Vec<_> = index::node_backups(s, None)
            .await?
            .into_iter()
            .filter(|nb| nb.fqdn == n.as_str() && nb.differential && nb.finished.is_some())
            .collect();
        mine.sort_by_key(|nb| std::cmp::Reverse(nb.finished));
        let mut names: Vec<BackupName> = mine.iter().filter_map(|nb| nb.names()).map(|(b, _)| b).collect();
        if let Some(latest) = node_backup::latest(s, n).await?
            && let Some(i) = names.iter().position(|b| *b == latest)
        {
            names[..=i].rotate_right(1);
        }
        Ok(names)
    }

    /// Saves the digests of this snapshot's files for the next backup; a failure only costs
    /// the next differential backup reading files again.
    async fn save_digest_cache(&self, tables: Vec<SnapshotTable>, digests: Vec<(usize, usize, ContentDigest)>) {
        let cache_path = self.digest_cache_path();
        let saved = crate::fsutil::blocking(move || {
            let ids = digests.iter().map(|(i, j, d)| (&tables[*i].files[*j].id, d));
            DigestCache::save_to(&cache_path, ids)
        })
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not save the digest cache; the next differential backup reads files again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::two_ends;

    #[test]
    fn two_ends_visits_every_batch_once_alternating_ends() {
        for total in [0, 1, 2, 5, 8] {
            let got: Vec<_> = (0..).map_while(|n| two_ends(n, total)).collect();
            let mut seen = got.clone();
            seen.sort();
            assert_eq!(seen, (0..total).collect::<Vec<_>>(), "{total}: each once");
            if total >= 2 {
                assert_eq!(&got[..2], &[0, total - 1], "{total}: then from the end");
            }
        }
    }
}
