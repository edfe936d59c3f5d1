//! `cassandra.yaml`: the node's paths. Any text: paths or a clear error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = medusa::config::cassandra_yaml::NodePaths::parse(&text, std::path::Path::new("cassandra.yaml")) {
        assert!(!e.to_string().is_empty());
    }
});
