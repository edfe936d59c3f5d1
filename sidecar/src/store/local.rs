//! File-to-file transfers for the `local` provider, on the blocking pool: every chunk is read
//! once, hashed, and copied by the kernel from the page cache (`copy_file_range`, as `cp` does),
//! with plain writes of the bytes just read for small chunks and where the two filesystems
//! cannot do that. No channel, no part bookkeeping, and no fsync per file: the callers flush
//! whole filesystems once (`syncfs`), and [`WriteBack`] starts the write-back early so that this
//! flush finds little left to do.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;

use crate::format::digest::{ContentDigest, Hasher, READ_STEP as CHUNK, with_read_buffer};

/// Chunks below this size are written from the buffer they were just read into: for a small
/// file, a `write` of cache-hot bytes costs less than setting up a kernel copy (the profile of a
/// backup of 32k small files showed `copy_file_range` above `rename`).
const KERNEL_COPY_MIN: usize = 128 << 10;

/// Which side of a copy failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source.
    Read(std::io::Error),
    /// Creating or writing the destination.
    Write(std::io::Error),
    /// The source does not have the expected size (its size): nothing was copied.
    Size(u64),
}

/// Copies at most `limit` bytes of `src` (from its start) into `dst` (from its start), hashing
/// what is read with `part` as the multipart ETag part size, and adds each chunk to `done`. A
/// source longer than `limit` gives a digest one byte longer than `limit`, so the caller sees
/// the change; a shorter one gives a short digest. The source must not change during the copy
/// (snapshot SSTables and stored objects never do): the kernel copies what the hash has read.
pub fn copy_hashing(
    src: &File,
    dst: &File,
    limit: u64,
    part: Option<u64>,
    done: &AtomicU64,
) -> Result<ContentDigest, CopyError> {
    // What the copy brings into the cache from disk does not stay there (the copied bytes of a
    // chunk leave the source's cache before the next chunk is read).
    let mut reads = crate::fsutil::GentleReads::at(src, 0);
    with_read_buffer(|buf| {
        let mut h = Hasher::new(part);
        let (mut off, mut in_kernel) = (0u64, true);
        while off < limit {
            let want = (limit - off).min(CHUNK as u64) as usize;
            let n = reads.read(&mut buf[..want]).map_err(CopyError::Read)?;
            if n == 0 {
                return Ok(h.finish()); // shorter than expected: the size tells
            }
            h.update(&buf[..n]);
            let mut copied = 0;
            while in_kernel && n >= KERNEL_COPY_MIN && copied < n {
                let (mut from, mut to) = ((off + copied as u64) as i64, (off + copied as u64) as i64);
                match nix::fcntl::copy_file_range(src, Some(&mut from), dst, Some(&mut to), n - copied) {
                    Ok(0) => return Err(CopyError::Read(ErrorKind::UnexpectedEof.into())),
                    Ok(k) => copied += k,
                    Err(Errno::EINTR) => {}
                    // Across filesystems or on one without support: write what was read.
                    Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => in_kernel = false,
                    Err(e) => return Err(CopyError::Write(e.into())),
                }
            }
            if copied < n {
                dst.write_all_at(&buf[copied..n], off + copied as u64).map_err(CopyError::Write)?;
            }
            off += n as u64;
            done.fetch_add(n as u64, Ordering::Relaxed);
        }
        // A file that grew since it was listed must not be copied truncated.
        if reads.read(&mut buf[..1]).map_err(CopyError::Read)? > 0 {
            h.update(&[0]);
        }
        Ok(h.finish())
    })
}

/// Bytes written between two background flushes.
const FLUSH_EVERY: u64 = 64 << 20;

/// Starts the write-back of copies early, in the background: once `FLUSH_EVERY` bytes were
/// written since the last flush, and no flush is running, one `syncfs` of the destination's
/// filesystem runs on the blocking pool, nobody waiting for it. The closing `syncfs` that makes
/// a backup or restore durable then finds little left to write. (A per-file
/// `posix_fadvise(DONTNEED)` did the same for large files but costs ~100 µs a file, which
/// dominated backups of many small files.)
#[derive(Debug, Default)]
pub struct WriteBack {
    pending: AtomicU64,
    running: Arc<AtomicBool>,
}

