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
mod lost_counter;
mod package;
pub(super) use package::link_go_packages;

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
    /// A note that the buffer size `size`, which no literal or constant of the file gives
    /// (a flag, a function's value), no longer sizes anything: the ring's size is the BPF
    /// map's, fixed in its source.
    fn size_chosen_at_run_time(&mut self, size: Node, what: &str, rule: Rule) {
        let text = self.text(size).to_string();
        self.diags.push(
            Diagnostic::at(
                self.file,
                size.start_byte(),
                rule,
                format!("the {what} `{text}` is chosen at run time and no longer applies"),
            )
            .help("a ring buffer's size is the BPF map's max_entries, set in its source (--ringbuf-size); an option that set the buffer's size does nothing to it"),
        );
    }

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
    /// The value of an integer literal, or of a constant of the file declared as one
    /// (`const pages = 64`).
    fn int_value(&self, n: Node) -> Option<u64> {
        let literal = |n: Node| {
            (n.kind() == "int_literal")
                .then(|| self.text(n).replace('_', "").parse::<u64>().ok())
                .flatten()
        };
        if n.kind() != "identifier" {
            return literal(n);
        }
        let name = self.text(n);
        self.of_kind("const_spec").into_iter().find_map(|c| {
            let mut cur = c.walk();
            let names: Vec<Node> = c.children_by_field_name("name", &mut cur).collect();
            let value = c.field("value")?;
            let at = names.iter().position(|x| self.text(*x) == name)?;
            let mut cur = value.walk();
            let values: Vec<Node> = value.named_children(&mut cur).collect();
            values.get(at).copied().and_then(literal)
        })
    }
    fn replace(&mut self, start: usize, end: usize, text: impl Into<String>, rule: Rule) {
        self.removed.push((start, end));
        self.edits.push(Edit::replace(start, end, text, rule));
    }
    /// Deletes `node`'s whole lines (it must start its first line and end its last) and the
    /// `//` comment lines right above it (they speak of it). gofmt keeps one blank line where
    /// there were several and none before a block's `}`: a blank line after the deleted
    /// lines goes when there is one before them too, and the one before them when the block
    /// ends after them (lines other edits delete are looked through).
    fn delete_lines(&mut self, node: Node, rule: Rule) {
        use crate::source::{line_end_incl, line_start};
        let src = self.src();
        let mut start = line_start(src, node.start_byte());
        while start > 0 {
            let above = line_start(src, start - 1);
            if !src[above..start].trim_start().starts_with("//") {
                break;
            }
            start = above;
        }
        let end = line_end_incl(src, end_trimmed(src, node));
        let removed = self.removed.clone();
        let covered = |s: usize, e: usize| removed.iter().any(|&(rs, re)| rs <= s && e <= re);
        // The nearest lines before and after that stay.
        let mut before = start;
        while before > 0 && covered(line_start(src, before - 1), before) {
            before = line_start(src, before - 1);
        }
        let mut after = end;
        while after < src.len() && covered(after, line_end_incl(src, after)) {
            after = line_end_incl(src, after);
        }
        let blank_before = (before > 0)
            .then(|| line_start(src, before - 1))
            .filter(|&b| src[b..before].trim().is_empty());
        let after_end = line_end_incl(src, after);
        let blank_after = after < src.len() && src[after..after_end].trim().is_empty();
        let closes_block = src[after..].trim_start().starts_with('}');
        let mut spans = vec![(start, end)];
        match blank_before {
            Some(b) if closes_block => spans.push((b, before)),
            Some(_) if blank_after => spans.push((after, after_end)),
            _ => {}
        }
        for (s, e) in spans {
            self.removed.push((s, e));
            self.edits.push(Edit::delete(s, e, rule));
        }
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
    if !a.consumers.is_empty() {
        messages(&mut g);
    }
    drop_unused_locals(&mut g);
    imports::finish(
        &mut g,
        switch.as_ref().map(|s| (s.spec, s.path.as_deref())),
        switch.as_ref().map_or(&[][..], |s| &s.need[..]),
    );
    a.edits = g.edits;
    a.diags.extend(g.diags);
    a
}

