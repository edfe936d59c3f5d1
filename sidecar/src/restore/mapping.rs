//! Which backup node restores onto which pod: the operator's `RESTORE_MAPPING` (contract §6.2), the file
//! PrepareRestore writes (contract §6.1), and the host-map computation behind PrepareRestore.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::format::tokenmap::TokenMap;

/// One target's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostMapping {
    /// Backup node names (the first one is used).
    pub source: Vec<String>,
    /// Whether the target is a seed.
    pub seed: bool,
}

/// `{"in_place": ..., "host_map": {target: {"source": [..], "seed": ..}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RestoreMapping {
    /// `null`/absent means in place (Medusa's default).
    pub in_place: Option<bool>,
    /// Keyed by target pod name.
    pub host_map: BTreeMap<String, HostMapping>,
}

/// The shape errors point at.
const EXPECTED: &str =
    r#"{"in_place": true|false, "host_map": {"<pod>": {"source": ["<backup node>"], "seed": true|false}}}"#;

impl RestoreMapping {
    /// Parses the operator's JSON (Go's `encoding/json` of `MedusaRestoreMapping`: `in_place`
    /// null when unset, `host_map` omitted when empty) or the file PrepareRestore wrote; `origin`
    /// names where `text` came from in errors. Anything else is refused, naming the key: a
    /// misspelt key or another shape read leniently would restore in place, over this node.
    pub fn parse(text: &str, origin: &str) -> Result<RestoreMapping, String> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("{origin} is not valid JSON ({e}): {text:.200}; expected {EXPECTED}"))?;
        from_value(&v).map_err(|e| format!("{origin} is not a restore mapping: {e}; expected {EXPECTED}"))
    }

    /// The mapping a restore under `key` runs with: `env` (`RESTORE_MAPPING`), else the file
    /// PrepareRestore wrote in the Cassandra root `root`, else in place (no such file).
    pub fn requested(env: Option<&str>, root: &Path, key: &str) -> Result<RestoreMapping, String> {
        if let Some(text) = env {
            return RestoreMapping::parse(text, "RESTORE_MAPPING");
        }
        let file = root.join(".restore_mapping").join(key);
        match std::fs::read_to_string(&file) {
            Ok(text) => RestoreMapping::parse(&text, &format!("the restore mapping {}", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RestoreMapping::default()),
            Err(e) => Err(format!("cannot read the restore mapping {}: {e}", file.display())),
        }
    }

    /// Restoring onto the same nodes.
    pub fn is_in_place(&self) -> bool {
        self.in_place.unwrap_or(true)
    }

    /// The backup node whose data `target` receives.
    pub fn source_of(&self, target: &str) -> Option<&str> {
        self.host_map.get(target).and_then(|m| m.source.first()).map(String::as_str)
    }

    /// Medusa's file format (Python `json.dumps`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let v = serde_json::json!({"in_place": self.is_in_place(), "host_map": self.host_map});
        crate::format::pyjson::to_vec(&v).expect("mapping serialises")
    }
}

/// What a JSON value is, for errors.
fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn from_value(v: &Value) -> Result<RestoreMapping, String> {
    let Value::Object(fields) = v else { return Err(format!("it is {}, not an object", shape(v))) };
    let mut m = RestoreMapping::default();
    for (key, v) in fields {
        match (key.as_str(), v) {
            ("in_place", Value::Null) => m.in_place = None,
            ("in_place", Value::Bool(b)) => m.in_place = Some(*b),
            ("in_place", other) => return Err(format!("in_place is {}, not true, false or null", shape(other))),
            ("host_map", Value::Null) => {}
            ("host_map", Value::Object(targets)) => {
                for (pod, entry) in targets {
                    m.host_map.insert(pod.clone(), host_mapping(pod, entry)?);
                }
            }
            ("host_map", other) => {
                return Err(format!("host_map is {}, not an object keyed by pod name", shape(other)));
            }
            (other, _) => return Err(format!("unknown key {other:?} (the keys are in_place and host_map)")),
        }
    }
    if m.in_place == Some(false) && m.host_map.is_empty() {
        return Err("in_place is false and host_map is empty: no pod would be restored".into());
    }
    Ok(m)
}

