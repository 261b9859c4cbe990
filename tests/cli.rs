//! Command-line behaviour: exit codes, output streams, JSON, bad input, `--write` details.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn fixture_input(name: &str) -> std::collections::BTreeMap<String, String> {
    read_tree(&root().join("fixtures").join(name).join("input"))
}

#[test]
fn nothing_to_do_exits_zero_and_prints_nothing() {
    let tmp = tempdir();
    fs::write(tmp.path().join("plain.c"), "int main(void) { return 0; }\n").unwrap();
    let o = run(tmp.path(), &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn diff_goes_to_stdout_and_diagnostics_to_stderr() {
    let tmp = tempdir();
    write_tree(tmp.path(), &fixture_input("execsnoop"));
    let o = run(tmp.path(), &["--diff"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).starts_with("diff --git a/execsnoop.bpf.c b/execsnoop.bpf.c\n"));
    assert!(!stdout(&o).contains("note["));
    assert!(stderr(&o).contains("note[lost-counter]"));
    // A path given as a file pulls in its partner (the loader beside it).
    let f = run(tmp.path(), &["execsnoop.bpf.c"]);
    assert!(stdout(&f).contains("+++ b/execsnoop.c"), "{}", stdout(&f));
    // -q keeps only what needs action.
    let q = run(tmp.path(), &["-q"]);
    assert!(stderr(&q).is_empty(), "{}", stderr(&q));
}

#[test]
fn json_lines_cover_edits_diagnostics_and_summary() {
    let tmp = tempdir();
    write_tree(tmp.path(), &fixture_input("execsnoop"));
    write_tree(
        &tmp.path().join("raw"),
        &fixture_input("refuse_raw_consumer"),
    );
    let o = run(tmp.path(), &["--format", "json"]);
    assert_eq!(code(&o), 1);
    let vals: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let edit = vals
        .iter()
        .find(|v| v["type"] == "edit" && v["rule"] == "perf-event-output")
        .expect("an edit");
    assert_eq!(edit["file"], "execsnoop.bpf.c");
    assert!(
        edit["line"].as_u64().unwrap() > 0
            && edit["replacement"]
                .as_str()
                .unwrap()
                .contains("bpf_ringbuf_output(")
    );
    let manual = vals
        .iter()
        .find(|v| v["type"] == "diagnostic" && v["rule"] == "no-ring-equivalent")
        .expect("a refusal");
    assert_eq!(manual["severity"], "manual");
    assert_eq!(manual["file"], "raw/refuse_raw_consumer.c");
    let summary = vals.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["programs_migrated"], 1);
    assert_eq!(summary["programs_manual"], 1);
}

#[test]
fn bad_input_is_reported_and_other_files_still_processed() {
    let tmp = tempdir();
    let d = tmp.path();
    write_tree(&d.join("good"), &fixture_input("execsnoop"));
    fs::write(d.join("binary.c"), b"\x7fELF\x00\x00perf_buffer__new").unwrap();
    fs::write(
        d.join("latin1.c"),
        b"/* caf\xe9 */\nint x; // perf_buffer__new\n",
    )
    .unwrap();
    fs::write(d.join("broken.bpf.c"), "struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n} events SEC(\".maps\");\nint f(void *ctx) {\n\tif (x {{ bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, 4);\n").unwrap();
    std::os::unix::fs::symlink("nowhere.c", d.join("dangling.c")).unwrap();
    let before = read_tree(d);
    let o = run(d, &[".", "dangling.c", "missing-dir"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("binary.c") && err.contains("binary file"),
        "{err}"
    );
    assert!(
        err.contains("latin1.c") && err.contains("not valid UTF-8") && err.contains("line 1"),
        "{err}"
    );
    assert!(
        err.contains("error[parse-error]") && err.contains("broken.bpf.c:5:"),
        "{err}"
    );
    assert!(
        err.contains("dangling.c") && err.contains("missing-dir"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("+++ b/good/execsnoop.c"),
        "the good program is still migrated"
    );
    // --write touches only the good program.
    let w = run(d, &["--write", "."]);
    assert_eq!(code(&w), 2);
    let after = read_tree(d);
    for (k, v) in &before {
        if !k.starts_with("good/") {
            assert_eq!(after.get(k), Some(v), "{k} must not change");
        }
    }
    assert_ne!(
        after.get("good/execsnoop.c"),
        before.get("good/execsnoop.c")
    );
}

#[test]
fn bad_options_exit_two() {
    let tmp = tempdir();
    for args in [
        &["--ringbuf-size", "3000"][..],
        &["--diff", "--write"],
        &["--no-such-flag"],
    ] {
        let o = run(tmp.path(), args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn ringbuf_size_option_sets_max_entries() {
    let tmp = tempdir();
    write_tree(tmp.path(), &fixture_input("execsnoop"));
    let o = run(tmp.path(), &["--ringbuf-size", "1M"]);
    assert!(
        stdout(&o).contains("+\t__uint(max_entries, 1 * 1024 * 1024);"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn write_keeps_mode_and_crlf_and_does_not_follow_links_away() {
    let tmp = tempdir();
    let d = tmp.path();
    let mut files = fixture_input("execsnoop");
    for v in files.values_mut() {
        *v = v.replace('\n', "\r\n");
    }
    write_tree(d, &files);
    fs::set_permissions(d.join("execsnoop.c"), fs::Permissions::from_mode(0o751)).unwrap();
    // The BPF file is reached through a symlink: the target is written, the link stays.
    fs::rename(d.join("execsnoop.bpf.c"), d.join("real.bpf.c.txt")).unwrap();
    std::os::unix::fs::symlink("real.bpf.c.txt", d.join("execsnoop.bpf.c")).unwrap();
    let o = run(d, &["--write", "execsnoop.c", "execsnoop.bpf.c"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mode = fs::metadata(d.join("execsnoop.c"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o751);
    assert!(
        fs::symlink_metadata(d.join("execsnoop.bpf.c"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let bpf = fs::read_to_string(d.join("real.bpf.c.txt")).unwrap();
    assert!(bpf.contains("BPF_MAP_TYPE_RINGBUF"));
    for text in [bpf, fs::read_to_string(d.join("execsnoop.c")).unwrap()] {
        assert_eq!(
            text.matches('\n').count(),
            text.matches("\r\n").count(),
            "every line ends in CRLF"
        );
    }
    // No temp files are left behind.
    assert!(fs::read_dir(d).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".bpf-migrate-")
    }));
}

#[test]
fn read_only_file_is_reported_not_forced() {
    let tmp = tempdir();
    write_tree(tmp.path(), &fixture_input("execsnoop"));
    let p = tmp.path().join("execsnoop.c");
    let before = fs::read_to_string(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
    let o = run(tmp.path(), &["--write"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&p).unwrap(), before);
    // Nor is the rest of its program written: never half a program.
    assert!(stderr(&o).contains("rest of its program was not written"));
    assert_eq!(read_tree(tmp.path()), fixture_input("execsnoop"));
}

#[test]
fn library_and_kernel_headers_are_left_alone() {
    // vmlinux.h has the enumerator BPF_MAP_TYPE_PERF_EVENT_ARRAY and the kernel's own
    // struct perf_buffer; bpf_helper_defs.h declares the helpers; libbpf.h declares
    // perf_buffer__new. None of them is code to migrate.
    let tmp = tempdir();
    fs::copy(
        vmlinux_dir().join("vmlinux.h"),
        tmp.path().join("vmlinux.h"),
    )
    .unwrap();
    for h in ["bpf_helper_defs.h", "libbpf.h"] {
        fs::copy(Path::new("/usr/include/bpf").join(h), tmp.path().join(h)).unwrap();
    }
    let o = run(tmp.path(), &["-q"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).is_empty() && stderr(&o).is_empty(),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn tools_without_an_extension_are_walked_when_python_and_passed_over_otherwise() {
    let tmp = tempdir();
    let d = tmp.path();
    let tool = &fixture_input("bcc_installed_tools")["tools/mountwatch"];
    fs::create_dir_all(d.join("tools")).unwrap();
    fs::write(d.join("tools/mountwatch"), tool).unwrap();
    // Not Python: a shell script and binaries (one a zip application behind a Python
    // shebang) that name the triggers. A walk skips them silently, as it does a Makefile.
    fs::write(
        d.join("tools/run-all"),
        "#!/bin/sh\n# perf_buffer_poll BPF_PERF_OUTPUT\nexec ./mountwatch\n",
    )
    .unwrap();
    fs::write(
        d.join("tools/helper"),
        b"\x7fELF\x02\x01\x00\x00perf_buffer__new",
    )
    .unwrap();
    fs::write(
        d.join("tools/bundle"),
        b"#!/usr/bin/env python3\nPK\x03\x04\x00\x00open_perf_buffer",
    )
    .unwrap();
    let o = run(d, &["."]);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        stdout(&o).contains("+++ b/tools/mountwatch") && stdout(&o).contains("open_ring_buffer"),
        "{}",
        stdout(&o)
    );
    assert!(
        err.contains("1 file(s) scanned")
            && !err.contains("error")
            && !err.contains("run-all")
            && !err.contains("helper")
            && !err.contains("bundle"),
        "{err}"
    );
    // Named, the tool is read as Python (it was read as C, a parse error at its first
    // comment); a binary named is reported, as before.
    let o = run(d, &["tools/mountwatch"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).contains("+++ b/tools/mountwatch"));
    let o = run(d, &["tools/bundle"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("binary file"), "{}", stderr(&o));
}

#[test]
fn a_tool_named_alone_brings_the_c_file_it_reads_as_text() {
    let tmp = tempdir();
    write_tree(tmp.path(), &fixture_input("bcc_text_file"));
    let o = run(tmp.path(), &["slowopen.py"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    for f in ["+++ b/slowopen.py", "+++ b/slowopen.c"] {
        assert!(stdout(&o).contains(f), "{f}: {}", stdout(&o));
    }
}
