//! Moving bytes: each file is read once, on the blocking pool, hashed in the same pass and
//! streamed to the store; uploads are bounded by `concurrent_transfers`; S3 transfers share one
//! bandwidth cap of `transfer_max_bandwidth` per transfer (Medusa's meaning). On S3 the bytes
//! are streamed from the file into the requests ([`crate::store::s3stream`]), within one memory
//! budget ([`budget`]) whatever the SSTable sizes and multipart settings; other object stores
//! buffer one part (8 MiB) per transfer.
//! For `local`, data files bypass the store's streaming API: [`crate::store::local`] copies them
//! within the kernel to exactly the files the store would write (everything else, listings,
//! metadata and deletes, goes through the store).

pub mod budget;
pub mod progress;
pub mod rate;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMultipartOptions, PutPayload};
use tokio::sync::{Semaphore, mpsc};

pub use progress::Progress;
use rate::RateLimiter;

use crate::config::StorageConfig;
use crate::format::digest::{ContentDigest, Hasher};
use crate::store::local::{self, CopyError, Publish};
use crate::store::s3stream::{BodyStream, S3Stream};
use crate::store::{LocalBucket, Storage, StorageError, object_path};

const READ_CHUNK: usize = 1 << 20;
/// Chunk of a streamed S3 upload: small enough that many streams fit in [`UPLOAD_BUDGET`].
const STREAM_CHUNK: usize = 256 << 10;
/// File bytes that the streamed uploads of one [`Transfers`] hold in memory at most (see
/// [`budget`]), whatever the SSTable sizes: what each transfer can hold at once, so that none
/// waits for another's share. A transfer's reader and its channel hold up to 4 chunks and each
/// request in flight up to 3 (its channel and the one being written): with the operator's 4
/// transfers of 4 parts in flight, 16 MiB.
pub fn upload_budget(transfers: usize, parts_in_flight: usize) -> usize {
    transfers.max(1) * (4 + 3 * parts_in_flight.max(1)) * STREAM_CHUNK
}
/// Physical part size for stores where parts carry no meaning (Azure, GCS: at least 5 MiB;
/// `local` data files do not stream, see `upload_local`).
const PLAIN_PART: u64 = 8 << 20;

/// A transfer failure.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the local file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing a local file (a download's destination) failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The file changed size while being read (SSTables in a snapshot never do).
    #[error("{path} changed while being read: expected {expected} bytes, read {read}")]
    Changed {
        /// The file.
        path: PathBuf,
        /// Size seen when the snapshot was scanned.
        expected: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// An object's size in storage is not the one its manifest records: it was replaced or
    /// damaged in the bucket. Nothing more than the recorded size was written.
    #[error(
        "object {key} has {} in storage, but its manifest records {recorded} bytes: the object was replaced or damaged in the bucket",
        stored.map(|s| format!("{s} bytes")).unwrap_or_else(|| format!("more than {recorded} bytes"))
    )]
    Size {
        /// The key.
        key: String,
        /// The size the manifest records.
        recorded: u64,
        /// The size in storage, when the store said it (else more than `recorded` arrived).
        stored: Option<u64>,
    },
    /// The store's checksum disagrees with the bytes sent.
    #[error("upload of {key} corrupted: the store reports ETag {reported}, the bytes sent hash to {expected}")]
    Corrupted {
        /// The key.
        key: String,
        /// ETag from the store.
        reported: String,
        /// ETag computed locally.
        expected: String,
    },
}

impl TransferError {
    /// Whether trying again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransferError::Storage(e) => e.is_retryable(),
            TransferError::Corrupted { .. } => true,
            _ => false,
        }
    }
}

/// Files per batch for the `local` provider.
const LOCAL_BATCH_FILES: usize = 64;
/// Bytes per batch for the `local` provider: a larger file makes a batch of its own.
const LOCAL_BATCH_BYTES: u64 = 8 << 20;

/// One file to upload.
#[derive(Debug)]
pub struct Upload {
    /// The local file.
    pub path: PathBuf,
    /// Its size when it was scanned.
    pub size: u64,
    /// Its key.
    pub key: String,
    /// How it may appear under its key (`local` only).
    pub publish: Publish,
}

/// Cuts a sequence of files (given by their sizes) into consecutive ranges of at most
/// `max_files` files and, unless one file alone is larger, `max_bytes` bytes (the limits of
/// [`Transfers::batch_limits`]).
pub fn batch_ranges(
    sizes: impl IntoIterator<Item = u64>,
    (max_files, max_bytes): (usize, u64),
) -> Vec<std::ops::Range<usize>> {
    let (mut out, mut start, mut end, mut bytes) = (Vec::new(), 0, 0, 0u64);
    for size in sizes {
        if end > start && (end - start >= max_files || bytes + size > max_bytes) {
            out.push(start..end);
            (start, bytes) = (end, 0);
        }
        bytes += size;
        end += 1;
    }
    if start < end {
        out.push(start..end);
    }
    out
}

/// One file to download.
#[derive(Debug)]
pub struct Download {
    /// Its key.
    pub key: String,
    /// The local file to create (or truncate).
    pub dest: PathBuf,
    /// The part size of the multipart ETag to compute too, if any.
    pub part: Option<u64>,
    /// Its size, as the manifest records it (an object of several parts is fetched by ranges).
    pub size: u64,
}

