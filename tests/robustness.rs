//! Bad and hostile input: property tests over mutated fixtures (no panic, no overlapping
//! edits, bytes outside edits unchanged, a second run changes nothing), odd encodings and line
//! endings, huge and deeply nested files, unterminated code, symlink loops.

mod common;

use std::fs;
use std::path::PathBuf;

use bpf_migrate_core::engine::{self, Options};
use bpf_migrate_core::report::Severity;
use bpf_migrate_core::source::SourceFile;
use common::*;
use proptest::prelude::*;

/// The files of a few fixtures of every kind, as (name, text).
fn corpus() -> Vec<Vec<(String, String)>> {
    [
        "execsnoop",
        "vfsstat_fentry",
        "twomaps",
        "bcc_tcpconnect",
        "bcc_class_tool",
        "rs_closures",
        "rs_lost_state",
        "tcpkt",
        "reserve_procwatch",
        "bcc_reserve_execlat",
        "opensnoop",
    ]
    .iter()
    .map(|f| {
        read_tree(&root().join("fixtures").join(f).join("input"))
            .into_iter()
            .collect()
    })
    .collect()
}

fn sources(files: &[(String, String)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(n, t)| SourceFile::new(PathBuf::from(n), n.clone(), t.clone()))
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    Insert(usize, String),
    Truncate(usize),
    Crlf,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "(",
                ")",
                "{",
                "}",
                ";",
                "/*",
                "\"",
                "'",
                "\\",
                "#if 0\n",
                "#endif\n",
                "perf_buffer__poll(pb, 1);",
                "bpf_perf_event_output(ctx, &events, 0, &e, 4);",
                "\u{feff}",
                "é",
                "\r",
                "\t",
                ",",
                "PerfBufferBuilder::new(x)",
                "BPF_PERF_OUTPUT(x);"
            ])
            .prop_map(String::from)
        )
            .prop_map(|(a, s)| Mutation::Insert(a, s)),
        any::<usize>().prop_map(Mutation::Truncate),
        Just(Mutation::Crlf),
    ]
}

fn apply_mutation(text: &str, m: &Mutation) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let char_at = |a: usize| {
        let idx = a % (text.len() + 1);
        (0..=idx)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0)
    };
    match m {
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            lines
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != i)
                .map(|(_, l)| *l)
                .collect()
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            lines
                .iter()
                .enumerate()
                .flat_map(|(k, l)| if k == i { vec![*l, *l] } else { vec![*l] })
                .collect()
        }
        Mutation::Insert(a, s) => {
            let at = char_at(*a);
            format!("{}{}{}", &text[..at], s, &text[at..])
        }
        Mutation::Truncate(a) => text[..char_at(*a)].to_string(),
        Mutation::Crlf => text.replace('\n', "\r\n"),
        _ => text.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_programs_never_break_the_invariants(
        which in 0usize..11,
        file in any::<usize>(),
        muts in prop::collection::vec(mutation(), 1..4),
        reserve in any::<bool>(),
    ) {
        let opts = Options {
            strategy: if reserve { engine::Strategy::Reserve } else { engine::Strategy::Copy },
            ..Options::default()
        };
        let programs = corpus();
        let mut files = programs[which % programs.len()].clone();
        let k = file % files.len();
        for m in &muts {
            files[k].1 = apply_mutation(&files[k].1, m);
        }
        let srcs = sources(&files);
        let out = engine::migrate(&srcs, &opts);
        prop_assert!(!out.diags.iter().any(|d| d.rule.id() == "internal-error"), "{:?}", out.diags);
        for ch in &out.changes {
            let f = &srcs[ch.file];
            // Sorted, non-overlapping, and everything outside the edits unchanged.
            let mut pos = 0;
            let mut rebuilt = String::new();
            for e in &ch.edits {
                prop_assert!(e.start >= pos && e.end >= e.start);
                rebuilt.push_str(&f.text[pos..e.start]);
                rebuilt.push_str(&if f.crlf { e.text.replace("\r\n", "\n").replace('\n', "\r\n") } else { e.text.clone() });
                pos = e.end;
            }
            rebuilt.push_str(&f.text[pos..]);
            prop_assert_eq!(&rebuilt, &ch.new_text);
        }
        // A second run over the result proposes nothing.
        let mut after = files.clone();
        for ch in &out.changes {
            after[ch.file].1 = ch.new_text.clone();
        }
        let again = engine::migrate(&sources(&after), &opts);
        prop_assert!(again.changes.is_empty(), "second run changed {:?}", again.changes.iter().map(|c| &after[c.file].0).collect::<Vec<_>>());
    }
}

