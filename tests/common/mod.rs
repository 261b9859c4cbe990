//! Shared helpers for the integration tests: running the binary, copying trees, comparing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `bpf-migrate` program. The verify crate's tests share this file: they run
/// `bpf-migrate verify` as a user does, through the program cargo built beside theirs.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = option_env!("CARGO_BIN_EXE_bpf-migrate") {
            return b.to_string();
        }
        let Some(verify) = option_env!("CARGO_BIN_EXE_bpf-migrate-verify") else {
            panic!("neither bpf-migrate nor bpf-migrate-verify is this test's package's binary")
        };
        let verify = Path::new(verify);
        let main = verify.with_file_name("bpf-migrate");
        assert!(
            main.is_file(),
            "{} is not built: run the tests with `cargo test --workspace` (scripts/test)",
            main.display()
        );
        main.display().to_string()
    })
}

/// The workspace root, where `fixtures/` is.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("fixtures").is_dir())
        .expect("the workspace root")
        .to_path_buf()
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // verify builds libbpf-rs tools here, not in the user's cache.
        .env(
            "BPF_MIGRATE_CARGO_TARGET",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("verify-crates"),
        )
        .output()
        .expect("run bpf-migrate")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Relative path → contents of every file under `dir`.
pub fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    }
    out
}

pub fn write_tree(dir: &Path, files: &BTreeMap<String, String>) {
    for (rel, text) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    write_tree(to, &read_tree(from));
}

/// Fixture directories: each has `input/` (the program), maybe `args` (its extra options) and
/// `snapshot.snap` (what the tool prints on it, see [`FixtureRun`]).
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input").is_dir())
        .collect();
    v.sort();
    v
}