/// Result of one upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Digest of the bytes sent.
    pub digest: ContentDigest,
    /// The hash to record in the manifest.
    pub hash: String,
}

/// Uploads files to one store.
pub struct Transfers {
    storage: Storage,
    slots: Arc<Semaphore>,
    /// The number of slots (`concurrent_transfers`).
    width: usize,
    limiter: Option<Arc<RateLimiter>>,
    threshold: u64,
    chunk: u64,
    parts_in_flight: usize,
    /// The `local` bucket directory, asked of the store once: files are copied to and from
    /// it directly.
    local: Option<LocalBucket>,
    /// Uploads of at least `threshold` bytes are multipart uploads of `chunk`-byte parts whose
    /// ETag the manifest records (S3).
    multipart: bool,
    /// The store's ETags are checksums of the content: each upload is checked against them.
    check_etags: bool,
    /// Early write-back of what this process writes to local files (bucket or staging).
    writeback: local::WriteBack,
    /// Memory for the file bytes of streamed uploads.
    budget: budget::Budget,
}

impl Transfers {
    /// From `[storage]`.
    pub fn new(storage: Storage, cfg: &StorageConfig) -> Transfers {
        let s3 = storage.multipart_etags();
        Transfers {
            slots: Arc::new(Semaphore::new(cfg.concurrent_transfers.max(1))),
            width: cfg.concurrent_transfers.max(1),
            // Medusa's meaning: the cap is per transfer, so that nobody moving from Medusa gets
            // slower; one shared bucket of `concurrent_transfers` times the cap enforces it.
            limiter: cfg
                .transfer_max_bandwidth
                .filter(|_| s3)
                .map(|b| Arc::new(RateLimiter::new(b.saturating_mul(cfg.concurrent_transfers.max(1) as u64)))),
            threshold: if s3 { cfg.multi_part_upload_threshold } else { PLAIN_PART },
            chunk: if s3 { cfg.multipart_chunksize } else { PLAIN_PART },
            parts_in_flight: cfg.multipart_max_concurrency,
            writeback: local::WriteBack::default(),
            local: storage.local_fast_path().cloned(),
            multipart: s3,
            check_etags: storage.checksum_etags(),
            budget: budget::Budget::new(upload_budget(cfg.concurrent_transfers, cfg.multipart_max_concurrency)),
            storage,
        }
    }

    /// The storage retry settings these transfers follow.
    pub fn retries(&self) -> crate::store::Retries {
        self.storage.retries
    }

    /// The part size whose multipart ETag must be known for a file of `size` bytes (S3 files at
    /// or above the threshold), else `None`.
    pub fn etag_part_size(&self, size: u64) -> Option<u64> {
        (self.multipart && size >= self.threshold).then_some(self.chunk)
    }

    /// How many files, and how many bytes of them, one batch of [`Transfers::hash_files`] or
    /// [`Transfers::upload_files`] should hold. For `local`, batches amortise the hand-off to a
    /// blocking thread, which costs as much as copying a small file; other stores upload one
    /// file at a time (their transfers are network-bound and async).
    pub fn batch_limits(&self) -> (usize, u64) {
        if self.local.is_some() { (LOCAL_BATCH_FILES, LOCAL_BATCH_BYTES) } else { (1, u64::MAX) }
    }

    /// Reads and hashes a file without uploading it.
    pub async fn hash_file(&self, path: PathBuf, size: u64) -> Result<ContentDigest, TransferError> {
        let mut d = self.hash_files(vec![(path, size)]).await?;
        Ok(d.pop().expect("one digest per file"))
    }

