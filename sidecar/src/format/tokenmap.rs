//! `tokenmap.json` (contract §2.4): the ring of the backed-up node's datacenter at backup time.

use serde_json::{Map, Number, Value};

/// One node of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingNode {
    /// Node name (pod name in Kubernetes).
    pub host: String,
    /// Tokens as decimal strings (RandomPartitioner tokens exceed 64 bits).
    pub tokens: Vec<String>,
    /// Whether the node was up.
    pub is_up: bool,
    /// Rack, if recorded.
    pub rack: Option<String>,
    /// Datacenter, if recorded.
    pub dc: Option<String>,
}

/// The whole map, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenMap(pub Vec<RingNode>);

/// A tokenmap that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid tokenmap.json: {0}")]
pub struct TokenMapError(String);

impl TokenMap {
    /// Parses Medusa's format; a bare integer token is accepted as a one-element list.
    pub fn parse(bytes: &[u8]) -> Result<TokenMap, TokenMapError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| TokenMapError(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| TokenMapError("not a JSON object".into()))?;
        let mut nodes = Vec::with_capacity(obj.len());
        for (host, entry) in obj {
            let tokens = match entry.get("tokens") {
                Some(Value::Array(a)) => a.iter().map(token_string).collect::<Result<_, _>>()?,
                Some(t @ (Value::Number(_) | Value::String(_))) => vec![token_string(t)?],
                None | Some(Value::Null) => Vec::new(),
                Some(other) => return Err(TokenMapError(format!("{host}: tokens must be a list, not {other}"))),
            };
            let text = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
            nodes.push(RingNode {
                host: host.clone(),
                tokens,
                is_up: entry.get("is_up").and_then(Value::as_bool).unwrap_or(true),
                rack: text("rack"),
                dc: text("dc"),
            });
        }
        Ok(TokenMap(nodes))
    }

    /// Serialises exactly as Medusa: keys `tokens, is_up, rack, dc`, Python separators.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut root = Map::new();
        for n in &self.0 {
            let mut e = Map::new();
            let tokens = n
                .tokens
                .iter()
                .map(|t| t.parse::<Number>().map(Value::Number).unwrap_or_else(|_| Value::String(t.clone())))
                .collect();
            e.insert("tokens".into(), Value::Array(tokens));
            e.insert("is_up".into(), Value::Bool(n.is_up));
            if let Some(r) = &n.rack {
                e.insert("rack".into(), Value::String(r.clone()));
            }
            if let Some(d) = &n.dc {
                e.insert("dc".into(), Value::String(d.clone()));
            }
            root.insert(n.host.clone(), Value::Object(e));
        }
        crate::format::pyjson::to_vec(&Value::Object(root)).expect("tokenmap serialisation cannot fail")
    }

    /// The entry of `host`.
    pub fn node(&self, host: &str) -> Option<&RingNode> {
        self.0.iter().find(|n| n.host == host)
    }
}

fn token_string(v: &Value) -> Result<String, TokenMapError> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) if s.parse::<i128>().is_ok() => Ok(s.clone()),
        other => Err(TokenMapError(format!("token {other} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_big_tokens() {
        let text = r#"{"n-0": {"tokens": [-9012473828165187302, 170141183460469231731687303715884105727], "is_up": true, "rack": "default", "dc": "dc1"}, "n-1": {"tokens": [5], "is_up": false}}"#;
        let tm = TokenMap::parse(text.as_bytes()).unwrap();
        assert_eq!(tm.0[0].tokens[1], "170141183460469231731687303715884105727");
        assert_eq!(tm.0[1].rack, None);
        assert_eq!(String::from_utf8(tm.to_bytes()).unwrap(), text);
    }

    #[test]
    fn accepts_a_bare_token() {
        let tm = TokenMap::parse(br#"{"n": {"tokens": 42, "is_up": true}}"#).unwrap();
        assert_eq!(tm.0[0].tokens, vec!["42".to_string()]);
        assert!(TokenMap::parse(b"[1]").is_err());
    }
}
