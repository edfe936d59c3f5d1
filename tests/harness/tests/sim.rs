//! Self-tests of the simulated Cassandra node: layout, determinism, snapshots by hard links,
//! flush/compaction/wipe, the data-directory digest, and the Management API over HTTP.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::sim::{DataDigest, MgmtApiServer, SimNode, SimSpec, digest_data_dir, load_digest_json};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("medusa-sim-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a blocking test body on its own thread and fails if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test body exceeded {secs}s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("test body ended without a result"),
        },
    }
}

fn small_node(name: &str) -> (TempDir, SimNode) {
    let dir = TempDir::new(name);
    let node = SimNode::generate(&dir.0, &SimSpec::small()).expect("generate small node");
    (dir, node)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn data_files(node: &SimNode) -> BTreeSet<String> {
    digest_data_dir(&node.data_dir).entries.into_keys().filter(|k| k.ends_with("-Data.db")).collect()
}

fn table_dir(node: &SimNode, ks: &str, table: &str) -> PathBuf {
    node.table_dir(node.table(ks, table).expect("table in schema"))
}

#[test]
fn small_node_has_the_cassandra_layout() {
    within(120, || {
        let (dir, node) = small_node("layout");
        let spec = SimSpec::small();
        let d = digest_data_dir(&node.data_dir);
        assert_eq!(d.files as usize, spec.expected_files());
        assert!((550..=650).contains(&d.files), "files {}", d.files);
        let target = spec.target_bytes as f64;
        assert!((d.bytes as f64 - target).abs() < target * 0.1, "bytes {} vs target {target}", d.bytes);
        // system tables keep Cassandra's ids; some are empty directories
        let local = node.data_dir.join("system/local-7ad54392bcdd35a684174e047860b377");
        assert!(fs::read_dir(&local).unwrap().count() > 0);
        assert!(node.data_dir.join("system/peers-37f71aca7dc2383ba70672528af04d4f").is_dir());
        assert!(node.data_dir.join("system/peers_v2-c4325fbb8e5e3bafbd070f9250ed818e").is_dir());
        let empty: Vec<_> =
            node.tables.iter().filter(|t| fs::read_dir(node.table_dir(t)).unwrap().next().is_none()).collect();
        assert!(empty.len() >= 5, "expected empty table dirs, got {}", empty.len());
        assert!(files_under(&node.data_dir.join("system_traces")).len() >= 8);
        // user tables: complete component sets, integer generations
        let t1 = table_dir(&node, "ks1", "table1");
        let names: Vec<String> =
            fs::read_dir(&t1).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        let data = names.iter().filter(|n| n.ends_with("-big-Data.db")).count();
        assert_eq!(data, 8);
        for comp in ["TOC.txt", "Digest.crc32", "Statistics.db", "Summary.db", "Filter.db"] {
            assert_eq!(names.iter().filter(|n| n.ends_with(comp)).count(), 8, "{comp}");
        }
        let idx = t1.join(".table1_ck_idx");
        assert!(files_under(&idx).len() >= 8, "2i dir has SSTables");
        let backups: Vec<_> =
            node.user_tables().iter().map(|t| node.table_dir(t).join("backups")).filter(|p| p.is_dir()).collect();
        assert_eq!(backups.len(), 1);
        assert!(!files_under(&backups[0]).is_empty());
        // outside the data dir
        assert!(files_under(&node.commitlog_dir).iter().any(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("CommitLog-7-") && n.ends_with(".log")
        }));
        assert!(!files_under(&node.saved_caches_dir).is_empty());
        assert!(files_under(&node.hints_dir)[0].to_string_lossy().ends_with(".hints"));
        let yaml = fs::read_to_string(&node.cassandra_yaml).unwrap();
        assert!(yaml.contains(&format!("data_file_directories:\n    - {}\n", node.data_dir.display())));
        assert!(yaml.contains("num_tokens: 16"));
        assert!(yaml.contains(&format!("hints_directory: {}", node.hints_dir.display())));
        assert!(!yaml.contains("auto_bootstrap") && !yaml.contains("initial_token"));
        assert_eq!(node.tokens.len(), 16);
        assert_eq!((node.dc.as_str(), node.rack.as_str()), ("dc1", "default"));
        assert_eq!(SimNode::open(&node.root).unwrap(), node);
        // a moved node re-opens with its paths rebased
        let moved = dir.0.with_extension("moved");
        fs::rename(&dir.0, &moved).unwrap();
        let reopened = SimNode::open(&moved);
        fs::rename(&moved, &dir.0).unwrap();
        let reopened = reopened.unwrap();
        assert_eq!(reopened.data_dir, node.root.with_extension("moved").join("data"));
        assert_eq!(reopened.tables, node.tables);
    });
}

