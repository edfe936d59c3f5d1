//! A node backup's `manifest.json` (written by any Medusa, read from a bucket): parsed whole
//! and streamed, totals, each object's place, and the restore plans made from it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut streamed = 0u64;
    let s = medusa::format::manifest::for_each_object(data, |path, _md5, _size| {
        streamed += 1;
        let _ = medusa::format::manifest::placement("ks", path);
        let _ = medusa::format::manifest::placement("dse", path);
    });
    if let Ok(m) = medusa::format::manifest::parse(data) {
        let (objects, _bytes) = medusa::format::manifest::totals(&m);
        if s.is_ok() {
            assert_eq!(objects, streamed, "streamed and parsed manifests agree");
        }
        let everything = medusa::restore::plan::Selection::default();
        let some = medusa::restore::plan::Selection::parse(Some("system"), Some("ks.t")).expect("a valid selection");
        for (in_place, selection) in [(true, &everything), (false, &everything), (true, &some)] {
            if let Ok(plan) = medusa::restore::plan::plan(&m, in_place, selection) {
                for t in &plan.tables {
                    assert!(!t.keyspace.contains('/') && !t.table.contains('/'), "a plan escapes its directory");
                    assert!(t.keyspace != ".." && t.table != "..");
                }
            }
        }
        let _ = medusa::format::manifest::to_bytes(&m);
    }
});
