//! Backups against real storage servers on loopback: the objects of contract §2 key for key, differential
//! reuse by content, failures that leave nothing half-done, names that exist, bad config.

use std::collections::{BTreeMap, BTreeSet};

use harness::sim::DataDigest;
use medusa::backup::{BackupError, Engine};
use medusa::format::layout::Mode;
use medusa::format::manifest::Manifest;
use medusa_tests::{ChangedFile, Env, EnvOptions, Kind, ProxyMode, backup, change_one_data_file, list_all, live};
use sha2::Digest as _;

/// Replaces `_<digits>.timestamp` so that index keys compare without their epochs.
fn norm(key: &str) -> String {
    match key.rsplit_once('_') {
        Some((head, tail)) if tail.ends_with(".timestamp") => format!("{head}_T.timestamp"),
        _ => key.to_string(),
    }
}

fn meta_keys(fqdn: &str, b: &str, mode: Mode) -> BTreeSet<String> {
    let mut k: BTreeSet<String> = [
        format!("demo/{fqdn}/{b}/meta/schema.cql"),
        format!("demo/{fqdn}/{b}/meta/tokenmap.json"),
        format!("demo/{fqdn}/{b}/meta/server_version.json"),
        format!("demo/{fqdn}/{b}/meta/manifest.json"),
        format!("demo/index/backup_index/{b}/tokenmap_{fqdn}.json"),
        format!("demo/index/backup_index/{b}/schema_{fqdn}.cql"),
        format!("demo/index/backup_index/{b}/manifest_{fqdn}.json"),
        format!("demo/index/backup_index/{b}/started_{fqdn}_T.timestamp"),
        format!("demo/index/backup_index/{b}/finished_{fqdn}_T.timestamp"),
        format!("demo/index/latest_backup/{fqdn}/tokenmap.json"),
        format!("demo/index/latest_backup/{fqdn}/backup_name.txt"),
    ]
    .into();
    if mode == Mode::Differential {
        k.insert(format!("demo/{fqdn}/{b}/meta/differential"));
        k.insert(format!("demo/index/backup_index/{b}/differential_{fqdn}"));
    }
    k
}

async fn manifest(node: &Engine, b: &str) -> Manifest {
    let key = format!("demo/{}/{b}/meta/manifest.json", node.fqdn);
    medusa::format::manifest::parse(&node.storage.get_bytes(&key).await.unwrap()).unwrap()
}

/// The manifest lists exactly the live files, and every listed object holds those bytes.
async fn check_manifest_matches(node: &Engine, b: &str, live: &DataDigest) {
    let m = manifest(node, b).await;
    let mut seen = BTreeMap::new();
    for sec in &m {
        for o in &sec.objects {
            let place = medusa::format::manifest::placement(&sec.keyspace, &o.path).unwrap();
            let rel = format!("{}/{}/{}", sec.keyspace, sec.columnfamily, place.rel());
            let bytes = node.storage.get_bytes(&o.path).await.unwrap();
            assert_eq!(bytes.len() as u64, o.size, "{}", o.path);
            let sha = hex::encode(sha2::Sha256::digest(&bytes));
            let md5 = {
                // 5 MiB parts: the part size of the multipart tests (other tests stay single-part).
                let mut h = medusa::format::digest::Hasher::new(Some(5 << 20));
                h.update(&bytes);
                h.finish()
            };
            let recorded = o.md5.as_deref().expect("medusa-rs records every hash");
            assert!(medusa::format::digest::matches(recorded, &md5), "{}: recorded {recorded}", o.path);
            seen.insert(rel, (o.size, sha));
        }
    }
    let expected: BTreeMap<_, _> = live.entries.iter().map(|(k, v)| (k.clone(), (v.size, v.sha256.clone()))).collect();
    assert_eq!(seen.len(), expected.len(), "manifest has {} files, node {}", seen.len(), expected.len());
    // Zero-byte components (the simulator writes empty Filter.db files) are objects of their
    // own, with the MD5 of the empty string in the provider's form.
    let empty: Vec<_> = m.iter().flat_map(|s| &s.objects).filter(|o| o.size == 0).collect();
    assert!(!empty.is_empty() || !live.entries.values().any(|v| v.size == 0), "empty files missing from {b}");
    for o in empty {
        let h = o.md5.as_deref().unwrap();
        assert!(h == "d41d8cd98f00b204e9800998ecf8427e" || h == "1B2M2Y8AsgTpgAmY7PhCfg==", "{}: {h}", o.path);
    }
    assert!(seen == expected, "manifest differs from the node's files");
}

