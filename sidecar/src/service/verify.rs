//! Verification of one node's part of a backup in storage (the CLI's `verify`, the extension
//! RPC `VerifyBackup` and the scheduled verification): every object the manifest names is in
//! storage with its recorded size (one listing per data folder, not a request per object);
//! `deep` downloads each one and checks its hash as a restore would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::bucket::node_backup;
use crate::format::layout::Mode;
use crate::format::names::{BackupName, Fqdn};
use crate::restore::verify::{Verdict, judge, part_size_for};
use crate::store::{Storage, StorageError};
use crate::transfer::{Download, Progress, Transfers};

/// One object a manifest names.
struct Object {
    key: String,
    size: u64,
    md5: Option<String>,
}

/// What is needed to verify.
pub struct Verifier<'a> {
    /// The bucket.
    pub storage: &'a Storage,
    /// Downloads for `deep`.
    pub transfers: Arc<Transfers>,
    /// `multipart_chunksize` (to judge multipart hashes).
    pub chunk: u64,
    /// Downloads at once.
    pub concurrency: usize,
    /// Where `deep` downloads go (each removed once judged).
    pub tmp_dir: PathBuf,
}

/// The result for one node.
#[derive(Debug, Clone, Default)]
pub struct NodeVerification {
    /// Objects checked for presence and size.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Re-hashed and sound.
    pub hashed: u64,
    /// Without a usable hash in the manifest: size only.
    pub size_only: u64,
    /// (object key or `None` for the whole part, what is wrong).
    pub problems: Vec<(Option<String>, String)>,
}

/// Verifies node `n`'s part of backup `b` (its manifest must exist: a complete part).
pub async fn node(how: &Verifier<'_>, n: &Fqdn, b: &BackupName, deep: bool) -> Result<NodeVerification, StorageError> {
    let mut out = NodeVerification::default();
    let objects = match manifest_objects(how.storage, n, b).await {
        Ok(o) => o,
        Err(problem) => {
            out.problems.push((None, problem));
            return Ok(out);
        }
    };
    let sizes = stored_sizes(how.storage, n, b, &objects).await?;
    let mut sound = Vec::with_capacity(objects.len());
    for (o, stored) in objects.iter().zip(sizes) {
        out.objects += 1;
        out.bytes += o.size;
        let problem = match stored {
            None => "missing".to_string(),
            Some(s) if s != o.size => {
                format!("{s} bytes in storage, {} in the manifest (truncated or replaced)", o.size)
            }
            Some(_) => {
                sound.push(o);
                continue;
            }
        };
        out.problems.push((Some(o.key.clone()), problem));
    }
    if !deep {
        return Ok(out);
    }
    let scratch = match Scratch::new(&how.tmp_dir) {
        Ok(s) => s,
        Err(problem) => {
            out.problems.push((None, problem));
            return Ok(out);
        }
    };
    for (o, verdict) in rehash(how, &scratch, &sound).await {
        let problem = match verdict {
            Ok(Verdict::Verified) => {
                out.hashed += 1;
                continue;
            }
            Ok(Verdict::SizeOnly) => {
                out.size_only += 1;
                continue;
            }
            Ok(Verdict::Size { recorded, read }) => {
                format!("{read} bytes read back, {recorded} in the manifest (changed while verified)")
            }
            Ok(Verdict::Mismatch { expected, actual }) => {
                format!("content differs: the manifest records {expected}, the bytes hash to {actual}")
            }
            Err(e) => format!("could not be read back: {e}"),
        };
        out.problems.push((Some(o.key.clone()), problem));
    }
    Ok(out)
}

/// The objects of one node's manifest, or why they cannot be known.
async fn manifest_objects(storage: &Storage, n: &Fqdn, b: &BackupName) -> Result<Vec<Object>, String> {
    let bytes = match node_backup::manifest(storage, n, b).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err("the manifest is missing".into()),
        Err(e) => return Err(format!("the manifest cannot be read: {e}")),
    };
    let mut out = Vec::new();
    crate::format::manifest::for_each_object(&bytes, |key, md5, size| {
        out.push(Object { key: key.to_string(), size, md5: md5.map(str::to_string) })
    })
    .map_err(|e| format!("the manifest is unreadable: {e}"))?;
    Ok(out)
}

/// The stored size of each object (`None`: absent), from one listing per data folder; objects
/// outside the node's data folders are asked for one by one.
async fn stored_sizes(
    storage: &Storage,
    n: &Fqdn,
    b: &BackupName,
    objects: &[Object],
) -> Result<Vec<Option<u64>>, StorageError> {
    let layout = &storage.layout;
    let roots = [layout.data_dir(Mode::Full, n, b), layout.shared_data_dir(n)];
    let mut sizes: HashMap<&str, Option<u64>> = objects.iter().map(|o| (o.key.as_str(), None)).collect();
    for root in &roots {
        if !objects.iter().any(|o| o.key.starts_with(root.as_str())) {
            continue;
        }
        let mut listing = std::pin::pin!(storage.list(root));
        while let Some(meta) = listing.try_next().await? {
            if let Some(slot) = sizes.get_mut(meta.location.as_ref()) {
                *slot = Some(meta.size);
            }
        }
    }
    for o in objects.iter().filter(|o| !roots.iter().any(|r| o.key.starts_with(r.as_str()))) {
        let size = storage.head(&o.key).await?.map(|m| m.size);
        sizes.insert(o.key.as_str(), size);
    }
    Ok(objects.iter().map(|o| sizes.get(o.key.as_str()).copied().flatten()).collect())
}

/// A private directory for `--deep`'s downloads, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tmp: &Path) -> Result<Scratch, String> {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tmp.join(format!("medusa-rs-verify-{}-{run}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {} for a deep verification: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads and judges each object, `concurrent_transfers` at a time.
async fn rehash<'a>(
    how: &Verifier<'_>,
    scratch: &Scratch,
    objects: &[&'a Object],
) -> Vec<(&'a Object, Result<Verdict, String>)> {
    let progress = Arc::new(Progress::default());
    let chunk = how.chunk;
    // Owned inputs: the futures borrow nothing, so that the stream is `Send` whatever holds it.
    let checks: Vec<_> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let (transfers, progress) = (how.transfers.clone(), progress.clone());
            let dest = scratch.0.join(i.to_string());
            let (key, size, md5) = (o.key.clone(), o.size, o.md5.clone());
            async move {
                let part = part_size_for(md5.as_deref(), size, chunk);
                let file = Download { key, dest: dest.clone(), part, size };
                let verdict = match transfers.download_file(file, &progress).await {
                    Ok(digest) => {
                        let path = dest.clone();
                        crate::fsutil::blocking(move || judge(md5.as_deref(), size, &digest, &path))
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = std::fs::remove_file(&dest);
                (i, verdict)
            }
        })
        .collect();
    let done: Vec<(usize, Result<Verdict, String>)> =
        futures::stream::iter(checks).buffer_unordered(how.concurrency.max(1)).collect().await;
    done.into_iter().map(|(i, v)| (objects[i], v)).collect()
}
