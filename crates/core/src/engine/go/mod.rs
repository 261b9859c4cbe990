//! Go readers: cilium/ebpf's `perf.NewReader` (`cilium.rs`) becomes a `ringbuf.NewReader`,
//! with its records, errors, types and imports; libbpfgo's `InitPerfBuf` (`libbpfgo.rs`)
//! becomes `InitRingBuf`.
//!
//! The BPF source is found from the `//go:generate ... bpf2go ... NAME FILE.c` directive or the
//! object a collection is loaded from (`x.bpf.o` → `x.bpf.c`); the map from bpf2go's field
//! name (`objs.Events` ↔ `events`, matched at linking with `lang::go::bpf2go_identifier`) or
//! the name a collection is indexed with (`coll.Maps["events"]`). A generated file (bpf2go's
//! `*_bpfel.go`) is never edited: the user's build makes it again.
//!
//! Every change is a byte-range edit of the original text; imports are kept in gofmt's order.

mod cilium;
mod imports;
mod libbpfgo;

use tree_sitter::Node;

use super::context::{Analysis, Report};
use super::options::Options;
use crate::edit::Edit;
use crate::lang::go;
use crate::lang::{NodeExt, c};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// The import path of cilium/ebpf's perf reader, and of its ring buffer reader.
pub const PERF_PATH: &str = "github.com/cilium/ebpf/perf";
pub const RINGBUF_PATH: &str = "github.com/cilium/ebpf/ringbuf";

/// Whether a Go file may read a perf event array: it imports cilium/ebpf's `perf` package,
/// or calls libbpfgo's `InitPerfBuf`.
pub fn worth_analysing(text: &str) -> bool {
    memchr::memmem::find(text.as_bytes(), PERF_PATH.as_bytes()).is_some()
        || memchr::memmem::find(text.as_bytes(), b"InitPerfBuf").is_some()
}

/// One Go file's analysis.
struct GoFile<'a, 't> {
    file: &'a SourceFile,
    nodes: Vec<Node<'t>>,
    edits: Vec<Edit>,
    diags: Vec<Diagnostic>,
    /// Byte ranges the edits delete or replace: uses of a package inside them go away.
    removed: Vec<(usize, usize)>,
}

impl Report for GoFile<'_, '_> {
    fn report_to(&mut self) -> (&SourceFile, &mut Vec<Diagnostic>) {
        (self.file, &mut self.diags)
    }
}

impl<'a, 't> GoFile<'a, 't> {
    fn src(&self) -> &'a str {
        &self.file.text
    }
    fn text(&self, n: Node) -> &'a str {
        c::text(n, self.src())
    }
    fn of_kind(&self, kind: &str) -> Vec<Node<'t>> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| n.kind() == kind)
            .collect()
    }
    fn replace(&mut self, start: usize, end: usize, text: impl Into<String>, rule: Rule) {
        self.removed.push((start, end));
        self.edits.push(Edit::replace(start, end, text, rule));
    }
    /// Deletes `node`'s whole lines (it must start its first line and end its last), with a
    /// blank line after it when one is also before it (gofmt keeps one).
    fn delete_lines(&mut self, node: Node, rule: Rule) {
        let src = self.src();
        let start = crate::source::line_start(src, node.start_byte());
        let mut end = crate::source::line_end_incl(src, end_trimmed(src, node));
        let before_blank = start >= 1
            && src[crate::source::line_start(src, start - 1)..start]
                .trim()
                .is_empty();
        let after = crate::source::line_end_incl(src, end);
        let after_blank = end < src.len() && src[end..after].trim().is_empty();
        let closes_block = src[end..].trim_start().starts_with('}');
        if after_blank && before_blank {
            end = after;
        }
        let start = if before_blank && closes_block {
            crate::source::line_start(src, start - 1)
        } else {
            start
        };
        self.removed.push((start, end));
        self.edits.push(Edit::delete(start, end, rule));
    }
}

/// Where `node`'s text ends, less the blanks at its end: a statement list ends after the
/// line break that ends its last statement.
fn end_trimmed(src: &str, node: Node) -> usize {
    node.start_byte() + src[node.start_byte()..node.end_byte()].trim_end().len()
}

/// The enclosing node of `kind`, `n` itself included.
fn ancestor<'t>(mut n: Node<'t>, kind: &str) -> Option<Node<'t>> {
    loop {
        if n.kind() == kind {
            return Some(n);
        }
        n = n.parent()?;
    }
}

/// The named children of a call's argument list (comments left out).
fn call_args(call: Node) -> Vec<Node> {
    let Some(list) = call.field("arguments") else {
        return Vec::new();
    };
    let mut cur = list.walk();
    list.named_children(&mut cur)
        .filter(|n| n.kind() != "comment")
        .collect()
}

/// The analysis of a Go file.
pub fn analyze(file: &SourceFile, opts: &Options) -> Analysis {
    let mut a = Analysis::default();
    if go::is_generated(&file.text) || !worth_analysing(&file.text) {
        return a;
    }
    let Some(tree) = go::parse(&file.text) else {
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            "the Go parser gave up on this file",
        ));
        return a;
    };
    let errors = c::error_nodes(tree.root_node());
    if let Some(&(s, _)) = errors.first() {
        a.diags.push(
            Diagnostic::at(
                file,
                s,
                Rule::ParseError,
                "cannot parse the Go code here; this file's program is left untouched",
            )
            .help("check that the file builds with `go vet`"),
        );
        return a;
    }
    a.errors_before = 0;
    let mut g = GoFile {
        file,
        nodes: c::descendants(tree.root_node()),
        edits: Vec::new(),
        diags: Vec::new(),
        removed: Vec::new(),
    };
    a.bpf_sources = bpf_sources(&g);
    let switch = cilium::analyze(&mut g, opts, &mut a);
    libbpfgo::analyze(&mut g, opts, &mut a);
    imports::finish(&mut g, switch.as_ref().map(|(at, p)| (*at, p.as_deref())));
    a.edits = g.edits;
    a.diags.extend(g.diags);
    a
}

/// The BPF sources a Go file names: the C file of a bpf2go `//go:generate` directive, and the
/// source of an object it loads by name (`"x.bpf.o"` → `x.bpf.c`, `"x.o"` → `x.c`).
fn bpf_sources(g: &GoFile) -> Vec<String> {
    let mut out = Vec::new();
    for n in g.of_kind("comment") {
        let t = g.text(n);
        if let Some(src) = go::bpf2go_source(t) {
            out.push(src.rsplit('/').next().unwrap_or(src).to_string());
        }
    }
    for n in g.of_kind("interpreted_string_literal") {
        let t = g.text(n).trim_matches('"');
        if let Some(stem) = t.strip_suffix(".o") {
            let stem = stem.rsplit('/').next().unwrap_or(stem);
            out.push(format!("{stem}.c"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// How many parse errors a Go text has (the parse check after the edits).
pub fn parse_errors(text: &str) -> usize {
    go::parse(text)
        .map(|t| c::error_nodes(t.root_node()).len())
        .unwrap_or(usize::MAX)
}
