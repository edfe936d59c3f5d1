//! The bucket contract (contract §2): every object key medusa-rs reads or writes is spelled here, and
//! only here, so that Python Medusa and medusa-rs agree on the layout key for key.

use crate::format::names::{BackupName, Fqdn};

/// Which kind of node backup: decides where data files live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Data under `P/N/B/data/`.
    Full,
    /// Data shared by all differential backups of the node, under `P/N/data/`.
    Differential,
}

impl Mode {
    /// `"full"` / `"differential"` as Medusa spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Differential => "differential",
        }
    }
}

/// Files of the `meta/` folder of a node backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// `schema.cql`: the first object written; its existence is "the backup exists".
    Schema,
    /// `tokenmap.json`.
    Tokenmap,
    /// `server_version.json`.
    ServerVersion,
    /// `differential` marker.
    Differential,
    /// Legacy name of the differential marker (read only).
    Incremental,
    /// `manifest.json`: its existence is "the node backup is complete".
    Manifest,
    /// `failed.json`: medusa-rs' failure marker (reason and time), ignored by Python Medusa,
    /// which deletes it with the backup's folder.
    Failed,
}

impl Meta {
    fn file(self) -> &'static str {
        match self {
            Meta::Schema => "schema.cql",
            Meta::Tokenmap => "tokenmap.json",
            Meta::ServerVersion => "server_version.json",
            Meta::Differential => "differential",
            Meta::Incremental => "incremental",
            Meta::Manifest => "manifest.json",
            Meta::Failed => "failed.json",
        }
    }
}

/// Where one SSTable component sits relative to its table: `[.<index>/]<file>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableFile {
    /// Legacy secondary index sub-directory (starts with `.`), if any.
    pub index_dir: Option<String>,
    /// Component file name.
    pub name: String,
}

