//! The migration engine: analyse every file, link the sites that touch one perf map into a
//! program, and keep the edits of the programs that can be migrated whole.
//!
//! Each file analysis plans its edits as if its program will migrate, and records refusals
//! (`Severity::Manual`) where it cannot. Linking then groups files into programs (a BPF object
//! and every consumer of its maps); a program with any refusal keeps none of its edits.

pub mod bcc;
pub mod bpf;
pub mod python;
pub mod reserve;
pub mod rust;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tree_sitter::{Node, Tree};

use crate::edit::{self, Edit};
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::report::{Diagnostic, Severity};
use crate::rules::Rule;
use crate::source::SourceFile;

#[derive(Debug, Clone)]
pub struct Options {
    /// Ring buffer size in bytes: a power of two and a multiple of 4096.
    pub ring_size: u64,
    /// The user asked for this size (rather than the default).
    pub ring_size_given: bool,
    pub rules: RuleFilter,
    pub strategy: Strategy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring_size: 256 * 1024,
            ring_size_given: false,
            rules: RuleFilter::default(),
            strategy: Strategy::Copy,
        }
    }
}

/// How an event gets into the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// `bpf_ringbuf_output`: the event is built where it was and copied in.
    #[default]
    Copy,
    /// `bpf_ringbuf_reserve`/`submit`: the event is built in the ring (see `reserve`).
    Reserve,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copy" => Ok(Strategy::Copy),
            "reserve" => Ok(Strategy::Reserve),
            _ => Err(format!("`{s}` is not a strategy: copy or reserve")),
        }
    }
}

/// A ring buffer size as the command lines take it: bytes, or `256K`, `1M`; a power of two,
/// at least 4096.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1024),
        Some((i, 'M' | 'm')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes (e.g. 262144, 256K, 1M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    check_ring_size(bytes)?;
    Ok(bytes)
}

/// `--select` and `--ignore`: rule ids or prefixes ending in `*` (`bcc-*`). A program is
/// migrated only if every rule it needs is selected: a partial migration would break it.
#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    pub select: Vec<String>,
    pub ignore: Vec<String>,
}

impl RuleFilter {
    fn matches(pat: &str, id: &str) -> bool {
        match pat.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => pat == id,
        }
    }

    pub fn allows(&self, rule: Rule) -> bool {
        let id = rule.id();
        (self.select.is_empty() || self.select.iter().any(|p| Self::matches(p, id)))
            && !self.ignore.iter().any(|p| Self::matches(p, id))
    }

    /// Every pattern names a rule or, with `*`, a prefix of one; else the pattern that names
    /// none.
    pub fn check(&self) -> Result<(), String> {
        let known = |p: &String| {
            Rule::ALL
                .iter()
                .any(|r| r.in_catalogue() && Self::matches(p, r.id()))
        };
        match self.select.iter().chain(&self.ignore).find(|p| !known(p)) {
            Some(p) => Err(format!("no rule `{p}`; `bpf-migrate rules` lists them")),
            None => Ok(()),
        }
    }
}

/// Checks a ring buffer size the way the kernel does (libbpf >= 0.8 rounds up; other loaders
/// do not, so the tool never writes a size that needs rounding).
pub fn check_ring_size(bytes: u64) -> Result<(), String> {
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "ring buffer size {bytes} must be a power of two and a multiple of 4096 (e.g. 262144 or 256K)"
        ));
    }
    Ok(())
}

/// The C expression written for a ring buffer size: `256 * 1024`, `4 * 1024 * 1024`.
pub fn size_expr(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} * 1024 * 1024", bytes >> 20)
    } else {
        format!("{} * 1024", bytes >> 10)
    }
}

/// A perf event array defined in a BPF C file.
#[derive(Debug, Clone)]
pub struct MapDef {
    pub name: String,
    pub offset: usize,
    pub kind: MapKind,
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
}

/// A `perf_buffer__new` whose map is known.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub map: String,
    pub offset: usize,
    /// Pages per CPU, when the page count is a constant the tool can read.
    pub pages: Option<u64>,
}

/// What one file contributes to linking.
#[derive(Debug, Default)]
pub struct Analysis {
    pub maps: Vec<MapDef>,
    pub outputs: Vec<OutputSite>,
    pub consumers: Vec<Consumer>,
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
    errors: Vec<(usize, usize)>,
    toks: &'a [(Tok, usize, usize)],
    pub opts: &'a Options,
    pub edits: Vec<Edit>,
    pub diags: Vec<Diagnostic>,
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
        }
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

    pub fn size_expr(&self) -> String {
        size_expr(self.opts.ring_size)
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
    let src = cx.src();
    for n in cx.of_kind("identifier") {
        let t = c::text(n, src);
        if names.iter().any(|m| m == t)
            && !allowed
                .iter()
                .any(|&(s, e)| n.start_byte() >= s && n.end_byte() <= e)
        {
            cx.report(n.start_byte(), Rule::MapOtherUse, message(t), help);
        }
    }
}

/// Strings whose presence makes a C file worth parsing.
pub const C_TRIGGERS: &[&str] = &[
    "PERF_EVENT_ARRAY",
    "perf_event_output",
    "bpf_skb_output",
    "bpf_xdp_output",
    "perf_buffer",
    "BPF_PERF_OUTPUT",
    "perf_submit",
    "kprobe_poll",
    "PerfBuffer",
];

/// A searcher for fixed words. Leftmost-first, not the standard semantics: only then does
/// aho-corasick search with SIMD (Teddy), several times faster on the megabytes of a batch run.
fn word_finder(words: &[&str]) -> aho_corasick::AhoCorasick {
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(words)
        .expect("fixed patterns")
}

/// Whether `text` holds any of `C_TRIGGERS`: one pass over the text, whatever their number
/// (it runs on every file, vmlinux.h among them).
pub fn has_trigger(text: &str) -> bool {
    static FINDER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    FINDER
        .get_or_init(|| word_finder(C_TRIGGERS))
        .is_match(text)
}

/// Whether C text uses (not merely declares) a perf buffer API: a cheap token scan that keeps
/// big headers (vmlinux.h, with its enumerator BPF_MAP_TYPE_PERF_EVENT_ARRAY and the kernel's
/// struct perf_buffer; bpf_helper_defs.h, declaring the helpers) from being parsed.
/// Above this size, `c_needs_parse` looks only around the trigger words first.
const LARGE_FILE: usize = 256 * 1024;

/// `c_needs_parse` on the lines around each trigger word (the two before it, for an
/// enumerator's comma): false only if every mention is an enumerator or a helper declaration.
/// A window that starts inside a comment can only make a mention look like code, which means
/// a parse, never a skipped trigger.
fn c_needs_parse_around_triggers(text: &str) -> bool {
    static FINDER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| word_finder(PARSE_TRIGGERS));
    let ident = |b: u8| b == b'_' || b.is_ascii_alphanumeric();
    let bytes = text.as_bytes();
    finder.find_iter(text).any(|m| {
        let at = m.start();
        if at > 0 && ident(bytes[at - 1]) {
            return false;
        }
        let mut start = crate::source::line_start(text, at);
        for _ in 0..2 {
            if start > 0 {
                start = crate::source::line_start(text, start - 1);
            }
        }
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let toks = c::lex(text, start..end);
        c_needs_parse_in(text, &toks, false)
    })
}

/// Identifiers that make a C file worth parsing where they stand in code (one ending in `_`
/// is a prefix). `c_needs_parse` tests tokens against them; the large-file gate finds them.
const PARSE_TRIGGERS: &[&str] = &[
    "BPF_MAP_TYPE_PERF_EVENT_ARRAY",
    "bpf_perf_event_output",
    "bpf_skb_output",
    "bpf_xdp_output",
    "perf_buffer_",
    "BPF_PERF_OUTPUT",
    "perf_submit",
    "perf_submit_skb",
];

pub fn c_needs_parse(text: &str, toks: &[(Tok, usize, usize)]) -> bool {
    c_needs_parse_in(text, toks, true)
}

/// What an open brace opened, in `c_needs_parse_in`'s scan.
#[derive(Clone, Copy, PartialEq)]
enum Body {
    Enum,
    Struct,
    /// `extern "C" {`: still file scope.
    Extern,
    Other,
}

