//! Every rule in `rules/` is documented and its before/after examples hold: the example's
//! `before` files, migrated with `--write`, become its `after` files (files not listed in
//! `after` stay as they were) and produce the diagnostics it lists.

mod common;

use std::collections::BTreeSet;

use bpf_migrate_core::rules;
use common::*;

#[test]
fn catalogue_is_complete_and_examples_hold() {
    let cat = rules::catalogue();
    let ids: BTreeSet<&str> = cat.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), cat.len(), "duplicate rule ids");
    // Every id the engine emits has an entry (errors about input are not rules).
    let src: String = [
        "crates/core/src/engine/mod.rs",
        "crates/core/src/engine/bpf.rs",
        "crates/core/src/engine/user.rs",
        "crates/core/src/engine/reserve.rs",
        "crates/core/src/rules.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(root().join(p)).unwrap())
    .collect();
    for line in src
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \""))
    {
        let id = line.split('"').nth(1).unwrap();
        if ["io-error", "parse-error", "internal-error"].contains(&id) {
            continue;
        }
        assert!(ids.contains(id), "rule `{id}` has no file in rules/");
    }
    let mut failures = Vec::new();
    for r in &cat {
        assert!(
            ["safe", "manual", "warning", "note"].contains(&r.class.as_str()),
            "{}: class {}",
            r.id,
            r.class
        );
        assert!(
            !r.summary.is_empty() && !r.explanation.trim().is_empty(),
            "{}: undocumented",
            r.id
        );
        assert!(!r.example.is_empty(), "{}: no example", r.id);
        for ex in &r.example {
            let tmp = tempdir();
            write_tree(tmp.path(), &ex.before);
            let extra: Vec<&str> = ex.args.iter().map(String::as_str).collect();
            let out = run(tmp.path(), &[&["--write"][..], &extra].concat());
            let after = read_tree(tmp.path());
            for (name, before) in &ex.before {
                let want = ex.after.get(name).unwrap_or(before);
                if after.get(name) != Some(want) {
                    failures.push(format!(
                        "{} / {}: {name} after migration:\n{}\n--- expected:\n{want}\n--- stderr:\n{}",
                        r.id, ex.name, after.get(name).cloned().unwrap_or_default(), stderr(&out)
                    ));
                }
            }
            // Diagnostics come from the run on the original files.
            let tmp2 = tempdir();
            write_tree(tmp2.path(), &ex.before);
            let j = run(tmp2.path(), &[&["--format", "json"][..], &extra].concat());
            let got: BTreeSet<String> = stdout(&j)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["type"] == "diagnostic")
                .map(|v| v["rule"].as_str().unwrap().to_string())
                .collect();
            for d in &ex.diagnostics {
                if !got.contains(d) {
                    failures.push(format!(
                        "{} / {}: expected diagnostic {d}, got {got:?}",
                        r.id, ex.name
                    ));
                }
            }
            if r.class == "safe" && ex.after.is_empty() {
                failures.push(format!(
                    "{} / {}: a safe rule's example must change something",
                    r.id, ex.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn rules_and_explain_commands() {
    let tmp = tempdir();
    let o = run(tmp.path(), &["rules"]);
    assert_eq!(code(&o), 0);
    for r in rules::catalogue() {
        assert!(stdout(&o).contains(&r.id), "`rules` does not list {}", r.id);
    }
    let e = run(tmp.path(), &["explain", "perf-event-output"]);
    assert_eq!(code(&e), 0);
    assert!(stdout(&e).contains("bpf_ringbuf_output"));
    let bad = run(tmp.path(), &["explain", "no-such-rule"]);
    assert_eq!(code(&bad), 2);
}