impl WriteBack {
    /// Counts `bytes` just written to `file`. Must be called within a tokio runtime.
    pub fn wrote(&self, file: &Path, bytes: u64) {
        let total = self.pending.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total < FLUSH_EVERY || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.pending.store(0, Ordering::Relaxed);
        // The directory, which stays: the file itself may be renamed by then.
        let dir = file.parent().unwrap_or(file).to_path_buf();
        let running = self.running.clone();
        drop(tokio::task::spawn_blocking(move || {
            let _ = crate::fsutil::syncfs(&dir);
            running.store(false, Ordering::Release);
        }));
    }
}

/// Creates `{dest}#{n}` (the staging name `object_store`'s local store uses and leaves out of
/// listings), creating missing parent directories.
pub fn create_staged(dest: &Path) -> std::io::Result<(File, PathBuf)> {
    for n in 1u32.. {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let path = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let parent = dest.parent().ok_or(e)?;
                std::fs::create_dir_all(parent)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ErrorKind::AlreadyExists.into())
}

/// How a copy may appear under its destination name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Written in place when the name is free, which saves a rename per file. A crash can leave
    /// a partial file there; callers use this only for names that nothing references yet and
    /// that vouch for nothing (a backup's manifest is written after a flush of every copy). A
    /// taken name is still replaced atomically, as with `Whole`.
    InPlace,
    /// Staged under `{dest}#{n}`, then renamed: never visible partial.
    Whole,
}

/// Puts a copy of `src` (expected `size` bytes) at `dest` as `publish` says. A digest whose size
/// is not `size` means the file changed; nothing is then left at `dest` (nor staged).
pub fn put_copy(
    src: &Path,
    size: u64,
    dest: &Path,
    publish: Publish,
    part: Option<u64>,
    done: &AtomicU64,
) -> Result<ContentDigest, CopyError> {
    let from = File::open(src).map_err(CopyError::Read)?;
    if publish == Publish::InPlace
        && let Some(to) = create_new(dest).map_err(CopyError::Write)?
    {
        let copied = copy_hashing(&from, &to, size, part, done);
        if !matches!(&copied, Ok(d) if d.size == size) {
            remove_if_same(dest, &to);
        }
        return copied;
    }
    let (to, staged) = create_staged(dest).map_err(CopyError::Write)?;
    let copied = copy_hashing(&from, &to, size, part, done);
    drop(to);
    let keep = matches!(&copied, Ok(d) if d.size == size);
    let renamed = if keep { std::fs::rename(&staged, dest).map_err(CopyError::Write) } else { Ok(()) };
    if !keep || renamed.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    renamed?;
    copied
}