/// `c_needs_parse` on the whole file's tokens (`whole`), or on a window of lines where the
/// nesting is unknown and only the rules that need no context apply. With the whole file and
/// balanced brackets, declarations are told from uses: enumerators, prototypes and typedefs
/// at file scope, struct tags, and struct members without parentheses (a BTF map's
/// `__uint(type, ...)` has them).
fn c_needs_parse_in(text: &str, toks: &[(Tok, usize, usize)], whole: bool) -> bool {
    let tok = |k: Option<usize>| {
        k.and_then(|k| toks.get(k))
            .map(|&(_, s, e)| &text[s..e])
            .unwrap_or("")
    };
    // The nearest token before or after `k` that is not a comment.
    let prev = |k: usize| (0..k).rev().find(|&j| toks[j].0 != Tok::Comment);
    let next = |k: usize| (k + 1..toks.len()).find(|&j| toks[j].0 != Tok::Comment);
    let is_trigger = |w: &str| {
        PARSE_TRIGGERS.iter().any(|t| match t.strip_suffix('_') {
            // A prefix: `perf_buffer_` stands for the whole `perf_buffer__*` API.
            Some(_) => w.starts_with(t),
            None => w == *t,
        })
    };
    // The nesting is trusted only if brackets balance and never close more than they opened
    // (preprocessor branches can unbalance them).
    let nesting_ok = whole && {
        let mut depth = 0isize;
        let mut ok = true;
        for &(t, _, _) in toks {
            match t {
                Tok::Punct(b'{' | b'(') => depth += 1,
                Tok::Punct(b'}' | b')') => depth -= 1,
                _ => {}
            }
            ok &= depth >= 0;
        }
        ok && depth == 0
    };
    let mut braces: Vec<Body> = Vec::new();
    let mut parens = 0usize;
    let mut k = 0;
    while k < toks.len() {
        let (t, s, e) = toks[k];
        let (p, n) = (prev(k), next(k));
        if nesting_ok && parens == 0 && t == Tok::Ident {
            // A whole declaration, skipped to its `;`.
            let skip = match braces.iter().rfind(|&&b| b != Body::Extern) {
                None if &text[s..e] == "typedef" => declaration_end(toks, k),
                None if tok(n) == "(" && is_prototype_name(text, toks, p) => {
                    declaration_end(toks, k)
                }
                Some(Body::Struct) if matches!(tok(p), ";" | "{") => member_end(toks, k),
                _ => None,
            };
            // Only the perf buffer API's own names are declared so; a map type or a helper
            // between parentheses is a macro's argument (`static DEFINE_MAP(events,
            // BPF_MAP_TYPE_PERF_EVENT_ARRAY);`), and so is an API function standing alone
            // as a parameter (`static DEFINE_CLEANUP(struct perf_buffer *, perf_buffer__free);`).
            let skip = skip.filter(|&end| {
                (k..end).all(|j| {
                    let (t, s, e) = toks[j];
                    let w = &text[s..e];
                    let bare =
                        matches!(tok(prev(j)), "(" | ",") && matches!(tok(next(j)), "," | ")");
                    t != Tok::Ident
                        || !is_trigger(w)
                        || (w.starts_with("perf_buffer_")
                            && !(w.starts_with("perf_buffer__") && bare))
                })
            });
            if let Some(end) = skip {
                k = end + 1;
                continue;
            }
        }
        match t {
            Tok::Punct(b'{') => {
                let tag = p.filter(|&j| toks[j].0 == Tok::Ident).and_then(prev);
                let opener = |kw: &[&str]| kw.contains(&tok(p)) || kw.contains(&tok(tag));
                braces.push(if tok(p) == "\"C\"" && tok(p.and_then(prev)) == "extern" {
                    Body::Extern
                } else if opener(&["enum"]) {
                    Body::Enum
                } else if opener(&["struct", "union"]) {
                    Body::Struct
                } else {
                    Body::Other
                });
            }
            Tok::Punct(b'}') => {
                braces.pop();
            }
            Tok::Punct(b'(') => parens += 1,
            Tok::Punct(b')') => parens = parens.saturating_sub(1),
            Tok::Ident if is_trigger(&text[s..e]) => {
                let before = |j: usize| tok(k.checked_sub(j));
                // `X = 4,` in an enum; `(*bpf_perf_event_output)(...)` or
                // `(* const bpf_perf_event_output)(...)` declaring a helper.
                let enumerator = tok(n) == "=" && matches!(tok(p), "," | "{");
                let helper_decl = (before(1) == "*" && before(2) == "(")
                    || (before(1) == "const" && before(2) == "*" && before(3) == "(");
                let declared = nesting_ok
                    && parens == 0
                    && (
                        // Any enumerator, in an enum body.
                        (braces.last() == Some(&Body::Enum)
                            && matches!(tok(p), "," | "{")
                            && matches!(tok(n), "," | "}" | "="))
                        // A struct tag: `struct perf_buffer_opts {` or `;`.
                        || (matches!(tok(p), "struct" | "union" | "enum")
                            && matches!(tok(n), "{" | ";"))
                        // The name a `#define` defines.
                        || (before(1) == "define" && before(2) == "#")
                    );
                if !(enumerator || helper_decl || declared) {
                    return true;
                }
            }
            _ => {}
        }
        k += 1;
    }
    false
}

/// Whether the token after `p` names a function that a prototype declares: the token `p`
/// before it is `*` or a type's identifier, not on a preprocessor line (`#endif` then
/// `BPF_PERF_OUTPUT(events);` is a use).
fn is_prototype_name(text: &str, toks: &[(Tok, usize, usize)], p: Option<usize>) -> bool {
    const NOT_A_TYPE: &[&str] = &[
        "return",
        "else",
        "do",
        "case",
        "goto",
        "sizeof",
        "typeof",
        "__typeof__",
        "defined",
    ];
    let Some(&(t, s, e)) = p.and_then(|p| toks.get(p)) else {
        return false;
    };
    let type_before = match t {
        Tok::Punct(b'*') => true,
        Tok::Ident => !NOT_A_TYPE.contains(&&text[s..e]),
        _ => false,
    };
    type_before && !on_preprocessor_line(text, s)
}

/// Whether `at` is on a `#` line or on a line continuing one.
fn on_preprocessor_line(text: &str, at: usize) -> bool {
    let mut line = crate::source::line_start(text, at);
    loop {
        // A byte-order mark or block comments may come before the `#`.
        let mut rest = text[line..].trim_start_matches('\u{feff}').trim_start();
        while let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        }
        if rest.starts_with('#') {
            return true;
        }
        // A backslash continues a line even with spaces after it (GCC warns, but does).
        // Only that line's own trailing blanks: a continued line may be empty, and ends there.
        if line == 0
            || !text[..line - 1]
                .trim_end_matches([' ', '\t', '\r'])
                .ends_with('\\')
        {
            return false;
        }
        line = crate::source::line_start(text, line - 1);
    }
}

/// The `;` that ends the declaration starting at token `k` (a prototype's parameters and
/// attributes, a typedef), or None when a body or an initializer comes first.
fn declaration_end(toks: &[(Tok, usize, usize)], k: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, &(t, _, _)) in toks.iter().enumerate().skip(k) {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.checked_sub(1)?,
            Tok::Punct(b';') if depth == 0 => return Some(j),
            Tok::Punct(b'{' | b'}' | b'=') => return None,
            _ => {}
        }
    }
    None
}

/// The `;` that ends the struct member declared from token `k`, if it has no parentheses,
/// braces or initializer (`perf_buffer_sample_fn sample_cb;`).
fn member_end(toks: &[(Tok, usize, usize)], k: usize) -> Option<usize> {
    for (j, &(t, _, _)) in toks.iter().enumerate().skip(k) {
        match t {
            Tok::Punct(b';') => return Some(j),
            Tok::Punct(b'(' | b')' | b'{' | b'}' | b'=') => return None,
            _ => {}
        }
    }
    None
}

/// Whether a file's text may hold anything to migrate or report: a trigger string, and, for
/// a large C header (vmlinux.h), a trigger that is not just an enumerator or a helper
/// declaration (told from a few lines around each mention, without lexing megabytes), and
/// for Rust, a PerfBuffer name in code. Discovery asks before keeping a file (one it turns
/// down is counted as scanned, never held); `analyze` asks again, for callers that skip it.
pub fn worth_analysing(path: &Path, text: &str) -> bool {
    let c_like = !is_python(path) && !is_rust(path);
    has_trigger(text)
        && !(c_like
            && (LARGE_FILE..=MAX_PARSED_BYTES).contains(&text.len())
            && !c_needs_parse_around_triggers(text))
        // Rust that names PerfBuffer only in comments and literals (this tool's own source).
        && (!is_rust(path) || rust::names_perf_buffer_in_code(text))
}

/// Analyses one C file that `worth_analysing` kept; its parse comes back when `check_ahead`
/// may want it.
fn analyze_c(file: &SourceFile, opts: &Options) -> (Analysis, Option<Kept>) {
    let mut a = Analysis::default();
    let range = c_range(&file.text);
    let toks = c::lex(&file.text, range.clone());
    // A block comment running to the end of the file hides whatever follows it.
    if let Some(&(Tok::Comment, s, e)) = toks.last()
        && file.text[s..e].starts_with("/*")
        && !file.text[s..e].ends_with("*/")
        && has_trigger(&file.text[s..e])
    {
        a.diags.push(
            Diagnostic::at(
                file,
                s,
                Rule::ParseError,
                "unterminated comment: everything after it is part of it",
            )
            .help("close the comment; the file is left untouched"),
        );
        return (a, None);
    }
    if !c_needs_parse(&file.text, &toks) {
        return (a, None);
    }
    if let Some(deep) = too_deep(file) {
        return (deep, None);
    }
    let parsed = c::parse_auto_lexed(&file.text, range, &toks);
    let Some(parsed) = parsed else {
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            "the C parser gave up on this file",
        ));
        return (a, None);
    };
    let nodes = c::named_descendants(parsed.tree.root_node());
    let mut cx = Ctx::new(file, &parsed.tree, &nodes, &toks, opts);
    a.errors_before = cx.errors.len();
    if implements_perf_buffer_api(&cx) {
        return (a, None);
    }
    // A trigger inside code that does not parse cannot be migrated, nor left silently.
    if let Some((s, e)) = cx.trigger_in_error(|w| C_TRIGGERS.iter().any(|t| w.contains(t))) {
        a.diags.push(
            Diagnostic::at(
                file,
                s,
                Rule::ParseError,
                format!(
                    "cannot parse the C code around `{}`; this file's program is left untouched",
                    &file.text[s..e]
                ),
            )
            .help("check for unbalanced braces or parentheses, or macros that hide C syntax"),
        );
        return (a, None);
    }
    bpf::analyze(&mut cx, &mut a);
    user::analyze(&mut cx, &mut a);
    if bcc::has_trigger(&file.text) {
        bcc::analyze(&mut cx, &mut a);
    }
    for n in c::of_kind(&nodes, "preproc_include") {
        if let Some(p) = n.field("path")
            && matches!(p.kind(), "string_literal" | "system_lib_string")
        {
            a.includes.push(
                c::text(p, &file.text)
                    .trim_matches(['"', '<', '>'])
                    .to_string(),
            );
        }
    }
    let Ctx { edits, diags, .. } = cx;
    a.edits = edits;
    a.diags.extend(diags);
    drop(nodes);
    let kept = wants_check_ahead(&a).then_some(Kept::C(parsed));
    (a, kept)
}

