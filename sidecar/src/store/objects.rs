//! Object operations on the bucket: whole small objects, metadata, listings (resumed after a
//! failed page), sizes, folders and deletes, each retried as a whole within the budget.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use super::{Attempts, Retries, Storage, StorageError, object_path};
use crate::config::Provider;

impl Storage {
    /// Writes a small object in one request (retried as a whole: a PUT of the same bytes is
    /// idempotent).
    pub async fn put_bytes(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StorageError> {
        let path = object_path(key)?;
        let bytes = bytes.into();
        self.retries
            .run("put", || async {
                let payload = PutPayload::from_bytes(bytes.clone());
                self.store
                    .put_opts(&path, payload, self.put_options())
                    .await
                    .map_err(|e| StorageError::from_store("put", key, e))
            })
            .await?;
        Ok(())
    }

    /// Reads a whole (small) object; a body cut midway is read again.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = object_path(key)?;
        self.retries
            .run("get", || async {
                let r = self.store.get(&path).await.map_err(|e| StorageError::from_store("get", key, e))?;
                r.bytes().await.map_err(|e| StorageError::from_store("get", key, e))
            })
            .await
    }

    /// Reads a whole object if it exists.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        match self.get_bytes(key).await {
            Ok(b) => Ok(Some(b)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Metadata of an object, `None` when it does not exist. Any other error is an error
    /// (Medusa's `_stat_blob` turned 403/5xx into "absent", contract §10.18).
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = object_path(key)?;
        self.retries
            .run("head", || async {
                match self.store.head(&path).await {
                    Ok(m) => Ok(Some(m)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StorageError::from_store("head", key, e)),
                }
            })
            .await
    }