/// Extra command-line options of a fixture (`fixtures/X/args`, e.g. `--strategy reserve`).
pub fn fixture_args(fx: &Path) -> Vec<String> {
    fs::read_to_string(fx.join("args"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// What the tool prints on a fixture's `input/`, as its snapshot `fixtures/X/snapshot.snap`
/// holds it (tests/fixtures.rs checks it and tells how changes are approved): `--diff` with
/// the fixture's options (exit code, the unified diff, the diagnostics), and `--write` (exit
/// code, and its diagnostics, which differ from those of `--diff` in the summary line).
#[derive(Debug, PartialEq, Eq)]
pub struct FixtureRun {
    /// The fixture's options (`args`).
    pub args: Vec<String>,
    pub diff_code: i32,
    pub diff_stdout: String,
    pub diff_stderr: String,
    pub write_code: i32,
    pub write_stderr: String,
}

const STDOUT: &str = "----- stdout -----";
const STDERR: &str = "----- stderr -----";
const WRITE: &str = "----- $ bpf-migrate --write";
const END: &str = "----- end -----";
const WRITE_SAME: &str = "stderr the same";
const WRITE_LAST: &str = "stderr the same but its last line";
const WRITE_ALL: &str = "stderr";

impl FixtureRun {
    fn command(&self, mode: &str) -> String {
        let mut c = format!("bpf-migrate {mode}");
        for a in &self.args {
            c.push(' ');
            c.push_str(a);
        }
        c
    }

    /// The snapshot's text. `--write`'s diagnostics are shown only where they differ from
    /// those of `--diff` (the summary line, "migrated" for "to migrate"). The sections are
    /// copied as they are, between marker lines and up to `----- end -----`, so that
    /// [`FixtureRun::parse`] gives back every byte (trailing blank lines included, which
    /// insta would otherwise trim).
    pub fn render(&self) -> String {
        let mut s = format!(
            "$ {}\nexit code: {}\n{STDOUT}\n{}{STDERR}\n{}",
            self.command("--diff"),
            self.diff_code,
            self.diff_stdout,
            self.diff_stderr
        );
        let (same, rest) = if self.write_stderr == self.diff_stderr {
            (WRITE_SAME, "")
        } else {
            match (
                split_last_line(&self.diff_stderr),
                split_last_line(&self.write_stderr),
            ) {
                (Some((a, _)), Some((b, last))) if a == b => (WRITE_LAST, last),
                _ => (WRITE_ALL, self.write_stderr.as_str()),
            }
        };
        s.push_str(&format!(
            "----- $ {}: exit code {}, {same} -----\n{rest}{END}\n",
            self.command("--write"),
            self.write_code
        ));
        s
    }

    /// The run a snapshot's text (after insta's `---` header) shows.
    pub fn parse(body: &str) -> Result<FixtureRun, String> {
        let bad = |what: &str| format!("not a fixture snapshot: {what}");
        let (cmd, rest) = body
            .split_once('\n')
            .ok_or_else(|| bad("no command line"))?;
        let args: Vec<String> = cmd
            .strip_prefix("$ bpf-migrate --diff")
            .ok_or_else(|| bad("no `$ bpf-migrate --diff` line"))?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let (code, rest) = rest.split_once('\n').ok_or_else(|| bad("no exit code"))?;
        let diff_code = code
            .strip_prefix("exit code: ")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no exit code"))?;
        let rest = rest
            .strip_prefix(STDOUT)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or_else(|| bad("no stdout line"))?;
        let (diff_stdout, _, rest) =
            split_at_marker(rest, STDERR).ok_or_else(|| bad("no stderr line"))?;
        let (diff_stderr, line, rest) =
            split_at_marker(rest, WRITE).ok_or_else(|| bad("no --write line"))?;
        let (code, same) = line
            .split_once(": exit code ")
            .and_then(|(_, t)| t.strip_suffix(" -----"))
            .and_then(|t| t.split_once(", "))
            .ok_or_else(|| bad("no --write exit code"))?;
        let write_code = code.parse().map_err(|_| bad("no --write exit code"))?;
        let (rest, _, after) = split_at_marker(rest, END).ok_or_else(|| bad("no end line"))?;
        if !after.trim().is_empty() {
            return Err(bad("text after the end line"));
        }
        let write_stderr = match same {
            WRITE_SAME if rest.is_empty() => diff_stderr.to_string(),
            WRITE_LAST => match split_last_line(diff_stderr) {
                Some((a, _)) => format!("{a}{rest}"),
                None => return Err(bad("no last line to replace")),
            },
            WRITE_ALL => rest.to_string(),
            _ => return Err(bad("unknown --write line")),
        };
        Ok(FixtureRun {
            args,
            diff_code,
            diff_stdout: diff_stdout.to_string(),
            diff_stderr: diff_stderr.to_string(),
            write_code,
            write_stderr,
        })
    }

    /// The approved run of a fixture, from its `snapshot.snap`.
    pub fn of_fixture(fx: &Path) -> Result<FixtureRun, String> {
        let path = fx.join("snapshot.snap");
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let body = text
            .strip_prefix("---\n")
            .and_then(|t| t.split_once("\n---\n"))
            .map_or(text.as_str(), |(_, body)| body);
        FixtureRun::parse(body).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `text` without its last line, and that line (with its newline); `None` if `text` is empty.
fn split_last_line(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let at = body.rfind('\n').map_or(0, |i| i + 1);
    Some(text.split_at(at))
}

/// `text` before the first line that starts with `marker`, that line (without its newline),
/// and the text after it.
fn split_at_marker<'a>(text: &'a str, marker: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let at = if text.starts_with(marker) {
        0
    } else {
        text.find(&format!("\n{marker}"))? + 1
    };
    let (line, after) = text[at..].split_once('\n').unwrap_or((&text[at..], ""));
    Some((&text[..at], line, after))
}

/// A fixture's files as migrated: `input/` with the diff of its approved snapshot applied
/// (`git apply`), as `--write` leaves them (tests/fixtures.rs checks that it does).
pub fn fixture_migrated(fx: &Path) -> BTreeMap<String, String> {
    let snap = FixtureRun::of_fixture(fx).unwrap();
    let tmp = tempdir();
    let dir = tmp.path().join("tree");
    copy_tree(&fx.join("input"), &dir);
    fs::create_dir_all(&dir).unwrap();
    if !snap.diff_stdout.is_empty() {
        let patch = tmp.path().join("p.diff");
        fs::write(&patch, &snap.diff_stdout).unwrap();
        git_apply(&dir, &patch).unwrap();
    }
    read_tree(&dir)
}

/// `git apply -p1 patch` in `dir`, made a repository of its own first: the temp dirs lie
/// inside this checkout, and git apply run in a subdirectory of a repository resolves paths
/// from that repository's top.
pub fn git_apply(dir: &Path, patch: &Path) -> Result<(), String> {
    let init = Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir)
        .output()
        .expect("git");
    if !init.status.success() {
        return Err(String::from_utf8_lossy(&init.stderr).into_owned());
    }
    let o = Command::new("git")
        .args(["apply", "-p1"])
        .arg(patch)
        .current_dir(dir)
        .output()
        .expect("git");
    let _ = fs::remove_dir_all(dir.join(".git"));
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// A `vmlinux.h` for compiling BPF C, generated once from the running kernel's BTF (read
/// only; nothing is loaded into this kernel).
pub fn vmlinux_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmlinux");
        let header = dir.join("vmlinux.h");
        if !header.exists() {
            fs::create_dir_all(&dir).unwrap();
            let btf = std::env::var("BPF_MIGRATE_BTF")
                .unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
            let out = Command::new("bpftool")
                .args(["btf", "dump", "file", &btf, "format", "c"])
                .output()
                .expect("bpftool is needed for the compile tests (apt-get install bpftool)");
            assert!(
                out.status.success(),
                "bpftool btf dump failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let tmp = dir.join("vmlinux.h.tmp");
            fs::write(&tmp, &out.stdout).unwrap();
            fs::rename(&tmp, &header).unwrap();
        }
        dir
    })
}

/// Compiles the BPF C files of `dir` (`*.bpf.c`) and then its loaders (`*.c`) against
/// skeletons generated from the objects, with `-Wall -Werror`. Returns the errors.
pub fn compile_program(dir: &Path, build: &Path) -> Result<(), String> {
    fs::create_dir_all(build).unwrap();
    let files = read_tree(dir);
    let mut errors = String::new();
    for rel in files.keys().filter(|f| f.ends_with(".bpf.c")) {
        let stem = rel
            .trim_end_matches(".bpf.c")
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let obj = build.join(format!("{stem}.bpf.o"));
        let out = Command::new("clang")
            .args([
                "-g",
                "-O2",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
                "-Werror",
                "-idirafter",
                "/usr/include/x86_64-linux-gnu",
                "-c",
            ])
            .arg(dir.join(rel))
            .arg("-I")
            .arg(vmlinux_dir())
            .arg("-I")
            .arg(dir)
            .arg("-o")
            .arg(&obj)
            .output()
            .expect("clang is needed for the compile tests (apt-get install clang)");
        if !out.status.success() {
            errors.push_str(&format!(
                "clang {rel}:\n{}\n",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        if !files
            .iter()
            .any(|(f, text)| !f.ends_with(".bpf.c") && text.contains(&format!("{stem}.skel.h")))
        {
            continue;
        }
        let skel = Command::new("bpftool")
            .args(["gen", "skeleton"])
            .arg(&obj)
            .output()
            .unwrap();
        if !skel.status.success() {
            errors.push_str(&format!(
                "bpftool gen skeleton {rel}:\n{}\n",
                String::from_utf8_lossy(&skel.stderr)
            ));
            continue;
        }
        fs::write(build.join(format!("{stem}.skel.h")), &skel.stdout).unwrap();
    }
    for rel in files
        .keys()
        .filter(|f| f.ends_with(".c") && !f.ends_with(".bpf.c"))
    {
        let out = Command::new("cc")
            .args(["-Wall", "-Werror", "-c", "-o", "/dev/null"])
            .arg(dir.join(rel))
            .arg("-I")
            .arg(build)
            .arg("-I")
            .arg(dir)
            .output()
            .expect("cc");
        if !out.status.success() {
            errors.push_str(&format!(
                "cc -Wall -Werror {rel}:\n{}\n",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bpfm-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}
