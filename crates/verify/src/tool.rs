//! Tool-level verify: a program's own user space, built for both versions and run in the
//! guest (the original twice, the migration once) through the same workload; what each
//! printed is compared, with the columns that differ between the two original runs
//! (timestamps, latencies) taken as noise.
//!
//! Today: libbpf C loaders (`x.c` beside `x.bpf.c`, including `x.skel.h`), built on the host
//! against a skeleton of each version's object, with the other C files of the directory that
//! define no `main` and are not BPF; libbpf-rs crates, built with cargo (both versions
//! in one shared target directory); and Go readers (the `package main` beside the BPF source
//! that builds it with bpf2go or loads its object by name), built with `go` in GOPATH mode by
//! the repository's `scripts/go-build-check`, embedded here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use bpf_migrate_protocol::ToolRun;
use fs_err as fs;
use serde::Serialize;

use crate::compare::Verdict;

/// A libbpf loader: its `main` file and the helper files built with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    pub main: PathBuf,
    pub helpers: Vec<PathBuf>,
    /// `x` of `x.bpf.c`, `x.skel.h`, `x.bpf.o`.
    pub stem: String,
    /// How it finds its object: `None` for a skeleton (`x.skel.h`, the object inside), else
    /// the path it opens at run time (`"x.bpf.o"`, relative to its working directory).
    pub opens: Option<String>,
}

/// A definition of `main`: `int main(`, or `main(` starting a line (its type on the line
/// before), not `int main_loop(`.
fn defines_main(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        let rest = l
            .strip_prefix("int ")
            .map(str::trim_start)
            .unwrap_or(l)
            .strip_prefix("main");
        rest.is_some_and(|r| r.trim_start().starts_with('('))
    })
}

fn is_bpf(path: &Path, text: &str) -> bool {
    path.to_string_lossy().ends_with(".bpf.c") || text.contains("SEC(\"")
}

/// The readable files of `dir` whose extension is `ext`, with their text, by name.
fn sources(dir: &Path, ext: &str) -> Option<Vec<(PathBuf, String)>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    entries.sort();
    Some(
        entries
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
            .collect(),
    )
}

/// The loader of the BPF source `bpf` (`dir/x.bpf.c`): the C file of its directory that
/// includes `x.skel.h` and defines `main`, with the directory's other C files that define no
/// `main` and are not BPF.
pub fn find_loader(bpf: &Path) -> Option<Loader> {
    let name = bpf.file_name()?.to_string_lossy();
    let stem = name.strip_suffix(".bpf.c")?.to_string();
    let dir = crate::dir_of(bpf);
    let include = format!("\"{stem}.skel.h\"");
    let object = format!("{stem}.bpf.o\"");
    let mut main = None;
    let mut helpers = Vec::new();
    for (p, text) in sources(&dir, "c")? {
        if is_bpf(&p, &text) {
            continue;
        }
        if defines_main(&text) {
            if main.is_none() && text.contains(&include) {
                main = Some((p, None));
            } else if main.is_none()
                && let Some(at) = text.find(&object)
            {
                // The string literal that names the object: "x.bpf.o", "./x.bpf.o".
                let start = text[..at].rfind('"').map_or(at, |q| q + 1);
                main = Some((p, Some(text[start..at + object.len() - 1].to_string())));
            }
        } else {
            helpers.push(p);
        }
    }
    let (main, opens) = main?;
    Some(Loader {
        main,
        helpers,
        stem,
        opens,
    })
}

/// A libbpf-rs crate: the directory of its `Cargo.toml`, and how deep below it the BPF source
/// lies (`src/bpf/x.bpf.c`: 3), so that the migrated tree's crate is found at the same depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    pub root: PathBuf,
    pub depth: usize,
}

/// The crate whose BPF source `bpf` is: the nearest directory above it, up to four levels,
/// with a `Cargo.toml` that depends on libbpf-rs.
pub fn find_crate(bpf: &Path) -> Option<Crate> {
    bpf.ancestors()
        .skip(1)
        .take(4)
        .enumerate()
        .find_map(|(i, dir)| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            depends_on_libbpf_rs(&manifest).then(|| Crate {
                root: dir.to_path_buf(),
                depth: i + 1,
            })
        })
}

/// Whether a manifest's dependencies (`[dependencies]`, a target's, or
/// `[dependencies.libbpf-rs]`) name libbpf-rs: not a mention in a comment, nor a workspace's
/// `[workspace.dependencies]` (a workspace root is no crate to build).
fn depends_on_libbpf_rs(manifest: &str) -> bool {
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            let section = line.trim_matches(['[', ']']).trim();
            if section == "dependencies.libbpf-rs" {
                return true;
            }
            in_deps = section == "dependencies"
                || (section.starts_with("target.") && section.ends_with(".dependencies"));
        } else if in_deps
            && line
                .strip_prefix("libbpf-rs")
                .is_some_and(|r| r.trim_start().starts_with(['=', '.']))
        {
            return true;
        }
    }
    false
}

/// Builds the crate at `src` (a copy: `migrated`, when given, is laid over it: the files the
/// migration changed, at their places in the crate) with cargo in `target`, and copies its
/// binary to `out`. `vmlinux_dir` holds a `vmlinux.h`, for crates whose build looks for one
/// through `BPF_MIGRATE_VMLINUX_DIR`.
pub fn build_crate(
    krate: &Crate,
    migrated: Option<&Path>,
    copy: &Path,
    target: &Path,
    vmlinux_dir: Option<&Path>,
    out: &Path,
) -> Result<()> {
    copy_tree(&krate.root, copy)?;
    if let Some(m) = migrated {
        copy_tree(m, copy)?;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=json"])
        .arg("--manifest-path")
        .arg(copy.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS");
    if let Some(d) = vmlinux_dir {
        cmd.env("BPF_MIGRATE_VMLINUX_DIR", d);
    }
    let o = cmd
        .output()
        .context("cargo not found: libbpf-rs tools are built with it")?;
    if !o.status.success() {
        bail!(
            "cargo build failed: {}",
            errors_of(&String::from_utf8_lossy(&o.stderr))
        );
    }
    // The binary: the last executable cargo reports for a bin target of the crate.
    let exe = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter(|v| {
            v["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("cargo built no binary in {}", copy.display()))?;
    fs::copy(&exe, out)?;
    // Debug information is most of a debug build (three crates' tools made a 143 MB
    // initramfs, which the guest unpacks into its memory); without `strip` the binary goes
    // as it is.
    let _ = Command::new("strip")
        .arg("--strip-debug")
        .arg(out)
        .stderr(std::process::Stdio::null())
        .status();
    Ok(())
}

/// A Go reader: the directory of its `package main`, and the object it opens at run time
/// (`"x.bpf.o"`, relative to its working directory; None when bpf2go embeds the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTool {
    pub dir: PathBuf,
    pub opens: Option<String>,
}

/// The Go reader of the BPF source `bpf`: a Go file of its directory, in `package main`
/// and not generated, whose bpf2go `//go:generate` directive names it, or that names its
/// object (`x.bpf.o` for `x.bpf.c`) in a string.
pub fn find_go(bpf: &Path) -> Option<GoTool> {
    use bpf_migrate_core::lang::go;
    let name = bpf.file_name()?.to_string_lossy().into_owned();
    let object = format!("{}.o\"", name.strip_suffix(".c")?);
    let dir = crate::dir_of(bpf);
    for (_, text) in sources(&dir, "go")? {
        if go::is_generated(&text) || !text.lines().any(|l| l.trim() == "package main") {
            continue;
        }
        let built = text.lines().filter_map(go::bpf2go_source).any(|c| {
            Path::new(c)
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == name)
        });
        if built {
            return Some(GoTool { dir, opens: None });
        }
        if let Some(at) = text.find(&object) {
            let start = text[..at].rfind('"').map_or(at, |q| q + 1);
            let opens = text[start..at + object.len() - 1].to_string();
            return Some(GoTool {
                dir,
                opens: Some(opens),
            });
        }
    }
    None
}

/// The build script of Go tools (also the tests' build check).
const GO_BUILD: &str = include_str!("../../../scripts/go-build-check");

/// Why a Go tool was not built: the host lacks what building it needs (`go`, cilium/ebpf,
/// clang), or the build failed.
pub enum GoBuildError {
    Missing(String),
    Failed(anyhow::Error),
}

/// Builds the Go reader `tool` (a copy in `copy`: `migrated`, when given, is laid over it)
/// into `out`, with `scripts/go-build-check --build-only`: bpf2go's `go generate` from the
/// C, then `go build` (static: CGO_ENABLED=0). `vmlinux_dir` holds the `vmlinux.h` the C is
/// built against; the Go build cache is shared under `cache`.
pub fn build_go(
    tool: &GoTool,
    migrated: Option<&Path>,
    copy: &Path,
    vmlinux_dir: Option<&Path>,
    cache: &Path,
    out: &Path,
) -> Result<(), GoBuildError> {
    let failed = GoBuildError::Failed;
    copy_tree(&tool.dir, copy).map_err(failed)?;
    if let Some(m) = migrated {
        copy_tree(m, copy).map_err(failed)?;
    }
    let script = copy.with_extension("go-build-check");
    fs::write(&script, GO_BUILD).map_err(|e| failed(e.into()))?;
    fs::create_dir_all(cache).map_err(|e| failed(e.into()))?;
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .args(["--build-only", "-o"])
        .arg(out)
        .arg(copy)
        .env("GO_BUILD_CHECK_GOCACHE", cache);
    if let Some(d) = vmlinux_dir {
        cmd.env("VMLINUX_H", d.join("vmlinux.h"));
    }
    let o = cmd
        .output()
        .map_err(|e| failed(anyhow::anyhow!("cannot run bash: {e}")))?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    match o.status.code() {
        Some(0) => Ok(()),
        Some(77) => Err(GoBuildError::Missing(
            stdout.trim().trim_start_matches("skipped: ").to_string(),
        )),
        _ => Err(failed(anyhow::anyhow!(
            "{}",
            errors_of(&String::from_utf8_lossy(&o.stderr))
        ))),
    }
}

/// The user's own build (`--build`): `root` copied to `copy`, the migrated program's files
/// (`migrated`, a directory) laid over its `rel` directory, `sh -c CMD` run there (with
/// `BPF_MIGRATE_VMLINUX_DIR`, the guest kernel's `vmlinux.h`, in its environment), and the
/// executable `exe` it leaves there copied to `out`.
#[allow(clippy::too_many_arguments)]
pub fn build_with_command(
    root: &Path,
    migrated: Option<&Path>,
    rel: &Path,
    cmd: &str,
    exe: &str,
    vmlinux_dir: Option<&Path>,
    copy: &Path,
    out: &Path,
) -> Result<()> {
    copy_tree(root, copy)?;
    let dir = copy.join(rel);
    if let Some(m) = migrated {
        copy_tree(m, &dir)?;
    }
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).current_dir(&dir);
    if let Some(d) = vmlinux_dir {
        c.env("BPF_MIGRATE_VMLINUX_DIR", d);
    }
    let o = c.output().context("cannot run sh")?;
    if !o.status.success() {
        bail!(
            "`{cmd}` failed ({}): {}",
            o.status,
            errors_of(&String::from_utf8_lossy(&o.stderr))
        );
    }
    let built = dir.join(exe);
    if !built.is_file() {
        bail!("`{cmd}` left no executable `{exe}` in {}", dir.display());
    }
    fs::copy(&built, out).with_context(|| format!("{}", built.display()))?;
    Ok(())
}

/// Copies the files of `from` over `to` (`target/` and `.git/` left out).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for e in walk(from)? {
        let rel = e.strip_prefix(from).expect("below from");
        let dest = to.join(rel);
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d)?;
        }
        fs::copy(&e, &dest)?;
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let name = p.file_name().unwrap_or_default();
            // Links are not followed: a crate's tree is its own files.
            let kind = e.file_type().with_context(|| format!("{}", p.display()))?;
            if kind.is_dir() {
                if name != "target" && name != ".git" {
                    dirs.push(p);
                }
            } else if kind.is_file() {
                files.push(p);
            }
        }
    }
    Ok(files)
}

