//! Names from requests, the environment and listings (backup names, node names, restore keys):
//! whatever is accepted cannot escape a key prefix or a directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medusa::format::names::{BackupName, Fqdn, RestoreKey};

fn safe(s: &str) {
    assert!(!s.is_empty() && !s.contains('/') && !s.contains('\\') && !s.contains("..") && s != ".");
    assert!(!s.chars().any(char::is_control));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(n) = BackupName::new(text.clone()) {
        safe(n.as_str());
    }
    if let Ok(n) = Fqdn::new(text.clone()) {
        safe(n.as_str());
    }
    if let Ok(n) = RestoreKey::new(text) {
        safe(n.as_str());
    }
});
