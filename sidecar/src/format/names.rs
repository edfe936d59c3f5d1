//! Validated names that end up inside object keys and local paths.
//!
//! Every name that comes from a request, an environment variable or a bucket listing is turned
//! into one of these types at the edge, so a name that could escape its key prefix or directory
//! (`/`, `..`, control characters) cannot exist further in.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidName {
    /// What kind of name (e.g. "backup name").
    pub kind: &'static str,
    /// The value as given (control characters escaped by `{:?}`).
    pub value: String,
    /// What is wrong, phrased so the user knows what to change.
    pub reason: &'static str,
}

/// Checks what every name from outside must be to be logged and answered readably: at most
/// 255 bytes, no control characters. (Also used for request fields that never reach a key or a
/// path, such as PrepareRestore's datacenter.)
pub fn check_printable(kind: &'static str, value: &str) -> Result<(), InvalidName> {
    let fail = |reason| Err(InvalidName { kind, value: value.chars().take(200).collect(), reason });
    if value.len() > 255 {
        return fail("it must be at most 255 bytes long");
    }
    if value.chars().any(|c| c.is_control()) {
        return fail("it must not contain control characters");
    }
    Ok(())
}

fn check(kind: &'static str, value: &str) -> Result<(), InvalidName> {
    let fail = |reason| Err(InvalidName { kind, value: value.chars().take(200).collect(), reason });
    if value.is_empty() {
        return fail("it must not be empty");
    }
    check_printable(kind, value)?;
    if value.contains('/') || value.contains('\\') {
        return fail("it must not contain '/' or '\\'");
    }
    if value.contains("..") || value == "." {
        return fail("it must not be '.' or contain '..'");
    }
    if value.trim() != value {
        return fail("it must not start or end with white space");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $reserved:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                check($kind, &value)?;
                let reserved: &[(&str, &'static str)] = $reserved;
                if let Some((_, why)) = reserved.iter().find(|(r, _)| *r == value) {
                    return Err(InvalidName { kind: $kind, value, reason: why });
                }
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A backup name (`BackupRequest.name`, `BACKUP_NAME`). `data` is refused: a backup's folder
    /// `P/N/<name>/` would be the node's shared differential data folder `P/N/data/`.
    BackupName,
    "backup name",
    &[("data", "it is reserved: P/<node>/data/ holds the node's differential data")]
);
name_type!(
    /// A node identity as used in object keys: the pod name in Kubernetes. `index` is refused:
    /// `P/<node>/` would be the bucket's index folder `P/index/`.
    Fqdn,
    "node name",
    &[("index", "it is reserved: P/index/ holds the backup index")]
);
name_type!(
    /// A restore key (`RESTORE_KEY`, `PrepareRestoreRequest.restoreKey`).
    RestoreKey,
    "restore key",
    &[]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_operator_style_names() {
        for ok in ["medusa-backup-1", "202406011200", "b1", "a.b_c-D"] {
            assert_eq!(BackupName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_names_that_escape_their_prefix() {
        for bad in ["", "a/b", "..", "a..b", ".", "x\ny", "tab\t", " lead", "trail ", "a\\b"] {
            let err = BackupName::new(bad).unwrap_err();
            assert_eq!(err.kind, "backup name", "{bad:?}");
        }
        assert!(BackupName::new("x".repeat(256)).is_err());
        let msg = BackupName::new("a/b").unwrap_err().to_string();
        assert!(msg.contains("must not contain '/'"), "{msg}");
        // Names whose folder is another folder of the layout.
        assert!(BackupName::new("data").unwrap_err().to_string().contains("reserved"));
        assert!(Fqdn::new("index").is_err());
        assert!(BackupName::new("index").is_ok() && Fqdn::new("data").is_ok());
    }
}
