//! What the benches share: units, readings of `/proc/<pid>/status`, the files of a data set and
//! a settled page cache before a measured run. Each bench includes it (`mod common;`) and uses a
//! part of it, hence `dead_code` allowed here.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Files with their sizes, sorted by path ([`list_files`]).
pub type Files = [(PathBuf, u64)];

/// Every regular file below `dir` with its size, sorted by path.
pub fn list_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let (mut out, mut stack) = (Vec::new(), vec![dir.to_path_buf()]);
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), entry.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Warms the page cache (every file read once) and writes back the dirty pages of earlier runs,
/// so that no run pays for another's writes.
pub fn settle(files: &Files) -> Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    for (path, _) in files {
        let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        while f.read(&mut buf)? > 0 {}
    }
    ensure!(Command::new("sync").status().context("running sync")?.success(), "sync failed");
    Ok(())
}

/// The value of field `key` (`"VmHWM:"`, `"Name:"`, ...) in a `/proc/<pid>/status` text.
pub fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// A `kB` field of a `/proc/<pid>/status` text, in bytes.
pub fn kib(status: &str, key: &str) -> Option<u64> {
    field(status, key)?.trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    proc_status_kib(&pid.to_string(), key)
}

/// A `kB` field of `/proc/self/status`, in bytes.
pub fn own_status(key: &str) -> Result<u64> {
    proc_status_kib("self", key)
}

fn proc_status_kib(pid: &str, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    kib(&std::fs::read_to_string(&path)?, key).with_context(|| format!("no {key} in {path}"))
}

/// `bytes` in GiB, MiB or KiB, whichever reads best.
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= GIB => format!("{:.2} GiB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Throughput in MB/s (10^6 bytes per second).
pub fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

/// A filesystem made for one use (a restore, a copy): an ext4 image in a directory of images,
/// inode tables initialised up front (no background initialisation during a measurement), one
/// inode per 4 KiB, loop-mounted at a directory; unmounted and deleted when dropped. A measured
/// write into it does not inherit the free-inode and free-block state that earlier deletions
/// left (ext4 skips recently freed inodes). Needs root, `mkfs.ext4` and a free loop device.
pub struct FreshFs {
    at: PathBuf,
    image: PathBuf,
}

impl FreshFs {
    /// Makes a `bytes` ext4 in `images` and mounts it at `at` (created), without `lost+found`.
    pub fn make(at: &Path, images: &Path, bytes: u64) -> Result<FreshFs> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        std::fs::create_dir_all(at)?;
        std::fs::create_dir_all(images)?;
        let image = images.join(format!("{}.ext4", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::File::create(&image)?.set_len(bytes)?;
        let run = |cmd: &mut Command| -> Result<()> {
            let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
            ensure!(
                out.status.success(),
                "{cmd:?}: {} (--fresh-fs no measures without fresh filesystems)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-i", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(at))?;
        let fs = FreshFs { at: at.to_path_buf(), image };
        // Not a table directory: nothing of a restore's.
        std::fs::remove_dir(at.join("lost+found"))?;
        Ok(fs)
    }
}

impl Drop for FreshFs {
    /// Unmounts, waiting up to 30 s while the filesystem is busy (a background `syncfs` of the
    /// engine may still hold it for a moment after a phase), then deletes the image.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Command::new("umount").arg(&self.at).output() {
                Ok(o) if o.status.success() => {
                    let _ = std::fs::remove_file(&self.image);
                    return;
                }
                r if std::time::Instant::now() > deadline => {
                    eprintln!("umount {}: {r:?}", self.at.display());
                    return;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
}

/// The fresh filesystems of one bench, by mount point, their images in one directory; when
/// off, every call does nothing (targets stay plain directories).
pub struct Mounts {
    on: bool,
    images: PathBuf,
    map: std::sync::Mutex<std::collections::BTreeMap<PathBuf, FreshFs>>,
}

impl Mounts {
    /// Fresh filesystems when `on`, their images in `images`.
    pub fn new(on: bool, images: PathBuf) -> Mounts {
        Mounts { on, images, map: Default::default() }
    }

    /// When on: a `bytes` ext4 made and mounted at `dir` (created).
    pub fn fresh(&self, dir: &Path, bytes: u64) -> Result<()> {
        if self.on {
            let fs = FreshFs::make(dir, &self.images, bytes)?;
            self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(dir.to_path_buf(), fs);
        }
        Ok(())
    }

    /// Unmounts (and deletes) the fresh filesystem at `dir`; `None` if there is none.
    pub fn unmount(&self, dir: &Path) -> Option<()> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(dir).map(drop)
    }

    /// Whether fresh filesystems are made.
    pub fn on(&self) -> bool {
        self.on
    }
}
