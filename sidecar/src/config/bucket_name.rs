//! `[storage] bucket_name`, checked against the naming rules of its provider, so that a value
//! which is not a bucket name (`..`, `.`, a path, a typo with a space) is refused when the
//! configuration is read instead of pointing somewhere unintended (for `local`, `..` made the
//! bucket `base_path`'s parent).

use crate::config::Provider;

/// Why `name` is not a bucket name for `provider` and what is accepted; `Ok(Some(warning))`
/// for a name only legacy S3 buckets can have.
pub fn check(provider: &Provider, name: &str) -> Result<Option<String>, String> {
    match provider {
        // A directory under base_path, not a bucket any server checks: S3's characters keep it
        // one plain path component (no `.`/`..`/`/`, no upper case that a case-insensitive
        // file system would fold, nothing a shell would read) that also names a bucket once
        // the backups move to object storage, Medusa's way out of `local`. S3's minimum of 3
        // characters only serves DNS, so short names stay valid here (and in use: `b`).
        Provider::Local => s3_style(name, 1).map(|()| None),
        p if p.is_s3() => match s3_style(name, 3) {
            Ok(()) => Ok(None),
            // AWS let buckets created in us-east-1 before March 2018 (and Ceph with relaxed
            // names) have upper case, `_` and up to 255 characters. Such a bucket exists and
            // points nowhere unintended, so it is accepted, with a warning in case of a typo.
            Err(why) if legacy_s3(name) => Ok(Some(format!(
                "[storage] bucket_name = {name}: {why}; accepted as a legacy bucket name (us-east-1 \
                 before March 2018, Ceph with relaxed names)"
            ))),
            Err(why) => Err(why),
        },
        Provider::GoogleStorage => gcs(name).map(|()| None),
        Provider::AzureBlobs => azure(name).map(|()| None),
        _ => unreachable!("every provider is handled above"),
    }
}

const S3_RULE: &str = "letters a-z, digits, '.' and '-', starting and ending with a letter or a digit, \
                       no \"..\", not an IP address (e.g. medusa-backups)";