impl TableFile {
    /// The path below the table directory.
    pub fn rel(&self) -> String {
        match &self.index_dir {
            Some(i) => format!("{i}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Key builder for one bucket and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// `prefix` is `[storage] prefix` (`None` or empty = keys start at the bucket root).
    pub fn new(prefix: Option<&str>) -> Layout {
        let root = match prefix {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        };
        Layout { root }
    }

    /// `P/` (possibly empty).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `P/N/` — every backup folder of one node and its shared data folder.
    pub fn node_dir(&self, n: &Fqdn) -> String {
        format!("{}{n}/", self.root)
    }

    /// `P/N/B/` — everything of one node backup except shared differential data.
    pub fn node_backup_dir(&self, n: &Fqdn, b: &BackupName) -> String {
        format!("{}{n}/{b}/", self.root)
    }

    /// `P/N/B/meta/<file>`.
    pub fn meta(&self, n: &Fqdn, b: &BackupName, m: Meta) -> String {
        format!("{}{n}/{b}/meta/{}", self.root, m.file())
    }

    /// Folder that holds a node backup's data files (with trailing `/`).
    pub fn data_dir(&self, mode: Mode, n: &Fqdn, b: &BackupName) -> String {
        match mode {
            Mode::Full => format!("{}{n}/{b}/data/", self.root),
            Mode::Differential => self.shared_data_dir(n),
        }
    }

    /// `P/N/data/`: data shared by the node's differential backups.
    pub fn shared_data_dir(&self, n: &Fqdn) -> String {
        format!("{}{n}/data/", self.root)
    }

    /// The key of one data file.
    pub fn data_key(&self, mode: Mode, n: &Fqdn, b: &BackupName, ks: &str, table: &str, f: &TableFile) -> String {
        format!("{}{ks}/{table}/{}", self.data_dir(mode, n, b), f.rel())
    }

    /// The key used when the differential key of a file is taken by different content
    /// (contract §10.15: never overwrite an object that older manifests reference). The table folder
    /// gets a `-v<md5>` suffix; Python Medusa places downloads by file name (and 2i folder),
    /// so it restores these objects correctly, and never mistakes them for another table.
    pub fn versioned_data_key(&self, n: &Fqdn, ks: &str, table: &str, f: &TableFile, md5_hex: &str) -> String {
        format!("{}{ks}/{table}-v{md5_hex}/{}", self.shared_data_dir(n), f.rel())
    }

    /// `P/index/backup_index/` (with trailing `/`).
    pub fn index_root(&self) -> String {
        format!("{}index/backup_index/", self.root)
    }

    /// `P/index/backup_index/B/` (with trailing `/`: never matches `B10`).
    pub fn index_dir(&self, b: &BackupName) -> String {
        format!("{}index/backup_index/{b}/", self.root)
    }

    /// `P/index/backup_index/B/tokenmap_N.json`.
    pub fn index_tokenmap(&self, b: &BackupName, n: &Fqdn) -> String {
        format!("{}tokenmap_{n}.json", self.index_dir(b))
    }

    /// `P/index/backup_index/B/schema_N.cql`.
    pub fn index_schema(&self, b: &BackupName, n: &Fqdn) -> String {
        format!("{}schema_{n}.cql", self.index_dir(b))
    }

    /// `P/index/backup_index/B/manifest_N.json`.
    pub fn index_manifest(&self, b: &BackupName, n: &Fqdn) -> String {
        format!("{}manifest_{n}.json", self.index_dir(b))
    }

    /// `P/index/backup_index/B/differential_N`.
    pub fn index_differential(&self, b: &BackupName, n: &Fqdn) -> String {
        format!("{}differential_{n}", self.index_dir(b))
    }

    /// `P/index/backup_index/B/started_N_<epoch>.timestamp`.
    pub fn index_started(&self, b: &BackupName, n: &Fqdn, epoch: i64) -> String {
        format!("{}started_{n}_{epoch}.timestamp", self.index_dir(b))
    }

    /// `P/index/backup_index/B/finished_N_<epoch>.timestamp`.
    pub fn index_finished(&self, b: &BackupName, n: &Fqdn, epoch: i64) -> String {
        format!("{}finished_{n}_{epoch}.timestamp", self.index_dir(b))
    }

    /// `P/index/latest_backup/N/tokenmap.json`.
    pub fn latest_tokenmap(&self, n: &Fqdn) -> String {
        format!("{}index/latest_backup/{n}/tokenmap.json", self.root)
    }

    /// `P/index/latest_backup/N/backup_name.txt`.
    pub fn latest_backup_name(&self, n: &Fqdn) -> String {
        format!("{}index/latest_backup/{n}/backup_name.txt", self.root)
    }
}

/// One entry of the backup index, parsed from its key (contract §4.1). Parsing is exact: the file name
/// must be one of the known shapes for a node name that contains no `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEntry {
    /// `tokenmap_N.json`.
    Tokenmap,
    /// `schema_N.cql`.
    Schema,
    /// `manifest_N.json`.
    Manifest,
    /// `differential_N` or legacy `incremental_N`.
    Differential,
    /// `started_N_<epoch>.timestamp`.
    Started(i64),
    /// `finished_N_<epoch>.timestamp`.
    Finished(i64),
}

/// Splits an index key `P/index/backup_index/B/<file>` into (backup name, node, entry).
pub fn parse_index_key(layout: &Layout, key: &str) -> Option<(String, String, IndexEntry)> {
    let rest = key.strip_prefix(&layout.index_root())?;
    let (backup, file) = rest.split_once('/')?;
    if backup.is_empty() || file.contains('/') {
        return None;
    }
    let (node, entry) = parse_index_file(file)?;
    Some((backup.to_string(), node, entry))
}

fn parse_index_file(file: &str) -> Option<(String, IndexEntry)> {
    for (tag, is_start) in [("started_", true), ("finished_", false)] {
        if let Some(rest) = file.strip_prefix(tag).and_then(|r| r.strip_suffix(".timestamp")) {
            let (node, epoch) = rest.rsplit_once('_')?;
            let epoch: i64 = epoch.parse().ok()?;
            if node.is_empty() {
                return None;
            }
            let e = if is_start { IndexEntry::Started(epoch) } else { IndexEntry::Finished(epoch) };
            return Some((node.to_string(), e));
        }
    }
    let shapes: [(&str, &str, IndexEntry); 5] = [
        ("tokenmap_", ".json", IndexEntry::Tokenmap),
        ("schema_", ".cql", IndexEntry::Schema),
        ("manifest_", ".json", IndexEntry::Manifest),
        ("differential_", "", IndexEntry::Differential),
        ("incremental_", "", IndexEntry::Differential),
    ];
    for (pre, suf, entry) in shapes {
        if let Some(node) = file.strip_prefix(pre).and_then(|r| r.strip_suffix(suf))
            && !node.is_empty()
        {
            return Some((node.to_string(), entry));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Fqdn {
        Fqdn::new("demo-dc1-default-sts-0").unwrap()
    }
    fn b() -> BackupName {
        BackupName::new("b1").unwrap()
    }

    #[test]
    fn keys_match_the_spec_examples() {
        let l = Layout::new(Some("demo"));
        assert_eq!(l.meta(&n(), &b(), Meta::Schema), "demo/demo-dc1-default-sts-0/b1/meta/schema.cql");
        assert_eq!(
            l.index_started(&b(), &n(), 1717243200),
            "demo/index/backup_index/b1/started_demo-dc1-default-sts-0_1717243200.timestamp"
        );
        assert_eq!(l.index_differential(&b(), &n()), "demo/index/backup_index/b1/differential_demo-dc1-default-sts-0");
        assert_eq!(l.latest_backup_name(&n()), "demo/index/latest_backup/demo-dc1-default-sts-0/backup_name.txt");
        let f = TableFile { index_dir: Some(".orders_by_user".into()), name: "nb-3-big-Data.db".into() };
        assert_eq!(
            l.data_key(Mode::Differential, &n(), &b(), "shop", "orders-0a1b", &f),
            "demo/demo-dc1-default-sts-0/data/shop/orders-0a1b/.orders_by_user/nb-3-big-Data.db"
        );
        assert_eq!(
            l.data_key(Mode::Full, &n(), &b(), "shop", "orders-0a1b", &f),
            "demo/demo-dc1-default-sts-0/b1/data/shop/orders-0a1b/.orders_by_user/nb-3-big-Data.db"
        );
        let none = Layout::new(None);
        assert_eq!(none.meta(&n(), &b(), Meta::Manifest), "demo-dc1-default-sts-0/b1/meta/manifest.json");
        assert_eq!(Layout::new(Some("")), none);
    }

    #[test]
    fn index_keys_parse_exactly() {
        let l = Layout::new(Some("demo"));
        let k = l.index_finished(&b(), &n(), 42);
        assert_eq!(parse_index_key(&l, &k), Some(("b1".into(), n().to_string(), IndexEntry::Finished(42))));
        let k = l.index_tokenmap(&b(), &n());
        assert_eq!(parse_index_key(&l, &k), Some(("b1".into(), n().to_string(), IndexEntry::Tokenmap)));
        // A node whose name contains a marker word is not confused (Medusa bug, contract §10.10).
        let odd = Fqdn::new("schema_manifest-node").unwrap();
        let k = l.index_tokenmap(&b(), &odd);
        assert_eq!(parse_index_key(&l, &k).unwrap().1, "schema_manifest-node");
        let k = l.index_started(&b(), &Fqdn::new("n_1").unwrap(), 7);
        assert_eq!(parse_index_key(&l, &k), Some(("b1".into(), "n_1".into(), IndexEntry::Started(7))));
        assert_eq!(parse_index_key(&l, "demo/index/backup_index/b1/garbage"), None);
        assert_eq!(parse_index_key(&l, "demo/index/backup_index/b1/x/tokenmap_n.json"), None);
        assert_eq!(parse_index_key(&l, "other/index/backup_index/b1/tokenmap_n.json"), None);
    }
}