#[test]
fn digest_component_files_are_consistent() {
    within(60, || {
        let (_dir, node) = small_node("crc");
        let t1 = table_dir(&node, "ks2", "table2");
        let toc = fs::read_dir(&t1)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with("TOC.txt"))
            .expect("a TOC.txt");
        let toc_text = fs::read_to_string(toc.path()).unwrap();
        assert_eq!(toc_text.len(), 92);
        assert!(toc_text.lines().any(|l| l == "Data.db"));
        let schema = node.table("ks2", "table2").unwrap().schema_cql();
        assert!(schema.contains("CREATE TYPE IF NOT EXISTS ks2.address"));
        assert!(schema.contains("CREATE TABLE IF NOT EXISTS ks2.table2 ("));
    });
}

#[test]
fn generation_is_deterministic_per_seed() {
    within(120, || {
        let (_a, a) = small_node("det-a");
        let (_b, b) = small_node("det-b");
        let (da, db) = (digest_data_dir(&a.data_dir), digest_data_dir(&b.data_dir));
        assert!(da == db, "same seed, different data:\n{}", da.diff(&db));
        assert_eq!(da.tree_digest_sha1, db.tree_digest_sha1);
        assert_eq!(a.tokens, b.tokens);
        let c_dir = TempDir::new("det-c");
        let spec = SimSpec { seed: 2, ..SimSpec::small() };
        let c = SimNode::generate(&c_dir.0, &spec).unwrap();
        let dc = digest_data_dir(&c.data_dir);
        assert!(da != dc, "another seed must give other data");
        assert!(!da.diff(&dc).is_empty());
    });
}

