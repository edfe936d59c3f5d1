//! `RESTORE_MAPPING` (the init container's environment) and the PrepareRestore mapping file:
//! parsed; what parses is written back and reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medusa::restore::mapping::RestoreMapping;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match RestoreMapping::parse(&text, "RESTORE_MAPPING") {
        Ok(m) => {
            let _ = m.is_in_place();
            let _ = m.source_of("demo-dc1-default-sts-0");
            let again = String::from_utf8(m.to_bytes()).expect("UTF-8");
            let back = RestoreMapping::parse(&again, "the written mapping").expect("a mapping we write reads back");
            assert_eq!(back.is_in_place(), m.is_in_place());
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
