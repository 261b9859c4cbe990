//! Snapshot tests over `fixtures/*`: what `bpf-migrate --diff` and `--write` print on each
//! fixture's `input/` matches its approved snapshot `fixtures/NAME/snapshot.snap` (exit codes,
//! the unified diff, the diagnostics; see `FixtureRun` in tests/common); the printed diff
//! applied with `git apply` gives what `--write` writes; `--check` writes nothing; a second run
//! changes nothing; and the migrated programs compile (BPF C with clang, loaders with
//! `-Wall -Werror` against bpftool skeletons).
//!
//! Approving a change of output (snapshots use insta; `cargo install --locked cargo-insta`):
//!   cargo insta test -p bpf-migrate --test fixtures --review
//! or, after a failing `cargo test` (which leaves `fixtures/NAME/snapshot.snap.new` beside
//! each snapshot that differs, and each new fixture's), `cargo insta review`. Without
//! cargo-insta: `INSTA_UPDATE=always cargo test -p bpf-migrate --test fixtures` overwrites the
//! snapshots, to review with `git diff fixtures/`. One fixture alone:
//! `INSTA_GLOB_FILTER='NAME/*' cargo test -p bpf-migrate --test fixtures`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// `run` with the fixture's own options after `args`.
fn run_fx(fx: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let extra = fixture_args(fx);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    run(dir, &all)
}

