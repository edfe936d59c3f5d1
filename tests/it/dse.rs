//! DSE and HCD nodes on the simulator (neither can run here). DSE 6.8's layout: the `dse_*`
//! system keyspaces and `solr_admin` as ordinary keyspaces, node-local state in
//! `<root>/metadata/` (`nodes/` plus files beside it, `*.txn` / `*.old` leftovers), DSE
//! Search's index data in `<data>/solr.data/`. A backup holds the metadata directory as Medusa
//! lays it out (section `dse`/`metadata`, `nodes/` kept in the keys, `server_type` `dse`), which
//! the real Python Medusa verifies and downloads into the places its restore uses; restore-init
//! puts it back into the metadata directory (the configured one) and empties `solr.data`.
//! HCD's data directory is Apache Cassandra's (no metadata directory, no DSE keyspaces), so it
//! is backed up and restored as Cassandra: a test pins that no DSE handling starts for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medusa::format::layout::Mode;
use medusa_tests::{Env, EnvOptions, Kind, backup, live, restore_in_place};

use super::python_interop::PyMedusa;

/// DSE 6.8's files beside the simulated node's tables; returns the metadata files that a
/// backup must hold (relative to the metadata directory, as keyed) with their bytes.
fn make_dse(root: &Path, data: &Path, metadata: &Path) -> BTreeMap<String, Vec<u8>> {
    for (ks, table) in [
        ("dse_system", "shared_data-6a6f6e5b8e7a3c1d9f0e1a2b3c4d5e6f"),
        ("dse_security", "role_options-1b2c3d4e5f60718293a4b5c6d7e8f901"),
        ("solr_admin", "solr_resources-5b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e"),
    ] {
        let dir = data.join(ks).join(table);
        std::fs::create_dir_all(&dir).unwrap();
        for c in ["Data.db", "Statistics.db", "TOC.txt"] {
            std::fs::write(dir.join(format!("bb-1-bti-{c}")), format!("{ks}.{table} {c}")).unwrap();
        }
    }
    let search = data.join("solr.data/shop.orders/index");
    std::fs::create_dir_all(&search).unwrap();
    std::fs::write(search.join("segments_1"), b"lucene").unwrap();
    std::fs::create_dir_all(metadata.join("nodes")).unwrap();
    let mut kept = BTreeMap::new();
    for (rel, body) in [("nodes/local", "host id, tokens"), ("nodes/peers", "peer list"), ("version", "6.8.50")] {
        std::fs::write(metadata.join(rel), body).unwrap();
        kept.insert(rel.to_string(), body.as_bytes().to_vec());
    }
    // Left out as Medusa leaves them out.
    std::fs::write(metadata.join("nodes/local.txn"), b"in flight").unwrap();
    std::fs::write(metadata.join("version.old"), b"6.8.40").unwrap();
    assert!(metadata.starts_with(root));
    kept
}

