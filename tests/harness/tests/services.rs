//! Self-tests of the loopback storage servers and fixtures in `harness::services`: each server
//! really stores and serves data, is reachable through the request signing its clients use,
//! and is gone once dropped. Tests needing moto, azurite or Python Medusa fail (never skip)
//! when `scripts/install-test-deps.sh` has not been run.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use harness::services::{
    AzuriteServer, LocalStorage, S3Server, TempDir, copy_dir_all, files_below, free_port, grpcurl, medusa_py_fixture,
    python_medusa, tools_dir,
};
use reqwest::{Method, StatusCode};

const FQDN: &str = "demo-dc1-default-sts-0";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

/// `key = value` lines of one ini section text, as a map (fails on duplicates).
fn ini_keys(text: &str) -> BTreeMap<String, String> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("[storage]"), "section header first:\n{text}");
    let mut map = BTreeMap::new();
    for line in lines {
        let (k, v) = line.split_once(" = ").unwrap_or_else(|| panic!("not `key = value`: {line:?}"));
        assert!(map.insert(k.to_string(), v.to_string()).is_none(), "duplicate key {k}");
    }
    map
}

fn assert_port_closed(port: u16) {
    let addr = ("127.0.0.1", port);
    // The listener is closed synchronously on drop for every server kind; allow a moment anyway.
    for _ in 0..20 {
        if TcpStream::connect(addr).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} still accepts connections after the server was dropped");
}

async fn exercise_s3(s3: &S3Server) {
    s3.put_object("demo/a/one.txt", b"one".to_vec()).await.unwrap();
    s3.put_object("demo/b/two.bin", vec![7u8; 300_000]).await.unwrap();
    s3.put_object("other/three", b"3".to_vec()).await.unwrap();
    assert_eq!(s3.get_object("demo/a/one.txt").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s3.get_object("demo/b/two.bin").await.unwrap().map(|b| b.len()), Some(300_000));
    assert_eq!(s3.get_object("demo/missing").await.unwrap(), None);
    assert_eq!(s3.list_keys("demo/").await.unwrap(), ["demo/a/one.txt", "demo/b/two.bin"]);
    assert_eq!(s3.list_keys("").await.unwrap().len(), 3);

    // The bucket was really created: another one does not exist.
    let resp = s3.request(Method::GET, "/no-such-bucket", &[("list-type", "2")], Vec::new()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.text().await.unwrap().contains("NoSuchBucket"));
}

#[tokio::test]
async fn s3s_fs_stores_objects_on_disk_and_checks_signatures() {
    let mut s3 = S3Server::s3s_fs("bucket-a").await.unwrap();
    assert!(s3.endpoint.starts_with("http://127.0.0.1:"), "{}", s3.endpoint);
    exercise_s3(&s3).await;

    // Objects are plain files below <data_dir>/<bucket>.
    let data_dir = s3.data_dir.clone().expect("s3s-fs has a data dir");
    assert_eq!(std::fs::read(data_dir.join("bucket-a/demo/a/one.txt")).unwrap(), b"one");

    // Unsigned requests and wrong keys are refused.
    let resp = client().get(format!("{}/bucket-a/demo/a/one.txt", s3.endpoint)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    s3.secret_key = "wrong".into();
    let err = s3.get_object("demo/a/one.txt").await.unwrap_err().to_string();
    assert!(err.contains("403"), "{err}");
}

#[tokio::test]
async fn s3s_fs_serves_while_the_test_thread_blocks() {
    let s3 = S3Server::s3s_fs("bucket-b").await.unwrap();
    let url = format!("{}/", s3.endpoint);
    // A blocking client on another OS thread while this (current-thread) runtime is blocked
    // in join(): the server must still answer.
    let status = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { client().get(url).send().await.map(|r| r.status()) })
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "s3s-fs answers unsigned requests with 403");
}

