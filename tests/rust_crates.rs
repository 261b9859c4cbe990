//! The libbpf-rs fixture crates (`fixtures/rs_*`): migrated (with the fixture's own options),
//! they build against libbpf-rs 0.27 with libbpf-cargo skeletons and no warnings (`cargo check` in one shared target directory,
//! so the suite stays fast), as their originals do.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Fixtures written for an old libbpf-rs API (their README says so): checked textually only.
fn old_api(fx: &Path) -> bool {
    std::fs::read_to_string(fx.join("README.md"))
        .unwrap_or_default()
        .contains("old libbpf-rs API")
}

fn cargo_check(dir: &Path) -> Result<(), String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixture-crates");
    let out = Command::new(env!("CARGO"))
        .args(["check", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-D warnings")
        .env("BPF_MIGRATE_VMLINUX_DIR", vmlinux_dir())
        .output()
        .expect("cargo");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn migrated_rust_crates_build_without_warnings() {
    let fxs: Vec<_> = fixtures()
        .into_iter()
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("rs_"))
        .collect();
    assert!(fxs.len() >= 6, "expected at least 6 Rust fixture crates");
    let mut failures = Vec::new();
    let mut checked = 0;
    for fx in fxs {
        let name = fx.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempdir();
        copy_tree(&fx.join("input"), tmp.path());
        let old = old_api(&fx);
        if !old && let Err(e) = cargo_check(tmp.path()) {
            failures.push(format!("{name} (original): {e}"));
            continue;
        }
        let extra = fixture_args(&fx);
        let mut args = vec!["--write"];
        args.extend(extra.iter().map(String::as_str));
        let w = run(tmp.path(), &args);
        let migrated = read_tree(tmp.path()) != read_tree(&fx.join("input"));
        if !migrated {
            // A refused crate: nothing to build again.
            assert!(
                stderr(&w).contains("manual["),
                "{name}: neither migrated nor refused"
            );
            continue;
        }
        if !old {
            checked += 1;
            if let Err(e) = cargo_check(tmp.path()) {
                failures.push(format!("{name} (migrated): {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 4, "only {checked} migrated crates were built");
}

/// A callback that prints the CPU through a format-string capture (`{cpu}`) uses it, even in a
/// function with lifetimes around (which a C lexer would take for character literals).
#[test]
fn cpu_captured_by_a_format_string_is_a_use() {
    let tmp = tempdir();
    let mut crate_files = read_tree(&root().join("fixtures/rs_closures/input"));
    let main = crate_files.get_mut("src/main.rs").unwrap();
    let before = main.clone();
    *main = main.replacen("move |_cpu: i32, data: &[u8]| {", "move |cpu: i32, data: &[u8]| {\n            let _tag: &'static str = \"x\";\n            eprintln!(\"on {cpu}\");", 1);
    assert_ne!(
        *main, before,
        "the fixture still has the closure this test edits"
    );
    write_tree(tmp.path(), &crate_files);
    let o = run(tmp.path(), &["--check"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("manual[callback-uses-cpu]") && stderr(&o).contains("uses `cpu`"),
        "{}",
        stderr(&o)
    );
}
