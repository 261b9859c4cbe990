//! Tests of the whole engine: analysis, linking and the checks together.

use std::path::{Path, PathBuf};

use super::check::{edits_ahead, parse_errors};
use super::testkit::{LICENSE, LOADER, run};
use super::*;
use crate::edit;
use crate::report::Severity;
use crate::rules::Rule;

/// The perf map type as a value refuses its program when one is migrated (a loader that
/// checks the map's type would break), also from a header the loader includes, and is
/// only a warning in code that belongs to no program (a switch over map types in a
/// vendored library).
#[test]
fn a_map_type_mention_refuses_only_inside_a_program() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/execsnoop/input");
    let read = |name: &str| {
        let path = root.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        SourceFile::new(path, name.to_string(), text)
    };
    let check = "\nint type_ok(int type)\n{\n\treturn type == BPF_MAP_TYPE_PERF_EVENT_ARRAY;\n}\n";
    let mut loader = read("execsnoop.c");
    loader.text.push_str(check);
    let lone = SourceFile::new(
        PathBuf::from("probes.c"),
        "probes.c".into(),
        format!("#include <bpf/bpf.h>\n{check}"),
    );
    let out = migrate(
        &[read("execsnoop.bpf.c"), loader, lone],
        &Options::default(),
    );
    let severity = |file: &str| {
        out.diags
            .iter()
            .filter(|d| d.file == file && d.rule == Rule::UnsupportedForm)
            .map(|d| d.severity)
            .collect::<Vec<_>>()
    };
    assert_eq!(severity("execsnoop.c"), [Severity::Manual]);
    assert_eq!(severity("probes.c"), [Severity::Warning]);
    assert!(out.changes.is_empty());
    assert_eq!(
        (out.stats.programs_manual, out.stats.programs_migrated),
        (1, 0)
    );

    // Behind a macro of a header the loader includes: the header joins the program,
    // which is refused (it was migrated, the header's refusal standing apart).
    let mut loader = read("execsnoop.c");
    loader.text = loader.text.replacen(
        "#include \"execsnoop.h\"",
        "#include \"execsnoop.h\"\n#include \"maptype.h\"",
        1,
    );
    let header = SourceFile::new(
        root.join("maptype.h"),
        "maptype.h".into(),
        "#define EVENTS_MAP_TYPE BPF_MAP_TYPE_PERF_EVENT_ARRAY\n".into(),
    );
    let out = migrate(
        &[read("execsnoop.bpf.c"), loader, header],
        &Options::default(),
    );
    assert!(out.changes.is_empty());
    assert_eq!(
        (out.stats.programs_manual, out.stats.programs_migrated),
        (1, 0)
    );
    assert!(
        out.diags
            .iter()
            .any(|d| d.file == "maptype.h" && d.severity == Severity::Manual)
    );
}

/// Every fixture file with edits, as it is, with CRLF line endings and a BOM, and with a
/// few lines dropped or doubled: the incremental check counts the errors a full parse
/// of the migrated text counts.
#[test]
fn incremental_check_counts_what_a_full_parse_counts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut inputs = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.components().any(|c| c.as_os_str() == "input")
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                inputs.push((p, t));
            }
        }
    }
    let variants = |t: &str| {
        let lines: Vec<&str> = t.split_inclusive('\n').collect();
        let mut v = vec![
            t.to_string(),
            format!("\u{feff}{}", t.replace('\n', "\r\n")),
        ];
        for k in [lines.len() / 4, lines.len() / 2, lines.len() * 3 / 4] {
            let mut dropped = lines.clone();
            dropped.remove(k);
            v.push(dropped.concat());
            let mut doubled = lines.clone();
            doubled.insert(k, lines[k]);
            v.push(doubled.concat());
        }
        v
    };
    let (mut checked, mut rust_checked) = (0, 0);
    for opts in [
        Options::default(),
        Options {
            strategy: Strategy::Reserve,
            ..Options::default()
        },
    ] {
        for (path, text) in &inputs {
            for t in variants(text) {
                let file = SourceFile::new(path.clone(), path.display().to_string(), t);
                let a = analyze(&file, &opts);
                let Some(ahead) = a.errors_ahead else {
                    continue;
                };
                let edits = edits_ahead(&a.edits).unwrap();
                let new_text = edit::apply(&file.text, &edits, file.crlf);
                let full = parse_errors(&file.path, &new_text);
                assert_eq!(ahead, full, "{}", path.display());
                checked += 1;
                rust_checked += usize::from(is_rust(path));
            }
        }
    }
    assert!(checked > 500, "only {checked} incremental checks");
    assert!(rust_checked > 20, "only {rust_checked} Rust checks by item");
}