/// The result of a run: every file's new text (where it changed) and every diagnostic.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub diags: Vec<Diagnostic>,
    pub stats: Stats,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub file: usize,
    /// Changes with the same program number belong to one program: written all or none.
    pub program: usize,
    pub new_text: String,
    pub edits: Vec<Edit>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub files_scanned: usize,
    pub files_changed: usize,
    pub programs_migrated: usize,
    pub programs_manual: usize,
    /// Programs left alone because a rule they need is not selected (`--select`/`--ignore`).
    pub programs_deselected: usize,
}

struct Dsu(Vec<usize>);

impl Dsu {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut y = x;
        while self.0[y] != r {
            let n = self.0[y];
            self.0[y] = r;
            y = n;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The files of a run by file name and by path, built once for linking.
struct FileIndex<'a> {
    by_name: HashMap<String, Vec<usize>>,
    by_path: HashMap<&'a Path, usize>,
}

impl<'a> FileIndex<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_path = HashMap::new();
        for (j, f) in files.iter().enumerate() {
            by_name.entry(file_name(&f.path)).or_default().push(j);
            by_path.insert(f.path.as_path(), j);
        }
        FileIndex { by_name, by_path }
    }
}

/// Which of `candidates` file `k` includes (`includes` as written in it): resolved against
/// its directory first; by file name only when no path matches (an include path of the
/// build), so that copies of one tool in several directories stay apart.
fn included_among(
    files: &[SourceFile],
    includes: &[String],
    k: usize,
    candidates: &[usize],
) -> Vec<usize> {
    // By file name first (cheap, and every path match is one), then by path among those.
    let names: Vec<&std::ffi::OsStr> = includes
        .iter()
        .filter_map(|inc| Path::new(inc).file_name())
        .collect();
    let named: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&j| {
            files[j]
                .path
                .file_name()
                .is_some_and(|f| names.contains(&f))
        })
        .collect();
    let dir = dir_of(&files[k].path);
    let exact: Vec<usize> = named
        .iter()
        .copied()
        .filter(|&j| {
            includes
                .iter()
                .any(|inc| dir.join(inc).components().collect::<PathBuf>() == files[j].path)
        })
        .collect();
    if exact.is_empty() { named } else { exact }
}

/// The files user-space file `i` names as its BPF source: by path (`src_file`), or by file
/// name (`x.bpf.c` from a skeleton), those in its own directory (or its `bpf/`) first, since a
/// collection of tools may hold several programs of one name.
fn named_sources(files: &[SourceFile], index: &FileIndex, a: &Analysis, i: usize) -> Vec<usize> {
    let mut named: Vec<usize> = a
        .bpf_sources
        .iter()
        .flat_map(|s| index.by_name.get(s.as_str()).into_iter().flatten().copied())
        .chain(
            a.bcc_sources
                .iter()
                .filter_map(|p| index.by_path.get(p.as_path()).copied()),
        )
        .collect();
    named.sort_unstable();
    named.dedup();
    let dir = dir_of(&files[i].path);
    let near: Vec<usize> = named
        .iter()
        .copied()
        .filter(|&j| {
            let d = dir_of(&files[j].path);
            d == dir || (d.file_name() == Some("bpf".as_ref()) && dir_of(d) == dir)
        })
        .collect();
    if near.is_empty() { named } else { near }
}

/// The directory of `p` (borrowed: linking compares directories of every pair of files that
/// share a name, and a collection of tools repeats names).
fn dir_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

/// Migrates a set of files: analysis, linking, and the edits of every program that can move
/// whole. `files` should already hold each program's partner files (see `discover`).
pub fn is_rust(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "rs")
}

pub fn is_python(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "py")
}

/// Files with a trigger larger than this are reported, not parsed (a generated file, most
/// likely; a parse would take seconds and hundreds of MiB).
const MAX_PARSED_BYTES: usize = 16 << 20;

/// Bracket nesting beyond which a file is not parsed: syn and the analyses recurse.
const MAX_NESTING: usize = 256;

fn nesting(text: &str) -> usize {
    // A table and no branches: this runs over every file that is parsed.
    const STEP: [i32; 256] = {
        let mut t = [0; 256];
        (t[b'(' as usize], t[b'[' as usize], t[b'{' as usize]) = (1, 1, 1);
        (t[b')' as usize], t[b']' as usize], t[b'}' as usize]) = (-1, -1, -1);
        t
    };
    let (mut depth, mut max) = (0i32, 0i32);
    for &b in text.as_bytes() {
        depth = (depth + STEP[usize::from(b)]).max(0);
        max = max.max(depth);
    }
    max as usize
}

/// Analyses one file of any kind bpf-migrate reads.
pub fn analyze(file: &SourceFile, opts: &Options) -> Analysis {
    let (mut a, kept) = analyze_keeping(file, opts);
    if let Some(k) = kept {
        a.errors_ahead = check_ahead(file, &a, &k);
    }
    a
}

/// A file's parse, kept past its analysis for `check_ahead`.
pub enum Kept {
    C(c::CParse),
    Python(tree_sitter::Tree),
    /// The byte ranges of a Rust file's top-level items (syn keeps no tree worth re-using).
    Rust(Vec<std::ops::Range<usize>>),
}

/// Whether `check_ahead` is worth its re-parse: the file has edits and needs no manual work
/// (a program with manual work keeps none of its edits).
pub fn wants_check_ahead(a: &Analysis) -> bool {
    !a.edits.is_empty() && !refuses(&a.diags)
}

/// Whether these diagnostics keep their program from migrating (manual work, or an error).
fn refuses(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.severity.refuses())
}

/// `analyze` without `check_ahead`: the parse comes back with the analysis when the check
/// may be wanted, for the caller to make or skip.
pub fn analyze_keeping(file: &SourceFile, opts: &Options) -> (Analysis, Option<Kept>) {
    if !worth_analysing(&file.path, &file.text) {
        return (Analysis::default(), None);
    }
    if file.text.len() > MAX_PARSED_BYTES {
        let mut a = Analysis::default();
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            format!(
                "{} MiB is more than bpf-migrate parses ({} MiB); the file is left untouched",
                file.text.len() >> 20,
                MAX_PARSED_BYTES >> 20
            ),
        ));
        return (a, None);
    }
    if is_python(&file.path) {
        match too_deep(file) {
            Some(a) => (a, None),
            None => python::analyze(file, opts),
        }
    } else if is_rust(&file.path) {
        match too_deep(file) {
            Some(a) => (a, None),
            None => rust::analyze(file),
        }
    } else {
        // After its cheaper gates: most C files with a trigger word are not parsed.
        analyze_c(file, opts)
    }
}

/// Whether a file's analysis makes its group a program: edits planned, a perf map defined,
/// or a reader of one.
fn is_program_part(a: &Analysis) -> bool {
    !a.edits.is_empty() || !a.maps.is_empty() || !a.consumers.is_empty()
}

/// What linking makes of one program (a group of files, by index): refused (a diagnostic
/// that refuses), deselected (an edit of a rule `--select`/`--ignore` leaves out).
struct Verdict<'g> {
    members: &'g [usize],
    refused: bool,
    deselected: bool,
}

/// Whether the file defines a `perf_buffer__*` function: it is the API's implementation
/// (libbpf.c, vendored as a submodule in many repositories), which uses perf event arrays
/// and perf buffers in its own terms. Nothing there is to migrate or report, as with the
/// prototypes in libbpf.h.
fn implements_perf_buffer_api(cx: &Ctx) -> bool {
    let src = cx.src();
    cx.of_kind("function_definition").into_iter().any(|f| {
        let mut d = f.field("declarator");
        while let Some(n) = d {
            if n.kind() == "identifier" {
                return c::text(n, src).starts_with("perf_buffer__");
            }
            d = n.field("declarator").or_else(|| n.named_child(0));
        }
        false
    })
}

/// Brackets nested past what the parsers take: an error instead of a parse.
fn too_deep(file: &SourceFile) -> Option<Analysis> {
    (nesting(&file.text) > MAX_NESTING).then(|| {
        let mut a = Analysis::default();
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            format!("brackets nest deeper than {MAX_NESTING} levels; the file is left untouched"),
        ));
        a
    })
}

pub fn migrate(files: &[SourceFile], opts: &Options) -> Outcome {
    migrate_with_progress(files, opts, &|| {})
}

