//! The engine's rooms are layered (see `lib.rs`): a module may use only the layers below it, and
//! the three flows (backup, restore, retention) do not use each other. This test reads every
//! source file and checks each `crate::<room>` path against that order, so an import circle
//! between rooms cannot come back unnoticed.

use std::path::Path;

/// Rooms from the bottom up; rooms on one level may not use each other.
const LAYERS: &[&[&str]] = &[
    &["fsutil", "logging", "pb", "tls"],
    &["format"],
    &["config"],
    &["store"],
    &["bucket"],
    &["transfer"],
    &["backup", "restore", "retention"],
    &["service"],
    &["cli"],
];

fn level(room: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&room))
}

/// `crate::<room>` paths in `text` (comments included: a doc link across layers misleads too).
fn rooms_used(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let room: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !room.is_empty() {
            out.push(room);
        }
    }
    out
}

fn check_dir(src: &Path, dir: &Path, problems: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            check_dir(src, &path, problems);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap();
        let room = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        let Some(own) = level(&room) else { continue }; // lib.rs, main.rs, bin/: above every room
        for used in rooms_used(&std::fs::read_to_string(&path).unwrap()) {
            let Some(theirs) = level(&used) else {
                problems.push(format!("{}: crate::{used} is in no layer", rel.display()));
                continue;
            };
            if used != room && theirs >= own {
                problems.push(format!("{} (layer {own}) uses crate::{used} (layer {theirs})", rel.display()));
            }
        }
    }
}

#[test]
fn rooms_only_use_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    check_dir(&src, &src, &mut problems);
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    assert_eq!(rooms_used("use crate::service::jobs; // crate::store::Storage"), ["service", "store"]);
    assert!(level("store") < level("bucket") && level("bucket") < level("service"));
}