#[test]
fn snapshot_hard_links_live_files_like_cassandra() {
    within(120, || {
        let (_dir, node) = small_node("snap");
        let before = digest_data_dir(&node.data_dir);
        node.take_snapshot("medusa-b1", &[]).unwrap();
        // every table of every keyspace, system_traces and empty tables included
        for t in &node.tables {
            let snap = node.table_dir(t).join("snapshots/medusa-b1");
            assert!(snap.join("manifest.json").is_file(), "{}", snap.display());
            assert!(snap.join("schema.cql").is_file(), "{}", snap.display());
        }
        let t1 = table_dir(&node, "ks1", "table1");
        let snap = t1.join("snapshots/medusa-b1");
        let mut linked = 0;
        for live in files_under(&t1) {
            let rel = live.strip_prefix(&t1).unwrap();
            if rel.starts_with("snapshots") {
                continue;
            }
            let copy = snap.join(rel);
            assert_eq!(
                fs::metadata(&live).unwrap().ino(),
                fs::metadata(&copy).unwrap().ino(),
                "{} is not a hard link",
                copy.display()
            );
            linked += 1;
        }
        assert_eq!(linked, 8 * 8 + 2 * 8, "table and 2i components");
        let manifest: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(snap.join("manifest.json")).unwrap()).unwrap();
        let files = manifest["files"].as_array().unwrap();
        assert_eq!(files.len(), 10);
        assert!(files.iter().any(|f| f.as_str().unwrap().starts_with(".table1_ck_idx/nb-")));
        assert_eq!(manifest["expires_at"], serde_json::Value::Null);
        assert_eq!(manifest["ephemeral"], false);
        assert!(manifest["created_at"].as_str().unwrap().ends_with('Z'));
        let cql = fs::read_to_string(snap.join("schema.cql")).unwrap();
        assert!(cql.contains("CREATE TABLE IF NOT EXISTS ks1.table1 ("), "{cql}");
        assert!(cql.contains("CREATE INDEX IF NOT EXISTS table1_ck_idx ON ks1.table1 (ck);"));
        let empty = node
            .data_dir
            .join(format!("system/batches-{}/snapshots/medusa-b1", node.table("system", "batches").unwrap().id));
        assert_eq!(fs::read_dir(&empty).unwrap().count(), 2);
        // the snapshot does not change the live data, the digest ignores it
        let after = digest_data_dir(&node.data_dir);
        assert!(before == after, "{}", before.diff(&after));
        // listing and the "already exists" error
        let listed = node.list_snapshots();
        assert_eq!(listed.len(), node.tables.len());
        let info = listed.iter().find(|s| s.keyspace == "ks1" && s.table == "table1").unwrap();
        assert_eq!(info.files, 80);
        let metadata_len = fs::metadata(snap.join("manifest.json")).unwrap().len()
            + fs::metadata(snap.join("schema.cql")).unwrap().len();
        assert_eq!(info.true_size, metadata_len, "only the metadata files are not shared");
        assert!(info.size_on_disk > 100 * 1024);
        let err = node.take_snapshot("medusa-b1", &["ks1".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), "Snapshot medusa-b1 already exists.");
        // keyspace-limited snapshot, table-limited snapshot, clearing
        node.take_snapshot("only-ks2", &["ks2".to_string()]).unwrap();
        let tags: BTreeSet<String> =
            node.list_snapshots().into_iter().filter(|s| s.tag == "only-ks2").map(|s| s.keyspace).collect();
        assert_eq!(tags, BTreeSet::from(["ks2".to_string()]));
        node.take_table_snapshot("one", &["ks1.table3".to_string()]).unwrap();
        assert_eq!(node.list_snapshots().iter().filter(|s| s.tag == "one").count(), 1);
        assert!(node.take_snapshot("x", &["nope".to_string()]).is_err());
        node.clear_snapshot(Some("medusa-b1"), &[]).unwrap();
        assert!(!snap.exists());
        assert!(node.snapshot_exists("only-ks2"));
        node.clear_snapshot(None, &[]).unwrap();
        assert!(node.list_snapshots().is_empty());
    });
}

#[test]
fn flush_compact_and_wipe_change_the_disk() {
    within(120, || {
        let (_dir, mut node) = small_node("mutate");
        let d0 = digest_data_dir(&node.data_dir);
        let new = node.flush(101, 0.1).unwrap();
        assert!(!new.is_empty());
        assert!(new.iter().all(|p| p.is_file() && p.to_string_lossy().ends_with("-big-Data.db")));
        let d1 = digest_data_dir(&node.data_dir);
        assert_eq!(d1.files, d0.files + 8 * new.len() as u64);
        let added = (d1.bytes - d0.bytes) as f64 / d0.bytes as f64;
        assert!((0.05..0.3).contains(&added), "flush added {added:.3} of the bytes");

        node.take_snapshot("before-compaction", &[]).unwrap();
        let before = data_files(&node);
        node.compact(102).unwrap();
        let after = data_files(&node);
        let removed: Vec<_> = before.difference(&after).collect();
        let created: Vec<_> = after.difference(&before).collect();
        assert!(removed.len() >= 2, "compaction removed {removed:?}");
        assert!(!created.is_empty() && created.len() < removed.len());
        let d2 = digest_data_dir(&node.data_dir);
        assert_eq!(d2.files % 8, 0, "only complete component sets remain");
        // the snapshot still holds the compacted-away files
        let snap_files: usize =
            node.list_snapshots().iter().filter(|s| s.tag == "before-compaction").map(|s| s.files).sum();
        assert_eq!(snap_files as u64, d1.files + 16, "snapshot includes system_traces");

        node.wipe().unwrap();
        assert!(files_under(&node.data_dir).is_empty());
        assert!(files_under(&node.commitlog_dir).is_empty());
        assert!(files_under(&node.saved_caches_dir).is_empty());
        assert!(files_under(&node.hints_dir).is_empty());
        assert!(node.cassandra_yaml.is_file());
        let mut reopened = SimNode::open(&node.root).unwrap();
        let fresh = reopened.flush(103, 0.0).unwrap();
        assert!(fresh.iter().all(|p| { p.file_name().unwrap().to_string_lossy().starts_with("nb-1-") }));
    });
}

