//! Finding and reading the files to migrate: paths walked with `.gitignore` respected, each
//! program's partner files pulled in by naming convention, unreadable input reported.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use ignore::WalkBuilder;

use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// File kinds bpf-migrate reads, by name.
pub fn is_candidate(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("c" | "h" | "py" | "python" | "rs" | "go" | "cc" | "cpp" | "cxx")
    )
}

/// A file without an extension that a walk keeps: a Python program (a BCC tool as installed,
/// `tools/opensnoop`, `opensnoop-bpfcc`), told by the shebang in its first bytes. Anything
/// else without an extension (shell scripts, binaries, `Makefile`) is passed over unread.
fn is_python_by_shebang(p: &Path) -> bool {
    use std::io::Read;
    if p.extension().is_some() {
        return false;
    }
    let Ok(f) = fs::File::open(p) else {
        return false;
    };
    let mut head = Vec::with_capacity(crate::engine::SHEBANG_BYTES + 2);
    f.take(crate::engine::SHEBANG_BYTES as u64 + 2)
        .read_to_end(&mut head)
        .is_ok()
        && crate::engine::python_shebang(&head)
}

#[derive(Default)]
pub struct Discovered {
    /// Sorted by display path.
    pub files: Vec<SourceFile>,
    pub errors: Vec<Diagnostic>,
    /// Candidate files with no trigger string (counted, not parsed).
    pub skipped: usize,
}