fn metadata_files(metadata: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(metadata)
        .min_depth(1)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().strip_prefix(metadata).unwrap().display().to_string(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Points the node's `cassandra.yaml` at another metadata directory.
fn set_metadata_directory(yaml: &Path, dir: &Path) {
    let mut text = std::fs::read_to_string(yaml).unwrap();
    text.push_str(&format!("\nmetadata_directory: {}\n", dir.display()));
    std::fs::write(yaml, text).unwrap();
}

async fn dse_round_trip(custom_metadata_dir: bool) {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let (root, data, yaml) = env.with_sim(|s| (s.root.clone(), s.data_dir.clone(), s.cassandra_yaml.clone())).await;
    let metadata: PathBuf = if custom_metadata_dir {
        let dir = root.join("dse-metadata");
        set_metadata_directory(&yaml, &dir);
        dir
    } else {
        root.join("metadata")
    };
    let kept = make_dse(&root, &data, &metadata);
    let node = env.node().unwrap();
    let before = live(&env).await;
    backup(&node, "dse-1", Mode::Full).await.unwrap();

    // The bucket: Medusa's keys, Medusa's server_version.json.
    let fqdn = &env.fqdn;
    let folder = metadata.file_name().unwrap().to_str().unwrap().to_string();
    let meta = |f: &str| format!("demo/{fqdn}/dse-1/meta/{f}");
    let version: serde_json::Value =
        serde_json::from_slice(&node.storage.get_bytes(&meta("server_version.json")).await.unwrap()).unwrap();
    assert_eq!(version["server_type"], "dse", "{version}");
    let manifest =
        medusa::format::manifest::parse(&node.storage.get_bytes(&meta("manifest.json")).await.unwrap()).unwrap();
    let section = manifest.iter().find(|s| s.keyspace == "dse").expect("a dse section");
    assert_eq!(section.columnfamily, folder);
    let keys: std::collections::BTreeSet<&str> = section.objects.iter().map(|o| o.path.as_str()).collect();
    let want: Vec<String> = kept.keys().map(|rel| format!("demo/{fqdn}/dse-1/data/dse/{folder}/{rel}")).collect();
    let want: std::collections::BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(keys, want);
    for o in &section.objects {
        let rel = o.path.rsplit_once(&format!("/{folder}/")).unwrap().1;
        assert_eq!(&node.storage.get_bytes(&o.path).await.unwrap()[..], &kept[rel][..], "{}", o.path);
    }
    for ks in ["dse_system", "dse_security", "solr_admin"] {
        assert!(manifest.iter().any(|s| s.keyspace == ks && !s.objects.is_empty()), "{ks} backed up as a keyspace");
    }
    assert!(!manifest.iter().any(|s| s.keyspace.contains("solr.data")), "search index data is never backed up");
    assert!(!metadata.join("snapshots").join("medusa-dse-1").exists(), "the metadata copy outlived the backup");

    // The real Python Medusa verifies it and downloads the metadata where its restore takes it
    // from (`<download>/dse/<folder>/nodes/...`).
    let py = PyMedusa::for_env(&env, &yaml);
    py.verify("dse-1", false).await;
    let (downloaded, _) = py.download("dse-1").await;
    for rel in kept.keys() {
        let place = format!("dse/{folder}/{rel}");
        assert!(
            downloaded.entries.contains_key(&place),
            "Python's download lacks {place}: {:?}",
            downloaded.entries.keys()
        );
    }

    // Changed after the backup: the metadata, the search index. Restore in place.
    std::fs::write(metadata.join("nodes/local"), b"changed").unwrap();
    std::fs::remove_file(metadata.join("version")).unwrap();
    std::fs::write(metadata.join("stray"), b"later").unwrap();
    std::fs::write(data.join("solr.data/shop.orders/index/segments_2"), b"later").unwrap();
    let out = restore_in_place(&env, "dse-1", "k-dse");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(metadata_files(&metadata), kept, "the metadata directory is as backed up");
    let search: Vec<_> = std::fs::read_dir(data.join("solr.data")).unwrap().collect();
    assert!(search.is_empty(), "solr.data is emptied for DSE to rebuild: {search:?}");
    assert!(!data.join("dse").exists(), "no stray <data>/dse directory (Medusa's restore leaves one)");
    let mut after = live(&env).await;
    after.entries.retain(|k, _| !k.starts_with("solr.data/"));
    let mut want = before;
    want.entries.retain(|k, _| !k.starts_with("solr.data/"));
    assert_eq!(after.entries, want.entries, "the tables, DSE keyspaces included, are as backed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dse_metadata_and_search_round_trip() {
    dse_round_trip(false).await;
}

/// `metadata_directory` set in cassandra.yaml: backed up from there and restored there (Medusa
/// cleans that one but places into `<data>/../<folder>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dse_metadata_directory_from_cassandra_yaml() {
    dse_round_trip(true).await;
}

/// HCD keeps Apache Cassandra's layout: no DSE handling starts (`server_type` stays
/// `cassandra`, no `dse` section), and a `metadata` directory that happens to exist beside the
/// data directory is neither backed up nor replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hcd_is_backed_up_as_cassandra() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let root = env.with_sim(|s| s.root.clone()).await;
    std::fs::create_dir_all(root.join("metadata")).unwrap();
    std::fs::write(root.join("metadata/keep"), b"not ours").unwrap();
    let node = env.node().unwrap();
    backup(&node, "hcd-1", Mode::Full).await.unwrap();
    let meta = |f: &str| format!("demo/{}/hcd-1/meta/{f}", env.fqdn);
    let version: serde_json::Value =
        serde_json::from_slice(&node.storage.get_bytes(&meta("server_version.json")).await.unwrap()).unwrap();
    assert_eq!(version["server_type"], "cassandra");
    let manifest =
        medusa::format::manifest::parse(&node.storage.get_bytes(&meta("manifest.json")).await.unwrap()).unwrap();
    assert!(!manifest.iter().any(|s| s.keyspace == "dse"));
    let out = restore_in_place(&env, "hcd-1", "k-hcd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(root.join("metadata/keep")).unwrap(), b"not ours");
}
