//! One SSTable of the `big` format, version `nb` (Cassandra 4.1): its eight component files,
//! their realistic sizes, and writing them with deterministic pseudo-random content.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::util::{Crc32, mix_seed};

/// SSTable format version written by the simulated Cassandra 4.1.
pub const SSTABLE_VERSION: &str = "nb";

/// Components in the order Cassandra lists them in `TOC.txt`.
pub const COMPONENTS: [&str; 8] = [
    "Data.db",
    "Statistics.db",
    "Digest.crc32",
    "TOC.txt",
    "CompressionInfo.db",
    "Filter.db",
    "Index.db",
    "Summary.db",
];

/// Fixed per-SSTable bytes outside `Data.db`, on average (Statistics.db dominates).
pub(crate) const OVERHEAD_FIXED: u64 = 7_650;
/// Bytes outside `Data.db` per byte of `Data.db`, on average (index, filter, summary, ...).
pub(crate) const OVERHEAD_RATIO: f64 = 1.0 / 25.0 + 1.0 / 140.0 + 8.0 / 16_384.0 + 1.0 / 4_096.0;

/// File name of one component: `nb-<generation>-big-<component>`.
pub fn component_file_name(generation: u64, component: &str) -> String {
    format!("{SSTABLE_VERSION}-{generation}-big-{component}")
}

/// Splits `nb-12-big-Data.db` into `(12, "Data.db")`; `None` for anything else.
pub fn parse_component_name(name: &str) -> Option<(u64, &str)> {
    let mut parts = name.splitn(4, '-');
    let version = parts.next()?;
    let generation = parts.next()?.parse().ok()?;
    let format = parts.next()?;
    let component = parts.next()?;
    (version.len() == 2 && format == "big").then_some((generation, component))
}

/// What to write for one SSTable.
#[derive(Debug, Clone)]
pub(crate) struct SstablePlan {
    /// Table directory (or 2i directory) that receives the files.
    pub dir: PathBuf,
    pub generation: u64,
    pub data_size: u64,
    /// Seed of all content of this SSTable.
    pub seed: u64,
}

impl SstablePlan {
    pub(crate) fn new(dir: PathBuf, generation: u64, data_size: u64, seed: u64) -> Self {
        SstablePlan { dir, generation, data_size, seed }
    }

    /// Exact size of every component except `Digest.crc32` (which depends on the CRC digits).
    /// Every fourth generation has an empty `Filter.db` (a table without a bloom filter): real
    /// nodes hold zero-byte components (BTI's `Partitions.db`/`Rows.db` in Cassandra 5, empty
    /// filters), which a backup must store and restore like any other file.
    pub(crate) fn sizes(&self) -> [(&'static str, u64); 8] {
        let d = self.data_size;
        let mut rng = SmallRng::seed_from_u64(mix_seed(self.seed, &["sizes"]));
        let toc: u64 = COMPONENTS.iter().map(|c| c.len() as u64 + 1).sum();
        [
            ("Data.db", d),
            ("Statistics.db", rng.random_range(4_500..10_300)),
            ("Digest.crc32", 10),
            ("TOC.txt", toc),
            ("CompressionInfo.db", 43 + 8 * d.div_ceil(16_384)),
            ("Filter.db", self.filter_size(24 + d / 140 + rng.random_range(0..16))),
            ("Index.db", 32 + d / 25 + rng.random_range(0..64)),
            ("Summary.db", 56 + (d / 4_096).min(8_192)),
        ]
    }

    fn filter_size(&self, with_filter: u64) -> u64 {
        if self.generation.is_multiple_of(4) { 0 } else { with_filter }
    }

    /// Approximate total bytes of the SSTable.
    pub(crate) fn total_size(&self) -> u64 {
        self.sizes().iter().map(|(_, s)| s).sum()
    }

    /// Path of this SSTable's `Data.db`.
    pub(crate) fn data_path(&self) -> PathBuf {
        self.dir.join(component_file_name(self.generation, "Data.db"))
    }

    /// Writes all eight components; returns the `Data.db` path.
    pub(crate) fn write(&self) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let crc = write_random(&self.data_path(), self.data_size, self.seed)?;
        for (component, size) in self.sizes() {
            let path = self.dir.join(component_file_name(self.generation, component));
            match component {
                "Data.db" => {}
                "Digest.crc32" => fs::write(&path, crc.to_string())?,
                "TOC.txt" => {
                    let toc: String = COMPONENTS.iter().map(|c| format!("{c}\n")).collect();
                    fs::write(&path, toc)?;
                }
                other => {
                    write_random(&path, size, mix_seed(self.seed, &[other]))?;
                }
            }
        }
        Ok(self.data_path())
    }
}

/// Writes `size` pseudo-random (incompressible, like LZ4 output) bytes; returns their CRC-32.
fn write_random(path: &Path, size: u64, seed: u64) -> io::Result<u32> {
    const CHUNK: usize = 256 * 1024;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut file = fs::File::create(path)?;
    let mut buf = vec![0u8; CHUNK.min(size as usize)];
    let mut crc = Crc32::new();
    let mut left = size;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        rng.fill_bytes(&mut buf[..n]);
        crc.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(crc.finish())
}

/// Live SSTables directly in `dir`: generation -> size of its `Data.db` (missing dir: empty).
pub(crate) fn live_generations(dir: &Path) -> io::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((generation, component)) = parse_component_name(name) {
            let size = if component == "Data.db" { entry.metadata()?.len() } else { 0 };
            *out.entry(generation).or_insert(0) += size;
        }
    }
    Ok(out)
}

/// Next generation for a directory: one more than the highest on disk (Cassandra's rule after
/// a restart), 1 for an empty directory.
pub(crate) fn next_generation(dir: &Path) -> io::Result<u64> {
    Ok(live_generations(dir)?.keys().next_back().map_or(1, |g| g + 1))
}

/// Removes every component of one generation from `dir` (compaction's obsolete-file cleanup).
pub(crate) fn remove_generation(dir: &Path, generation: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let matches = name.to_str().and_then(parse_component_name).is_some_and(|(g, _)| g == generation);
        if matches {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(component_file_name(12, "Data.db"), "nb-12-big-Data.db");
        assert_eq!(parse_component_name("nb-12-big-Data.db"), Some((12, "Data.db")));
        assert_eq!(parse_component_name("nb-3-big-Digest.crc32"), Some((3, "Digest.crc32")));
        assert_eq!(parse_component_name("manifest.json"), None);
        assert_eq!(parse_component_name("nb_txn_flush_x.log"), None);
        let toc: usize = COMPONENTS.iter().map(|c| c.len() + 1).sum();
        assert_eq!(toc, 92, "TOC.txt is 92 bytes in the fixture");
    }
}
