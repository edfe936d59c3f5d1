//! Uploads: files sent to the store whole or in parts, hashed as they are read, each upload
//! checked against the ETag the store reports where ETags are checksums.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{PutMultipartOptions, PutPayload};

use super::file_io::{Read, read_digest, read_hashing};
use super::{Progress, TransferError, Transfers, Upload, Uploaded};
use crate::format::digest::ContentDigest;
use crate::store::local::Publish;
use crate::store::{StorageError, object_path};

impl Transfers {
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
        let mut attempts = self.storage.retries.start();
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
            let Some(retry) = error.is_retryable().then(|| attempts.retry()).flatten() else { return Err(error) };
            tracing::warn!(key, attempt = retry.number(), error = %error, "upload failed; uploading the file again");
            retry.wait().await;
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

/// A failed upload attempt: the error, and the digest of the file when it was read whole.
pub(super) type Failed = (TransferError, Option<ContentDigest>);

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

#[cfg(test)]
mod tests {
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
}