    /// Reads and hashes files (path, expected size) without uploading them, in order, in one
    /// blocking task that holds one transfer slot.
    pub async fn hash_files(&self, files: Vec<(PathBuf, u64)>) -> Result<Vec<ContentDigest>, TransferError> {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let parts: Vec<_> = files.iter().map(|(_, size)| self.etag_part_size(*size)).collect();
        let first = files.first().map(|f| f.0.clone()).unwrap_or_default();
        let hashed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(files.len());
            for ((path, size), part) in files.into_iter().zip(parts) {
                let d = match crate::format::digest::hash_path(&path, part) {
                    Ok(d) => d,
                    Err(source) => return Err(TransferError::Read { path, source }),
                };
                if d.size != size {
                    return Err(TransferError::Changed { path, expected: size, read: d.size });
                }
                out.push(d);
            }
            Ok(out)
        });
        hashed.await.map_err(|e| TransferError::Read { path: first, source: std::io::Error::other(e.to_string()) })?
    }

    /// Uploads files in order ([`Transfers::upload_file`] for each), as one blocking task
    /// holding one transfer slot for `local`; stops at the first failure.
    pub async fn upload_files(
        &self,
        files: Vec<Upload>,
        progress: &Arc<Progress>,
    ) -> Result<Vec<Uploaded>, TransferError> {
        let Some(local) = &self.local else {
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                out.push(self.upload_file(f.path, f.size, &f.key, f.publish, progress).await?);
            }
            return Ok(out);
        };
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let digests = self.upload_local(local, files, progress).await?;
        Ok(digests
            .into_iter()
            .map(|digest| Uploaded { hash: self.storage.manifest_hash(&digest, None), digest })
            .collect())
    }

    /// Uploads `path` (expected `size` bytes) to `key`, hashing on the way, and checks the
    /// store's ETag against the bytes sent where the ETag is a checksum. `publish` matters to
    /// `local` only: the other stores never show a partial object.
    pub async fn upload_file(
        &self,
        path: PathBuf,
        size: u64,
        key: &str,
        publish: Publish,
        progress: &Arc<Progress>,
    ) -> Result<Uploaded, TransferError> {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        if let Some(local) = &self.local {
            let file = Upload { path, size, key: key.to_string(), publish };
            let digest = self.upload_local(local, vec![file], progress).await?.pop().expect("one digest per file");
            let hash = self.storage.manifest_hash(&digest, None);
            return Ok(Uploaded { digest, hash });
        }
        let (digest, etag) = self.upload_retrying(&path, size, key, progress).await?;
        progress.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        progress.files_uploaded.fetch_add(1, Ordering::Relaxed);
        let hash = self.storage.manifest_hash(&digest, etag.as_deref());
        Ok(Uploaded { digest, hash })
    }

    /// Uploads a file to an object store, the whole file again after a failure that another try
    /// can mend (within the storage retry budget). After a failed attempt whose bytes were all
    /// sent, the object is looked up first: an answer lost after the store finished (a PUT or a
    /// CompleteMultipartUpload) is recognised by its size and checksum ETag instead of being
    /// uploaded again or failing the backup.
    async fn upload_retrying(
        &self,
        path: &std::path::Path,
        size: u64,
        key: &str,
        progress: &Arc<Progress>,
    ) -> Result<(ContentDigest, Option<String>), TransferError> {
        let retries = self.storage.retries;
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let location = object_path(key)?;
            let streamed = self.storage.streamed_uploads();
            let budget = streamed.map(|_| self.budget.clone());
            let (rx, reader) = read_hashing(path.to_path_buf(), size, self.etag_part_size(size), budget);
            let read = (rx, reader, path, size);
            let result = match (streamed, size < self.threshold) {
                (Some(s3), true) => self.stream_whole(s3, key, read, progress).await,
                (Some(s3), false) => self.stream_multipart(s3, key, read, progress).await,
                (None, true) => self.put_whole((location, key), read, progress).await,
                (None, false) => self.put_multipart((location, key), read, progress).await,
            };
            let (error, digest) = match result {
                Ok((digest, etag)) => match self.check_etag(key, size, &digest, etag.as_deref()) {
                    Ok(()) => return Ok((digest, etag)),
                    Err(e) => (e, None),
                },
                Err(failed) => failed,
            };
            // An answer lost after the store finished may come back as any error (a retried
            // CompleteMultipartUpload is refused: the upload no longer exists).
            if let Some(d) = &digest
                && let Some(etag) = self.stored_already(key, size, d).await
            {
                tracing::info!(key, "the store finished an upload whose answer was lost; the object is complete");
                return Ok((d.clone(), Some(etag)));
            }
            if !error.is_retryable() {
                return Err(error);
            }
            if !retries.allows(attempt + 1, started) {
                return Err(error);
            }
            attempt += 1;
            tracing::warn!(key, attempt, error = %error, "upload failed; uploading the file again");
            tokio::time::sleep(crate::store::Retries::backoff(attempt)).await;
        }
    }

    /// The ETag of `key` if the store holds it complete with the bytes of `d` (S3 checksum
    /// ETags only; elsewhere a finished upload cannot be told from another object).
    async fn stored_already(&self, key: &str, size: u64, d: &ContentDigest) -> Option<String> {
        if !self.check_etags {
            return None;
        }
        let meta = self.storage.head(key).await.ok().flatten()?;
        let etag = meta.e_tag?;
        (meta.size == size && self.check_etag(key, size, d, Some(&etag)).is_ok()).then_some(etag)
    }

    /// One PUT of a file below the multipart threshold: its chunks are collected, then sent.
    /// A failure comes with the digest when the whole file was read.
    async fn put_whole(
        &self,
        (location, key): (ObjectPath, &str),
        (mut rx, reader, path, size): Read<'_>,
        progress: &Progress,
    ) -> Result<(ContentDigest, Option<String>), Failed> {
        let mut chunks = Vec::new();
        while let Some(b) = rx.recv().await {
            chunks.push(b);
        }
        let digest = read_digest(reader.await, path, size).map_err(|e| (e, None))?;
        if let Some(l) = &self.limiter {
            l.acquire(size as usize).await;
        }
        let payload = chunks.into_iter().collect::<PutPayload>();
        let r = self.storage.store.put_opts(&location, payload, self.storage.put_options()).await;
        let r = r.map_err(|e| (StorageError::from_store("put", key, e).into(), Some(digest.clone())))?;
        progress.bytes_done.fetch_add(size, Ordering::Relaxed);
        Ok((digest, r.e_tag))
    }

    /// A multipart upload of `chunk`-byte parts (exactly: the manifest's multipart ETag is
    /// computed with that part size), at most `multipart_max_concurrency` in flight; aborted
    /// (never completed partial) when reading or a part fails. A failure comes with the digest
    /// when the whole file was read, takes back the progress it counted, and is the failure of
    /// the step that failed: the abort that follows is best effort, and its own error (e.g. 403
    /// or NoSuchUpload after a CompleteMultipartUpload whose answer was lost) never replaces it.
    async fn put_multipart(
        &self,
        (location, key): (ObjectPath, &str),
        (mut rx, reader, path, size): Read<'_>,
        progress: &Progress,
    ) -> Result<(ContentDigest, Option<String>), Failed> {
        let opts = PutMultipartOptions { attributes: self.storage.put_options().attributes, ..Default::default() };
        let mut upload = match self.storage.store.put_multipart_opts(&location, opts).await {
            Ok(u) => u,
            Err(e) => {
                drop(rx);
                let _ = reader.await;
                return Err((StorageError::from_store("start multipart upload", key, e).into(), None));
            }
        };
        let mut parts = tokio::task::JoinSet::new();
        let mut part = PartBuffer::new(self.chunk as usize);
        let (mut counted, mut failed) = (0u64, None);
        let in_flight = self.parts_in_flight.max(1);
        'read: while let Some(b) = rx.recv().await {
            if let Some(l) = &self.limiter {
                l.acquire(b.len()).await;
            }
            progress.bytes_done.fetch_add(b.len() as u64, Ordering::Relaxed);
            counted += b.len() as u64;
            for full in part.push(b) {
                while parts.len() >= in_flight {
                    if let Err(e) = joined(parts.join_next().await) {
                        failed = Some(StorageError::from_store("upload part", key, e));
                        break 'read;
                    }
                }
                parts.spawn(upload.put_part(full));
            }
        }
        drop(rx);
        let read = read_digest(reader.await, path, size);
        if failed.is_none() && read.is_ok() {
            if let Some(last) = part.finish() {
                parts.spawn(upload.put_part(last));
            }
            while let Some(r) = parts.join_next().await {
                if let Err(e) = joined(Some(r)) {
                    failed = Some(StorageError::from_store("upload part", key, e));
                    break;
                }
            }
        }
        let step = match (failed, read) {
            (None, Ok(d)) => match upload.complete().await {
                Ok(r) => return Ok((d, r.e_tag)),
                Err(e) => (StorageError::from_store("complete multipart upload", key, e).into(), Some(d)),
            },
            (Some(e), _) => (e.into(), None),
            (None, Err(e)) => (e, None),
        };
        // Never complete a partial object; abort to free the stored parts.
        parts.shutdown().await;
        if let Err(e) = upload.abort().await {
            tracing::debug!(key, error = %e, "aborting the multipart upload failed too");
        }
        progress.bytes_done.fetch_sub(counted, Ordering::Relaxed);
        Err(step)
    }

    /// The request body of a streamed upload: `rx`'s chunks, under the bandwidth cap.
    fn body(&self, rx: mpsc::Receiver<Bytes>) -> BodyStream {
        limited(rx, self.limiter.clone())
    }

    /// One streamed PutObject of a file below the multipart threshold: the body is read from
    /// the file as it is sent. A failure comes with the digest when the whole file was read.
    async fn stream_whole(
        &self,
        s3: &Arc<S3Stream>,
        key: &str,
        (rx, reader, path, size): Read<'_>,
        progress: &Progress,
    ) -> Result<(ContentDigest, Option<String>), Failed> {
        let job = self.segment_job(s3, key, path, Segment::Whole);
        let sent = self.send_segments(&job, rx, size, size.max(1), 1).await;
        let read = read_digest(reader.await, path, size);
        match (sent.failed, read) {
            (_, Err(e)) if !abandoned(&e) => Err((e, None)),
            (Some(e), Ok(d)) => Err((e.into(), Some(d))),
            (Some(e), Err(_)) => Err((e.into(), None)),
            (None, Err(e)) => Err((e, None)),
            (None, Ok(d)) => {
                progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                Ok((d, sent.etags.into_iter().flatten().next()))
            }
        }
    }

    /// A streamed multipart upload of `chunk`-byte parts (exactly: the manifest's multipart
    /// ETag is computed with that part size), aborted (never completed partial) when a part
    /// fails for good or reading fails.
    async fn stream_multipart(
        &self,
        s3: &Arc<S3Stream>,
        key: &str,
        (rx, reader, path, size): Read<'_>,
        progress: &Progress,
    ) -> Result<(ContentDigest, Option<String>), Failed> {
        let id = match s3.create_multipart(key).await {
            Ok(id) => id,
            Err(e) => {
                drop(rx);
                let _ = reader.await;
                return Err((e.into(), None));
            }
        };
        let job = self.segment_job(s3, key, path, Segment::Part { upload: id.clone() });
        let sent = self.send_segments(&job, rx, size, self.chunk, self.parts_in_flight).await;
        progress.bytes_done.fetch_add(sent.bytes, Ordering::Relaxed);
        let read = read_digest(reader.await, path, size);
        let step = match (sent.failed, read) {
            (_, Err(e)) if !abandoned(&e) => (e, None),
            (Some(e), _) => (e.into(), None),
            (None, Ok(d)) => {
                let etags: Vec<String> = sent.etags.into_iter().flatten().collect();
                match s3.complete(key, &id, etags).await {
                    Ok(etag) => return Ok((d, etag)),
                    Err(e) => (e.into(), Some(d)),
                }
            }
            (None, Err(e)) => (e, None),
        };
        if let Err(e) = s3.abort(key, &id).await {
            tracing::debug!(key, error = %e, "aborting the multipart upload failed too");
        }
        progress.bytes_done.fetch_sub(sent.bytes, Ordering::Relaxed);
        Err(step)
    }

    fn segment_job(&self, s3: &Arc<S3Stream>, key: &str, path: &std::path::Path, segment: Segment) -> SegmentJob {
        SegmentJob {
            s3: s3.clone(),
            key: key.to_string(),
            segment,
            path: path.to_path_buf(),
            retries: self.storage.retries,
            budget: self.budget.clone(),
            limiter: self.limiter.clone(),
        }
    }

    /// Sends a file's bytes as its reader yields them (`rx`, in order, hashed by the reader)
    /// in requests of `segment` bytes each (the last one shorter), up to `in_flight` requests
    /// at once: each request's body is fed straight from the reader while the earlier ones wait
    /// for their answers. A request that fails is sent again on its own, its bytes read again
    /// from the file, within the retry budget, while the reader goes on. Stops starting
    /// requests at the first one that fails for good.
    async fn send_segments(
        &self,
        job: &SegmentJob,
        mut rx: mpsc::Receiver<Bytes>,
        size: u64,
        segment: u64,
        in_flight: usize,
    ) -> Segments {
        let mut tasks = tokio::task::JoinSet::new();
        let mut out = Segments { etags: Vec::new(), bytes: 0, failed: None };
        let (mut offset, in_flight, segment) = (0u64, in_flight.max(1), segment.max(1));
        if size == 0 {
            // An empty object is one request with an empty body.
            let (tx, first) = mpsc::channel::<Bytes>(1);
            drop(tx);
            out.etags.push(None);
            tasks.spawn(job.clone().run(1, 0, 0, limited(first, None)));
        }
        // The segment being fed: where its chunks go (none once its first request failed: it
        // then reads its range again itself) and how many bytes it still takes.
        let mut current: Option<(Option<mpsc::Sender<Bytes>>, u64)> = None;
        'read: while let Some(mut b) = rx.recv().await {
            while !b.is_empty() {
                if current.is_none() {
                    while tasks.len() >= in_flight {
                        if let Err(e) = out.record(tasks.join_next().await) {
                            out.failed = Some(e);
                            break 'read;
                        }
                    }
                    let len = segment.min(size.saturating_sub(offset));
                    if len == 0 {
                        break 'read; // more bytes than scanned: the reader reports the change
                    }
                    let (tx, first) = mpsc::channel::<Bytes>(2);
                    out.etags.push(None);
                    tasks.spawn(job.clone().run(out.etags.len(), offset, len, self.body(first)));
                    current = Some((Some(tx), len));
                    offset += len;
                }
                let (tx, left) = current.as_mut().expect("a segment is open");
                let piece = if b.len() as u64 > *left { b.split_to(*left as usize) } else { std::mem::take(&mut b) };
                *left -= piece.len() as u64;
                if let Some(t) = tx
                    && t.send(piece).await.is_err()
                {
                    *tx = None;
                }
                if *left == 0 {
                    current = None;
                }
            }
        }
        let complete = current.is_none() && offset == size;
        drop(current);
        drop(rx);
        if out.failed.is_none() && complete {
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = out.record(Some(r)) {
                    out.failed = Some(e);
                    break;
                }
            }
        }
        // Requests of a failed or cut-short upload are dropped, not completed.
        tasks.shutdown().await;
        out
    }

    /// Checks the ETag the store reported against the bytes sent, where ETags are checksums.
    fn check_etag(
        &self,
        key: &str,
        size: u64,
        digest: &ContentDigest,
        etag: Option<&str>,
    ) -> Result<(), TransferError> {
        let Some(reported) = etag.filter(|_| self.check_etags) else { return Ok(()) };
        let reported = reported.trim_matches('"');
        if crate::format::digest::matches(reported, digest) {
            return Ok(());
        }
        let expected = match &digest.multipart {
            Some((_, e)) if size >= self.threshold => e.clone(),
            _ => digest.md5_hex(),
        };
        Err(TransferError::Corrupted { key: key.to_string(), reported: reported.to_string(), expected })
    }
}

