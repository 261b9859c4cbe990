//! Every rule in `rules/` is documented and its before/after examples hold: the example's
//! `before` files, migrated with `--write`, become its `after` files (files not listed in
//! `after` stay as they were) and produce the diagnostics it lists.

mod common;

use std::collections::BTreeSet;

use bpf_migrate_core::discover;
use bpf_migrate_core::engine::{self, Lost, Options, Strategy};
use bpf_migrate_core::report::Severity;
use bpf_migrate_core::rules::{self, Language, Rule};
use bpf_migrate_core::source::SourceFile;
use common::*;

#[test]
fn catalogue_is_complete_and_examples_hold() {
    let cat = rules::catalogue();
    let ids: BTreeSet<&str> = cat.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), cat.len(), "duplicate rule ids");
    let mut failures = Vec::new();
    for r in &cat {
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

/// Where in a program an edit or a diagnostic at `offset` of `file` lies, told from the
/// file alone (not from what the engine says of it).
fn language_of(file: &SourceFile, offset: usize) -> Language {
    let path = file.path.to_string_lossy();
    if path.ends_with(".rs") {
        return Language::Rust;
    }
    if path.ends_with(".go") {
        return Language::Go;
    }
    if engine::is_python_source(&file.path, &file.text) {
        let tree = engine::python::parse(&file.text).expect("the fixture's Python parses");
        let mut node = tree
            .root_node()
            .descendant_for_byte_range(offset, offset)
            .expect("a node");
        loop {
            if node.kind() == "string" {
                return Language::BccC;
            }
            match node.parent() {
                Some(p) => node = p,
                None => return Language::BccPython,
            }
        }
    }
    let t = &file.text;
    // Sections make libbpf's C, whatever its own macros are called (BCC C has none).
    if t.contains("SEC(\"") {
        Language::BpfC
    } else if [
        "BPF_PERF_OUTPUT(",
        ".perf_submit",
        "BPF_HASH(",
        "BPF_ARRAY(",
    ]
    .iter()
    .any(|w| t.contains(w))
    {
        Language::BccC
    } else if path.ends_with(".bpf.c") || t.contains("SEC(") || t.contains("__section(") {
        Language::BpfC
    } else {
        Language::LibbpfC
    }
}

/// The catalogue says what the code does: every edit and diagnostic the engine makes, over
/// every fixture and rule example, is of a rule whose `languages` name the language it was
/// made in, with the severity of the rule's class (but for the two demotions the engine
/// documents: a perf map type named in code of no program, a `src_file` it cannot resolve);
/// and every language a rule names is one it is seen in.
#[test]
fn catalogue_metadata_matches_what_the_engine_emits() {
    let mut programs: Vec<Vec<SourceFile>> = Vec::new();
    for fx in fixtures() {
        let found = discover::discover(&[fx.join("input")]);
        programs.push(found.files);
    }
    for r in rules::catalogue() {
        for ex in &r.example {
            let tmp = tempdir();
            write_tree(tmp.path(), &ex.before);
            programs.push(discover::discover(&[tmp.path().to_path_buf()]).files);
        }
    }
    let mut seen: BTreeSet<(Rule, &str)> = BTreeSet::new();
    let mut failures = Vec::new();
    for files in &programs {
        for (strategy, lost) in [
            (Strategy::Copy, Lost::Count),
            (Strategy::Reserve, Lost::Count),
            (Strategy::Copy, Lost::Drop),
            (Strategy::Compat, Lost::Count),
        ] {
            let opts = Options {
                strategy,
                lost,
                ..Options::default()
            };
            let out = engine::migrate(files, &opts);
            let mut made: Vec<(Rule, &SourceFile, usize, Option<Severity>)> = Vec::new();
            for ch in &out.changes {
                for e in &ch.edits {
                    made.push((e.rule, &files[ch.file], e.start, None));
                }
            }
            for d in &out.diags {
                if d.line == 0 {
                    continue;
                }
                let f = files
                    .iter()
                    .find(|f| f.display == d.file)
                    .expect("its file");
                made.push((d.rule, f, d.offset, Some(d.severity)));
            }
            for (rule, f, at, sev) in made {
                if !rule.in_catalogue() {
                    continue;
                }
                let lang = language_of(f, at);
                seen.insert((rule, lang.name()));
                if !rule.languages().contains(&lang) {
                    failures.push(format!(
                        "{}:{at}: {rule} made in {} (rules/{rule}.toml lists {:?})",
                        f.display,
                        lang.name(),
                        rule.languages()
                            .iter()
                            .map(|l| l.name())
                            .collect::<Vec<_>>()
                    ));
                }
                let demoted = matches!(
                    (rule, sev),
                    (Rule::UnsupportedForm, Some(Severity::Warning))
                        | (Rule::UnlinkedProgram, Some(Severity::Note))
                );
                if let Some(sev) = sev
                    && sev != rule.severity()
                    && !demoted
                {
                    failures.push(format!(
                        "{}:{at}: {rule} reported as {} (its class is {})",
                        f.display,
                        sev.label(),
                        rule.class().name()
                    ));
                }
            }
        }
    }
    for r in Rule::ALL.iter().filter(|r| r.in_catalogue()) {
        for l in r.languages() {
            if !seen.contains(&(*r, l.name())) {
                failures.push(format!(
                    "rules/{r}.toml lists {} but no fixture or example makes it there",
                    l.name()
                ));
            }
        }
    }
    failures.sort();
    failures.dedup();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_rules_in_select_or_ignore_are_errors() {
    let tmp = tempdir();
    for args in [
        &["--select", "no-such-rule"][..],
        &["--ignore", "bcc-*,nope-*"],
        &["--check", "--select", "perf-map-def,perf-event-outptu"],
    ] {
        let o = run(tmp.path(), args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("no rule `"), "{args:?}: {}", stderr(&o));
    }
    let ok = run(tmp.path(), &["--select", "bcc-*,perf-map-def", "--check"]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
}
