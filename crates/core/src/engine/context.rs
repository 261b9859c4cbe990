//! What an analysis sees of one file (`Ctx`), what it records (`Report`), and what it
//! contributes to linking (`Analysis`).

use std::path::PathBuf;

use tree_sitter::{Node, Tree};

use super::options::Options;
use crate::edit::Edit;
use crate::lang::c::{self, Tok};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// A perf event array defined in a BPF C file.
#[derive(Debug, Clone)]
pub struct MapDef {
    pub name: String,
    pub offset: usize,
    pub kind: MapKind,
    /// The struct a BTF definition names as its value, which bpf2go makes a Go type of
    /// (`link::link_bpf2go_types` keeps it when the ring loses it).
    pub value_type: Option<String>,
}

/// A function-like macro of a BPF C file whose body names the perf event array type: one that
/// may define maps (`bpf::map_macro`), made a ring buffer's by linking.
#[derive(Debug, Clone)]
pub struct MapMacro {
    pub name: String,
    pub params: Vec<String>,
    /// The macro's name, for diagnostics.
    pub offset: usize,
    /// Its replacement text.
    pub body: (usize, usize),
}

/// A call `NAME(args);` at file scope of a BPF C file: a map defined through a macro when
/// `NAME` is a `MapMacro`.
#[derive(Debug, Clone)]
pub struct TopCall {
    pub name: String,
    pub args: Vec<(usize, usize)>,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// `struct { __uint(type, ...); ... } name SEC(".maps");`
    Btf,
    /// `struct bpf_map_def SEC("maps") name = { ... };`
    Legacy,
    /// BCC's `BPF_PERF_OUTPUT(name);`
    Bcc,
}

/// A `bpf_perf_event_output` (or packet output) call.
#[derive(Debug, Clone)]
pub struct OutputSite {
    pub map: String,
    pub map_span: (usize, usize),
    pub offset: usize,
    /// Where a CPU field of the event would be set, for a consumer that reads the CPU
    /// (`bpf::cpu_site`), or where and why it cannot be; None for an output refused anyway.
    pub cpu: Option<Result<CpuSite, (usize, String)>>,
    /// The program's own wrapper the output goes through (`bpf::wrapper`): this site is a
    /// call of it.
    pub wrapper: Option<Wrapper>,
    /// Under `--strategy compat`, a BCC output's event type and the start of its function
    /// (`bpf::cpu_site::event_type`), for the helper the outputs go through.
    pub event: Option<(String, usize)>,
}

/// The program's own wrapper an output goes through, its map a parameter.
#[derive(Debug, Clone)]
pub struct Wrapper {
    pub name: String,
    /// The parameter that is the map, and the output call inside (the range its edit
    /// replaces).
    pub param: String,
    pub call: (usize, usize),
}

/// An output call whose event can carry the CPU: a `struct NAME` sent whole, a local
/// (`&e`) or a pointer (`e`), and a statement before which to set the field.
#[derive(Debug, Clone)]
pub struct CpuSite {
    /// The struct's tag.
    pub tag: String,
    /// The event's name, and whether the migrated code reaches it through a pointer
    /// (`e->cpu`: a pointer, or a stack event the reserve strategy reserved).
    pub var: String,
    pub arrow: bool,
    /// Where the assignment goes (the start of the statement that outputs), and what
    /// follows it there (a newline and the statement's indentation, or a space).
    pub at: usize,
    pub sep: String,
}