/// What a streamed request sends: a whole object, or a part of a multipart upload.
#[derive(Clone)]
enum Segment {
    Whole,
    Part { upload: String },
}

/// What every request of one streamed upload shares.
#[derive(Clone)]
struct SegmentJob {
    s3: Arc<S3Stream>,
    key: String,
    segment: Segment,
    path: PathBuf,
    retries: crate::store::Retries,
    budget: budget::Budget,
    limiter: Option<Arc<RateLimiter>>,
}

/// A request's outcome: its number (from 1), its bytes and the ETag the store gave it.
type SegmentDone = (usize, u64, Result<Option<String>, StorageError>);

/// What [`Transfers::send_segments`] achieved.
struct Segments {
    /// ETags by segment (`None` where none came back).
    etags: Vec<Option<String>>,
    /// Bytes of the segments the store accepted.
    bytes: u64,
    /// The first request that failed for good.
    failed: Option<StorageError>,
}

impl Segments {
    /// Records a finished request; the error of one that failed for good.
    fn record(&mut self, joined: Option<Result<SegmentDone, tokio::task::JoinError>>) -> Result<(), StorageError> {
        match joined {
            None => Ok(()),
            Some(Ok((number, len, Ok(etag)))) => {
                self.etags[number - 1] = etag;
                self.bytes += len;
                Ok(())
            }
            Some(Ok((_, _, Err(e)))) => Err(e),
            Some(Err(e)) => Err(StorageError::Config(format!("an upload request task failed: {e}"))),
        }
    }
}

