//! libbpf-rs user space: `PerfBufferBuilder::new(MAP).sample_cb(CB)...build()` chains become
//! `RingBufferBuilder::new()` + `add(MAP, CB)` + `build()`, callbacks lose their CPU argument
//! and return 0, lost-sample callbacks are fed from a counter (`lost_counter`) or go, imports
//! and `PerfBuffer` types follow.
//!
//! `syn` finds the code; every change is a byte-range edit on the original text, so comments
//! and formatting outside the edited spans stay as they were.
//!
//! The parts, in the order `analyze` meets them: `scan` (whether a file is parsed at all),
//! `collect` (the parse, what a syn visitor and the token stream hold), `imports` (providers,
//! aliases, `use` items and `PerfBuffer` types), `builder` (the chains), with `maps` (which map
//! a chain reads), `callbacks` (the sample callback), `lost_counter` (the lost-sample
//! callback kept) or `lost` (the lost-sample callback dropped, and what only it used) and `pages` (the page count) for each chain, `messages` (texts that name
//! the perf buffer), and `items` (positions, and the item ranges of the parse check).

mod builder;
pub(super) mod callbacks;
mod collect;
mod compat;
mod imports;
mod items;
mod lost;
mod lost_counter;
mod maps;
mod messages;
mod pages;
mod scan;

use std::collections::HashSet;

use proc_macro2::Span;
use syn::visit::Visit;

use self::collect::{Collect, collect_tokens, parse_reporting};
use self::items::offset;
pub use self::items::{item_ranges, items_parse};
pub use self::scan::names_perf_buffer_in_code;
use super::check::{Kept, wants_check_ahead};
use super::context::{Analysis, CpuUse, Report};
use super::options::{Options, Strategy};
use crate::edit::Edit;
use crate::report::Diagnostic;
use crate::source::SourceFile;

/// One file's analysis: what it read from the file, and the edits and diagnostics it made.
struct Rs<'a> {
    file: &'a SourceFile,
    edits: Vec<Edit>,
    diags: Vec<Diagnostic>,
    /// Every identifier of the file, macro arguments included: (text, start, end).
    idents: Vec<(String, usize, usize)>,
    /// Every string literal: (start, end).
    strings: Vec<(usize, usize)>,
    explained: Vec<(usize, usize)>,
    done_fns: HashSet<usize>,
    /// The sample_cb and lost_cb arguments of every chain in the file.
    cb_args: Vec<(usize, usize)>,
    opts: &'a Options,
    /// `lost_counter`'s function is written at the end of the file.
    lost_helper: bool,
    /// Sample callbacks that read the CPU (`callbacks::keep_cpu`).
    cpu_uses: Vec<CpuUse>,
    /// Under compat, the loads before which maps are picked (`compat::finish`), and whether a
    /// chain's lost callback is counted.
    compat_picks: Vec<compat::Pick>,
    compat_counted: bool,
}

impl Report for Rs<'_> {
    fn report_to(&mut self) -> (&SourceFile, &mut Vec<Diagnostic>) {
        (self.file, &mut self.diags)
    }
}

impl Rs<'_> {
    fn src(&self) -> &str {
        &self.file.text
    }
    fn range(&self, span: Span) -> (usize, usize) {
        (
            offset(self.file, span.start()),
            offset(self.file, span.end()),
        )
    }
    fn text(&self, span: Span) -> &str {
        let (s, e) = self.range(span);
        &self.file.text[s..e]
    }
    /// Uses of identifier `name` inside `start..end`.
    fn uses_in(&self, name: &str, start: usize, end: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .idents
            .iter()
            .filter(|(t, s, e)| t == name && *s >= start && *e <= end)
            .map(|x| x.1)
            .collect();
        // Format strings capture variables by name: `println!("{cpu}")`.
        for &(s, e) in self
            .strings
            .iter()
            .filter(|&&(s, e)| s >= start && e <= end)
        {
            let lit = &self.file.text[s..e];
            if lit.contains(&format!("{{{name}}}")) || lit.contains(&format!("{{{name}:")) {
                v.push(s);
            }
        }
        v.sort();
        v
    }
    /// Uses of `name` anywhere in the file except the callback arguments of chains.
    fn other_uses(&self, name: &str, except: (usize, usize)) -> Vec<usize> {
        self.uses_in(name, 0, self.file.text.len())
            .into_iter()
            .filter(|&u| u != except.0 && !self.cb_args.iter().any(|&(a, b)| u >= a && u < b))
            .collect()
    }
}

