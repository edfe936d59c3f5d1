//! Streamed uploads to S3: PutObject and UploadPart requests whose bodies are read from the file
//! while they are sent, so that memory does not grow with `multi_part_upload_threshold` or
//! `multipart_chunksize` (object_store's put APIs take a whole payload in memory, which with the
//! operator's 100 MiB threshold and 50 MiB parts made memory grow with SSTable sizes).
//!
//! object_store still does everything else for these requests: the object's URL (path or
//! virtual-hosted style, key encoding), credentials and their refresh (key file, environment,
//! web identity, instance metadata), SigV4 signing ([`AwsAuthorizer`]), and the
//! Create/Complete/AbortMultipartUpload requests. The payload is signed as `UNSIGNED-PAYLOAD`
//! (hashing it with SHA-256 first would mean reading every file twice); the bytes are checked
//! instead by the MD5 ETag the store answers with, against the MD5 computed while reading.
//! Server-side encryption with customer keys (SSE-C) needs its headers on every part and is
//! left to object_store's buffered path (see [`S3Stream::for_config`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use object_store::PutMultipartOptions;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;

use super::{StorageError, object_path};
use crate::config::StorageConfig;

/// The request body of a streamed upload: chunks as the file is read, ending early (and so
/// failing the request on its Content-Length) when reading fails.
pub type BodyStream = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Streamed uploads to one S3 bucket.
#[derive(Debug)]
pub struct S3Stream {
    s3: Arc<AmazonS3>,
    client: reqwest::Client,
    region: String,
    /// Headers of a PutObject beyond the signature: storage class, SSE-KMS.
    put_headers: HeaderMap,
    /// Options of CreateMultipartUpload (storage class; object_store adds SSE-KMS itself).
    multipart_options: object_store::Attributes,
}

