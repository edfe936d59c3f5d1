//! `medusa.ini`: the ini reader and the whole configuration built from it. Any text: a
//! configuration or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = medusa::config::ini::Ini::parse(&text);
    if let Err(e) = medusa::config::Config::parse(&text, "fuzz") {
        assert!(!e.to_string().is_empty());
    }
    let _ = medusa::config::parse_size(&text);
    let _ = medusa::config::parse_bool(&text);
    let _ = medusa::store::read_aws_credentials(&text, "default");
});
