//! A Go package compiles as one: its files migrate together or not at all. A file that
//! only names the reader's types (`reader *perf.Reader` in a struct, `perf.Record` in a
//! test) belongs with the file that makes the reader; the type the lost counter needs is
//! written once a package.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::lost_counter::LOST_COUNTER_TYPE_NAME;
use crate::engine::context::Analysis;
use crate::engine::link::{Dsu, dir_of};
use crate::report::{Diagnostic, Severity};
use crate::rules::Rule;
use crate::source::SourceFile;

/// The package clause of Go source `text` (`package main`), if any.
fn package_of(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("package "))
        .and_then(|l| l.split_whitespace().nth(1))
}

/// The directory of the Go module holding `dir` (the nearest with a `go.mod`), if any.
fn module_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("go.mod").is_file())
        .map(Path::to_path_buf)
}

/// The version of cilium/ebpf the module at `module` requires (`go.mod`'s `require`), as
/// (major, minor, patch), with the text that says so.
fn cilium_required(module: &Path) -> Option<((u64, u64, u64), String)> {
    let gomod = std::fs::read_to_string(module.join("go.mod")).ok()?;
    gomod.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "github.com/cilium/ebpf")?;
        let v = words.get(at + 1)?.strip_prefix('v')?;
        let mut parts = v.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some((
            (major, minor, patch),
            format!("github.com/cilium/ebpf {}", words[at + 1]),
        ))
    })
}

/// The cilium/ebpf release from which the `ringbuf` package has what a migrated reader calls:
/// the package itself (v0.7.0), and each method the perf reader was called with
/// (`ringbuf.Reader` gained `ReadInto` in v0.9.0, `SetDeadline` in v0.9.2, `BufferSize` in
/// v0.13.0, `Flush` in v0.16.0), by the package's text.
fn ring_version_needed(texts: &[&str]) -> ((u64, u64, u64), &'static str) {
    const METHODS: &[(&str, (u64, u64, u64))] = &[
        (".ReadInto(", (0, 9, 0)),
        (".SetDeadline(", (0, 9, 2)),
        (".BufferSize(", (0, 13, 0)),
        (".Flush(", (0, 16, 0)),
    ];
    METHODS
        .iter()
        .filter(|(m, _)| texts.iter().any(|t| t.contains(m)))
        .map(|&(m, v)| (v, m))
        .max()
        .unwrap_or(((0, 7, 0), "the ringbuf package"))
}

/// Joins each Go package's files that have something to say into one program, joins a file
/// that only names reader types to the readers of its module when its package makes none,
/// refuses it when there are none at all, and keeps one `lostCounter` type a package.
pub(in crate::engine) fn link_go_packages(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    dsu: &mut Dsu,
    link_diags: &mut Vec<Diagnostic>,
) {
    let go: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].path.extension().is_some_and(|e| e == "go"))
        .collect();
    let says = |a: &Analysis| !a.edits.is_empty() || !a.diags.is_empty();
    // A reader's file: it makes a reader (a consumer), or one was refused there.
    let reads = |a: &Analysis| {
        !a.consumers.is_empty() || a.diags.iter().any(|d| d.severity == Severity::Manual)
    };
    let mut packages: BTreeMap<(PathBuf, String), Vec<usize>> = BTreeMap::new();
    for &i in &go {
        if let Some(p) = package_of(&files[i].text) {
            packages
                .entry((dir_of(&files[i].path).to_path_buf(), p.to_string()))
                .or_default()
                .push(i);
        }
    }
    // The module of each package's directory, looked up once (an ancestor walk on disk).
    let modules: HashMap<&Path, Option<PathBuf>> = packages
        .keys()
        .map(|(dir, _)| (dir.as_path(), module_of(dir)))
        .collect();
    let module_of_file = |i: usize| modules.get(dir_of(&files[i].path)).cloned().flatten();
    for members in packages.values() {
        let active: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| says(&analyses[i]))
            .collect();
        for w in active.windows(2) {
            dsu.union(w[0], w[1]);
        }
        if active.is_empty() || active.iter().any(|&i| reads(&analyses[i])) {
            keep_one_lost_counter_type(files, analyses, members, link_diags);
            // The ring reader the migration writes must exist in the library the module
            // builds with.
            // go.mod is read only for a package that makes a cilium/ebpf perf reader.
            let reader = active.iter().copied().find(|&i| {
                files[i].text.contains("\"github.com/cilium/ebpf/perf\"")
                    && !analyses[i].consumers.is_empty()
            });
            let texts: Vec<&str> = active.iter().map(|&i| files[i].text.as_str()).collect();
            let (needed, what) = ring_version_needed(&texts);
            if let Some(at) = reader
                && let Some((version, said)) =
                    module_of_file(at).as_deref().and_then(cilium_required)
                && version < needed
            {
                let (a, b, c) = needed;
                let lacks = if what.starts_with('.') {
                    format!(
                        "whose ring buffer reader has no `{}` (cilium/ebpf v{a}.{b}.{c} added it), which this package calls",
                        what.trim_matches(['.', '('])
                    )
                } else {
                    format!("which has no ringbuf package (cilium/ebpf v{a}.{b}.{c} added it)")
                };
                link_diags.push(
                    Diagnostic::at(
                        &files[at],
                        analyses[at].consumers[0].offset,
                        Rule::UnsupportedForm,
                        format!("the module requires {said}, {lacks}"),
                    )
                    .help("upgrade cilium/ebpf in go.mod (go get github.com/cilium/ebpf@latest), then run bpf-migrate again"),
                );
            }
            continue;
        }
        // Only reader types here: the reader is made in another package.
        let at = active[0];
        let module = module_of_file(at);
        let readers: Vec<usize> = go
            .iter()
            .copied()
            .filter(|&j| {
                reads(&analyses[j]) && !members.contains(&j) && module_of_file(j) == module
            })
            .collect();
        for &j in &readers {
            dsu.union(at, j);
        }
        if readers.is_empty() {
            link_diags.push(
                Diagnostic::at(
                    &files[at],
                    analyses[at].edits.first().map_or(0, |e| e.start),
                    Rule::UnlinkedProgram,
                    "this package only names a perf reader's types; the reader is made in a package of its own that bpf-migrate was not given, and the two must change together",
                )
                .help("pass the package that calls perf.NewReader too (the whole module, say), or migrate by hand"),
            );
        }
    }
}

