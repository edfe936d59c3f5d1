//! What medusa-rs needs from the node's `cassandra.yaml`: where the data lives.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// The node's directories (Cassandra's defaults when a key is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The single `data_file_directories` entry.
    pub data_dir: PathBuf,
    /// `commitlog_directory`.
    pub commitlog_dir: PathBuf,
    /// `saved_caches_directory`.
    pub saved_caches_dir: PathBuf,
    /// `hints_directory`.
    pub hints_dir: PathBuf,
    /// DSE's `metadata_directory` (default: `metadata` beside the data directory), where DSE 6
    /// keeps node-local system state; nothing there on Apache Cassandra.
    pub metadata_dir: PathBuf,
    /// The `cassandra.yaml` these came from.
    pub yaml_path: PathBuf,
}

impl NodePaths {
    /// The Cassandra root (the parent of the data directory, `/var/lib/cassandra` in the
    /// operator's pods): where `.last-restore`, `.restore_mapping/` and medusa-rs' own state live.
    pub fn root(&self) -> PathBuf {
        self.data_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/var/lib/cassandra"))
    }

    /// The directory for medusa-rs' own state (digest cache, job journal, caches, restore
    /// figures): `$MEDUSA_RS_STATE_DIR`, else `.medusa-rs` in the Cassandra root (a persistent
    /// volume in Kubernetes).
    pub fn state_dir(&self) -> PathBuf {
        match std::env::var_os("MEDUSA_RS_STATE_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => self.root().join(".medusa-rs"),
        }
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<NodePaths, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::CassandraYaml {
            path: path.to_path_buf(),
            message: format!("cannot read it ({e}); set [cassandra] config_file to the node's cassandra.yaml"),
        })?;
        NodePaths::parse(&text, path)
    }

    /// Reads the paths from the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<NodePaths, ConfigError> {
        let err = |message: String| ConfigError::CassandraYaml { path: path.to_path_buf(), message };
        let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| err(format!("not valid YAML: {e}")))?;
        let get = |key: &str| doc.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
        let data_dir = match doc.get("data_file_directories") {
            None | Some(serde_norway::Value::Null) => PathBuf::from("/var/lib/cassandra/data"),
            Some(serde_norway::Value::Sequence(dirs)) => {
                let dirs: Vec<_> = dirs.iter().filter_map(|d| d.as_str()).collect();
                match dirs.as_slice() {
                    [one] => PathBuf::from(one),
                    [] => PathBuf::from("/var/lib/cassandra/data"),
                    _ => {
                        return Err(err(format!(
                            "data_file_directories has {} entries; medusa-rs (like Medusa) supports exactly one",
                            dirs.len()
                        )));
                    }
                }
            }
            Some(serde_norway::Value::String(one)) => PathBuf::from(one),
            Some(other) => return Err(err(format!("data_file_directories must be a list of paths, not {other:?}"))),
        };
        let metadata_dir = get("metadata_directory").unwrap_or_else(|| {
            data_dir.parent().unwrap_or(Path::new("/var/lib/cassandra")).join(crate::format::dse::METADATA)
        });
        Ok(NodePaths {
            metadata_dir,
            commitlog_dir: get("commitlog_directory").unwrap_or_else(|| "/var/lib/cassandra/commitlog".into()),
            saved_caches_dir: get("saved_caches_directory").unwrap_or_else(|| "/var/lib/cassandra/saved_caches".into()),
            hints_dir: get("hints_directory").unwrap_or_else(|| "/var/lib/cassandra/hints".into()),
            data_dir,
            yaml_path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<NodePaths, ConfigError> {
        let dir = std::env::temp_dir().join(format!("medusa-yaml-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cassandra.yaml");
        std::fs::write(&p, text).unwrap();
        let r = NodePaths::load(&p);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn reads_directories_and_defaults() {
        let p = load("data_file_directories:\n  - /d/data\ncommitlog_directory: /d/cl\n").unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/d/data"));
        assert_eq!(p.commitlog_dir, PathBuf::from("/d/cl"));
        assert_eq!(p.hints_dir, PathBuf::from("/var/lib/cassandra/hints"));
        assert_eq!(p.root(), PathBuf::from("/d"));
        let p = load("cluster_name: x\n").unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/var/lib/cassandra/data"));
    }

    #[test]
    fn refuses_two_data_directories() {
        let e = load("data_file_directories: [/a, /b]\n").unwrap_err().to_string();
        assert!(e.contains("exactly one"), "{e}");
    }
}
