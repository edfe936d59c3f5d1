//! Hostile volumes: keyspaces and tables behind links to other volumes; data,
//! commit log and staging on separate filesystems; directories that do not exist yet; a volume
//! too small; a data directory that does not hold the snapshot. The volumes are real tmpfs
//! mounts, so this suite runs as root (CI does) and fails, never skips, otherwise.
//!
//! Every case asserts, operation by operation: a backup is complete (its manifest lists every
//! live file, links followed) or fails naming the path; a restore is exact (file digests equal
//! the backup's), links stay links with their files on their volume and no staging is left, or
//! it is refused before downloading, naming the path, with the data untouched.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::sim::DataDigest;
use medusa::format::layout::Mode;
use medusa_tests::{Env, EnvOptions, Kind, backup, list_all, live, restore_command};

const MIB: u64 = 1 << 20;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "hostile_volumes mounts tmpfs filesystems and must run as root (CI does); it does not skip"
    );
}

/// A tmpfs the test mounted, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t tmpfs at {} failed", path.display());
        Tmpfs { path: path.to_path_buf() }
    }

    fn resize(&self, size: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("running mount");
        assert!(st.success(), "remounting {} with size {size} failed", self.path.display());
    }

    fn dev(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().dev()
    }

    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.path).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Moves a tree to another filesystem (`cp -a`, then removes the original).
fn move_tree(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
    std::fs::remove_dir_all(from).unwrap();
}

/// Puts `dir` on a fresh tmpfs mounted at its own path, contents kept.
fn mount_over(dir: &Path, size: u64) -> Tmpfs {
    let aside = dir.with_extension("aside");
    std::fs::rename(dir, &aside).unwrap();
    let m = Tmpfs::mount(dir, size);
    let st = Command::new("cp").arg("-a").arg(aside.join(".")).arg(dir).status().unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&aside).unwrap();
    m
}

/// Moves `dir` onto `volume` as `volume/<rel>` and leaves a link to it at `dir`.
fn link_onto(dir: &Path, volume: &Path, rel: &str) -> PathBuf {
    let target = volume.join(rel);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    move_tree(dir, &target);
    std::os::unix::fs::symlink(&target, dir).unwrap();
    target
}

/// What a case expects of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// The backup completes, the restore is exact.
    Done,
    /// Fails (backup) or is refused before downloading (restore), naming this.
    Fails(String),
}

/// A node's layout, built on a fresh node.
struct Layout {
    mounts: Vec<Tmpfs>,
    /// Links that must stay links, each with the filesystem its files must be on.
    links: Vec<(PathBuf, u64)>,
    /// `MEDUSA_TMP_DIR`, when not the node's root.
    tmp: Option<PathBuf>,
    backup: Expect,
    /// The restore over changed data, and the one over damaged (or absent) data.
    restores: [Expect; 2],
    /// The damage before the second restore removes the data, commit log and hints directories.
    remove_dirs: bool,
}

impl Layout {
    fn plain() -> Layout {
        Layout {
            mounts: Vec::new(),
            links: Vec::new(),
            tmp: None,
            backup: Expect::Done,
            restores: [Expect::Done, Expect::Done],
            remove_dirs: false,
        }
    }
}

struct Paths {
    dir: PathBuf,
    root: PathBuf,
    data: PathBuf,
}

fn paths(env: &Env) -> Paths {
    let s = env.sim.lock().unwrap();
    Paths { dir: env.dir.path().to_path_buf(), root: s.root.clone(), data: s.data_dir.clone() }
}

/// The directory name of the first user table of `ks`.
fn table_dir_of(env: &Env, ks: &str) -> String {
    let s = env.sim.lock().unwrap();
    let t = s.user_tables().into_iter().find(|t| t.keyspace == ks).unwrap().clone();
    t.dir_name()
}

/// The cases, by name; each builds its layout on `env`'s fresh node.
const CASES: &[&str] = &[
    "one filesystem",
    "data, commitlog and staging on three filesystems",
    "keyspace linked to another volume",
    "table linked to another volume",
    "keyspace and table links, data and staging on their own filesystems",
    "absent data, commitlog and hints directories",
    "keyspace on a volume too small to stage it",
    "dangling keyspace link",
    "table linked to the root of a mount",
    "data_file_directories without the snapshot",
];