fn host_mapping(pod: &str, v: &Value) -> Result<HostMapping, String> {
    let Value::Object(fields) = v else {
        return Err(format!("host_map entry {pod:?} is {}, not an object", shape(v)));
    };
    let (mut source, mut seed) = (None, false);
    for (key, v) in fields {
        match (key.as_str(), v) {
            ("source", Value::Array(nodes)) => {
                let names = nodes.iter().map(|n| n.as_str().filter(|n| !n.is_empty()).map(str::to_string));
                let names: Option<Vec<String>> = names.collect();
                let names = names.filter(|n| !n.is_empty()).ok_or_else(|| {
                    format!("host_map entry {pod:?}: source must list the backup node's name, not {v}")
                })?;
                source = Some(names);
            }
            ("source", other) => {
                return Err(format!("host_map entry {pod:?}: source is {}, not a list of node names", shape(other)));
            }
            ("seed", Value::Bool(b)) => seed = *b,
            ("seed", other) => {
                return Err(format!("host_map entry {pod:?}: seed is {}, not true or false", shape(other)));
            }
            (other, _) => {
                return Err(format!("host_map entry {pod:?}: unknown key {other:?} (the keys are source and seed)"));
            }
        }
    }
    let source = source.ok_or_else(|| format!("host_map entry {pod:?} has no source"))?;
    Ok(HostMapping { source, seed })
}

fn racks(tm: &TokenMap) -> BTreeMap<String, Vec<&crate::format::tokenmap::RingNode>> {
    let mut r: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for n in &tm.0 {
        r.entry(n.rack.clone().unwrap_or_default()).or_default().push(n);
    }
    for nodes in r.values_mut() {
        nodes.sort_by(|a, b| a.host.cmp(&b.host));
    }
    r
}