/// Checks one fixture; the snapshot assertion reports its own failure (to insta's `glob!`),
/// the other checks return theirs.
fn check_fixture(fx: &Path) -> Result<(), String> {
    let name = fx.file_name().unwrap().to_string_lossy().into_owned();
    let input = read_tree(&fx.join("input"));
    let tmp = tempdir();

    // --write on one copy.
    let wdir = tmp.path().join("write");
    write_tree(&wdir, &input);
    let w = run_fx(fx, &wdir, &["--write"]);
    let written = read_tree(&wdir);
    let changed: BTreeMap<String, String> = written
        .iter()
        .filter(|(k, v)| input.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // --diff on a second copy.
    let ddir = tmp.path().join("diff");
    write_tree(&ddir, &input);
    let d = run_fx(fx, &ddir, &["--diff"]);
    let got = FixtureRun {
        args: fixture_args(fx),
        diff_code: code(&d),
        diff_stdout: stdout(&d),
        diff_stderr: stderr(&d),
        write_code: code(&w),
        write_stderr: stderr(&w),
    };

    let mut errs = Vec::new();
    let text = got.render();
    if FixtureRun::parse(&text).as_ref() != Ok(&got) || text.contains('\r') {
        errs.push(format!(
            "{name}: the snapshot cannot hold this output exactly (a carriage return, a \
             section that does not end in a newline, or a line that reads like a marker):\n{text}"
        ));
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(fx);
    settings.set_prepend_module_to_snapshot(false);
    settings.remove_snapshot_suffix();
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!("snapshot", text));

    let manual = got.write_stderr.contains("manual[");
    let want_code = if manual { 1 } else { 0 };
    if got.write_code != want_code {
        errs.push(format!(
            "{name}: --write exited {}, expected {want_code}",
            got.write_code
        ));
    }

    // The diff, applied with git apply to the second copy, must give the same tree.
    let patch = &got.diff_stdout;
    let want = if changed.is_empty() && !manual { 0 } else { 1 };
    if got.diff_code != want {
        errs.push(format!(
            "{name}: --diff exited {}, expected {want}",
            got.diff_code
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
        fs::write(tmp.path().join("p.diff"), patch).unwrap();
        if let Err(e) = git_apply(&ddir, &tmp.path().join("p.diff")) {
            errs.push(format!("{name}: git apply rejected the diff: {e}\n{patch}"));
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

/// Every fixture (`fixtures/*/input`): its snapshot and the checks above. insta's `glob!`
/// goes on past a differing snapshot, so that one run shows (and leaves for review) them all.
#[test]
fn fixtures_snapshots_git_apply_idempotent() {
    let mut count = 0;
    let mut failures = Vec::new();
    let snapshots = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        insta::glob!("../fixtures", "*/input", |input| {
            count += 1;
            if let Err(e) = check_fixture(input.parent().unwrap()) {
                failures.push(e);
            }
        })
    }));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if let Err(panic) = snapshots {
        std::panic::resume_unwind(panic);
    }
    if std::env::var_os("INSTA_GLOB_FILTER").is_none() {
        assert!(count >= 12, "expected at least 12 fixtures, found {count}");
    }
}

/// The snapshot text gives back every byte of a run: empty sections, blank lines at a
/// section's end, each way of showing `--write`'s diagnostics; and a run it cannot hold is
/// told apart (the fixture test reports it rather than approving a lossy snapshot).
#[test]
fn snapshot_text_round_trips() {
    let run = |stdout: &str, stderr: &str, write_stderr: &str| FixtureRun {
        args: vec!["--strategy".into(), "reserve".into()],
        diff_code: 1,
        diff_stdout: stdout.into(),
        diff_stderr: stderr.into(),
        write_code: 0,
        write_stderr: write_stderr.into(),
    };
    for r in [
        run("", "", ""),
        run("diff\n\n", "a\nb\n\n", "a\nb\n\n"),
        run("diff\n", "a\nto migrate\n", "a\nmigrated\n"),
        run("", "to migrate\n", "migrated\n"),
        run("", "a\n", "b\nc\n\n"),
        run("", "", "wrote\n"),
    ] {
        assert_eq!(FixtureRun::parse(&r.render()), Ok(r));
    }
    let r = run("no newline", "", "");
    assert_ne!(FixtureRun::parse(&r.render()), Ok(r));
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
                if !bpf_migrate_core::engine::is_python_source(Path::new(&rel), &text) {
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

/// Every migrated program compiles (the fixtures without options under every strategy).
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
                            // The other strategies too: every fixture's migration with
                            // --strategy reserve or compat compiles as well as its copy
                            // migration.
                            run_fx(fx, &out, &["--write"]);
                            if let Err(e) = compile_program(&out, &tmp.path().join("new")) {
                                errs.push_str(&format!("{name} (migrated): {e}"));
                            }
                            if fixture_args(fx).is_empty() {
                                for strategy in ["reserve", "compat"] {
                                    // Compat refuses the old API, whose original does not
                                    // build against this libbpf.
                                    if strategy == "compat" && old_api(fx) {
                                        continue;
                                    }
                                    let other = tmp.path().join(strategy);
                                    copy_tree(&fx.join("input"), &other);
                                    run(&other, &["--write", "--strategy", strategy]);
                                    let build = tmp.path().join(format!("{strategy}-build"));
                                    if let Err(e) = compile_program(&other, &build) {
                                        errs.push_str(&format!(
                                            "{name} (--strategy {strategy}): {e}"
                                        ));
                                    }
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

/// Go readers (`go_*` fixtures): where the original builds here (`scripts/go-build-check`:
/// bpf2go from the C, gofmt, go vet, go build, in GOPATH mode against Debian's
/// golang-github-cilium-ebpf-dev), the migrated one builds too. Without a Go toolchain and
/// cilium/ebpf the script says so (exit 77) and this test checks nothing.
#[test]
fn migrated_go_readers_build() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/go-build-check");
    let check = |dir: &Path| Command::new(&script).arg(dir).output().unwrap();
    let mut failures = Vec::new();
    let mut built = 0;
    for fx in fixtures()
        .into_iter()
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("go_"))
    {
        let name = fx.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempdir();
        let dir = tmp.path().join(&name);
        copy_tree(&fx.join("input"), &dir);
        let orig = check(&dir);
        if orig.status.code() == Some(77) {
            eprintln!("skipped: {}", String::from_utf8_lossy(&orig.stdout));
            return;
        }
        if !orig.status.success() {
            // Written for a newer cilium/ebpf than the one installed (the fixture's README
            // says which): nothing to compare with.
            eprintln!("{name}: the original does not build here, not checked");
            continue;
        }
        run_fx(&fx, &dir, &["--write"]);
        let new = check(&dir);
        if new.status.success() {
            built += 1;
        } else {
            failures.push(format!(
                "{name} (migrated): {}{}",
                String::from_utf8_lossy(&new.stdout),
                String::from_utf8_lossy(&new.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(built > 0, "no Go fixture was built");
}