#[tokio::test]
async fn s3s_fs_stops_on_drop() {
    let s3 = S3Server::s3s_fs("bucket-c").await.unwrap();
    let port = s3.port();
    TcpStream::connect(("127.0.0.1", port)).expect("listening while alive");
    let data_dir = s3.data_dir.clone().unwrap();
    drop(s3);
    assert_port_closed(port);
    assert!(!data_dir.exists(), "the temp dir is removed on drop");
}

#[tokio::test]
async fn moto_stores_and_lists_objects() {
    let s3 = S3Server::moto("moto-bucket").await.unwrap();
    assert!(s3.data_dir.is_none());
    exercise_s3(&s3).await;
}

#[tokio::test]
async fn moto_stops_on_drop() {
    let s3 = S3Server::moto("moto-bucket").await.unwrap();
    let port = s3.port();
    drop(s3);
    assert_port_closed(port);
}

#[tokio::test]
async fn azurite_has_the_container_and_stores_blobs() {
    let az = AzuriteServer::start("backups").await.unwrap();
    assert_eq!(az.account, "devstoreaccount1");
    assert_eq!(az.endpoint, format!("http://127.0.0.1:{}/devstoreaccount1", az.port()));

    assert!(az.list_blobs("").await.unwrap().is_empty(), "a new container is empty");
    az.put_blob("demo/x/1.txt", b"hello".to_vec()).await.unwrap();
    az.put_blob("demo/y/2.txt", vec![1u8; 100_000]).await.unwrap();
    az.put_blob("other", b"o".to_vec()).await.unwrap();
    assert_eq!(az.get_blob("demo/x/1.txt").await.unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(az.get_blob("nope").await.unwrap(), None);
    assert_eq!(az.list_blobs("demo/").await.unwrap(), ["demo/x/1.txt", "demo/y/2.txt"]);

    // Signed listing of a container that was not created: 404, so "backups" really exists.
    let resp = az
        .request(Method::GET, "/not-created", &[("restype", "container"), ("comp", "list")], &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Unsigned access is refused.
    let url = format!("{}/backups?restype=container&comp=list", az.endpoint);
    let status = client().get(url).send().await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn azurite_stops_on_drop() {
    let az = AzuriteServer::start("stop-test").await.unwrap();
    let port = az.port();
    drop(az);
    assert_port_closed(port);
}

#[tokio::test]
async fn medusa_ini_storage_sections_name_each_server() {
    let s3 = S3Server::s3s_fs("ini-bucket").await.unwrap();
    let keys = ini_keys(&s3.medusa_ini_storage(Some("demo")));
    assert_eq!(keys["storage_provider"], "s3_compatible");
    assert_eq!(keys["bucket_name"], "ini-bucket");
    assert_eq!(keys["host"], "127.0.0.1");
    assert_eq!(keys["port"], s3.port().to_string());
    assert_eq!(keys["secure"], "False");
    assert_eq!(keys["ssl_verify"], "False");
    assert_eq!(keys["region"], "us-east-1");
    assert_eq!(keys["prefix"], "demo");
    let creds = std::fs::read_to_string(&keys["key_file"]).unwrap();
    assert_eq!(
        creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            harness::services::S3_ACCESS_KEY,
            harness::services::S3_SECRET_KEY
        )
    );
    assert!(!ini_keys(&s3.medusa_ini_storage(None)).contains_key("prefix"));

    let local = LocalStorage::new("lb").unwrap();
    let keys = ini_keys(&local.medusa_ini_storage(None));
    assert_eq!(keys["storage_provider"], "local");
    assert_eq!(Path::new(&keys["base_path"]).join(&keys["bucket_name"]), local.bucket_dir());
    assert!(local.bucket_dir().is_dir());
}

#[tokio::test]
async fn azurite_ini_has_key_file_and_endpoint() {
    let az = AzuriteServer::start("ini-container").await.unwrap();
    let keys = ini_keys(&az.medusa_ini_storage(Some("p")));
    assert_eq!(keys["storage_provider"], "azure_blobs");
    assert_eq!(keys["bucket_name"], "ini-container");
    assert_eq!(keys["endpoint"], az.endpoint);
    assert_eq!(keys["prefix"], "p");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&keys["key_file"]).unwrap()).unwrap();
    assert_eq!(json["storage_account"], "devstoreaccount1");
    assert_eq!(json["key"], az.key.as_str());
}