async fn lifecycle(kind: Kind) {
    let env = Env::new(EnvOptions::new(kind)).await.unwrap();
    let node = env.node().unwrap();
    let fqdn = env.fqdn.clone();

    // Full: every file uploaded under the backup, plus the meta and index objects of contract §2.2.
    let before = live(&env).await;
    let r = backup(&node, "full-1", Mode::Full).await.unwrap();
    assert_eq!((r.files, r.uploaded_files), (before.files, before.files));
    assert_eq!(r.bytes, before.bytes);
    let keys: BTreeSet<String> = list_all(&node).await.unwrap().keys().map(|k| norm(k)).collect();
    let mut expected = meta_keys(&fqdn, "full-1", Mode::Full);
    expected.extend(before.entries.keys().map(|rel| format!("demo/{fqdn}/full-1/data/{rel}")));
    assert_eq!(keys, expected, "bucket after full-1");
    check_manifest_matches(&node, "full-1", &before).await;
    assert!(!env.with_sim(|s| s.snapshot_exists("medusa-full-1")).await, "snapshot left behind");
    let calls = env.api.calls();
    assert!(calls.iter().any(|c| c.starts_with("POST /api/v0/ops/node/snapshots")), "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("DELETE /api/v0/ops/node/snapshots")), "{calls:?}");
    let tokenmap = node.storage.get_bytes(&format!("demo/{fqdn}/full-1/meta/tokenmap.json")).await.unwrap();
    let tm = medusa::format::tokenmap::TokenMap::parse(&tokenmap).unwrap();
    let tokens = env.with_sim(|s| s.tokens.clone()).await;
    assert_eq!(tm.0.len(), 1);
    assert_eq!(tm.0[0].host, fqdn);
    assert_eq!(tm.0[0].tokens, tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>());
    assert_eq!((tm.0[0].dc.as_deref(), tm.0[0].rack.as_deref()), (Some("dc1"), Some("default")));
    let version = node.storage.get_bytes(&format!("demo/{fqdn}/full-1/meta/server_version.json")).await.unwrap();
    assert_eq!(&version[..], br#"{"server_type": "cassandra", "release_version": "4.1.5"}"#);

    // First differential: the shared data folder is empty, so everything is uploaded there.
    let r = backup(&node, "diff-1", Mode::Differential).await.unwrap();
    assert_eq!(r.uploaded_files, before.files);
    check_manifest_matches(&node, "diff-1", &before).await;

    // Flush + compaction: only the new files travel.
    env.with_sim(|s| {
        s.flush(7, 0.1).unwrap();
        s.compact(8).unwrap();
    })
    .await;
    let after = live(&env).await;
    let new: Vec<_> = after.entries.iter().filter(|(k, v)| before.entries.get(*k) != Some(v)).collect();
    assert!(!new.is_empty());
    let r = backup(&node, "diff-2", Mode::Differential).await.unwrap();
    assert_eq!(r.uploaded_files, new.len() as u64, "diff-2 uploads exactly the new files");
    assert_eq!(r.uploaded_bytes, new.iter().map(|(_, v)| v.size).sum::<u64>());
    assert_eq!(r.hashed_files, 0, "every unchanged file's digest came from the cache");
    check_manifest_matches(&node, "diff-2", &after).await;

    // Unchanged: no data bytes.
    let r = backup(&node, "diff-3", Mode::Differential).await.unwrap();
    assert_eq!((r.uploaded_files, r.uploaded_bytes), (0, 0));
    assert_eq!(r.files, after.files);

    // Same name and size, different content (a wiped node reusing generation numbers): uploaded
    // again, to a new key; the object diff-3 references is untouched.
    let ChangedFile { rel, old, new: changed, .. } = change_one_data_file(&env).await;
    let old_key = format!("demo/{fqdn}/data/{rel}");
    let r = backup(&node, "diff-4", Mode::Differential).await.unwrap();
    assert_eq!(r.uploaded_files, 1);
    assert_eq!(&node.storage.get_bytes(&old_key).await.unwrap()[..], &old[..], "old object overwritten");
    let m = manifest(&node, "diff-4").await;
    let entry = m
        .iter()
        .flat_map(|s| &s.objects)
        .find(|o| o.path.ends_with(&rel[rel.rfind('/').unwrap()..]) && o.path.contains("-v"))
        .unwrap();
    assert_eq!(&node.storage.get_bytes(&entry.path).await.unwrap()[..], &changed[..]);
    check_manifest_matches(&node, "diff-3", &after).await;

    // A name that exists is refused before anything is written.
    let objects = list_all(&node).await.unwrap();
    let calls = env.api.calls().len();
    let e = backup(&node, "diff-4", Mode::Differential).await.unwrap_err();
    assert!(matches!(e, BackupError::AlreadyExists(_)), "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(list_all(&node).await.unwrap(), objects);
    assert_eq!(env.api.calls().len(), calls, "no snapshot for a refused backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_local() {
    lifecycle(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_s3s_fs() {
    lifecycle(Kind::S3sFs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_moto() {
    lifecycle(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_azurite() {
    lifecycle(Kind::Azurite).await;
}

/// A weekly full and daily differential schedule: a differential backup after a full one
/// reuses the shared objects of the differentials before it, on stores whose listings carry no
/// content hash too (`local`, Azure), instead of uploading every file again under new keys.
async fn full_between_differentials(kind: Kind) {
    let env = Env::new(EnvOptions::new(kind)).await.unwrap();
    let node = env.node().unwrap();
    backup(&node, "diff-1", Mode::Differential).await.unwrap();
    backup(&node, "diff-2", Mode::Differential).await.unwrap();
    backup(&node, "full-1", Mode::Full).await.unwrap();
    // The digest cache is local state a new volume or another process lacks: without it every
    // file's digest is read again, and reuse depends on the stored hashes alone.
    std::fs::remove_dir_all(&env.state_dir).unwrap();
    let r = backup(&node, "diff-3", Mode::Differential).await.unwrap();
    assert_eq!((r.uploaded_files, r.uploaded_bytes), (0, 0), "nothing changed since diff-2: nothing travels");
    env.with_sim(|s| s.flush(11, 0.1).unwrap()).await;
    let after = live(&env).await;
    backup(&node, "full-2", Mode::Full).await.unwrap();
    let fqdn = &env.fqdn;
    let stored: BTreeMap<String, u64> = list_all(&node).await.unwrap();
    let new = after.entries.keys().filter(|k| !stored.contains_key(&format!("demo/{fqdn}/data/{k}"))).count();
    assert!(new > 0, "the flush made new files");
    let r = backup(&node, "diff-4", Mode::Differential).await.unwrap();
    assert_eq!(r.uploaded_files, new as u64, "diff-4 after full-2 uploads the new files only");
    let versioned = |k: &String| k.split('/').any(|seg| seg.rsplit_once("-v").is_some_and(|(_, h)| h.len() == 32));
    let stored = list_all(&node).await.unwrap();
    assert!(!stored.keys().any(versioned), "no versioned keys: no content changed under a name");
    check_manifest_matches(&node, "diff-4", &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_between_differentials_local() {
    full_between_differentials(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_between_differentials_azurite() {
    full_between_differentials(Kind::Azurite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prefix_layout() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.prefix = None;
    let env = Env::new(o).await.unwrap();
    let node = env.node().unwrap();
    backup(&node, "b1", Mode::Differential).await.unwrap();
    let keys = list_all(&node).await.unwrap();
    assert!(keys.contains_key(&format!("{}/b1/meta/manifest.json", env.fqdn)));
    assert!(keys.contains_key(&format!("index/latest_backup/{}/backup_name.txt", env.fqdn)));
    assert!(keys.keys().all(|k| !k.starts_with("demo/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_midway_leaves_no_manifest_and_no_snapshot() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Tcp);
    let env = Env::new(o).await.unwrap();
    let node = env.node().unwrap();
    let proxy = env.proxy.as_ref().unwrap();
    // Let the metadata and some data through, then cut the store off.
    proxy.break_after(1 << 20);
    let e = backup(&node, "broken", Mode::Full).await.unwrap_err();
    assert!(matches!(e, BackupError::Storage(_) | BackupError::Transfer(_)), "{e}");
    assert!(e.is_retryable(), "a storage outage is retryable: {e}");
    proxy.heal();
    let keys = list_all(&node).await.unwrap();
    assert!(keys.keys().any(|k| k.contains("/broken/meta/schema.cql")), "the attempt started");
    assert!(!keys.keys().any(|k| k.ends_with("/broken/meta/manifest.json")), "no manifest");
    assert!(!keys.keys().any(|k| k.contains("backup_index/broken/finished_")), "no finished_ entry");
    assert!(!keys.keys().any(|k| k.contains("latest_backup") && k.ends_with("backup_name.txt")));
    assert!(!env.with_sim(|s| s.snapshot_exists("medusa-broken")).await, "snapshot cleared on failure");
    // The node keeps working: the next backup succeeds.
    backup(&node, "after", Mode::Full).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_failure_fails_the_backup_and_writes_nothing() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let node = env.node().unwrap();
    env.api.faults().fail_snapshot_create.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = backup(&node, "b1", Mode::Full).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    assert!(list_all(&node).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_names_the_problem() {
    let env = Env::new(EnvOptions::new(Kind::S3sFs)).await.unwrap();
    let text = std::fs::read_to_string(&env.ini_path).unwrap();
    let cases = [
        (text.replace("key_file = ", "key_file = /nonexistent"), "key_file"),
        (text.replace("storage_provider = s3_compatible", "storage_provider = s4"), "unknown provider \"s4\""),
        (text.replace("concurrent_transfers = 2", "concurrent_transfers = two"), "[storage] concurrent_transfers"),
    ];
    for (ini, expected) in cases {
        std::fs::write(&env.ini_path, ini).unwrap();
        let err = match env.config() {
            Err(e) => e.to_string(),
            Ok(cfg) => Engine::open(&cfg).err().map(|e| e.to_string()).unwrap_or_default(),
        };
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

/// Files at or above `multi_part_upload_threshold` go up in `multipart_chunksize` parts; the
/// store's `<md5-of-md5s>-<parts>` ETag is checked against the bytes sent, recorded in the
/// manifest, recognised by later differential backups, and verified by a restore.
async fn multipart(kind: Kind) {
    let mut o = EnvOptions::new(kind);
    o.storage_extra = "multi_part_upload_threshold = 5MB\nmultipart_chunksize = 5MB\n".into();
    let env = Env::new(o).await.unwrap();
    let name = medusa_tests::plant_big_sstable(&env, 11 << 20).await;
    let node = env.node().unwrap();
    let recorded = |m: &Manifest| {
        m.iter().flat_map(|s| &s.objects).find(|o| o.path.ends_with(&name)).unwrap().md5.clone().unwrap()
    };
    backup(&node, "full-1", Mode::Full).await.unwrap();
    assert!(recorded(&manifest(&node, "full-1").await).ends_with("-3"), "multipart ETag expected");
    backup(&node, "d1", Mode::Differential).await.unwrap();
    let etag = recorded(&manifest(&node, "d1").await);
    assert!(etag.ends_with("-3"), "{etag}");
    let r = backup(&node, "d2", Mode::Differential).await.unwrap();
    assert_eq!((r.uploaded_files, r.hashed_files), (0, 0));
    // Without the digest cache the file is read once and matched against the stored ETag.
    std::fs::remove_dir_all(&env.state_dir).unwrap();
    let r = backup(&node, "d3", Mode::Differential).await.unwrap();
    assert_eq!(r.uploaded_files, 0);
    assert!(r.hashed_files > 0);
    assert_eq!(recorded(&manifest(&node, "d3").await), etag);
    check_manifest_matches(&node, "d3", &live(&env).await).await;
    // A restore verifies the multipart ETag and reproduces the file.
    let before = live(&env).await;
    env.with_sim(|s| s.wipe().unwrap()).await;
    let out = medusa_tests::restore_in_place(&env, "d3", "k");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(live(&env).await == before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_etags_on_moto() {
    multipart(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_etags_on_s3s_fs() {
    multipart(Kind::S3sFs).await;
}

/// Peak RSS of a process (`VmHWM`), in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib as f64 / 1024.0
}

/// With the operator's multipart settings (threshold 100 MiB, parts of 50 MiB), files just
/// below the threshold (one PUT) and above it (multipart) stream from disk: the real sidecar's
/// peak RSS stays far below the files' sizes (it held a whole file below the threshold, and
/// parts times parts in flight above it, before uploads were streamed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uploads_stream_in_bounded_memory_with_the_operators_multipart_settings() {
    use medusa::service::pb;
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "multi_part_upload_threshold = 104857600\nmultipart_chunksize = 52428800\n".into();
    let env = Env::new(o).await.unwrap();
    let sizes = [95u64 << 20, 160 << 20];
    env.with_sim(move |s| {
        use std::io::Write;
        let tables = s.user_tables();
        for (i, size) in sizes.into_iter().enumerate() {
            let p = s.table_dir(tables[i % tables.len()]).join(format!("nb-{}-big-Data.db", 900 + i));
            let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
            let mut block = vec![0u8; 1 << 20];
            for m in 0..size >> 20 {
                block.iter_mut().enumerate().for_each(|(j, b)| *b = (j as u64 * 31 + m * 7 + i as u64) as u8);
                f.write_all(&block).unwrap();
            }
        }
    })
    .await;
    let sidecar = medusa_tests::Sidecar::start(&env).await.unwrap();
    let pid = sidecar.child.as_ref().unwrap().id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let mut c = sidecar.client().await.unwrap();
    c.async_backup(pb::BackupRequest { name: "big".into(), mode: pb::backup_request::Mode::Full as i32 })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let s = c.backup_status(pb::BackupStatusRequest { backup_name: "big".into() }).await.unwrap().into_inner();
        if s.status == pb::StatusType::Success as i32 {
            break;
        }
        assert_ne!(s.status, pb::StatusType::Failed as i32, "the backup failed: {}", sidecar.log_text());
        assert!(std::time::Instant::now() < deadline, "the backup did not finish within 300 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let peak = peak_mib(pid);
    println!("sidecar peak RSS during a backup with 95 and 160 MiB SSTables: {peak:.1} MiB");
    assert!(peak < 64.0, "peak RSS {peak:.1} MiB during the backup");
    let node = env.node().unwrap();
    let m = manifest(&node, "big").await;
    let hash = |size: u64| m.iter().flat_map(|s| &s.objects).find(|o| o.size == size).unwrap().md5.clone().unwrap();
    assert!(!hash(sizes[0]).contains('-'), "below the threshold: a plain MD5");
    assert!(hash(sizes[1]).ends_with("-4"), "above: 4 parts of 50 MiB");
    // What the store holds is what the node has: every object, by the restore's own checks.
    let before = live(&env).await;
    env.with_sim(|s| s.wipe().unwrap()).await;
    let out = medusa_tests::restore_in_place(&env, "big", "k");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(live(&env).await == before);
}
