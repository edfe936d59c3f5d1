//! Streamed S3 uploads: the request bodies are fed from the file as it is read
//! ([`crate::store::s3stream`]), each request retried on its own by reading its range again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::file_io::{Read, abandoned, read_digest, read_range};
use super::rate::RateLimiter;
use super::upload::Failed;
use super::{Progress, Transfers, budget};
use crate::format::digest::ContentDigest;
use crate::store::StorageError;
use crate::store::s3stream::{BodyStream, S3Stream};

impl Transfers {
    /// The request body of a streamed upload: `rx`'s chunks, under the bandwidth cap.
    fn body(&self, rx: mpsc::Receiver<Bytes>) -> BodyStream {
        limited(rx, self.limiter.clone())
    }

    /// One streamed PutObject of a file below the multipart threshold: the body is read from
    /// the file as it is sent. A failure comes with the digest when the whole file was read.
    pub(super) async fn stream_whole(
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
    pub(super) async fn stream_multipart(
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
        let mut attempts = self.retries.start();
        let mut body = Some(first);
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
                Err(e) => {
                    let Some(retry) = e.is_retryable().then(|| attempts.retry()).flatten() else {
                        return (number, len, Err(e));
                    };
                    tracing::debug!(key = self.key, number, attempt = retry.number(), error = %e, "sending again");
                    retry.wait().await;
                }
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