/// S3's rules for new buckets (AWS, MinIO, Ceph, IBM COS), with a minimum length.
fn s3_style(name: &str, min: usize) -> Result<(), String> {
    let rule = |what: &str| format!("{what}; use {min}-63 {S3_RULE}");
    if name.len() < min || name.len() > 63 {
        return Err(rule(&format!("{} characters", name.len())));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-')) {
        return Err(rule(&format!("{c:?} is not allowed")));
    }
    if !ends_alphanumeric(name) {
        return Err(rule("it must start and end with a letter or a digit"));
    }
    if name.contains("..") {
        return Err(rule("\"..\" is not allowed"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(rule("an IP address is not a bucket name"));
    }
    Ok(())
}

fn legacy_s3(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && ends_alphanumeric(name)
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

/// Google Cloud Storage: 3-63 characters (up to 222 when dotted, 63 between dots), a-z, 0-9,
/// `-`, `_` and `.`, starting and ending with a letter or a digit, not an IP address.
fn gcs(name: &str) -> Result<(), String> {
    let rule = |what: &str| {
        format!(
            "{what}; use 3-63 letters a-z, digits, '-', '_' and '.' (up to 222 with dots, 63 between them), \
             starting and ending with a letter or a digit (e.g. medusa-backups)"
        )
    };
    let max = if name.contains('.') { 222 } else { 63 };
    if name.len() < 3 || name.len() > max || name.split('.').any(|part| part.len() > 63) {
        return Err(rule(&format!("{} characters", name.len())));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
        return Err(rule(&format!("{c:?} is not allowed")));
    }
    if !ends_alphanumeric(name) {
        return Err(rule("it must start and end with a letter or a digit"));
    }
    if name.contains("..") {
        return Err(rule("\"..\" is not allowed"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(rule("an IP address is not a bucket name"));
    }
    Ok(())
}

/// Azure Blob Storage containers: 3-63 characters, a-z, 0-9 and `-`, starting with a letter or
/// a digit, every `-` between letters or digits; and the special `$root`, `$web` and `$logs`.
fn azure(name: &str) -> Result<(), String> {
    if matches!(name, "$root" | "$web" | "$logs") {
        return Ok(());
    }
    let rule = |what: &str| {
        format!(
            "{what}; use 3-63 letters a-z, digits and '-', starting and ending with a letter or a digit, \
             no \"--\" (e.g. medusa-backups)"
        )
    };
    if name.len() < 3 || name.len() > 63 {
        return Err(rule(&format!("{} characters", name.len())));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        return Err(rule(&format!("{c:?} is not allowed")));
    }
    if !ends_alphanumeric(name) {
        return Err(rule("it must start and end with a letter or a digit"));
    }
    if name.contains("--") {
        return Err(rule("\"--\" is not allowed"));
    }
    Ok(())
}

fn ends_alphanumeric(name: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    alnum(name.chars().next()) && alnum(name.chars().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: Provider = Provider::S3Compatible;

    #[test]
    fn bucket_names_of_the_tests_and_examples_are_valid() {
        for name in ["medusa", "bucket", "medusa-bucket", "my-cassandra-backups", "cassandra-backups", "a.b-c"] {
            for p in [Provider::Local, S3, Provider::GoogleStorage] {
                assert_eq!(check(&p, name), Ok(None), "{p:?} {name}");
            }
        }
        for name in ["medusa", "bucket", "medusa-bucket", "my-cassandra-backups"] {
            assert_eq!(check(&Provider::AzureBlobs, name), Ok(None), "{name}");
        }
        assert_eq!(check(&Provider::Local, "b"), Ok(None));
    }

    #[test]
    fn what_is_not_a_bucket_name_is_refused_by_every_provider() {
        let providers =
            [Provider::Local, S3, Provider::S3 { region_hint: None }, Provider::GoogleStorage, Provider::AzureBlobs];
        for name in
            ["", ".", "..", "a/b", "../b", "-ab", "ab-", "my bucket", "a..b", "ab\\c", "a\nb", "ab?c", "ab#c", "ab%2f"]
        {
            for p in &providers {
                assert!(check(p, name).is_err(), "{p:?} accepted {name:?}");
            }
        }
    }

    #[test]
    fn provider_rules() {
        assert!(check(&S3, "ab").is_err());
        assert!(check(&S3, &"a".repeat(64)).unwrap().is_some(), "64 characters: only a legacy bucket");
        assert!(check(&S3, &"a".repeat(256)).is_err());
        assert!(check(&S3, "192.168.1.1").is_err());
        assert!(check(&Provider::Local, &"a".repeat(64)).is_err());
        assert!(check(&Provider::Local, "Backups").is_err());
        assert!(check(&Provider::AzureBlobs, "a.b").is_err());
        assert!(check(&Provider::AzureBlobs, "a--b").is_err());
        assert_eq!(check(&Provider::AzureBlobs, "$root"), Ok(None));
        assert_eq!(check(&Provider::GoogleStorage, "a_b"), Ok(None));
        assert!(check(&Provider::GoogleStorage, &format!("{}.b", "a".repeat(64))).is_err());
        // Legacy S3 names: accepted with a warning; never for the others.
        let w = check(&S3, "My_Old_Bucket").unwrap().unwrap();
        assert!(w.contains("legacy") && w.contains("My_Old_Bucket"), "{w}");
        assert!(check(&Provider::Local, "My_Old_Bucket").is_err());
        assert!(check(&S3, "..").is_err());
    }

    #[test]
    fn errors_say_what_is_accepted() {
        let e = check(&Provider::Local, "..").unwrap_err();
        assert!(e.contains("start and end with a letter or a digit") && e.contains("e.g. medusa-backups"), "{e}");
    }
}
