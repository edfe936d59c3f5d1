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
