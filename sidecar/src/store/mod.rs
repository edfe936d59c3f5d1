//! The storage contract: one `Arc<dyn ObjectStore>` built once from `[storage]`, plus the few
//! whole-object helpers the bucket layout needs. Backend choice happens here and nowhere else.
//!
//! Files: this one holds [`Storage`] and its accessors; [`build`] makes it from `[storage]`
//! (backends, credentials, client options, the `local` bucket directory), [`objects`] holds the
//! object operations (small objects, metadata, listings, sizes, folders, deletes), [`error`]
//! classifies failures, and [`retry`] is the one retry engine every retrying loop uses (its doc
//! says how it sits on top of the store client's own retries). [`local`] is the `local`
//! provider's kernel copies and [`s3stream`] the streamed S3 uploads.

mod build;
mod error;
pub mod local;
mod objects;
mod region;
mod retry;
pub mod s3stream;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutOptions};

use crate::config::Provider;
use crate::format::layout::Layout;

use build::storage_class_attributes;
pub use build::{create_local_bucket, read_aws_credentials, read_timeout};
use error::count_error;
pub use error::{StorageError, error_counts};
pub use retry::{Attempts, Retries, Retry};

/// The bucket: the object store, the key layout and the provider's conventions.
#[derive(Clone)]
pub struct Storage {
    /// The backend.
    pub store: Arc<dyn ObjectStore>,
    /// Key naming for this prefix.
    pub layout: Layout,
    /// Which backend (decides the hash format recorded in manifests).
    pub provider: Provider,
    /// Server-side encryption is on: S3 ETags are then not MD5s.
    pub encrypted: bool,
    /// Storage class / tier for uploads.
    pub storage_class: Option<String>,
    /// The `local` provider's bucket directory: the fast path of [`Storage::local_fast_path`].
    local: Option<LocalBucket>,
    /// medusa-rs' own retries of whole operations, on top of the store's.
    pub retries: Retries,
    /// S3: uploads streamed from the file (see [`s3stream`]).
    stream: Option<Arc<s3stream::S3Stream>>,
}

/// The bucket directory of the `local` provider, where data files are copied by the kernel
/// instead of streamed through the store (see [`local`]).
#[derive(Debug, Clone)]
pub struct LocalBucket {
    root: PathBuf,
    fs: Arc<LocalFileSystem>,
}

impl LocalBucket {
    /// The file that holds the object `key` (what the store itself would read or write).
    pub fn file(&self, key: &str) -> Result<PathBuf, StorageError> {
        self.fs
            .path_to_filesystem(&object_path(key)?)
            .map_err(|e| StorageError::Config(format!("invalid object key {key:?}: {e}")))
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("store", &self.store.to_string()).field("layout", &self.layout).finish()
    }
}

impl Storage {
    /// A bucket over any object store, without the `local` fast path, server-side encryption,
    /// storage class or retries of our own: for wrappers around a store (tests inject faults or
    /// a simulated clock, and see each one).
    pub fn over(store: Arc<dyn ObjectStore>, layout: Layout, provider: Provider) -> Storage {
        Storage {
            store,
            layout,
            provider,
            encrypted: false,
            storage_class: None,
            local: None,
            retries: Retries::NONE,
            stream: None,
        }
    }

    /// S3's streamed uploads, when this store has them.
    pub fn streamed_uploads(&self) -> Option<&Arc<s3stream::S3Stream>> {
        self.stream.as_ref()
    }

    /// The `local` provider's bucket directory, where transfers copy files directly; `None`
    /// for object stores.
    pub fn local_fast_path(&self) -> Option<&LocalBucket> {
        self.local.as_ref()
    }

    /// Whether uploads answer with S3 ETags that are checksums of the content (MD5, or the
    /// multipart form for multipart uploads) and that manifests record: S3 without server-side
    /// encryption. Transfers then check each upload's ETag and compute the multipart form.
    pub fn checksum_etags(&self) -> bool {
        self.provider.is_s3() && !self.encrypted
    }

    /// Whether large uploads are multipart uploads whose ETag manifests record as such (S3):
    /// their part size is then `multipart_chunksize` and files from
    /// `multi_part_upload_threshold` on go multipart.
    pub fn multipart_etags(&self) -> bool {
        self.provider.is_s3()
    }

    /// For `local`: flushes everything written to the bucket's filesystem to disk (one `syncfs`
    /// instead of an fsync per object). Object stores are durable on their own.
    pub async fn sync_local(&self) -> Result<(), StorageError> {
        let Some(root) = self.local.as_ref().map(|l| l.root.clone()) else { return Ok(()) };
        let r = crate::fsutil::blocking(move || crate::fsutil::syncfs(&root)).await;
        r.map_err(|e| StorageError::Config(format!("flushing the local bucket to disk: {e}")))
    }

    /// Options for every upload (storage class).
    pub fn put_options(&self) -> PutOptions {
        PutOptions { attributes: storage_class_attributes(self.storage_class.as_deref()), ..Default::default() }
    }
}