impl SegmentJob {
    /// Sends segment `number` (`len` bytes from `offset`): first with `first` (the bytes as
    /// the file is read in order), then, after a failure another try can mend, read again from
    /// the file, within the retry budget (as object_store retries its own requests).
    async fn run(self, number: usize, offset: u64, len: u64, first: BodyStream) -> SegmentDone {
        let started = std::time::Instant::now();
        let (mut body, mut attempt) = (Some(first), 0);
        loop {
            let b = match body.take() {
                Some(b) => b,
                None => limited(read_range(self.path.clone(), offset, len, self.budget.clone()), self.limiter.clone()),
            };
            let sent = match &self.segment {
                Segment::Whole => self.s3.put_object(&self.key, len, b).await,
                Segment::Part { upload } => self.s3.put_part(&self.key, upload, number, len, b).await.map(Some),
            };
            match sent {
                Ok(etag) => return (number, len, Ok(etag)),
                Err(e) if e.is_retryable() && self.retries.allows(attempt + 1, started) => {
                    attempt += 1;
                    tracing::debug!(key = self.key, number, attempt, error = %e, "sending again");
                    tokio::time::sleep(crate::store::Retries::backoff(attempt)).await;
                }
                Err(e) => return (number, len, Err(e)),
            }
        }
    }
}

