//! Downloads: one GET per file, or ranged GETs of whole parts for a large multipart object,
//! each checked against the size the manifest records before it is written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use super::file_io::{WRITE_BATCH, create_with_parents, write_hashing, write_range};
use super::{Download, Progress, TransferError, Transfers};
use crate::format::digest::ContentDigest;
use crate::store::{StorageError, object_path};

/// Refuses an object whose size in storage is not the one its manifest records, before any of
/// it is read.
fn check_size(key: &str, recorded: u64, stored: u64) -> Result<(), TransferError> {
    if stored == recorded {
        return Ok(());
    }
    Err(TransferError::Size { key: key.to_string(), recorded, stored: Some(stored) })
}

/// Bytes of an object fetched by one ranged GET, at least (whole parts of its multipart ETag):
/// enough that a request's round trip is small beside its transfer.
const RANGE_MIN: u64 = 8 << 20;

/// The bytes of one ranged GET: the fewest whole `part`s that make at least [`RANGE_MIN`].
fn range_span(part: u64) -> u64 {
    part.max(1) * RANGE_MIN.div_ceil(part.max(1))
}

/// The byte ranges of [`range_span`] bytes (the last one shorter) that an object of `size`
/// bytes is fetched by.
fn part_ranges(size: u64, part: u64) -> Vec<std::ops::Range<u64>> {
    let span = range_span(part);
    (0..size.div_ceil(span)).map(|i| i * span..((i + 1) * span).min(size)).collect()
}

impl Transfers {
    /// Downloads `f.key` into `f.dest` (created or truncated), hashing on the way; `f.part`
    /// asks for the multipart ETag of that part size instead of the whole MD5 (object stores;
    /// `local` gives both). `dest` is not fsynced: the caller flushes its filesystem once for
    /// all files, and checks the digest before trusting `dest`.
    pub async fn download_file(&self, f: Download, progress: &Arc<Progress>) -> Result<ContentDigest, TransferError> {
        if self.local.is_none()
            && let Some(part) = f.part
            && f.size > range_span(part)
        {
            return self.download_ranged(&f.key, f.dest, part, f.size, progress).await;
        }
        let slots = if self.local.is_none() && f.size <= super::SMALL_OBJECT { &self.small_slots } else { &self.slots };
        let _slot = slots.acquire().await.expect("semaphore never closed");
        if let Some(local) = &self.local {
            return Ok(self.download_local(local, vec![f], progress).await?.pop().expect("one digest per file"));
        }
        let Download { key, dest, part, size } = f;
        let location = object_path(&key)?;
        let got = self.storage.store.get(&location).await.map_err(|e| StorageError::from_store("get", &key, e))?;
        check_size(&key, size, got.meta.size)?;
        let writer = write_hashing(dest.clone(), part);
        let received = self.receive_into(&key, got.into_stream(), writer, &dest, progress, Some(size)).await;
        if let Err(TransferError::Size { .. }) = &received {
            // A prefix of another object must not pass for the file on a rerun.
            let _ = std::fs::remove_file(&dest);
        }
        let d = received?;
        self.writeback.wrote(&dest, d.size);
        Ok(d)
    }

