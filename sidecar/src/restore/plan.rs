//! What a restore does to each table of the manifest (contract §6.5 step 6), decided up front.

use std::collections::{BTreeSet, HashSet};

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

/// Which keyspaces and tables a selective restore puts back (`RESTORE_KEYSPACES`,
/// `RESTORE_TABLES`: comma lists, Medusa's `--keyspace` / `--table`); everything else in the
/// data directory, system keyspaces included, stays as it is. Empty: everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Whole keyspaces.
    pub keyspaces: BTreeSet<String>,
    /// `keyspace.table` names.
    pub tables: BTreeSet<String>,
}

impl Selection {
    /// Reads the two comma lists; a table name must be `keyspace.table`.
    pub fn parse(keyspaces: Option<&str>, tables: Option<&str>) -> Result<Selection, String> {
        let list = |v: Option<&str>| -> BTreeSet<String> {
            v.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
        };
        let sel = Selection { keyspaces: list(keyspaces), tables: list(tables) };
        for t in &sel.tables {
            match t.split_once('.') {
                Some((k, n)) if !k.is_empty() && !n.is_empty() && !n.contains('.') => {}
                _ => return Err(format!("RESTORE_TABLES: {t:?} is not keyspace.table")),
            }
        }
        Ok(sel)
    }

    /// Whether everything is restored.
    pub fn is_all(&self) -> bool {
        self.keyspaces.is_empty() && self.tables.is_empty()
    }

    /// Whether table directory `table` (`<name>-<id>`) of `keyspace` is restored.
    fn wants(&self, keyspace: &str, table: &str) -> bool {
        self.is_all()
            || self.keyspaces.contains(keyspace)
            || self.tables.contains(&format!("{keyspace}.{}", table_name(table)))
    }
}

/// A table directory's table name: without its `-<id>` (or `-v<md5>`) suffix.
fn table_name(dir: &str) -> &str {
    dir.split_once('-').map(|(b, _)| b).unwrap_or(dir)
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
/// drops node identity; tables outside `selection` are kept as they are. Unsafe names in a
/// manifest (path traversal) are refused, and so is a selection that names a keyspace or table
/// the backup does not hold.
pub fn plan(manifest: &Manifest, in_place: bool, selection: &Selection) -> Result<RestorePlan, String> {
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
        let action = if !selection.wants(ks, table) || (!in_place && ks == "system_auth") {
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
    let held = |pred: &dyn Fn(&str, &str) -> bool| manifest.iter().any(|s| pred(&s.keyspace, &s.columnfamily));
    for ks in &selection.keyspaces {
        if !held(&|k, _| k == ks) {
            return Err(format!("RESTORE_KEYSPACES names {ks}, which this backup does not hold; nothing was touched"));
        }
    }
    for kt in &selection.tables {
        let (k, t) = kt.split_once('.').expect("checked by Selection::parse");
        if !held(&|ks, dir| ks == k && table_name(dir) == t) {
            let mut names: Vec<_> =
                manifest.iter().filter(|s| s.keyspace == k).map(|s| table_name(&s.columnfamily)).collect();
            names.dedup();
            let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(format!(
                "RESTORE_TABLES names {kt}, which this backup does not hold (its tables of {k}: {names}); nothing was touched"
            ));
        }
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
        let p = plan(&m, false, &Selection::default()).unwrap();
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
        let p = plan(&m, true, &Selection::default()).unwrap();
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
        assert_eq!(rels(&plan(&m, true, &Selection::default()).unwrap()), ["nodes/local", "nodes/peers", "version"]);
        let remote = plan(&m, false, &Selection::default()).unwrap();
        assert_eq!(rels(&remote), ["version"]);
        assert_eq!(remote.files, 1);
    }

    #[test]
    fn a_selection_keeps_everything_else() {
        let m = vec![
            section("system", "local-7ad5", &["nb-1-big-Data.db"]),
            section("shop", "orders-1", &["nb-1-big-Data.db"]),
            section("shop", "users-2", &["nb-1-big-Data.db"]),
            section("shop", "users-2-vab12", &["nb-2-big-Data.db"]),
            section("stock", "items-3", &["nb-1-big-Data.db"]),
            section("dse", "metadata", &["version"]),
        ];
        let acts = |sel: &Selection| -> Vec<&'static str> {
            plan(&m, true, sel)
                .unwrap()
                .tables
                .iter()
                .map(|t| if matches!(t.action, Action::Keep) { "keep" } else { "restore" })
                .collect()
        };
        let sel = Selection::parse(Some("stock"), Some(" shop.users ,")).unwrap();
        assert_eq!(acts(&sel), ["keep", "keep", "restore", "restore", "restore", "keep"]);
        assert_eq!(acts(&Selection::default()), ["restore"; 6]);
        let e = plan(&m, true, &Selection::parse(None, Some("shop.carts")).unwrap()).unwrap_err();
        assert!(e.contains("shop.carts") && e.contains("orders, users"), "{e}");
        let e = plan(&m, true, &Selection::parse(Some("nope"), None).unwrap()).unwrap_err();
        assert!(e.contains("RESTORE_KEYSPACES names nope"), "{e}");
        assert!(Selection::parse(None, Some("shop")).is_err());
        assert!(Selection::parse(None, Some("a.b.c")).is_err());
    }

    #[test]
    fn refuses_unsafe_manifests() {
        assert!(plan(&vec![section("..", "t", &["f"])], true, &Selection::default()).is_err());
        assert!(plan(&vec![section("ks", "a/b", &["f"])], true, &Selection::default()).is_err());
        let mut s = section("ks", "t", &["f"]);
        s.objects[0].path = "p/n/data/ks/t/..".into();
        assert!(plan(&vec![s], true, &Selection::default()).is_err());
        assert!(
            plan(&vec![section("ks", "t", &["f", "f"])], true, &Selection::default())
                .unwrap_err()
                .contains("two objects")
        );
    }
}
