//! Repository workflow: the pre-commit hooks (real `pre-commit` from PyPI), batch options
//! (`--exclude`, globs, `--select`/`--ignore`), `--allow-dirty`, deterministic output, and the
//! CI formats (SARIF, GitHub annotations).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    Command::new("git")
        .env("PRE_COMMIT_HOME", cache.join("pre-commit-home"))
        .env("CARGO_TARGET_DIR", cache.join("pre-commit-target"))
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> std::collections::BTreeMap<String, String> {
    read_tree(&root().join("fixtures").join(name).join("input"))
}

/// The fixture as migrated: its input with the diff of its approved snapshot applied.
fn expected(name: &str) -> std::collections::BTreeMap<String, String> {
    fixture_migrated(&root().join("fixtures").join(name))
}

#[test]
fn pre_commit_blocks_perf_buffer_programs_and_passes_ring_buffer_ones() {
    let head = String::from_utf8(git(&root(), &["rev-parse", "HEAD"]).stdout)
        .unwrap()
        .trim()
        .to_string();
    let tmp = tempdir();
    let repo = tmp.path();
    assert!(git(repo, &["init", "-q"]).status.success());
    fs::write(
        repo.join(".pre-commit-config.yaml"),
        format!(
            "repos:\n- repo: {}\n  rev: {head}\n  hooks:\n  - id: bpf-migrate-check\n",
            root().display()
        ),
    )
    .unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "config"]);
    // Hook environments are cached across runs; the cargo build pre-commit makes reuses one
    // target directory.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let pre_commit = |args: &[&str]| {
        Command::new("pre-commit")
            .args(args)
            .current_dir(repo)
            .env("PRE_COMMIT_HOME", cache.join("pre-commit-home"))
            .env("CARGO_TARGET_DIR", cache.join("pre-commit-target"))
            .output()
            .expect("pre-commit is needed (pip install pre-commit)")
    };
    assert!(pre_commit(&["install"]).status.success());

    // A perf buffer program: the commit is refused, and nothing is written.
    write_tree(repo, &fixture("execsnoop"));
    git(repo, &["add", "."]);
    let c = git(repo, &["commit", "-qm", "perf buffer tool"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );
    assert!(!c.status.success(), "the commit should be refused:\n{out}");
    assert!(
        out.contains("bpf-migrate (check)") && out.contains("Failed"),
        "{out}"
    );
    assert_eq!(
        read_tree(repo).get("execsnoop.c"),
        fixture("execsnoop").get("execsnoop.c")
    );

    // The same program on the ring buffer: the commit goes through.
    write_tree(repo, &expected("execsnoop"));
    git(repo, &["add", "."]);
    let c = git(repo, &["commit", "-qm", "ring buffer tool"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );
    assert!(c.status.success(), "the commit should pass:\n{out}");
    assert!(out.contains("Passed"), "{out}");
}

#[test]
fn a_file_given_alone_brings_its_program_or_nothing_is_written() {
    let tmp = tempdir();
    write_tree(tmp.path(), &fixture("execsnoop"));
    // Only the loader named: its BPF source is found beside it and both are written.
    let o = run(tmp.path(), &["--write", "execsnoop.c"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(read_tree(tmp.path()), expected("execsnoop"));
    // Only the loader named, the map in a header its BPF source includes: all three move.
    let tmp2 = tempdir();
    write_tree(tmp2.path(), &fixture("header_map"));
    let o = run(tmp2.path(), &["--write", "header_map.c"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(read_tree(tmp2.path()), expected("header_map"));
    // A loader whose BPF source is nowhere: a message, and no file changes.
    let tmp = tempdir();
    let mut t = fixture("execsnoop");
    t.remove("execsnoop.bpf.c");
    write_tree(tmp.path(), &t);
    let o = run(tmp.path(), &["--write", "execsnoop.c"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("unlinked-program"), "{}", stderr(&o));
    assert_eq!(read_tree(tmp.path()), t);
}

#[test]
fn exclude_globs_and_rule_selection() {
    let tmp = tempdir();
    let d = tmp.path();
    write_tree(&d.join("c/execsnoop"), &fixture("execsnoop"));
    write_tree(&d.join("c/twomaps"), &fixture("twomaps"));
    write_tree(&d.join("bcc/opensnoop"), &fixture("bcc_opensnoop"));

    let all = run(d, &["--format", "json"]);
    let summary = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_str(stdout(o).lines().last().unwrap()).unwrap()
    };
    assert_eq!(summary(&all)["programs_migrated"], 3);

    let ex = run(
        d,
        &[
            "--format",
            "json",
            "--exclude",
            "bcc/**",
            "--exclude",
            "twomaps",
        ],
    );
    assert_eq!(summary(&ex)["programs_migrated"], 1);
    assert!(!stdout(&ex).contains("opensnoop.py") && !stdout(&ex).contains("twomaps"));

    // Quoted globs are expanded by the tool.
    let g = run(d, &["--format", "json", "c/*/execsnoop.c"]);
    assert_eq!(summary(&g)["programs_migrated"], 1, "{}", stderr(&g));

    // --ignore leaves whole programs alone: never half a program.
    let ig = run(d, &["--format", "json", "--ignore", "bcc-*"]);
    let s = summary(&ig);
    assert_eq!(
        (
            s["programs_migrated"].as_u64(),
            s["programs_deselected"].as_u64()
        ),
        (Some(2), Some(1)),
        "{s}"
    );
    assert!(
        !stdout(&ig).contains("\"rule\":\"bcc-"),
        "no bcc diagnostics or edits"
    );
    let sel = run(
        d,
        &["--format", "json", "--select", "bcc-*,perf-buffer-message"],
    );
    let s = summary(&sel);
    assert_eq!(
        (
            s["programs_migrated"].as_u64(),
            s["programs_deselected"].as_u64()
        ),
        (Some(1), Some(2)),
        "{s}"
    );
}

#[test]
fn write_refuses_files_with_uncommitted_changes_unless_allowed() {
    let tmp = tempdir();
    let d = tmp.path();
    write_tree(d, &fixture("execsnoop"));
    git(d, &["init", "-q"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "x"]);
    fs::write(
        d.join("execsnoop.c"),
        fixture("execsnoop")["execsnoop.c"].replace("handle_event", "handle_event "),
    )
    .unwrap();
    let before = read_tree(d);
    let o = run(d, &["--write"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("uncommitted changes") && stderr(&o).contains("execsnoop.c"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read_tree(d), before);
    let o = run(d, &["--write", "--allow-dirty"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(read_tree(d)["execsnoop.bpf.c"].contains("BPF_MAP_TYPE_RINGBUF"));
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let tmp = tempdir();
    for f in [
        "execsnoop",
        "opensnoop",
        "twomaps",
        "bcc_tcpconnect",
        "rs_capable",
        "refuse_ctxlen",
    ] {
        write_tree(&tmp.path().join(f), &fixture(f));
    }
    let with = |threads: &str| {
        Command::new(bin())
            .arg(".")
            .current_dir(tmp.path())
            .env("RAYON_NUM_THREADS", threads)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let (a, b) = (with("1"), with("4"));
    assert!(!stdout(&a).is_empty());
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(stderr(&a), stderr(&b));
    // The same directories named one by one, twice over and inside one another (one walk
    // over all of them): every file once, in the same order.
    let named = Command::new(bin())
        .args([
            "twomaps",
            "execsnoop",
            "opensnoop",
            "bcc_tcpconnect",
            "rs_capable",
            "refuse_ctxlen",
            "execsnoop",
            "rs_capable/src",
        ])
        .current_dir(tmp.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(stdout(&named), stdout(&a));
    assert_eq!(stderr(&named), stderr(&a));
}

#[test]
fn sarif_and_github_formats() {
    let tmp = tempdir();
    write_tree(&tmp.path().join("ok"), &fixture("execsnoop"));
    write_tree(&tmp.path().join("no"), &fixture("refuse_ctxlen"));
    let o = run(tmp.path(), &["--format", "sarif"]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&o)).expect("SARIF is one JSON document");
    assert_eq!(v["version"], "2.1.0");
    let run0 = &v["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "bpf-migrate");
    assert!(
        run0["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "perf-event-output")
    );
    let results = run0["results"].as_array().unwrap();
    let refusal = results
        .iter()
        .find(|r| r["ruleId"] == "output-ctxlen")
        .expect("the refusal");
    assert_eq!(refusal["level"], "error");
    assert!(
        refusal["locations"][0]["physicalLocation"]["region"]["startLine"]
            .as_u64()
            .unwrap()
            > 0
    );
    let fix = results
        .iter()
        .find(|r| r["fixes"].is_array())
        .expect("a result with a fix");
    let change = &fix["fixes"][0]["artifactChanges"][0];
    assert!(
        change["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("ok/")
    );
    assert!(change["replacements"].as_array().unwrap().iter().any(|r| {
        r["insertedContent"]["text"]
            .as_str()
            .unwrap()
            .contains("ring")
    }));

    let g = run(tmp.path(), &["--format", "github"]);
    let text = stdout(&g);
    assert!(
        text.lines().any(
            |l| l.starts_with("::error file=no/refuse_ctxlen.bpf.c,line=")
                && l.contains("title=bpf-migrate output-ctxlen::")
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("::warning file=ok/execsnoop.bpf.c,line=")),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with("::")),
        "one command a line:\n{text}"
    );
}

#[test]
fn no_progress_output_in_pipes_even_for_long_runs() {
    // 250 programs: past the bar's threshold; stderr is a pipe here, so nothing but the
    // diagnostics and the summary may appear on it.
    let tmp = tempdir();
    let files = fixture("execsnoop");
    for i in 0..250 {
        write_tree(&tmp.path().join(format!("p{i}")), &files);
    }
    let o = run(tmp.path(), &["--check", "-q"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).is_empty(),
        "{}",
        &stderr(&o)[..stderr(&o).len().min(400)]
    );
    assert!(!stderr(&o).contains('\r') && !stdout(&o).contains('\r'));
    let o = run(tmp.path(), &["--check"]);
    assert!(
        stderr(&o)
            .ends_with("250 program(s) to migrate (500 file(s)), 0 program(s) need manual work\n"),
        "{}",
        stderr(&o).lines().last().unwrap_or("")
    );
}

#[test]
fn copies_of_one_tool_in_several_directories_stay_apart() {
    // Same file names, same map name, a map in an included header: each copy links to its
    // own files, so both migrate (a collection of tools, arch-specific copies).
    let tmp = tempdir();
    for d in ["x86", "arm64"] {
        write_tree(&tmp.path().join(d), &fixture("header_map"));
    }
    let o = run(tmp.path(), &["--write"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for d in ["x86", "arm64"] {
        assert_eq!(read_tree(&tmp.path().join(d)), expected("header_map"));
    }
}