    /// Downloads an object whose recorded hash is a multipart ETag of `part`-byte parts as
    /// several ranged GETs of whole parts, up to `concurrent_transfers` at once, each holding a
    /// transfer slot, writing at its offset and hashing its own parts; the ETag is the MD5 of
    /// the parts' MD5s in order, so they join without hashing any byte twice. One stream, hashed
    /// on one core, is what made a restore of 1.5 GiB SSTables slower than rclone's four ranged
    /// streams per file. The digest has the multipart ETag only, and the size of the bytes
    /// received: a range that came short shows as a wrong size.
    async fn download_ranged(
        &self,
        key: &str,
        dest: PathBuf,
        part: u64,
        size: u64,
        progress: &Arc<Progress>,
    ) -> Result<ContentDigest, TransferError> {
        use futures::{StreamExt, TryStreamExt};
        let location = object_path(key)?;
        let path = dest.clone();
        // A new file, not the old one truncated: the writers of an attempt that failed may
        // still be writing their last batch, and must not write into this one.
        let file = crate::fsutil::blocking(move || {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            create_with_parents(&path)
        })
        .await
        .map_err(|source| TransferError::Write { path: dest.clone(), source })?;
        let file = Arc::new(file);
        let fetches = part_ranges(size, part).into_iter().map(|range| {
            let (file, location, dest) = (file.clone(), &location, &dest);
            async move {
                let _slot = self.slots.acquire().await.expect("semaphore never closed");
                let get = object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(range.clone())),
                    ..Default::default()
                };
                let got = self
                    .storage
                    .store
                    .get_opts(location, get)
                    .await
                    .map_err(|e| StorageError::from_store("get", key, e))?;
                // The store gives the whole object's size with each range.
                check_size(key, size, got.meta.size)?;
                self.receive_into(key, got.into_stream(), write_range(file, range, part), dest, progress, None).await
            }
        });
        let ranges: Vec<(u64, Vec<[u8; 16]>)> =
            futures::stream::iter(fetches).buffered(self.width).try_collect().await?;
        let received = ranges.iter().map(|(n, _)| n).sum();
        let parts: Vec<[u8; 16]> = ranges.into_iter().flat_map(|(_, p)| p).collect();
        self.writeback.wrote(&dest, received);
        let etag = crate::format::digest::multipart_etag(&parts);
        Ok(ContentDigest { md5: [0; 16], size: received, multipart: Some((part, etag)) })
    }

    /// Passes a GET's body to a writer task (its sender and handle) and waits for the writer's
    /// result; the store's error comes first when the body failed. A body longer than `limit`
    /// (the object's recorded size) is cut there and fails.
    async fn receive_into<T>(
        &self,
        key: &str,
        body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
        (tx, writer): (mpsc::Sender<Vec<Bytes>>, tokio::task::JoinHandle<std::io::Result<T>>),
        dest: &std::path::Path,
        progress: &Progress,
        limit: Option<u64>,
    ) -> Result<T, TransferError> {
        let failed = self.receive(key, body, tx, progress, limit).await;
        let written = writer
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| TransferError::Write { path: dest.to_path_buf(), source });
        match failed {
            Some(e) => Err(e),
            None => written,
        }
    }

    /// Passes a GET's body on to the writer, under the bandwidth cap; returns the store's error
    /// if the body failed, or a size error (nothing past `limit` passed on) if it is longer
    /// than `limit`.
    async fn receive(
        &self,
        key: &str,
        mut body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
        tx: mpsc::Sender<Vec<Bytes>>,
        progress: &Progress,
        limit: Option<u64>,
    ) -> Option<TransferError> {
        use futures::StreamExt;
        let (mut batch, mut held, mut total) = (Vec::new(), 0usize, 0u64);
        loop {
            let chunk = body.next().await;
            let end = chunk.is_none();
            match chunk {
                Some(Ok(b)) => {
                    total += b.len() as u64;
                    if let Some(recorded) = limit.filter(|l| total > *l) {
                        // Dropping the sender ends the writer with what it has: at most `recorded`.
                        return Some(TransferError::Size { key: key.to_string(), recorded, stored: None });
                    }
                    if let Some(l) = &self.limiter {
                        l.acquire(b.len()).await;
                    }
                    progress.bytes_done.fetch_add(b.len() as u64, Ordering::Relaxed);
                    held += b.len();
                    batch.push(b);
                }
                Some(Err(e)) => return Some(StorageError::from_store("get", key, e).into()),
                None => {}
            }
            if (held >= WRITE_BATCH || end) && !batch.is_empty() {
                held = 0;
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    return None; // the writer failed: its error is reported
                }
            }
            if end {
                return None;
            }
        }
    }

    /// Downloads files in order ([`Transfers::download_file`] for each), as one blocking task
    /// holding one transfer slot for `local`; stops at the first failure.
    pub async fn download_files(
        &self,
        files: Vec<Download>,
        progress: &Arc<Progress>,
    ) -> Result<Vec<ContentDigest>, TransferError> {
        let Some(local) = &self.local else {
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                out.push(self.download_file(f, progress).await?);
            }
            return Ok(out);
        };
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        self.download_local(local, files, progress).await
    }
}