/// A byte-order mark before a Rust file moves no edit: syn's positions are those of the
/// text after it (a `use libbpf_rs::PerfBufferBuilder;` on line 1 was rewritten one byte
/// early, into `RingBufferBuilderr`).
#[test]
fn a_byte_order_mark_before_rust_moves_no_edit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/rs_capable/input");
    let read = |rel: &str| {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        (PathBuf::from(rel), text)
    };
    let (main_path, main) = read("src/main.rs");
    // The `use` of PerfBufferBuilder first (after the inner doc comments it may not follow).
    let lines: Vec<&str> = main
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("//!"))
        .collect();
    let k = lines
        .iter()
        .position(|l| l.starts_with("use ") && l.contains("PerfBufferBuilder"))
        .unwrap();
    let mut reordered = lines.clone();
    let used = reordered.remove(k);
    reordered.insert(0, used);
    let reordered = reordered.concat();
    let run = |bom: &str| {
        let mut files = vec![
            read("src/bpf/capable.bpf.c"),
            read("src/stats.rs"),
            (main_path.clone(), format!("{bom}{reordered}")),
        ];
        files.sort();
        let files: Vec<SourceFile> = files
            .into_iter()
            .map(|(p, t)| SourceFile::new(p.clone(), p.display().to_string(), t))
            .collect();
        // The capability tracer keeps no lost counter: reading it would be traced.
        let opts = Options {
            lost: Lost::Drop,
            ..Options::default()
        };
        let out = migrate(&files, &opts);
        out.changes
            .into_iter()
            .map(|c| (files[c.file].path.clone(), c.new_text))
            .collect::<Vec<_>>()
    };
    let (plain, marked) = (run(""), run("\u{feff}"));
    assert!(
        plain
            .iter()
            .any(|(p, t)| *p == main_path && t.starts_with("use libbpf_rs::RingBufferBuilder;")),
        "{plain:?}"
    );
    assert_eq!(plain.len(), marked.len());
    for ((p, t), (q, u)) in plain.iter().zip(&marked) {
        assert_eq!(p, q);
        assert_eq!(u.strip_prefix('\u{feff}').unwrap_or(u), t);
    }
}

/// Files named alike in one directory are analysed together, and a file among them that
/// needs manual work stops the others' counts ahead. When it belongs to another program
/// (an unrelated BCC tool of the same name), that program still migrates, checked by the
/// full parse at linking, exactly as it does alone.
#[test]
fn a_wrong_guess_about_a_program_changes_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let read = |f: &str, name: &str| {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let path = PathBuf::from("tools").join(name);
        SourceFile::new(path, format!("tools/{name}"), text)
    };
    let program = vec![
        read("execsnoop/input/execsnoop.bpf.c", "execsnoop.bpf.c"),
        read("execsnoop/input/execsnoop.c", "execsnoop.c"),
        read("execsnoop/input/execsnoop.h", "execsnoop.h"),
    ];
    let mut with_tool = program.clone();
    // A BCC tool that stays refused: its callback reads the CPU, and the event through a
    // ctypes class of its own, so no field can carry the CPU to it.
    let tool = read("bcc_cpu_callback/input/irqslower.py", "execsnoop.py");
    with_tool.push(SourceFile::new(
        tool.path,
        tool.display,
        tool.text.replace(
            "event = b[\"events\"].event(data)",
            "event = ct.cast(data, ct.POINTER(Data)).contents",
        ),
    ));
    let opts = Options::default();
    let alone = migrate(&program, &opts);
    let beside = migrate(&with_tool, &opts);
    let texts = |o: &Outcome| -> Vec<(usize, String)> {
        o.changes
            .iter()
            .map(|c| (c.file, c.new_text.clone()))
            .collect()
    };
    assert_eq!(alone.changes.len(), 2);
    assert_eq!(texts(&alone), texts(&beside));
    assert!(
        beside
            .diags
            .iter()
            .any(|d| d.file == "tools/execsnoop.py" && d.severity == Severity::Manual)
    );
    // The loader is one the check ahead counts, so it is the skip that sends it to the
    // full parse here.
    let (a, kept) = analyze_keeping(&with_tool[1], &opts);
    assert!(wants_check_ahead(&a) && kept.is_some());
}

/// An output in one header to a map another header defines, both included by the BPF source
/// (tracee's and kubeshark's layout): the header of the output joins the map's program
/// through the source that includes both. When that source is not among the files read (it
/// names no perf buffer API itself), the output's refusal covers the map's program: nothing
/// of it migrates (the map and its reader did, the output left: a program that no longer
/// loads).
#[test]
fn an_output_in_a_header_beside_the_maps_header_is_one_program() {
    let maps = "struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} events SEC(\".maps\");\n";
    let helpers = "static __always_inline void submit(void *ctx, u32 pid)\n{\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n}\n";
    // The source writes to the map too, so it is read (one that does not write is not read
    // at all, and then the header of the output cannot be placed).
    let bpf = format!(
        "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#include \"maps.h\"\n#include \"helpers.h\"\n\nSEC(\"tp/syscalls/sys_enter_execve\")\nint trace_exec(void *ctx)\n{{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\tif (pid & 1)\n\t\tsubmit(ctx, pid);\n\telse\n\t\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}}\n{LICENSE}"
    );
    let (changed, diags) = run(
        &[
            ("maps.h", maps),
            ("helpers.h", helpers),
            ("x.bpf.c", &bpf),
            ("x.c", LOADER),
        ],
        &Options::default(),
    );
    assert!(
        changed
            .get("helpers.h")
            .is_some_and(|t| t.contains("bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);"))
            && changed
                .get("maps.h")
                .is_some_and(|t| t.contains("BPF_MAP_TYPE_RINGBUF"))
            && changed.contains_key("x.c"),
        "{changed:?} {diags:?}"
    );
    let (changed, diags) = run(
        &[("maps.h", maps), ("helpers.h", helpers), ("x.c", LOADER)],
        &Options::default(),
    );
    assert!(changed.is_empty(), "{changed:?}");
    assert!(
        diags
            .iter()
            .any(|d| d.file == "helpers.h" && d.rule == Rule::UnlinkedProgram),
        "{diags:?}"
    );
}