/// The analysis of a Rust file, and what `check_ahead` needs when it has edits: the byte
/// ranges of its top-level items.
pub fn analyze(file: &SourceFile, opts: &Options) -> (Analysis, Option<Kept>) {
    let mut a = Analysis::default();
    let Some((tokens, ast)) = parse_reporting(file, &mut a) else {
        return (a, None);
    };
    let mut col = Collect::default();
    col.visit_file(&ast);
    // Not a user of libbpf-rs's perf buffer: nothing to migrate here (a BPF side that only
    // this file reads finds no reader and is refused at linking).
    if col.provides_perf_buffer || compat::has_shim(&file.text) {
        return (a, None);
    }
    let mut rs = Rs {
        file,
        edits: Vec::new(),
        diags: Vec::new(),
        idents: Vec::new(),
        explained: Vec::new(),
        done_fns: HashSet::new(),
        cb_args: Vec::new(),
        strings: Vec::new(),
        opts,
        lost_helper: false,
        cpu_uses: Vec::new(),
        compat_picks: Vec::new(),
        compat_counted: false,
    };
    if imports::refuse_imported_elsewhere(&mut rs, &col) {
        a.diags.extend(rs.diags);
        return (a, None);
    }
    let (mut idents, mut strings) = (Vec::new(), Vec::new());
    collect_tokens(tokens, &rs, &mut idents, &mut strings);
    rs.idents = idents;
    rs.strings = strings;
    a.bpf_sources.extend(skeleton_sources(rs.src()));

    let (builder_names, ring_imported) = imports::builder_names(&col);
    let chains = builder::find_chains(&mut rs, &col, &builder_names);
    for c in &chains {
        rs.explained.push(c.whole);
        builder::rewrite_chain(&mut rs, &col, c, &mut a);
    }
    for u in &col.uses {
        imports::rewrite_use(&mut rs, u, ring_imported);
    }
    compat::finish(&mut rs, &col);
    let chain_ranges: Vec<(usize, usize)> = chains.iter().map(|c| c.whole).collect();
    imports::rewrite_names(&mut rs, &chain_ranges, &builder_names);
    // Messages follow a migration made in this file; alone, they are someone else's words.
    // Under compat the buffer may still be a perf buffer: they stay.
    if !rs.edits.is_empty() && opts.strategy != Strategy::Compat {
        messages::messages(&mut rs, &chain_ranges);
    }
    a.edits.extend(rs.edits);
    a.diags.extend(rs.diags);
    a.cpu_uses.extend(rs.cpu_uses);
    let kept = wants_check_ahead(&a).then(|| Kept::Rust(item_ranges(file, &ast)));
    (a, kept)
}

/// The BPF sources of the skeletons the file includes (`x.skel.rs` is made from `x.bpf.c`).
fn skeleton_sources(text: &str) -> Vec<String> {
    text.match_indices(".skel.rs\"")
        .map(|(s, _)| {
            let before = &text[..s];
            let start = before.rfind(['"', '/']).map(|i| i + 1).unwrap_or(0);
            format!("{}.bpf.c", &before[start..])
        })
        .collect()
}

/// Minimal crates for the unit tests of the parts: the test's `src/main.rs` (written indented,
/// `dedent`ed here, with the skeleton module `x` appended) beside `src/bpf/x.bpf.c`, the BPF
/// side `x.skel.rs` is generated from, run through the whole engine by `testkit`.
#[cfg(test)]
mod test_crate {
    use crate::engine::Options;
    use crate::engine::testkit::{check_migrate_with, check_refused, run};
    use crate::rules::Rule;