/// `rx`'s chunks as a request body, under the bandwidth cap `limiter`.
fn limited(rx: mpsc::Receiver<Bytes>, limiter: Option<Arc<RateLimiter>>) -> BodyStream {
    use futures::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .then(move |b| {
            let limiter = limiter.clone();
            async move {
                if let Some(l) = &limiter {
                    l.acquire(b.len()).await;
                }
                Ok(b)
            }
        })
        .boxed()
}

/// A failed upload attempt: the error, and the digest of the file when it was read whole.
type Failed = (TransferError, Option<ContentDigest>);

/// The outcome of a part upload task.
fn joined(r: Option<Result<object_store::Result<()>, tokio::task::JoinError>>) -> object_store::Result<()> {
    match r {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(object_store::Error::Generic { store: "multipart", source: Box::new(e) }),
    }
}

/// Cuts a stream of chunks into parts of exactly `size` bytes (the last one shorter), without
/// copying: chunks are split where a part ends.
struct PartBuffer {
    size: usize,
    held: Vec<Bytes>,
    len: usize,
}

impl PartBuffer {
    fn new(size: usize) -> PartBuffer {
        PartBuffer { size: size.max(1), held: Vec::new(), len: 0 }
    }

    /// Adds `b`; returns the parts it completed.
    fn push(&mut self, mut b: Bytes) -> Vec<PutPayload> {
        let mut out = Vec::new();
        while self.len + b.len() >= self.size {
            let head = b.split_to(self.size - self.len);
            self.held.push(head);
            out.push(std::mem::take(&mut self.held).into_iter().collect::<PutPayload>());
            self.len = 0;
        }
        if !b.is_empty() {
            self.len += b.len();
            self.held.push(b);
        }
        out
    }

    /// The last, shorter part, if any bytes are left.
    fn finish(&mut self) -> Option<PutPayload> {
        let len = std::mem::take(&mut self.len);
        (len > 0).then(|| std::mem::take(&mut self.held).into_iter().collect::<PutPayload>())
    }
}

/// The file side of a streamed transfer (reading an upload, writing a download): the digest of
/// the bytes, or the error that stopped it.
type Reader = tokio::task::JoinHandle<std::io::Result<ContentDigest>>;

/// What an upload reads from: the chunks, the reader, the file and its scanned size.
type Read<'a> = (mpsc::Receiver<Bytes>, Reader, &'a std::path::Path, u64);

/// The digest of `path` as the reader saw it; the file must have been read whole at its
/// scanned `size`.
fn read_digest(
    joined: Result<std::io::Result<ContentDigest>, tokio::task::JoinError>,
    path: &std::path::Path,
    size: u64,
) -> Result<ContentDigest, TransferError> {
    let read = joined.map_err(|e| std::io::Error::other(e.to_string())).and_then(|r| r);
    let d = read.map_err(|source| TransferError::Read { path: path.to_path_buf(), source })?;
    if d.size != size {
        return Err(TransferError::Changed { path: path.to_path_buf(), expected: size, read: d.size });
    }
    Ok(d)
}

/// Reads `path` (expected `size` bytes) on the blocking pool, hashing each chunk (with the
/// multipart ETag of `part`) and sending it on; a file that grew since the scan must not be
/// uploaded truncated, so one more byte is hashed, and the size check fails.
fn read_hashing(
    path: PathBuf,
    size: u64,
    part: Option<u64>,
    budget: Option<budget::Budget>,
) -> (mpsc::Receiver<Bytes>, Reader) {
    let (tx, rx) = mpsc::channel::<Bytes>(if budget.is_some() { 2 } else { 4 });
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<ContentDigest> {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut h = Hasher::new(part);
        let mut left = size;
        let chunk = if budget.is_some() { STREAM_CHUNK } else { READ_CHUNK };
        // Chunks sized to what is left, read into fresh (not zero-filled) capacity.
        while left > 0 {
            let want = left.min(chunk as u64);
            let permit = budget.as_ref().map(|b| b.take_blocking(want as usize));
            let mut buf = Vec::with_capacity(want as usize);
            let n = (&mut f).take(want).read_to_end(&mut buf)?;
            if n == 0 {
                break; // shorter than scanned: reported as changed
            }
            left -= n as u64;
            h.update(&buf);
            let bytes = match permit {
                Some(p) => budget::Budget::wrap(buf, p),
                None => Bytes::from(buf),
            };
            if tx.blocking_send(bytes).is_err() {
                // The uploader gave up; its own error is what to report.
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, ABANDONED));
            }
        }
        if left == 0 && f.read(&mut [0u8; 1])? > 0 {
            h.update(&[0]);
        }
        Ok(h.finish())
    });
    (rx, reader)
}

