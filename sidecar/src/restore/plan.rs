//! What a restore does to each table of the manifest (contract §6.5 step 6), decided up front.

use std::collections::HashSet;

use crate::format::layout::TableFile;
use crate::format::manifest::{Manifest, ManifestObject};

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFile {
    /// Object key.
    pub key: String,
    /// Place below the table directory.
    pub file: TableFile,
    /// Bytes.
    pub size: u64,
    /// Recorded hash, if any.
    pub md5: Option<String>,
}

/// What happens to one table directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replace the directory with exactly these files.
    Replace(Vec<FetchFile>),
    /// Remove the directory (no files in the backup, or node-identity tables of a remote
    /// restore), leaving it absent as Medusa does.
    Remove,
    /// Leave it as it is (`system_auth` on a remote restore).
    Keep,
}

/// One table of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// Keyspace directory.
    pub keyspace: String,
    /// Table directory.
    pub table: String,
    /// What to do.
    pub action: Action,
}

/// The whole plan.
#[derive(Debug, Clone, Default)]
pub struct RestorePlan {
    /// Tables, in manifest order.
    pub tables: Vec<TablePlan>,
    /// Files to fetch.
    pub files: u64,
    /// Bytes to fetch.
    pub bytes: u64,
}

/// Node-identity tables that a restore onto other nodes must not carry over: `system.local`,
/// `system.peers`, `system.peers_v2` (only in keyspace `system`: Medusa's precedence slip also
/// dropped any `peers*` table of any keyspace, contract §10.22).
fn is_node_identity(keyspace: &str, table: &str) -> bool {
    let base = table.split_once('-').map(|(b, _)| b).unwrap_or(table);
    keyspace == "system" && matches!(base, "local" | "peers" | "peers_v2")
}

fn safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\\') && !s.chars().any(char::is_control)
}

/// Plans a restore of `manifest`; `in_place` keeps system_auth out of a remote restore and
/// drops node identity. Unsafe names in a manifest (path traversal) are refused.
pub fn plan(manifest: &Manifest, in_place: bool) -> Result<RestorePlan, String> {
    let mut out = RestorePlan::default();
    let mut seen_tables = HashSet::new();
    for section in manifest {
        let (ks, table) = (&section.keyspace, &section.columnfamily);
        if !safe_component(ks) || !safe_component(table) || ks.starts_with('.') {
            return Err(format!("manifest section {ks:?}/{table:?} is not a safe directory name"));
        }
        if !seen_tables.insert((ks.clone(), table.clone())) {
            return Err(format!("manifest lists table {ks}/{table} twice"));
        }
        let action = if !in_place && ks == "system_auth" {
            Action::Keep
        } else if (!in_place && is_node_identity(ks, table)) || section.objects.is_empty() {
            Action::Remove
        } else {
            let mut files = fetch_list(ks, table, &section.objects)?;
            if !in_place && ks == crate::format::dse::SECTION {
                // DSE 6's node-local state (`metadata/nodes/`), the analog of `system.local`.
                files.retain(|f| !f.file.index_dir.as_deref().is_some_and(crate::format::dse::keeps_parent));
            }
            Action::Replace(files)
        };
        if let Action::Replace(files) = &action {
            out.files += files.len() as u64;
            out.bytes += files.iter().map(|f| f.size).sum::<u64>();
        }
        out.tables.push(TablePlan { keyspace: ks.clone(), table: table.clone(), action });
    }
    Ok(out)
}

fn fetch_list(ks: &str, table: &str, objects: &[ManifestObject]) -> Result<Vec<FetchFile>, String> {
    let mut places = HashSet::new();
    let mut files = Vec::with_capacity(objects.len());
    for o in objects {
        let file = crate::format::manifest::placement(ks, &o.path)
            .ok_or_else(|| format!("manifest object {:?} has no file name", o.path))?;
        if !safe_component(&file.name) || file.index_dir.as_deref().is_some_and(|d| !safe_component(d)) {
            return Err(format!("manifest object {:?} is not a safe file name", o.path));
        }
        if !places.insert(file.rel()) {
            return Err(format!("manifest places two objects at {ks}/{table}/{}", file.rel()));
        }
        files.push(FetchFile { key: o.path.clone(), file, size: o.size, md5: o.md5.clone() });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::ManifestSection;

    fn section(ks: &str, t: &str, files: &[&str]) -> ManifestSection {
        ManifestSection {
            keyspace: ks.into(),
            columnfamily: t.into(),
            objects: files
                .iter()
                .map(|f| ManifestObject { path: format!("p/n/data/{ks}/{t}/{f}"), md5: None, size: 1 })
                .collect(),
        }
    }

    #[test]
    fn remote_restores_drop_identity_and_keep_auth() {
        let m = vec![
            section("system", "local-7ad5", &["nb-1-big-Data.db"]),
            section("system", "peers_v2-c432", &["nb-1-big-Data.db"]),
            section("ks1", "peers-1234", &["nb-1-big-Data.db"]),
            section("system_auth", "roles-5bc5", &["nb-1-big-Data.db"]),
            section("ks1", "empty-1", &[]),
            section("ks1", "t-1", &["nb-1-big-Data.db", ".t_idx/nb-2-big-Data.db"]),
        ];
        let p = plan(&m, false).unwrap();
        let actions: Vec<_> = p
            .tables
            .iter()
            .map(|t| match &t.action {
                Action::Replace(f) => format!("replace {}", f.len()),
                Action::Remove => "remove".into(),
                Action::Keep => "keep".into(),
            })
            .collect();
        assert_eq!(actions, ["remove", "remove", "replace 1", "keep", "remove", "replace 2"]);
        assert_eq!((p.files, p.bytes), (3, 3));
        let p = plan(&m, true).unwrap();
        assert!(matches!(p.tables[0].action, Action::Replace(_)));
        assert!(matches!(p.tables[3].action, Action::Replace(_)));
    }

    #[test]
    fn dse_metadata_keeps_its_nodes_folder_in_place_only() {
        let m = vec![section("dse", "metadata", &["nodes/local", "nodes/peers", "version"])];
        let rels = |p: &RestorePlan| match &p.tables[0].action {
            Action::Replace(files) => files.iter().map(|f| f.file.rel()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rels(&plan(&m, true).unwrap()), ["nodes/local", "nodes/peers", "version"]);
        let remote = plan(&m, false).unwrap();
        assert_eq!(rels(&remote), ["version"]);
        assert_eq!(remote.files, 1);
    }

    #[test]
    fn refuses_unsafe_manifests() {
        assert!(plan(&vec![section("..", "t", &["f"])], true).is_err());
        assert!(plan(&vec![section("ks", "a/b", &["f"])], true).is_err());
        let mut s = section("ks", "t", &["f"]);
        s.objects[0].path = "p/n/data/ks/t/..".into();
        assert!(plan(&vec![s], true).is_err());
        assert!(plan(&vec![section("ks", "t", &["f", "f"])], true).unwrap_err().contains("two objects"));
    }
}