/// The lost counter's type (`lostCounter`, written at the end of each file that counts) once
/// a package: kept in one file, dropped from the others when they import cilium/ebpf
/// themselves (else the type was their only use of it, and its import was added for it: that
/// file is refused), and dropped from all when a file of the package has it already.
fn keep_one_lost_counter_type(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    members: &[usize],
    link_diags: &mut Vec<Diagnostic>,
) {
    let is_type = |e: &crate::edit::Edit| {
        e.rule == Rule::LostCounter
            && e.text
                .contains(&format!("type {LOST_COUNTER_TYPE_NAME} struct"))
    };
    let writing: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| analyses[i].edits.iter().any(is_type))
        .collect();
    let had = members.iter().any(|&i| {
        files[i]
            .text
            .contains(&format!("type {LOST_COUNTER_TYPE_NAME} struct"))
    });
    if writing.len() < 2 && !had {
        return;
    }
    let imports_ebpf = |i: usize| files[i].text.contains("\"github.com/cilium/ebpf\"");
    // The keeper: the first that would not import cilium/ebpf but for the type.
    let keeper = (!had).then(|| {
        writing
            .iter()
            .copied()
            .find(|&i| !imports_ebpf(i))
            .unwrap_or(writing[0])
    });
    for &i in &writing {
        if Some(i) == keeper {
            continue;
        }
        if imports_ebpf(i) {
            analyses[i].edits.retain(|e| !is_type(e));
        } else {
            let at = analyses[i]
                .edits
                .iter()
                .find(|e| is_type(e))
                .map_or(0, |e| e.start);
            let other = keeper.map_or("another file of the package", |k| files[k].display.as_str());
            link_diags.push(
                Diagnostic::at(
                    &files[i],
                    at,
                    Rule::UnsupportedForm,
                    format!("this file would get the `{LOST_COUNTER_TYPE_NAME}` type, which {other} of its package gets too (Go allows one), and would import cilium/ebpf for it alone"),
                )
                .help("migrate with --lost drop, or import github.com/cilium/ebpf in this file, or migrate by hand"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::Options;
    use crate::engine::testkit::{check_refused, run};
    use crate::rules::Rule;

    const BPF: &str = "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\nstruct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} events SEC(\".maps\");\n\nSEC(\"tp/syscalls/sys_enter_kill\")\nint on_kill(void *ctx)\n{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}\n\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n";

    /// A file of package `main` that holds the reader in a struct, and nothing else.
    const TYPES: &str = "package main\n\nimport \"github.com/cilium/ebpf/perf\"\n\ntype watcher struct {\n\treader *perf.Reader\n\tlast   perf.Record\n}\n";

    /// `main.go` making the reader from `map_expr`; with `lost`, testing `LostSamples`.
    fn reader(map_expr: &str, lost: bool) -> String {
        let test = if lost {
            "\t\tif rec.LostSamples != 0 {\n\t\t\tlog.Printf(\"lost %d\", rec.LostSamples)\n\t\t\tcontinue\n\t\t}\n"
        } else {
            ""
        };
        format!(
            "package main\n\n//go:generate go run github.com/cilium/ebpf/cmd/bpf2go watch kill.bpf.c\n\nimport (\n\t\"log\"\n\n\t\"github.com/cilium/ebpf/perf\"\n)\n\nfunc main() {{\n\tvar objs watchObjects\n\t_ = loadWatchObjects(&objs, nil)\n\trd, err := perf.NewReader({map_expr}, 4096)\n\tif err != nil {{\n\t\tlog.Fatal(err)\n\t}}\n\tw := watcher{{reader: rd}}\n\tfor {{\n\t\trec, err := w.reader.Read()\n\t\tif err != nil {{\n\t\t\treturn\n\t\t}}\n{test}\t\tlog.Print(rec.RawSample)\n\t}}\n}}\n"
        )
    }

    #[test]
    fn a_file_naming_the_readers_types_changes_only_with_its_reader() {
        // Migrated together: the struct's field takes the ring reader the other file makes.
        let (changed, diags) = run(
            &[
                ("kill.bpf.c", BPF),
                ("main.go", &reader("objs.Events", false)),
                ("types.go", TYPES),
            ],
            &Options::default(),
        );
        assert!(changed.contains_key("main.go"), "{diags:?}");
        assert!(
            changed["types.go"].contains("\treader *ringbuf.Reader\n\tlast   ringbuf.Record\n"),
            "{changed:?}"
        );
        // The reader refused (a map it cannot follow): the types stay perf's, or the
        // package would not build.
        check_refused(
            &[
                ("kill.bpf.c", BPF),
                ("main.go", &reader("pick(objs)", false)),
                ("types.go", TYPES),
            ],
            Rule::UnresolvedMap,
            "cannot tell which BPF map",
        );
        // The reader made in a package that was not given: nothing to change with.
        check_refused(
            &[("types.go", TYPES)],
            Rule::UnlinkedProgram,
            "only names a perf reader's types",
        );
    }

    #[test]
    fn a_module_on_a_cilium_ebpf_without_ringbuf_or_a_method_it_calls_is_refused() {
        let dir = std::env::temp_dir().join(format!("bpfm-gomod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("main.go");
        let bpf = dir.join("kill.bpf.c");
        let gomod = |v: &str| {
            std::fs::write(
                dir.join("go.mod"),
                format!("module example.com/w\n\ngo 1.17\n\nrequire (\n\tgithub.com/cilium/ebpf {v}\n\tgolang.org/x/sys v0.0.0-20210906170528-6f6e22806c34 // indirect\n)\n"),
            )
            .unwrap()
        };
        let (m, b) = (main.to_string_lossy(), bpf.to_string_lossy());
        let text = reader("objs.Events", false);
        gomod("v0.6.2");
        check_refused(
            &[(&b, BPF), (&m, &text)],
            Rule::UnsupportedForm,
            "requires github.com/cilium/ebpf v0.6.2, which has no ringbuf package",
        );
        gomod("v0.12.3");
        let (changed, diags) = run(&[(&b, BPF), (&m, &text)], &Options::default());
        assert!(changed.contains_key(m.as_ref()), "{diags:?}");
        // A method the ring reader gained later than the perf reader: SetDeadline (v0.9.2).
        let deadline = text.replace("\tfor {\n", "\trd.SetDeadline(time.Time{})\n\tfor {\n");
        assert_ne!(deadline, text);
        gomod("v0.9.1");
        check_refused(
            &[(&b, BPF), (&m, &deadline)],
            Rule::UnsupportedForm,
            "requires github.com/cilium/ebpf v0.9.1, whose ring buffer reader has no `SetDeadline` (cilium/ebpf v0.9.2 added it)",
        );
        gomod("v0.9.2");
        let (changed, diags) = run(&[(&b, BPF), (&m, &deadline)], &Options::default());
        assert!(changed.contains_key(m.as_ref()), "{diags:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_lost_counters_type_is_written_once_a_package() {
        // Two readers in two files of one package, each counting what its ring lost.
        let second = reader("objs.Events", true)
            .replace("func main()", "func second()")
            .replace("\t\"log\"\n", "\t\"log\"\n\n\t\"github.com/cilium/ebpf\"\n")
            .replace(
                "\tw := watcher{reader: rd}\n",
                "\tw := watcher{reader: rd}\n\tvar _ *ebpf.Map\n",
            )
            .replace(
                "//go:generate go run github.com/cilium/ebpf/cmd/bpf2go watch kill.bpf.c\n\n",
                "",
            );
        let (changed, diags) = run(
            &[
                ("kill.bpf.c", BPF),
                ("main.go", &reader("objs.Events", true)),
                ("second.go", &second),
                ("types.go", TYPES),
            ],
            &Options::default(),
        );
        let types: usize = changed
            .values()
            .map(|t| t.matches("type lostCounter struct").count())
            .sum();
        assert_eq!(types, 1, "{changed:?} {diags:?}");
        assert!(
            changed["main.go"].contains("type lostCounter struct"),
            "{changed:?}"
        );
        assert!(
            changed["second.go"].contains("&lostCounter{"),
            "{changed:?}"
        );
    }
}
