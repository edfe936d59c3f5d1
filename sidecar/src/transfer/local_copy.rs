//! The `local` provider's transfers: kernel copies to and from the bucket directory, in
//! batches run on the blocking pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Download, Progress, TransferError, Transfers, Upload};
use crate::format::digest::ContentDigest;
use crate::store::local::{self, CopyError};
use crate::store::{LocalBucket, StorageError};

impl Transfers {
    /// Uploads to the `local` provider, with a transfer slot held by the caller: kernel copies
    /// into the bucket directory, in one blocking task.
    pub(super) async fn upload_local(
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
    pub(super) async fn download_local(
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
}
