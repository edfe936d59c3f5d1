//! One node backup, full or differential (§2.7, §3): snapshot → scan → plan against the
//! catalog → transfer → manifest and index. The snapshot is always cleared, also on failure;
//! the manifest (the "complete" marker) is written only after every object it names exists.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::backup::cassandra::{Cassandra, NodeError};
use crate::backup::plan::{Catalog, Decision, FileRef, decide};
use crate::backup::snapshot::{self, SnapshotFile, SnapshotTable};
use crate::config::cassandra_yaml::NodePaths;
use crate::format::digest::{ContentDigest, DigestCache};
use crate::format::layout::{Meta, Mode};
use crate::format::manifest::{ManifestObject, ManifestSection};
use crate::format::names::{BackupName, Fqdn};
use crate::store::local::Publish;
use crate::store::{Storage, StorageError};
use crate::transfer::{Progress, TransferError, Transfers, Upload, batch_ranges};

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

    /// Whether trying again later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Node(e) => e.is_retryable(),
            BackupError::Storage(e) => e.is_retryable(),
            BackupError::Transfer(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Everything a backup needs, built once at start-up.
pub struct Node {
    /// The bucket.
    pub storage: Storage,
    /// Upload machinery.
    pub transfers: Arc<Transfers>,
    /// Snapshots and node facts.
    pub cassandra: Arc<dyn Cassandra>,
    /// Where the data lives.
    pub paths: NodePaths,
    /// This node's name in the bucket.
    pub fqdn: Fqdn,
    /// medusa-rs' local state (digest cache, job journal).
    pub state_dir: PathBuf,
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

/// Consecutive files of one table, handled as one unit (see [`Transfers::batch_limits`]).
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

/// Why the engine could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be built.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No way to reach Cassandra.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The directory for medusa-rs' own state: `$MEDUSA_RS_STATE_DIR`, else `.medusa-rs` in the
/// Cassandra root (a persistent volume in Kubernetes).
pub fn state_dir(paths: &NodePaths) -> PathBuf {
    match std::env::var_os("MEDUSA_RS_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => paths.root().join(".medusa-rs"),
    }
}

impl Node {
    /// Builds the engine from configuration (no request is sent yet).
    pub fn open(cfg: &crate::config::Config) -> Result<Node, OpenError> {
        let paths = NodePaths::load(&cfg.cassandra.config_file)?;
        let storage = Storage::from_config(&cfg.storage)?;
        Ok(Node {
            transfers: Arc::new(Transfers::new(storage.clone(), &cfg.storage)),
            storage,
            cassandra: crate::backup::cassandra::from_config(cfg)?,
            fqdn: cfg.fqdn()?,
            state_dir: state_dir(&paths),
            paths,
        })
    }

    fn digest_cache_path(&self) -> PathBuf {
        self.state_dir.join(format!("digests-{}.v1", self.fqdn))
    }

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
        let l = &self.storage.layout;
        if self.storage.head(&l.meta(&self.fqdn, name, Meta::Schema)).await?.is_some() {
            return Err(BackupError::AlreadyExists(name.clone()));
        }
        let tag = snapshot::tag_for(name);
        let data_dir = self.paths.data_dir.clone();
        // A leftover snapshot of an interrupted attempt is stale: never reuse it (§10.19).
        let d = data_dir.clone();
        let t = tag.clone();
        if crate::fsutil::blocking(move || snapshot::exists(&d, &t))
            .await
            .map_err(BackupError::io("looking for an old snapshot"))?
        {
            tracing::warn!(%name, %tag, "clearing a stale snapshot left by an interrupted backup");
            self.cassandra.clear_snapshot(&tag).await?;
        }
        self.cassandra.take_snapshot(&tag).await?;
        let result = self.backup_snapshot(name, mode, &tag, &progress, &cancel).await;
        let cleared = self.cassandra.clear_snapshot(&tag).await;
        let mut report = result?;
        cleared?;
        report.seconds = t0.elapsed().as_secs_f64();
        // The manifest is written after the snapshot is gone (Medusa's order, §2.7).
        Ok(report)
    }

    async fn backup_snapshot(
        &self,
        name: &BackupName,
        mode: Mode,
        tag: &str,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        let (n, l) = (&self.fqdn, &self.storage.layout);
        let d = self.paths.data_dir.clone();
        let t = tag.to_string();
        let tables = crate::fsutil::blocking(move || snapshot::scan(&d, &t))
            .await
            .map_err(BackupError::io("reading the snapshot"))?;
        let keyspaces: Vec<String> = {
            let mut k: Vec<String> = tables.iter().map(|t| t.keyspace.clone()).collect();
            k.dedup();
            k
        };
        let facts = self.cassandra.facts(n, &keyspaces).await?;
        let schema = snapshot::assemble_schema(&facts.keyspace_cql, &tables);
        let tokenmap = facts.tokenmap.to_bytes();
        let version = crate::format::pyjson::to_vec(
            &serde_json::json!({"server_type": "cassandra", "release_version": facts.release_version}),
        )
        .expect("static JSON");
        let total_files: u64 = tables.iter().map(|t| t.files.len() as u64).sum();
        let total_bytes: u64 = tables.iter().flat_map(|t| &t.files).map(|f| f.size).sum();
        progress.files_total.store(total_files, Ordering::Relaxed);
        progress.bytes_total.store(total_bytes, Ordering::Relaxed);

        // Start marker and metadata, then the index start entries (§2.7 steps 2-4).
        let s = &self.storage;
        s.put_bytes(&l.meta(n, name, Meta::Schema), schema.clone()).await?;
        s.put_bytes(&l.meta(n, name, Meta::Tokenmap), tokenmap.clone()).await?;
        s.put_bytes(&l.meta(n, name, Meta::ServerVersion), version).await?;
        if mode == Mode::Differential {
            s.put_bytes(&l.meta(n, name, Meta::Differential), "differential").await?;
        }
        s.put_bytes(&l.index_tokenmap(name, n), tokenmap.clone()).await?;
        s.put_bytes(&l.index_schema(name, n), schema).await?;
        let started = self.modified_epoch(&l.meta(n, name, Meta::Schema)).await?;
        s.put_bytes(&l.index_started(name, n, started), started.to_string()).await?;
        if mode == Mode::Differential {
            s.put_bytes(&l.index_differential(name, n), "differential").await?;
        }
        tracing::info!(backup = %name, mode = mode.as_str(), files = total_files, bytes = total_bytes, "backup started");

        let catalog = match mode {
            Mode::Differential => self.load_catalog().await?,
            Mode::Full => Catalog::default(),
        };
        let cache_path = self.digest_cache_path();
        let cache = crate::fsutil::blocking(move || Ok(DigestCache::load(&cache_path)))
            .await
            .map_err(BackupError::io("loading the digest cache"))?;
        let mut sections = Vec::with_capacity(tables.len());
        let mut report = BackupReport { started, ..Default::default() };
        let mut cache_entries = Vec::with_capacity(total_files as usize);
        // One bounded window over the batches of every table, finishing in any order, so that
        // neither a table boundary nor one large file leaves transfers idle; results are put
        // back in snapshot order per table.
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
        loop {
            while window.len() < BATCHES_IN_FLIGHT
                && let Some(b) = two_ends(next, batches.len())
            {
                next += 1;
                let b = &batches[b];
                let t = &tables[b.table];
                window.push(self.backup_batch(name, mode, t, b, &catalog, &cache, progress, cancel));
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
                cache_entries.extend(d.digest.map(|d| (i, j, d)));
            }
        }
        drop(window);
        for (table, (mut uploaded, mut reused)) in tables.iter().zip(per_table) {
            uploaded.sort_unstable_by_key(|o| o.0);
            reused.sort_unstable_by_key(|o| o.0);
            sections.push(ManifestSection {
                keyspace: table.keyspace.clone(),
                columnfamily: table.table.clone(),
                objects: uploaded.into_iter().chain(reused).map(|o| o.1).collect(),
            });
        }
        report.hashed_files = progress.files_done.load(Ordering::Relaxed).saturating_sub(report.files);
        // Done with what was read for the decisions: free it before the manifest is built.
        drop((catalog, cache));
        let cache_path = self.digest_cache_path();
        let entries = cache_entries;
        let saved = crate::fsutil::blocking(move || {
            let ids = entries.iter().map(|(i, j, d)| (&tables[*i].files[*j].id, d));
            DigestCache::save_to(&cache_path, ids)
        })
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not save the digest cache; the next differential backup reads files again");
        }
        self.publish(name, &sections, &tokenmap, &mut report).await?;
        Ok(report)
    }

    /// Backs up one batch: decides for each file, hashes those whose decision needs it, uploads
    /// the rest as one batch. Returns the table index and each file's index and outcome.
    #[allow(clippy::too_many_arguments)]
    async fn backup_batch(
        &self,
        name: &BackupName,
        mode: Mode,
        table: &SnapshotTable,
        batch: &Batch,
        catalog: &Catalog,
        cache: &DigestCache,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<(usize, Vec<(usize, Done)>), BackupError> {
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled("the sidecar is shutting down".into()));
        }
        let l = &self.storage.layout;
        fn file_ref<'a>(table: &'a SnapshotTable, f: &'a SnapshotFile) -> FileRef<'a> {
            FileRef { keyspace: &table.keyspace, table: &table.table, file: &f.file, size: f.size }
        }
        let files = &table.files[batch.files.clone()];
        // (digest, decision) per file; the digest from the cache where it has one.
        let mut decided: Vec<(Option<ContentDigest>, Decision)> = files
            .iter()
            .map(|f| {
                let local = cache.get(&f.id, self.transfers.etag_part_size(f.size)).cloned();
                let decision = decide(l, mode, &self.fqdn, name, &file_ref(table, f), local.as_ref(), catalog);
                (local, decision)
            })
            .collect();
        let unknown: Vec<usize> = (0..files.len()).filter(|k| decided[*k].1 == Decision::NeedDigest).collect();
        if !unknown.is_empty() {
            let paths = unknown.iter().map(|k| (table.path_of(&files[*k]), files[*k].size)).collect();
            let digests = self.transfers.hash_files(paths).await?;
            for (k, d) in unknown.into_iter().zip(digests) {
                progress.files_done.fetch_add(1, Ordering::Relaxed);
                let decision = decide(l, mode, &self.fqdn, name, &file_ref(table, &files[k]), Some(&d), catalog);
                decided[k] = (Some(d), decision);
            }
        }
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
        let mut uploaded = self.transfers.upload_files(uploads, progress).await?.into_iter();
        let mut out = Vec::with_capacity(files.len());
        for (k, (local, decision)) in decided.into_iter().enumerate() {
            let size = files[k].size;
            let done = match decision {
                Decision::Reuse { key, hash } => {
                    let d = local.expect("reuse needs a digest");
                    let hash = hash.unwrap_or_else(|| self.storage.manifest_hash(&d, None));
                    progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                    Done {
                        object: ManifestObject { path: key, md5: Some(hash), size },
                        uploaded: false,
                        digest: Some(d),
                    }
                }
                Decision::Upload { key, .. } => {
                    let up = uploaded.next().expect("one result per upload");
                    Done {
                        object: ManifestObject { path: key, md5: Some(up.hash), size },
                        uploaded: true,
                        digest: Some(up.digest),
                    }
                }
                Decision::NeedDigest => unreachable!("a digest was supplied"),
            };
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            out.push((batch.files.start + k, done));
        }
        Ok((batch.table, out))
    }

    /// Everything stored below `P/N/data/`, with hashes from the listing (S3) and from the
    /// node's latest manifest (other stores).
    async fn load_catalog(&self) -> Result<Catalog, BackupError> {
        let (n, l, s) = (&self.fqdn, &self.storage.layout, &self.storage);
        let mut catalog = Catalog::default();
        let mut listing = std::pin::pin!(s.list(&l.shared_data_dir(n)));
        while let Some(meta) = listing.try_next().await? {
            let hash = s.listing_hash(&meta);
            catalog.insert(meta.location.as_ref(), meta.size, hash);
        }
        if catalog.is_empty() {
            return Ok(catalog);
        }
        let latest = s.get_opt(&l.latest_backup_name(n)).await?;
        let latest = latest.and_then(|b| BackupName::new(String::from_utf8_lossy(&b).trim().to_string()).ok());
        if let Some(latest) = latest
            && let Some(bytes) = s.get_opt(&l.meta(n, &latest, Meta::Manifest)).await?
        {
            let learnt = crate::format::manifest::for_each_object(&bytes, |path, hash, size| {
                if let Some(h) = hash {
                    catalog.learn_hash(path, size, h);
                }
            });
            if let Err(e) = learnt {
                tracing::warn!(backup = %latest, error = %e, "latest manifest unreadable; digests will be recomputed");
            }
        }
        Ok(catalog)
    }

    /// Manifest, index finish entries and latest pointer (§2.7 steps 7-9).
    async fn publish(
        &self,
        name: &BackupName,
        sections: &[ManifestSection],
        tokenmap: &[u8],
        report: &mut BackupReport,
    ) -> Result<(), BackupError> {
        let (n, l, s) = (&self.fqdn, &self.storage.layout, &self.storage);
        let manifest = bytes::Bytes::from(crate::format::manifest::to_bytes(sections));
        // Every data object must be durable before the manifest says the backup is complete.
        s.sync_local().await?;
        let key = l.meta(n, name, Meta::Manifest);
        s.put_bytes(&key, manifest.clone()).await?;
        s.put_bytes(&l.index_manifest(name, n), manifest).await?;
        let finished = self.modified_epoch(&key).await?;
        s.put_bytes(&l.index_finished(name, n, finished), finished.to_string()).await?;
        s.put_bytes(&l.latest_tokenmap(n), tokenmap.to_vec()).await?;
        s.put_bytes(&l.latest_backup_name(n), name.to_string()).await?;
        s.sync_local().await?;
        report.finished = finished;
        Ok(())
    }

    async fn modified_epoch(&self, key: &str) -> Result<i64, BackupError> {
        let meta = self.storage.head(key).await?.ok_or_else(|| StorageError::NotFound { key: key.to_string() })?;
        Ok(meta.last_modified.timestamp())
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
