#![no_main]
// The edit layer: any set of edits either is refused as overlapping or applies with every
// byte outside the edits unchanged; the diff of the result is well formed.
use bpf_migrate_core::edit::{self, Edit};
use bpf_migrate_core::rules::Rule;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let text = String::from_utf8_lossy(&data[4..]).into_owned();
    let n = text.len();
    let mut edits = Vec::new();
    for w in data[..4].chunks(2) {
        let (a, b) = ((w[0] as usize * 7) % (n + 1), (w[1] as usize * 13) % (n + 1));
        let (s, e) = (a.min(b), a.max(b));
        if text.is_char_boundary(s) && text.is_char_boundary(e) {
            edits.push(Edit::replace(s, e, "x\n", Rule::PerfEventOutput));
        }
    }
    if edit::normalize(&mut edits).is_ok() {
        let out = edit::apply(&text, &edits, false);
        let mut pos = 0;
        let mut rebuilt = String::new();
        for e in &edits {
            rebuilt.push_str(&text[pos..e.start]);
            rebuilt.push_str(&e.text);
            pos = e.end;
        }
        rebuilt.push_str(&text[pos..]);
        assert_eq!(out, rebuilt);
        let d = bpf_migrate_core::diff::unified("f", &text, &out);
        assert!(d.starts_with("diff --git a/f b/f\n"));
    }
});
