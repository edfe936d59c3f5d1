//! The `medusa-rs` command line (list-backups, status, verify, download, purge) against a bucket
//! written by the real Python Medusa (the fixture) and one written by medusa-rs on S3 (s3s-fs):
//! JSON output parsed, exit codes checked, and damage that `verify` must find.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::services::{LocalStorage, TempDir, medusa_py_fixture};
use harness::sim::{digest_data_dir, load_digest_json};
use medusa::format::layout::Mode;
use medusa_tests::{Env, EnvOptions, Kind, binary, live};
use serde_json::Value;

const FQDN: &str = "demo-dc1-default-sts-0";

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `program` (a name of the multi-call binary) with `--config ini` and `args`.
fn run_as(program: &str, ini: &Path, args: &[&str]) -> Out {
    let out = Command::new(binary(program))
        .arg("--config")
        .arg(ini)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("POD_NAME")
        .output()
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cli(ini: &Path, args: &[&str]) -> Out {
    run_as("medusa-rs", ini, args)
}

/// A copy of the fixture bucket and a medusa.ini for it (`extra` goes into `[storage]`).
fn fixture_copy(dir: &Path, extra: &str) -> (LocalStorage, PathBuf) {
    let bucket = LocalStorage::copy_of(&medusa_py_fixture().join("bucket"), "bucket").unwrap();
    let ini = dir.join("medusa.ini");
    let text = format!(
        "{}fqdn = {FQDN}\n{extra}\n[cassandra]\nconfig_file = {}\n",
        bucket.medusa_ini_storage(Some("demo")),
        dir.join("cassandra.yaml").display()
    );
    std::fs::write(&ini, text).unwrap();
    (bucket, ini)
}

/// (objects, bytes, objects with an MD5) of a manifest, counted here from its JSON.
fn manifest_totals(bytes: &[u8]) -> (u64, u64, u64) {
    let m: Value = serde_json::from_slice(bytes).unwrap();
    let mut t = (0, 0, 0);
    for section in m.as_array().unwrap() {
        for o in section["objects"].as_array().unwrap() {
            t.0 += 1;
            t.1 += o["size"].as_u64().unwrap();
            t.2 += u64::from(o["MD5"].is_string());
        }
    }
    t
}

/// The objects of a manifest: key -> (size, MD5 or null).
fn manifest_objects(bytes: &[u8]) -> BTreeMap<String, (u64, Value)> {
    let m: Value = serde_json::from_slice(bytes).unwrap();
    let mut out = BTreeMap::new();
    for section in m.as_array().unwrap() {
        for o in section["objects"].as_array().unwrap() {
            out.insert(o["path"].as_str().unwrap().to_string(), (o["size"].as_u64().unwrap(), o["MD5"].clone()));
        }
    }
    out
}

fn problems(v: &Value) -> Vec<(String, String)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap_or_default().to_string(), p["problem"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn lists_and_shows_python_medusa_backups() {
    let dir = TempDir::new("cli-py").unwrap();
    let (bucket, ini) = fixture_copy(dir.path(), "");
    let meta = |b: &str| bucket.bucket_dir().join(format!("demo/{FQDN}/{b}/meta/manifest.json"));

    let out = cli(&ini, &["list-backups", "--output", "json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    let list = v["backups"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["full-1", "diff-1", "diff-2"], "oldest first");
    for b in list {
        let name = b["name"].as_str().unwrap();
        let (objects, bytes, _) = manifest_totals(&std::fs::read(meta(name)).unwrap());
        assert_eq!((b["objects"].as_u64(), b["bytes"].as_u64()), (Some(objects), Some(bytes)), "{name}");
        assert_eq!(b["status"], "SUCCESS", "{name}");
        assert_eq!(b["complete"], true);
        assert_eq!((b["nodes"].as_u64(), b["finished_nodes"].as_u64()), (Some(1), Some(1)));
        assert_eq!(b["type"], if name == "full-1" { "full" } else { "differential" });
    }

    // Human output, run by the name Medusa's image has (`medusa list-backups`).
    let out = run_as("medusa", &ini, &["list-backups"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("SIZE"), "{}", out.stdout);
    assert!(lines[1].starts_with("full-1 ") && lines[1].contains("SUCCESS"), "{}", out.stdout);
    assert!(!out.stdout.contains("Incomplete"), "{}", out.stdout);

    let out = cli(&ini, &["status", "--backup-name", "diff-2", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    let (objects, bytes, _) = manifest_totals(&std::fs::read(meta("diff-2")).unwrap());
    assert_eq!(v["nodes"][0]["fqdn"], FQDN);
    assert_eq!(v["nodes"][0]["status"], "complete");
    assert_eq!((v["nodes"][0]["objects"].as_u64(), v["nodes"][0]["bytes"].as_u64()), (Some(objects), Some(bytes)));
    assert_eq!(v["missing_nodes"].as_array().unwrap().len(), 0);
    let text = cli(&ini, &["status", "--backup-name", "diff-2"]);
    assert!(text.stdout.contains("1 nodes completed, 0 nodes incomplete, 0 nodes missing"), "{}", text.stdout);

    // A backup that is not there: exit 3 with what to do.
    let out = cli(&ini, &["status", "--backup-name", "nope"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("no backup named nope") && out.stderr.contains("list-backups"), "{}", out.stderr);
    // A name that cannot be a backup's, and bad arguments.
    let out = cli(&ini, &["status", "--backup-name", "../x"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--backup-name"), "{}", out.stderr);
    assert_eq!(cli(&ini, &["status"]).code, Some(2));
    assert_eq!(cli(&ini, &["no-such-command"]).code, Some(2));
    // An unreadable configuration: exit 1, naming the file.
    let missing = dir.path().join("absent.ini");
    let out = cli(&missing, &["list-backups"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("absent.ini"), "{}", out.stderr);

    // An unfinished node backup (no manifest, no finish entry, as a node that died before its
    // end leaves it): IN_PROGRESS, status exits 4.
    std::fs::remove_file(meta("diff-2")).unwrap();
    let index = bucket.bucket_dir().join("demo/index/backup_index/diff-2");
    for e in std::fs::read_dir(&index).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("finished_") || name.starts_with("manifest_") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let out = cli(&ini, &["status", "--backup-name", "diff-2", "-o", "json"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(out.json()["nodes"][0]["status"], "incomplete");
    let out = cli(&ini, &["list-backups"]);
    assert!(out.stdout.contains("[Incomplete!]") && out.stdout.contains("Incomplete backups found"), "{}", out.stdout);
}

#[test]
fn verify_finds_missing_truncated_and_corrupted_objects() {
    let dir = TempDir::new("cli-verify").unwrap();
    let (bucket, ini) = fixture_copy(dir.path(), "");
    let manifest = std::fs::read(bucket.bucket_dir().join(format!("demo/{FQDN}/full-1/meta/manifest.json"))).unwrap();
    let (objects, _, hashed) = manifest_totals(&manifest);

    for deep in [false, true] {
        let mut args = vec!["verify", "--backup-name", "full-1", "-o", "json"];
        if deep {
            args.extend(["--deep", "--tmp-dir", dir.path().to_str().unwrap()]);
        }
        let out = cli(&ini, &args);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let v = out.json();
        assert_eq!(v["ok"], true);
        assert_eq!(v["objects"].as_u64(), Some(objects));
        assert_eq!(v["hashed"].as_u64(), Some(if deep { hashed } else { 0 }));
        assert!(problems(&v).is_empty());
    }
    // The differential backup re-uses files with "MD5": null: size only for those.
    let out = cli(&ini, &["verify", "--backup-name", "diff-2", "--deep", "--tmp-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("- Completion: OK!") && out.stdout.contains("- Manifest validated: OK!!"),
        "{}",
        out.stdout
    );

    // Three objects damaged: one deleted, one truncated, one changed in place (same size).
    let objs = manifest_objects(&manifest);
    let mut big = objs.iter().filter(|(_, (size, md5))| *size > 16 && md5.is_string()).map(|(k, _)| k.clone());
    let (gone, short, flipped) = (big.next().unwrap(), big.next().unwrap(), big.next().unwrap());
    let file = |k: &str| bucket.bucket_dir().join(k);
    std::fs::remove_file(file(&gone)).unwrap();
    let len = std::fs::metadata(file(&short)).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(file(&short)).unwrap().set_len(len - 7).unwrap();
    let mut bytes = std::fs::read(file(&flipped)).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(file(&flipped), &bytes).unwrap();

    let out = cli(&ini, &["verify", "--backup-name", "full-1", "-o", "json"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["ok"], false);
    let found = problems(&v);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&(gone.clone(), "missing".into())), "{found:?}");
    assert!(
        found.iter().any(|(k, p)| *k == short && p.contains(&format!("{} bytes in storage", len - 7))),
        "{found:?}"
    );

    let out = cli(
        &ini,
        &["verify", "--backup-name", "full-1", "--deep", "--tmp-dir", dir.path().to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let found = problems(&out.json());
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().any(|(k, p)| *k == flipped && p.starts_with("content differs")), "{found:?}");
    let text = cli(&ini, &["verify", "--backup-name", "full-1"]);
    assert!(
        text.stdout.contains("- Manifest validated: Incomplete!!") && text.stdout.contains(&gone),
        "{}",
        text.stdout
    );
    // `--deep` cleaned up after itself.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("medusa-rs-verify-"))
        .collect();
    assert!(left.is_empty(), "scratch directory left behind");
}

#[test]
fn downloads_python_medusa_backups_verified() {
    let fixture = medusa_py_fixture();
    let dir = TempDir::new("cli-download").unwrap();
    let (bucket, ini) = fixture_copy(dir.path(), "");
    for backup in ["full-1", "diff-2"] {
        let dest = dir.path().join(format!("dl-{backup}"));
        let out =
            cli(&ini, &["download", "--backup-name", backup, "--destination", dest.to_str().unwrap(), "-o", "json"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let want = load_digest_json(&fixture.join(format!("digests/{backup}.json")));
        let got = digest_data_dir(&dest);
        assert!(got == want, "{backup} differs from its digest:\n{}", want.diff(&got));
        assert_eq!(out.json()["files"].as_u64(), Some(want.files));
        // A second run into the now full directory refuses.
        let out = cli(&ini, &["download", "--backup-name", backup, "--destination", dest.to_str().unwrap()]);
        assert_eq!(out.code, Some(1));
        assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    }
    // Another node, and a corrupted object: nothing placed, exit non-zero with the key.
    let dest = dir.path().join("dl-other");
    let out = cli(
        &ini,
        &["download", "--backup-name", "full-1", "--destination", dest.to_str().unwrap(), "--fqdn", "other-node"],
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let manifest = std::fs::read(bucket.bucket_dir().join(format!("demo/{FQDN}/full-1/meta/manifest.json"))).unwrap();
    let (key, _) = manifest_objects(&manifest).into_iter().find(|(_, (s, m))| *s > 16 && m.is_string()).unwrap();
    let path = bucket.bucket_dir().join(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let out = cli(&ini, &["download", "--backup-name", "full-1", "--destination", dest.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(&key), "the failure names the object: {}", out.stderr);
    let placed: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(placed, [".medusa-rs-download"], "only the partial folder, no table placed");
}

#[test]
fn purge_is_a_dry_run_unless_applied() {
    let dir = TempDir::new("cli-purge").unwrap();
    let (bucket, ini) = fixture_copy(dir.path(), "max_backup_count = 2");
    let names = |ini: &Path| -> Vec<String> {
        let v = cli(ini, &["list-backups", "-o", "json"]).json();
        v["backups"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_string()).collect()
    };
    let out = cli(&ini, &["purge", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["purge"][0]["name"], "full-1");
    assert_eq!(v["purge"][0]["reason"], "beyond max_backup_count");
    assert_eq!(v["keep"].as_array().unwrap().len(), 2);
    assert!(v["deleted"].is_null());
    assert_eq!(names(&ini), ["full-1", "diff-1", "diff-2"], "a dry run deletes nothing");
    let text = cli(&ini, &["purge"]);
    assert!(text.stdout.contains("would delete") && text.stdout.contains("--apply"), "{}", text.stdout);

    let out = cli(&ini, &["purge", "--apply", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["deleted"]["backups"].as_u64(), Some(1));
    assert!(v["deleted"]["objects"].as_u64().unwrap() > 0);
    assert_eq!(names(&ini), ["diff-1", "diff-2"]);
    let left: Vec<_> = walkdir::WalkDir::new(bucket.bucket_dir().join(format!("demo/{FQDN}/full-1")))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .collect();
    assert!(left.is_empty(), "objects of full-1 left: {left:?}");
    assert_eq!(cli(&ini, &["verify", "--backup-name", "diff-2"]).code, Some(0), "what stays is whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_medusa_rs_backups_on_s3() {
    let env = Env::new(EnvOptions::new(Kind::S3sFs)).await.unwrap();
    let node = env.node().unwrap();
    medusa_tests::backup(&node, "full-a", Mode::Full).await.unwrap();
    let at_full = live(&env).await;
    medusa_tests::change_one_data_file(&env).await;
    medusa_tests::backup(&node, "diff-b", Mode::Differential).await.unwrap();
    let ini = env.ini_path.clone();
    let storage = medusa::store::Storage::from_config(&env.config().unwrap().storage).unwrap();
    let manifest = |b: &str| {
        let storage = storage.clone();
        let key = format!("{}{FQDN}/{b}/meta/manifest.json", storage.layout.root());
        async move { storage.get_bytes(&key).await.unwrap() }
    };

    let run = move |args: Vec<String>| {
        let ini = ini.clone();
        tokio::task::spawn_blocking(move || cli(&ini, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = run(args(&["list-backups", "-o", "json"])).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    let list = v["backups"].as_array().unwrap();
    // Oldest first; two backups started in the same second come in name order, as in Medusa.
    let order: Vec<(i64, &str)> =
        list.iter().map(|b| (b["started"].as_i64().unwrap(), b["name"].as_str().unwrap())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    let mut names: Vec<&str> = order.iter().map(|(_, n)| *n).collect();
    names.sort();
    assert_eq!(names, ["diff-b", "full-a"]);
    for b in list {
        let (objects, bytes, _) = manifest_totals(&manifest(b["name"].as_str().unwrap()).await);
        assert_eq!((b["objects"].as_u64(), b["bytes"].as_u64()), (Some(objects), Some(bytes)));
    }
    let tmp = env.dir.path().display().to_string();
    for b in ["full-a", "diff-b"] {
        let out = run(args(&["verify", "--backup-name", b, "--deep", "--tmp-dir", &tmp, "-o", "json"])).await.unwrap();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let v = out.json();
        let (objects, _, hashed) = manifest_totals(&manifest(b).await);
        assert_eq!(
            (v["objects"].as_u64(), v["hashed"].as_u64()),
            (Some(objects), Some(hashed)),
            "{b}: every object re-hashed"
        );
    }
    // The full backup's files, downloaded, are the node's data at the time of that backup.
    let dest = env.dir.path().join("dl");
    let out =
        run(args(&["download", "--backup-name", "full-a", "--destination", dest.to_str().unwrap()])).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let got = digest_data_dir(&dest);
    assert!(got == at_full, "download differs from the backed-up data:\n{}", at_full.diff(&got));

    // One object of the differential backup removed from the bucket: verify names it.
    let objs = manifest_objects(&manifest("diff-b").await);
    let gone = objs.keys().next().unwrap().clone();
    storage.delete(&gone).await.unwrap();
    let out = run(args(&["verify", "--backup-name", "diff-b", "-o", "json"])).await.unwrap();
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(problems(&out.json()), [(gone, "missing".to_string())]);
}

/// `storage_provider = s3` without a `region`: medusa-rs asks S3 where the bucket is (as
/// botocore follows S3's answer) instead of signing for us-east-1. moto answers the unsigned
/// HEAD with `x-amz-bucket-region`; a bucket created in eu-west-1 is found there, and one in
/// us-east-1 stays there. (moto does not check signatures, so the region's effect on signing
/// is not observable here; the log line is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_bucket_without_a_configured_region_is_looked_up() {
    let s3 = harness::services::S3Server::moto("rs-home").await.unwrap();
    let body =
        b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
    let r = s3.request(harness::services::Method::PUT, "/rs-abroad", &[], body.to_vec()).await.unwrap();
    assert!(r.status().is_success(), "create bucket in eu-west-1: {}", r.status());
    let dir = TempDir::new("region").unwrap();
    for (bucket, region) in [("rs-abroad", "eu-west-1"), ("rs-home", "us-east-1")] {
        let ini = dir.path().join(format!("{bucket}.ini"));
        std::fs::write(
            &ini,
            format!(
                "[storage]\nstorage_provider = s3\nbucket_name = {bucket}\nkey_file = {}\nhost = 127.0.0.1\n\
                 port = {}\nsecure = False\n[cassandra]\n[logging]\nlevel = INFO\n",
                s3.credentials_file.display(),
                s3.port()
            ),
        )
        .unwrap();
        let out =
            tokio::task::spawn_blocking(move || cli(&ini, &["list-backups", "-o", "json", "--verbose"])).await.unwrap();
        assert_eq!(out.code, Some(0), "{bucket}: {}", out.stderr);
        assert!(
            out.stderr.contains("S3 says the bucket is in this region") && out.stderr.contains(region),
            "{bucket}: no region {region} found:\n{}",
            out.stderr
        );
    }
}

/// `purge-decommissioned`: a node that left the ring (absent from the latest complete backup)
/// loses exactly its parts that no complete cluster backup holds; a dry run first deletes
/// nothing; the live node's folder is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_decommissioned_takes_only_the_absent_nodes_unneeded_parts() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let live_node = env.node().unwrap();
    let mut old = env.node().unwrap();
    old.fqdn = medusa::format::names::Fqdn::new("old-pod").unwrap();
    // b1: both nodes (complete: the ring is the live node's). b2: the old node alone,
    // interrupted (no manifest). b3: the live node alone, the latest complete one.
    medusa_tests::backup(&live_node, "b1", Mode::Full).await.unwrap();
    medusa_tests::backup(&old, "b1", Mode::Full).await.unwrap();
    medusa_tests::backup(&old, "b2", Mode::Full).await.unwrap();
    old.storage.delete("demo/old-pod/b2/meta/manifest.json").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    medusa_tests::backup(&live_node, "b3", Mode::Full).await.unwrap();
    let before = medusa_tests::list_all(&live_node).await.unwrap();
    let ini = env.ini_path.clone();
    let run = move |args: &'static [&'static str]| {
        let ini = ini.clone();
        tokio::task::spawn_blocking(move || cli(&ini, args))
    };

    let out = run(&["purge-decommissioned", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        v["decommissioned"],
        serde_json::json!([{"node": "old-pod", "delete": ["b2"], "keep_for_complete_backups": ["b1"]}])
    );
    assert_eq!(medusa_tests::list_all(&live_node).await.unwrap(), before, "a dry run deletes nothing");
    // The same through the sidecar's extension RPC.
    let sidecar = medusa_tests::Sidecar::start(&env).await.unwrap();
    let mut ext = medusa::service::pb::ext::medusa_extensions_client::MedusaExtensionsClient::connect(sidecar.url())
        .await
        .unwrap();
    let rpc = |apply: bool| medusa::service::pb::ext::PurgeDecommissionedRequest { apply };
    let r = ext.purge_decommissioned(rpc(false)).await.unwrap().into_inner();
    let nodes: Vec<_> = r.nodes.iter().map(|n| (n.node.as_str(), n.delete.clone(), n.keep.clone())).collect();
    assert_eq!(nodes, [("old-pod", vec!["b2".to_string()], vec!["b1".to_string()])], "{r:?}");
    assert!(!r.applied && r.objects_deleted == 0, "{r:?}");
    assert_eq!(medusa_tests::list_all(&live_node).await.unwrap(), before, "a dry run deletes nothing");

    let out = run(&["purge-decommissioned", "--apply"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("old-pod") && out.stdout.contains("deleted"), "{}", out.stdout);
    let after = medusa_tests::list_all(&live_node).await.unwrap();
    let gone: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(!gone.is_empty());
    for k in &gone {
        // Its folder, its index entries, and its latest-backup pointer (which named b2).
        assert!(k.contains("old-pod") && (k.contains("b2") || k.contains("latest_backup/old-pod/")), "deleted {k}");
    }
    assert!(after.keys().any(|k| k.contains("old-pod/b1/meta/manifest.json")), "the part b1 needs stays");
    assert!(after.keys().all(|k| !k.contains("old-pod/b2/")), "old-pod/b2 is gone");
    // Applied through the RPC now: nothing is left to delete, b1's part is still kept.
    let r = ext.purge_decommissioned(rpc(true)).await.unwrap().into_inner();
    let nodes: Vec<_> = r.nodes.iter().map(|n| (n.node.as_str(), n.delete.len(), n.keep.clone())).collect();
    assert_eq!(nodes, [("old-pod", 0, vec!["b1".to_string()])], "{r:?}");
    assert!(r.applied, "{r:?}");
    assert_eq!(medusa_tests::list_all(&live_node).await.unwrap(), after);
}

/// `fetch-tokenmap`, `get-last-complete-cluster-backup` and `report-last-backup` on the bucket
/// Python Medusa wrote:
/// Medusa's text (each node, then its tokens as Python prints a list), the stored
/// `tokenmap.json` with `--output json`, the newest complete backup's name; 3 for names and
/// buckets without one.
#[test]
fn tokenmap_last_complete_and_report_as_medusa_prints_them() {
    let dir = TempDir::new("cli-tokenmap").unwrap();
    let (bucket, ini) = fixture_copy(dir.path(), "");
    let stored: Value = serde_json::from_slice(
        &std::fs::read(bucket.bucket_dir().join(format!("demo/{FQDN}/diff-2/meta/tokenmap.json"))).unwrap(),
    )
    .unwrap();

    let out = cli(&ini, &["fetch-tokenmap", "--backup-name", "diff-2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut want = String::new();
    for (host, item) in stored.as_object().unwrap() {
        let tokens: Vec<String> = item["tokens"].as_array().unwrap().iter().map(|t| t.to_string()).collect();
        want.push_str(&format!("{host}\n[{}]\n", tokens.join(", ")));
    }
    assert_eq!(out.stdout, want);
    let out = cli(&ini, &["fetch-tokenmap", "--backup-name", "diff-2", "-o", "json"]);
    assert_eq!(out.json(), stored);
    let out = cli(&ini, &["fetch-tokenmap", "--backup-name", "nope"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);

    let out = cli(&ini, &["get-last-complete-cluster-backup"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "diff-2\n"), "{}", out.stderr);
    let out = cli(&ini, &["report-last-backup"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("Latest node backup finished ") && lines[0].ends_with(" seconds ago"),
        "{}",
        out.stdout
    );
    for line in ["Latest complete backup:", "- Name: diff-2", "Latest backup:", "- Finished: True"] {
        assert!(lines.contains(&line), "{line}: {}", out.stdout);
    }
    assert!(lines.contains(&"- Complete backup: 1 nodes have completed the backup"), "{}", out.stdout);
    // Its manifest gone, diff-2 is no longer complete: diff-1 is the newest complete one.
    std::fs::remove_file(bucket.bucket_dir().join(format!("demo/{FQDN}/diff-2/meta/manifest.json"))).unwrap();
    let out = cli(&ini, &["get-last-complete-cluster-backup", "-o", "json"]);
    assert_eq!(out.json()["backup_name"], "diff-1", "{}", out.stderr);
    let v = cli(&ini, &["report-last-backup", "--push-metrics", "-o", "json"]).json();
    assert_eq!(v["complete_cluster_backup"]["name"], "diff-1");
    assert_eq!(v["latest_cluster_backup"]["name"], "diff-2");
    assert_eq!(v["latest_cluster_backup"]["complete"], false);
    assert_eq!(v["latest_cluster_backup"]["incomplete_nodes"], serde_json::json!([FQDN]));

    let empty = TempDir::new("cli-empty").unwrap();
    let empty_ini = empty.path().join("medusa.ini");
    let text = std::fs::read_to_string(&ini).unwrap().replace("prefix = demo", "prefix = nothing-here");
    std::fs::write(&empty_ini, text).unwrap();
    let out = cli(&empty_ini, &["get-last-complete-cluster-backup"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(out.stdout, "Could not find any full backup for the cluster\n");
}

/// `delete-backup`: this node's part only (every node's with `--all-nodes`), shared files a
/// later differential backup reuses kept (it still verifies), a part that may be running
/// refused, an unknown name exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_backup_keeps_what_other_backups_need_and_refuses_a_running_part() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let node = env.node().unwrap();
    let mut other = env.node().unwrap();
    other.fqdn = medusa::format::names::Fqdn::new("other-pod").unwrap();
    for b in ["d1", "d2"] {
        medusa_tests::backup(&node, b, Mode::Differential).await.unwrap();
        medusa_tests::backup(&other, b, Mode::Differential).await.unwrap();
    }
    medusa_tests::backup(&node, "d3", Mode::Differential).await.unwrap();
    node.storage.delete(&format!("demo/{FQDN}/d3/meta/manifest.json")).await.unwrap();
    let ini = env.ini_path.clone();
    let run = move |args: &'static [&'static str]| {
        let ini = ini.clone();
        tokio::task::spawn_blocking(move || cli(&ini, args))
    };

    let out = run(&["delete-backup", "--backup-name", "d1", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["nodes"], serde_json::json!([FQDN]));
    let keys = medusa_tests::list_all(&node).await.unwrap();
    assert!(!keys.keys().any(|k| k.contains(&format!("{FQDN}/d1/"))), "this node's d1 is gone");
    assert!(keys.keys().any(|k| k.contains("other-pod/d1/meta/manifest.json")), "the other node's d1 stays");
    let out = run(&["verify", "--backup-name", "d2"]).await.unwrap();
    assert_eq!(out.code, Some(0), "d2 reuses d1's files, which must stay: {}{}", out.stdout, out.stderr);

    let out = run(&["delete-backup", "--backup-name", "d3"]).await.unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("may be running") && out.stderr.contains("nothing was deleted"), "{}", out.stderr);

    let out = run(&["delete-backup", "--backup-name", "d1", "--all-nodes"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let keys = medusa_tests::list_all(&node).await.unwrap();
    assert!(!keys.keys().any(|k| k.contains("/d1/")), "every node's d1 is gone");
    let out = run(&["delete-backup", "--backup-name", "d1", "--all-nodes"]).await.unwrap();
    assert_eq!(out.code, Some(3), "{}", out.stderr);
}