/// The reader's error when the upload stopped taking its chunks.
const ABANDONED: &str = "the upload stopped reading the file";

/// Whether `e` is only the reader noticing that the upload gave up (the upload's own error is
/// the one to report).
fn abandoned(e: &TransferError) -> bool {
    matches!(e, TransferError::Read { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe && source.to_string() == ABANDONED)
}

/// Reads `len` bytes of `path` from `offset` on the blocking pool, in budgeted chunks, for a
/// part sent again; a shorter file ends the body early (and fails the request on its length).
fn read_range(path: PathBuf, offset: u64, len: u64, budget: budget::Budget) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(&path)?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        let mut left = len;
        while left > 0 {
            let want = left.min(STREAM_CHUNK as u64);
            let permit = budget.take_blocking(want as usize);
            let mut buf = Vec::with_capacity(want as usize);
            let n = (&mut f).take(want).read_to_end(&mut buf)?;
            if n == 0 {
                break;
            }
            left -= n as u64;
            if tx.blocking_send(budget::Budget::wrap(buf, permit)).is_err() {
                break;
            }
        }
        Ok(())
    });
    rx
}

/// Bytes of a download's body handed to its writer at once: the body comes in chunks of a few
/// KiB, and waking the writer thread for each cost more CPU than hashing them.
const WRITE_BATCH: usize = 256 << 10;

/// Writes the chunks it receives to `dest` (created or truncated, parent directories too) on
/// the blocking pool, hashing them: the whole MD5, or with `part` the multipart ETag of that
/// part size alone (a download is checked against the hash its manifest records, and a
/// recorded multipart ETag needs nothing else: half the hashing of a large file).
fn write_hashing(dest: PathBuf, part: Option<u64>) -> (mpsc::Sender<Vec<Bytes>>, Reader) {
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(4);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<ContentDigest> {
        use std::io::Write;
        let mut f = create_with_parents(&dest)?;
        let mut h = match part {
            Some(p) => Hasher::parts_only(p),
            None => Hasher::new(None),
        };
        while let Some(batch) = rx.blocking_recv() {
            write_batch(&batch, &mut h, |slices| f.write_vectored(slices))?;
        }
        Ok(h.finish())
    });
    (tx, writer)
}

/// Creates (or truncates) `dest`, and its missing parent directories.
fn create_with_parents(dest: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(dest)
}

