//! A reader for the INI dialect of Python's `configparser` (no interpolation), which is what
//! Medusa uses for `medusa.ini`.
//!
//! Rules kept from configparser: `#` and `;` start full-line comments (inline comments are NOT
//! stripped); `key = value` or `key: value`; keys are case-insensitive (lower-cased); section
//! headers and keys may be indented (k8ssandra-operator indents every line by four spaces); a
//! line indented deeper than the key line above it continues that key's value.

use std::collections::BTreeMap;

/// One parsed file: section name -> key -> (value, line number).
#[derive(Debug, Default, Clone)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, (String, usize)>>,
}

/// A syntax error, with the 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IniError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Ini {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Ini, IniError> {
        let mut ini = Ini::default();
        let mut section: Option<String> = None;
        // The key that a deeper-indented line would continue, and the indent of its line.
        let mut open_key: Option<(String, usize)> = None;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if let (Some((key, key_indent)), Some(sect)) = (&open_key, &section)
                && indent > *key_indent
            {
                let entry = ini.sections.get_mut(sect).and_then(|s| s.get_mut(key)).expect("open key exists");
                if !entry.0.is_empty() {
                    entry.0.push('\n');
                }
                entry.0.push_str(trimmed);
                continue;
            }
            if trimmed.starts_with('[') && trimmed.ends_with(']') && trimmed.len() > 2 {
                let name = trimmed[1..trimmed.len() - 1].to_string();
                if ini.sections.contains_key(&name) {
                    return Err(IniError { line: line_no, message: format!("section [{name}] appears twice") });
                }
                ini.sections.insert(name.clone(), BTreeMap::new());
                section = Some(name);
                open_key = None;
                continue;
            }
            let Some(sect) = &section else {
                return Err(IniError {
                    line: line_no,
                    message: "a key appears before the first [section] header".into(),
                });
            };
            let Some(pos) = trimmed.find(['=', ':']) else {
                return Err(IniError { line: line_no, message: format!("expected 'key = value', got {trimmed:?}") });
            };
            let key = trimmed[..pos].trim().to_lowercase();
            let value = trimmed[pos + 1..].trim().to_string();
            if key.is_empty() {
                return Err(IniError { line: line_no, message: "empty key name".into() });
            }
            let keys = ini.sections.get_mut(sect).expect("section exists");
            if keys.contains_key(&key) {
                return Err(IniError {
                    line: line_no,
                    message: format!("key {key:?} appears twice in section [{sect}]"),
                });
            }
            keys.insert(key.clone(), (value, line_no));
            open_key = Some((key, indent));
        }
        Ok(ini)
    }

    /// The value of `key` in `section`, if present.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key).map(|(value, _)| value.as_str())
    }

    /// The names of all sections, sorted.
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// The keys of `section`, sorted.
    pub fn keys(&self, section: &str) -> impl Iterator<Item = &str> {
        self.sections.get(section).into_iter().flat_map(|s| s.keys().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_operator_indented_file() {
        let text = "    [storage]\n    storage_provider = s3\n    bucket_name = b\n    \n    [grpc]\n    enabled = 1\n";
        let ini = Ini::parse(text).unwrap();
        assert_eq!(ini.get("storage", "storage_provider"), Some("s3"));
        assert_eq!(ini.get("storage", "bucket_name"), Some("b"));
        assert_eq!(ini.get("grpc", "enabled"), Some("1"));
    }

    #[test]
    fn comments_colons_case_and_continuations() {
        let text = "# c\n[s]\n; c2\nKey: v ; not a comment\nmulti = a\n   b\nother=x\n";
        let ini = Ini::parse(text).unwrap();
        assert_eq!(ini.get("s", "key"), Some("v ; not a comment"));
        assert_eq!(ini.get("s", "multi"), Some("a\nb"));
        assert_eq!(ini.get("s", "other"), Some("x"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = Ini::parse("k = v\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = Ini::parse("[a]\nk = 1\nk = 2\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("twice"));
        let err = Ini::parse("[a]\njust words\n").unwrap_err();
        assert!(err.message.contains("key = value"));
    }
}
