// Shared by the fuzz targets: migrate one file of the given name (with a partner when the
// input splits in two at a NUL byte) and check the properties every run must have. An input
// of odd length runs with --strategy reserve.
use std::path::PathBuf;

use bpf_migrate_core::engine::{self, Options};
use bpf_migrate_core::source::SourceFile;

pub fn check(names: &[&str], data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parts: Vec<&str> = text.splitn(names.len(), '\0').collect();
    let files: Vec<SourceFile> = parts
        .iter()
        .zip(names)
        .map(|(t, n)| SourceFile::new(PathBuf::from(n), n.to_string(), t.to_string()))
        .collect();
    let opts = Options {
        strategy: if data.len() % 2 == 1 { engine::Strategy::Reserve } else { engine::Strategy::Copy },
        ..Options::default()
    };
    let out = engine::migrate(&files, &opts);
    assert!(!out.diags.iter().any(|d| d.rule.id() == "internal-error"), "{:?}", out.diags);
    let mut after: Vec<SourceFile> = files.clone();
    for ch in &out.changes {
        let f = &files[ch.file];
        let mut pos = 0;
        for e in &ch.edits {
            assert!(e.start >= pos && e.end >= e.start && e.end <= f.text.len(), "edits overlap or run out");
            pos = e.end;
        }
        after[ch.file] = SourceFile::new(f.path.clone(), f.display.clone(), ch.new_text.clone());
    }
    let again = engine::migrate(&after, &opts);
    assert!(again.changes.is_empty(), "a second run changed the result");
}
