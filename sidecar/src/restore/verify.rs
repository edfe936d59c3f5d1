//! Checking downloaded bytes against the hash a manifest recorded, whatever its form.

use std::path::Path;

use crate::format::digest::{ContentDigest, hash_path, matches};

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The content has the recorded hash.
    Verified,
    /// No usable hash was recorded (`null`, `no-md5-hash`): only the size was checked.
    SizeOnly,
    /// The bytes read are not as many as the manifest records.
    Size {
        /// What the manifest records.
        recorded: u64,
        /// Bytes read.
        read: u64,
    },
    /// The content differs.
    Mismatch {
        /// What the manifest says.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

/// The part size to hash with while downloading `size` bytes, for a recorded multipart ETag:
/// `chunk` (ours) when it gives the ETag's part count, else the most common part size that
/// does (a backup made with other settings).
pub fn part_size_for(recorded: Option<&str>, size: u64, chunk: u64) -> Option<u64> {
    let r = recorded?.trim().trim_matches('"');
    let (_, parts) = r.rsplit_once('-')?;
    let Ok(parts) = parts.parse::<u64>() else { return Some(chunk) };
    if parts == 0 || size.div_ceil(chunk.max(1)).max(1) == parts {
        return Some(chunk);
    }
    Some(candidate_part_sizes(size, parts).first().copied().unwrap_or(chunk))
}

/// Judges `d` (the bytes of `path`) against `recorded`. A multipart ETag made with another part
/// size than ours is re-checked with the part sizes that give its part count.
pub fn judge(recorded: Option<&str>, size: u64, d: &ContentDigest, path: &Path) -> std::io::Result<Verdict> {
    let mismatch = |actual: String| Verdict::Mismatch { expected: recorded.unwrap_or_default().to_string(), actual };
    if d.size != size {
        return Ok(Verdict::Size { recorded: size, read: d.size });
    }
    let Some(r) = recorded.map(|r| r.trim_matches('"')).filter(|r| !r.is_empty() && *r != "no-md5-hash") else {
        return Ok(Verdict::SizeOnly);
    };
    if matches(r, d) {
        return Ok(Verdict::Verified);
    }
    if let Some((_, parts)) = r.rsplit_once('-')
        && let Ok(parts) = parts.parse::<u64>()
        && parts > 0
    {
        for p in candidate_part_sizes(size, parts) {
            if d.multipart.as_ref().is_some_and(|(q, _)| *q == p) {
                continue;
            }
            let again = hash_path(path, Some(p))?;
            if matches(r, &again) {
                return Ok(Verdict::Verified);
            }
        }
        return Ok(mismatch(d.multipart.as_ref().map(|(_, e)| e.clone()).unwrap_or_else(|| d.md5_hex())));
    }
    if r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit()) || r.len() == 24 {
        return Ok(mismatch(d.md5_hex()));
    }
    // A form we cannot interpret (e.g. an SSE ETag): size only.
    Ok(Verdict::SizeOnly)
}

/// Whole-MiB part sizes that split `size` bytes into exactly `parts` parts, most common first.
fn candidate_part_sizes(size: u64, parts: u64) -> Vec<u64> {
    const MIB: u64 = 1 << 20;
    let mut out: Vec<u64> = [5, 8, 16, 50, 64, 100, 128, 256, 512].iter().map(|m| m * MIB).collect();
    let lo = size.div_ceil(parts).div_ceil(MIB);
    out.extend((lo..lo + 4).map(|m| m * MIB));
    out.retain(|p| *p > 0 && size.div_ceil(*p) == parts);
    out.dedup();
    out
}

/// Hashes and judges a file already on disk (a staged file found on resume).
pub fn check_file(recorded: Option<&str>, size: u64, part: Option<u64>, path: &Path) -> std::io::Result<Verdict> {
    let d = hash_path(path, part)?;
    judge(recorded, size, &d, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_foreign_part_sizes() {
        let dir = std::env::temp_dir().join(format!("medusa-verify-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data = vec![7u8; (12 << 20) + 3];
        std::fs::write(&path, &data).unwrap();
        let foreign = hash_path(&path, Some(5 << 20)).unwrap();
        let etag = foreign.multipart.clone().unwrap().1;
        assert!(etag.ends_with("-3"));
        let ours = hash_path(&path, Some(8 << 20)).unwrap();
        assert_eq!(judge(Some(&etag), data.len() as u64, &ours, &path).unwrap(), Verdict::Verified);
        assert!(matches!(
            judge(Some("0123456789abcdef0123456789abcdef-3"), data.len() as u64, &ours, &path).unwrap(),
            Verdict::Mismatch { .. }
        ));
        assert_eq!(judge(None, data.len() as u64, &ours, &path).unwrap(), Verdict::SizeOnly);
        // The part size to hash with: ours when it gives the ETag's part count, else the
        // foreign one.
        let size = data.len() as u64;
        assert_eq!(part_size_for(Some(&etag), size, 5 << 20), Some(5 << 20));
        assert_eq!(part_size_for(Some(&etag), size, 8 << 20), Some(5 << 20));
        assert_eq!(part_size_for(Some(&ours.multipart.clone().unwrap().1), size, 8 << 20), Some(8 << 20));
        assert_eq!(part_size_for(Some(&ours.md5_hex()), size, 8 << 20), None);
        assert_eq!(part_size_for(None, size, 8 << 20), None);
        assert_eq!(judge(Some(&ours.md5_hex()), data.len() as u64, &ours, &path).unwrap(), Verdict::Verified);
        let size = judge(Some(&ours.md5_hex()), 5, &ours, &path).unwrap();
        assert_eq!(size, Verdict::Size { recorded: 5, read: data.len() as u64 });
        assert_eq!(judge(None, 5, &ours, &path).unwrap(), size, "with no hash recorded too");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