/// A sample callback that reads its `cpu` parameter (`user::callbacks`): linking gives the
/// events of `maps` (those of the perf buffers it serves) a CPU field and the callback a
/// local of that name.
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub maps: Vec<String>,
    pub callback: String,
    /// The first read of the CPU, and how many there are.
    pub offset: usize,
    pub uses: usize,
    /// Where the local goes (just after the body's `{`) and what precedes it (a newline and
    /// the indentation of the body's statements, or a space).
    pub at: usize,
    pub lead: String,
    /// The parameter as declared (`int cpu`), and the data parameter's name.
    pub param: String,
    pub data: Option<String>,
    /// The types the body reads the data through: a struct tag, or (`Err`) a type that is
    /// no struct tag (a typedef), with its offset.
    pub read_as: Vec<Result<String, (usize, String)>>,
    /// A BCC Python callback: the statement that gives the CPU back its name, put at `at`
    /// (after the callback's `event = b["events"].event(data)`: BCC lays the event out from
    /// the C struct, so the field is there), in place of the C local.
    pub python: Option<String>,
    /// A libbpf-rs callback: its statement, at the start of its body, reads the CPU's bytes
    /// from the record (`rust::callbacks::CPU_BYTES` until linking knows the field's offset).
    pub rust: bool,
}

/// A `perf_buffer__new` whose map is known.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub map: String,
    pub offset: usize,
    /// Pages per CPU, when the page count is a constant the tool can read.
    pub pages: Option<u64>,
    /// The reader keeps its lost-sample callback, fed from a counter the BPF side must add
    /// (`lost_counter`).
    pub lost_counted: bool,
    /// `map` is the Go field bpf2go made of the C map's name (`Events` for `events`):
    /// linking finds the C name (`lang::go::bpf2go_identifier`).
    pub bpf2go: bool,
}

/// What one file contributes to linking.
#[derive(Debug, Default)]
pub struct Analysis {
    pub maps: Vec<MapDef>,
    pub outputs: Vec<OutputSite>,
    pub consumers: Vec<Consumer>,
    /// Sample callbacks that read the CPU.
    pub cpu_uses: Vec<CpuUse>,
    /// File names (no directory) of the BPF sources this loader names: `x.bpf.c` for a
    /// skeleton `x.skel.h` or an object `x.bpf.o`.
    pub bpf_sources: Vec<String>,
    /// Files this file includes with `#include "..."`, as written.
    pub includes: Vec<String>,
    /// C files a BCC tool loads with `BPF(src_file=...)`.
    pub bcc_sources: Vec<PathBuf>,
    /// Parse errors in the file as it is (see `parse_errors`): the migrated text may not have
    /// more.
    pub errors_before: usize,
    pub edits: Vec<Edit>,
    pub diags: Vec<Diagnostic>,
    /// Per-CPU arrays the reserve strategy deletes, with the deletion edit's start and the
    /// name's offset: kept if another file of the program names them (a loader sizing the
    /// map, say).
    pub heap_maps: Vec<(String, usize, usize)>,
    /// Parse errors in the text `edits` make, counted by an incremental re-parse while the
    /// analysis tree was alive (`check_ahead`); None if not counted, or if linking changed the
    /// edits since.
    pub errors_ahead: Option<usize>,
    /// Macros of this file that may define perf event arrays, and its file-scope calls.
    pub map_macros: Vec<MapMacro>,
    pub top_calls: Vec<TopCall>,
}

/// What analysis code sees of one parsed file.
pub struct Ctx<'a, 't> {
    pub file: &'a SourceFile,
    pub tree: &'t Tree,
    /// The named nodes and MISSING ones (`c::named_descendants`), in document order: kinds
    /// are looked up by their named ids (`lang::kind_id`), so punctuation and keywords, about
    /// half of a tree, are left out.
    pub nodes: &'a [Node<'t>],
    /// Nodes by kind id: analysis asks for one kind at a time, many times over.
    by_kind: Vec<Vec<Node<'t>>>,
    /// Spans of ERROR and MISSING nodes.
    pub(super) errors: Vec<(usize, usize)>,
    toks: &'a [(Tok, usize, usize)],
    pub opts: &'a Options,
    pub edits: Vec<Edit>,
    pub diags: Vec<Diagnostic>,
    /// The format fields of a BCC string that Python's `%` fills in (`bcc_format`): none
    /// elsewhere.
    pub format_fields: Vec<super::bcc_format::FormatField>,
}