/// Messages that name the perf reader or buffer, in a file whose reader migrated: string
/// literals passed to a call (`log.Fatalf("creating perf event reader: %s", err)`,
/// `fmt.Errorf("perf buffer: %w", err)`) now name the ring buffer. Other strings keep
/// their words (a flag's name, a map's).
fn messages(g: &mut GoFile) {
    const PAIRS: &[(&str, &str)] = &[
        ("perf event reader", "ring buffer reader"),
        ("Perf event reader", "Ring buffer reader"),
        ("perf reader", "ring buffer reader"),
        ("Perf reader", "Ring buffer reader"),
        ("perf event buffer", "ring buffer"),
        ("perf buffer", "ring buffer"),
        ("Perf buffer", "Ring buffer"),
    ];
    let strings: Vec<Node> = ["interpreted_string_literal", "raw_string_literal"]
        .iter()
        .flat_map(|k| g.of_kind(k))
        .filter(|n| n.parent().is_some_and(|p| p.kind() == "argument_list"))
        .collect();
    for n in strings {
        let (s, e) = (n.start_byte(), n.end_byte());
        if g.removed.iter().any(|&(a, b)| a < e && s < b) {
            continue;
        }
        let old = g.text(n);
        if super::user::messages::about_its_size(old) {
            continue;
        }
        let new = PAIRS
            .iter()
            .fold(old.to_string(), |t, (a, b)| t.replace(a, b));
        if new != old {
            g.replace(s, e, new, Rule::PerfBufferMessage);
        }
    }
}

/// Local variables whose every use went with the edits (a page count `size :=
/// 16 * os.Getpagesize()` given only to the perf reader): Go refuses a variable declared and
/// not used, so a declaration `v := X` of that one name, alone on its lines, goes when `X`
/// is plain (literals, names, arithmetic, `os.Getpagesize()`), else becomes `_ = X`; again
/// for what that removal leaves unused.
fn drop_unused_locals(g: &mut GoFile) {
    for _ in 0..3 {
        let mut changed = false;
        for decl in g.of_kind("short_var_declaration") {
            let (Some(left), Some(right)) = (decl.field("left"), decl.field("right")) else {
                continue;
            };
            let at = decl.start_byte();
            if left.named_child_count() != 1
                || right.named_child_count() != 1
                || g.removed.iter().any(|&(s, e)| s <= at && at < e)
            {
                continue;
            }
            let Some(name) = left.named_child(0).filter(|n| n.kind() == "identifier") else {
                continue;
            };
            let Some(scope) = decl.parent().and_then(|p| ancestor(p, "block")) else {
                continue;
            };
            let var = g.text(name);
            let uses: Vec<usize> = g
                .of_kind("identifier")
                .into_iter()
                .filter(|n| {
                    g.text(*n) == var
                        && n.id() != name.id()
                        && n.start_byte() > decl.end_byte()
                        && n.end_byte() <= scope.end_byte()
                })
                .map(|n| n.start_byte())
                .collect();
            let gone = |u: &usize| g.removed.iter().any(|&(s, e)| s <= *u && *u < e);
            if uses.is_empty() || !uses.iter().all(gone) {
                continue;
            }
            let src = g.src();
            let alone = src[crate::source::line_start(src, at)..at]
                .trim()
                .is_empty();
            if !alone {
                continue;
            }
            let value = right.named_child(0).expect("one value");
            if is_plain(g, value) {
                g.delete_lines(decl, Rule::GoPerfReader);
            } else {
                g.replace(at, value.start_byte(), "_ = ", Rule::GoPerfReader);
            }
            changed = true;
        }
        if !changed {
            return;
        }
    }
}

/// Whether evaluating `n` does nothing but compute a value: literals, names, selectors,
/// arithmetic on those, and `os.Getpagesize()`.
fn is_plain(g: &GoFile, n: Node) -> bool {
    match n.kind() {
        "int_literal"
        | "float_literal"
        | "interpreted_string_literal"
        | "raw_string_literal"
        | "identifier"
        | "true"
        | "false"
        | "nil" => true,
        "selector_expression" => n.field("operand").is_some_and(|o| is_plain(g, o)),
        "binary_expression" => {
            n.field("left").is_some_and(|l| is_plain(g, l))
                && n.field("right").is_some_and(|r| is_plain(g, r))
        }
        "unary_expression" | "parenthesized_expression" => n
            .named_child((n.named_child_count() as u32).saturating_sub(1))
            .is_some_and(|c| is_plain(g, c)),
        "call_expression" => g.text(n).replace(' ', "") == "os.Getpagesize()",
        "composite_literal" => true,
        _ => false,
    }
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
