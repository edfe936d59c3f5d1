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
