//! Durable local file operations and the one way blocking work leaves the async runtime.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` crash-safely: a staged file in the same directory, fsynced, renamed
/// over `path`, then the directory fsynced. A reader sees the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsyncs a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Flushes everything written to the filesystem that holds `path` to disk (one `syncfs`
/// instead of an fsync per file).
pub fn syncfs(path: &Path) -> std::io::Result<()> {
    nix::unistd::syncfs(std::fs::File::open(path)?).map_err(std::io::Error::from)
}

/// Runs blocking filesystem work (walks, hashing, fsync) on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| std::io::Error::other(format!("blocking task failed: {e}")))?
}

/// Reads of a file that leave the page cache as they found it: what was cached before (the
/// hot parts of SSTables the node is serving) stays, what the reads themselves brought in from
/// disk is dropped again (`posix_fadvise(DONTNEED)`) soon after it was read, instead of
/// evicting the node's hot pages. Sequential reads from offset 0 (or the offset given).
///
/// Until the first chunk that is not wholly cached, every read first asks for cached pages
/// only (`preadv2(RWF_NOWAIT)`, one syscall like a plain read). From the first miss on, the
/// rest of the file counts as brought in by these reads: the kernel's read-ahead (8 MiB here)
/// fills the following chunks, so a later hit says nothing about the node. The pages from that
/// first miss up to the read position are dropped every [`DROP_BEHIND`] bytes and when the
/// reader is dropped (the bytes must have been used by then: a `copy_file_range` from the
/// source's cache happens before the next read). On a kernel or filesystem without
/// `RWF_NOWAIT` nothing is dropped (reads as before).
#[derive(Debug)]
pub struct GentleReads<F: std::borrow::Borrow<std::fs::File>> {
    file: F,
    pos: u64,
    state: Residency,
    dropped_to: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Residency {
    /// Every chunk so far was in the cache.
    Hot,
    /// Brought in by these reads from this offset on.
    ColdFrom(u64),
    /// Cannot tell (no `RWF_NOWAIT`): no advice given.
    Unknown,
}

/// Bytes read between two drops of what the reads brought in.
pub const DROP_BEHIND: u64 = 8 << 20;

impl<F: std::borrow::Borrow<std::fs::File>> GentleReads<F> {
    /// Reads `file` from `pos` on.
    pub fn at(file: F, pos: u64) -> Self {
        GentleReads { file, pos, state: Residency::Hot, dropped_to: pos }
    }

    /// Reads at the current position (short only at the end of the file), first dropping
    /// what earlier reads brought in (see [`GentleReads::drop_behind`]).
    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.drop_behind(false);
        let mut got = 0;
        if self.state == Residency::Hot && !buf.is_empty() {
            use rustix::io::{Errno, ReadWriteFlags, preadv2};
            let f: &std::fs::File = self.file.borrow();
            let cached = loop {
                match preadv2(f, &mut [std::io::IoSliceMut::new(buf)], self.pos, ReadWriteFlags::NOWAIT) {
                    Err(Errno::INTR) => continue,
                    r => break r,
                }
            };
            match cached {
                Ok(n) if n == buf.len() => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Ok(n) => got = n,
                Err(Errno::AGAIN) => {}
                Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => self.state = Residency::Unknown,
                Err(e) => return Err(e.into()),
            }
            if self.state == Residency::Hot {
                self.state = Residency::ColdFrom(self.pos + got as u64);
            }
        }
        let f: &std::fs::File = self.file.borrow();
        loop {
            match f.read_at(&mut buf[got..], self.pos + got as u64) {
                Ok(n) => {
                    got += n;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    /// Drops what these reads brought in, up to the read position, once [`DROP_BEHIND`] bytes
    /// gathered (`all`: whatever gathered). Advice only: a failure changes nothing.
    pub fn drop_behind(&mut self, all: bool) {
        let Residency::ColdFrom(cold) = self.state else { return };
        let from = cold.max(self.dropped_to);
        if self.pos <= from || (!all && self.pos - from < DROP_BEHIND) {
            return;
        }
        let (Ok(off), Ok(len)) = (i64::try_from(from), i64::try_from(self.pos - from)) else { return };
        let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;
        let _ = nix::fcntl::posix_fadvise(self.file.borrow(), off, len, advice);
        self.dropped_to = self.pos;
    }
}

impl<F: std::borrow::Borrow<std::fs::File>> std::io::Read for GentleReads<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        GentleReads::read(self, buf)
    }
}

impl<F: std::borrow::Borrow<std::fs::File>> Drop for GentleReads<F> {
    fn drop(&mut self) {
        self.drop_behind(true);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// MiB of `path` in the page cache, as util-linux's `fincore` (mincore(2)) counts them: a
    /// probe that reads would itself start read-ahead.
    fn resident(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore").args(["-b", "-n", "-o", "RES"]).arg(path).output().unwrap();
        assert!(out.status.success(), "fincore: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap() >> 20
    }

    fn read_through(f: &std::fs::File) -> u64 {
        let mut reads = GentleReads::at(f, 0);
        let (mut buf, mut total) = (vec![0u8; 1 << 20], 0u64);
        loop {
            match reads.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n as u64,
            }
        }
    }

    fn read_through_plain(mut f: &std::fs::File) -> u64 {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap() as u64
    }

    #[test]
    fn reads_keep_cached_pages_and_drop_what_they_brought_in() {
        let dir = std::env::temp_dir().join(format!("medusa-rs-gentle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 24u64 << 20;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        for name in ["hot", "cold"] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            f.write_all_at(&data, 0).unwrap();
            f.sync_all().unwrap();
        }
        let dontneed = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;

        // A file the node reads: wholly cached before, wholly cached after.
        let hot_path = dir.join("hot");
        let hot = std::fs::File::open(&hot_path).unwrap();
        let mut whole = Vec::new();
        std::io::Read::read_to_end(&mut &hot, &mut whole).unwrap();
        assert_eq!(resident(&hot_path), 24, "a file just read is cached");
        assert_eq!(read_through(&hot), size);
        assert_eq!(resident(&hot_path), 24, "cached pages must stay cached");

        // A file nobody read lately: read whole, and not left in the cache.
        let cold_path = dir.join("cold");
        let cold = std::fs::File::open(&cold_path).unwrap();
        nix::fcntl::posix_fadvise(&cold, 0, 0, dontneed).unwrap();
        assert_eq!(resident(&cold_path), 0, "{} keeps clean pages after DONTNEED (tmpfs?)", dir.display());
        let mut reads = GentleReads::at(&cold, 0);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = Vec::new();
        loop {
            match reads.read(&mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(got == data, "the bytes read are the file's");
        // Behind the reads, at most DROP_BEHIND and the read-ahead (8 MiB each) stay cached...
        let behind = resident(&cold_path);
        assert!(behind <= 17, "{behind} of 24 MiB still cached at the end of the reads");
        drop(reads);
        // ...and after them none.
        assert_eq!(resident(&cold_path), 0, "MiB left cached after the reads");

        // The same file read plainly stays cached: what the advice changes.
        assert_eq!(read_through_plain(&cold), size);
        assert_eq!(resident(&cold_path), 24);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