fn build(case: &str, env: &Env) -> Layout {
    let p = paths(env);
    let mut l = Layout::plain();
    match case {
        "one filesystem" => {}
        "data, commitlog and staging on three filesystems" => {
            l.mounts.push(mount_over(&p.data, 64 * MIB));
            l.mounts.push(mount_over(&p.root.join("commitlog"), 8 * MIB));
            let tmp = Tmpfs::mount(&p.dir.join("staging"), 64 * MIB);
            l.tmp = Some(tmp.path.clone());
            l.mounts.push(tmp);
        }
        "keyspace linked to another volume" => {
            let vol = Tmpfs::mount(&p.dir.join("vol-a"), 64 * MIB);
            link_onto(&p.data.join("ks1"), &vol.path, "ks1");
            l.links.push((p.data.join("ks1"), vol.dev()));
            l.mounts.push(vol);
        }
        "table linked to another volume" => {
            let vol = Tmpfs::mount(&p.dir.join("vol-b"), 64 * MIB);
            let t = p.data.join("ks2").join(table_dir_of(env, "ks2"));
            link_onto(&t, &vol.path, &format!("tables/{}", t.file_name().unwrap().to_string_lossy()));
            l.links.push((t, vol.dev()));
            l.mounts.push(vol);
        }
        "keyspace and table links, data and staging on their own filesystems" => {
            l.mounts.push(mount_over(&p.data, 64 * MIB));
            let vol = Tmpfs::mount(&p.dir.join("vol-a"), 64 * MIB);
            link_onto(&p.data.join("ks1"), &vol.path, "ks1");
            l.links.push((p.data.join("ks1"), vol.dev()));
            let t = p.data.join("ks2").join(table_dir_of(env, "ks2"));
            link_onto(&t, &vol.path, &format!("tables/{}", t.file_name().unwrap().to_string_lossy()));
            l.links.push((t, vol.dev()));
            l.mounts.push(vol);
            let tmp = Tmpfs::mount(&p.dir.join("staging"), 64 * MIB);
            l.tmp = Some(tmp.path.clone());
            l.mounts.push(tmp);
        }
        "absent data, commitlog and hints directories" => l.remove_dirs = true,
        "keyspace on a volume too small to stage it" => {
            let vol = Tmpfs::mount(&p.dir.join("vol-small"), 64 * MIB);
            link_onto(&p.data.join("ks1"), &vol.path, "ks1");
            // Room for the keyspace and a quarter more: not for a second copy of it.
            let used = vol.used();
            vol.resize((used + used / 4).div_ceil(4096) * 4096);
            l.links.push((p.data.join("ks1"), vol.dev()));
            // Refused while the old keyspace is there; once it is lost, there is room.
            l.restores[0] = Expect::Fails(vol.path.display().to_string());
            l.mounts.push(vol);
        }
        "dangling keyspace link" => {
            let missing = p.dir.join("unmounted-volume/ks9");
            std::os::unix::fs::symlink(&missing, p.data.join("ks9")).unwrap();
            l.backup = Expect::Fails(p.data.join("ks9").display().to_string());
        }
        "table linked to the root of a mount" => {
            let t = p.data.join("ks1").join(table_dir_of(env, "ks1"));
            let vol = Tmpfs::mount(&p.dir.join("vol-t"), 64 * MIB);
            let st = Command::new("cp").arg("-a").arg(t.join(".")).arg(&vol.path).status().unwrap();
            assert!(st.success());
            std::fs::remove_dir_all(&t).unwrap();
            std::os::unix::fs::symlink(&vol.path, &t).unwrap();
            l.links.push((t, vol.dev()));
            let refused = Expect::Fails(format!("{} is a mount point", vol.path.display()));
            l.restores = [refused.clone(), refused];
            l.mounts.push(vol);
        }
        "data_file_directories without the snapshot" => {
            let elsewhere = p.root.join("elsewhere");
            std::fs::create_dir_all(&elsewhere).unwrap();
            let yaml = env.sim.lock().unwrap().cassandra_yaml.clone();
            let text = std::fs::read_to_string(&yaml).unwrap();
            let from = format!("- {}", p.data.display());
            assert!(text.contains(&from), "{text}");
            std::fs::write(&yaml, text.replace(&from, &format!("- {}", elsewhere.display()))).unwrap();
            l.backup = Expect::Fails(format!("data directory {}", elsewhere.display()));
        }
        other => panic!("unknown case {other}"),
    }
    l
}