/// Creates `dest` if no file has that name (missing parents too); `None` if one has.
fn create_new(dest: &Path) -> std::io::Result<Option<File>> {
    let open = || OpenOptions::new().write(true).create_new(true).open(dest);
    let created = match open() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(dest.parent().ok_or(e)?)?;
            open()
        }
        r => r,
    };
    match created {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the failed copy `written` from `dest`, unless `dest` meanwhile names another file (a
/// concurrent writer's whole copy renamed over it).
fn remove_if_same(dest: &Path, written: &File) {
    if let (Ok(ours), Ok(there)) = (written.metadata(), std::fs::symlink_metadata(dest))
        && (ours.dev(), ours.ino()) == (there.dev(), there.ino())
    {
        let _ = std::fs::remove_file(dest);
    }
}

/// Copies `src`, which must be `size` bytes (the size its manifest records), into `dest`
/// (created or truncated; missing parents created). A source of another size is refused before
/// `dest` is created; one that grows during the copy is not copied past `size` (the digest then
/// has one byte more, see [`copy_hashing`]).
pub fn get_copy(
    src: &Path,
    dest: &Path,
    size: u64,
    part: Option<u64>,
    done: &AtomicU64,
) -> Result<ContentDigest, CopyError> {
    let from = File::open(src).map_err(CopyError::Read)?;
    let stored = from.metadata().map_err(CopyError::Read)?.len();
    if stored != size {
        return Err(CopyError::Size(stored));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(CopyError::Write)?;
    }
    let to = File::create(dest).map_err(CopyError::Write)?;
    copy_hashing(&from, &to, size, part, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8], part: Option<u64>) -> ContentDigest {
        let mut h = Hasher::new(part);
        h.update(bytes);
        h.finish()
    }

    #[test]
    fn copies_and_hashes_across_chunk_boundaries() {
        for publish in [Publish::InPlace, Publish::Whole] {
            let dir = tempdir();
            // Kernel-copied chunks, then a short tail written from the buffer.
            let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
            std::fs::write(dir.join("src"), &data).unwrap();
            let done = AtomicU64::new(0);
            let dest = dir.join("a/b/dest");
            let d = put_copy(&dir.join("src"), data.len() as u64, &dest, publish, Some(1 << 20), &done).unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), data);
            assert_eq!(d.md5, digest_of(&data, None).md5);
            assert_eq!(d.multipart, digest_of(&data, Some(1 << 20)).multipart);
            assert_eq!(done.load(Ordering::Relaxed), data.len() as u64);
            let leftovers: Vec<_> = std::fs::read_dir(dir.join("a/b")).unwrap().collect();
            assert_eq!(leftovers.len(), 1, "{publish:?}: no staged file left");
        }
    }

    #[test]
    fn a_changed_size_leaves_nothing_behind() {
        for publish in [Publish::InPlace, Publish::Whole] {
            let dir = tempdir();
            std::fs::write(dir.join("src"), b"0123456789").unwrap();
            let done = AtomicU64::new(0);
            for expected in [9, 11] {
                let d = put_copy(&dir.join("src"), expected, &dir.join("dest"), publish, None, &done).unwrap();
                assert_ne!(d.size, expected);
                assert!(!dir.join("dest").exists(), "{publish:?}");
                assert_eq!(std::fs::read_dir(&*dir).unwrap().count(), 1, "{publish:?}: only the source remains");
            }
            let copy = get_copy(&dir.join("src"), &dir.join("x/copy"), 10, None, &done).unwrap();
            assert_eq!((copy.size, std::fs::read(dir.join("x/copy")).unwrap()), (10, b"0123456789".to_vec()));
            // A source of another size than recorded: refused, nothing written.
            for recorded in [9, 11] {
                let r = get_copy(&dir.join("src"), &dir.join("y/copy"), recorded, None, &done);
                assert!(matches!(r, Err(CopyError::Size(10))), "{recorded}");
                assert!(!dir.join("y").exists());
            }
        }
    }

    #[test]
    fn a_taken_name_is_replaced_whole_never_rewritten() {
        for publish in [Publish::InPlace, Publish::Whole] {
            let dir = tempdir();
            std::fs::write(dir.join("src"), b"new content").unwrap();
            std::fs::write(dir.join("dest"), b"old").unwrap();
            // A reader holding the old file (a hard link here) must keep seeing it whole.
            std::fs::hard_link(dir.join("dest"), dir.join("reader")).unwrap();
            put_copy(&dir.join("src"), 11, &dir.join("dest"), publish, None, &AtomicU64::new(0)).unwrap();
            assert_eq!(std::fs::read(dir.join("dest")).unwrap(), b"new content");
            assert_eq!(std::fs::read(dir.join("reader")).unwrap(), b"old", "{publish:?}");
            // A failed replacement leaves the old file in place.
            put_copy(&dir.join("src"), 5, &dir.join("dest"), publish, None, &AtomicU64::new(0)).unwrap();
            assert_eq!(std::fs::read(dir.join("dest")).unwrap(), b"new content", "{publish:?}");
            assert_eq!(std::fs::read_dir(&*dir).unwrap().count(), 3, "{publish:?}: nothing staged left");
        }
    }

    #[test]
    fn small_files_are_copied_from_the_buffer() {
        let dir = tempdir();
        for size in [0, 1, KERNEL_COPY_MIN - 1, KERNEL_COPY_MIN, KERNEL_COPY_MIN + 1] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            std::fs::write(dir.join("src"), &data).unwrap();
            let dest = dir.join(format!("dest-{size}"));
            let d = put_copy(&dir.join("src"), size as u64, &dest, Publish::InPlace, None, &AtomicU64::new(0)).unwrap();
            assert_eq!((d.size, std::fs::read(&dest).unwrap()), (size as u64, data));
        }
    }

    #[test]
    fn missing_source_is_a_read_error() {
        let dir = tempdir();
        let r = get_copy(&dir.join("nope"), &dir.join("dest"), 0, None, &AtomicU64::new(0));
        assert!(matches!(r, Err(CopyError::Read(e)) if e.kind() == ErrorKind::NotFound));
    }

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> Scratch {
        let d = std::env::temp_dir().join(format!("medusa-localcopy-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}