    pub(super) const BPF: &str = r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(u32));
    __uint(value_size, sizeof(u32));
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_getpid")
int handle(void *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;

    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
    return 0;
}
"#;

    const SKEL: &str = "\nmod x {\n    include!(concat!(env!(\"OUT_DIR\"), \"/x.skel.rs\"));\n}\n";

    /// `text` without its first line break and the indentation its lines share.
    pub(super) fn dedent(text: &str) -> String {
        let text = text.strip_prefix('\n').unwrap_or(text);
        let indent = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start_matches(' ').len())
            .min()
            .unwrap_or(0);
        text.split_inclusive('\n')
            .map(|l| {
                if l.trim().is_empty() {
                    l.trim_start_matches(' ')
                } else {
                    &l[indent..]
                }
            })
            .collect()
    }

    /// The `src/main.rs` of a test.
    pub(super) fn main_rs(text: &str) -> String {
        format!("{}{SKEL}", dedent(text))
    }

    /// The crate migrates, nothing refused, and `src/main.rs` reads `after`.
    pub(super) fn migrates(main: &str, after: &str) {
        migrates_with(main, after, &Options::default());
    }

    /// As `migrates`, with `opts`.
    pub(super) fn migrates_with(main: &str, after: &str, opts: &Options) {
        check_migrate_with(
            &[("src/main.rs", &main_rs(main)), ("src/bpf/x.bpf.c", BPF)],
            &[("src/main.rs", &main_rs(after))],
            opts,
        );
    }

    /// As `migrates`, and a diagnostic says `note`.
    pub(super) fn migrates_noting(main: &str, after: &str, note: &str) {
        migrates_noting_with(main, after, note, &Options::default());
    }

    /// As `migrates_with`, and a diagnostic says `note`.
    pub(super) fn migrates_noting_with(main: &str, after: &str, note: &str, opts: &Options) {
        migrates_with(main, after, opts);
        let main = main_rs(main);
        let (_, diags) = run(&[("src/main.rs", &main), ("src/bpf/x.bpf.c", BPF)], opts);
        assert!(
            diags.iter().any(|d| d.message.contains(note)),
            "no diagnostic saying `{note}`: {:?}",
            diags.iter().map(|d| &d.message).collect::<Vec<_>>()
        );
    }

    /// Nothing changes, and `rule` refuses the crate saying `says`.
    pub(super) fn refused(main: &str, rule: Rule, says: &str) {
        check_refused(
            &[("src/main.rs", &main_rs(main)), ("src/bpf/x.bpf.c", BPF)],
            rule,
            says,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::skeleton_sources;
    use super::test_crate::{BPF, main_rs};
    use crate::engine::Options;
    use crate::engine::testkit::{check_fallback, run};
    use crate::rules::Rule;

    /// A file that only names `PerfBuffer` (a struct's field) changes with the crate's
    /// builder: refused with it (flaregun: its fields became `RingBuffer` while the buffer,
    /// built in a macro, stayed a perf buffer), migrated with it, and refused alone.
    #[test]
    fn a_file_that_only_names_the_types_goes_with_its_crates_builder() {
        let state = "pub struct State<'a> {\n    pub buf: libbpf_rs::PerfBuffer<'a>,\n}\n";
        let refused_builder = main_rs(
            r#"
            mod state;
            use libbpf_rs::PerfBufferBuilder;

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = x::XSkelBuilder::default().open(&mut open_object)?.load()?;
                let buf = PerfBufferBuilder::new(&skel.maps.events).build()?;
                let _s = state::State { buf };
                Ok(())
            }
            "#,
        );
        let files = |main: &'static str| {
            [
                ("src/main.rs", main),
                ("src/state.rs", state),
                ("src/bpf/x.bpf.c", BPF),
            ]
        };
        let refused_builder: &'static str = refused_builder.leak();
        let given = files(refused_builder);
        let (changed, diags) = run(&given, &Options::default());
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags.iter().any(|d| d.rule == Rule::CallbackForm),
            "{diags:?}"
        );
        let builds = refused_builder.replace(
            "PerfBufferBuilder::new(&skel.maps.events).build()?",
            "PerfBufferBuilder::new(&skel.maps.events).sample_cb(|_cpu: i32, _d: &[u8]| {}).build()?",
        );
        let (changed, diags) = run(&files(builds.leak()), &Options::default());
        assert!(
            changed
                .get("src/state.rs")
                .is_some_and(|t| t.contains("libbpf_rs::RingBuffer<'a>"))
                && changed.contains_key("src/main.rs"),
            "{changed:?} {diags:?}"
        );
        let (changed, diags) = run(
            &[("src/state.rs", state), ("src/bpf/x.bpf.c", BPF)],
            &Options::default(),
        );
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags.iter().any(|d| d.file == "src/state.rs"
                && d.rule == Rule::UnlinkedProgram
                && d.message.contains("only names the perf buffer's types")),
            "{diags:?}"
        );
    }

    #[test]
    fn skeletons_name_their_bpf_sources() {
        let text = r#"mod a { include!(concat!(env!("OUT_DIR"), "/a.skel.rs")); }
mod b { include!("../bpf/.output/b.skel.rs"); }
"#;
        assert_eq!(skeleton_sources(text), ["a.bpf.c", "b.bpf.c"]);
    }

    /// The strategy is the BPF side's business: with `--strategy reserve`, a BPF side that
    /// keeps its copy (a `reserve-fallback` note) migrates with its Rust reader, nothing refused.
    #[test]
    fn consumer_migrates_when_the_bpf_side_keeps_its_copy() {
        let bpf = BPF.replace("return 0;\n}", "return pid == 1;\n}");
        let main = main_rs(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events).sample_cb(handle).build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
        );
        check_fallback(
            &[("src/main.rs", &main), ("src/bpf/x.bpf.c", &bpf)],
            "`pid` is used after it is output",
        );
    }
}

