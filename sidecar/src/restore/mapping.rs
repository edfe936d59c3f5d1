//! Which backup node restores onto which pod: the operator's `RESTORE_MAPPING` (§6.2), the file
//! PrepareRestore writes (§6.1), and the host-map computation behind PrepareRestore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::tokenmap::TokenMap;

/// One target's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMapping {
    /// Backup node names (the first one is used).
    pub source: Vec<String>,
    /// Whether the target is a seed.
    #[serde(default)]
    pub seed: bool,
}

/// `{"in_place": ..., "host_map": {target: {"source": [..], "seed": ..}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestoreMapping {
    /// `null`/absent means in place (Medusa's default).
    #[serde(default)]
    pub in_place: Option<bool>,
    /// Keyed by target pod name.
    #[serde(default)]
    pub host_map: BTreeMap<String, HostMapping>,
}

impl RestoreMapping {
    /// Parses the operator's JSON.
    pub fn parse(text: &str) -> Result<RestoreMapping, String> {
        serde_json::from_str(text)
            .map_err(|e| format!("RESTORE_MAPPING is not a valid restore mapping ({e}): {text:.200}"))
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

/// PrepareRestore's host map (§6.1 step 3, with the operator's pairing): every current node must
/// be up; racks (sorted by name) are paired positionally, and inside a rack hosts sorted by
/// name, except that an in-place restore pairs every node with itself. A different topology
/// (node count, per-rack counts, tokens per node) cannot be restored by an init container and
/// is refused with the difference spelled out.
pub fn host_map(backup: &TokenMap, current: &TokenMap, seeds: &[String]) -> Result<RestoreMapping, String> {
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
        let m = RestoreMapping::parse(r#"{"in_place":false,"host_map":{"new-0":{"source":["old-0"],"seed":false}}}"#)
            .unwrap();
        assert!(!m.is_in_place());
        assert_eq!(m.source_of("new-0"), Some("old-0"));
        assert_eq!(m.source_of("new-1"), None);
        assert!(RestoreMapping::parse(r#"{"in_place":null}"#).unwrap().is_in_place());
        assert!(RestoreMapping::parse("{").is_err());
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