impl S3Stream {
    /// Streamed uploads for `cfg` over `s3` (the store [`super::Storage`] uses), or `None` when
    /// the configuration needs object_store's own upload path (SSE-C).
    pub fn for_config(
        s3: Arc<AmazonS3>,
        cfg: &StorageConfig,
        region: &str,
        attributes: object_store::Attributes,
    ) -> Result<Option<S3Stream>, StorageError> {
        if cfg.sse_c_key.is_some() {
            return Ok(None);
        }
        let mut put_headers = HeaderMap::new();
        let mut header = |name: &'static str, value: &str| -> Result<(), StorageError> {
            let v = HeaderValue::from_str(value)
                .map_err(|_| StorageError::Config(format!("[storage] value {value:?} cannot be sent as {name}")))?;
            put_headers.insert(HeaderName::from_static(name), v);
            Ok(())
        };
        if let Some(class) = &cfg.storage_class {
            header("x-amz-storage-class", class)?;
        }
        if let Some(kms) = &cfg.kms_id {
            header("x-amz-server-side-encryption", "aws:kms")?;
            header("x-amz-server-side-encryption-aws-kms-key-id", kms)?;
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(super::read_timeout(cfg)))
            .read_timeout(super::read_timeout(cfg))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true);
        if !cfg.ssl_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| StorageError::Config(format!("S3 upload client: {e}")))?;
        Ok(Some(S3Stream { s3, client, region: region.to_string(), put_headers, multipart_options: attributes }))
    }

    /// The object's URL as object_store addresses it (its own requests use the same), without
    /// the query of the short-lived presigned URL it is taken from.
    async fn url(&self, op: &'static str, key: &str, location: &ObjectPath) -> Result<url::Url, StorageError> {
        let mut url = self
            .s3
            .signed_url(Method::PUT, location, Duration::from_secs(60))
            .await
            .map_err(|e| StorageError::from_store(op, key, e))?;
        url.set_query(None);
        Ok(url)
    }

    /// Sends one signed request with a streamed body of `len` bytes; the response when the
    /// store accepted it.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        op: &'static str,
        key: &str,
        query: &[(&str, &str)],
        headers: &HeaderMap,
        len: u64,
        body: BodyStream,
    ) -> Result<reqwest::Response, StorageError> {
        let location = object_path(key)?;
        let mut url = self.url(op, key, &location).await?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let credential =
            self.s3.credentials().get_credential().await.map_err(|e| StorageError::from_store(op, key, e))?;
        let mut signed: HttpRequest = http::Request::builder()
            .method(Method::PUT)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| StorageError::Config(format!("{op} of {key}: {e}")))?;
        signed.headers_mut().extend(headers.clone());
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(false)
            .try_authorize(&mut signed, None)
            .map_err(|e| StorageError::from_store(op, key, e))?;
        let response = self
            .client
            .put(url)
            .headers(signed.headers().clone())
            .header(http::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| unavailable(op, key, format!("{e}{}", source_chain(&e))))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(status_error(op, key, response).await)
    }

    /// PutObject of `len` bytes from `body`; the store's ETag.
    pub async fn put_object(&self, key: &str, len: u64, body: BodyStream) -> Result<Option<String>, StorageError> {
        let r = self.send("put", key, &[], &self.put_headers, len, body).await?;
        Ok(etag(&r))
    }

    /// Starts a multipart upload; its id.
    pub async fn create_multipart(&self, key: &str) -> Result<String, StorageError> {
        let location = object_path(key)?;
        let opts = PutMultipartOptions { attributes: self.multipart_options.clone(), ..Default::default() };
        self.s3
            .create_multipart_opts(&location, opts)
            .await
            .map_err(|e| StorageError::from_store("start multipart upload", key, e))
    }

    /// UploadPart number `number` (from 1) of `len` bytes from `body`; the part's ETag.
    pub async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: usize,
        len: u64,
        body: BodyStream,
    ) -> Result<String, StorageError> {
        let n = number.to_string();
        let query = [("partNumber", n.as_str()), ("uploadId", upload_id)];
        let r = self.send("upload part", key, &query, &HeaderMap::new(), len, body).await?;
        etag(&r).ok_or_else(|| unavailable("upload part", key, "the store's answer has no ETag".into()))
    }

    /// Completes a multipart upload from its parts' ETags, in order; the object's ETag.
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        etags: Vec<String>,
    ) -> Result<Option<String>, StorageError> {
        let location = object_path(key)?;
        let parts = etags.into_iter().map(|content_id| PartId { content_id }).collect();
        let r = self
            .s3
            .complete_multipart(&location, &upload_id.to_string(), parts)
            .await
            .map_err(|e| StorageError::from_store("complete multipart upload", key, e))?;
        Ok(r.e_tag)
    }

    /// Aborts a multipart upload (best effort: the error is returned for logging).
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        let location = object_path(key)?;
        self.s3
            .abort_multipart(&location, &upload_id.to_string())
            .await
            .map_err(|e| StorageError::from_store("abort multipart upload", key, e))
    }
}

fn etag(r: &reqwest::Response) -> Option<String> {
    r.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The causes below a transport error (reqwest's own message names only the request).
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn unavailable(op: &'static str, key: &str, message: String) -> StorageError {
    super::count_error(op);
    let source = object_store::Error::Generic { store: "S3", source: message.into() };
    StorageError::Unavailable { op, key: key.to_string(), source }
}

/// A store's refusal, classified as object_store classifies it: 5xx, 408 and 429 may pass on a
/// retry; anything else needs the configuration or the bucket to change. The message carries
/// S3's error code and message (the request's URL and headers are not repeated: they hold the
/// signature).
async fn status_error(op: &'static str, key: &str, r: reqwest::Response) -> StorageError {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{tag}>"))?;
        Some(text[start..start + len].to_string())
    };
    let detail = match (field("Code"), field("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => text.chars().take(200).collect(),
    };
    let message = format!("HTTP {status}: {detail}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        return unavailable(op, key, message);
    }
    super::count_error(op);
    let path = key.to_string();
    let source = match status.as_u16() {
        401 => object_store::Error::Unauthenticated { path, source: message.into() },
        403 => object_store::Error::PermissionDenied { path, source: message.into() },
        _ => object_store::Error::Generic { store: "S3", source: message.into() },
    };
    StorageError::Refused { op, key: key.to_string(), source }
}