/// PrepareRestore's host map (contract §6.1 step 3, with the operator's pairing): every current node must
/// be up; racks (sorted by name) are paired positionally, and inside a rack hosts sorted by
/// name, except that an in-place restore pairs every node with itself. A different topology
/// (node count, per-rack counts, tokens per node) cannot be restored by an init container and
/// is refused with the difference spelled out.
pub fn host_map(backup: &TokenMap, current: &TokenMap, seeds: &[String]) -> Result<RestoreMapping, String> {
    // A mapping that restores no pod, or names a nameless node, would be refused when read.
    if backup.0.is_empty() {
        return Err("the backup's tokenmap lists no node".into());
    }
    if let Some(n) = backup.0.iter().chain(&current.0).find(|n| n.host.is_empty()) {
        return Err(format!(
            "a node of the ring has no name (tokens {:?})",
            n.tokens.iter().take(3).collect::<Vec<_>>()
        ));
    }
    if let Some(down) = current.0.iter().find(|n| !n.is_up) {
        return Err(format!("node {} is down; every node of the datacenter must be up", down.host));
    }
    let in_place = backup.0.iter().any(|b| current.node(&b.host).is_some());
    let (br, cr) = (racks(backup), racks(current));
    let shape =
        |r: &BTreeMap<String, Vec<&crate::format::tokenmap::RingNode>>| r.values().map(Vec::len).collect::<Vec<_>>();
    if backup.0.len() != current.0.len() || shape(&br) != shape(&cr) {
        return Err(format!(
            "topology differs: the backup has {} nodes in racks {:?}, the datacenter has {} nodes in racks {:?}",
            backup.0.len(),
            br.iter().map(|(k, v)| (k.as_str(), v.len())).collect::<Vec<_>>(),
            current.0.len(),
            cr.iter().map(|(k, v)| (k.as_str(), v.len())).collect::<Vec<_>>()
        ));
    }
    let tokens = |tm: &TokenMap| tm.0.first().map(|n| n.tokens.len()).unwrap_or(0);
    if tokens(backup) != tokens(current) {
        return Err(format!(
            "the backup's nodes have {} tokens each, the datacenter's {}",
            tokens(backup),
            tokens(current)
        ));
    }
    let mut host_map = BTreeMap::new();
    if in_place {
        for n in &backup.0 {
            if current.node(&n.host).is_none() {
                return Err(format!("in-place restore: backup node {} is not in the datacenter", n.host));
            }
            host_map
                .insert(n.host.clone(), HostMapping { source: vec![n.host.clone()], seed: seeds.contains(&n.host) });
        }
    } else {
        for ((_, src), (_, dst)) in br.iter().zip(cr.iter()) {
            for (s, d) in src.iter().zip(dst.iter()) {
                host_map.insert(
                    d.host.clone(),
                    HostMapping { source: vec![s.host.clone()], seed: seeds.contains(&d.host) },
                );
            }
        }
    }
    Ok(RestoreMapping { in_place: Some(in_place), host_map })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(nodes: &[(&str, &str)]) -> TokenMap {
        TokenMap(
            nodes
                .iter()
                .enumerate()
                .map(|(i, (h, r))| crate::format::tokenmap::RingNode {
                    host: h.to_string(),
                    tokens: vec![i.to_string()],
                    is_up: true,
                    rack: Some(r.to_string()),
                    dc: Some("dc1".into()),
                })
                .collect(),
        )
    }

    #[test]
    fn parses_the_operator_json() {
        let parse = |t: &str| RestoreMapping::parse(t, "RESTORE_MAPPING");
        let m = parse(r#"{"in_place":false,"host_map":{"new-0":{"source":["old-0"],"seed":false}}}"#).unwrap();
        assert!(!m.is_in_place());
        assert_eq!(m.source_of("new-0"), Some("old-0"));
        assert_eq!(m.source_of("new-1"), None);
        assert!(parse(r#"{"in_place":null}"#).unwrap().is_in_place());
        assert!(parse(r#"{"in_place":true}"#).unwrap().is_in_place());
        assert!(parse("{}").unwrap().is_in_place());
        // Python Medusa's PrepareRestore file, and what `to_bytes` writes, read back.
        let m = host_map(&tm(&[("a", "r1")]), &tm(&[("a", "r1")]), &["a".into()]).unwrap();
        assert_eq!(parse(std::str::from_utf8(&m.to_bytes()).unwrap()).unwrap(), m);
        assert!(parse("{").is_err());
    }

    #[test]
    fn refuses_other_shapes_naming_the_key() {
        let cases = [
            ("[]", "an array, not an object"),
            ("null", "null, not an object"),
            (r#"{"inplace":false}"#, "unknown key \"inplace\""),
            (r#"{"in_place":false,"hostmap":{"a":{"source":["b"]}}}"#, "unknown key \"hostmap\""),
            (r#"{"in_place":"false"}"#, "in_place is a string"),
            (r#"{"in_place":false,"host_map":[]}"#, "host_map is an array"),
            (r#"{"in_place":false}"#, "host_map is empty"),
            (r#"{"in_place":false,"host_map":{"a":[]}}"#, "host_map entry \"a\" is an array"),
            (r#"{"in_place":false,"host_map":{"a":{"source":"b"}}}"#, "source is a string"),
            (r#"{"in_place":false,"host_map":{"a":{"source":[]}}}"#, "source must list"),
            (r#"{"in_place":false,"host_map":{"a":{"source":[1]}}}"#, "source must list"),
            (r#"{"in_place":false,"host_map":{"a":{"seed":true}}}"#, "has no source"),
            (r#"{"in_place":false,"host_map":{"a":{"source":["b"],"seed":1}}}"#, "seed is a number"),
            (r#"{"in_place":false,"host_map":{"a":{"source":["b"],"Seed":true}}}"#, "unknown key \"Seed\""),
        ];
        for (text, want) in cases {
            let e = RestoreMapping::parse(text, "RESTORE_MAPPING").unwrap_err();
            assert!(e.starts_with("RESTORE_MAPPING is not a restore mapping: ") && e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn reads_the_prepare_restore_file_only_when_there_is_no_variable() {
        let root = std::env::temp_dir().join(format!("medusa-mapping-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join(".restore_mapping")).unwrap();
        assert!(RestoreMapping::requested(None, &root, "k").unwrap().is_in_place());
        std::fs::write(root.join(".restore_mapping/k"), r#"{"in_place": true, "hostmap": {}}"#).unwrap();
        let e = RestoreMapping::requested(None, &root, "k").unwrap_err();
        assert!(e.contains(".restore_mapping/k") && e.contains("hostmap"), "{e}");
        assert!(RestoreMapping::requested(Some("{}"), &root, "k").is_ok());
        // A file that cannot be read is not taken for "no mapping" (in place).
        std::fs::create_dir_all(root.join(".restore_mapping/d")).unwrap();
        assert!(RestoreMapping::requested(None, &root, "d").unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn pairs_racks_and_hosts_by_name() {
        let backup = tm(&[("old-b-0", "b"), ("old-a-1", "a"), ("old-a-0", "a")]);
        let current = tm(&[("new-a-0", "a"), ("new-b-0", "b"), ("new-a-1", "a")]);
        let m = host_map(&backup, &current, &[]).unwrap();
        assert_eq!(m.in_place, Some(false));
        assert_eq!(m.source_of("new-a-0"), Some("old-a-0"));
        assert_eq!(m.source_of("new-a-1"), Some("old-a-1"));
        assert_eq!(m.source_of("new-b-0"), Some("old-b-0"));
        let m = host_map(&current, &current, &["new-a-0".into()]).unwrap();
        assert!(m.is_in_place());
        assert!(m.host_map["new-a-0"].seed);
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            r#"{"in_place": true, "host_map": {"new-a-0": {"source": ["new-a-0"], "seed": true}, "new-a-1": {"source": ["new-a-1"], "seed": false}, "new-b-0": {"source": ["new-b-0"], "seed": false}}}"#
        );
    }

    #[test]
    fn refuses_other_topologies_and_down_nodes() {
        let backup = tm(&[("a", "r1"), ("b", "r1")]);
        let e = host_map(&backup, &tm(&[("x", "r1")]), &[]).unwrap_err();
        assert!(e.contains("topology differs"), "{e}");
        let mut current = tm(&[("x", "r1"), ("y", "r1")]);
        current.0[1].is_up = false;
        assert!(host_map(&backup, &current, &[]).unwrap_err().contains("y is down"));
    }
}