#[test]
fn digest_excludes_snapshots_backups_and_system_traces() {
    within(60, || {
        let (_dir, node) = small_node("digest");
        node.take_snapshot("s", &[]).unwrap();
        let d = digest_data_dir(&node.data_dir);
        assert!(
            d.entries
                .keys()
                .all(|k| !k.contains("/snapshots/") && !k.contains("/backups/") && !k.starts_with("system_traces/"))
        );
        assert!(d.entries.keys().any(|k| k.contains("/.table1_ck_idx/")));
        assert_eq!(d.files as usize, d.entries.len());
        assert_eq!(d.bytes, d.entries.values().map(|e| e.size).sum::<u64>());
        // a changed live file shows up in the diff
        let t3 = table_dir(&node, "ks1", "table3");
        fs::write(t3.join("nb-999-big-Data.db"), b"x").unwrap();
        let d2 = digest_data_dir(&node.data_dir);
        assert!(d != d2);
        assert!(d.diff(&d2).contains("nb-999-big-Data.db"), "{}", d.diff(&d2));
    });
}

#[test]
fn fixture_digest_loads() {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/medusa-py-0.31/digests/full-1.json");
    let path =
        if local.is_file() { local } else { PathBuf::from("/work/shared/fixtures/medusa-py-0.31/digests/full-1.json") };
    let d = load_digest_json(&path);
    assert_eq!(d.files as usize, d.entries.len());
    assert_eq!(d.bytes, d.entries.values().map(|e| e.size).sum::<u64>());
    assert_eq!(d.files, 576);
    let recomputed = DataDigest::from_entries(d.entries.clone());
    assert!(recomputed == d && recomputed.diff(&d).is_empty());
}

#[test]
fn sized_spec_lands_near_the_file_count() {
    within(180, || {
        let dir = TempDir::new("sized");
        let spec = SimSpec::sized(20 << 20, 2000, 7);
        assert!((spec.expected_files() as f64 - 2000.0).abs() < 200.0);
        let started = Instant::now();
        let node = SimNode::generate(&dir.0, &spec).unwrap();
        let elapsed = started.elapsed();
        let d = digest_data_dir(&node.data_dir);
        assert!((d.files as f64 - 2000.0).abs() < 200.0, "files {}", d.files);
        let target = (20u64 << 20) as f64;
        assert!((d.bytes as f64 - target).abs() < target * 0.15, "bytes {}", d.bytes);
        assert!(elapsed < Duration::from_secs(30), "generation took {elapsed:?}");
        // the bench specs plan the right counts without being generated
        for (bytes, files) in [(2u64 << 30, 3_500usize), (200 << 20, 32_000)] {
            let s = SimSpec::sized(bytes, files, 1);
            let off = (s.expected_files() as f64 - files as f64).abs() / files as f64;
            assert!(off < 0.1, "{files} files planned as {}", s.expected_files());
        }
    });
}

mod api {
    use super::*;
    use std::sync::atomic::Ordering;

    const LIMIT: Duration = Duration::from_secs(120);

    fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
    }

    async fn start(name: &str) -> (TempDir, Arc<Mutex<SimNode>>, MgmtApiServer) {
        let name = name.to_string();
        let (dir, node) = tokio::task::spawn_blocking(move || small_node(&name)).await.unwrap();
        let node = Arc::new(Mutex::new(node));
        let server = MgmtApiServer::start(node.clone()).await.unwrap();
        (dir, node, server)
    }

    async fn status_text(r: reqwest::RequestBuilder) -> (u16, String) {
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    fn entity(v: &serde_json::Value) -> &Vec<serde_json::Value> {
        v["entity"].as_array().expect("entity array")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_create_list_delete() {
        tokio::time::timeout(LIMIT, async {
            let (_dir, node, server) = start("api-snap").await;
            let c = client();
            let url = &server.snapshot_url;
            let (code, body) = status_text(c.post(url).json(&serde_json::json!({"snapshot_name": "medusa-b1"}))).await;
            assert_eq!((code, body.as_str()), (200, "OK"));
            let t1 = {
                let n = node.lock().unwrap();
                table_dir(&n, "ks1", "table1")
            };
            assert!(t1.join("snapshots/medusa-b1/manifest.json").is_file());

            let listed: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
            let rows = entity(&listed);
            let total_tables = node.lock().unwrap().tables.len();
            assert_eq!(rows.len(), total_tables);
            let row = rows.iter().find(|r| r["Keyspace name"] == "ks1" && r["Column family name"] == "table1").unwrap();
            assert_eq!(row["Snapshot name"], "medusa-b1");
            assert_eq!(row["Expiration time"], "null");
            assert_eq!(row["Ephemeral"], "false");
            assert_ne!(row["True size"], row["Size on disk"], "live files are shared");
            assert!(row["Size on disk"].as_str().unwrap().ends_with("KiB"));
            let filtered: serde_json::Value =
                c.get(format!("{url}?snapshotNames=other&keyspaces=ks1")).send().await.unwrap().json().await.unwrap();
            assert!(entity(&filtered).is_empty());
            let ks1: serde_json::Value = c
                .get(format!("{url}?snapshotNames=medusa-b1&keyspaces=ks1"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(entity(&ks1).len(), 2);

            let (code, body) = status_text(c.post(url).json(&serde_json::json!({"snapshot_name": "medusa-b1"}))).await;
            assert_eq!(code, 500);
            assert!(body.contains("Snapshot medusa-b1 already exists"), "{body}");

            let (code, body) = status_text(c.delete(format!("{url}?snapshotNames=medusa-b1"))).await;
            assert_eq!((code, body.as_str()), (200, "OK"));
            assert!(!t1.join("snapshots/medusa-b1").exists());
            assert!(node.lock().unwrap().list_snapshots().is_empty());

            // keyspace and keyspace.table scopes
            let body = serde_json::json!({"snapshot_name": "ks", "keyspaces": ["ks2"], "skip_flush": true});
            assert_eq!(status_text(c.post(url).json(&body)).await.0, 200);
            let body = serde_json::json!({"snapshot_name": "kt", "keyspace_tables": ["ks1.table3"]});
            assert_eq!(status_text(c.post(url).json(&body)).await.0, 200);
            let body = serde_json::json!({"snapshot_name": "tn", "keyspaces": ["ks1"], "table_name": "table1"});
            assert_eq!(status_text(c.post(url).json(&body)).await.0, 200);
            let snaps = node.lock().unwrap().list_snapshots();
            let scope = |tag: &str| -> Vec<String> {
                snaps.iter().filter(|s| s.tag == tag).map(|s| format!("{}.{}", s.keyspace, s.table)).collect()
            };
            assert_eq!(scope("ks"), vec!["ks2.table2", "ks2.table4"]);
            assert_eq!(scope("kt"), vec!["ks1.table3"]);
            assert_eq!(scope("tn"), vec!["ks1.table1"]);
            // no names: everything goes
            assert_eq!(status_text(c.delete(url.as_str())).await.0, 200);
            assert!(node.lock().unwrap().list_snapshots().is_empty());

            let calls = server.calls();
            assert!(calls.contains(&"POST /api/v0/ops/node/snapshots".to_string()), "{calls:?}");
            assert!(calls.contains(&"DELETE /api/v0/ops/node/snapshots?snapshotNames=medusa-b1".to_string()));
            server.stop().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validation_and_faults() {
        tokio::time::timeout(LIMIT, async {
            let (_dir, node, server) = start("api-faults").await;
            let c = client();
            let url = &server.snapshot_url;
            let bad =
                serde_json::json!({"snapshot_name": "x", "keyspaces": ["ks1"], "keyspace_tables": ["ks1.table1"]});
            assert_eq!(
                status_text(c.post(url).json(&bad)).await,
                (400, "When specifying keyspace_tables, specifying keyspaces is not allowed".to_string())
            );
            for bad in [
                serde_json::json!({"snapshot_name": "x", "table_name": "table1"}),
                serde_json::json!({"snapshot_name": "x", "keyspaces": ["ks1", "ks2"], "table_name": "table1"}),
            ] {
                assert_eq!(
                    status_text(c.post(url).json(&bad)).await,
                    (400, "Exactly 1 keyspace must be specified when specifying table_name".to_string())
                );
            }
            assert_eq!(status_text(c.post(url).body("{not json")).await.0, 400);

            server.faults().fail_snapshot_create.store(true, Ordering::SeqCst);
            let (code, body) = status_text(c.post(url).json(&serde_json::json!({"snapshot_name": "f"}))).await;
            assert_eq!(code, 500);
            assert_eq!(body, "Internal connection to Cassandra closed");
            assert!(node.lock().unwrap().list_snapshots().is_empty());
            server.faults().fail_snapshot_create.store(false, Ordering::SeqCst);

            server.faults().delay_snapshot_ms.store(300, Ordering::SeqCst);
            let started = Instant::now();
            let (code, _) = status_text(c.post(url).json(&serde_json::json!({"snapshot_name": "d"}))).await;
            assert_eq!(code, 200);
            assert!(started.elapsed() >= Duration::from_millis(300));
            server.faults().delay_snapshot_ms.store(0, Ordering::SeqCst);

            server.faults().fail_snapshot_delete.store(true, Ordering::SeqCst);
            assert_eq!(status_text(c.delete(format!("{url}?snapshotNames=d"))).await.0, 500);
            assert!(node.lock().unwrap().snapshot_exists("d"));
            server.faults().fail_snapshot_delete.store(false, Ordering::SeqCst);

            let endpoints = format!("{}/api/v0/metadata/endpoints", server.base_url);
            server.faults().fail_endpoints.store(true, Ordering::SeqCst);
            assert_eq!(status_text(c.get(&endpoints)).await.0, 500);
            server.faults().fail_readiness.store(true, Ordering::SeqCst);
            let ready = format!("{}/api/v0/probes/readiness", server.base_url);
            assert_eq!(status_text(c.get(&ready)).await.0, 500);
            server.stop().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_and_ops_endpoints() {
        tokio::time::timeout(LIMIT, async {
            let (_dir, node, server) = start("api-meta").await;
            let c = client();
            let base = &server.base_url;
            let v: serde_json::Value =
                c.get(format!("{base}/api/v0/metadata/endpoints")).send().await.unwrap().json().await.unwrap();
            let e = &entity(&v)[0];
            let (tokens, host_id) = {
                let n = node.lock().unwrap();
                (n.tokens.iter().map(i64::to_string).collect::<Vec<_>>().join(","), n.host_id.clone())
            };
            assert_eq!(e["TOKENS"], tokens.as_str());
            assert_eq!(e["HOST_ID"], host_id.as_str());
            assert_eq!((e["DC"].as_str(), e["RACK"].as_str()), (Some("dc1"), Some("default")));
            assert_eq!((e["IS_LOCAL"].as_str(), e["IS_ALIVE"].as_str()), (Some("true"), Some("true")));
            assert_eq!(e["ENDPOINT_IP"], "127.0.0.1");
            assert_eq!(e["RELEASE_VERSION"], "4.1.5");
            assert!(e["STATUS_WITH_PORT"].as_str().unwrap().starts_with("NORMAL,"));
            assert_eq!(e["NATIVE_ADDRESS_AND_PORT"], "127.0.0.1:9042");
            assert!(e["SCHEMA"].is_string() && e["LOAD"].as_str().unwrap().ends_with(".0"));

            assert_eq!(status_text(c.get(format!("{base}/api/v0/metadata/localdc"))).await, (200, "dc1".into()));
            assert_eq!(
                status_text(c.get(format!("{base}/api/v0/metadata/versions/release"))).await,
                (200, "4.1.5".into())
            );
            let ks: Vec<String> =
                c.get(format!("{base}/api/v0/ops/keyspace")).send().await.unwrap().json().await.unwrap();
            for k in ["system", "system_schema", "system_auth", "system_distributed", "system_traces", "ks1", "ks2"] {
                assert!(ks.contains(&k.to_string()), "{k} missing from {ks:?}");
            }
            let one: Vec<String> = c
                .get(format!("{base}/api/v0/ops/keyspace?keyspaceName=ks2"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(one, vec!["ks2"]);
            let tables: Vec<String> =
                c.get(format!("{base}/api/v0/ops/tables?keyspaceName=ks1")).send().await.unwrap().json().await.unwrap();
            assert_eq!(tables, vec!["table1", "table3"]);
            assert_eq!(
                status_text(c.get(format!("{base}/api/v0/ops/tables"))).await,
                (400, "List tables failed. Non-empty 'keyspaceName' must be provided".into())
            );
            assert_eq!(status_text(c.get(format!("{base}/api/v0/probes/liveness"))).await, (200, "OK".into()));
            assert_eq!(status_text(c.get(format!("{base}/api/v0/probes/readiness"))).await, (200, "OK".into()));
            assert_eq!(status_text(c.get(format!("{base}/api/v0/nope"))).await.0, 404);

            let data_dir = node.lock().unwrap().data_dir.clone();
            let before = tokio::task::spawn_blocking({
                let d = data_dir.clone();
                move || digest_data_dir(&d)
            })
            .await
            .unwrap();
            let flush =
                c.post(format!("{base}/api/v0/ops/tables/flush")).json(&serde_json::json!({"keyspace_name": "ks1"}));
            assert_eq!(status_text(flush).await, (200, "OK".into()));
            let after = tokio::task::spawn_blocking(move || digest_data_dir(&data_dir)).await.unwrap();
            assert!(after.files > before.files);
            assert!(after.entries.keys().filter(|k| !before.entries.contains_key(*k)).all(|k| k.starts_with("ks1/")));
            server.stop().await;
        })
        .await
        .expect("test timed out");
    }
}

/// Bench-sized generation (about 2 GiB): run by hand with
/// `cargo test --release -p medusa-harness --test sim -- --ignored --nocapture`.
#[test]
#[ignore = "writes about 2.2 GiB; run by hand to time the generator"]
fn bench_sized_generation_speed() {
    within(600, || {
        for (bytes, files) in [(2u64 << 30, 3_500usize), (200 << 20, 32_000)] {
            let dir = TempDir::new("bench");
            let started = Instant::now();
            let node = SimNode::generate(&dir.0, &SimSpec::sized(bytes, files, 1)).unwrap();
            let generated = started.elapsed();
            let d = digest_data_dir(&node.data_dir);
            println!(
                "sized({bytes}, {files}): {} files, {} bytes, generated in {generated:?}, digested in {:?}",
                d.files,
                d.bytes,
                started.elapsed() - generated
            );
            assert!((d.files as f64 - files as f64).abs() < files as f64 * 0.1);
            assert!((d.bytes as f64 - bytes as f64).abs() < bytes as f64 * 0.1);
        }
    });
}