/// Builds `loader` against the skeleton of `object` into `out`: the main file is `main`
/// (the original or the migrated one), headers are looked up in `includes` first.
pub fn build(
    loader: &Loader,
    main: &Path,
    object: &Path,
    includes: &[PathBuf],
    out: &Path,
) -> Result<()> {
    let skel_dir = out.with_extension("skel");
    fs::create_dir_all(&skel_dir)?;
    if loader.opens.is_none() {
        skeleton(loader, object, &skel_dir)?;
    }
    let attempt = |helpers: &[PathBuf]| -> Result<(), String> {
        let mut cmd = Command::new("cc");
        cmd.args(["-g", "-O2"]).arg("-I").arg(&skel_dir);
        for i in includes {
            cmd.arg("-I").arg(i);
        }
        cmd.arg(main).args(helpers).arg("-o").arg(out);
        cmd.args(["-lbpf", "-lelf", "-lz"]);
        let o = cmd.output().map_err(|e| format!("cannot run cc: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim_end().to_string())
        }
    };
    // The directory's helper files, or, when they do not build together (files of other
    // tools, helpers needing more libraries), the main file alone.
    match attempt(&loader.helpers) {
        Ok(()) => Ok(()),
        Err(first) if !loader.helpers.is_empty() => {
            attempt(&[]).map_err(|_| anyhow::anyhow!("cc failed: {}", errors_of(&first)))
        }
        Err(e) => bail!("cc failed: {}", errors_of(&e)),
    }
}

/// `x.skel.h` in `dir`, from the object (named `x.bpf.o` there, which names the skeleton).
fn skeleton(loader: &Loader, object: &Path, dir: &Path) -> Result<()> {
    let obj = dir.join(format!("{}.bpf.o", loader.stem));
    fs::copy(object, &obj)?;
    let skel = Command::new("bpftool")
        .args(["gen", "skeleton"])
        .arg(&obj)
        .output()
        .context(
            "bpftool not found (apt-get install bpftool): it generates the loader's skeleton",
        )?;
    if !skel.status.success() {
        bail!(
            "bpftool gen skeleton {} failed: {}",
            obj.display(),
            String::from_utf8_lossy(&skel.stderr).trim()
        );
    }
    fs::write(dir.join(format!("{}.skel.h", loader.stem)), &skel.stdout)?;
    Ok(())
}

/// The compiler's error lines (the first three), else its last lines.
fn errors_of(s: &str) -> String {
    let errors: Vec<&str> = s.lines().filter(|l| l.contains("error")).take(3).collect();
    if errors.is_empty() {
        crate::qemu::tail(s, 5)
    } else {
        errors.join("\n")
    }
}

/// What the tool level found for one program.
#[derive(Debug, Clone, Serialize)]
pub struct ToolReport {
    pub verdict: Verdict,
    pub lines: Lines,
    /// How long each run took to start (compile and attach) until it waited for events.
    pub ready_ms: ReadyMs,
    /// Why, for anything but equivalent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// Lines reporting lost events (`lost 12 events on CPU 1`), printed during the workload
    /// or after it, and left out of `lines` and of the summary: their counts depend on timing and on buffer sizes, which a
    /// migration changes. Present when a run printed any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_reports: Option<Lines>,
    /// How each run ended (`exit code 0`, `signal 9`, `... after Ctrl-C twice`), when they ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ended {
    pub original: String,
    pub second_run: String,
    pub migrated: String,
}

impl Ended {
    /// All three exited with 0 after one Ctrl-C: nothing worth a line of the report.
    pub fn plain(&self) -> bool {
        [&self.original, &self.second_run, &self.migrated]
            .iter()
            .all(|e| *e == "exit code 0")
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadyMs {
    pub original: Option<u64>,
    pub second_run: Option<u64>,
    pub migrated: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Lines {
    pub original: usize,
    pub second_run: usize,
    pub migrated: usize,
    pub matched: usize,
}

fn lines_of(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.trim_end_matches('\r').trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A tool's output split where the workload began and ended.
struct Output {
    before: Vec<String>,
    during: Vec<String>,
    after: Vec<String>,
}

fn output_of(run: &ToolRun) -> Output {
    let out = &run.stdout;
    let boundary = |at: usize| {
        (0..=at.min(out.len()))
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0)
    };
    let at = boundary(run.workload_at);
    let end = boundary(run.workload_end.max(at));
    Output {
        before: lines_of(&out[..at]),
        during: lines_of(&out[at..end]),
        after: lines_of(&out[end..]),
    }
}

/// The name of program `k`'s tool binary, `version` `orig` or `new`: what its process is
/// called in the guest, which `about_a_tool` recognises.
pub fn binary_name(k: usize, version: &str) -> String {
    format!("p{k}-{version}")
}

/// A line about one of the tools themselves (their binaries are named by `binary_name`):
/// what one tool saw of another starting or stopping, which depends on the order they
/// started and stopped in.
fn about_a_tool(l: &str) -> bool {
    let b = l.as_bytes();
    l.match_indices('p').any(|(i, _)| {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        digits > 0 && {
            let rest = &l[i + 1 + digits..];
            rest.starts_with("-orig") || rest.starts_with("-new")
        }
    })
}

/// Before the workload the tools were starting, each seeing the others that started after
/// it: only the header (the leading lines both original runs printed alike, with no digit,
/// as headers have none and events nearly always do) must be there.
fn header_kept(a: &[String], b: &[String], n: &[String], matched: &mut usize) -> Option<String> {
    let header = a
        .iter()
        .zip(b)
        .take_while(|(x, y)| x == y && !x.chars().any(|c| c.is_ascii_digit()))
        .map(|(x, _)| x);
    for (i, l) in header.enumerate() {
        if n.get(i) == Some(l) {
            *matched += 1;
        } else {
            return Some(format!(
                "the original printed `{l}` as line {} of its header, the migrated tool {}",
                i + 1,
                n.get(i).map_or("nothing".to_string(), |m| format!("`{m}`"))
            ));
        }
    }
    None
}

/// When stopped (summaries, totals): the lines both original runs printed, but for what
/// they saw of the other tools stopping, must be in the migrated tool's.
fn summary_kept(a: &[String], b: &[String], n: &[String], matched: &mut usize) -> Option<String> {
    let mut finding = None;
    for l in a.iter().filter(|l| b.contains(l) && !about_a_tool(l)) {
        if n.contains(l) {
            *matched += 1;
        } else {
            finding.get_or_insert_with(|| {
                format!("the original printed `{l}` when stopped, the migrated tool did not")
            });
        }
    }
    finding
}

/// The migrated tool ended otherwise than the original's two runs did: it stopped during
/// the workload when they did not, or, stopped by Ctrl-C, it failed where they succeeded.
/// How a tool ends on Ctrl-C can depend on which of its threads takes the signal (a poll
/// interrupted returns EINTR, which many tools pass on as their exit code), or on what it is
/// doing then: a BCC tool's Ctrl-C that lands in its callback raises KeyboardInterrupt in a
/// ctypes callback, which ctypes prints and ignores, so the tool polls on until it is killed
/// (the original's would as well, in either buffer's callback). The migration ending better
/// than the original, or failing on an interrupted call or so, is no finding: what it
/// printed is still compared.
fn exit_differs(orig: &ToolRun, second: &ToolRun, new: &ToolRun) -> bool {
    let status = |r: &ToolRun| (r.exit_code, r.signal);
    if status(orig) != status(second) || status(orig) == status(new) {
        return false;
    }
    if new.exited_early != orig.exited_early {
        return new.exited_early;
    }
    if orig.exited_early {
        return true;
    }
    let interrupted = ["Interrupted system call", "os error 4", "EINTR"]
        .iter()
        .any(|w| new.stderr.contains(w));
    let ctrl_c_in_callback = new
        .stderr
        .contains("Exception ignored on calling ctypes callback")
        && new
            .stderr
            .lines()
            .any(|l| l.trim_end() == "KeyboardInterrupt");
    new.exit_code != Some(0) && !interrupted && !ctrl_c_in_callback
}

/// Whether a run ended by itself: before the workload was over, or with an exit code before
/// any Ctrl-C was typed (between the workload's end and the Ctrl-C; a run killed at the
/// deadline has a signal).
fn by_itself(run: &ToolRun) -> bool {
    run.exited_early || (run.ctrl_c_typed == 0 && run.exit_code.is_some())
}

/// What a run that ended by itself said of an error: its last line (of its errors, else of
/// its output) when that names one, or, after a failing exit, its first error lines.
fn gave_up(run: &ToolRun) -> Option<String> {
    fn last(s: &str) -> Option<&str> {
        s.lines().rfind(|l| !l.trim().is_empty()).map(str::trim)
    }
    let said = last(&run.stderr).or_else(|| last(&run.stdout))?;
    if said.to_ascii_lowercase().contains("error") {
        return Some(said.to_string());
    }
    (run.exit_code != Some(0)).then(|| first_lines(&format!("{}\n{}", run.stderr, run.stdout), 3))
}

/// What a load or a tool failed for want of in the guest, if its error says so: memory
/// (libbpf's `-ENOMEM`) or open files (`EMFILE`, `ENFILE`: a batch's three loads hold every
/// program's maps, programs, links and per-CPU perf buffers), which the run's size decides,
/// not the migration (a ring takes one descriptor where a perf buffer took one a CPU).
pub fn out_of_resource(log: &str) -> Option<&'static str> {
    const SIGNS: &[(&str, &[&str])] = &[
        (
            "memory",
            &["Cannot allocate memory", "-ENOMEM", "os error 12"],
        ),
        (
            "open files",
            &[
                "Too many open files",
                "-EMFILE",
                "-ENFILE",
                "os error 24",
                "os error 23",
            ],
        ),
    ];
    SIGNS
        .iter()
        .find(|(_, signs)| signs.iter().any(|w| log.contains(w)))
        .map(|(what, _)| *what)
}

fn status_of(run: &ToolRun) -> String {
    let status = match (run.exit_code, run.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "no exit status".into(),
    };
    // The agent typed it again on seeing the tool back waiting for events.
    if run.ctrl_c_typed > 1 {
        format!("{status} after Ctrl-C twice")
    } else {
        status
    }
}

fn first_lines(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).take(n).collect();
    l.join(" | ")
}

/// Compares the migrated tool's run with the original's two. `in_order`: one CPU, where the
/// three saw the events in one order.
/// A line that reports lost events: a word `lost` or `dropped` (any case), a number, and
/// what was lost (events, samples, records, messages, packets).
pub fn reports_loss(l: &str) -> bool {
    let low = l.to_ascii_lowercase();
    let has_word = |w: &str| {
        low.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|x| x == w)
    };
    (has_word("lost") || has_word("dropped") || has_word("drops"))
        && low.bytes().any(|b| b.is_ascii_digit())
        && ["event", "sample", "record", "message", "packet"]
            .iter()
            .any(|w| low.contains(w))
}

/// Takes the lines that report losses out of what a tool printed during the workload and
/// after it (a reader that fell behind may report its losses only once it caught up);
/// returns them.
fn take_loss_reports(out: &mut Output) -> Vec<String> {
    let mut loss = Vec::new();
    for part in [&mut out.during, &mut out.after] {
        let (l, rest): (Vec<String>, Vec<String>) = std::mem::take(part)
            .into_iter()
            .partition(|l| reports_loss(l));
        *part = rest;
        loss.extend(l);
    }
    loss
}

/// The three runs of a tool judged. `lost_kept`: the migration feeds the tool's lost-sample
/// callback from a counter (else it dropped the callback, and losses the original reported
/// can no longer be).
pub fn judge(
    orig: &ToolRun,
    second: &ToolRun,
    new: &ToolRun,
    in_order: bool,
    lost_kept: bool,
    events: &[&[u8]],
) -> ToolReport {
    // Every run ended by itself, before the workload was over or before the Ctrl-C (a tool
    // given a count of intervals, or one that gave up): each printed what it had to, and
    // where the workload began in each is timing. The whole of each is compared.
    let ended_alone = by_itself(orig) && by_itself(second) && by_itself(new);
    let output = |r: &ToolRun| {
        if ended_alone {
            Output {
                before: Vec::new(),
                during: lines_of(&r.stdout),
                after: Vec::new(),
            }
        } else {
            output_of(r)
        }
    };
    let (mut o1, mut o2, mut n) = (output(orig), output(second), output(new));
    let (l1, l2, ln) = (
        take_loss_reports(&mut o1),
        take_loss_reports(&mut o2),
        take_loss_reports(&mut n),
    );
    let loss_reports = (!(l1.is_empty() && l2.is_empty() && ln.is_empty())).then_some(Lines {
        original: l1.len(),
        second_run: l2.len(),
        migrated: ln.len(),
        matched: 0,
    });
    // Counted: the lines printed during the workload, the ones compared in full.
    let mut lines = Lines {
        original: o1.during.len(),
        second_run: o2.during.len(),
        migrated: n.during.len(),
        matched: 0,
    };
    let ready_ms = ReadyMs {
        original: orig.ready_ms,
        second_run: second.ready_ms,
        migrated: new.ready_ms,
    };
    let ended = Ended {
        original: status_of(orig),
        second_run: status_of(second),
        migrated: status_of(new),
    };
    let report = |verdict, lines: &Lines, finding: String| ToolReport {
        verdict,
        lines: lines.clone(),
        ready_ms: ready_ms.clone(),
        finding: Some(finding),
        loss_reports: loss_reports.clone(),
        ended: Some(ended.clone()),
    };
    for (r, what) in [(orig, "the original"), (new, "the migrated tool")] {
        if let Some(e) = &r.spawn_error {
            let v = if what == "the original" {
                Verdict::Inconclusive
            } else {
                Verdict::Different
            };
            return report(v, &lines, format!("{what} could not be started: {e}"));
        }
    }
    for (r, what) in [
        (orig, "the original"),
        (second, "the original's second run"),
        (new, "the migrated tool"),
    ] {
        if r.still_starting {
            return report(
                Verdict::Inconclusive,
                &lines,
                format!(
                    "{what} was still starting when the workload had to begin (--timeout gives more time)"
                ),
            );
        }
    }
    if let Some(e) = &second.spawn_error {
        return report(
            Verdict::Inconclusive,
            &lines,
            format!("the original's second run could not be started: {e}"),
        );
    }
    if !orig.ready {
        let said = first_lines(&format!("{}\n{}", orig.stderr, orig.stdout), 3);
        return report(
            Verdict::Inconclusive,
            &lines,
            format!(
                "the original tool never waited for events ({}): {said}; if it needs arguments, give them with --args (or, for this tool alone among many, --tool-args NAME=ARGS)",
                status_of(orig)
            ),
        );
    }
    if !second.ready {
        // The three run at once: a tool that takes something only one process can hold (an
        // interface's XDP hook, a port, a pinned path) fails a second time beside the first,
        // and the migrated tool's run tells nothing either way.
        let said = first_lines(&format!("{}\n{}", second.stderr, second.stdout), 3);
        return report(
            Verdict::Inconclusive,
            &lines,
            format!(
                "the original's second run, started beside the first, never waited for events ({}): {said}; a tool that cannot run twice at once is not compared at tool level (its events are, at the event level)",
                status_of(second)
            ),
        );
    }
    if !new.ready {
        let said = first_lines(&format!("{}\n{}", new.stderr, new.stdout), 3);
        if let Some(what) = out_of_resource(&new.stderr) {
            return report(
                Verdict::Inconclusive,
                &lines,
                format!("the guest ran out of {what} for the migrated tool: {said}"),
            );
        }
        return report(
            Verdict::Different,
            &lines,
            format!(
                "the migrated tool never waited for events, unlike the original ({}): {said}",
                status_of(new)
            ),
        );
    }
    // The original gave up by itself in both runs: it cannot run its course in this guest
    // (a kernel or an emulated CPU it does not expect), and what the migration printed beside
    // it proves nothing either way.
    if let (true, Some(said)) = (
        by_itself(orig) && by_itself(second),
        gave_up(orig).and(gave_up(second)),
    ) {
        return report(
            Verdict::Inconclusive,
            &lines,
            format!(
                "the original ended by itself, before it was stopped, in both runs ({}): `{said}`; it did not run its course in this guest, so what it printed is not compared (if it needs arguments, give them with --args)",
                status_of(orig)
            ),
        );
    }
    if exit_differs(orig, second, new) {
        return report(
            Verdict::Different,
            &lines,
            format!(
                "the original ended with {}, the migrated tool with {}: {}",
                status_of(orig),
                status_of(new),
                first_lines(&new.stderr, 3)
            ),
        );
    }
    if let Some((what, r)) = [
        ("the original", orig),
        ("the original's second run", second),
        ("the migrated tool", new),
    ]
    .into_iter()
    .find(|(_, r)| r.stdout.contains('\0'))
    {
        // Records written raw (`fwrite(data, size, 1, stdout)`, a pcap stream): not lines,
        // and what a killed tool's stdio buffer let out depends on where a newline byte fell.
        return report(
            Verdict::Inconclusive,
            &lines,
            format!(
                "{what} wrote binary data to its output ({} bytes), which is not compared line by line; its events are compared at the event level",
                r.stdout.len()
            ),
        );
    }
    let mut kept = 0;
    let mut reordered = false;
    let finding = header_kept(&o1.before, &o2.before, &n.before, &mut kept);
    let noise = Noise::calibrate(&o1.during, &o2.during);
    // In order where the two original runs printed in one order; as multisets where they did
    // not, with several CPUs, or when only the order differs: a tool polling several
    // buffers prints their events as the buffers come, and a ring buffer manager polls its
    // rings in another order than perf buffers did.
    let ordered = in_order && noise.in_order;
    let mut during = if ordered {
        compare_in_order(&o1.during, &n.during, &noise)
    } else {
        compare_as_multisets(&o1.during, &n.during, &noise)
    };
    if ordered && during.finding.is_some() {
        let unordered = compare_as_multisets(&o1.during, &n.during, &noise);
        if unordered.finding.is_none() {
            reordered = true;
            during = unordered;
        } else {
            during.unmatched = unordered.unmatched;
        }
    }
    lines.matched += during.matched;
    // A tool that reported losses in both original runs and whose migration dropped the
    // callback reports them no more: a difference. One whose callback is kept may simply
    // not have lost anything in its larger ring: not a proof either way.
    let silent_losses = !l1.is_empty() && !l2.is_empty() && ln.is_empty();
    let lost_report = (silent_losses && !lost_kept).then(|| {
        format!(
            "the original reported lost events in both runs (`{}`), the migrated tool never did: its lost-sample callback was dropped",
            l1[0]
        )
    });
    let summary = summary_kept(&o1.after, &o2.after, &n.after, &mut kept);
    // The header, the summary and the lost reports kept: what differs, if anything, is the
    // workload's lines.
    let only_during = finding.is_none() && summary.is_none() && lost_report.is_none();
    // Every difference is one word whose value no event carried: read when printing.
    let uncarried = only_during
        .then_some(during.words.as_ref())
        .flatten()
        .filter(|w| {
            !events.is_empty() && !w.is_empty() && w.iter().all(|(a, b)| !carried(a, b, events))
        })
        .map(|w| w[0].clone());
    let finding = finding.or(during.finding).or(summary).or(lost_report);
    if loss_reports.is_none() && o1.during.is_empty() && o2.during.is_empty() && n.during.is_empty()
    {
        return report(
            Verdict::Inconclusive,
            &lines,
            "no tool printed anything during the workload (does the workload reach its hooks? --workload adds a command)".into(),
        );
    }
    if !noise.stable {
        return report(
            Verdict::Inconclusive,
            &lines,
            match &noise.unpaired {
                Some(l) => format!(
                    "the original's two runs printed different lines during the workload: `{l}` of the first has no counterpart in the second, so its output cannot be compared"
                ),
                None => format!(
                    "the original's two runs printed different lines during the workload ({} against {}), so its output cannot be compared",
                    o1.during.len(),
                    o2.during.len()
                ),
            },
        );
    }
    if finding.is_none() && silent_losses {
        return report(
            Verdict::Inconclusive,
            &lines,
            format!(
                "the original reported lost events in both runs (`{}`), the migrated tool did not: its ring may have held every record (with a smaller --ringbuf-size it drops records too, and must say so)",
                l1[0]
            ),
        );
    }
    if let (Some(f), Some((a, b))) = (&finding, uncarried) {
        return report(
            Verdict::Inconclusive,
            &lines,
            format!(
                "{f}; `{a}` against `{b}` is no value of the events the original's program delivered, so the tool read it when printing (a load average, a clock), which one run of each cannot tell from noise"
            ),
        );
    }
    // Only the workload's lines are different, and each is one its side printed before the
    // workload too: how many fall within the workload is a matter of timing.
    if let (Some(f), true) = (&finding, only_during) {
        let (missing, extra) = &during.unmatched;
        let orig_before: Vec<&String> = o1.before.iter().chain(&o2.before).collect();
        let orig_all: Vec<&String> = orig_before.iter().copied().chain(&o1.during).collect();
        let new_before: Vec<&String> = n.before.iter().collect();
        let new_all: Vec<&String> = new_before.iter().copied().chain(&n.during).collect();
        if let Some(l) = missing.first().or(extra.first()).filter(|_| {
            printed_unprompted(missing, &orig_before, &new_all, &noise)
                && printed_unprompted(extra, &new_before, &orig_all, &noise)
        }) {
            return report(
                Verdict::Inconclusive,
                &lines,
                format!(
                    "{f}; but `{l}`, as every line one side printed during the workload and the other did not, is one both sides print and that side printed again and again before the workload began, unprompted by it (on a timer, as interval summaries are), so how many fall within the workload is timing, which one run of each cannot tell from a difference"
                ),
            );
        }
    }
    match finding {
        Some(f) => report(Verdict::Different, &lines, f),
        None => ToolReport {
            verdict: Verdict::Equivalent,
            lines,
            ready_ms,
            loss_reports,
            ended: Some(ended),
            finding: reordered.then(|| {
                "the same lines, in another order (several buffers, or several CPUs, interleave as they come)".into()
            }),
        },
    }
}

/// Whether each of `unmatched` (lines of the workload's output that one side printed and the
/// other did not) is a line printed on a timer, so that how many fall within the workload
/// is timing: that side printed it (beyond the noise) at least twice before the workload
/// began (`before`: it recurs without the workload), the other side printed it too, before
/// or during the workload (`other`: only how many differs, not what), and no two of them
/// are alike (a window's edge moves one tick of each line out or in, not more).
fn printed_unprompted(
    unmatched: &[String],
    before: &[&String],
    other: &[&String],
    noise: &Noise,
) -> bool {
    let count = |l: &String, among: &mut dyn Iterator<Item = &String>| {
        among.filter(|b| noise.differs(l, b).is_none()).count()
    };
    unmatched.iter().all(|l| {
        count(l, &mut before.iter().copied()) >= 2
            && count(l, &mut other.iter().copied()) >= 1
            && count(l, &mut unmatched.iter()) == 1
    })
}

/// Columns (whitespace-separated words) that differ between the two original runs, as
/// (words in the line, column): a timestamp column of lines of one shape says nothing of
/// the columns of lines of another (an ARGS column makes the word count vary).
#[derive(Debug, Default)]
struct Noise {
    columns: Vec<(usize, usize)>,
    /// The two runs printed the same lines but for noisy columns.
    stable: bool,
    /// ... and in the same order.
    in_order: bool,
    /// When as many lines but not the same: the first line of the first run that has no
    /// counterpart in the second.
    unpaired: Option<String>,
}

fn words(l: &str) -> Vec<&str> {
    l.split_whitespace().collect()
}

impl Noise {
    /// Pairs each line of the first original run with its counterpart in the second (the
    /// line with as many words that shares the most of them, the nearest on a tie), and takes
    /// the columns that differ within pairs as noise. When the pairs are not line i with line
    /// i, the tool prints events in no fixed order (several buffers polled at once) and only
    /// a comparison as multisets holds.
    fn calibrate(a: &[String], b: &[String]) -> Noise {
        let mut n = Noise {
            stable: a.len() == b.len(),
            in_order: true,
            ..Noise::default()
        };
        if !n.stable {
            return n;
        }
        let wb: Vec<Vec<&str>> = b.iter().map(|l| words(l)).collect();
        let mut used = vec![false; b.len()];
        // Where each line of the second run is, by its text, for the identical counterpart.
        // With a cursor past those already paired (a pairing is never undone): linear in
        // the lines, however many are alike.
        let mut same: HashMap<&str, (usize, Vec<usize>)> = HashMap::new();
        for (j, l) in b.iter().enumerate() {
            same.entry(l.as_str()).or_default().1.push(j);
        }
        for (i, x) in a.iter().enumerate() {
            let wx = words(x);
            let shared = |w: &[&str]| wx.iter().zip(w).filter(|(p, q)| p == q).count();
            // A counterpart shares at least half of its words; else the runs differ. Looked
            // for near line i first (events interleave locally), then everywhere: each line
            // with each only when the runs' orders are far apart. But an identical line,
            // wherever it is, before a near one that only shares words: with several buffers
            // a line may print far from where the other run had it, and a near line taken in
            // its place leaves another line without its counterpart (a false "the two runs
            // differ"), or makes a column that never varied look like noise.
            let best_in = |js: &mut dyn Iterator<Item = usize>| {
                js.filter(|&j| !used[j] && wb[j].len() == wx.len())
                    .max_by_key(|&j| (shared(&wb[j]), std::cmp::Reverse(j.abs_diff(i))))
                    .filter(|&j| 2 * shared(&wb[j]) >= wx.len())
            };
            const NEAR: usize = 64;
            let near = i.saturating_sub(NEAR)..(i + NEAR + 1).min(b.len());
            let identical = || {
                let (k, js) = same.get_mut(x.as_str())?;
                while js.get(*k).is_some_and(|&j| used[j]) {
                    *k += 1;
                }
                js.get(*k).copied()
            };
            let near_best = best_in(&mut near.clone());
            let best = near_best
                .filter(|&j| b[j] == *x)
                .or_else(identical)
                .or(near_best)
                .or_else(|| best_in(&mut (0..b.len())));
            let Some(j) = best else {
                n.stable = false;
                n.unpaired = Some(x.clone());
                return n;
            };
            used[j] = true;
            n.in_order &= i == j;
            let len = wx.len();
            for (k, (p, q)) in wx.iter().zip(&wb[j]).enumerate() {
                if p != q {
                    n.columns.push((len, k));
                }
            }
        }
        n.columns.sort_unstable();
        n.columns.dedup();
        n
    }

    /// The line with its noisy columns and measured values blanked: what must match to the
    /// letter, so that lines are compared as multisets by hashing, not each with each.
    fn exact_part(&self, l: &str) -> String {
        let w = words(l);
        let len = w.len();
        w.iter()
            .enumerate()
            .map(|(i, x)| {
                // A plain number before a unit of time (`after 65 ms`) is measured too, as
                // `differs` takes it (`jitter_with_unit`): else two lines that differ only
                // within its jitter would never meet in one bucket.
                let timed = x.parse::<f64>().is_ok()
                    && w.get(i + 1).is_some_and(|u| TIME_UNITS.contains(u));
                if self.noisy(i, len) || measured(x).is_some() || timed {
                    "*"
                } else {
                    x
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn noisy(&self, i: usize, len: usize) -> bool {
        self.columns.binary_search(&(len, i)).is_ok()
    }

    /// The first column where `a` and `b` differ beyond the noise (1-based), if any.
    fn differs(&self, a: &str, b: &str) -> Option<usize> {
        let (wa, wb) = (words(a), words(b));
        if wa.len() != wb.len() {
            return Some(wa.len().min(wb.len()) + 1);
        }
        (0..wa.len())
            .find(|&i| wa[i] != wb[i] && !self.noisy(i, wa.len()) && !jitter_with_unit(&wa, &wb, i))
            .map(|i| i + 1)
    }
}

/// A measured quantity, as a number: a time of day (`15:05:30`, always noise), or a number
/// with a fraction or a unit (`0.120`, `(192ms)`, `35us`). `None` for anything else, plain
/// integers included (PIDs, counts, sizes must match).
fn measured(w: &str) -> Option<f64> {
    let t = w.trim_matches(|c: char| "()[],;".contains(c));
    let clock = t.split(':').count() == 3
        && t.split(':')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if clock {
        return Some(f64::NAN);
    }
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let v: f64 = num.parse().ok()?;
    let timed = ["ns", "us", "ms", "s", "%"].contains(&unit);
    (num.contains('.') && unit.is_empty() || timed).then_some(v)
}

/// Units of time a tool may print as a word of its own after a number (`after 65 ms`).
const TIME_UNITS: &[&str] = &["ns", "us", "ms", "s", "sec", "secs", "usecs", "msecs"];

/// `jitter` of the words at `i`, where a plain integer followed by the same unit of time in
/// both lines (`65 ms`) is a measured value too.
fn jitter_with_unit(wa: &[&str], wb: &[&str], i: usize) -> bool {
    match (wa.get(i + 1), wb.get(i + 1)) {
        (Some(u), Some(v)) if u == v && TIME_UNITS.contains(u) => {
            let unit = if *u == "s" { "s" } else { "ms" };
            jitter(&format!("{}{unit}", wa[i]), &format!("{}{unit}", wb[i]))
        }
        _ => jitter(wa[i], wb[i]),
    }
}

/// Two measured quantities of one event, told by different tool instances (each takes its
/// own timestamps): times of day, or values within 10% (at least five units of the last
/// digit: under emulation a few milliseconds come and go) of each other.
fn jitter(a: &str, b: &str) -> bool {
    match (measured(a), measured(b)) {
        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => true,
        (Some(x), Some(y)) => {
            let digits = |w: &str| {
                w.split('.')
                    .nth(1)
                    .map_or(0, |f| f.chars().take_while(char::is_ascii_digit).count())
            };
            let unit = 10f64.powi(-(digits(a).max(digits(b)) as i32));
            (x - y).abs() <= (x.abs().max(y.abs()) * 0.10).max(5.0 * unit) + 1e-9
        }
        _ => false,
    }
}

struct Compared {
    matched: usize,
    finding: Option<String>,
    /// The words that differ, the original's and the migrated tool's, one pair for each line
    /// that differs in one word of lines of one shape; None when a difference is of another
    /// kind (a line missing, more words, several columns).
    words: Option<Vec<(String, String)>>,
    /// As multisets: the original's lines that no line of the migrated tool matched, and
    /// the migrated tool's that none of the original matched.
    unmatched: (Vec<String>, Vec<String>),
}

impl Compared {
    /// Records that `a` and `b` differ first in column `col` (1-based).
    fn differing(&mut self, a: &str, b: &str, col: usize) {
        let (wa, wb) = (words(a), words(b));
        let one = wa.len() == wb.len()
            && (0..wa.len()).filter(|&i| wa[i] != wb[i]).count() == 1
            && wa[col - 1] != wb[col - 1];
        match (&mut self.words, one) {
            (Some(w), true) => w.push((wa[col - 1].to_string(), wb[col - 1].to_string())),
            _ => self.words = None,
        }
    }
}

/// Whether a number of `orig` that differs in `new` (the same word of one line, as each
/// printed it) is among the `events`' bytes: as a 4- or 8-byte integer, or as text. A value
/// no event carried was read from the system when the line was printed (the load average
/// oomkill prints): one run of each cannot tell it from noise.
fn carried(orig: &str, new: &str, events: &[&[u8]]) -> bool {
    let numbers = |w: &str| -> Vec<String> {
        w.split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (numbers(orig), numbers(new));
    if a.len() != b.len() || a.is_empty() || orig.contains("0x") {
        return true;
    }
    a.iter().zip(&b).filter(|(x, y)| x != y).any(|(x, _)| {
        let Ok(v) = x.parse::<u64>() else {
            return true;
        };
        let mut needles = vec![v.to_le_bytes().to_vec(), x.as_bytes().to_vec()];
        if let Ok(v) = u32::try_from(v) {
            needles.push(v.to_le_bytes().to_vec());
        }
        events.iter().any(|e| {
            needles
                .iter()
                .any(|n| e.windows(n.len()).any(|w| w == n.as_slice()))
        })
    })
}

fn compare_in_order(orig: &[String], new: &[String], noise: &Noise) -> Compared {
    let mut c = Compared {
        matched: 0,
        finding: None,
        words: Some(Vec::new()),
        unmatched: Default::default(),
    };
    for (i, (a, b)) in orig.iter().zip(new).enumerate() {
        match noise.differs(a, b) {
            None => c.matched += 1,
            Some(col) => {
                c.differing(a, b, col);
                c.finding.get_or_insert_with(|| {
                    format!(
                        "line {} of the workload's output, column {col}: the original printed `{a}`, the migrated tool `{b}`",
                        i + 1
                    )
                });
            }
        }
    }
    if c.finding.is_none() && orig.len() != new.len() {
        let (k, which, l) = if orig.len() > new.len() {
            (
                new.len(),
                "the migrated tool did not print",
                &orig[new.len()],
            )
        } else {
            (
                orig.len(),
                "the migrated tool printed more:",
                &new[orig.len()],
            )
        };
        c.finding = Some(format!(
            "{} lines against {} during the workload; from line {}, {which} `{l}`",
            orig.len(),
            new.len(),
            k + 1
        ));
        c.words = None;
    }
    c
}

fn compare_as_multisets(orig: &[String], new: &[String], noise: &Noise) -> Compared {
    // The migrated tool's lines not matched yet, by the part of them that must match to the
    // letter (`Noise::exact_part`): a line matches one of its bucket that differs from it in
    // no column beyond the noise (measured values within their jitter), as in order.
    let mut buckets: HashMap<String, Vec<(usize, &String)>> = HashMap::new();
    for (i, l) in new.iter().enumerate() {
        buckets.entry(noise.exact_part(l)).or_default().push((i, l));
    }
    let mut matched = 0;
    let mut missing = Vec::new();
    for l in orig {
        let bucket = buckets.get_mut(&noise.exact_part(l));
        match bucket.and_then(|b| {
            b.iter()
                .position(|(_, x)| noise.differs(l, x).is_none())
                .map(|i| (b, i))
        }) {
            Some((b, i)) => {
                b.remove(i);
                matched += 1;
            }
            None => missing.push(l),
        }
    }
    let mut left: Vec<(usize, &String)> = buckets.into_values().flatten().collect();
    left.sort_unstable();
    let left: Vec<&String> = left.into_iter().map(|(_, l)| l).collect();
    let mut c = Compared {
        matched,
        finding: None,
        words: (missing.len() == left.len()).then(Vec::new),
        unmatched: (
            missing.iter().map(|l| l.to_string()).collect(),
            left.iter().map(|l| l.to_string()).collect(),
        ),
    };
    // Each missing line against the migrated line left that is closest to it; the first's
    // names the column of the finding.
    let mut unpaired: Vec<&String> = left.clone();
    let mut first_closest: Option<(&String, usize)> = None;
    for (m, l) in missing.iter().enumerate() {
        let w = words(l);
        let closest = unpaired
            .iter()
            .enumerate()
            .filter(|(_, x)| words(x).len() == w.len())
            .max_by_key(|(_, x)| words(x).iter().zip(&w).filter(|(a, b)| a == b).count())
            .and_then(|(i, x)| noise.differs(l, x).map(|col| (i, col)));
        match closest {
            Some((i, col)) => {
                if m == 0 {
                    first_closest = Some((unpaired[i], col));
                }
                c.differing(l, unpaired[i], col);
                unpaired.remove(i);
            }
            None => c.words = None,
        }
    }
    let finding = match (missing.first(), left.first()) {
        (Some(l), _) => {
            // Name the column against the closest line the migrated tool printed instead.
            Some(match first_closest {
                Some((x, col)) => format!(
                    "the original printed `{l}` during the workload, the migrated tool no such line; its closest, `{x}`, differs in column {col}"
                ),
                None => format!(
                    "the original printed `{l}` during the workload, the migrated tool printed no such line"
                ),
            })
        }
        (None, Some(extra)) => Some(format!(
            "the migrated tool printed a line the original did not: `{extra}`"
        )),
        (None, None) => None,
    };
    Compared { finding, ..c }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--build`: the root copied, the migrated files laid over the program's directory in
    /// the copy, the command run there, and the executable it leaves there taken; a command
    /// that fails, or leaves no executable of that name, is an error naming it.
    #[test]
    fn a_users_build_runs_in_a_copy_with_the_migrated_files_over_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("tools")).unwrap();
        fs::write(root.join("common.txt"), "shared\n").unwrap();
        fs::write(root.join("tools/x.bpf.c"), "original\n").unwrap();
        let migrated = tmp.path().join("migrated");
        fs::create_dir_all(&migrated).unwrap();
        fs::write(migrated.join("x.bpf.c"), "migrated\n").unwrap();
        // The "build": the tool prints what it was built from, and reads outside its directory.
        let cmd = "printf '#!/bin/sh\\ncat %s/x.bpf.c %s/../common.txt\\n' \"$PWD\" \"$PWD\" > x && chmod +x x";
        let out = tmp.path().join("x.out");
        let rel = Path::new("tools");
        build_with_command(
            &root,
            Some(&migrated),
            rel,
            cmd,
            "x",
            None,
            &tmp.path().join("c1"),
            &out,
        )
        .unwrap();
        let ran = Command::new(&out).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "migrated\nshared\n");
        // The user's tree is as it was.
        assert_eq!(
            fs::read_to_string(root.join("tools/x.bpf.c")).unwrap(),
            "original\n"
        );
        assert!(!root.join("tools/x").exists());
        let e = build_with_command(
            &root,
            None,
            rel,
            "exit 3",
            "x",
            None,
            &tmp.path().join("c2"),
            &out,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("`exit 3` failed"), "{e:#}");
        let e = build_with_command(
            &root,
            None,
            rel,
            "true",
            "x",
            None,
            &tmp.path().join("c3"),
            &out,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("left no executable `x`"), "{e:#}");
    }

    #[test]
    fn only_a_dependency_on_libbpf_rs_makes_a_crate() {
        for yes in [
            "[package]\nname = \"t\"\n[dependencies]\nlibbpf-rs = \"0.24\"\n",
            "[dependencies]\nanyhow = \"1\"\nlibbpf-rs = { version = \"0.24\" }\n",
            "[dependencies]\nlibbpf-rs.workspace = true\n",
            "[target.'cfg(target_os = \"linux\")'.dependencies]\nlibbpf-rs = \"0.24\"\n",
            "[dependencies.libbpf-rs]\nversion = \"0.24\"\n",
        ] {
            assert!(depends_on_libbpf_rs(yes), "{yes}");
        }
        for no in [
            // A workspace whose comment names it (this repository's own root manifest).
            "# only the agent links libbpf-rs\n[workspace]\n[package]\nname = \"x\"\n",
            "[workspace.dependencies]\nlibbpf-rs = \"0.24\"\n",
            "[dev-dependencies]\nlibbpf-rs = \"0.24\"\n",
            "[dependencies]\nlibbpf-rs-extra = \"1\"\n",
        ] {
            assert!(!depends_on_libbpf_rs(no), "{no}");
        }
    }

    /// A run stopped by one Ctrl-C after the workload.
    fn run(stdout: &str, at: &str) -> ToolRun {
        ToolRun {
            id: "t".into(),
            stdout: stdout.into(),
            workload_at: stdout.find(at).unwrap_or(0),
            workload_end: stdout.find("SUMMARY").unwrap_or(stdout.len()),
            ready: true,
            exit_code: Some(0),
            ctrl_c_typed: 1,
            ..ToolRun::default()
        }
    }

    const HEAD: &str = "TIME     PCOMM  PID   LAT(ms)\n";

    #[test]
    fn timestamps_and_latencies_that_vary_between_originals_are_noise() {
        let a = run(
            &format!("{HEAD}10:00:01 init   7    0.120\n10:00:01 init   8    0.300\n"),
            "10:",
        );
        let b = run(
            &format!("{HEAD}10:00:02 init   7    0.125\n10:00:02 init   8    0.310\n"),
            "10:",
        );
        let same = run(
            &format!("{HEAD}10:00:03 init   7    0.119\n10:00:03 init   8    0.299\n"),
            "10:",
        );
        let r = judge(&a, &b, &same, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{r:?}");
        assert_eq!(r.lines.matched, 2, "the workload's lines");
        // A PID column is not noise: the three runs saw the same processes.
        let wrong = run(
            &format!("{HEAD}10:00:03 init   7    0.119\n10:00:03 init   0    0.299\n"),
            "10:",
        );
        let r = judge(&a, &b, &wrong, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        let f = r.finding.unwrap();
        assert!(f.contains("line 2") && f.contains("column 3"), "{f}");
    }

    #[test]
    fn a_number_before_a_unit_of_time_may_jitter_in_lines_of_another_order() {
        // reserve_procwatch: the original's two runs print exits and execs in other orders
        // (compared as multisets), and each instance measures a lifetime of its own.
        let a = run(
            "EXIT init 137 code 3 after 73 ms in /\nEXEC true 138\n",
            "EXIT",
        );
        let b = run(
            "EXEC true 138\nEXIT init 137 code 3 after 73 ms in /\n",
            "EXEC",
        );
        let n = run(
            "EXIT init 137 code 3 after 76 ms in /\nEXEC true 138\n",
            "EXIT",
        );
        let r = judge(&a, &b, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{r:?}");
        // Beyond its jitter, or another code, it is a difference still.
        let far = run(
            "EXIT init 137 code 3 after 190 ms in /\nEXEC true 138\n",
            "EXIT",
        );
        assert_eq!(
            judge(&a, &b, &far, true, true, &[]).verdict,
            Verdict::Different
        );
        let code = run(
            "EXIT init 137 code 4 after 73 ms in /\nEXEC true 138\n",
            "EXIT",
        );
        assert_eq!(
            judge(&a, &b, &code, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn measured_values_may_jitter_but_integers_may_not() {
        assert!(jitter("(192ms)", "(193ms)"));
        assert!(jitter("0.120", "0.125"));
        assert!(jitter("15:05:30", "15:05:31"));
        assert!(!jitter("(192ms)", "(292ms)"));
        // Seen under emulation: a few milliseconds on a short wait.
        assert!(jitter("(72ms)", "(76ms)"));
        let (a, b) = (
            words("EXIT init 136 code 3 after 65 ms"),
            words("EXIT init 136 code 3 after 64 ms"),
        );
        assert!(jitter_with_unit(&a, &b, 6));
        assert!(!jitter_with_unit(&a, &b, 2), "136 is no measure");
        let c = words("EXIT init 136 code 3 after 95 ms");
        assert!(!jitter_with_unit(&a, &c, 6));
        assert!(
            !jitter("192", "193"),
            "a plain integer is a PID, a count, a size"
        );
        assert!(!jitter("init", "inet"));
        let a = run("init 7 (192ms)\n", "init");
        let b = run("init 7 (193ms)\n", "init");
        assert_eq!(
            judge(&a, &a, &b, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        assert_eq!(
            judge(&a, &a, &b, false, true, &[]).verdict,
            Verdict::Equivalent
        );
        // As multisets too: a measured value far off is no jitter.
        let far = run("init 7 (900ms)\n", "init");
        assert_eq!(
            judge(&a, &a, &far, false, true, &[]).verdict,
            Verdict::Different
        );
        assert_eq!(
            judge(&a, &a, &far, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn lines_naming_a_tool_binary_are_about_a_tool() {
        for v in ["orig", "new"] {
            assert!(about_a_tool(&format!(
                "98 {} /sys/kprobe",
                binary_name(12, v)
            )));
        }
        assert!(!about_a_tool("98 p2p-origin /etc"));
    }

    #[test]
    fn what_a_tool_saw_of_the_others_starting_and_stopping_is_not_compared() {
        let a = run(
            "PID COMM PATH\n98 p0-new /sys/kprobe/type\n1 init /etc\nSUMMARY\n101 p0-new exited\ntotal 1\n",
            "1 init",
        );
        let n = run("PID COMM PATH\n1 init /etc\nSUMMARY\ntotal 1\n", "1 init");
        assert_eq!(
            judge(&a, &a, &n, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        let bad_head = run("PID COMM\n1 init /etc\nSUMMARY\ntotal 1\n", "1 init");
        let r = judge(&a, &a, &bad_head, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("header"));
    }

    #[test]
    fn a_missing_header_or_line_is_a_difference() {
        let a = run(&format!("{HEAD}x 1\ny 2\n"), "x");
        let no_head = run("x 1\ny 2\n", "x");
        let r = judge(&a, &a, &no_head, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("header"));
        let short = run(&format!("{HEAD}x 1\n"), "x");
        let r = judge(&a, &a, &short, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("did not print `y 2`"));
    }

    /// An interval tool (a summary line a second, whatever the events): how many of its lines
    /// fall within the workload is timing, so one more or one fewer says nothing, as long as
    /// each such line is one its side printed before the workload too.
    #[test]
    fn interval_lines_printed_before_the_workload_too_are_timing() {
        const TICK: &str = "%CPU   0.00%, unclaimed idle 0.00%\n";
        let printing_of = |tick: &str, before: usize, during: usize| {
            let head = format!("Sampling run queues...\n{}", tick.repeat(before));
            let stdout = format!("{head}{}", tick.repeat(during));
            ToolRun {
                id: "t".into(),
                workload_at: head.len(),
                workload_end: stdout.len(),
                stdout,
                ready: true,
                exit_code: Some(0),
                ctrl_c_typed: 1,
                ..ToolRun::default()
            }
        };
        let printing = |before: usize, during: usize| printing_of(TICK, before, during);
        // (ticks before, ticks during) of the two original runs and the migrated tool.
        let judged = |runs: [(usize, usize); 3]| {
            let [a, b, n] = runs.map(|(before, during)| printing(before, during));
            judge(&a, &b, &n, true, true, &[])
        };
        let r = judged([(3, 1), (2, 1), (3, 0)]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let f = r.finding.unwrap();
        assert!(f.contains("did not print") && f.contains("timing"), "{f}");
        for (runs, why) in [
            (
                [(3, 1), (2, 1), (0, 2)],
                "the migrated tool's extra line is new to it",
            ),
            (
                [(3, 1), (2, 1), (0, 0)],
                "the migrated tool never prints the tick",
            ),
            (
                [(3, 2), (2, 2), (3, 0)],
                "two fewer: more than a window's edge moves",
            ),
            (
                [(0, 1), (0, 1), (0, 0)],
                "no side printed it before: the workload's line",
            ),
        ] {
            assert_eq!(judged(runs).verdict, Verdict::Different, "{why}");
        }
        // A migrated tool whose every tick is wrong: the original's tick is nothing it prints.
        let busy = "%CPU 100.00%, unclaimed idle 0.00%\n";
        let r = judge(
            &printing_of(busy, 3, 1),
            &printing_of(busy, 2, 1),
            &printing(3, 1),
            true,
            true,
            &[],
        );
        assert_eq!(r.verdict, Verdict::Different);
    }

    #[test]
    fn summaries_printed_when_stopped_are_compared_where_stable() {
        let a = run("a 1\nSUMMARY\ntotal 1\nseen 7\n", "a");
        let b = run("a 1\nSUMMARY\ntotal 1\nseen 9\n", "a");
        let same = run("a 1\nSUMMARY\ntotal 1\n", "a");
        assert_eq!(
            judge(&a, &b, &same, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        let lost = run("a 1\nSUMMARY\n", "a");
        let r = judge(&a, &b, &lost, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("`total 1` when stopped"));
    }

    #[test]
    fn noise_of_one_line_shape_does_not_hide_columns_of_another() {
        // The time column of 3-word lines is noise; the PID of 4-word lines is not.
        let a = run("10:01 init 7\nEXEC 92 /init a\n", "10:");
        let b = run("10:02 init 7\nEXEC 92 /init a\n", "10:");
        let wrong = run("10:03 init 7\nEXEC 0 /init a\n", "10:");
        let r = judge(&a, &b, &wrong, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different, "{r:?}");
        assert!(r.finding.unwrap().contains("column 2"));
    }

    #[test]
    fn main_is_a_definition_of_main() {
        assert!(defines_main("int main(int argc, char **argv)\n"));
        assert!(defines_main("int\nmain (void)\n"));
        assert!(!defines_main("int main_loop(void)\n"));
        assert!(!defines_main("static int domain(void)\n"));
    }

    #[test]
    fn a_tool_whose_runs_print_in_different_orders_is_compared_as_multisets() {
        // Two buffers polled at once: their events interleave as they come.
        let a = run("EXEC 92 /init\nEXIT 92 code=0\nEXEC 93 /init\n", "EXEC");
        let b = run("EXIT 92 code=0\nEXEC 92 /init\nEXEC 93 /init\n", "EXIT");
        let n = run("EXEC 92 /init\nEXEC 93 /init\nEXIT 92 code=0\n", "EXEC");
        assert_eq!(
            judge(&a, &b, &n, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        let wrong = run("EXEC 92 /init\nEXEC 93 /init\nEXIT 92 code=1\n", "EXEC");
        let r = judge(&a, &b, &wrong, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        let f = r.finding.unwrap();
        assert!(f.contains("`EXIT 92 code=1`, differs in column 3"), "{f}");
    }

    #[test]
    fn a_line_printed_far_from_where_the_other_run_had_it_still_pairs_with_itself() {
        // Six buffers polled at once: the second run printed `A` 200 lines later, `B` and
        // `C` earlier. Paired by nearness alone, `A` took the near `B` (two words of four in
        // common), `B` the near `C`, and `C` found nothing: "the two runs differ" (CI, with
        // syswatch's `new-thread init 1 0 0`). Identical lines pair first.
        let filler = |from: usize| {
            (from..from + 99)
                .map(|k| format!("f{k}\n"))
                .collect::<String>()
        };
        let (a, b, c) = ("a b c d\n", "a b x y\n", "e f x y\n");
        let first = format!("{a}{}{b}{}{c}", filler(0), filler(100));
        let second = format!("{b}{}{c}{}{a}", filler(0), filler(100));
        let noise = Noise::calibrate(&lines_of(&first), &lines_of(&second));
        assert!(noise.stable, "{noise:?}");
        assert!(noise.columns.is_empty(), "{noise:?}");
        assert!(!noise.in_order);
        let (one, two) = (run(&first, "a b"), run(&second, "a b"));
        let r = judge(&one, &two, &one, false, true, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{r:?}");
        // And a line of the migrated run that differs is still found.
        let wrong = run(&first.replace("e f x y", "e g x y"), "a b");
        let r = judge(&one, &two, &wrong, false, true, &[]);
        assert_eq!(r.verdict, Verdict::Different, "{r:?}");
    }

    #[test]
    fn lines_in_another_order_match_as_multisets() {
        let a = run("a 1\nb 2\n", "a");
        let swapped = run("b 2\na 1\n", "b");
        assert_eq!(
            judge(&a, &a, &swapped, false, true, &[]).verdict,
            Verdict::Equivalent
        );
        // In order first; the same lines in another order are equivalent, and said so.
        let r = judge(&a, &a, &swapped, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent);
        assert!(r.finding.unwrap().contains("another order"));
    }

    #[test]
    fn a_tool_that_never_polls_is_inconclusive_and_says_args() {
        let mut a = run("", "");
        a.ready = false;
        a.exit_code = Some(64);
        a.stderr = "Usage: tool PID\n".into();
        let r = judge(&a, &a, &a, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let f = r.finding.unwrap();
        assert!(f.contains("--args") && f.contains("Usage: tool PID"), "{f}");
    }

    #[test]
    fn loss_reports_are_counted_apart_and_must_not_vanish() {
        for (l, is) in [
            ("lost 12 events on CPU #1", true),
            ("WARNING: Possibly lost 3 samples", true),
            ("dropped 7 records", true),
            ("12:00:01 tcp_lost 1234", false),
            ("lost+found 12", false),
        ] {
            assert_eq!(reports_loss(l), is, "{l}");
        }
        let a = run(&format!("{HEAD}e 1\nlost 12 events on CPU 0\ne 2\n"), "e 1");
        let b = run(
            &format!("{HEAD}e 1\ne 2\nlost 40 events on CPU 0\nlost 2 events on CPU 1\n"),
            "e 1",
        );
        let n = run(&format!("{HEAD}e 1\ne 2\nlost 90 events on CPU 1\n"), "e 1");
        let r = judge(&a, &b, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{:?}", r.finding);
        let l = r.loss_reports.unwrap();
        assert_eq!((l.original, l.second_run, l.migrated), (1, 2, 1));
        assert_eq!((r.lines.original, r.lines.matched), (2, 2));
        let silent = run(&format!("{HEAD}e 1\ne 2\n"), "e 1");
        // The callback dropped: the reports are gone.
        let r = judge(&a, &b, &silent, true, false, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("never did"));
        // Kept: the ring may have lost nothing.
        let r = judge(&a, &b, &silent, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.finding.unwrap().contains("--ringbuf-size"));
        // Nothing but loss reports is not silence.
        let only = run(&format!("{HEAD}lost 5 events on CPU 0\n"), "lost");
        assert_eq!(
            judge(&only, &only, &only, true, true, &[]).verdict,
            Verdict::Equivalent
        );
    }

    #[test]
    fn silence_and_unstable_originals_are_inconclusive() {
        // Only the header, before the workload.
        let quiet = run(HEAD, "\n");
        let r = judge(&quiet, &quiet, &quiet, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let a = run("a 1\n", "a");
        let b = run("a 1\nb 2\n", "a");
        assert_eq!(
            judge(&a, &b, &a, true, true, &[]).verdict,
            Verdict::Inconclusive
        );
        // As many lines, not the same ones: the finding names the line without a counterpart.
        let c = run("a 1\nmodprobe -q -- net-pf-10\n", "a");
        let d = run("a 1\nc 3\n", "a");
        let r = judge(&c, &d, &c, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let f = r.finding.unwrap();
        assert!(
            f.contains("`modprobe -q -- net-pf-10` of the first has no counterpart"),
            "{f}"
        );
    }

    #[test]
    fn a_tool_that_cannot_run_twice_at_once_is_inconclusive() {
        // An XDP loader: the second instance finds the interface's hook taken, and so does the
        // migrated one; that says nothing of the migration.
        let a = run("a 1\n", "a");
        let mut busy = run("", "");
        busy.ready = false;
        busy.exit_code = Some(1);
        busy.stderr = "failed to attach to lo: Device or resource busy\n".into();
        let r = judge(&a, &busy, &busy, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let f = r.finding.unwrap();
        assert!(
            f.contains("second run, started beside the first, never waited")
                && f.contains("Device or resource busy"),
            "{f}"
        );
        // The second run started: a migrated tool that does not is still a difference.
        assert_eq!(
            judge(&a, &a, &busy, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn a_migrated_tool_the_guest_had_no_memory_or_files_for_is_inconclusive() {
        let a = run("a 1\n", "a");
        let mut n = run("", "");
        n.ready = false;
        n.exit_code = Some(1);
        n.stderr = "libbpf: map 'seen': failed to create: Cannot allocate memory(-12)\n".into();
        let r = judge(&a, &a, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.finding.unwrap().contains("out of memory"));
        n.stderr =
            "libbpf: failed to open perf buffer event on cpu #1: Too many open files\n".into();
        let r = judge(&a, &a, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.finding.unwrap().contains("out of open files"));
        // Any other failure to start is the migration's.
        n.stderr = "libbpf: prog 'handle': BPF program load failed: Permission denied\n".into();
        assert_eq!(
            judge(&a, &a, &n, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn binary_output_is_inconclusive_even_when_only_one_run_let_it_out() {
        // A loader that fwrites each record to a pty: what a run killed by Ctrl-C let out of
        // its stdio buffer depends on where a newline byte fell in the records.
        let quiet = run(HEAD, "\n");
        let raw = run(&format!("{HEAD}\u{1}\0\0\0init\0\0\n"), "\u{1}");
        let r = judge(&quiet, &quiet, &raw, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let f = r.finding.unwrap();
        assert!(f.contains("the migrated tool wrote binary data"), "{f}");
        assert_eq!(
            judge(&raw, &quiet, &quiet, true, true, &[]).verdict,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn a_tool_still_starting_is_inconclusive_not_different() {
        let a = run("a 1\n", "a");
        let mut n = run("", "");
        n.ready = false;
        n.still_starting = true;
        let r = judge(&a, &a, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.finding.unwrap().contains("still starting"));
        // One that never polled and exited is a difference.
        n.still_starting = false;
        n.exit_code = Some(1);
        assert_eq!(
            judge(&a, &a, &n, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn a_value_no_event_carried_is_inconclusive_not_different() {
        // oomkill prints the load average it reads when printing: the two originals read
        // `12/138`, the migrated tool `10/138` a moment later.
        let line = |n: &str| {
            format!(
                "Triggered by PID 231 (\"init\"), OOM kill of PID 231 (\"init\"), 4096 pages, loadavg: 7.49 4.22 1.78 {n}/138 231\n"
            )
        };
        let (a, n) = (run(&line("12"), ""), run(&line("10"), ""));
        let mut event = Vec::new();
        event.extend_from_slice(&231u32.to_le_bytes());
        event.extend_from_slice(&231u32.to_le_bytes());
        event.extend_from_slice(&4096u64.to_le_bytes());
        event.extend_from_slice(b"init\0\0\0\0");
        let r = judge(&a, &a, &n, true, true, &[&event]);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
        assert!(r.finding.unwrap().contains("`12/138` against `10/138`"));
        // A value the event carried, printed otherwise, is a difference (a callback reading
        // the wrong field), and so is one next to another difference.
        let pid = |p: &str| {
            format!(
                "Triggered by PID {p} (\"init\"), OOM kill of PID 231 (\"init\"), 4096 pages, loadavg: 7.49 4.22 1.78 12/138 231\n"
            )
        };
        let wrong = run(&pid("232"), "");
        assert_eq!(
            judge(&a, &a, &wrong, true, true, &[&event]).verdict,
            Verdict::Different
        );
        let both = run(&pid("232").replace("12/138", "10/138"), "");
        assert_eq!(
            judge(&a, &a, &both, true, true, &[&event]).verdict,
            Verdict::Different
        );
        // Without events (a BCC tool) nothing tells: a difference.
        assert_eq!(
            judge(&a, &a, &n, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    /// Runs that all ended by themselves before they were stopped: compared whole, for
    /// where the workload began in each is timing; an original that gave up with an error in
    /// both runs (cpuunclaimed under emulation: its CPUs' samples come skewed) is no proof.
    #[test]
    fn runs_that_ended_by_themselves_are_compared_whole_unless_the_original_gave_up() {
        let ended = |stdout: &str, at: usize| ToolRun {
            workload_at: at,
            workload_end: stdout.len(),
            exited_early: true,
            ctrl_c_typed: 0,
            ..run(stdout, "")
        };
        // A count of two intervals: one run printed both before the workload began, one
        // the second during it, one both during it.
        let out = "Tracing... Ctrl-C to end.\n%CPU  40.00%\n%CPU  12.50%\n";
        let (a, b, n) = (ended(out, out.len()), ended(out, 40), ended(out, 0));
        let r = judge(&a, &b, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{r:?}");
        assert_eq!(r.lines.matched, 3);
        let short = ended("Tracing... Ctrl-C to end.\n%CPU  40.00%\n", 0);
        assert_eq!(
            judge(&a, &b, &short, true, true, &[]).verdict,
            Verdict::Different
        );
        // Gave up with an error line, exit code 0, as cpuunclaimed does.
        let skew = |ns: u32, at: usize| {
            let out = format!(
                "Sampling run queues...\nERROR: CPU samples arrived at skewed offsets, spanning {ns} ns, exiting.\n"
            );
            ended(&out, at.min(out.len()))
        };
        let r = judge(
            &skew(7356580, 999),
            &skew(7554200, 23),
            &skew(4074790, 999),
            true,
            true,
            &[],
        );
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
        let f = r.finding.unwrap();
        assert!(
            f.contains("ended by itself, before it was stopped, in both runs (exit code 0): `ERROR: CPU samples arrived"),
            "{f}"
        );
        // The originals gave up just after the workload, before the Ctrl-C; the migration,
        // not yet, was stopped by it (SIGINT): timing, not a difference.
        let mut late = skew(7356580, 23);
        (late.exited_early, late.ctrl_c_typed) = (false, 0);
        let mut stopped = run("Sampling run queues...\n", "");
        (stopped.exit_code, stopped.signal) = (None, Some(2));
        let r = judge(&late, &late, &stopped, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
        // Ended before the Ctrl-C with an exit code: by itself; killed at the deadline with
        // no Ctrl-C typed (a signal): not; stopped by the Ctrl-C: not.
        let mut killed = run("Sampling run queues...\n", "");
        (killed.exit_code, killed.signal, killed.ctrl_c_typed) = (None, Some(9), 0);
        assert!(by_itself(&late) && !by_itself(&killed) && !by_itself(&stopped));
        // A failing exit says so too, with the tool's first lines.
        let mut failed = ended("Attaching...\n", 0);
        failed.exit_code = Some(1);
        failed.stderr =
            "Traceback (most recent call last):\n  File \"x\", line 3\nKeyboardInterrupt\n".into();
        let r = judge(&failed, &failed, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
        assert!(r.finding.unwrap().contains("(exit code 1): `Traceback"));
    }

    #[test]
    fn a_different_exit_is_a_difference() {
        let a = run("a 1\n", "a");
        let mut n = run("a 1\n", "a");
        n.exit_code = Some(1);
        n.stderr = "ring_buffer__poll: -22\n".into();
        let r = judge(&a, &a, &n, true, true, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("-22"));
        // Stopped during the workload, when the original was not.
        n.exited_early = true;
        assert_eq!(
            judge(&a, &a, &n, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn how_ctrl_c_ends_a_tool_is_no_finding_when_the_migration_ends_better_or_was_interrupted() {
        // The originals' poll returned EINTR on Ctrl-C (exit 1); the migration's signal went
        // to another thread (exit 0).
        let mut a = run("a 1\n", "a");
        a.exit_code = Some(1);
        let n = run("a 1\n", "a");
        assert_eq!(
            judge(&a, &a, &n, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        // The reverse, with the interruption said.
        let o = run("a 1\n", "a");
        let mut m = run("a 1\n", "a");
        m.exit_code = Some(1);
        m.stderr = "Error: Interrupted system call (os error 4)\n".into();
        assert_eq!(
            judge(&o, &o, &m, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        // A BCC tool's Ctrl-C landed in its ring callback: ctypes ignored the
        // KeyboardInterrupt, the tool polled on and was killed. What it printed still counts.
        let mut k = run("a 1\n", "a");
        k.exit_code = None;
        k.signal = Some(9);
        k.stderr = "Exception ignored on calling ctypes callback function: <function RingBuf.open_ring_buffer.<locals>.ringbuf_cb_ at 0x7f>\n\
                    Traceback (most recent call last):\n  File \"/usr/lib/python3/dist-packages/bcc/table.py\", line 1260, in ringbuf_cb_\n\
                    KeyboardInterrupt\n"
            .into();
        assert_eq!(
            judge(&o, &o, &k, true, true, &[]).verdict,
            Verdict::Equivalent
        );
        let mut wrong = k.clone();
        wrong.stdout = "b 1\n".into();
        wrong.workload_end = wrong.stdout.len();
        assert_eq!(
            judge(&o, &o, &wrong, true, true, &[]).verdict,
            Verdict::Different
        );
        // Killed after another exception in its callback: a finding.
        let mut e = k.clone();
        e.stderr = e.stderr.replace(
            "KeyboardInterrupt",
            "struct.error: unpack requires a buffer of 8 bytes",
        );
        assert_eq!(
            judge(&o, &o, &e, true, true, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn the_loader_is_the_file_that_includes_the_skeleton_and_defines_main() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w(
            "snoop.bpf.c",
            "SEC(\"tp/x\") int f(void *c) { return 0; }\n",
        );
        w(
            "snoop.c",
            "#include \"snoop.skel.h\"\nint main(int argc, char **argv)\n{ return 0; }\n",
        );
        w(
            "other.c",
            "#include \"other.skel.h\"\nint main(void) { return 0; }\n",
        );
        w("trace_helpers.c", "int ksym(void) { return 1; }\n");
        w(
            "probe.c",
            "SEC(\"kprobe/x\") int g(void *c) { return 0; }\n",
        );
        let l = find_loader(&dir.path().join("snoop.bpf.c")).unwrap();
        assert_eq!(l.main, dir.path().join("snoop.c"));
        assert_eq!(l.helpers, vec![dir.path().join("trace_helpers.c")]);
        assert_eq!(l.stem, "snoop");
        assert_eq!(l.opens, None);
        assert!(find_loader(&dir.path().join("probe.c")).is_none());
        // A loader that opens its object by name at run time.
        w(
            "tcwatch.bpf.c",
            "SEC(\"tc\") int f(void *c) { return 0; }\n",
        );
        w(
            "tcwatch.c",
            "#define OBJ \"./tcwatch.bpf.o\"\nint main(void) { return 0; }\n",
        );
        let l = find_loader(&dir.path().join("tcwatch.bpf.c")).unwrap();
        assert_eq!(l.main, dir.path().join("tcwatch.c"));
        assert_eq!(l.opens.as_deref(), Some("./tcwatch.bpf.o"));
    }

    #[test]
    fn a_crate_is_the_nearest_cargo_toml_that_uses_libbpf_rs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tool");
        std::fs::create_dir_all(root.join("src/bpf")).unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"tool\"\n[dependencies]\nlibbpf-rs = \"0.27\"\n",
        )
        .unwrap();
        let c = find_crate(&root.join("src/bpf/x.bpf.c")).unwrap();
        assert_eq!((c.root, c.depth), (root.clone(), 3));
        std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"tool\"\n").unwrap();
        assert!(find_crate(&root.join("src/bpf/x.bpf.c")).is_none());
    }
}
