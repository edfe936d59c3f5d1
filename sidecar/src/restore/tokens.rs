//! The tokens a restore onto another ring writes into `cassandra.yaml` (contract §6.5 step 9), checked
//! before anything is touched: a node given no tokens, or tokens its partitioner cannot hold,
//! never boots, and once `.last-restore` is written the restore never runs again.

use std::collections::HashSet;
use std::path::Path;

use crate::format::tokenmap::TokenMap;

/// The partitioner `cassandra.yaml` names, as far as tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// `Murmur3Partitioner`: signed 64-bit tokens.
    Murmur3,
    /// `RandomPartitioner`: tokens from 0 to 2^127.
    Random,
    /// No `partitioner` key (Cassandra may have it from `-Dcassandra.partitioner`): a token
    /// must fit one of the two.
    Unnamed,
}

impl Partitioner {
    /// Reads `partitioner` from the `cassandra.yaml` at `yaml`.
    pub fn of_yaml(yaml: &Path) -> Result<Partitioner, String> {
        let text = std::fs::read_to_string(yaml).map_err(|e| format!("cannot read {}: {e}", yaml.display()))?;
        let doc: serde_norway::Value =
            serde_norway::from_str(&text).map_err(|e| format!("{} is not valid YAML: {e}", yaml.display()))?;
        let name = match doc.get("partitioner") {
            None | Some(serde_norway::Value::Null) => return Ok(Partitioner::Unnamed),
            Some(serde_norway::Value::String(s)) => s.trim(),
            Some(other) => return Err(format!("partitioner in {} is not a class name: {other:?}", yaml.display())),
        };
        // Cassandra prefixes a name without a package with org.apache.cassandra.dht.
        match name.strip_prefix("org.apache.cassandra.dht.").unwrap_or(name) {
            "Murmur3Partitioner" => Ok(Partitioner::Murmur3),
            "RandomPartitioner" => Ok(Partitioner::Random),
            _ => Err(format!(
                "partitioner {name} in {}: a restore onto another ring writes tokens only for \
                 Murmur3Partitioner and RandomPartitioner",
                yaml.display()
            )),
        }
    }

    fn range(self) -> &'static str {
        match self {
            Partitioner::Murmur3 => "Murmur3Partitioner's range -2^63 to 2^63-1",
            Partitioner::Random => "RandomPartitioner's range 0 to 2^127",
            Partitioner::Unnamed => {
                "the range of Murmur3Partitioner (-2^63 to 2^63-1) or RandomPartitioner (0 to 2^127)"
            }
        }
    }

    fn holds(self, negative: bool, magnitude: &str) -> bool {
        let murmur3 =
            if negative { format!("-{magnitude}").parse::<i64>().is_ok() } else { magnitude.parse::<i64>().is_ok() };
        let random = !negative && magnitude.parse::<u128>().is_ok_and(|v| v <= 1 << 127);
        match self {
            Partitioner::Murmur3 => murmur3,
            Partitioner::Random => random,
            Partitioner::Unnamed => murmur3 || random,
        }
    }
}

/// The tokens of `source` in the backup's tokenmap, each an integer that `partitioner` holds,
/// none twice; otherwise what is wrong, naming the node.
pub fn source_tokens(tm: &TokenMap, source: &str, partitioner: Partitioner) -> Result<Vec<String>, String> {
    let Some(node) = tm.node(source) else {
        let hosts: Vec<&str> = tm.0.iter().map(|n| n.host.as_str()).collect();
        return Err(format!(
            "node {source} has no tokens in the backup's tokenmap: it has no entry for {source} (its nodes: {}); \
             check the source node in the restore mapping",
            if hosts.is_empty() { "none".to_string() } else { hosts.join(", ") }
        ));
    };
    if node.tokens.is_empty() {
        return Err(format!(
            "node {source} has no tokens in the backup's tokenmap: Cassandra cannot start without tokens"
        ));
    }
    let mut seen = HashSet::new();
    for t in &node.tokens {
        let (negative, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, t.as_str()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("token {t} of node {source} in the backup's tokenmap is not an integer"));
        }
        let magnitude = match digits.trim_start_matches('0') {
            "" => "0",
            m => m,
        };
        let negative = negative && magnitude != "0";
        if !partitioner.holds(negative, magnitude) {
            return Err(format!(
                "token {t} of node {source} in the backup's tokenmap is outside {} (the partitioner of cassandra.yaml)",
                partitioner.range()
            ));
        }
        if !seen.insert((negative, magnitude)) {
            return Err(format!("token {t} of node {source} is listed twice in the backup's tokenmap"));
        }
    }
    Ok(node.tokens.clone())
}

/// [`source_tokens`] with the partitioner of the `cassandra.yaml` at `yaml`.
pub fn checked(tm: &TokenMap, source: &str, yaml: &Path) -> Result<Vec<String>, String> {
    source_tokens(tm, source, Partitioner::of_yaml(yaml)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(tokens: &str) -> TokenMap {
        TokenMap::parse(format!(r#"{{"n": {{"tokens": {tokens}, "is_up": true}}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn tokens_must_fit_the_partitioner() {
        use Partitioner::*;
        let ok = |t: &str, p| source_tokens(&tm(t), "n", p).unwrap();
        let bad = |t: &str, p| source_tokens(&tm(t), "n", p).unwrap_err();
        assert_eq!(ok("[-9223372036854775808, 9223372036854775807]", Murmur3).len(), 2);
        assert_eq!(ok("[0, 170141183460469231731687303715884105728]", Random).len(), 2);
        assert_eq!(ok("[-5, 170141183460469231731687303715884105728]", Unnamed).len(), 2);
        assert_eq!(ok("7", Murmur3), ["7"]);
        assert!(bad("[9223372036854775808]", Murmur3).contains("outside Murmur3Partitioner"));
        assert!(bad("[-9223372036854775809]", Murmur3).contains("outside"));
        assert!(bad("[-1]", Random).contains("outside RandomPartitioner"));
        assert!(bad("[170141183460469231731687303715884105729]", Random).contains("outside"));
        assert!(bad("[-170141183460469231731687303715884105728]", Unnamed).contains("outside"));
        assert!(bad("[1.5]", Murmur3).contains("1.5 of node n in the backup's tokenmap is not an integer"));
        assert!(bad("[1e3]", Murmur3).contains("not an integer"));
        assert!(bad("[]", Murmur3).contains("node n has no tokens"));
        assert!(bad("null", Murmur3).contains("no tokens"));
        assert!(bad("[3, 3]", Murmur3).contains("token 3 of node n is listed twice"));
        assert!(bad(r#"[0, "-0"]"#, Murmur3).contains("twice"));
        let e = source_tokens(&tm("[1]"), "other", Murmur3).unwrap_err();
        assert!(e.contains("node other has no tokens") && e.contains("its nodes: n"), "{e}");
    }

    #[test]
    fn reads_the_partitioner_of_cassandra_yaml() {
        let dir = std::env::temp_dir().join(format!("medusa-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let y = dir.join("cassandra.yaml");
        for (text, want) in [
            ("partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n", Ok(Partitioner::Murmur3)),
            ("partitioner: RandomPartitioner\n", Ok(Partitioner::Random)),
            ("cluster_name: x\n", Ok(Partitioner::Unnamed)),
            ("partitioner: org.apache.cassandra.dht.ByteOrderedPartitioner\n", Err("ByteOrderedPartitioner")),
        ] {
            std::fs::write(&y, text).unwrap();
            match (Partitioner::of_yaml(&y), want) {
                (Ok(p), Ok(w)) => assert_eq!(p, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
