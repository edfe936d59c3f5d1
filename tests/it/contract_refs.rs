//! Every `§N.M` in the code, tests, scripts, examples and README names a section of
//! `docs/contract.md` that exists: a heading whose number is `N.M` (`## 2. ...`, `### 2.7 ...`).
//! A file that uses `§` must also say which document it means (`contract §2.7` or a mention of
//! `docs/contract.md`), so that a reader never has to guess.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where references may appear, relative to the workspace root.
const ROOTS: &[&str] =
    &["sidecar", "restore-init", "tests", "fuzz", "scripts", "examples", "proto", "Dockerfile", "README.md"];
/// Directories never searched: build output, tool installs, recorded data.
const SKIP_DIRS: &[&str] = &["target", ".git", ".tools", "fixtures", "corpus", "artifacts"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `N` or `N.M...` at the start of `s`, with the number of bytes it takes.
fn number(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut end = 0;
    loop {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            break;
        }
        end = i;
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
        } else {
            break;
        }
    }
    (end > 0).then(|| (s[..end].to_string(), end))
}

/// Section numbers of the document's headings (outside code blocks), with their line numbers.
fn headings(doc: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut fenced = false;
    for (i, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim_start();
        if let Some((n, _)) = number(text)
            && let Some(first) = out.insert(n.clone(), i + 1)
        {
            panic!("docs/contract.md: section {n} has two headings (lines {first} and {})", i + 1);
        }
    }
    out
}

/// Every `§N.M` in `text`; a range `§N.M-K` (or `§N.M-N.K`) also yields its end.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (pos, _) in line.match_indices('§') {
            let rest = &line[pos + '§'.len_utf8()..];
            let Some((n, len)) = number(rest) else { continue };
            if let Some(tail) = rest[len..].strip_prefix('-')
                && let Some((m, _)) = number(tail)
            {
                let end = if m.contains('.') || !n.contains('.') {
                    m
                } else {
                    format!("{}.{m}", &n[..n.rfind('.').expect("has a dot")])
                };
                out.push((i + 1, end));
            }
            out.push((i + 1, n));
        }
    }
    out
}

fn files() -> Vec<PathBuf> {
    let root = workspace();
    let mut out = Vec::new();
    for r in ROOTS {
        let walk = walkdir::WalkDir::new(root.join(r)).into_iter().filter_entry(|e| {
            !(e.file_type().is_dir() && SKIP_DIRS.contains(&e.file_name().to_string_lossy().as_ref()))
        });
        for e in walk {
            let e = e.expect("walk the workspace");
            if e.file_type().is_file() {
                out.push(e.into_path());
            }
        }
    }
    out
}

#[test]
fn every_section_reference_resolves() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("docs/contract.md")).expect("docs/contract.md exists");
    let sections = headings(&doc);
    assert!(sections.contains_key("10.15"), "the headings were not recognised: {:?}", sections.keys());
    // A subsection needs its section.
    for n in sections.keys() {
        if let Some((parent, _)) = n.rsplit_once('.') {
            assert!(sections.contains_key(parent), "docs/contract.md: {n} has no section {parent}");
        }
    }

    let (mut checked, mut files_with_refs, mut problems) = (0, 0, Vec::new());
    for path in files() {
        // Binary and non-UTF-8 files hold no references.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let refs = references(&text);
        if refs.is_empty() {
            continue;
        }
        files_with_refs += 1;
        let shown = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        if !text.contains("contract §") && !text.contains("docs/contract.md") {
            problems.push(format!("{shown}: uses § without saying it means docs/contract.md (write `contract §N.M`)"));
        }
        for (line, n) in refs {
            checked += 1;
            if !sections.contains_key(&n) {
                problems.push(format!("{shown}:{line}: §{n} is not a heading of docs/contract.md"));
            }
        }
    }
    println!("{checked} references in {files_with_refs} files checked against {} headings", sections.len());
    assert!(checked > 0, "no § references found: is the walk looking in the right place?");
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn reference_parsing() {
    let refs = |s: &str| references(s).into_iter().map(|(_, n)| n).collect::<Vec<_>>();
    assert_eq!(refs("see contract §2.7."), ["2.7"]);
    assert_eq!(refs("(§1.6, §4)"), ["1.6", "4"]);
    assert_eq!(refs("§10.7-9 and §6.3-6.5"), ["10.9", "10.7", "6.5", "6.3"]);
    assert_eq!(refs("§N.M and § alone"), Vec::<String>::new());
    let h = headings("# Title\n## 2. Bucket\n### 2.7 Order\n```\n# 9.9 not a heading\n```\n");
    assert_eq!(h.keys().collect::<Vec<_>>(), ["2", "2.7"]);
}
