//! `tokenmap.json`: parsed, then the host map PrepareRestore writes from two token maps (the
//! backup's ring and the current one), which must read back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medusa::format::tokenmap::TokenMap;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let (Ok(backup), Ok(current)) = (TokenMap::parse(a), TokenMap::parse(b)) else { return };
    if let Ok(mapping) = medusa::restore::mapping::host_map(&backup, &current, &[]) {
        let bytes = mapping.to_bytes();
        let text = String::from_utf8(bytes).expect("a mapping is UTF-8");
        medusa::restore::mapping::RestoreMapping::parse(&text, "the PrepareRestore mapping")
            .expect("a mapping we write reads back");
    }
});