/// As `migrate`, calling `tick` once a file is analysed (files are analysed in parallel;
/// results come out in the same order whatever the thread count).
pub fn migrate_with_progress(
    files: &[SourceFile],
    opts: &Options,
    tick: &(dyn Fn() + Sync),
) -> Outcome {
    use rayon::prelude::*;
    // Files that share a directory and a name up to the first dot (x.c, x.bpf.c, x.h, x.py)
    // are analysed together, so that the parse-error counts ahead are skipped for a program
    // one of whose files needs manual work: none of its edits will be kept. Only a skip
    // depends on the guess; a program that is linked otherwise is counted in full later.
    let mut groups: HashMap<(&Path, &str), Vec<usize>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let stem = name.split('.').next().unwrap_or(name);
        groups
            .entry((f.path.parent().unwrap_or(Path::new("")), stem))
            .or_default()
            .push(i);
    }
    // Largest first, so that the last jobs of the parallel loop are small ones and neither
    // thread waits long for the other at the end (a hash map's order is random per run).
    let mut groups: Vec<(usize, Vec<usize>)> = groups
        .into_values()
        .map(|g| (g.iter().map(|&i| files[i].text.len()).sum(), g))
        .collect();
    groups.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let done: Vec<Vec<(usize, Analysis)>> = groups
        .par_iter()
        .with_max_len(1)
        .map(|(_, members)| {
            let mut results: Vec<(usize, Analysis, Option<Kept>)> = members
                .iter()
                .map(|&i| {
                    let (a, kept) = analyze_keeping(&files[i], opts);
                    tick();
                    (i, a, kept)
                })
                .collect();
            let refused = results.iter().any(|(_, a, _)| refuses(&a.diags));
            for (i, a, kept) in &mut results {
                if let Some(k) = kept.take()
                    && !refused
                {
                    a.errors_ahead = check_ahead(&files[*i], a, &k);
                }
            }
            results.into_iter().map(|(i, a, _)| (i, a)).collect()
        })
        .collect();
    let mut analyses: Vec<Analysis> = (0..files.len()).map(|_| Analysis::default()).collect();
    for (i, a) in done.into_iter().flatten() {
        analyses[i] = a;
    }
    link_and_apply(files, &mut analyses, opts)
}