pub fn display_path(p: &Path) -> String {
    // The working directory, asked once: this runs for every file.
    static CWD: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let cwd = CWD.get_or_init(|| std::env::current_dir().ok());
    let shown = cwd
        .as_deref()
        .and_then(|c| p.strip_prefix(c).ok())
        .unwrap_or(p);
    let s = shown.to_string_lossy().replace('\\', "/");
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

pub fn discover(paths: &[PathBuf]) -> Discovered {
    discover_with(paths, &[]).unwrap_or_default()
}

/// As `discover`, with `--exclude` globs, and paths that do not exist but hold `*`, `?` or
/// `[` expanded as globs (for shells and hooks that pass them quoted).
pub fn discover_with(paths: &[PathBuf], exclude: &[String]) -> Result<Discovered, String> {
    let excluded: Vec<glob::Pattern> = exclude
        .iter()
        .map(|g| {
            glob::Pattern::new(g.trim_start_matches("./"))
                .map_err(|e| format!("--exclude {g}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let is_excluded = |p: &Path| {
        if excluded.is_empty() {
            return false;
        }
        let shown = display_path(p);
        let shown = Path::new(&shown);
        // A pattern matches the path, one of its leading parts (a directory), or one component.
        excluded.iter().any(|g| {
            shown
                .ancestors()
                .any(|a| !a.as_os_str().is_empty() && g.matches_path(a))
                || shown
                    .components()
                    .any(|c| g.matches(&c.as_os_str().to_string_lossy()))
        })
    };
    let mut expanded = Vec::new();
    for p in paths {
        let s = p.to_string_lossy();
        if !p.exists() && s.contains(['*', '?', '[']) {
            let matches: Vec<PathBuf> = glob::glob(&s)
                .map_err(|e| format!("{s}: {e}"))?
                .filter_map(Result::ok)
                .collect();
            if matches.is_empty() {
                return Err(format!("{s}: no file matches"));
            }
            expanded.extend(matches);
        } else {
            expanded.push(p.clone());
        }
    }
    let mut out = discover_paths(&expanded, &is_excluded);
    out.files.retain(|f| !is_excluded(&f.path));
    Ok(out)
}

fn discover_paths(paths: &[PathBuf], is_excluded: &dyn Fn(&Path) -> bool) -> Discovered {
    let mut out = Discovered::default();
    let mut found: HashMap<PathBuf, bool> = HashMap::new(); // path → named explicitly
    let mut dirs: Vec<&PathBuf> = Vec::new();
    for p in paths {
        match fs::metadata(p) {
            Err(e) => out.errors.push(Diagnostic::file_error(
                &display_path(p),
                Rule::IoError,
                format!("cannot read: {e}"),
            )),
            Ok(m) if m.is_dir() => dirs.push(p),
            Ok(_) => {
                found.insert(clean(p), true);
            }
        }
    }
    if let Some((first, rest)) = dirs.split_first() {
        // One parallel walk over every directory given (a walk each cost a thread pool each,
        // for `tools/*/`).
        let mut walker = WalkBuilder::new(first);
        for d in rest {
            walker.add(d);
        }
        let walked = std::sync::Mutex::new((Vec::new(), Vec::new(), Vec::new()));
        walker.follow_links(false).build_parallel().run(|| {
            Box::new(|entry| {
                // The first bytes of a file without an extension are read here, in parallel
                // and before the lock.
                let source =
                    |e: &ignore::DirEntry| is_candidate(e.path()) || is_python_by_shebang(e.path());
                let kind = entry.as_ref().ok().and_then(|e| {
                    let t = e.file_type()?;
                    (t.is_file() || t.is_symlink())
                        .then_some(t.is_symlink())
                        .filter(|_| source(e))
                });
                let mut w = walked.lock().unwrap_or_else(|e| e.into_inner());
                match (entry, kind) {
                    (Ok(e), Some(false)) => w.0.push(e.into_path()),
                    (Ok(e), Some(true)) => w.2.push(e.into_path()),
                    (Ok(_), None) => {}
                    (Err(err), _) => w.1.push(err.to_string()),
                }
                ignore::WalkState::Continue
            })
        });
        let (files, mut errors, links) = walked.into_inner().unwrap_or_else(|e| e.into_inner());
        for f in files.iter().filter(|f| !is_excluded(f)) {
            found.entry(clean(f)).or_insert(false);
        }
        let reached: Vec<&PathBuf> = files.iter().chain(found.keys()).collect();
        out.errors
            .extend(links_not_followed(&links, &reached, is_excluded));
        errors.sort();
        for err in errors {
            // The error names the path; the diagnostic, the directory given that holds it.
            let root = dirs
                .iter()
                .filter(|d| err.contains(&*d.to_string_lossy()))
                .max_by_key(|d| d.as_os_str().len())
                .unwrap_or(first);
            out.errors.push(Diagnostic::file_error(
                &display_path(root),
                Rule::IoError,
                format!("cannot walk: {err}"),
            ));
        }
    }
    // Every file is read once. The partners its name or text points to (see `partners_of`)
    // are read in the next round, so that a program is seen whole even when one file was
    // named; four rounds reach from a loader to its BPF source to the header with the map.
    use rayon::prelude::*;
    // Hash maps (comparing paths component by component was a tenth of discovery's time);
    // what comes out is sorted.
    let mut done: HashMap<PathBuf, Read> = HashMap::new();
    let mut round: Vec<(PathBuf, bool)> = found.into_iter().collect();
    for _ in 0..4 {
        if round.is_empty() {
            break;
        }
        let results: Vec<(PathBuf, Read, Vec<PathBuf>)> = round
            .into_par_iter()
            .map(|(path, explicit)| {
                let (r, partners) = classify(&path, explicit, fs::read(&path));
                (path, r, partners)
            })
            .collect();
        // Record the whole round before looking at partners: a partner read in this round
        // (x.bpf.c beside x.c) is not read again in the next.
        let mut partners_all = Vec::new();
        for (path, r, partners) in results {
            done.insert(path, r);
            partners_all.extend(partners);
        }
        let mut next: HashMap<PathBuf, bool> = HashMap::new();
        for q in partners_all.iter().map(|q| clean(q)) {
            if !done.contains_key(&q) && !next.contains_key(&q) && q.is_file() {
                next.insert(q, false);
            }
        }
        round = next.into_iter().collect();
    }
    let mut read: Vec<(PathBuf, Read)> = done.into_iter().collect();
    read.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    for (_, r) in read {
        match r {
            Read::File(f) => out.files.push(f),
            Read::Skipped => out.skipped += 1,
            Read::Error(d) => out.errors.push(*d),
            Read::Ignored => {}
        }
    }
    out.files.sort_by(|a, b| a.display.cmp(&b.display));
    out
}

/// Symbolic links met while walking are not followed (a write would change a file the paths
/// given do not hold, or one file twice). A link to a source that bpf-migrate would read, and
/// that the walk does not reach otherwise, gets a note naming its target.
fn links_not_followed(
    links: &[PathBuf],
    walked: &[&PathBuf],
    is_excluded: &dyn Fn(&Path) -> bool,
) -> Vec<Diagnostic> {
    let targets: Vec<(&PathBuf, PathBuf)> = links
        .iter()
        .filter(|l| !is_excluded(l))
        .filter_map(|l| Some((l, fs::canonicalize(l).ok()?)))
        .collect();
    // Only the walked files named as a link target are resolved (a syscall each): a walk with
    // no links, the usual one, resolves none.
    let names: std::collections::HashSet<&std::ffi::OsStr> =
        targets.iter().filter_map(|(_, t)| t.file_name()).collect();
    let reached: std::collections::HashSet<PathBuf> = walked
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| names.contains(n)))
        .filter_map(|f| fs::canonicalize(f).ok())
        .collect();
    let mut notes = Vec::new();
    for (link, target) in targets {
        if reached.contains(&target) || !target.is_file() {
            continue;
        }
        let Ok(text) = fs::read_to_string(&target) else {
            continue;
        };
        if !crate::engine::worth_analysing(&target, &text) {
            continue;
        }
        let mut d = Diagnostic::file_error(
            &display_path(link),
            Rule::IoError,
            format!(
                "a symbolic link to {}, which none of the paths given holds: not followed, and its program not migrated",
                display_path(&target)
            ),
        )
        .help("pass the link's target (or its directory) to migrate it");
        d.demote(crate::report::Severity::Note);
        notes.push(d);
    }
    notes
}

enum Read {
    File(SourceFile),
    /// A candidate without any trigger string: counted, never parsed.
    Skipped,
    Error(Box<Diagnostic>),
    /// A binary file found by walking that is not a source file.
    Ignored,
}

/// Files that belong with `path` by convention: `x.c` beside `x.bpf.c` and back, the
/// `x.bpf.c` of an included skeleton `x.skel.h`, the local headers a C file includes (a map
/// may be defined in one), a BCC tool's `src_file`, and the `bpf/x.bpf.c` of a Rust file that
/// includes `x.skel.rs`, and the C a Go reader builds with bpf2go or loads as an object;
/// sorted, each once.
/// The lines of `text` holding `needle` (once each), found without splitting the text into
/// lines.
fn lines_with<'a>(text: &'a str, needle: &'static str) -> impl Iterator<Item = &'a str> {
    let mut lines: Vec<&str> = Vec::new();
    let mut last_start = None;
    for at in memchr::memmem::find_iter(text.as_bytes(), needle) {
        let start = crate::source::line_start(text, at);
        if last_start != Some(start) {
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            lines.push(&text[start..end]);
            last_start = Some(start);
        }
    }
    lines.into_iter()
}

/// The files C `text` includes: `#include "x"` (local: true) and `#include <x>` (false).
pub fn includes(text: &str) -> impl Iterator<Item = (&str, bool)> {
    lines_with(text, "#include").filter_map(|line| {
        let r = line.trim_start().strip_prefix("#include")?.trim();
        let (open, close, local) = match r.chars().next()? {
            '"' => ('"', '"', true),
            '<' => ('<', '>', false),
            _ => return None,
        };
        r.strip_prefix(open)?
            .split(close)
            .next()
            .map(|p| (p, local))
    })
}

fn partners_of(path: &Path, text: &str) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let lines_with = |needle: &'static str| lines_with(text, needle);
    if name.ends_with(".rs") {
        for (at, _) in text.match_indices(".skel.rs") {
            let before = &text[..at];
            let stem_start = before
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                .map(|i| i + 1)
                .unwrap_or(0);
            let stem = &before[stem_start..];
            if !stem.is_empty() {
                out.push(dir.join("bpf").join(format!("{stem}.bpf.c")));
                out.push(dir.join(format!("{stem}.bpf.c")));
            }
        }
    } else if name.ends_with(".go") {
        // bpf2go's C source, and the source of an object loaded by name (`x.bpf.o`).
        for line in lines_with("//go:generate") {
            if let Some(c) = crate::lang::go::bpf2go_source(line) {
                out.push(dir.join(c));
            }
        }
        for line in lines_with(".o\"") {
            for q in line.split('"').skip(1).step_by(2) {
                if let Some(stem) = q.strip_suffix(".o").filter(|s| !s.is_empty()) {
                    out.push(dir.join(format!("{stem}.c")));
                }
            }
        }
    } else if crate::engine::is_python_source(path, text) {
        for line in lines_with("src_file") {
            let quoted: Vec<&str> = line.split(['"', '\'']).skip(1).step_by(2).collect();
            if let Some(last) = quoted.last() {
                out.push(dir.join(last.trim_start_matches('/')));
            }
        }
        // `open("x.c").read()` of a tool that passes `text=` to BPF(): the first literal
        // after `open(`, a relative path (the engine follows only those).
        if memchr::memmem::find(text.as_bytes(), b"text=").is_some() {
            for line in lines_with("open(") {
                for (at, _) in line.match_indices("open(") {
                    let quoted = line[at..].split(['"', '\'']).nth(1);
                    if let Some(q) = quoted.filter(|q| !q.is_empty() && !q.starts_with('/')) {
                        out.push(dir.join(q));
                    }
                }
            }
        }
    } else if name.ends_with(".c") {
        match name.strip_suffix(".bpf.c") {
            Some(stem) => out.push(dir.join(format!("{stem}.c"))),
            None => out.push(dir.join(format!("{}.bpf.c", name.trim_end_matches(".c")))),
        }
        for (inc, local) in includes(text) {
            let file = inc.rsplit('/').next().unwrap_or(inc);
            match file.strip_suffix(".skel.h") {
                Some(skel) => out.push(dir.join(format!("{skel}.bpf.c"))),
                None if local && file != "vmlinux.h" => out.push(dir.join(inc)),
                None => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What a file read gave, and the partners its text names (`partners_of`), from one UTF-8
/// check of the bytes.
fn classify(path: &Path, explicit: bool, bytes: std::io::Result<Vec<u8>>) -> (Read, Vec<PathBuf>) {
    let display = display_path(path);
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            let d = Diagnostic::file_error(&display, Rule::IoError, format!("cannot read: {e}"));
            return (Read::Error(Box::new(d)), Vec::new());
        }
    };
    if memchr::memchr(0, &bytes[..bytes.len().min(8192)]).is_some() {
        let partners = std::str::from_utf8(&bytes)
            .map(|t| partners_of(path, t))
            .unwrap_or_default();
        if explicit || is_candidate(path) {
            let d = Diagnostic::file_error(
                &display,
                Rule::IoError,
                "binary file (it holds NUL bytes); not a source file",
            );
            return (Read::Error(Box::new(d)), partners);
        }
        return (Read::Ignored, partners);
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let b = e.as_bytes();
            let line = b[..at].iter().filter(|&&c| c == b'\n').count() + 1;
            let mut d = Diagnostic::file_error(
                &display,
                Rule::IoError,
                format!(
                    "not valid UTF-8 (byte offset {at}, line {line}); the file was not changed"
                ),
            );
            d.line = line;
            d.column = 1;
            return (Read::Error(Box::new(d)), Vec::new());
        }
    };
    let partners = partners_of(path, &text);
    if !crate::engine::worth_analysing(path, &text) && !may_hold_an_event(path, &text) {
        return (Read::Skipped, partners);
    }
    (
        Read::File(SourceFile::new(path.to_path_buf(), display, text)),
        partners,
    )
}

/// A small header of the program's own that defines a struct: linking may add a CPU field to
/// an event struct there (`engine::cpu_field`), so its text is kept, though it is not
/// analysed.
fn may_hold_an_event(path: &Path, text: &str) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".h")
        && name != "vmlinux.h"
        && !name.ends_with(".skel.h")
        && text.len() <= 256 * 1024
        && text.contains("struct")
}