#[test]
fn temp_dir_is_unique_and_removed_on_drop() {
    let a = TempDir::new("t").unwrap();
    let b = TempDir::new("t").unwrap();
    assert_ne!(a.path(), b.path());
    std::fs::write(a.path().join("f"), b"x").unwrap();
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists());
    assert!(b.path().is_dir());
}

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

/// The fixture is complete: three backups, their index, and digests matching the README.
#[test]
fn python_medusa_fixture_is_complete() {
    let fixture = medusa_py_fixture();
    let node = fixture.join("bucket/demo").join(FQDN);
    for backup in ["full-1", "diff-1", "diff-2"] {
        for meta in ["manifest.json", "schema.cql", "tokenmap.json", "server_version.json"] {
            assert!(node.join(backup).join("meta").join(meta).is_file(), "{backup}/meta/{meta}");
        }
        let index = fixture.join("bucket/demo/index/backup_index").join(backup);
        assert!(index.join(format!("manifest_{FQDN}.json")).is_file(), "index of {backup}");
        let digest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture.join(format!("digests/{backup}.json"))).unwrap()).unwrap();
        assert_eq!(digest["backup"], backup);
        let entries = digest["entries"].as_object().unwrap();
        assert_eq!(entries.len() as u64, digest["files"].as_u64().unwrap());
        let bytes: u64 = entries.values().map(|e| e["size"].as_u64().unwrap()).sum();
        assert_eq!(bytes, digest["bytes"].as_u64().unwrap());
    }
    let latest = fixture.join("bucket/demo/index/latest_backup").join(FQDN).join("backup_name.txt");
    assert_eq!(std::fs::read_to_string(latest).unwrap().trim(), "diff-2");
    let ini = std::fs::read_to_string(fixture.join("medusa.ini")).unwrap();
    assert!(ini.contains("base_path = @FIXTURE_DIR@") && ini.contains("prefix = demo"), "{ini}");
}

/// Every object a manifest names is in the bucket, with the manifest's size.
#[test]
fn python_medusa_fixture_manifests_match_the_bucket() {
    let bucket = medusa_py_fixture().join("bucket");
    for backup in ["full-1", "diff-1", "diff-2"] {
        let path = bucket.join("demo").join(FQDN).join(backup).join("meta/manifest.json");
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let mut objects = 0;
        for section in manifest.as_array().unwrap() {
            for object in section["objects"].as_array().unwrap() {
                // Keys are relative to the bucket and start with the prefix.
                let key = object["path"].as_str().unwrap();
                assert!(key.starts_with("demo/"), "{key}");
                let file = bucket.join(key);
                let size = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{backup}: {key}: {e}")).len();
                assert_eq!(size, object["size"].as_u64().unwrap(), "{backup}: {key}");
                objects += 1;
            }
        }
        assert!(objects > 100, "{backup} names {objects} objects");
    }
}

#[test]
fn local_storage_copies_the_fixture_without_touching_it() {
    let src = medusa_py_fixture().join("bucket");
    let local = LocalStorage::copy_of(&src, "bucket").unwrap();
    let want = files_below(&src).unwrap();
    let got = files_below(&local.bucket_dir()).unwrap();
    assert_eq!(want.iter().map(|f| &f.0).collect::<Vec<_>>(), got.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(want.len() > 1000, "{} files", want.len());
    std::fs::remove_dir_all(local.bucket_dir().join("demo/index")).unwrap();
    assert!(src.join("demo/index").is_dir(), "the fixture is untouched");
}

#[test]
fn copy_dir_all_keeps_symlinks_and_empty_dirs() {
    let src = TempDir::new("copy-src").unwrap();
    std::fs::create_dir_all(src.path().join("a/empty")).unwrap();
    std::fs::write(src.path().join("a/f"), b"f").unwrap();
    std::os::unix::fs::symlink("f", src.path().join("a/link")).unwrap();
    let dst = TempDir::new("copy-dst").unwrap();
    copy_dir_all(src.path(), &dst.path().join("out")).unwrap();
    let out = dst.path().join("out/a");
    assert!(out.join("empty").is_dir());
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("f"));
    assert_eq!(std::fs::read(out.join("link")).unwrap(), b"f");
}

