//! `bpf-migrate verify ARGS` runs `bpf-migrate-verify ARGS`.
//!
//! Verify links libbpf-rs (and so libelf and zlib) and drives clang and qemu; the migration
//! needs none of that, so it lives in its own program and `cargo run`/`cargo install` of
//! this one build with cargo alone. The verify program is found beside this one, on `PATH`,
//! or named by `$BPF_MIGRATE_VERIFY`; run from a source checkout, it is built on first use
//! into the same target directory, once the system libraries it links are there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const PROGRAM: &str = "bpf-migrate-verify";

/// What verify needs on the host, as Debian packages: the libraries libbpf-sys builds
/// against, then the tools verify runs (clang and bpftool build the objects, qemu boots the
/// guest, xz unpacks its kernel, pahole reads event layouts; libbpf-dev and gcc build the
/// programs' C loaders, python3-bpfcc runs BCC tools).
pub const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("pkg-config", "pkg-config"),
    ("libelf", "libelf-dev"),
    ("zlib", "zlib1g-dev"),
];
pub const RUN_PACKAGES: &str =
    "clang llvm bpftool qemu-system-x86 xz-utils dwarves libbpf-dev gcc python3-bpfcc";

pub fn run(args: &[OsString]) -> ExitCode {
    let program = match find().or_else(|why| build().map_err(|e| format!("{why}; {e}"))) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: verify is not available: {e}");
            return ExitCode::from(2);
        }
    };
    exec(&program, args)
}

fn exec(program: &Path, args: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let e = Command::new(program).args(args).exec();
    eprintln!("error: cannot run {}: {e}", program.display());
    ExitCode::from(2)
}

/// The installed verify program, if there is one.
fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BPF_MIGRATE_VERIFY") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("BPF_MIGRATE_VERIFY={}: no such file", p.display()))
        };
    }
    if let Some(p) = beside_this_program().filter(|p| p.is_file()) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(PROGRAM))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| format!("{PROGRAM} is not installed beside this program or on PATH"))
}

fn beside_this_program() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(PROGRAM))
}

/// Builds the verify crate of the checkout this program was built from, with the same
/// profile and into the same target directory, so that it lands beside this program.
fn build() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = workspace.join("crates/verify/Cargo.toml");
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    // Only a program cargo built in a target directory (which cargo marks with CACHEDIR.TAG)
    // builds its sibling there: not one `cargo install`ed into ~/.cargo/bin.
    let profile_dir = exe.parent().filter(|_| manifest.is_file());
    let target = profile_dir
        .and_then(Path::parent)
        .filter(|t| t.join("CACHEDIR.TAG").is_file());
    let (Some(profile_dir), Some(target)) = (profile_dir, target) else {
        return Err(format!(
            "install it with `cargo install --path crates/verify` from a bpf-migrate checkout \
             (Debian packages first: {} {RUN_PACKAGES})",
            build_packages().join(" ")
        ));
    };
    let missing = missing_build_packages();
    if !missing.is_empty() {
        return Err(format!(
            "building it needs the Debian packages {} (apt-get install {} {RUN_PACKAGES}); nothing was built",
            missing.join(" "),
            missing.join(" ")
        ));
    }
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    eprintln!("bpf-migrate: building {PROGRAM} (first use of verify)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins", "-p", "bpf-migrate-verify"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build it: {e}"))?;
    let built = exe.with_file_name(PROGRAM);
    if !status.success() || !built.is_file() {
        return Err(format!(
            "building it with cargo failed (see above; it needs the Debian packages {} {RUN_PACKAGES})",
            build_packages().join(" ")
        ));
    }
    Ok(built)
}

fn build_packages() -> Vec<&'static str> {
    BUILD_PACKAGES.iter().map(|(_, deb)| *deb).collect()
}

/// The Debian packages of `BUILD_PACKAGES` whose library pkg-config does not know (all of
/// them without pkg-config).
fn missing_build_packages() -> Vec<&'static str> {
    let has = |module: &str| {
        Command::new("pkg-config")
            .args(["--exists", module])
            .status()
            .is_ok_and(|s| s.success())
    };
    if Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_err()
    {
        return build_packages();
    }
    BUILD_PACKAGES
        .iter()
        .filter(|(module, _)| *module != "pkg-config" && !has(module))
        .map(|(_, deb)| *deb)
        .collect()
}
