//! The file side of a transfer: reading a file on the blocking pool and hashing it as it
//! goes out, and writing a download (whole, or a range at its offset) while hashing it.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{READ_CHUNK, STREAM_CHUNK, TransferError, budget};
use crate::format::digest::{ContentDigest, Hasher};

/// The file side of a streamed transfer (reading an upload, writing a download): the digest of
/// the bytes, or the error that stopped it.
pub(super) type Reader = tokio::task::JoinHandle<std::io::Result<ContentDigest>>;

/// What an upload reads from: the chunks, the reader, the file and its scanned size.
pub(super) type Read<'a> = (mpsc::Receiver<Bytes>, Reader, &'a std::path::Path, u64);

/// The digest of `path` as the reader saw it; the file must have been read whole at its
/// scanned `size`.
pub(super) fn read_digest(
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
pub(super) fn read_hashing(
    path: PathBuf,
    size: u64,
    part: Option<u64>,
    budget: Option<budget::Budget>,
) -> (mpsc::Receiver<Bytes>, Reader) {
    let (tx, rx) = mpsc::channel::<Bytes>(if budget.is_some() { 2 } else { 4 });
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<ContentDigest> {
        use std::io::Read;
        // What the upload reads in from disk leaves the cache again (the node's pages stay).
        let mut f = crate::fsutil::GentleReads::at(std::fs::File::open(&path)?, 0);
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
pub(super) fn abandoned(e: &TransferError) -> bool {
    matches!(e, TransferError::Read { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe && source.to_string() == ABANDONED)
}

/// Reads `len` bytes of `path` from `offset` on the blocking pool, in budgeted chunks, for a
/// part sent again; a shorter file ends the body early (and fails the request on its length).
pub(super) fn read_range(path: PathBuf, offset: u64, len: u64, budget: budget::Budget) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Read;
        let mut f = crate::fsutil::GentleReads::at(std::fs::File::open(&path)?, offset);
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
pub(super) const WRITE_BATCH: usize = 256 << 10;

/// Writes the chunks it receives to `dest` (created or truncated, parent directories too) on
/// the blocking pool, hashing them: the whole MD5, or with `part` the multipart ETag of that
/// part size alone (a download is checked against the hash its manifest records, and a
/// recorded multipart ETag needs nothing else: half the hashing of a large file).
pub(super) fn write_hashing(dest: PathBuf, part: Option<u64>) -> (mpsc::Sender<Vec<Bytes>>, Reader) {
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
pub(super) fn create_with_parents(dest: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(dest)
}

/// Hashes a batch (up to [`WRITE_BATCH`] bytes of response chunks) and writes it with as few
/// vectored writes as `write` allows, without first copying it into a buffer; returns its
/// length.
pub(super) fn write_batch(
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

/// The bytes a ranged GET wrote, and the MD5 of each of its parts.
pub(super) type RangeWriter = tokio::task::JoinHandle<std::io::Result<(u64, Vec<[u8; 16]>)>>;

/// Writes the chunks of a ranged GET at `range` of `file` on the blocking pool, hashing each
/// `part` (the range starts on a part boundary); returns the MD5 of each part. More bytes than
/// the range holds are refused, fewer show in the object's size.
pub(super) fn write_range(
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