/// The manifest's files as `ks/table/rel` → size.
async fn manifest_files(env: &Env, b: &str) -> std::collections::BTreeMap<String, u64> {
    let node = env.node().unwrap();
    let key = format!("demo/{}/{b}/meta/manifest.json", env.fqdn);
    let m = medusa::format::manifest::parse(&node.storage.get_bytes(&key).await.unwrap()).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for sec in &m {
        for o in &sec.objects {
            let place = medusa::format::manifest::placement(&sec.keyspace, &o.path).unwrap();
            out.insert(format!("{}/{}/{}", sec.keyspace, sec.columnfamily, place.rel()), o.size);
        }
    }
    out
}

/// Staging directories anywhere a restore may put them.
fn leftover_staging(p: &Paths, tmp: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut look = |dir: &Path, prefix: &str| {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(e.path());
            }
        }
    };
    look(&p.root, "medusa-restore-");
    if let Some(t) = tmp {
        look(t, "medusa-restore-");
    }
    look(&p.data, ".medusa-restore-");
    for ks in std::fs::read_dir(&p.data).into_iter().flatten().flatten() {
        look(&ks.path(), ".medusa-restore-");
        for t in std::fs::read_dir(ks.path()).into_iter().flatten().flatten() {
            if let Ok(real) = std::fs::canonicalize(t.path()) {
                look(real.parent().unwrap(), ".medusa-restore-");
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Links are still links, and every file behind each is on its volume (and there are some,
/// when `filled`).
fn check_links(case: &str, l: &Layout, filled: bool) {
    for (link, dev) in &l.links {
        let meta = std::fs::symlink_metadata(link).unwrap_or_else(|e| panic!("{case}: {}: {e}", link.display()));
        assert!(meta.file_type().is_symlink(), "{case}: {} is no longer a link", link.display());
        let mut files = 0;
        for e in walkdir::WalkDir::new(link).follow_links(true) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                files += 1;
                assert_eq!(e.metadata().unwrap().dev(), *dev, "{case}: {} is not on its volume", e.path().display());
            }
        }
        assert!(files > 0 || !filled, "{case}: nothing behind {}", link.display());
    }
}

/// Loses the node's table files (through links), or its directories altogether.
fn damage(p: &Paths, l: &Layout) {
    if l.remove_dirs {
        for d in ["data", "commitlog", "hints"] {
            std::fs::remove_dir_all(p.root.join(d)).unwrap();
        }
        return;
    }
    for e in walkdir::WalkDir::new(&p.data).min_depth(3).max_depth(4).follow_links(true) {
        let e = e.unwrap();
        let in_snapshots = e.path().components().any(|c| c.as_os_str() == "snapshots" || c.as_os_str() == "backups");
        if e.file_type().is_file() && !in_snapshots {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Runs the three operations of `case`; returns how many were checked (an operation after a
/// backup that was meant to fail has nothing to check).
async fn run_case(case: &str) -> usize {
    require_root();
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let p = paths(&env);
    let layout = build(case, &env);
    let mut checked = 0;

    // 1. Backup: complete, or failed with the path and nothing published.
    let result = backup(&env.node().unwrap(), "b1", Mode::Full).await;
    checked += 1;
    let at_backup = match &layout.backup {
        Expect::Done => {
            result.unwrap_or_else(|e| panic!("{case}: backup failed: {e}"));
            let at_backup = live(&env).await;
            let manifest = manifest_files(&env, "b1").await;
            let on_disk: std::collections::BTreeMap<_, _> =
                at_backup.entries.iter().map(|(k, v)| (k.clone(), v.size)).collect();
            let missing: Vec<_> = on_disk.keys().filter(|k| !manifest.contains_key(*k)).take(5).collect();
            assert!(
                manifest == on_disk,
                "{case}: the manifest has {} files, the node {}; missing e.g. {missing:?}",
                manifest.len(),
                on_disk.len()
            );
            at_backup
        }
        Expect::Fails(path) => {
            let e = match result {
                Ok(r) => panic!("{case}: the backup succeeded ({} files) instead of failing on {path}", r.files),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(path.as_str()), "{case}: the backup's error does not name {path}: {e}");
            let keys = list_all(&env.node().unwrap()).await.unwrap();
            assert!(!keys.keys().any(|k| k.ends_with("/b1/meta/manifest.json")), "{case}: a manifest was published");
            return checked;
        }
    };

    // 2. Restore over changed data; 3. restore over lost data.
    for (i, expect) in layout.restores.iter().enumerate() {
        let key = format!("k{}", i + 1);
        if i == 0 {
            env.with_sim(|s| {
                s.flush_keyspace(7, 0.1, Some("ks2")).unwrap();
                s.compact(8).unwrap();
            })
            .await;
        } else {
            damage(&p, &layout);
        }
        let before: Option<DataDigest> = if p.data.exists() { Some(live(&env).await) } else { None };
        let last_before = std::fs::read_to_string(p.root.join(".last-restore")).ok();
        let mut cmd = restore_command(&env, "b1", &key);
        cmd.env("RUST_LOG", "info");
        if let Some(tmp) = &layout.tmp {
            cmd.env("MEDUSA_TMP_DIR", tmp);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
        let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        checked += 1;
        match expect {
            Expect::Done => {
                assert_eq!(out.status.code(), Some(0), "{case}: restore {key} failed:\n{log}");
                let got = live(&env).await;
                assert!(got == at_backup, "{case}: restore {key} is not the backup:\n{}", at_backup.diff(&got));
                check_links(case, &layout, true);
                let left = leftover_staging(&p, layout.tmp.as_deref());
                assert!(left.is_empty(), "{case}: staging left behind: {left:?}");
                for d in ["commitlog", "saved_caches", "hints"] {
                    let n = std::fs::read_dir(p.root.join(d)).map(|r| r.count());
                    assert!(matches!(n, Ok(0)), "{case}: {d} is not there and empty: {n:?}");
                }
                assert_eq!(std::fs::read_to_string(p.root.join(".last-restore")).unwrap(), format!("{key}\n"));
            }
            Expect::Fails(path) => {
                assert_ne!(out.status.code(), Some(0), "{case}: restore {key} succeeded instead of refusing:\n{log}");
                assert!(log.contains(path.as_str()), "{case}: restore {key}'s error does not name {path}:\n{log}");
                assert!(!log.contains("restore progress"), "{case}: restore {key} downloaded before refusing:\n{log}");
                let after = live(&env).await;
                let before = before.as_ref().expect("data to refuse over");
                assert!(after == *before, "{case}: a refused restore changed the data:\n{}", before.diff(&after));
                check_links(case, &layout, false);
                assert_eq!(std::fs::read_to_string(p.root.join(".last-restore")).ok(), last_before, "{case}");
                assert!(!p.root.join(format!("medusa-restore-{key}/data")).exists(), "{case}: {key} downloaded");
            }
        }
    }
    drop(layout);
    checked
}

async fn run_cases(names: &[&str]) -> usize {
    let mut checked = 0;
    for name in names {
        assert!(CASES.contains(name), "{name} is not a case");
        checked += run_case(name).await;
    }
    checked
}

/// Class 2: keyspaces and tables behind links are backed up and restored through the links;
/// a link to nothing fails the backup with its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_keyspaces_and_tables_are_backed_up_and_restored_through_their_links() {
    run_cases(&["keyspace linked to another volume", "table linked to another volume", "dangling keyspace link"]).await;
}

/// Class 3: a data directory that does not hold the snapshot fails the backup, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_found_in_no_table_fails_the_backup_naming_the_directory() {
    run_cases(&["data_file_directories without the snapshot"]).await;
}

/// Class 5: staging on other filesystems than the data still places by rename, or refuses
/// before downloading, naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_on_other_filesystems_places_by_rename_or_refuses_first() {
    run_cases(&[
        "data, commitlog and staging on three filesystems",
        "keyspace on a volume too small to stage it",
        "table linked to the root of a mount",
    ])
    .await;
}

/// Class 6: a fresh volume without data, commit log or hints directories is restored into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_directories_are_created_by_the_restore() {
    run_cases(&["absent data, commitlog and hints directories"]).await;
}

/// Every layout through every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_suite() {
    let checked = run_cases(CASES).await;
    // Written past the test harness's capture, so that CI's log shows the count.
    use std::io::Write;
    let line = format!("volume suite: {} layouts x 3 operations checked ({checked} checks run)\n", CASES.len());
    let _ = std::io::stderr().write_all(line.as_bytes());
}