pub fn link_and_apply(files: &[SourceFile], analyses: &mut [Analysis], opts: &Options) -> Outcome {
    let n = files.len();
    let index = FileIndex::new(files);
    let mut dsu = Dsu((0..n).collect());
    let mut link_diags: Vec<Diagnostic> = Vec::new();

    // Map name → files defining a perf event array of that name.
    let mut defs: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, a) in analyses.iter().enumerate() {
        for m in &a.maps {
            defs.entry(m.name.as_str()).or_default().push(i);
        }
    }
    let mut consumed: HashMap<(usize, String), Vec<Option<u64>>> = HashMap::new();

    // BPF output calls: the map is defined in this file or in a file it includes.
    for (i, a) in analyses.iter().enumerate() {
        for o in &a.outputs {
            if a.maps.iter().any(|m| m.name == o.map) {
                continue;
            }
            let cands: Vec<usize> = defs
                .get(o.map.as_str())
                .map(|v| included_among(files, &a.includes, i, v))
                .unwrap_or_default();
            if let [j] = cands[..] {
                dsu.union(i, j);
            } else {
                link_diags.push(
                    Diagnostic::at(&files[i], o.offset, Rule::UnlinkedProgram,
                        format!("the perf event array `{}` written here is not defined in this file or in a header it includes that bpf-migrate was given", o.map))
                        .help("pass the file that defines the map as well"),
                );
            }
        }
    }

    // Consumers: the BPF source named by the skeleton or object, else the one file in the
    // loader's directory that defines a perf map of that name.
    for (i, a) in analyses.iter().enumerate() {
        for cons in &a.consumers {
            // A BCC tool whose C is in its own strings.
            if a.maps.iter().any(|m| m.name == cons.map) {
                consumed
                    .entry((i, cons.map.clone()))
                    .or_default()
                    .push(cons.pages);
                continue;
            }
            let all: Vec<usize> = defs.get(cons.map.as_str()).cloned().unwrap_or_default();
            let named = named_sources(files, &index, a, i);
            let target = if !named.is_empty() {
                let hit: Vec<usize> = named.iter().copied().filter(|j| all.contains(j)).collect();
                // The map may live in a header the BPF source includes.
                let hit = if hit.is_empty() {
                    named
                        .iter()
                        .flat_map(|&k| included_among(files, &analyses[k].includes, k, &all))
                        .collect::<std::collections::BTreeSet<usize>>()
                        .into_iter()
                        .collect()
                } else {
                    hit
                };
                match hit[..] {
                    [j] => Ok(j),
                    [] => Err(format!(
                        "this perf buffer reads map `{}`, but {} defines no perf event array of that name",
                        cons.map,
                        named
                            .iter()
                            .map(|&k| files[k].display.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    _ => Err(format!(
                        "several files define a perf event array `{}`",
                        cons.map
                    )),
                }
            } else {
                let dir = dir_of(&files[i].path);
                let near: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&j| dir_of(&files[j].path) == dir)
                    .collect();
                match (&near[..], &all[..]) {
                    ([j], _) => Ok(*j),
                    ([], [j]) => Ok(*j),
                    ([], []) => Err(format!(
                        "this perf buffer reads map `{}`, but no BPF source given to bpf-migrate defines it{}",
                        cons.map,
                        if a.bpf_sources.is_empty() {
                            String::new()
                        } else {
                            format!(" (looked for {})", a.bpf_sources.join(", "))
                        }
                    )),
                    _ => Err(format!(
                        "several BPF sources define a perf event array `{}`; bpf-migrate cannot tell which this loader opens",
                        cons.map
                    )),
                }
            };
            match target {
                Ok(j) => {
                    dsu.union(i, j);
                    consumed
                        .entry((j, cons.map.clone()))
                        .or_default()
                        .push(cons.pages);
                }
                Err(msg) => link_diags.push(
                    Diagnostic::at(&files[i], cons.offset, Rule::UnlinkedProgram, msg)
                        .help("pass the BPF source (the .bpf.c file) together with its loader"),
                ),
            }
        }
    }

    // A loader belongs with the BPF sources it names even when it was refused: its program
    // then stays whole, and its maps are not reported as having no reader.
    let mut named_by_refused = std::collections::HashSet::new();
    for (i, a) in analyses.iter().enumerate() {
        let refused = a.diags.iter().any(|d| d.severity == Severity::Manual);
        for j in named_sources(files, &index, a, i) {
            dsu.union(i, j);
            if refused {
                named_by_refused.insert(j);
            }
        }
    }

    let mut bcc_pages: HashMap<(usize, String), u64> = HashMap::new();
    // A map with no consumer in sight cannot be migrated alone: its reader would break.
    for (j, a) in analyses.iter().enumerate() {
        for m in &a.maps {
            match consumed.get(&(j, m.name.clone())) {
                None if named_by_refused.contains(&j) => {}
                // A BCC tool whose own reader was refused: that refusal says it all.
                None if m.kind == MapKind::Bcc
                    && is_python(&files[j].path)
                    && a.diags.iter().any(|d| d.severity == Severity::Manual) => {}
                None if m.kind == MapKind::Bcc => {
                    link_diags.push(
                        Diagnostic::at(&files[j], m.offset, Rule::UnlinkedProgram,
                            format!("no open_perf_buffer() reading table `{}` was found", m.name))
                            .help("pass the Python tool that reads it (bpf-migrate follows BPF(src_file=...)), or migrate it by hand"),
                    );
                }
                None => {
                    // The consumer may read a map defined in a header through a BPF source
                    // that includes it; that case was linked above under the header's index.
                    link_diags.push(
                        Diagnostic::at(&files[j], m.offset, Rule::UnlinkedProgram,
                            format!("no user-space reader of perf event array `{}` was found among the files given", m.name))
                            .help("pass the reader too: a libbpf C loader (X.c beside X.bpf.c is found by itself), a BCC tool or a libbpf-rs crate; readers in other languages (Go, C++) are not migrated yet, so migrate the reader and this map together by hand"),
                    );
                }
                Some(pages) => {
                    let (rule, msg) = if m.kind == MapKind::Bcc {
                        let (ring_pages, msg) = bcc_ring_pages(&m.name, pages, opts);
                        bcc_pages.insert((j, m.name.clone()), ring_pages);
                        (Rule::BccPerfOutput, msg)
                    } else {
                        let rule = if m.kind == MapKind::Legacy {
                            Rule::LegacyPerfMapDef
                        } else {
                            Rule::PerfMapDef
                        };
                        let kib = opts.ring_size / 1024;
                        let msg = match pages.iter().flatten().max() {
                            Some(p) => format!(
                                "ring buffer `{}`: {kib} KiB shared by all CPUs; the perf buffer had {p} pages ({} KiB) per CPU",
                                m.name,
                                p * 4
                            ),
                            None => {
                                format!("ring buffer `{}`: {kib} KiB shared by all CPUs", m.name)
                            }
                        };
                        (rule, msg)
                    };
                    let mut d = Diagnostic::at(&files[j], m.offset, rule, msg);
                    if !opts.ring_size_given {
                        d = d.help(
                            "--ringbuf-size sets another size (a power of two, at least 4096)",
                        );
                    }
                    link_diags.push(d);
                }
            }
        }
    }

    // Programs: connected groups of files. Files with nothing to say are left out.
    let mut diags_by_file: Vec<Vec<Diagnostic>> = analyses
        .iter_mut()
        .map(|a| std::mem::take(&mut a.diags))
        .collect();
    for d in link_diags {
        let idx = files.iter().position(|f| f.display == d.file).unwrap();
        diags_by_file[idx].push(d);
    }
    // A C file joins the headers it includes that refuse: what they refuse (the map type
    // behind a macro the loader uses) may concern its program. Only those: a header with
    // notes would tie every program that includes it to the others' refusals.
    let mut refusing: HashMap<&std::ffi::OsStr, Vec<usize>> = HashMap::new();
    for j in (0..n).filter(|&j| refuses(&diags_by_file[j])) {
        if let Some(name) = files[j].path.file_name() {
            refusing.entry(name).or_default().push(j);
        }
    }
    for (i, a) in analyses.iter().enumerate() {
        // Refusing files named as included, then resolved as `included_among` does.
        let cands: Vec<usize> = a
            .includes
            .iter()
            .filter_map(|inc| refusing.get(Path::new(inc).file_name()?))
            .flatten()
            .copied()
            .collect();
        if !cands.is_empty() {
            for j in included_among(files, &a.includes, i, &cands) {
                dsu.union(i, j);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        if !analyses[i].edits.is_empty() || !diags_by_file[i].is_empty() {
            groups.entry(dsu.find(i)).or_default().push(i);
        }
    }
    // In code that belongs to no program (no edits, no perf map, no reader), diagnostics that
    // refuse only in a program become warnings: nothing is migrated there either way, and a
    // switch over map types in a vendored libbpf must not fail every check.
    for members in groups.values() {
        let program = members.iter().any(|&i| is_program_part(&analyses[i]));
        let only_such = members
            .iter()
            .flat_map(|&i| &diags_by_file[i])
            .filter(|d| d.severity.refuses())
            .all(|d| d.program_only);
        if !program && only_such {
            for &i in members {
                for d in diags_by_file[i].iter_mut().filter(|d| d.program_only) {
                    d.demote(Severity::Warning);
                    d.message = "`BPF_MAP_TYPE_PERF_EVENT_ARRAY` is used here, in code that belongs to no perf buffer program bpf-migrate found".into();
                    d.help = Some("nothing is changed here; if this code creates or checks the map of a program you migrate, update it by hand (a ring buffer is BPF_MAP_TYPE_RINGBUF)".into());
                }
            }
        }
    }

    // A per-CPU array the reserve strategy made unused stays when another file of its program
    // names it: the loader may size it or read it.
    for members in groups.values() {
        for &i in members {
            let heaps = std::mem::take(&mut analyses[i].heap_maps);
            for (name, start, at) in heaps {
                if let Some(&j) = members
                    .iter()
                    .find(|&&j| j != i && mentions_word(&files[j].text, &name))
                {
                    analyses[i]
                        .edits
                        .retain(|e| !(e.rule == Rule::ReserveHeap && e.start == start));
                    analyses[i].errors_ahead = None;
                    diags_by_file[i].push(Diagnostic::at(
                        &files[i],
                        at,
                        Rule::ReserveHeap,
                        format!(
                            "the per-CPU array `{name}` no longer holds events, but stays: {} names it",
                            files[j].display
                        ),
                    ).help("delete it, and its use there, if it served only as the events' buffer"));
                }
            }
        }
    }

    // Each program's verdict, once, from its files' diagnostics and edits as linking left
    // them: refused (manual work somewhere), deselected (a rule not selected), has edits.
    let verdicts: Vec<Verdict> = groups
        .values()
        .map(|members| Verdict {
            members,
            refused: members.iter().any(|&i| refuses(&diags_by_file[i])),
            deselected: members
                .iter()
                .any(|&i| analyses[i].edits.iter().any(|e| !opts.rules.allows(e.rule))),
        })
        .collect();
    // Apply every candidate program's edits and re-parse (in parallel: this is most of a
    // run's work): an edit must not add a parse error.
    let candidate: Vec<bool> = {
        let mut v = vec![false; n];
        for g in verdicts.iter().filter(|g| !g.refused && !g.deselected) {
            for &i in g.members {
                v[i] = !analyses[i].edits.is_empty();
            }
        }
        v
    };
    let mut applied: Vec<Option<Applied>> = {
        use rayon::prelude::*;
        let jobs: Vec<(usize, Vec<Edit>)> = (0..n)
            .filter(|&i| candidate[i])
            .map(|i| (i, std::mem::take(&mut analyses[i].edits)))
            .collect();
        let done: Vec<(usize, Applied)> = jobs
            .into_par_iter()
            .map(|(i, edits)| {
                (
                    i,
                    apply_checked(&files[i], edits, &analyses[i], &bcc_pages, i),
                )
            })
            .collect();
        let mut v: Vec<Option<_>> = (0..n).map(|_| None).collect();
        for (i, r) in done {
            v[i] = Some(r);
        }
        v
    };

    let mut out = Outcome::default();
    out.stats.files_scanned = n;
    for &Verdict {
        members,
        refused,
        deselected,
    } in &verdicts
    {
        if deselected && !refused {
            out.stats.programs_deselected += 1;
            continue;
        }
        if refused {
            // A refused group's edits are still in its analyses.
            if members.iter().any(|&i| is_program_part(&analyses[i])) {
                out.stats.programs_manual += 1;
            }
            for &i in members {
                out.diags
                    .extend(diags_by_file[i].drain(..).filter(|d| d.severity.refuses()));
            }
            continue;
        }
        let mut changes = Vec::new();
        let mut failed = None;
        for &i in members {
            match applied[i].take() {
                None => {}
                Some(Ok((new_text, edits))) => changes.push(Change {
                    file: i,
                    program: members[0],
                    new_text,
                    edits,
                }),
                Some(Err(d)) => {
                    failed = Some(*d);
                    break;
                }
            }
        }
        if let Some(d) = failed {
            out.diags.push(d);
            out.stats.programs_manual += 1;
            continue;
        }
        if !changes.is_empty() {
            out.stats.programs_migrated += 1;
        }
        for &i in members {
            out.diags.append(&mut diags_by_file[i]);
        }
        out.changes.extend(changes);
    }
    out.stats.files_changed = out.changes.len();
    out.changes
        .sort_by(|a, b| files[a.file].display.cmp(&files[b.file].display));
    out.diags.sort_by(|a, b| {
        (a.file.as_str(), a.line, a.column, a.rule).cmp(&(
            b.file.as_str(),
            b.line,
            b.column,
            b.rule,
        ))
    });
    out
}

/// `word` occurs in `text` as a whole identifier.
fn mentions_word(text: &str, word: &str) -> bool {
    let ident = |b: u8| b == b'_' || b.is_ascii_alphanumeric();
    text.match_indices(word).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| text.as_bytes()[j]);
        let after = text.as_bytes().get(i + word.len()).copied();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// A file's new text and its edits, or why the program cannot be changed.
type Applied = Result<(String, Vec<Edit>), Box<Diagnostic>>;

/// A file's new text, if its edits apply cleanly and add no parse error.
fn apply_checked(
    file: &SourceFile,
    mut edits: Vec<Edit>,
    analysis: &Analysis,
    bcc_pages: &HashMap<(usize, String), u64>,
    i: usize,
) -> Applied {
    // BPF_RINGBUF_OUTPUT page counts, now that the consumer's request is known.
    for e in edits
        .iter_mut()
        .filter(|e| e.rule == Rule::BccPerfOutput && e.text.contains('\u{1}'))
    {
        for ((f, name), pages) in bcc_pages {
            if *f == i {
                e.text = e.text.replace(&bcc::pages_marker(name), &pages.to_string());
            }
        }
    }
    if let Err(e) = edit::normalize(&mut edits) {
        // Two changes to one stretch of code: it is not plain enough to migrate (code that
        // does not parse, typically), so the program is left to be done by hand.
        return Err(Box::new(
            Diagnostic::at(
                file,
                e.second.0,
                Rule::UnsupportedForm,
                format!("the changes planned here overlap ({} and {}); the code around this line is not plain enough to migrate", e.first.2, e.second.2),
            )
            .help("check that this code compiles (unbalanced braces?), or migrate by hand"),
        ));
    }
    let errors_before = analysis.errors_before;
    let new_text = edit::apply(&file.text, &edits, file.crlf);
    // A page-count marker left in an edit (its table had no reader) must not reach a file;
    // the input itself may hold any byte.
    let unresolved = edits
        .iter()
        .any(|e| e.rule == Rule::BccPerfOutput && e.text.contains('\u{1}'));
    // Counted ahead, during the analysis: no more errors than before settles it; anything
    // else is decided by a full parse of the new text.
    let errors_after = analysis
        .errors_ahead
        .filter(|&n| n <= errors_before)
        .unwrap_or_else(|| parse_errors(&file.path, &new_text));
    if unresolved || errors_after > errors_before {
        // A page-count marker left unresolved is a bug of ours whatever the count.
        let before = if unresolved { 0 } else { errors_before };
        return Err(Box::new(parse_check_refusal(
            file,
            edits[0].start,
            before,
            "this file",
            "the migrated text of this file",
        )));
    }
    if !is_python(&file.path)
        && !is_rust(&file.path)
        && let Some(d) = check_else_branches(
            file,
            &new_text,
            &edits,
            (&[c_range(&file.text)], &[c_range(&new_text)]),
            (c::looks_bcc(&file.text), c::looks_bcc(&new_text)),
            ("this file", "the migrated text of this file"),
        )
    {
        return Err(Box::new(d));
    }
    Ok((new_text, edits))
}

/// The BCC C page count of a ring buffer: room for what the tool asked per CPU (its
/// `page_cnt`, 8 by default) on `ASSUMED_CPUS` CPUs, rounded up to a power of two.
const ASSUMED_CPUS: u64 = 8;

fn bcc_ring_pages(name: &str, asked: &[Option<u64>], opts: &Options) -> (u64, String) {
    if opts.ring_size_given {
        let p = opts.ring_size / 4096;
        return (
            p,
            format!(
                "BPF_RINGBUF_OUTPUT({name}, {p}): {} KiB shared by all CPUs (--ringbuf-size)",
                p * 4
            ),
        );
    }
    let per_cpu = asked.iter().flatten().max().copied().unwrap_or(8).max(1);
    let pages = (per_cpu * ASSUMED_CPUS).next_power_of_two();
    (
        pages,
        format!(
            "BPF_RINGBUF_OUTPUT({name}, {pages}): {} KiB shared by all CPUs, the {per_cpu} pages per CPU the perf buffer had, for {ASSUMED_CPUS} CPUs",
            pages * 4
        ),
    )
}

/// `parse_errors` of the text `edits` make of the file, by an incremental re-parse of
/// `kept` (with a stand-in for the page counts linking fills in: a number either way).
/// Done at the end of the analysis, while the tree is alive: trees are many times the size
/// of their text, too big to keep until linking. Not done for a file that needs manual work:
/// its program keeps none of its edits.
pub fn check_ahead(file: &SourceFile, a: &Analysis, kept: &Kept) -> Option<usize> {
    if !wants_check_ahead(a) {
        return None;
    }
    let edits = edits_ahead(&a.edits)?;
    if let Kept::Python(tree) = kept
        && crate::lang::python::edits_keep_structure(tree, &file.text, &edits)
    {
        return Some(a.errors_before);
    }
    let (new_text, spans) = edit::apply_spans(&file.text, &edits, file.crlf);
    let tree = match kept {
        Kept::Rust(items) => return rust::items_parse(items, &new_text, &spans).then_some(0),
        Kept::Python(old) => crate::lang::python::reparse(old, &file.text, &new_text, &spans)?,
        Kept::C(old) => {
            // The same masking choice as `parse_auto` makes for the new text.
            if c::looks_bcc(&new_text) != c::looks_bcc(&file.text) {
                return None;
            }
            c::reparse(old, &file.text, &new_text, &[c_range(&new_text)], &spans)?.tree
        }
    };
    Some(c::error_nodes(tree.root_node()).len())
}

/// The C of one BCC string (`ranges` of `file`, parsed as `old` with `errors_before` errors)
/// with its own edits applied: a diagnostic if it parses with more errors than before (the
/// Python re-parse of the tool sees the string only as a string). Incremental, while the
/// string's tree is alive; in full when the masks shift.
pub(crate) fn check_bcc_c(
    file: &SourceFile,
    old: &c::CParse,
    ranges: &[std::ops::Range<usize>],
    edits: &[Edit],
    errors_before: usize,
) -> Option<Diagnostic> {
    // Overlapping edits are refused at linking, with their own message.
    let edits = edits_ahead(edits)?;
    let (new_text, spans) = edit::apply_spans(&file.text, &edits, file.crlf);
    let errors_after = edit::map_ranges(ranges, &spans)
        .and_then(|new_ranges| {
            c::reparse(old, &file.text, &new_text, &new_ranges, &spans)
                .or_else(|| c::parse_bcc(&new_text, Some(&new_ranges)))
        })
        .map_or(usize::MAX, |p| c::error_nodes(p.tree.root_node()).len());
    if errors_after <= errors_before {
        let new_ranges = edit::map_ranges(ranges, &spans)?;
        return check_else_branches(
            file,
            &new_text,
            &edits,
            (ranges, &new_ranges),
            (true, true),
            ("the C in this string", "the migrated C in this string"),
        );
    }
    Some(parse_check_refusal(
        file,
        edits[0].start,
        errors_before,
        "the C in this string",
        "the migrated C in this string",
    ))
}

/// Edits where a parse of first branches only does not look (a branch after `#else`, a
/// directive line; see `c::else_branches`), checked on the parse with every branch: it must
/// not have more errors after them than before. The usual count cannot tell: C that an edit
/// breaks in an `#else` branch may read better with first branches only, the parse that is
/// then counted. A diagnostic when the check fails. `ranges` and `placeholders` are for the
/// old and the new text; `subject`, as for `parse_check_refusal`.
fn check_else_branches(
    file: &SourceFile,
    new_text: &str,
    edits: &[Edit],
    ranges: (&[std::ops::Range<usize>], &[std::ops::Range<usize>]),
    placeholders: (bool, bool),
    subject: (&str, &str),
) -> Option<Diagnostic> {
    if !ranges.0.iter().any(|r| file.text[r.clone()].contains('#')) {
        return None;
    }
    let hidden = c::else_branches(&file.text, ranges.0);
    // Touching counts: an insertion at the edge of a branch may join it.
    let at = edits
        .iter()
        .find(|e| hidden.iter().any(|h| e.start <= h.end && e.end >= h.start))?
        .start;
    let before = c::errors_with_all_branches(&file.text, ranges.0, placeholders.0);
    let after = c::errors_with_all_branches(new_text, ranges.1, placeholders.1);
    (after > before).then(|| parse_check_refusal(file, at, before, subject.0, subject.1))
}

/// Why a migration that would add parse errors is refused: manual work when the text did not
/// parse cleanly to begin with (error recovery may shift with any change, so the migration
/// cannot be checked: not our bug, but not safe either), else an internal error.
fn parse_check_refusal(
    file: &SourceFile,
    at: usize,
    errors_before: usize,
    subject: &str,
    migrated: &str,
) -> Diagnostic {
    if errors_before > 0 {
        Diagnostic::at(file, at, Rule::UnsupportedForm,
            format!("{subject} does not parse cleanly ({errors_before} error(s)), so the migration of its program cannot be checked"))
            .help("fix the code that does not parse (or the macros that hide C syntax), or migrate by hand")
    } else {
        Diagnostic::at(
            file,
            at,
            Rule::InternalError,
            format!("{migrated} would not parse; nothing was changed in this program"),
        )
        .help("please report this with the file")
    }
}

/// A file's edits as linking will apply them, as far as a parser can tell before linking:
/// normalized, with a stand-in for the page counts it fills in. None if they overlap.
fn edits_ahead(edits: &[Edit]) -> Option<Vec<Edit>> {
    let mut edits = edits.to_vec();
    for e in edits.iter_mut().filter(|e| e.text.contains('\u{1}')) {
        e.text = bcc::stand_in_pages(&e.text);
    }
    edit::normalize(&mut edits).ok()?;
    Some(edits)
}

/// The C of a C file: all of it but a byte-order mark.
fn c_range(text: &str) -> std::ops::Range<usize> {
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    bom..text.len()
}

fn parse_errors(path: &Path, text: &str) -> usize {
    if is_rust(path) {
        return usize::from(syn::parse_file(text).is_err());
    }
    if is_python(path) {
        return python::parse(text)
            .map(|t| c::error_nodes(t.root_node()).len())
            .unwrap_or(usize::MAX);
    }
    c::parse_auto(text, Some(&[c_range(text)]))
        .map(|p| c::error_nodes(p.tree.root_node()).len())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C ranges of the string in Python `py` that holds `needle`, its C parse and that
    /// parse's error count.
    fn bcc_string(py: &str, needle: &str) -> (Vec<std::ops::Range<usize>>, c::CParse, usize) {
        let tree = python::parse(py).unwrap();
        let nodes = c::descendants(tree.root_node());
        let s = c::of_kind(&nodes, "string")
            .into_iter()
            .find(|s| c::text(*s, py).contains(needle))
            .unwrap();
        let ranges = python::string_contents(s);
        let old = c::parse_bcc(py, Some(&ranges)).unwrap();
        let errors = c::error_nodes(old.tree.root_node()).len();
        (ranges, old, errors)
    }

    /// The C of a BCC string is checked on its own: an edit that breaks it is refused, one
    /// that keeps it whole is not, and the incremental count agrees with a full parse.
    #[test]
    fn a_broken_edit_to_the_c_in_a_bcc_string_is_refused() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bcc_execsnoop/input/execsnoop.py");
        let text = std::fs::read_to_string(&path).unwrap();
        let file = SourceFile::new(path, "execsnoop.py".into(), text.clone());
        let (ranges, old, before) =
            bcc_string(&text, "events.perf_submit(ctx, &data, sizeof(data));");
        assert_eq!(before, 0);
        let at = text
            .find("events.perf_submit(ctx, &data, sizeof(data));")
            .unwrap();
        let edit = |new: &str| {
            vec![Edit::replace(
                at,
                at + "events.perf_submit(ctx, &data, sizeof(data));".len(),
                new,
                Rule::BccPerfOutput,
            )]
        };
        let good = edit("events.ringbuf_output(&data, sizeof(data), 0);");
        assert!(check_bcc_c(&file, &old, &ranges, &good, before).is_none());
        for broken in [
            "events.ringbuf_output(&data, sizeof(data), 0;",
            "{ events.ringbuf_output(&data, sizeof(data), 0);",
        ] {
            let d = check_bcc_c(&file, &old, &ranges, &edit(broken), before).expect(broken);
            assert_eq!((d.rule, d.severity), (Rule::InternalError, Severity::Error));
            // The incremental count is the full parse's.
            let (new_text, spans) = edit::apply_spans(&text, &edit(broken), false);
            let new_ranges = edit::map_ranges(&ranges, &spans).unwrap();
            let full = c::parse_bcc(&new_text, Some(&new_ranges)).unwrap();
            let inc = c::reparse(&old, &text, &new_text, &new_ranges, &spans).unwrap();
            assert_eq!(
                c::error_nodes(inc.tree.root_node()).len(),
                c::error_nodes(full.tree.root_node()).len()
            );
        }
    }

    /// An edit that breaks C in an `#else` branch is refused, though the broken text reads
    /// without errors when only first branches are kept (the parse that is counted when the
    /// text has a header split across `#if`); in a C file and in a BCC string.
    #[test]
    fn a_broken_edit_in_an_else_branch_is_refused() {
        let split = "#ifdef NEW_KERNEL\nint probe(struct pt_regs *ctx, struct file *file)\n#else\nint probe(struct pt_regs *ctx)\n#endif\n{\n";
        for head in ["int probe(struct pt_regs *ctx)\n{\n", split] {
            let text = format!(
                "{head}#ifdef OLD_KERNEL\n\tg(1);\n#else\n\tg(2);\n#endif\n\treturn 0;\n}}\n"
            );
            let errors = |t: &str| parse_errors(Path::new("f.c"), t);
            let before = errors(&text);
            let broken = text.replace("g(2);", "g(2;");
            assert_eq!((before, errors(&broken)), (0, 0), "{text}");
            let file = SourceFile::new(PathBuf::from("f.c"), "f.c".into(), text.clone());
            let at = text.find("g(2);").unwrap();
            let edit = |new: &str| vec![Edit::replace(at, at + 5, new, Rule::PerfBufferNew)];
            let apply = |edits: Vec<Edit>| {
                apply_checked(&file, edits, &Analysis::default(), &HashMap::new(), 0)
            };
            let d = apply(edit("g(2;")).expect_err(&text);
            assert_eq!(
                d.rule,
                if head == split {
                    Rule::UnsupportedForm
                } else {
                    Rule::InternalError
                }
            );
            assert!(apply(edit("h(2);")).is_ok());

            // The same function in a BCC string, checked from its own parse.
            let py = format!(
                "from bcc import BPF\nb = BPF(text=\"\"\"\nBPF_PERF_OUTPUT(events);\n{text}\"\"\")\n"
            );
            let file = SourceFile::new(PathBuf::from("t.py"), "t.py".into(), py.clone());
            let (ranges, old, before) = bcc_string(&py, "BPF_PERF_OUTPUT");
            assert_eq!(before, 0);
            let at = py.find("g(2);").unwrap();
            let edit = |new: &str| [Edit::replace(at, at + 5, new, Rule::BccPerfOutput)];
            assert!(
                check_bcc_c(&file, &old, &ranges, &edit("g(2;"), before).is_some(),
                "{py}"
            );
            assert!(check_bcc_c(&file, &old, &ranges, &edit("h(2);"), before).is_none());
        }
    }

    /// Discovery does not keep a Rust file that names the perf buffer only in comments or
    /// string literals; one that uses it in code is analysed.
    #[test]
    fn rust_that_only_mentions_perf_buffers_is_not_kept() {
        let rs = Path::new("src/main.rs");
        assert!(!worth_analysing(
            rs,
            "// was PerfBufferBuilder\nfn main() { let _ = \"PerfBuffer\"; }\n"
        ));
        assert!(worth_analysing(
            rs,
            "use libbpf_rs::PerfBufferBuilder;\nfn main() {}\n"
        ));
        // The same words in C are a reason to look.
        assert!(worth_analysing(Path::new("x.h"), "// PerfBuffer\n"));
    }

    /// The perf map type as a value refuses its program when one is migrated (a loader that
    /// checks the map's type would break), also from a header the loader includes, and is
    /// only a warning in code that belongs to no program (a switch over map types in a
    /// vendored library).
    #[test]
    fn a_map_type_mention_refuses_only_inside_a_program() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/execsnoop/input");
        let read = |name: &str| {
            let path = root.join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            SourceFile::new(path, name.to_string(), text)
        };
        let check =
            "\nint type_ok(int type)\n{\n\treturn type == BPF_MAP_TYPE_PERF_EVENT_ARRAY;\n}\n";
        let mut loader = read("execsnoop.c");
        loader.text.push_str(check);
        let lone = SourceFile::new(
            PathBuf::from("probes.c"),
            "probes.c".into(),
            format!("#include <bpf/bpf.h>\n{check}"),
        );
        let out = migrate(
            &[read("execsnoop.bpf.c"), loader, lone],
            &Options::default(),
        );
        let severity = |file: &str| {
            out.diags
                .iter()
                .filter(|d| d.file == file && d.rule == Rule::UnsupportedForm)
                .map(|d| d.severity)
                .collect::<Vec<_>>()
        };
        assert_eq!(severity("execsnoop.c"), [Severity::Manual]);
        assert_eq!(severity("probes.c"), [Severity::Warning]);
        assert!(out.changes.is_empty());
        assert_eq!(
            (out.stats.programs_manual, out.stats.programs_migrated),
            (1, 0)
        );

        // Behind a macro of a header the loader includes: the header joins the program,
        // which is refused (it was migrated, the header's refusal standing apart).
        let mut loader = read("execsnoop.c");
        loader.text = loader.text.replacen(
            "#include \"execsnoop.h\"",
            "#include \"execsnoop.h\"\n#include \"maptype.h\"",
            1,
        );
        let header = SourceFile::new(
            root.join("maptype.h"),
            "maptype.h".into(),
            "#define EVENTS_MAP_TYPE BPF_MAP_TYPE_PERF_EVENT_ARRAY\n".into(),
        );
        let out = migrate(
            &[read("execsnoop.bpf.c"), loader, header],
            &Options::default(),
        );
        assert!(out.changes.is_empty());
        assert_eq!(
            (out.stats.programs_manual, out.stats.programs_migrated),
            (1, 0)
        );
        assert!(
            out.diags
                .iter()
                .any(|d| d.file == "maptype.h" && d.severity == Severity::Manual)
        );
    }

    fn needs_parse(text: &str) -> bool {
        c_needs_parse(text, &c::lex(text, 0..text.len()))
    }

    /// Declarations of the API (prototypes, enumerators, helper pointers) are no reason to
    /// parse; a use anywhere else is, including forms that look like a declaration in part.
    #[test]
    fn only_uses_of_the_api_make_a_c_file_worth_parsing() {
        let skipped = [
            "enum bpf_map_type {\n\tBPF_MAP_TYPE_HASH,\n\tBPF_MAP_TYPE_PERF_EVENT_ARRAY,\n\tBPF_MAP_TYPE_ARRAY_OF_MAPS\n};\n",
            "enum { BPF_MAP_TYPE_PERF_EVENT_ARRAY };\n",
            "typedef enum bpf_map_type { X, BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4 } t;\n",
            "LIBBPF_API struct perf_buffer *\nperf_buffer__new(int map_fd, size_t page_cnt,\n\t\t perf_buffer_sample_fn sample_cb, void *ctx,\n\t\t const struct perf_buffer_opts *opts);\n",
            "LIBBPF_API int perf_buffer__poll(struct perf_buffer *pb, int timeout_ms) LIBBPF_DEPRECATED(\"x (y)\");\r\n",
            "static long (* const bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *) 25;\n",
            "static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *) 25;\n",
            // A macro continued onto an empty line ends there.
            "#define LIBBPF_HIDDEN \\\n\nLIBBPF_API int perf_buffer__poll(struct perf_buffer *pb, int timeout_ms);\n",
            "#ifdef __cplusplus\nextern \"C\" {\n#endif\n/* the callback */\ntypedef void (*perf_buffer_sample_fn)(void *ctx, int cpu,\n\t\t\t\t      void *data, __u32 size);\nstruct perf_buffer_opts {\n\tsize_t sz;\n\tperf_buffer_sample_fn sample_cb;\n};\n#define perf_buffer_opts__last_field sz\nstruct perf_buffer_opts;\nvoid start(perf_buffer_sample_fn cb, const struct perf_buffer_opts *opts);\n#ifdef __cplusplus\n}\n#endif\n",
        ];
        for text in skipped {
            assert!(!needs_parse(text), "parsed: {text}");
        }
        let parsed = [
            // Calls, in a body or behind a multiplication that reads like `type *name(`.
            "int f(void) { return perf_buffer__poll(pb, 100); }\n",
            "void f(void) { n = sz * perf_buffer__buffer_cnt(pb); }\n",
            "void f(void) {\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));\n}\n",
            // A positional map definition (not an enum body).
            "struct bpf_map_def SEC(\"maps\") events = {\n\tBPF_MAP_TYPE_PERF_EVENT_ARRAY,\n\tsizeof(int),\n};\n",
            "struct bpf_map_def SEC(\"maps\") events = { BPF_MAP_TYPE_PERF_EVENT_ARRAY };\n",
            // Macro bodies hold expressions.
            "#define POLL perf_buffer__poll(pb, 100);\n",
            "#define POLL(x) \\\n\tx * perf_buffer__buffer_cnt(pb);\n",
            "#define POLL(x) \\\r\n\tx * perf_buffer__buffer_cnt(pb);\r\n",
            // A definition, an initialised declaration, a declaration list.
            "int perf_buffer__poll(struct perf_buffer *pb, int t) { return 0; }\n",
            "int perf_buffer__foo(int a) = 0;\n",
            "int a, perf_buffer__foo(int);\n",
            // Unbalanced braces (preprocessor branches): the nesting is not trusted.
            "void f(void) {\n#if A\n}\n#else\n}\n#endif\nint perf_buffer__poll(struct perf_buffer *pb, int t);\n",
            "void f(void)\n{\n\tint perf_buffer__poll(struct perf_buffer *pb, int t);\n",
            "enum e { A = sizeof(int (*)(void)), B = f(BPF_MAP_TYPE_PERF_EVENT_ARRAY) };\n",
            "__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n",
            "struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n} events SEC(\".maps\");\n",
            "typedef struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n} perf_map_t;\n",
            // A macro's arguments are no parameters.
            "static DEFINE_MAP(events, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n",
            "static DEFINE_TRIVIAL_CLEANUP_FUNC(struct perf_buffer *, perf_buffer__free);\n",
            // Preprocessor lines: continued after trailing spaces, after a comment or a BOM.
            "#define P(x) \\  \n\tx * perf_buffer__poll(pb, 1);\n",
            "/* c */ #define P x * perf_buffer__buffer_cnt(pb);\n",
            "\u{feff}#define P x * perf_buffer__buffer_cnt(pb);\n",
            "struct s {\n\tMAP_TYPE BPF_MAP_TYPE_PERF_EVENT_ARRAY;\n};\n",
            // A use after a preprocessor line, which is no type before a prototype's name.
            "#endif\nBPF_PERF_OUTPUT(events);\n",
            "#include <uapi/linux/ptrace.h>\nBPF_PERF_OUTPUT(events);\n",
            "// events\nBPF_PERF_OUTPUT(events);\n",
            // A struct variable with its options, and a member that holds a call.
            "struct perf_buffer_opts pb_opts = { .sample_cb = handle };\n",
            "struct s { int x[sizeof(perf_buffer_opts)]; };\n",
        ];
        for text in parsed {
            assert!(needs_parse(text), "not parsed: {text}");
        }
        // The library and kernel headers a repository vendors.
        for h in ["/usr/include/bpf/libbpf.h", "/usr/include/linux/bpf.h"] {
            let text = std::fs::read_to_string(h).unwrap();
            assert!(!needs_parse(&text), "{h} would be parsed");
        }
    }

    /// Every fixture file with edits, as it is, with CRLF line endings and a BOM, and with a
    /// few lines dropped or doubled: the incremental check counts the errors a full parse
    /// of the migrated text counts.
    #[test]
    fn incremental_check_counts_what_a_full_parse_counts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut inputs = Vec::new();
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.components().any(|c| c.as_os_str() == "input")
                    && let Ok(t) = std::fs::read_to_string(&p)
                {
                    inputs.push((p, t));
                }
            }
        }
        let variants = |t: &str| {
            let lines: Vec<&str> = t.split_inclusive('\n').collect();
            let mut v = vec![
                t.to_string(),
                format!("\u{feff}{}", t.replace('\n', "\r\n")),
            ];
            for k in [lines.len() / 4, lines.len() / 2, lines.len() * 3 / 4] {
                let mut dropped = lines.clone();
                dropped.remove(k);
                v.push(dropped.concat());
                let mut doubled = lines.clone();
                doubled.insert(k, lines[k]);
                v.push(doubled.concat());
            }
            v
        };
        let (mut checked, mut rust_checked) = (0, 0);
        for opts in [
            Options::default(),
            Options {
                strategy: Strategy::Reserve,
                ..Options::default()
            },
        ] {
            for (path, text) in &inputs {
                for t in variants(text) {
                    let file = SourceFile::new(path.clone(), path.display().to_string(), t);
                    let a = analyze(&file, &opts);
                    let Some(ahead) = a.errors_ahead else {
                        continue;
                    };
                    let edits = edits_ahead(&a.edits).unwrap();
                    let new_text = edit::apply(&file.text, &edits, file.crlf);
                    let full = parse_errors(&file.path, &new_text);
                    assert_eq!(ahead, full, "{}", path.display());
                    checked += 1;
                    rust_checked += usize::from(is_rust(path));
                }
            }
        }
        assert!(checked > 500, "only {checked} incremental checks");
        assert!(rust_checked > 20, "only {rust_checked} Rust checks by item");
    }

    /// A byte-order mark before a Rust file moves no edit: syn's positions are those of the
    /// text after it (a `use libbpf_rs::PerfBufferBuilder;` on line 1 was rewritten one byte
    /// early, into `RingBufferBuilderr`).
    #[test]
    fn a_byte_order_mark_before_rust_moves_no_edit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rs_capable/input");
        let read = |rel: &str| {
            let text = std::fs::read_to_string(root.join(rel)).unwrap();
            (PathBuf::from(rel), text)
        };
        let (main_path, main) = read("src/main.rs");
        // The `use` of PerfBufferBuilder first (after the inner doc comments it may not follow).
        let lines: Vec<&str> = main
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("//!"))
            .collect();
        let k = lines
            .iter()
            .position(|l| l.starts_with("use ") && l.contains("PerfBufferBuilder"))
            .unwrap();
        let mut reordered = lines.clone();
        let used = reordered.remove(k);
        reordered.insert(0, used);
        let reordered = reordered.concat();
        let run = |bom: &str| {
            let mut files = vec![
                read("src/bpf/capable.bpf.c"),
                read("src/stats.rs"),
                (main_path.clone(), format!("{bom}{reordered}")),
            ];
            files.sort();
            let files: Vec<SourceFile> = files
                .into_iter()
                .map(|(p, t)| SourceFile::new(p.clone(), p.display().to_string(), t))
                .collect();
            let out = migrate(&files, &Options::default());
            out.changes
                .into_iter()
                .map(|c| (files[c.file].path.clone(), c.new_text))
                .collect::<Vec<_>>()
        };
        let (plain, marked) = (run(""), run("\u{feff}"));
        assert!(
            plain
                .iter()
                .any(|(p, t)| *p == main_path && t.starts_with("use libbpf_rs::RingBufferBuilder;")),
            "{plain:?}"
        );
        assert_eq!(plain.len(), marked.len());
        for ((p, t), (q, u)) in plain.iter().zip(&marked) {
            assert_eq!(p, q);
            assert_eq!(u.strip_prefix('\u{feff}').unwrap_or(u), t);
        }
    }

    /// A Rust file is checked by the items its edits touch: an edit that breaks one, or that
    /// falls between items, leaves the answer to a full parse.
    #[test]
    fn rust_items_touched_by_edits_decide_alone() {
        let text = "use a::b;\n\n/// Docs.\n#[inline]\nfn f() {\n    g(1);\n}\n\nstruct S;\n";
        let file = SourceFile::new("x.rs".into(), "x.rs".into(), text.into());
        let items = rust::item_ranges(&file, &syn::parse_file(text).unwrap());
        let at = text.find("g(1)").unwrap();
        let check = |e: Edit| {
            let (new, spans) = edit::apply_spans(text, &[e], false);
            rust::items_parse(&items, &new, &spans)
        };
        assert_eq!(
            &text[items[1].clone()],
            "/// Docs.\n#[inline]\nfn f() {\n    g(1);\n}"
        );
        assert!(check(Edit::replace(
            at,
            at + 4,
            "h(1, 2)",
            Rule::PerfEventOutput
        )));
        assert!(!check(Edit::replace(
            at,
            at + 4,
            "h(1, 2",
            Rule::PerfEventOutput
        )));
        assert!(!check(Edit::insert(
            text.find("\n\nstruct").unwrap() + 1,
            "fn k() {}\n",
            Rule::PerfEventOutput
        )));
        // An item that now ends in a line comment, with the next item on its line.
        let text = "struct A; impl B {\n    fn x() {}\n}\n";
        let file = SourceFile::new("y.rs".into(), "y.rs".into(), text.into());
        let items = rust::item_ranges(&file, &syn::parse_file(text).unwrap());
        let (new, spans) = edit::apply_spans(
            text,
            &[Edit::insert(9, " // note", Rule::PerfEventOutput)],
            false,
        );
        assert!(syn::parse_file(&new).is_err());
        assert!(!rust::items_parse(&items, &new, &spans));
    }

    /// Files named alike in one directory are analysed together, and a file among them that
    /// needs manual work stops the others' counts ahead. When it belongs to another program
    /// (an unrelated BCC tool of the same name), that program still migrates, checked by the
    /// full parse at linking, exactly as it does alone.
    #[test]
    fn a_wrong_guess_about_a_program_changes_nothing() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let read = |f: &str, name: &str| {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            let path = PathBuf::from("tools").join(name);
            SourceFile::new(path, format!("tools/{name}"), text)
        };
        let program = vec![
            read("execsnoop/input/execsnoop.bpf.c", "execsnoop.bpf.c"),
            read("execsnoop/input/execsnoop.c", "execsnoop.c"),
            read("execsnoop/input/execsnoop.h", "execsnoop.h"),
        ];
        let mut with_tool = program.clone();
        with_tool.push(read("bcc_skb/input/tcsample.py", "execsnoop.py"));
        let opts = Options::default();
        let alone = migrate(&program, &opts);
        let beside = migrate(&with_tool, &opts);
        let texts = |o: &Outcome| -> Vec<(usize, String)> {
            o.changes
                .iter()
                .map(|c| (c.file, c.new_text.clone()))
                .collect()
        };
        assert_eq!(alone.changes.len(), 2);
        assert_eq!(texts(&alone), texts(&beside));
        assert!(
            beside
                .diags
                .iter()
                .any(|d| d.file == "tools/execsnoop.py" && d.severity == Severity::Manual)
        );
        // The loader is one the check ahead counts, so it is the skip that sends it to the
        // full parse here.
        let (a, kept) = analyze_keeping(&with_tool[1], &opts);
        assert!(wants_check_ahead(&a) && kept.is_some());
    }

    /// `nodes_within` finds what filtering every node by byte range finds, for every
    /// function body and statement of a loader and a BPF program (error recovery included).
    #[test]
    fn nodes_within_is_a_range_filter() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
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

    /// An edit that changes how the text after it lexes (an opened comment hides a `SEC`
    /// that was masked) cannot reuse the old parse.
    #[test]
    fn incremental_check_gives_way_when_masks_change_outside_the_edits() {
        let old = "int a;\nSEC(\"kprobe/x\") int f(void) { return 0; }\n";
        let parsed = c::parse_auto(old, Some(&[0..old.len()])).unwrap();
        let edits = [Edit::insert(0, "/* ", Rule::PerfEventOutput)];
        let (new, spans) = edit::apply_spans(old, &edits, false);
        assert!(c::reparse(&parsed, old, &new, &[0..new.len()], &spans).is_none());
        let harmless = [Edit::replace(4, 5, "bb", Rule::PerfEventOutput)];
        let (new, spans) = edit::apply_spans(old, &harmless, false);
        let re = c::reparse(&parsed, old, &new, &[0..new.len()], &spans).unwrap();
        assert_eq!(
            re.tree.root_node().to_sexp(),
            c::parse_auto(&new, Some(&[0..new.len()]))
                .unwrap()
                .tree
                .root_node()
                .to_sexp()
        );
    }
}