#[test]
fn bom_and_mixed_line_endings_are_kept() {
    let tmp = tempdir();
    let mut files = read_tree(&root().join("fixtures/execsnoop/input"));
    let bpf = files.get_mut("execsnoop.bpf.c").unwrap();
    *bpf = format!("\u{feff}{}", bpf.replace('\n', "\r\n"));
    // One LF line among CRLF ones stays as it was.
    let loader = files.get_mut("execsnoop.c").unwrap();
    *loader = loader.replacen("\n", "\r\n", 40);
    write_tree(tmp.path(), &files);
    let o = run(tmp.path(), &["--write"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let bpf = fs::read_to_string(tmp.path().join("execsnoop.bpf.c")).unwrap();
    assert!(bpf.starts_with('\u{feff}') && bpf.contains("BPF_MAP_TYPE_RINGBUF);\r\n"));
    assert_eq!(bpf.matches('\n').count(), bpf.matches("\r\n").count());
    let loader = fs::read_to_string(tmp.path().join("execsnoop.c")).unwrap();
    assert!(loader.contains("ring_buffer__new"));
    // The first lines (untouched) keep CRLF, the rest LF: each line keeps its ending.
    let first: Vec<&str> = loader.split_inclusive('\n').take(5).collect();
    assert!(first.iter().all(|l| l.ends_with("\r\n")), "{first:?}");
    let lf_only = loader
        .split_inclusive('\n')
        .filter(|l| !l.ends_with("\r\n"))
        .count();
    assert!(lf_only > 100, "the LF lines stay LF");
}

#[test]
fn huge_many_maps_and_deeply_nested_files_get_a_message() {
    let tmp = tempdir();
    let d = tmp.path();
    // 10,000 perf maps without a reader: refused, quickly, with a message each.
    let mut many = String::from("#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n");
    for i in 0..10_000 {
        many.push_str(&format!(
            "struct {{ __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); }} m{i} SEC(\".maps\");\n"
        ));
    }
    fs::write(d.join("many.bpf.c"), &many).unwrap();
    // 50 MB with a trigger: not parsed, reported.
    let mut big = String::with_capacity(50 << 20);
    while big.len() < 50 << 20 {
        big.push_str("/* padding padding padding padding padding padding padding padding */\n");
    }
    big.push_str("int f(void *ctx) { return bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, 0, 0); }\n");
    fs::write(d.join("big.bpf.c"), &big).unwrap();
    // Nesting that would exhaust a recursive parser's stack.
    fs::write(
        d.join("deep.rs"),
        format!(
            "fn f() {{ let _ = PerfBufferBuilder::new(&m); {}0{} }}\n",
            "(".repeat(20_000),
            ")".repeat(20_000)
        ),
    )
    .unwrap();
    let o = run(d, &["--check"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("big.bpf.c") && err.contains("more than bpf-migrate parses"),
        "{err}"
    );
    assert!(
        err.contains("deep.rs") && err.contains("nest deeper"),
        "{err}"
    );
    assert_eq!(
        err.matches("unlinked-program").count(),
        10_001,
        "one message a map, and the summary"
    );
}

#[test]
fn unterminated_code_and_disabled_blocks() {
    let tmp = tempdir();
    let d = tmp.path();
    let mut files = read_tree(&root().join("fixtures/execsnoop/input"));
    // A disabled block holding a second output call is migrated with the rest: it is code.
    let bpf = files.get_mut("execsnoop.bpf.c").unwrap();
    *bpf = bpf.replacen(
        "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));",
        "#if 0\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, 8);\n#endif\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));",
        1,
    );
    write_tree(&d.join("ok"), &files);
    // An unterminated comment and an unterminated string before a trigger.
    fs::write(d.join("bad1.bpf.c"), "/* never closed\nint f(void *c) { bpf_perf_event_output(c, &events, BPF_F_CURRENT_CPU, 0, 0); }\n").unwrap();
    fs::write(
        d.join("bad2.c"),
        "static const char *s = \"open;\nint main(void) { perf_buffer__poll(pb, 10); }\n",
    )
    .unwrap();
    let o = run(d, &["--write"]);
    assert_ne!(code(&o), 0);
    let bpf = fs::read_to_string(d.join("ok/execsnoop.bpf.c")).unwrap();
    assert!(
        !bpf.contains("bpf_perf_event_output")
            && bpf.contains("#if 0\n\tevents_lost_count(bpf_ringbuf_output(&events, &e, 8, 0));"),
        "{bpf}"
    );
    assert_eq!(
        fs::read_to_string(d.join("bad2.c")).unwrap(),
        "static const char *s = \"open;\nint main(void) { perf_buffer__poll(pb, 10); }\n"
    );
    assert!(stderr(&o).contains("bad2.c"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bad1.bpf.c") && stderr(&o).contains("unterminated comment"),
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&o), 2, "an unterminated comment is an error");
}

#[test]
fn symlink_loops_are_reported_or_skipped() {
    let tmp = tempdir();
    let d = tmp.path();
    write_tree(
        &d.join("prog"),
        &read_tree(&root().join("fixtures/execsnoop/input")),
    );
    std::os::unix::fs::symlink("loop.c", d.join("loop.c")).unwrap();
    std::os::unix::fs::symlink(".", d.join("prog/self")).unwrap();
    // Walking: links are not followed, the program is still migrated.
    let o = run(d, &["--check", "."]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 program(s) to migrate"),
        "{}",
        stderr(&o)
    );
    // Named: the loop is an error naming the path; the rest is still processed.
    let o = run(d, &["--check", "loop.c", "prog"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("loop.c") && stderr(&o).contains("1 program(s) to migrate"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn well_formed_programs_never_produce_errors() {
    // Errors (exit 2) are for input that cannot be read or parsed: no fixture, migrated or
    // refused, is that.
    for fx in fixtures() {
        let files: Vec<(String, String)> = read_tree(&fx.join("input")).into_iter().collect();
        for strategy in [engine::Strategy::Copy, engine::Strategy::Reserve] {
            let opts = Options {
                strategy,
                ..Options::default()
            };
            let out = engine::migrate(&sources(&files), &opts);
            let errors: Vec<_> = out
                .diags
                .iter()
                .filter(|d| {
                    matches!(d.severity, Severity::Error) || d.rule.id() == "internal-error"
                })
                .collect();
            assert!(
                errors.is_empty(),
                "{} ({strategy:?}): {errors:?}",
                fx.display()
            );
        }
    }
}

#[test]
fn control_bytes_in_the_input_are_just_text() {
    // Found by fuzzing: a \x01 byte in a comment was taken for an internal marker.
    let tmp = tempdir();
    let mut files = read_tree(&root().join("fixtures/execsnoop/input"));
    let bpf = files.get_mut("execsnoop.bpf.c").unwrap();
    *bpf = bpf.replacen("/*", "/* \u{1}", 1);
    write_tree(tmp.path(), &files);
    let o = run(tmp.path(), &["--write"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read_to_string(tmp.path().join("execsnoop.bpf.c"))
            .unwrap()
            .contains("/* \u{1}")
    );
}

#[test]
fn control_bytes_in_copied_text_are_just_text() {
    // Found by fuzzing: a message string holding \x01, copied into an edit, was taken for an
    // unresolved page-count marker.
    let tmp = tempdir();
    let mut files = read_tree(&root().join("fixtures/execsnoop/input"));
    let loader = files.get_mut("execsnoop.c").unwrap();
    *loader = loader.replacen(
        "failed to open perf buffer",
        "failed to open perf buffer \u{1}",
        1,
    );
    write_tree(tmp.path(), &files);
    let o = run(tmp.path(), &["--write"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read_to_string(tmp.path().join("execsnoop.c"))
            .unwrap()
            .contains("failed to open ring buffer \u{1}")
    );
}