/// Hashes a batch (up to [`WRITE_BATCH`] bytes of response chunks) and writes it with as few
/// vectored writes as `write` allows, without first copying it into a buffer; returns its
/// length.
fn write_batch(
    batch: &[Bytes],
    h: &mut Hasher,
    mut write: impl FnMut(&[std::io::IoSlice<'_>]) -> std::io::Result<usize>,
) -> std::io::Result<u64> {
    let mut slices = Vec::with_capacity(batch.len());
    for b in batch {
        h.update(b);
        slices.push(std::io::IoSlice::new(b));
    }
    let mut rest = &mut slices[..];
    let mut written = 0u64;
    while !rest.is_empty() {
        match write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n as u64;
                std::io::IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

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

/// The bytes a ranged GET wrote, and the MD5 of each of its parts.
type RangeWriter = tokio::task::JoinHandle<std::io::Result<(u64, Vec<[u8; 16]>)>>;

/// Writes the chunks of a ranged GET at `range` of `file` on the blocking pool, hashing each
/// `part` (the range starts on a part boundary); returns the MD5 of each part. More bytes than
/// the range holds are refused, fewer show in the object's size.
fn write_range(
    file: Arc<std::fs::File>,
    range: std::ops::Range<u64>,
    part: u64,
) -> (mpsc::Sender<Vec<Bytes>>, RangeWriter) {
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut h = Hasher::parts_only(part);
        let mut at = range.start;
        while let Some(batch) = rx.blocking_recv() {
            let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
            if at + len > range.end {
                return Err(std::io::Error::other(format!(
                    "the store sent more than the {} bytes of range {}..{}",
                    range.end - range.start,
                    range.start,
                    range.end
                )));
            }
            let mut pos = at;
            write_batch(&batch, &mut h, |slices| {
                let offset = nix::libc::off_t::try_from(pos).map_err(std::io::Error::other)?;
                let n = nix::sys::uio::pwritev(&*file, slices, offset)?;
                pos += n as u64;
                Ok(n)
            })?;
            at = pos;
        }
        Ok((at - range.start, h.finish_parts()))
    });
    (tx, writer)
}

impl Transfers {
    /// Uploads to the `local` provider, with a transfer slot held by the caller: kernel copies
    /// into the bucket directory, in one blocking task.
    async fn upload_local(
        &self,
        local: &LocalBucket,
        files: Vec<Upload>,
        progress: &Arc<Progress>,
    ) -> Result<Vec<ContentDigest>, TransferError> {
        let mut jobs = Vec::with_capacity(files.len());
        for f in files {
            let dest = local.file(&f.key)?;
            jobs.push(((self.etag_part_size(f.size), f), dest));
        }
        self.local_batch(jobs, progress, |(part, f), dest, prog| {
            let digest = match local::put_copy(&f.path, f.size, dest, f.publish, part, &prog.bytes_done) {
                Ok(d) => d,
                Err(CopyError::Read(source)) => return Err(TransferError::Read { path: f.path, source }),
                Err(CopyError::Write(e)) => return Err(StorageError::local_io("put", &f.key, dest, e).into()),
                Err(CopyError::Size(read)) => {
                    return Err(TransferError::Changed { path: f.path, expected: f.size, read });
                }
            };
            if digest.size != f.size {
                return Err(TransferError::Changed { path: f.path, expected: f.size, read: digest.size });
            }
            prog.bytes_uploaded.fetch_add(f.size, Ordering::Relaxed);
            prog.files_uploaded.fetch_add(1, Ordering::Relaxed);
            Ok(digest)
        })
        .await
    }

    /// Downloads from the `local` provider, with a transfer slot held by the caller: kernel
    /// copies out of the bucket directory, in one blocking task.
    async fn download_local(
        &self,
        local: &LocalBucket,
        files: Vec<Download>,
        progress: &Arc<Progress>,
    ) -> Result<Vec<ContentDigest>, TransferError> {
        let mut jobs = Vec::with_capacity(files.len());
        for f in files {
            let src = local.file(&f.key)?;
            let dest = f.dest.clone();
            jobs.push(((f, src), dest));
        }
        self.local_batch(jobs, progress, |(f, src), dest, prog| {
            local::get_copy(&src, dest, f.size, f.part, &prog.bytes_done).map_err(|e| match e {
                CopyError::Read(e) => StorageError::local_io("get", &f.key, &src, e).into(),
                CopyError::Write(source) => TransferError::Write { path: f.dest, source },
                CopyError::Size(stored) => TransferError::Size { key: f.key, recorded: f.size, stored: Some(stored) },
            })
        })
        .await
    }

    /// Runs `copy` on each job (with the file it writes) in order, in one blocking task,
    /// stopping at the first failure; what was written counts towards the early write-back.
    async fn local_batch<J: Send + 'static>(
        &self,
        jobs: Vec<(J, PathBuf)>,
        progress: &Arc<Progress>,
        copy: impl Fn(J, &std::path::Path, &Progress) -> Result<ContentDigest, TransferError> + Send + 'static,
    ) -> Result<Vec<ContentDigest>, TransferError> {
        let Some(last) = jobs.last().map(|j| j.1.clone()) else { return Ok(Vec::new()) };
        let first = jobs[0].1.clone();
        let prog = progress.clone();
        let copied = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(jobs.len());
            for (job, dest) in jobs {
                match copy(job, &dest, &prog) {
                    Ok(d) => out.push(d),
                    Err(e) => return (out, Err(e)),
                }
            }
            (out, Ok(()))
        });
        let (digests, result) = copied
            .await
            .map_err(|e| TransferError::Write { path: first, source: std::io::Error::other(e.to_string()) })?;
        self.writeback.wrote(&last, digests.iter().map(|d| d.size).sum());
        result.map(|()| digests)
    }

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
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
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

#[cfg(test)]
mod tests {
    use super::batch_ranges;

    #[test]
    fn parts_are_exactly_the_part_size() {
        let mut p = super::PartBuffer::new(4);
        let sizes = |v: Vec<object_store::PutPayload>| v.iter().map(|p| p.content_length()).collect::<Vec<_>>();
        assert_eq!(sizes(p.push(bytes::Bytes::from_static(b"abc"))), Vec::<usize>::new());
        assert_eq!(sizes(p.push(bytes::Bytes::from_static(b"defghij"))), [4, 4]);
        assert_eq!(p.finish().map(|l| l.content_length()), Some(2));
        assert!(p.finish().is_none());
        assert_eq!(sizes(p.push(bytes::Bytes::from_static(b"abcdefgh"))), [4, 4], "a full last part is sent at once");
        assert!(p.finish().is_none());
        let mut q = super::PartBuffer::new(3);
        let parts = q.push(bytes::Bytes::from_static(b"abcdef"));
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().flat_map(|b| b.to_vec())).collect();
        assert_eq!(joined, b"abcdef");
        assert!(q.finish().is_none());
    }

    #[test]
    fn batches_respect_file_and_byte_limits() {
        assert_eq!(batch_ranges([1, 2, 3, 4, 5], (2, 6)), [0..2, 2..3, 3..4, 4..5]);
        assert_eq!(batch_ranges([100, 1, 1], (2, 6)), [0..1, 1..3], "a large file alone");
        assert_eq!(batch_ranges([7], (2, 6)), vec![0..1; 1]);
        assert!(batch_ranges([], (2, 6)).is_empty());
        assert_eq!(batch_ranges([1, 1, 1], (1, u64::MAX)), [0..1, 1..2, 2..3]);
        assert_eq!(batch_ranges([1; 5], (64, 0)), [0..1, 1..2, 2..3, 3..4, 4..5], "at least one file each");
    }
}