/// A validated object path.
pub fn object_path(key: &str) -> Result<ObjectPath, StorageError> {
    ObjectPath::parse(key).map_err(|e| StorageError::Config(format!("invalid object key {key:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::config::Config;
    use crate::config::StorageConfig;

    fn cfg(text: &str) -> StorageConfig {
        Config::parse(text, "t").unwrap().storage
    }

    #[test]
    fn aws_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = S\n[other]\naws_access_key_id = B\naws_secret_access_key = T\naws_session_token = X\n";
        assert_eq!(read_aws_credentials(text, "default"), Some(("A".into(), "S".into(), None)));
        assert_eq!(read_aws_credentials(text, "other"), Some(("B".into(), "T".into(), Some("X".into()))));
        assert_eq!(read_aws_credentials(text, "missing"), None);
    }

    /// `fold_keys` on `local` lists what object_store's own listing lists, without its stats.
    #[tokio::test]
    async fn local_list_keys_matches_the_store_listing() {
        let base = std::env::temp_dir().join(format!("medusa-list-{}", uuid::Uuid::new_v4()));
        let text = format!("[storage]\nstorage_provider = local\nbucket_name = b\nbase_path = {}\n", base.display());
        let root = base.join("b");
        std::fs::create_dir_all(&root).unwrap();
        let s = Storage::from_config(&cfg(&text)).unwrap();
        for f in ["p/index/a/tokenmap_n1.json", "p/index/a/x#12", "p/index/a/y#ab", "p/index/b/c/d", "p/other/e"] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("p/index/empty")).unwrap();
        std::os::unix::fs::symlink(root.join("p/other/e"), root.join("p/index/a/link")).unwrap();
        std::os::unix::fs::symlink(root.join("p/nowhere"), root.join("p/index/a/broken")).unwrap();
        std::os::unix::fs::symlink(root.join("p/other"), root.join("p/index/dirlink")).unwrap();
        let keys = |prefix: &'static str| s.fold_keys(prefix, Vec::new(), |v: &mut Vec<String>, k| v.push(k.into()));
        let mut fast = keys("p/index/").await.unwrap();
        fast.sort();
        let mut slow: Vec<String> = s.list("p/index/").map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        slow.sort();
        assert_eq!(fast, slow);
        assert_eq!(
            fast,
            ["p/index/a/link", "p/index/a/tokenmap_n1.json", "p/index/a/y#ab", "p/index/b/c/d", "p/index/dirlink/e"]
        );
        assert!(keys("p/absent/").await.unwrap().is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A `local` bucket is opened, never made, except by the sidecar's `create_local_bucket`,
    /// which makes the bucket directory and never `base_path`.
    #[test]
    fn local_directories_are_not_invented() {
        let base = std::env::temp_dir().join(format!("medusa-local-{}", uuid::Uuid::new_v4()));
        let text = format!("[storage]\nstorage_provider = local\nbucket_name = bkt\nbase_path = {}\n", base.display());
        let c = cfg(&text);
        for e in [Storage::from_config(&c).err().unwrap(), create_local_bucket(&c).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains(&format!("[storage] base_path = {}", base.display())) && e.contains("create it"), "{e}");
        }
        assert!(!base.exists());
        std::fs::create_dir(&base).unwrap();
        let e = Storage::from_config(&c).err().unwrap().to_string();
        assert!(e.contains("[storage] bucket_name = bkt: no bucket directory"), "{e}");
        assert!(!base.join("bkt").exists());
        create_local_bucket(&c).unwrap();
        create_local_bucket(&c).unwrap();
        Storage::from_config(&c).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn missing_key_file_is_named() {
        let e = Storage::from_config(&cfg(
            "[storage]\nstorage_provider = s3\nbucket_name = bucket\nkey_file = /nonexistent/creds\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/creds"), "{e}");
        let e = Storage::from_config(&cfg(
            "[storage]\nstorage_provider = azure_blobs\nbucket_name = bucket\nkey_file = /nonexistent/k.json\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("key_file"), "{e}");
    }

    /// GCS cannot be emulated on this machine (object_store speaks GCS's XML API, which the only
    /// available emulator lacks), so this goes as far as possible without a server: the store is
    /// built from a service-account key file, and a request to a closed endpoint is reported as a
    /// retryable outage naming the object.
    #[tokio::test]
    async fn gcs_configuration_path_without_a_server() {
        let dir = std::env::temp_dir().join(format!("medusa-gcs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("sa.json");
        std::fs::write(&key, r#"{"private_key":"unused","private_key_id":"unused","client_email":"medusa@example.invalid","disable_oauth":true}"#).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = cfg(&format!(
            "[storage]\nstorage_provider = google_storage\nbucket_name = medusa\nprefix = demo\nkey_file = {}\nendpoint = http://127.0.0.1:{port}\nmax_retries = 0\nretry_timeout = 1\n",
            key.display()
        ));
        let s = Storage::from_config(&c).unwrap();
        assert_eq!(s.provider, Provider::GoogleStorage);
        assert_eq!(s.layout.root(), "demo/");
        let e = s.head("demo/n/b/meta/schema.cql").await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("demo/n/b/meta/schema.cql"), "{e}");
        // The recorded hash format for GCS is base64 MD5 (Medusa's md5Hash).
        let mut h = crate::format::digest::Hasher::new(None);
        h.update(b"abc");
        assert_eq!(s.manifest_hash(&h.finish(), Some("\"etag\"")), "kAFQmDzST7DWlj99KOF/cg==");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
