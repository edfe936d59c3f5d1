//! The region of an S3 bucket when `[storage] region` is not set (`storage_provider = s3`):
//! botocore, and so Medusa, follows S3's answer to a request in the wrong region; object_store
//! signs every request for one region chosen up front, so without this every request to a
//! bucket outside `us-east-1` failed. One unsigned HEAD of the bucket answers it: S3 puts the
//! bucket's region into `x-amz-bucket-region` whatever the status (200, 301 or 403).

use std::time::Duration;

/// Longest the question may take; after that the default region is used.
const LIMIT: Duration = Duration::from_secs(5);

/// The URL that names `bucket` at `endpoint` (AWS itself when `None`): virtual-hosted on AWS,
/// except for names with dots, which its wildcard certificate does not cover; path style on a
/// configured endpoint.
fn bucket_url(endpoint: Option<&str>, bucket: &str) -> String {
    match endpoint {
        Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
        None if bucket.contains('.') => format!("https://s3.amazonaws.com/{bucket}"),
        None => format!("https://{bucket}.s3.amazonaws.com"),
    }
}

/// Asks where `bucket` lives. `Ok(None)`: the store answered without saying (not AWS);
/// `Err`: no answer (the caller falls back to the default and says why). Runs on a thread of its
/// own, so that it works from synchronous code and from inside a runtime alike.
pub fn discover(endpoint: Option<&str>, bucket: &str, accept_invalid_certs: bool) -> Result<Option<String>, String> {
    let url = bucket_url(endpoint, bucket);
    let ask = move || -> Result<Option<String>, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(LIMIT)
                .danger_accept_invalid_certs(accept_invalid_certs)
                .build()
                .map_err(|e| e.to_string())?;
            let answer = client.head(&url).send().await.map_err(|e| format!("HEAD {url}: {e}"))?;
            Ok(region_of(answer.headers()))
        })
    };
    std::thread::scope(|s| s.spawn(ask).join()).unwrap_or_else(|_| Err("the region lookup panicked".into()))
}

/// `x-amz-bucket-region`, when present and plausible (a region name: letters, digits, dashes).
fn region_of(headers: &http::HeaderMap) -> Option<String> {
    let r = headers.get("x-amz-bucket-region")?.to_str().ok()?.trim();
    (!r.is_empty() && r.len() <= 32 && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then(|| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_the_region_header() {
        assert_eq!(bucket_url(None, "b1"), "https://b1.s3.amazonaws.com");
        assert_eq!(bucket_url(None, "a.b"), "https://s3.amazonaws.com/a.b");
        assert_eq!(bucket_url(Some("http://127.0.0.1:9000/"), "b1"), "http://127.0.0.1:9000/b1");
        let mut h = http::HeaderMap::new();
        assert_eq!(region_of(&h), None);
        h.insert("x-amz-bucket-region", "eu-west-1".parse().unwrap());
        assert_eq!(region_of(&h).as_deref(), Some("eu-west-1"));
        h.insert("x-amz-bucket-region", "eu west/1".parse().unwrap());
        assert_eq!(region_of(&h), None);
    }

    #[test]
    fn no_answer_is_an_error_that_names_the_url() {
        // A port nothing listens on: refused at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = discover(Some(&format!("http://127.0.0.1:{port}")), "b1", false).unwrap_err();
        assert!(e.contains(&format!("HEAD http://127.0.0.1:{port}/b1")), "{e}");
    }
}
