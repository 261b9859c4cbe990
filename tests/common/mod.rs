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

/// Fixture directories: each has `input/`, and `expected/` (the files that change, as they
/// must read after migration) and `expected.stderr` (the diagnostics).
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input").is_dir())
        .collect();
    v.sort();
    v
}

pub fn bless() -> bool {
    std::env::var_os("BLESS").is_some()
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