impl<'a, 't> Ctx<'a, 't> {
    pub fn new(
        file: &'a SourceFile,
        tree: &'t Tree,
        nodes: &'a [Node<'t>],
        toks: &'a [(Tok, usize, usize)],
        opts: &'a Options,
    ) -> Self {
        let mut by_kind: Vec<Vec<Node<'t>>> = vec![Vec::new(); tree.language().node_kind_count()];
        for n in nodes {
            if let Some(v) = by_kind.get_mut(usize::from(n.kind_id())) {
                v.push(*n);
            }
        }
        Ctx {
            file,
            tree,
            nodes,
            by_kind,
            errors: c::error_nodes(tree.root_node()),
            toks,
            opts,
            edits: Vec::new(),
            diags: Vec::new(),
            format_fields: Vec::new(),
        }
    }

    /// The name the C at `s..e` gives a table: its text, for an identifier; for one made
    /// of format fields (`%s`, `%s_events`), the text with each field's argument as
    /// `bcc_format::identity` knows it. None when a field's argument is not known so.
    pub fn name_at(&self, s: usize, e: usize) -> Option<String> {
        let t = &self.src()[s..e];
        if self.format_fields.is_empty() || c::is_ident(t) {
            return c::is_ident(t).then(|| t.to_string());
        }
        let mut out = String::new();
        let mut i = s;
        while i < e {
            if let Some(f) = self.format_fields.iter().find(|f| f.at == i) {
                out.push_str(f.name.as_deref()?);
                i = f.end;
                continue;
            }
            let ch = self.src()[i..].chars().next()?;
            if !(ch.is_ascii_alphanumeric() || ch == '_') {
                return None;
            }
            out.push(ch);
            i += ch.len_utf8();
        }
        Some(out)
    }

    pub fn src(&self) -> &'a str {
        &self.file.text
    }

    /// The nodes of one kind, in document order.
    pub fn of_kind(&self, kind: &str) -> Vec<Node<'t>> {
        let id = crate::lang::kind_id(&self.tree.language(), kind);
        self.by_kind
            .get(usize::from(id))
            .cloned()
            .unwrap_or_default()
    }

    /// `node` and the nodes below it, as a filter of all nodes by byte range would give:
    /// `nodes` is in document order, so they lie in the run that starts within the range.
    pub fn nodes_within(&self, node: Node<'t>) -> Vec<Node<'t>> {
        let (s, e) = (node.start_byte(), node.end_byte());
        let lo = self.nodes.partition_point(|n| n.start_byte() < s);
        let hi = self.nodes.partition_point(|n| n.start_byte() <= e);
        self.nodes[lo..hi]
            .iter()
            .copied()
            .filter(|n| n.end_byte() <= e)
            .collect()
    }

    /// The nodes of several kinds, in document order (an ancestor before its descendants).
    pub fn of_kinds(&self, kinds: &[&str]) -> Vec<Node<'t>> {
        let mut out: Vec<Node<'t>> = kinds.iter().flat_map(|k| self.of_kind(k)).collect();
        out.sort_by_key(|n| (n.start_byte(), std::cmp::Reverse(n.end_byte())));
        out
    }

    /// The first identifier that `is_trigger` picks and that lies in code that does not
    /// parse, as a byte range.
    pub fn trigger_in_error(&self, is_trigger: impl Fn(&str) -> bool) -> Option<(usize, usize)> {
        if self.errors.is_empty() {
            return None;
        }
        let src = self.src();
        self.toks
            .iter()
            .find(|&&(t, s, e)| {
                t == Tok::Ident
                    && is_trigger(&src[s..e])
                    && self.errors.iter().any(|&(a, b)| a <= s && e <= b)
            })
            .map(|&(_, s, e)| (s, e))
    }

    /// Whether the code in `start..end` holds a parse error.
    pub fn has_error_in(&self, start: usize, end: usize) -> bool {
        c::has_error_in(&self.errors, start, end)
    }

    pub fn root(&self) -> Node<'t> {
        self.tree.root_node()
    }

    pub fn tokens(&self) -> &'a [(Tok, usize, usize)] {
        self.toks
    }
}