/// The directory of the crate holding `dir` (the nearest with a `Cargo.toml`), if any.
fn crate_of(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    dir.ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .map(std::path::Path::to_path_buf)
}

/// A crate compiles as one: its Rust files that have something to say migrate together or
/// not at all (a file that only names `PerfBuffer` in a struct field changes with the file
/// that builds the buffer, and is refused with it). A crate whose files only name the types,
/// its buffers built nowhere bpf-migrate was given, is refused. Files outside any crate on
/// disk count as one crate.
pub(in crate::engine) fn link_rust_crates(
    files: &[SourceFile],
    analyses: &[Analysis],
    dsu: &mut super::link::Dsu,
    link_diags: &mut Vec<Diagnostic>,
) {
    use crate::report::Severity;
    use std::collections::BTreeMap;
    let mut crates: BTreeMap<Option<std::path::PathBuf>, Vec<usize>> = BTreeMap::new();
    // Each directory's crate looked up once (an ancestor walk on disk).
    let mut crate_of_dir: std::collections::HashMap<&std::path::Path, Option<std::path::PathBuf>> =
        std::collections::HashMap::new();
    for (i, f) in files.iter().enumerate() {
        let a = &analyses[i];
        if super::gate::is_rust(&f.path) && (!a.edits.is_empty() || !a.diags.is_empty()) {
            let dir = super::link::dir_of(&f.path);
            let krate = crate_of_dir.entry(dir).or_insert_with(|| crate_of(dir));
            crates.entry(krate.clone()).or_default().push(i);
        }
    }
    for members in crates.values() {
        for w in members.windows(2) {
            dsu.union(w[0], w[1]);
        }
        // A buffer built here (a consumer), or one refused here.
        let reads = members.iter().any(|&i| {
            !analyses[i].consumers.is_empty()
                || analyses[i]
                    .diags
                    .iter()
                    .any(|d| d.severity == Severity::Manual)
        });
        if let (false, Some(&at)) = (
            reads,
            members.iter().find(|&&i| !analyses[i].edits.is_empty()),
        ) {
            link_diags.push(
                Diagnostic::at(
                    &files[at],
                    analyses[at].edits[0].start,
                    crate::rules::Rule::UnlinkedProgram,
                    "this crate only names the perf buffer's types; the buffer is built in a file bpf-migrate was not given, and the two must change together",
                )
                .help("pass the file that calls PerfBufferBuilder::new too (the whole crate, say), or migrate by hand"),
            );
        }
    }
}
