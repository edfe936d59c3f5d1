//! Keys of the backup index (listed from a bucket anyone may write): classified or ignored.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medusa::format::layout::{Layout, parse_index_key};

fuzz_target!(|data: &[u8]| {
    let key = String::from_utf8_lossy(data);
    for prefix in [None, Some("demo"), Some("a/b")] {
        let layout = Layout::new(prefix);
        if let Some((backup, fqdn, _)) = parse_index_key(&layout, &key) {
            assert!(!backup.contains('/') && !fqdn.contains('/'), "a name with a slash from {key:?}");
        }
    }
});