/// Where an analysis records its diagnostics: the file they are about, and the list.
pub trait Report {
    fn report_to(&mut self) -> (&SourceFile, &mut Vec<Diagnostic>);

    /// A diagnostic of `rule`, with the severity of its class: a refusal (the program is
    /// left for a person), a warning or a note.
    fn diag(&mut self, offset: usize, rule: Rule, msg: impl Into<String>, help: Option<&str>) {
        let (file, diags) = self.report_to();
        let mut d = Diagnostic::at(file, offset, rule, msg);
        if let Some(h) = help {
            d = d.help(h);
        }
        diags.push(d);
    }

    fn report(&mut self, offset: usize, rule: Rule, msg: impl Into<String>, help: &str) {
        self.diag(offset, rule, msg, Some(help));
    }
}

impl Report for Ctx<'_, '_> {
    fn report_to(&mut self) -> (&SourceFile, &mut Vec<Diagnostic>) {
        (self.file, &mut self.diags)
    }
}

/// Reports every identifier that names one of the perf maps `names` outside the `allowed`
/// spans (their definitions and output calls): a use the migration cannot carry over (a
/// wrapper taking the map as an argument, a lookup, a macro).
pub fn other_map_uses(
    cx: &mut Ctx,
    names: &[String],
    allowed: &[(usize, usize)],
    message: &dyn Fn(&str) -> String,
    help: &str,
) {
    for n in cx.of_kind("identifier") {
        // A name of a template's format fields (`%s`) is the argument that fills it.
        let Some(t) = cx.name_at(n.start_byte(), n.end_byte()) else {
            continue;
        };
        if names.contains(&t)
            && !allowed
                .iter()
                .any(|&(s, e)| n.start_byte() >= s && n.end_byte() <= e)
        {
            cx.report(n.start_byte(), Rule::MapOtherUse, message(&t), help);
        }
    }
}

/// Whether these diagnostics keep their program from migrating (manual work, or an error).
pub(super) fn refuses(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.severity.refuses())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tree_sitter::Node;

    use super::*;

    /// `nodes_within` finds what filtering every node by byte range finds, for every
    /// function body and statement of a loader and a BPF program (error recovery included).
    #[test]
    fn nodes_within_is_a_range_filter() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        for f in [
            "execsnoop/input/execsnoop.c",
            "reserve_procwatch/input/procwatch.bpf.c",
            "refuse_raw_consumer/input/refuse_raw_consumer.c",
        ] {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            // Unbalanced, so that ERROR and MISSING nodes are among them.
            let text = text.replacen('}', "", 3);
            let file = SourceFile::new(root.join(f), f.into(), text);
            let toks = c::lex(&file.text, 0..file.text.len());
            let parsed = c::parse_auto(&file.text, Some(&[0..file.text.len()])).unwrap();
            // The list the analyses get (named nodes and MISSING ones).
            let nodes = c::named_descendants(parsed.tree.root_node());
            let opts = Options::default();
            let cx = Ctx::new(&file, &parsed.tree, &nodes, &toks, &opts);
            for n in nodes.iter().filter(|n| {
                matches!(
                    n.kind(),
                    "compound_statement" | "expression_statement" | "ERROR"
                ) || n.is_missing()
            }) {
                let want: Vec<Node> = nodes
                    .iter()
                    .copied()
                    .filter(|m| m.start_byte() >= n.start_byte() && m.end_byte() <= n.end_byte())
                    .collect();
                assert_eq!(cx.nodes_within(*n), want, "{f}: {}", n.kind());
            }
        }
    }
}