    /// Lists every object below `prefix` (which should end with `/`), page by page. A page that
    /// fails (a body cut midway, an outage) is asked for again, resuming after the last key
    /// seen, within the retry budget; `local` listings are not in key order and are not resumed.
    pub fn list(&self, prefix: &str) -> impl futures::Stream<Item = Result<ObjectMeta, StorageError>> + Send + 'static {
        let owned = prefix.to_string();
        let trimmed = prefix.trim_end_matches('/');
        let at = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        let retries = if self.local.is_some() { Retries::NONE } else { self.retries };
        let state = Listing {
            store: self.store.clone(),
            inner: self.store.list(at.as_ref()),
            at,
            prefix: owned,
            last: None,
            attempts: retries.start(),
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                match s.inner.next().await {
                    None => return None,
                    Some(Ok(meta)) => {
                        s.last = Some(meta.location.clone());
                        return Some((Ok(meta), s));
                    }
                    Some(Err(e)) => {
                        let e = StorageError::from_store("list", &s.prefix, e);
                        if let Some(retry) = e.is_retryable().then(|| s.attempts.retry()).flatten() {
                            tracing::debug!(error = %e, attempt = retry.number(), "retrying a listing page");
                            retry.wait().await;
                            s.inner = match &s.last {
                                Some(last) => s.store.list_with_offset(s.at.as_ref(), last),
                                None => s.store.list(s.at.as_ref()),
                            };
                            continue;
                        }
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }

    /// The sizes of many objects (`None` for an absent one), in the order of `keys`: for
    /// `local` one trip to the blocking pool (a `stat` each), else HEADs, 16 at once.
    pub async fn sizes(&self, keys: Vec<String>) -> Result<Vec<Option<u64>>, StorageError> {
        if let Some(local) = &self.local {
            let local = local.clone();
            return crate::fsutil::blocking(move || {
                let mut out = Vec::with_capacity(keys.len());
                for key in &keys {
                    let file = local.file(key).map_err(std::io::Error::other)?;
                    match std::fs::metadata(&file) {
                        Ok(m) if m.is_file() => out.push(Some(m.len())),
                        Ok(_) => out.push(None),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(None),
                        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| StorageError::local_io("head", "many objects", &self.local.as_ref().expect("local").root, e));
        }
        futures::stream::iter(keys)
            .map(|key| async move { Ok(self.head(&key).await?.map(|m| m.size)) })
            .buffered(16)
            .try_collect()
            .await
    }

    /// The names of the folders directly below `prefix` (which should end with `/`): one
    /// listing with a delimiter, asked for again within the retry budget. A missing prefix has
    /// none.
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let at = ObjectPath::from(prefix.trim_end_matches('/'));
        self.retries
            .run("list", || async {
                match self.store.list_with_delimiter(Some(&at)).await {
                    Ok(r) => Ok(r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect()),
                    Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(StorageError::from_store("list", prefix, e)),
                }
            })
            .await
    }

    /// Folds the key of every object below `prefix` (which should end with `/`), in no order,
    /// into `init` with `f`. For `local` the bucket directory is walked on the blocking pool
    /// without a `stat` per file: object_store's listing takes two per file for sizes and times
    /// that a caller of this does not need (three quarters of a warm GetBackups over 72,000
    /// index entries); and keys are folded as they are found, not collected (a list of every
    /// key, allocated on a blocking thread, left 40 MiB of fragmented heap behind). The same
    /// files are listed: symlinks followed, broken ones and staging names (`name#<digits>`)
    /// left out; names that are no valid key are skipped instead of failing the listing.
    pub async fn fold_keys<T, F>(&self, prefix: &str, init: T, mut f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnMut(&mut T, &str) + Send + 'static,
    {
        let Some(local) = &self.local else {
            let mut acc = init;
            let mut listing = std::pin::pin!(self.list(prefix));
            while let Some(meta) = listing.try_next().await? {
                f(&mut acc, meta.location.as_ref());
            }
            return Ok(acc);
        };
        let root = local.root.clone();
        let (key_prefix, dir) = (prefix.to_string(), root.join(prefix.trim_end_matches('/')));
        let walked = crate::fsutil::blocking(move || {
            let mut acc = init;
            let mut key = String::new();
            for entry in walkdir::WalkDir::new(&dir).follow_links(true) {
                let entry = match entry {
                    Ok(e) => e,
                    // A missing prefix, a broken symlink, a file removed meanwhile: not listed.
                    Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => continue,
                    Err(e) => return Err(std::io::Error::other(e)),
                };
                if entry.file_type().is_dir() {
                    continue;
                }
                let Ok(rel) = entry.path().strip_prefix(&root) else { continue };
                key.clear();
                for (i, part) in rel.components().enumerate() {
                    let Some(part) = part.as_os_str().to_str() else {
                        key.clear();
                        break;
                    };
                    if i > 0 {
                        key.push('/');
                    }
                    key.push_str(part);
                }
                let name = key.rsplit('/').next().unwrap_or_default();
                let staged = name
                    .split_once('#')
                    .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()));
                if !key.is_empty() && !staged && ObjectPath::parse(&key).is_ok() {
                    f(&mut acc, &key);
                }
            }
            Ok(acc)
        })
        .await;
        walked.map_err(|e| StorageError::local_io("list", &key_prefix, &local.root, e))
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = object_path(key)?;
        self.retries
            .run("delete", || async {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(StorageError::from_store("delete", key, e)),
                }
            })
            .await
    }

    /// The hash to record in a manifest for content `d` whose upload returned `etag`.
    pub fn manifest_hash(&self, d: &crate::format::digest::ContentDigest, etag: Option<&str>) -> String {
        match &self.provider {
            p if p.is_s3() => etag.map(|e| e.trim_matches('"').to_string()).unwrap_or_else(|| d.md5_hex()),
            Provider::Local => d.md5_hex(),
            _ => d.md5_base64(),
        }
    }

    /// The hash a listing tells about an object, when the provider's listing carries one that
    /// can be compared with a local digest (S3 ETags without server-side encryption).
    pub fn listing_hash(&self, meta: &ObjectMeta) -> Option<String> {
        if self.checksum_etags() { meta.e_tag.as_ref().map(|e| e.trim_matches('"').to_string()) } else { None }
    }
}

/// The state of a resumable listing ([`Storage::list`]).
struct Listing {
    store: Arc<dyn ObjectStore>,
    inner: futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>,
    at: Option<ObjectPath>,
    prefix: String,
    last: Option<ObjectPath>,
    attempts: Attempts,
    done: bool,
}