/// `p` with `.` gone and each `..` that follows a name taken with it: one key for a file
/// however it is reached (a Go reader's `//go:generate ... ../x.bpf.c`, the walk's
/// `dir/x.bpf.c`), and a path `git apply` takes in a diff's header.
fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_reached_through_a_parent_directory_is_one_file() {
        for (p, want) in [
            ("r/go/../prog.bpf.c", "r/prog.bpf.c"),
            ("./r/./go/main.go", "r/go/main.go"),
            ("../x/../y.c", "../y.c"),
            ("/a/b/../../c.c", "/c.c"),
        ] {
            assert_eq!(clean(Path::new(p)), PathBuf::from(want), "{p}");
        }
        // A Go package whose bpf2go line names its C one directory up, walked from above:
        // that C is read once, under its own path.
        let dir = std::env::temp_dir().join(format!("bpfm-clean-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("go")).unwrap();
        fs::write(
            dir.join("prog.bpf.c"),
            "struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); } events SEC(\".maps\");\n",
        )
        .unwrap();
        fs::write(dir.join("go/main.go"), "package main\n\n//go:generate go run github.com/cilium/ebpf/cmd/bpf2go bpf ../prog.bpf.c\n\nimport \"github.com/cilium/ebpf/perf\"\n\nvar _ = perf.NewReader\n").unwrap();
        for given in [dir.clone(), dir.join("go")] {
            let found = discover(std::slice::from_ref(&given));
            let c: Vec<&Path> = found
                .files
                .iter()
                .filter(|f| f.path.ends_with("prog.bpf.c"))
                .map(|f| f.path.as_path())
                .collect();
            assert_eq!(c, [dir.join("prog.bpf.c").as_path()], "{given:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A link met while walking is not followed: a note when its target is a source with a
    /// perf buffer that the walk does not reach otherwise; none for a link to a file of the
    /// tree (read under its own path) or to a file without one (`vmlinux.h`).
    #[test]
    fn a_symbolic_link_to_a_source_outside_the_paths_is_noted_not_followed() {
        let dir = std::env::temp_dir().join(format!("bpfm-links-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("shared")).unwrap();
        fs::create_dir_all(dir.join("tool")).unwrap();
        let perf =
            "struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); } events SEC(\".maps\");\n";
        fs::write(dir.join("shared/events.bpf.c"), perf).unwrap();
        fs::write(dir.join("shared/vmlinux.h"), "struct task_struct;\n").unwrap();
        fs::write(dir.join("tool/own.bpf.c"), perf).unwrap();
        std::os::unix::fs::symlink("../shared/events.bpf.c", dir.join("tool/events.bpf.c"))
            .unwrap();
        std::os::unix::fs::symlink("../shared/vmlinux.h", dir.join("tool/vmlinux.h")).unwrap();
        std::os::unix::fs::symlink("own.bpf.c", dir.join("tool/alias.bpf.c")).unwrap();
        let found = discover(&[dir.join("tool")]);
        let notes: Vec<(&str, &str)> = found
            .errors
            .iter()
            .map(|d| (d.file.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].0.ends_with("tool/events.bpf.c"), "{notes:?}");
        assert!(
            notes[0].1.starts_with("a symbolic link to ")
                && notes[0]
                    .1
                    .contains("shared/events.bpf.c, which none of the paths given holds"),
            "{notes:?}"
        );
        assert_eq!(found.errors[0].severity, crate::report::Severity::Note);
        let read: Vec<&Path> = found.files.iter().map(|f| f.path.as_path()).collect();
        assert_eq!(read, [dir.join("tool/own.bpf.c").as_path()]);
        // Given both directories, the target is read, and nothing is said of the link.
        let found = discover(&[dir.join("tool"), dir.join("shared")]);
        assert!(found.errors.is_empty(), "{:?}", found.errors);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partners_come_from_include_lines_and_src_file_in_any_line_ending() {
        let loader = "/* #include \"old.h\" (not at a line start) */\r\n#include <stdio.h>\r\n  #include \"opensnoop.skel.h\"\r\n#include \"trace_helpers.h\" // #include \"x.h\"\r\nint main(void) { return 0; }\r\n";
        let got = partners_of(Path::new("tools/opensnoop.c"), loader);
        // Named twice (by the loader's name and by its skeleton), listed once.
        let want: Vec<PathBuf> = ["tools/opensnoop.bpf.c", "tools/trace_helpers.h"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
        let tool = "from bcc import BPF\nb = BPF(src_file=\"biotop.c\")\n";
        assert_eq!(
            partners_of(Path::new("tools/biotop.py"), tool),
            [PathBuf::from("tools/biotop.c")]
        );
        // A tool installed without an extension, known by its shebang.
        let installed = format!("#!/usr/bin/python3\n{tool}");
        assert_eq!(
            partners_of(Path::new("tools/biotop"), &installed),
            [PathBuf::from("tools/biotop.c")]
        );
        // C read from files and passed as text=: relative literals after `open(`.
        let reads = "import os\nwith open(\"slow.c\", 'r') as f:\n    t = f.read()\nt += open(os.path.join(os.path.dirname(__file__), \"bpf/more.h\")).read()\nopen(\"/proc/kallsyms\")\nb = BPF(text=t)\n";
        assert_eq!(
            partners_of(Path::new("tools/slow.py"), reads),
            [
                PathBuf::from("tools/bpf/more.h"),
                PathBuf::from("tools/slow.c")
            ]
        );
        // Without text=, open() names no partner.
        let no_text = reads.replace("text=t", "src_file=\"x.c\"");
        assert_eq!(
            partners_of(Path::new("tools/slow.py"), &no_text),
            [PathBuf::from("tools/x.c")]
        );
    }
}