#[tokio::test]
async fn the_fixture_uploads_to_s3_and_lists_back() {
    let s3 = S3Server::s3s_fs("bucket").await.unwrap();
    let src = medusa_py_fixture().join("bucket");
    let n = s3.upload_dir(&src, "").await.unwrap();
    let keys = s3.list_keys("demo/").await.unwrap();
    assert_eq!(keys.len(), n);
    let want: Vec<String> = files_below(&src).unwrap().into_iter().map(|f| f.0).collect();
    assert_eq!(keys, want);
}

/// Runs the real Python Medusa with `ini` and returns its stdout.
async fn python_medusa_list_backups(ini_storage: &str, dir: &Path) -> String {
    let medusa = python_medusa().unwrap_or_else(|| {
        panic!("Python Medusa is missing in {}: run scripts/install-test-deps.sh", tools_dir().display())
    });
    let ini = format!(
        "[cassandra]\nconfig_file = /nonexistent/cassandra.yaml\nresolve_ip_addresses = False\n\n{ini_storage}\
         fqdn = {FQDN}\n\n[logging]\nenabled = false\n"
    );
    let ini_path = dir.join("medusa.ini");
    std::fs::write(&ini_path, ini).unwrap();
    let run = tokio::process::Command::new(medusa)
        .arg("--config-file")
        .arg(&ini_path)
        .arg("list-backups")
        .env_remove("AWS_CA_BUNDLE")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("medusa list-backups did not finish in 120 s with:\n{ini_storage}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "medusa list-backups failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_lists_the_fixture_backups(stdout: &str) {
    for backup in ["full-1", "diff-1", "diff-2"] {
        assert!(stdout.contains(backup), "{backup} missing from medusa list-backups:\n{stdout}");
    }
}

/// The `[storage]` text really points Python Medusa at the data (local and moto).
/// Not s3s-fs: its ListObjectsV2 entries have no ETag, and Medusa retries that KeyError for
/// minutes.
#[tokio::test]
async fn python_medusa_reads_the_fixture_through_each_ini() {
    let dir = TempDir::new("medusa-ini").unwrap();
    let local = LocalStorage::copy_of(&medusa_py_fixture().join("bucket"), "bucket").unwrap();
    let stdout = python_medusa_list_backups(&local.medusa_ini_storage(Some("demo")), dir.path()).await;
    assert_lists_the_fixture_backups(&stdout);

    let s3 = S3Server::moto("bucket").await.unwrap();
    s3.upload_dir(&medusa_py_fixture().join("bucket"), "").await.unwrap();
    let stdout = python_medusa_list_backups(&s3.medusa_ini_storage(Some("demo")), dir.path()).await;
    assert_lists_the_fixture_backups(&stdout);

    // And an empty bucket lists nothing (the test above is not vacuous).
    let empty = LocalStorage::new("bucket").unwrap();
    let stdout = python_medusa_list_backups(&empty.medusa_ini_storage(Some("demo")), dir.path()).await;
    assert!(!stdout.contains("full-1"), "{stdout}");
}

#[test]
fn grpcurl_is_installed() {
    let grpcurl = grpcurl()
        .unwrap_or_else(|| panic!("grpcurl missing in {}: run scripts/install-test-deps.sh", tools_dir().display()));
    let out = std::process::Command::new(grpcurl).arg("-version").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("v1.8.6"), "{text}");
}
