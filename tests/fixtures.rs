//! Golden tests over `fixtures/*`: the migrated files and diagnostics match what is checked
//! in; the printed diff applied with `git apply` gives what `--write` writes; a second run
//! changes nothing; and the migrated programs compile (BPF C with clang, loaders with
//! `-Wall -Werror` against bpftool skeletons).
//!
//! `BLESS=1 cargo test --test fixtures` rewrites the expected files from the tool's output.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// Extra command-line options of a fixture (`fixtures/X/args`, e.g. `--strategy reserve`).
fn fixture_args(fx: &Path) -> Vec<String> {
    fs::read_to_string(fx.join("args"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `run` with the fixture's own options after `args`.
fn run_fx(fx: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let extra = fixture_args(fx);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    run(dir, &all)
}

fn check_fixture(fx: &Path) -> Result<(), String> {
    let name = fx.file_name().unwrap().to_string_lossy().into_owned();
    let input = read_tree(&fx.join("input"));
    let tmp = tempdir();

    // --write on one copy.
    let wdir = tmp.path().join("write");
    write_tree(&wdir, &input);
    let w = run_fx(fx, &wdir, &["--write", "--color", "never"]);
    let written = read_tree(&wdir);
    let changed: std::collections::BTreeMap<String, String> = written
        .iter()
        .filter(|(k, v)| input.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let diags = stderr(&w);

    if bless() {
        let exp = fx.join("expected");
        let _ = fs::remove_dir_all(&exp);
        if !changed.is_empty() {
            write_tree(&exp, &changed);
        }
        fs::write(fx.join("expected.stderr"), &diags).unwrap();
    }
    let mut errs = Vec::new();
    let expected = read_tree(&fx.join("expected"));
    if changed != expected {
        for (k, v) in &expected {
            if changed.get(k) != Some(v) {
                errs.push(format!("{name}: {k} differs from expected/{k}"));
            }
        }
        for k in changed.keys().filter(|k| !expected.contains_key(*k)) {
            errs.push(format!("{name}: {k} changed but has no expected/{k}"));
        }
    }
    let exp_diags = fs::read_to_string(fx.join("expected.stderr")).unwrap_or_default();
    if diags != exp_diags {
        errs.push(format!(
            "{name}: diagnostics differ:\n--- expected\n{exp_diags}\n--- got\n{diags}"
        ));
    }
    let manual = diags.contains("manual[");
    let want_code = if manual { 1 } else { 0 };
    if code(&w) != want_code {
        errs.push(format!(
            "{name}: --write exited {}, expected {want_code}",
            code(&w)
        ));
    }

    // --diff on a second copy, applied with git apply, must give the same tree.
    let ddir = tmp.path().join("diff");
    write_tree(&ddir, &input);
    let d = run_fx(fx, &ddir, &[]);
    let patch = stdout(&d);
    let want = if changed.is_empty() && !manual { 0 } else { 1 };
    if code(&d) != want {
        errs.push(format!(
            "{name}: --diff exited {}, expected {want}",
            code(&d)
        ));
    }
    if changed.is_empty() != patch.is_empty() {
        errs.push(format!(
            "{name}: diff is {} but --write changed {} file(s)",
            if patch.is_empty() {
                "empty"
            } else {
                "not empty"
            },
            changed.len()
        ));
    }
    if !patch.is_empty() {
        fs::write(tmp.path().join("p.diff"), &patch).unwrap();
        // Its own repository: the temp dir lies inside this checkout, and git apply run in a
        // subdirectory of a repository resolves paths from that repository's top.
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(&ddir)
            .status()
            .unwrap();
        let ok = Command::new("git")
            .args(["apply", "-p1"])
            .arg(tmp.path().join("p.diff"))
            .current_dir(&ddir)
            .status()
            .unwrap();
        if !ok.success() {
            errs.push(format!("{name}: git apply rejected the diff:\n{patch}"));
        } else if read_tree(&ddir) != written {
            errs.push(format!(
                "{name}: git apply of the diff differs from --write"
            ));
        }
    }
    // --check prints no diff and exits like --diff.
    let cdir = tmp.path().join("check");
    write_tree(&cdir, &input);
    let c = run_fx(fx, &cdir, &["--check"]);
    if !stdout(&c).is_empty() || code(&c) != want {
        errs.push(format!(
            "{name}: --check printed {:?} and exited {}",
            stdout(&c),
            code(&c)
        ));
    }
    if read_tree(&cdir) != input {
        errs.push(format!("{name}: --check changed files"));
    }

    // Idempotence: the written tree has nothing left to migrate.
    let again = run_fx(fx, &wdir, &["--diff"]);
    if !stdout(&again).is_empty() {
        errs.push(format!(
            "{name}: second run proposes changes:\n{}",
            stdout(&again)
        ));
    }
    if !manual && code(&again) != 0 {
        errs.push(format!(
            "{name}: second run exited {}:\n{}",
            code(&again),
            stderr(&again)
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

#[test]
fn fixtures_golden_git_apply_idempotent() {
    let fxs = fixtures();
    assert!(
        fxs.len() >= 12,
        "expected at least 12 fixtures, found {}",
        fxs.len()
    );
    let failures: Vec<String> = fxs
        .iter()
        .filter_map(|fx| check_fixture(fx).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Fixtures whose original loader is written for an old libbpf (<= 0.5) and so does not
/// compile against the installed libbpf 1.x: only their migrated version is compiled.
fn old_api(fx: &Path) -> bool {
    fs::read_to_string(fx.join("README.md"))
        .unwrap_or_default()
        .contains("old libbpf API")
}

/// BCC tools: every migrated Python file compiles, and the C in its strings parses with no
/// more error nodes than before (placeholders and f-string braces may leave some).
#[test]
fn migrated_bcc_tools_compile_and_their_c_parses() {
    let mut failures = Vec::new();
    for fx in fixtures()
        .into_iter()
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("bcc_"))
    {
        let name = fx.file_name().unwrap().to_string_lossy().into_owned();
        // The fixture's own options, and --strategy reserve for those without any.
        let mut strategies = vec![fixture_args(&fx)];
        if strategies[0].is_empty() {
            strategies.push(vec!["--strategy".into(), "reserve".into()]);
        }
        for opts in strategies {
            let tmp = tempdir();
            copy_tree(&fx.join("input"), tmp.path());
            let before = read_tree(tmp.path());
            let mut args = vec!["--write"];
            args.extend(opts.iter().map(String::as_str));
            run(tmp.path(), &args);
            for (rel, text) in read_tree(tmp.path()) {
                if !rel.ends_with(".py") {
                    continue;
                }
                let o = Command::new("python3")
                    .args(["-m", "py_compile"])
                    .arg(tmp.path().join(&rel))
                    .output()
                    .unwrap();
                if !o.status.success() {
                    failures.push(format!(
                        "{name}/{rel} {opts:?}: py_compile: {}",
                        String::from_utf8_lossy(&o.stderr)
                    ));
                }
                let (old, new) = (c_errors(&before[&rel]), c_errors(&text));
                if new > old {
                    failures.push(format!(
                        "{name}/{rel} {opts:?}: the C in its strings has {new} error nodes, {old} before"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Error nodes in the BCC C of a Python file's strings.
fn c_errors(py: &str) -> usize {
    use bpf_migrate_core::lang::c;
    let tree = bpf_migrate_core::engine::python::parse(py).unwrap();
    let nodes = c::descendants(tree.root_node());
    let mut n = 0;
    for s in c::of_kind(&nodes, "string") {
        let ranges = bpf_migrate_core::engine::python::string_contents(s);
        if ranges.iter().any(|r| py[r.clone()].contains("_OUTPUT(")) {
            n += c::error_nodes(c::parse_bcc(py, Some(&ranges)).unwrap().tree.root_node()).len();
        }
    }
    n
}

/// Every migrated program compiles (the fixtures without options under both strategies).
#[test]
fn migrated_programs_compile() {
    let fxs: Vec<_> = fixtures()
        .into_iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with("bcc_"))
        .collect();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = fxs
            .chunks(fxs.len().div_ceil(2))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|fx| {
                            let name = fx.file_name().unwrap().to_string_lossy().into_owned();
                            let tmp = tempdir();
                            let out = tmp.path().join("src");
                            copy_tree(&fx.join("input"), &out);
                            let mut errs = String::new();
                            if !old_api(fx)
                                && let Err(e) = compile_program(&out, &tmp.path().join("orig"))
                            {
                                errs.push_str(&format!("{name} (original, must compile too): {e}"));
                            }
                            // The other strategy too: every fixture's migration with
                            // --strategy reserve compiles as well as its copy migration.
                            let other = tmp.path().join("other");
                            copy_tree(&fx.join("input"), &other);
                            run_fx(fx, &out, &["--write"]);
                            if let Err(e) = compile_program(&out, &tmp.path().join("new")) {
                                errs.push_str(&format!("{name} (migrated): {e}"));
                            }
                            if fixture_args(fx).is_empty() {
                                run(&other, &["--write", "--strategy", "reserve"]);
                                if let Err(e) = compile_program(&other, &tmp.path().join("res")) {
                                    errs.push_str(&format!("{name} (--strategy reserve): {e}"));
                                }
                            }
                            if errs.is_empty() { Ok(()) } else { Err(errs) }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
