//! Moving bytes: each file is read once, on the blocking pool, hashed in the same pass and
//! streamed to the store; uploads are bounded by `concurrent_transfers`; S3 transfers share one
//! bandwidth cap of `transfer_max_bandwidth` per transfer (Medusa's meaning). On S3 the bytes
//! are streamed from the file into the requests ([`crate::store::s3stream`]), within one memory
//! budget ([`budget`]) whatever the SSTable sizes and multipart settings; other object stores
//! buffer one part (8 MiB) per transfer.
//! For `local`, data files bypass the store's streaming API: [`crate::store::local`] copies them
//! within the kernel to exactly the files the store would write (everything else, listings,
//! metadata and deletes, goes through the store).
//!
//! Files: this one holds [`Transfers`], its settings and the types callers pass; [`upload`]
//! sends files whole or as multipart uploads, [`upload_streamed`] streams them into S3
//! requests, [`download`] fetches them (whole or by ranged GETs), [`local_copy`] is the `local`
//! provider's kernel copies, and [`file_io`] the reading, writing and hashing on the blocking
//! pool that all of them share.

pub mod budget;
mod download;
mod file_io;
mod local_copy;
pub mod progress;
pub mod rate;
mod upload;
mod upload_streamed;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use progress::Progress;
use rate::RateLimiter;

use crate::config::StorageConfig;
use crate::format::digest::ContentDigest;
use crate::store::local::{self, Publish};
use crate::store::{LocalBucket, Storage, StorageError};

const READ_CHUNK: usize = 1 << 20;
/// Chunk of a streamed S3 upload: small enough that many streams fit in [`upload_budget`].
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

/// Objects up to this size count as small for [`Transfers`]' download slots.
pub const SMALL_OBJECT: u64 = 1 << 20;
/// How many small-object downloads may be in flight per `concurrent_transfers`.
pub const SMALL_FANOUT: usize = 4;

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

/// Moves files between the local disk and one store: uploads ([`upload`], [`upload_streamed`]),
/// downloads ([`download`]) and the `local` provider's copies ([`local_copy`]), all within
/// `concurrent_transfers` slots.
pub struct Transfers {
    storage: Storage,
    slots: Arc<Semaphore>,
    /// Downloads of small objects from an object store take these instead of [`Self::slots`]:
    /// [`SMALL_FANOUT`] times as many. Such a GET is mostly waiting for the store's first byte
    /// (tens of milliseconds in a cloud), not moving bytes, so `concurrent_transfers` of them
    /// in flight would leave the link idle; each holds only a small buffer.
    small_slots: Arc<Semaphore>,
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
            small_slots: Arc::new(Semaphore::new(cfg.concurrent_transfers.max(1) * SMALL_FANOUT)),
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
}

#[cfg(test)]
mod tests {
    use super::batch_ranges;

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
