//! BCC tools in Python: the C inside string literals (analysed by `bcc` with the strings'
//! contents as included ranges, so every offset is an offset in the Python file), and the
//! Python consumer: `open_perf_buffer`, `perf_buffer_poll`/`perf_buffer_consume`, callbacks,
//! `BPF(src_file=...)`.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use tree_sitter::Node;

use super::bcc_lost_counter::{self, LostOpen};
use super::check::{Kept, check_bcc_c, wants_check_ahead};
use super::context::{Analysis, Consumer, CpuUse, Ctx, Report};
use super::options::{Lost, Options, Strategy};
use super::{bcc, bcc_compat, bcc_format};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, descendants, of_kind, text};
use crate::report::{Diagnostic, Severity};
use crate::rules::Rule;
use crate::source::SourceFile;

/// Python attribute names whose every use must be explained.
const PY_TRIGGERS: &[&str] = &[
    "open_perf_buffer",
    "perf_buffer_poll",
    "perf_buffer_consume",
    "kprobe_poll",
];

pub use crate::lang::python::parse;

struct Py<'a, 't> {
    file: &'a SourceFile,
    nodes: &'a [Node<'t>],
    /// The tables the tool's C templates name by a format field's argument.
    format_tables: Vec<String>,
    edits: Vec<Edit>,
    diags: Vec<Diagnostic>,
    explained: Vec<(usize, usize)>,
    done_callbacks: HashSet<usize>,
    /// Callbacks that read the CPU, for linking (`cpu_field`).
    cpu_uses: Vec<CpuUse>,
    opts: &'a Options,
    /// Polls and consumes of buffers (calls), and buffers opened with a lost callback that
    /// `--lost count` keeps: `bcc_lost_counter`.
    polls: Vec<(usize, usize)>,
    lost_opens: Vec<LostOpen>,
}

impl Report for Py<'_, '_> {
    fn report_to(&mut self) -> (&SourceFile, &mut Vec<Diagnostic>) {
        (self.file, &mut self.diags)
    }
}

impl<'a, 't> Py<'a, 't> {
    fn src(&self) -> &'a str {
        &self.file.text
    }
}

/// Analyses a BCC tool; its parse comes back when `check_ahead` may want it.
pub fn analyze(file: &SourceFile, opts: &Options) -> (Analysis, Option<Kept>) {
    let mut a = Analysis::default();
    // Migrated by --strategy compat already: its perf buffer code is the perf path.
    if bcc_compat::has_shim(&file.text) {
        return (a, None);
    }
    let Some(tree) = parse(&file.text) else {
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            "the Python parser gave up on this file",
        ));
        return (a, None);
    };
    let nodes = c::named_descendants(tree.root_node());
    let src = &file.text;
    a.errors_before = c::error_nodes(tree.root_node()).len();

    // The C in string literals: each string that holds BCC triggers is parsed on its own.
    for s in of_kind(&nodes, "string") {
        let ranges = string_contents(s);
        if ranges.is_empty() || !ranges.iter().any(|r| bcc::has_trigger(&src[r.clone()])) {
            continue;
        }
        let toks: Vec<_> = ranges.iter().flat_map(|r| c::lex(src, r.clone())).collect();
        let Some(parsed) = c::parse_bcc_lexed(src, &ranges, &toks) else {
            continue;
        };
        let cnodes = c::named_descendants(parsed.tree.root_node());
        let mut cx = Ctx::new(file, &parsed.tree, &cnodes, &toks, opts);
        cx.format_fields = bcc_format::fields(&nodes, s, src);
        if let Some((ts, te)) = cx.trigger_in_error(bcc::has_trigger) {
            a.diags.push(
                Diagnostic::at(file, ts, Rule::ParseError, format!("cannot parse the C code around `{}` in this string; the tool is left untouched", &src[ts..te]))
                    .help("check the C text for unbalanced braces, or placeholders that are not alone on their line"),
            );
            continue;
        }
        bcc::analyze(&mut cx, &mut a);
        // The Python re-parse cannot see the C: its edits are checked here, on the C alone.
        if !cx.edits.is_empty()
            && let Some(d) = check_bcc_c(file, &parsed, &ranges, &cx.edits, cx.errors.len())
        {
            a.diags.push(d);
        }
        a.edits.append(&mut cx.edits);
        a.diags.append(&mut cx.diags);
    }

    // Tables a template names by the argument that fills its field (`bcc_format`).
    let format_tables: Vec<String> = a
        .maps
        .iter()
        .map(|m| m.name.clone())
        .filter(|n| bcc_format::is_identity(n))
        .collect();
    let mut py = Py {
        file,
        nodes: &nodes,
        format_tables,
        edits: Vec::new(),
        diags: Vec::new(),
        explained: Vec::new(),
        done_callbacks: HashSet::new(),
        cpu_uses: Vec::new(),
        opts,
        polls: Vec::new(),
        lost_opens: Vec::new(),
    };
    let mut poll_renames = Vec::new();
    let mut used = bcc_compat::Used::default();
    for call in of_kind(&nodes, "call") {
        let Some(f) = call.field("function") else {
            continue;
        };
        if f.kind() == "identifier" && text(f, src) == "BPF"
            || f.kind() == "attribute"
                && f.field("attribute").is_some_and(|x| text(x, src) == "BPF")
        {
            src_file(&mut py, call, &mut a);
        }
        if f.kind() != "attribute" {
            continue;
        }
        let Some(attr) = f.field("attribute") else {
            continue;
        };
        match text(attr, src) {
            "open_perf_buffer" => {
                py.explained.push((attr.start_byte(), attr.end_byte()));
                open_perf_buffer(&mut py, call, f, attr, &mut a);
            }
            "attach_perf_event" if bcc::has_trigger(src) => {
                py.diags.push(
                    Diagnostic::at(file, call.start_byte(), Rule::NmiContext,
                        "this tool attaches programs to perf events (NMI context): ring buffer writes can fail under contention even when the ring has room")
                        .help("check the return value of ringbuf_output() and count failures in a BPF_PERCPU_ARRAY, so drops show"),
                );
            }
            name @ ("perf_buffer_poll" | "perf_buffer_consume" | "kprobe_poll") => {
                py.explained.push((attr.start_byte(), attr.end_byte()));
                py.polls.push((call.start_byte(), call.end_byte()));
                let consume = name == "perf_buffer_consume";
                if opts.strategy == Strategy::Compat
                    && let (Some(object), Some(args)) = (f.field("object"), call.field("arguments"))
                {
                    used.poll |= !consume;
                    used.consume |= consume;
                    poll_renames.push(bcc_compat::poll_edit(src, object, args, consume));
                    continue;
                }
                let new = if consume {
                    "ring_buffer_consume"
                } else {
                    "ring_buffer_poll"
                };
                poll_renames.push(Edit::replace(
                    attr.start_byte(),
                    attr.end_byte(),
                    new,
                    Rule::BccPoll,
                ));
            }
            _ => {}
        }
    }
    for n in of_kind(&nodes, "identifier") {
        let t = text(n, src);
        if PY_TRIGGERS.contains(&t)
            && !py
                .explained
                .iter()
                .any(|&(s, e)| n.start_byte() >= s && n.end_byte() <= e)
        {
            py.report(n.start_byte(), Rule::UnsupportedForm, format!("`{t}` is used in a form bpf-migrate does not understand"), "migrate this use by hand, or call it as a method on the table or BPF object, then run bpf-migrate again");
        }
    }
    // A poll of a tool that opens no perf buffer and has none in its C waits for nothing
    // (inject polls to sleep until Ctrl-C): BCC's ring_buffer_poll() would raise there.
    let first_open = of_kind(&nodes, "identifier")
        .into_iter()
        .find(|n| text(*n, src) == "open_perf_buffer");
    let opens = first_open.is_some();
    // A tool that opens its buffer here and polls it elsewhere (a framework's module): that
    // poll, `perf_buffer_poll()`, never reads a ring, and nothing here can change it.
    if let (Some(open), true) = (first_open, py.polls.is_empty()) {
        py.report(
            open.start_byte(),
            Rule::UnsupportedForm,
            "this tool opens its perf buffer here but polls it nowhere in this file (no perf_buffer_poll(), perf_buffer_consume() or kprobe_poll() call): the code that polls it would go on polling perf buffers only, and the ring would never be read",
            "migrate it with the module that polls (its poll becomes ring_buffer_poll()), by hand, or move the poll into this file and run bpf-migrate again",
        );
    }
    if opens || !a.maps.is_empty() {
        py.edits.extend(poll_renames);
    } else if let Some(first) = poll_renames.first() {
        py.diag(
            first.start,
            Rule::BccPoll,
            "this perf_buffer_poll() is left as it is: the tool opens no perf buffer in this file, and BCC's ring_buffer_poll() raises when there is no ring buffer to poll",
            Some("if the tool opens its perf buffers in another module, name that module too, or migrate the poll by hand"),
        );
    }
    a.edits.extend(py.edits);
    a.diags.extend(py.diags);
    a.cpu_uses.extend(py.cpu_uses);
    let compat = opts.strategy == Strategy::Compat;
    bcc_lost_counter::settle(
        file,
        tree.root_node(),
        &py.lost_opens,
        &py.polls,
        compat,
        &mut a,
    );
    if compat {
        bcc_compat::settle(file, tree.root_node(), &used, &mut a);
    }
    drop(nodes);
    let kept = wants_check_ahead(&a).then_some(Kept::Python(tree));
    (a, kept)
}

/// The C of each string of Python `src` that holds BCC code, parsed in place (the trees'
/// offsets are the file's): where `cpu_field` finds an event struct to add a field to.
pub fn bcc_c_trees(src: &str) -> Vec<tree_sitter::Tree> {
    let Some(tree) = parse(src) else {
        return Vec::new();
    };
    let nodes = c::named_descendants(tree.root_node());
    of_kind(&nodes, "string")
        .into_iter()
        .filter_map(|s| {
            let ranges = string_contents(s);
            if !ranges.iter().any(|r| bcc::has_trigger(&src[r.clone()])) {
                return None;
            }
            let toks: Vec<_> = ranges.iter().flat_map(|r| c::lex(src, r.clone())).collect();
            c::parse_bcc_lexed(src, &ranges, &toks).map(|p| p.tree)
        })
        .collect()
}

/// `BPF(src_file="x.c")`, `BPF(src_file=os.path.join(os.path.dirname(__file__), "x.c"))`:
/// the C file, relative to the tool's directory (where BCC looks too). `BPF(text=bpf_text)`
/// where `bpf_text = open("x.c").read()` (or `f.read()` in `with open("x.c") as f:`, then
/// `.replace()`d at will): that file, when its name is a relative literal.
fn src_file(py: &mut Py, call: Node, a: &mut Analysis) {
    let src = py.src();
    let Some(args) = call.field("arguments") else {
        return;
    };
    let mut cursor = args.walk();
    for kw in args
        .named_children(&mut cursor)
        .filter(|k| k.kind() == "keyword_argument")
    {
        let Some(v) = kw.field("value") else {
            continue;
        };
        match kw.field("name").map(|n| text(n, src)) {
            Some("src_file") => {}
            Some("text") => {
                a.bcc_sources.extend(text_files(py, call, v));
                continue;
            }
            _ => continue,
        }
        match literal_path(py, v) {
            Some(p) => a.bcc_sources.push(p),
            // A note, not yet a refusal: the tables may still be found in the tool's own
            // strings; if they are not, linking refuses the tool.
            None => {
                let mut d = Diagnostic::at(
                    py.file,
                    v.start_byte(),
                    Rule::UnlinkedProgram,
                    "bpf-migrate cannot tell which file this src_file names",
                )
                .help("pass the C file too; a tool whose tables it cannot find is left untouched");
                d.demote(Severity::Note);
                py.diags.push(d);
            }
        }
    }
}

/// The file a path expression names: a string literal, or `os.path.join(...)` of
/// `os.path.dirname(__file__)` and literals; relative to the tool's directory.
fn literal_path(py: &Py, v: Node) -> Option<PathBuf> {
    let src = py.src();
    let literals: Vec<String> = descendants(v)
        .into_iter()
        .filter(|n| n.kind() == "string")
        .map(|n| string_value(n, src))
        .collect();
    let dynamic = descendants(v).iter().any(|n| {
        n.kind() == "identifier"
            && !matches!(
                text(*n, src),
                "os" | "path" | "join" | "dirname" | "realpath" | "abspath" | "__file__"
            )
    });
    let name = literals.last().filter(|_| !dynamic)?;
    let dir = py.file.path.parent().unwrap_or(Path::new(""));
    let rel = name.trim_start_matches('/');
    let p = if v.kind() == "string" && name.starts_with('/') {
        PathBuf::from(name)
    } else {
        dir.join(rel)
    };
    Some(p.components().collect())
}

/// The C files the `text=` of a `BPF()` call reads (see `src_file`); none when any value the
/// variable may hold is not such a read.
fn text_files(py: &Py, bpf: Node, v: Node) -> Vec<PathBuf> {
    let src = py.src();
    if let Some(p) = read_of_open(py, v) {
        return vec![p];
    }
    if v.kind() != "identifier" {
        return Vec::new();
    }
    let name = text(v, src);
    // The assignments before the call, in its function, else at module level; those that
    // do not read the variable itself (`bpf_text = bpf_text.replace(...)` does) are where its
    // text comes from.
    let func = ancestor_any(bpf, &["function_definition"]);
    let assigned = |scope: Option<Node>| -> Vec<Node> {
        of_kind(py.nodes, "assignment")
            .into_iter()
            .filter(|n| n.end_byte() <= bpf.start_byte())
            .filter(|n| ancestor_any(*n, &["function_definition"]) == scope)
            .filter(|n| n.field("left").is_some_and(|l| text(l, src) == name))
            .collect()
    };
    let mut sets = assigned(func);
    if sets.is_empty() && func.is_some() {
        sets = assigned(None);
    }
    let origins: Vec<Node> = sets
        .iter()
        .filter_map(|n| n.field("right"))
        .filter(|r| {
            !descendants(*r)
                .iter()
                .any(|x| x.kind() == "identifier" && text(*x, src) == name)
        })
        .collect();
    let files: Vec<PathBuf> = origins
        .iter()
        .filter_map(|r| read_of_open(py, *r))
        .collect();
    if files.is_empty() || files.len() != origins.len() {
        return Vec::new();
    }
    files
}

/// `open(PATH).read()`, or `f.read()` inside `with open(PATH) as f:`, with PATH a relative
/// literal path (`literal_path`): the file read.
fn read_of_open(py: &Py, e: Node) -> Option<PathBuf> {
    let src = py.src();
    let f = e.field("function").filter(|_| e.kind() == "call")?;
    if f.kind() != "attribute" || f.field("attribute").map(|a| text(a, src)) != Some("read") {
        return None;
    }
    if e.field("arguments")?.named_child_count() != 0 {
        return None;
    }
    let object = f.field("object")?;
    let opened = match object.kind() {
        "call" => object,
        "identifier" => {
            // The `with` item that names the file object, in a `with` around `e`.
            let alias = text(object, src);
            let mut at = e;
            loop {
                let w = ancestor_any(at, &["with_statement"])?;
                let found = descendants(w).into_iter().find(|n| {
                    n.kind() == "as_pattern"
                        && n.field("alias").is_some_and(|x| text(x, src) == alias)
                        && ancestor_any(*n, &["with_statement"]) == Some(w)
                });
                if let Some(p) = found {
                    break p.named_child(0)?;
                }
                at = w;
            }
        }
        _ => return None,
    };
    let callee = opened
        .field("function")
        .filter(|_| opened.kind() == "call")?;
    if text(callee, src) != "open" {
        return None;
    }
    let path = opened.field("arguments")?.named_child(0)?;
    if path.kind() == "keyword_argument"
        || descendants(path)
            .into_iter()
            .any(|n| n.kind() == "string" && string_value(n, src).starts_with('/'))
    {
        return None;
    }
    literal_path(py, path)
}

/// The byte ranges of a string literal's contents (prefixes, quotes and interpolations left
/// out): the C of a BCC string.
pub fn string_contents(n: Node) -> Vec<Range<usize>> {
    let mut cursor = n.walk();
    n.children(&mut cursor)
        .filter(|c| c.kind() == "string_content")
        .map(|c| c.start_byte()..c.end_byte())
        .collect()
}

/// The value of a plain string literal (prefixes and quotes dropped; escapes kept).
fn string_value(n: Node, src: &str) -> String {
    string_contents(n).into_iter().map(|r| &src[r]).collect()
}

/// The value of `n` when it is a string literal whose value is known before run time: not
/// an f-string with an interpolation (`f"{name}"`).
pub(super) fn literal_string(n: Node, src: &str) -> Option<String> {
    let mut cursor = n.walk();
    let interpolated = n.children(&mut cursor).any(|c| c.kind() == "interpolation");
    (n.kind() == "string" && !interpolated).then(|| string_value(n, src))
}

/// The table an expression refers to: `b["events"]`, `b[b"events"]`, `b.get_table("events")`,
/// or a variable (or attribute) assigned one of those.
fn table_name(py: &Py, expr: Node, depth: usize) -> Option<String> {
    let src = py.src();
    if depth > 4 {
        return None;
    }
    // A key that is no literal may be the argument a template named its table by.
    let key = |k: Node| {
        literal_string(k, src).or_else(|| {
            bcc_format::identity(py.nodes, k, src).filter(|n| py.format_tables.contains(n))
        })
    };
    match expr.kind() {
        "subscript" => key(expr.field("subscript")?),
        "call" => {
            let f = expr.field("function")?;
            let attr = f.field("attribute")?;
            if text(attr, src) != "get_table" {
                return None;
            }
            let args = expr.field("arguments")?;
            key(args.named_child(0)?)
        }
        "identifier" | "attribute" => {
            let want = text(expr, src);
            // The last assignment before this use, in the same function (or the module).
            let scope = ancestor_any(expr, &["function_definition"]).unwrap_or(expr);
            let mut best = None;
            for n in of_kind(py.nodes, "assignment")
                .iter()
                .filter(|n| n.start_byte() < expr.start_byte())
            {
                let in_scope = expr.kind() == "attribute"
                    || scope == expr
                    || (n.start_byte() >= scope.start_byte() && n.end_byte() <= scope.end_byte());
                if in_scope && n.field("left").is_some_and(|l| text(l, src) == want) {
                    best = n.field("right");
                }
            }
            table_name(py, best?, depth + 1)
        }
        "parenthesized_expression" => table_name(py, expr.named_child(0)?, depth + 1),
        _ => None,
    }
}

/// The nearest ancestor of `n` of one of `kinds`.
pub(super) fn ancestor_any<'t>(n: Node<'t>, kinds: &[&str]) -> Option<Node<'t>> {
    let mut p = n.parent();
    while let Some(x) = p {
        if kinds.contains(&x.kind()) {
            return Some(x);
        }
        p = x.parent();
    }
    None
}

/// `T.open_perf_buffer(cb, page_cnt=N, lost_cb=L, wakeup_events=W)` → `T.open_ring_buffer(cb)`.
fn open_perf_buffer(py: &mut Py, call: Node, f: Node, attr: Node, a: &mut Analysis) {
    let src = py.src();
    let at = call.start_byte();
    let object = f.field("object").unwrap();
    let Some(map) = table_name(py, object, 0) else {
        py.report(object.start_byte(), Rule::UnresolvedMap, format!("cannot tell which table `{}` is", text(object, src)), "bpf-migrate follows b[\"name\"], b.get_table(\"name\") and variables assigned from them; migrate by hand");
        return;
    };
    let Some(args) = call.field("arguments") else {
        return;
    };
    let mut cursor = args.walk();
    let items: Vec<Node> = args
        .named_children(&mut cursor)
        .filter(|n| n.kind() != "comment")
        .collect();
    let mut positional = Vec::new();
    let (mut cb, mut cb_kw, mut pages, mut lost) = (None, false, None, None);
    for it in &items {
        if it.kind() == "keyword_argument" {
            let name = it.field("name").map(|n| text(n, src)).unwrap_or("");
            let value = it.field("value").unwrap();
            match name {
                "callback" => {
                    cb = Some(value);
                    cb_kw = true;
                }
                "page_cnt" => pages = Some(value),
                "lost_cb" => lost = Some(value),
                "wakeup_events" => {}
                other => {
                    py.report(
                        it.start_byte(),
                        Rule::UnsupportedForm,
                        format!("open_perf_buffer() argument `{other}` is not understood"),
                        "migrate by hand",
                    );
                    return;
                }
            }
        } else if matches!(it.kind(), "list_splat" | "dictionary_splat") {
            py.report(
                it.start_byte(),
                Rule::UnsupportedForm,
                "open_perf_buffer() is called with unpacked arguments",
                "migrate by hand",
            );
            return;
        } else {
            positional.push(*it);
        }
    }
    for (i, p) in positional.iter().enumerate() {
        match i {
            0 => cb = Some(*p),
            1 => pages = Some(*p),
            2 => lost = Some(*p),
            _ => {}
        }
    }
    let Some(cb) = cb else {
        py.report(
            at,
            Rule::UnsupportedForm,
            "open_perf_buffer() without a callback",
            "migrate by hand",
        );
        return;
    };
    if !callback(py, cb, &map) {
        return;
    }
    let compat = py.opts.strategy == Strategy::Compat;
    let lost = lost.filter(|l| text(*l, src) != "None");
    if let Some(l) = lost.filter(|_| py.opts.lost == Lost::Drop) {
        let when = if compat {
            "not called on the ring path"
        } else {
            "no longer called"
        };
        py.report(
            l.start_byte(),
            Rule::BccOpenPerfBuffer,
            format!(
                "the lost-event callback `{}` is {when}: a ring buffer has none",
                text(l, src)
            ),
            bcc_lost_counter::DROP_HELP,
        );
    }
    let page_value = pages.map(|p| text(p, src).trim().parse::<u64>().ok());
    if let Some(None) = page_value {
        let what = if compat {
            "applies to the perf path only"
        } else {
            "no longer applies"
        };
        py.report(
            pages.unwrap().start_byte(),
            Rule::BccOpenPerfBuffer,
            format!("the page count `{}` is chosen at run time and {what}", text(pages.unwrap(), src)),
            "a ring buffer's size is set in the C text, BPF_RINGBUF_OUTPUT(name, pages) (--ringbuf-size); an option that set the page count does nothing to it",
        );
    }
    if compat {
        py.edits.push(bcc_compat::open_edit(src, object, args));
    } else {
        py.edits.push(Edit::replace(
            attr.start_byte(),
            attr.end_byte(),
            "open_ring_buffer",
            Rule::BccOpenPerfBuffer,
        ));
    }
    match lost.filter(|_| py.opts.lost == Lost::Count) {
        // The arguments wait for the whole tool (`bcc_lost_counter::settle`).
        Some(l) => py.lost_opens.push(LostOpen {
            args: (args.start_byte(), args.end_byte()),
            cb: text(cb, src).to_string(),
            cb_span: (cb.start_byte(), cb.end_byte()),
            cb_keyword: cb_kw,
            lost: text(l, src).to_string(),
            lost_at: l.start_byte(),
            counter: bcc_lost_counter::counter_expr(object, src, &map),
            map: map.clone(),
            consumer: a.consumers.len(),
        }),
        // Under compat the arguments stay, for the perf path.
        None if compat => {}
        // `(cb)` or `(callback=cb)`: what is around the callback goes, the callback itself is
        // left for its own edits (a lambda's `cpu` renamed).
        None => {
            let head = if cb_kw { "(callback=" } else { "(" };
            if &src[args.start_byte()..cb.start_byte()] != head {
                py.edits.push(Edit::replace(
                    args.start_byte(),
                    cb.start_byte(),
                    head,
                    Rule::BccOpenPerfBuffer,
                ));
            }
            if &src[cb.end_byte()..args.end_byte()] != ")" {
                py.edits.push(Edit::replace(
                    cb.end_byte(),
                    args.end_byte(),
                    ")",
                    Rule::BccOpenPerfBuffer,
                ));
            }
        }
    }
    a.consumers.push(Consumer {
        map,
        offset: at,
        pages: page_value.flatten(),
        lost_counted: false,
        bpf2go: false,
    });
}

/// The callback's CPU parameter becomes `ctx` (BCC passes the ring buffer's ctx first). A
/// callback that reads the CPU gets it back from a field linking adds to the event
/// (`cpu_field`), read after the callback's `event = b["events"].event(data)`; one that reads
/// it before, or reads the event otherwise, is refused.
fn callback(py: &mut Py, cb: Node, map: &str) -> bool {
    let src = py.src();
    let (def, params) = match resolve_callback(py, cb, 0, &mut Vec::new()) {
        Ok(x) => x,
        Err(msg) => {
            py.report(cb.start_byte(), Rule::CallbackForm, msg, "bpf-migrate rewrites callbacks defined in the same file as def f(cpu, data, size), methods, lambdas, functools.partial of those and a factory's one returned function; migrate by hand");
            return false;
        }
    };
    if !py.done_callbacks.insert(def.start_byte()) {
        return true;
    }
    let names: Vec<&str> = params.iter().map(|p| text(*p, src)).collect();
    if names.len() < 3 {
        py.report(
            cb.start_byte(),
            Rule::CallbackForm,
            format!("the callback for `{map}` takes fewer than (cpu, data, size)"),
            "migrate by hand",
        );
        return false;
    }
    let cpu = params[names.len() - 3];
    let cpu_name = text(cpu, src);
    let body = def.field("body").unwrap_or(def);
    if let Some(r) = valued_returns(body, src).first() {
        py.diags.push(
            Diagnostic::at(
                py.file,
                r.start_byte(),
                Rule::BccCallback,
                format!("the callback for `{map}` returns a value (`{}`): BCC ignored a perf buffer callback's value, but passes a ring buffer callback's on to libbpf, where a negative number ends that poll early (the records after it come at the next poll, not with this one)", text(*r, src)),
            )
            .help("if the value can be negative and the tool relies on one poll taking every record, return nothing from the callback"),
        );
    }
    let (forwarded, uses): (Vec<Node>, Vec<Node>) = descendants(body)
        .into_iter()
        .filter(|n| text(*n, src) == cpu_name && is_variable(*n))
        .partition(|n| forwarded_unread(py, *n));
    // Under compat the callback serves both paths as it is: the perf path passes the CPU,
    // the ring path its context, which a callback that reads the CPU cannot use.
    if py.opts.strategy == Strategy::Compat {
        if let Some(u) = uses.first() {
            py.diags.push(Diagnostic::at(
                py.file,
                u.start_byte(),
                Rule::CompatUnsupported,
                format!("--strategy compat cannot migrate this tool: the callback for `{map}` reads `{cpu_name}`, the CPU, which the ring path cannot give"),
            ).help("migrate it with the default strategy, which adds a cpu field to the event, or by hand"));
            return false;
        }
        return true;
    }
    if let Some(u) = uses.first() {
        let data_name = text(params[names.len() - 2], src);
        let read = event_read(py, body, data_name).and_then(|r| {
            if uses.iter().all(|n| n.start_byte() >= r.end) {
                // After the event is read: from it.
                Some((
                    r.end,
                    format!("\n{}{cpu_name} = {}.{}", r.indent, r.name, super::CPU_FIELD),
                ))
            } else {
                // Before: read at the top of the body, where the table expression means what
                // it means there (nothing it names is assigned in the callback).
                let first = first_statement(body)?;
                let assigned = descendants(body)
                    .into_iter()
                    .filter(|n| n.kind() == "assignment")
                    .filter_map(|a| a.field("left"))
                    .flat_map(descendants)
                    .filter(|n| n.kind() == "identifier")
                    .map(|n| text(n, src))
                    .collect::<HashSet<_>>();
                let free = descendants(r.table)
                    .into_iter()
                    .filter(|n| n.kind() == "identifier" && is_variable(*n))
                    .all(|n| !assigned.contains(text(n, src)));
                free.then(|| {
                    let indent = crate::source::indent_at(src, first.start_byte());
                    (
                        first.start_byte(),
                        format!(
                            "{cpu_name} = {}.event({data_name}).{}\n{indent}",
                            text(r.table, src),
                            super::CPU_FIELD
                        ),
                    )
                })
            }
        });
        match read {
            Some((at, python)) => {
                py.cpu_uses.push(CpuUse {
                    maps: vec![map.to_string()],
                    callback: def
                        .field("name")
                        .map_or("lambda", |n| text(n, src))
                        .to_string(),
                    offset: u.start_byte(),
                    uses: uses.len(),
                    at,
                    lead: String::new(),
                    param: String::new(),
                    data: Some(data_name.to_string()),
                    read_as: Vec::new(),
                    python: Some(python),
                    rust: false,
                });
            }
            _ => {
                py.report(
                    u.start_byte(),
                    Rule::CallbackUsesCpu,
                    format!("the callback for `{map}` uses `{cpu_name}`, the CPU that produced the event, and does not read the event with `event = b[\"{map}\"].event({data_name})` (or reads it through a name it assigns); a ring buffer callback receives a context there instead"),
                    "read the event with event = b[\"...\"].event(data) and run bpf-migrate again, which then adds a cpu field to the event; or, by hand, add the field, set it with bpf_get_smp_processor_id() in the C code, and print it instead",
                );
                return false;
            }
        }
    }
    let taken = |n: &str| {
        names.contains(&n)
            || descendants(body)
                .iter()
                .any(|x| text(*x, src) == n && is_variable(*x))
    };
    let new = ["ctx", "_ctx", "ring_ctx"]
        .into_iter()
        .find(|n| *n == cpu_name || !taken(n))
        .unwrap_or("_ctx");
    if new != cpu_name {
        // The parameter, and where it is only passed on unread (the context goes there now);
        // where the CPU is read, `cpu_field` has set the name again from the event.
        let renamed = if uses.is_empty() { &forwarded[..] } else { &[] };
        for n in std::iter::once(&cpu).chain(renamed) {
            py.edits.push(Edit::replace(
                n.start_byte(),
                n.end_byte(),
                new,
                Rule::BccCallback,
            ));
        }
    }
    true
}

/// The `return X` statements of a function's body (not of functions or classes inside it)
/// whose value may be a negative number: any but `None`, `True`, `False` and a literal
/// of 0 or more.
fn valued_returns<'t>(body: Node<'t>, src: &str) -> Vec<Node<'t>> {
    let mut found = Vec::new();
    let mut stack = vec![body];
    while let Some(n) = stack.pop() {
        match n.kind() {
            "function_definition" | "lambda" | "class_definition" if n != body => continue,
            "return_statement" => {
                let harmless = n.named_child(0).is_none_or(|v| {
                    matches!(v.kind(), "none" | "true" | "false" | "integer" | "float")
                        && !text(v, src).starts_with('-')
                });
                if !harmless {
                    found.push(n);
                }
                continue;
            }
            _ => {}
        }
        let mut cursor = n.walk();
        stack.extend(n.named_children(&mut cursor));
    }
    found.sort_by_key(|n| n.start_byte());
    found
}

/// A callback's `NAME = TABLE.event(data)`.
struct EventRead<'t> {
    name: String,
    table: Node<'t>,
    /// Where the statement ends, and its indentation.
    end: usize,
    indent: String,
}

/// The first statement of a body, a docstring aside.
fn first_statement(body: Node<'_>) -> Option<Node<'_>> {
    let mut cursor = body.walk();
    let mut stmts = body
        .named_children(&mut cursor)
        .filter(|s| s.kind() != "comment");
    let first = stmts.next()?;
    let docstring = first.kind() == "expression_statement"
        && first.named_child(0).is_some_and(|s| s.kind() == "string");
    if docstring { stmts.next() } else { Some(first) }
}

/// The callback body's first statement that reads the event, `NAME = TABLE.event(data)`.
fn event_read<'t>(py: &Py, body: Node<'t>, data: &str) -> Option<EventRead<'t>> {
    let src = py.src();
    let mut cursor = body.walk();
    let stmt = body.named_children(&mut cursor).find(|s| {
        descendants(*s).iter().any(|n| {
            n.kind() == "call"
                && n.field("function").is_some_and(|f| {
                    f.kind() == "attribute"
                        && f.field("attribute")
                            .is_some_and(|a| text(a, src) == "event")
                })
        })
    })?;
    let asg = stmt
        .named_child(0)
        .filter(|a| stmt.kind() == "expression_statement" && a.kind() == "assignment")?;
    let left = asg.field("left").filter(|l| l.kind() == "identifier")?;
    let call = asg.field("right").filter(|r| r.kind() == "call")?;
    let table = call.field("function")?.field("object")?;
    let args = call.field("arguments")?;
    let only_data =
        args.named_child_count() == 1 && args.named_child(0).is_some_and(|a| text(a, src) == data);
    only_data.then(|| EventRead {
        name: text(left, src).to_string(),
        table,
        end: stmt.end_byte(),
        indent: crate::source::indent_at(src, stmt.start_byte()).to_string(),
    })
}

/// `u` is only passed on, positionally, to a function of the file that never reads that
/// parameter (`def cb(cpu, data, size): print_event(cpu, data, size, "READ")` with
/// `def print_event(cpu, data, size, rw)` leaving `cpu` alone): not a read of the CPU. The
/// ring buffer's context then goes there instead, unread too.
fn forwarded_unread(py: &Py, u: Node) -> bool {
    let src = py.src();
    let Some(args) = u.parent().filter(|p| p.kind() == "argument_list") else {
        return false;
    };
    let Some(call) = args.parent().filter(|c| c.kind() == "call") else {
        return false;
    };
    let Some(f) = call.field("function").filter(|f| f.kind() == "identifier") else {
        return false;
    };
    let mut w = args.walk();
    let positional: Vec<Node> = args.named_children(&mut w).collect();
    let Some(k) = positional.iter().position(|a| a.id() == u.id()) else {
        return false;
    };
    if positional[..k]
        .iter()
        .any(|a| a.kind() != "identifier" && a.kind() != "string" && a.kind() != "integer")
    {
        // A keyword or unpacked argument before it: its position is not plain.
        return false;
    }
    let defs: Vec<Node> = py
        .nodes
        .iter()
        .copied()
        .filter(|n| {
            n.kind() == "function_definition"
                && n.field("name")
                    .is_some_and(|x| text(x, src) == text(f, src))
        })
        .collect();
    let [def] = defs[..] else {
        return false;
    };
    let Some(params) = def.field("parameters") else {
        return false;
    };
    let mut w = params.walk();
    let params: Vec<Node> = params.named_children(&mut w).collect();
    let Some(p) = params.get(k).filter(|p| p.kind() == "identifier") else {
        return false;
    };
    let name = text(*p, src);
    let body = def.field("body").unwrap_or(def);
    !descendants(body)
        .into_iter()
        .any(|n| text(n, src) == name && is_variable(n))
}

/// An identifier that names a variable: not the `cpu` of `event.cpu`, nor a keyword name.
fn is_variable(n: Node) -> bool {
    n.kind() == "identifier"
        && !n.parent().is_some_and(|p| {
            (p.kind() == "attribute" && p.field("attribute") == Some(n))
                || (p.kind() == "keyword_argument" && p.field("name") == Some(n))
        })
}

/// The function (def or lambda) a callback expression names, and its parameter name nodes.
/// `through` collects the arguments of the calls a callback parameter was followed through
/// (`snoop(b, print_event)`): the function is named there, and that is no other use.
fn resolve_callback<'t>(
    py: &Py<'_, 't>,
    cb: Node<'t>,
    depth: usize,
    through: &mut Vec<(usize, usize)>,
) -> Result<(Node<'t>, Vec<Node<'t>>), String> {
    let src = py.src();
    if depth > 3 {
        return Err("the callback is wrapped too deeply".into());
    }
    let (def, name) = match cb.kind() {
        "identifier" => {
            let name = text(cb, src);
            if let Some(param) = parameter_of_enclosing(py, cb) {
                return through_callers(py, cb, param, depth, through);
            }
            let defs: Vec<Node> = of_kind(py.nodes, "function_definition")
                .into_iter()
                .filter(|n| n.field("name").is_some_and(|x| text(x, src) == name))
                .collect();
            match defs[..] {
                [d] => (d, name),
                [] => {
                    // A variable holding the callback: `cb = functools.partial(f, ...)`.
                    let value = of_kind(py.nodes, "assignment")
                        .into_iter()
                        .filter(|n| n.start_byte() < cb.start_byte())
                        .filter(|n| n.field("left").is_some_and(|l| text(l, src) == name))
                        .filter_map(|n| n.field("right"))
                        .next_back();
                    return match value {
                        Some(v) => resolve_callback(py, v, depth + 1, through),
                        None => Err(format!("the callback `{name}` is not defined in this file")),
                    };
                }
                _ => return Err(format!("several functions are named `{name}`")),
            }
        }
        "attribute" if cb.field("object").is_some_and(|o| text(o, src) == "self") => {
            let name = text(cb.field("attribute").unwrap(), src);
            let class = ancestor_any(cb, &["class_definition"]).ok_or("`self.` outside a class")?;
            let d = descendants(class)
                .into_iter()
                .find(|n| {
                    n.kind() == "function_definition"
                        && n.field("name").is_some_and(|x| text(x, src) == name)
                })
                .ok_or_else(|| format!("the method `{name}` is not defined in this class"))?;
            (d, name)
        }
        "call" => {
            let f = cb.field("function").ok_or("not a function")?;
            let fname = text(f, src);
            if let Some(inner) = factory_result(py, cb, through)? {
                return resolve_callback(py, inner, depth + 1, through);
            }
            if fname != "partial" && fname != "functools.partial" {
                return Err(format!(
                    "the callback is built by `{fname}(...)`, which bpf-migrate cannot follow"
                ));
            }
            let first = cb
                .field("arguments")
                .and_then(|a| a.named_child(0))
                .ok_or("partial() without a function")?;
            return resolve_callback(py, first, depth + 1, through);
        }
        "lambda" => {
            let params = cb
                .field("parameters")
                .map(|p| param_names(p, src))
                .unwrap_or_default();
            return Ok((cb, params));
        }
        _ => {
            return Err(format!(
                "the callback `{}` is not a function name",
                text(cb, src)
            ));
        }
    };
    // The function must not be called or passed anywhere else with a CPU in first place.
    let def_name = def.field("name").unwrap();
    for n in of_kind(py.nodes, "identifier")
        .iter()
        .filter(|n| text(**n, src) == name && **n != def_name)
    {
        let in_open = ancestor_any(*n, &["call"]).into_iter().any(|c| {
            descendants(c)
                .iter()
                .any(|x| x.kind() == "identifier" && text(*x, src) == "open_perf_buffer")
                || c.field("function")
                    .is_some_and(|f| matches!(text(f, src), "partial" | "functools.partial"))
        });
        let passed = through
            .iter()
            .any(|&(s, e)| n.start_byte() >= s && n.end_byte() <= e);
        if !in_open && !passed {
            return Err(format!(
                "the callback `{name}` is also used here, with the perf buffer's argument order"
            ));
        }
    }
    let params = def
        .field("parameters")
        .map(|p| param_names(p, src))
        .unwrap_or_default();
    Ok((def, params))
}

/// The function a callback factory returns, for `call` = `factory(...)`: the file's one
/// function of that name, called nowhere else, every `return` of which (not those of the
/// functions inside it) gives the same function it defines inside itself
/// (`def printer(netns): def print_event(cpu, data, size): ... return print_event`). The
/// returns are marked in `through` as passing it on, not using it. `None` when `call` is not
/// such a factory's; an error when the factory returns something else too.
fn factory_result<'t>(
    py: &Py<'_, 't>,
    call: Node<'t>,
    through: &mut Vec<(usize, usize)>,
) -> Result<Option<Node<'t>>, String> {
    let src = py.src();
    let Some(f) = call.field("function").filter(|f| f.kind() == "identifier") else {
        return Ok(None);
    };
    let name = text(f, src);
    let defs: Vec<Node> = of_kind(py.nodes, "function_definition")
        .into_iter()
        .filter(|n| n.field("name").is_some_and(|x| text(x, src) == name))
        .collect();
    let [factory] = defs[..] else {
        return Ok(None);
    };
    let Some(body) = factory.field("body") else {
        return Ok(None);
    };
    let own = |n: Node| {
        ancestor_any(n, &["function_definition", "lambda"]).is_some_and(|a| a.id() == factory.id())
    };
    let returns: Vec<Node> = descendants(body)
        .into_iter()
        .filter(|n| n.kind() == "return_statement" && own(*n))
        .collect();
    let mut w = body.walk();
    let inner: Vec<Node> = body
        .named_children(&mut w)
        .filter(|n| n.kind() == "function_definition")
        .collect();
    let returned = |r: &Node<'t>| -> Option<Node<'t>> {
        r.named_child(0).filter(|v| {
            v.kind() == "identifier"
                && r.named_child_count() == 1
                && inner.iter().any(|d| {
                    d.field("name")
                        .is_some_and(|x| text(x, src) == text(*v, src))
                })
        })
    };
    let Some(first) = returns.first().and_then(returned) else {
        return Ok(None);
    };
    if returns
        .iter()
        .any(|r| returned(r).is_none_or(|v| text(v, src) != text(first, src)))
    {
        return Err(format!(
            "the callback factory `{name}` returns something other than the one function it defines"
        ));
    }
    let elsewhere = of_kind(py.nodes, "identifier")
        .into_iter()
        .any(|n| text(n, src) == name && n.id() != f.id() && Some(n) != factory.field("name"));
    if elsewhere {
        return Err(format!(
            "the callback factory `{name}` is also used elsewhere, where its function may get the perf buffer's arguments"
        ));
    }
    through.extend(returns.iter().map(|r| (r.start_byte(), r.end_byte())));
    Ok(Some(first))
}

/// A parameter of a function that a callback expression names.
struct Param<'t> {
    func: Node<'t>,
    /// The parameter's name where it is declared.
    decl: Node<'t>,
    /// Its position among the positional parameters; `None` when it is keyword-only.
    index: Option<usize>,
    default: Option<Node<'t>>,
}

/// The parameter of an enclosing function (the nearest that has one of that name) that the
/// identifier `id` names, unless the function assigns it another value.
fn parameter_of_enclosing<'t>(py: &Py<'_, 't>, id: Node<'t>) -> Option<Param<'t>> {
    let src = py.src();
    let name = text(id, src);
    let mut scope = id;
    while let Some(func) = ancestor_any(scope, &["function_definition", "lambda"]) {
        scope = func;
        let Some(params) = func.field("parameters") else {
            continue;
        };
        let mut cursor = params.walk();
        let mut index = Some(0);
        for p in params.named_children(&mut cursor) {
            let (decl, default) = match p.kind() {
                "identifier" => (Some(p), None),
                "typed_parameter" => (p.named_child(0), None),
                "default_parameter" | "typed_default_parameter" => {
                    (p.field("name"), p.field("value"))
                }
                "list_splat_pattern" | "keyword_separator" => {
                    index = None;
                    (p.named_child(0), None)
                }
                _ => (None, None),
            };
            let Some(decl) = decl.filter(|d| d.kind() == "identifier") else {
                continue;
            };
            if text(decl, src) == name {
                if func.kind() == "lambda" {
                    return None;
                }
                let body = func.field("body")?;
                let rebound = descendants(body).into_iter().any(|n| {
                    matches!(n.kind(), "assignment" | "augmented_assignment")
                        && n.field("left").is_some_and(|l| text(l, src) == name)
                });
                return (!rebound && p.kind() != "list_splat_pattern").then_some(Param {
                    func,
                    decl,
                    index,
                    default,
                });
            }
            index = index.map(|i| i + 1);
        }
    }
    None
}

/// The callback a function parameter holds (`def snoop(bpf, handler):
/// bpf["events"].open_perf_buffer(handler)`), from every call of the function in the file
/// (`snoop(b, print_event)`): all of them must pass the same function.
fn through_callers<'t>(
    py: &Py<'_, 't>,
    cb: Node<'t>,
    param: Param<'t>,
    depth: usize,
    through: &mut Vec<(usize, usize)>,
) -> Result<(Node<'t>, Vec<Node<'t>>), String> {
    let src = py.src();
    let name = text(cb, src);
    let func_name = param
        .func
        .field("name")
        .ok_or("a function without a name")?;
    let fname = text(func_name, src);
    if ancestor_any(
        param.func,
        &["class_definition", "function_definition", "lambda"],
    )
    .is_some_and(|a| a.kind() == "class_definition")
    {
        return Err(format!(
            "the callback `{name}` is a parameter of the method `{fname}`; bpf-migrate follows the parameters of functions, not of methods"
        ));
    }
    // The parameter itself must be used only as a callback.
    let body = param
        .func
        .field("body")
        .ok_or("a function without a body")?;
    for n in descendants(body)
        .into_iter()
        .filter(|n| text(*n, src) == name && is_variable(*n) && *n != param.decl)
    {
        let in_open = ancestor_any(n, &["call"]).is_some_and(|c| {
            descendants(c)
                .iter()
                .any(|x| x.kind() == "identifier" && text(*x, src) == "open_perf_buffer")
        });
        if !in_open {
            return Err(format!(
                "the callback `{name}` is also used here, with the perf buffer's argument order"
            ));
        }
    }
    let same_name: Vec<Node> = of_kind(py.nodes, "function_definition")
        .into_iter()
        .filter(|n| n.field("name").is_some_and(|x| text(x, src) == fname))
        .collect();
    if same_name.len() > 1 {
        return Err(format!(
            "several functions are named `{fname}`, so bpf-migrate cannot tell what `{name}` is"
        ));
    }
    // What each call of the function passes as the parameter.
    let mut passed = Vec::new();
    for n in of_kind(py.nodes, "identifier")
        .into_iter()
        .filter(|n| text(*n, src) == fname && *n != func_name && is_variable(*n))
    {
        let call = n
            .parent()
            .filter(|c| c.kind() == "call" && c.field("function") == Some(n))
            .ok_or_else(|| {
                format!(
                    "`{fname}` is used other than in a call, so bpf-migrate cannot tell what its `{name}` is"
                )
            })?;
        let args = call.field("arguments").ok_or("a call without arguments")?;
        let mut cursor = args.walk();
        let items: Vec<Node> = args
            .named_children(&mut cursor)
            .filter(|a| a.kind() != "comment")
            .collect();
        if items
            .iter()
            .any(|a| matches!(a.kind(), "list_splat" | "dictionary_splat"))
        {
            return Err(format!("`{fname}` is called with unpacked arguments"));
        }
        let keyword = items.iter().find_map(|a| {
            (a.kind() == "keyword_argument"
                && a.field("name").is_some_and(|k| text(k, src) == name))
            .then(|| a.field("value"))
            .flatten()
        });
        let positional = param.index.and_then(|i| {
            items
                .iter()
                .filter(|a| a.kind() != "keyword_argument")
                .nth(i)
                .copied()
        });
        let value = keyword
            .or(positional)
            .or(param.default)
            .ok_or_else(|| format!("a call of `{fname}` does not pass `{name}`"))?;
        passed.push(value);
    }
    if passed.is_empty() {
        return Err(format!(
            "the callback `{name}` is a parameter of `{fname}`, which is not called in this file"
        ));
    }
    through.extend(passed.iter().map(|v| (v.start_byte(), v.end_byte())));
    let mut found: Option<(Node<'t>, Vec<Node<'t>>)> = None;
    for v in passed {
        let (def, params) = resolve_callback(py, v, depth + 1, through)?;
        match &found {
            Some((d, _)) if *d != def => {
                return Err(format!(
                    "the calls of `{fname}` pass different callbacks as `{name}`"
                ));
            }
            Some(_) => {}
            None => found = Some((def, params)),
        }
    }
    found.ok_or_else(|| format!("`{name}` cannot be followed"))
}

/// Parameter name nodes (plain, typed or with defaults); `*args` makes the list unusable.
fn param_names<'t>(params: Node<'t>, src: &str) -> Vec<Node<'t>> {
    let mut out = Vec::new();
    let mut cursor = params.walk();
    for p in params.named_children(&mut cursor) {
        match p.kind() {
            "identifier" => out.push(p),
            "typed_parameter" | "default_parameter" | "typed_default_parameter" => {
                if let Some(id) = p
                    .field("name")
                    .or_else(|| p.named_child(0))
                    .filter(|n| n.kind() == "identifier")
                {
                    out.push(id);
                }
            }
            _ => return Vec::new(),
        }
    }
    let _ = src;
    out
}

#[cfg(test)]
mod tests {
    use crate::engine::Options;
    use crate::engine::testkit::{check_fallback, check_migrate, check_refused, run};
    use crate::report::Severity;
    use crate::rules::Rule;

    /// A BCC tool's C: one table, one submit.
    const C: &str = r#"
#include <linux/sched.h>

struct data_t {
    u32 pid;
    char comm[TASK_COMM_LEN];
};
BPF_PERF_OUTPUT(events);

int trace_exec(struct pt_regs *ctx)
{
    struct data_t data = {};

    data.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&data.comm, sizeof(data.comm));
    events.perf_submit(ctx, &data, sizeof(data));
    return 0;
}
"#;

    /// A tool whose C is `C` in a string, `head` its first lines and `tail` what reads the
    /// table.
    fn tool(head: &str, tail: &str) -> String {
        format!(
            "{head}from bcc import BPF\n\nbpf_text = \"\"\"{C}\"\"\"\n\nb = BPF(text=bpf_text)\nb.attach_kprobe(event=b.get_syscall_fnname(\"execve\"), fn_name=\"trace_exec\")\n\n{tail}"
        )
    }

    const PRINT: &str = "def print_event(cpu, data, size):\n    event = b[\"events\"].event(data)\n    print(\"%-7d %s\" % (event.pid, event.comm.decode()))\n\n";
    const LOOP: &str = "while 1:\n    try:\n        b.perf_buffer_poll()\n    except KeyboardInterrupt:\n        exit()\n";

    fn migrated(py: &str) -> String {
        py.replace(
            "BPF_PERF_OUTPUT(events);",
            "BPF_RINGBUF_OUTPUT(events, 64);",
        )
        .replace(
            "events.perf_submit(ctx, &data, sizeof(data));",
            "events.ringbuf_output(&data, sizeof(data), 0);",
        )
        .replace("def print_event(cpu,", "def print_event(ctx,")
        .replace("perf_buffer_poll", "ring_buffer_poll")
        .replace(".open_perf_buffer(", ".open_ring_buffer(")
    }

    /// An inline lambda with the page count after it: the arguments around the lambda go,
    /// and the lambda's own `cpu` is renamed (the two edits used to overlap: refused).
    #[test]
    fn an_inline_lambda_callback_with_a_page_count_is_migrated() {
        let open = "b[\"events\"].open_perf_buffer(lambda cpu, data, size: print_event(cpu, data, size), page_cnt=64)\n";
        let py = tool("", &format!("{PRINT}{open}{LOOP}"));
        let want = migrated(&py).replace(
            "open_ring_buffer(lambda cpu, data, size: print_event(cpu, data, size), page_cnt=64)",
            "open_ring_buffer(lambda ctx, data, size: print_event(ctx, data, size))",
        );
        // print_event never reads its `cpu`, so it may take the ctx the lambda passes on.
        let want = want
            .replace(
                "BPF_RINGBUF_OUTPUT(events, 64)",
                "BPF_RINGBUF_OUTPUT(events, 512)",
            )
            .replace("def print_event(ctx,", "def print_event(cpu,");
        check_migrate(&[("lam.py", &py)], &[("lam.py", &want)]);
        // The callback given by keyword after other arguments.
        let kw = py.replace(
            "open_perf_buffer(lambda cpu, data, size: print_event(cpu, data, size), page_cnt=64)",
            "open_perf_buffer(page_cnt=64, callback=lambda cpu, data, size: print_event(cpu, data, size))",
        );
        let want_kw = want.replace(
            "open_ring_buffer(lambda ctx",
            "open_ring_buffer(callback=lambda ctx",
        );
        check_migrate(&[("lam.py", &kw)], &[("lam.py", &want_kw)]);
    }

    /// A tool whose own C defines its table through a macro bpf-migrate does not know reads
    /// that table, not a libbpf map of the same name in another file: nothing is migrated.
    #[test]
    fn a_bcc_tool_never_reads_a_libbpf_map_of_another_file() {
        let py = tool(
            "",
            &format!("{PRINT}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"),
        )
        .replace(
            "BPF_PERF_OUTPUT(events);",
            "LBC_PERF_OUTPUT(events, struct data_t, 128);",
        );
        let other = "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\nstruct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} events SEC(\".maps\");\n\nSEC(\"tp/sched/sched_process_exec\")\nint on_exec(void *ctx)\n{\n\tu32 pid = 1;\n\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}\n";
        let (changed, diags) = run(
            &[("tool.py", &py), ("example.bpf.c", other)],
            &Options::default(),
        );
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags.iter().any(|d| d.file == "tool.py"
                && d.rule == Rule::UnlinkedProgram
                && d.message.contains("reads map `events`, but no BPF source")),
            "{diags:?}"
        );
    }

    /// A tool that opens its perf buffer but polls it in another module (a framework's):
    /// that poll would never read the ring. Refused, the tool left as it is.
    #[test]
    fn a_tool_that_polls_its_buffer_elsewhere_is_refused() {
        let open = "b[\"events\"].open_perf_buffer(print_event)\nframework.run(b)\n";
        let py = tool("import framework\n", &format!("{PRINT}{open}"));
        check_refused(
            &[("t.py", &py)],
            Rule::UnsupportedForm,
            "polls it nowhere in this file",
        );
    }

    /// A callback that returns a number is migrated as it is, with a note at its first
    /// `return` that may give a negative one (BCC passes it to libbpf on the ring path);
    /// `return`, `return None` or `return 0`, and returns of functions inside it, say nothing.
    #[test]
    fn a_callback_that_returns_a_value_is_migrated_with_a_note() {
        let returns = |body: &str| {
            let print = PRINT.replace(
                "    event = b[\"events\"].event(data)\n",
                &format!("    event = b[\"events\"].event(data)\n{body}"),
            );
            let open = "b[\"events\"].open_perf_buffer(print_event)\n";
            let py = tool("", &format!("{print}{open}{LOOP}"));
            let (out, diags) = run(&[("ret.py", &py)], &Options::default());
            assert_eq!(out.get("ret.py"), Some(&migrated(&py)), "{diags:?}");
            let line_of = |s: &str| py.lines().position(|l| l.trim() == s).map(|i| i + 1);
            diags
                .into_iter()
                .filter(|d| d.message.contains("returns a value"))
                .map(|d| (d.severity, Some(d.line) == line_of("return -1"), d.message))
                .collect::<Vec<_>>()
        };
        let notes = returns(
            "    if event.pid == 0:\n        return -1\n    if not event.comm:\n        return check(event)\n",
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        let (severity, at_return, message) = &notes[0];
        assert_eq!(*severity, Severity::Note);
        assert!(at_return, "{message}");
        assert!(
            message.contains("callback for `events` returns a value (`return -1`)")
                && message.contains("ends that poll early"),
            "{message}"
        );
        assert!(
            returns("    if event.pid == 0:\n        return\n    if not event.comm:\n        return None\n    def inner():\n        return -1\n    return 0\n")
                .is_empty()
        );
    }

    /// A tool that writes its C per table with `%`: the tables are told by the argument
    /// that fills `BPF_PERF_OUTPUT(%s)` and the subscript that reads them; the context's
    /// field goes with its argument. With a name that two assignments bind, or a
    /// parameter, nothing says which table is read: refused.
    #[test]
    fn a_percent_template_is_migrated_by_the_arguments_that_fill_it() {
        let py = r#"from bcc import BPF

class Watch(object):
    def __init__(self, n):
        self.table = "w%d_events" % n

    def text(self, ctx):
        decl = """
BPF_PERF_OUTPUT(%s);
""" % self.table
        body = """int kprobe__ksys_sync(struct pt_regs *ctx) {
    u32 v = 1 %% 2;
    %s.perf_submit(%s, &v, sizeof(v));
    return 0;
}
""" % (self.table, ctx)
        return decl + body

    def show(self, cpu, data, size):
        print(size)

    def open(self, b):
        b[self.table].open_perf_buffer(self.show)

w = Watch(1)
b = BPF(text=w.text("ctx"))
w.open(b)
while 1:
    b.perf_buffer_poll()
"#;
        let want = py
            .replace("BPF_PERF_OUTPUT(%s);", "BPF_RINGBUF_OUTPUT(%s, 64);")
            .replace(
                "%s.perf_submit(%s, &v, sizeof(v));",
                "%s.ringbuf_output(&v, sizeof(v), 0);",
            )
            .replace("% (self.table, ctx)", "% (self.table,)")
            .replace("def show(self, cpu,", "def show(self, ctx,")
            .replace("open_perf_buffer", "open_ring_buffer")
            .replace("perf_buffer_poll", "ring_buffer_poll");
        check_migrate(&[("watch.py", py)], &[("watch.py", &want)]);
        // A lost callback cannot be fed from a counter beside a table a field names: it goes,
        // with why.
        let lost = py.replace(
            "b[self.table].open_perf_buffer(self.show)\n",
            "b[self.table].open_perf_buffer(self.show, lost_cb=self.gone)\n\n    def gone(self, n):\n        print(n)\n",
        );
        let (changed, diags) = run(&[("watch.py", &lost)], &Options::default());
        assert!(
            changed["watch.py"].contains("b[self.table].open_ring_buffer(self.show)\n"),
            "{changed:?}"
        );
        assert!(
            diags.iter().any(|d| d
                .message
                .contains("a counter beside it would need a name filled in too")),
            "{diags:?}"
        );
        let twice = py.replace("% n\n", "% n\n        self.table += \"_x\"\n");
        assert_ne!(twice, py);
        check_refused(
            &[("watch.py", &twice)],
            Rule::UnsupportedForm,
            "cannot follow",
        );
        let parameter = py
            .replace("b[self.table]", "b[table]")
            .replace("def open(self, b)", "def open(self, b, table)");
        check_refused(
            &[("watch.py", &parameter)],
            Rule::UnresolvedMap,
            "cannot tell which table",
        );
    }

    /// A tool that polls perf buffers only to wait (BCC's inject) opens none: its poll stays,
    /// since BCC's ring_buffer_poll() raises when there is no ring buffer.
    #[test]
    fn a_poll_without_any_perf_buffer_is_left_alone() {
        let text = "from bcc import BPF\n\nb = BPF(text=\"int kprobe__do_exit(void *ctx) { return 0; }\")\nwhile True:\n    b.perf_buffer_poll()\n";
        let (changed, diags) = run(&[("inject.py", text)], &Options::default());
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags
                .iter()
                .any(|d| d.rule == Rule::BccPoll && d.message.contains("left as it is")),
            "{diags:?}"
        );
    }

    #[test]
    fn tools_without_a_py_name_are_python_by_their_shebang() {
        let tail = format!("{PRINT}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}");
        for (name, shebang) in [
            ("tools/execwatch", "#!/usr/bin/env python\n"),
            ("sbin/execwatch-bpfcc", "#!/usr/bin/python3\n"),
            ("tools/execwatch", "#!/usr/bin/python -u\n"),
            ("tools/execwatch", "#!/usr/bin/env -S python3 -u\n"),
            ("tools/execwatch.python", ""),
        ] {
            let py = tool(shebang, &tail);
            check_migrate(&[(name, &py)], &[(name, &migrated(&py))]);
        }
    }

    #[test]
    fn a_shebang_tool_with_a_format_string_keeps_the_copy_under_reserve() {
        // The f-string's doubled braces: a reservation would add braces to escape.
        let c = C.replace('{', "{{").replace('}', "}}");
        let py = format!(
            "#!/usr/bin/python3\nfrom bcc import BPF\n\nbpf_text = f\"\"\"{c}\"\"\"\n\nb = BPF(text=bpf_text)\n{PRINT}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"
        );
        check_fallback(
            &[("tools/execwatch", &py)],
            "the C is a Python format string",
        );
        // Named .py, the same note comes from the reserve strategy itself.
        check_fallback(&[("execwatch.py", &py)], "the C is a Python format string");
    }

    #[test]
    fn a_callback_passed_through_a_parameter_is_the_function_its_callers_pass() {
        let poll = "def poll(bpf, handler, timeout=100):\n    bpf[\"events\"].open_perf_buffer(handler, page_cnt=8)\n    while 1:\n        bpf.perf_buffer_poll(timeout)\n\n";
        for call in [
            "poll(b, print_event)\n",
            "poll(b, handler=print_event)\n",
            "def main():\n    poll(b, print_event, 10)\n\nmain()\n",
            "poll(b, print_event)\npoll(b, print_event, timeout=5)\n",
        ] {
            let py = tool("", &format!("{PRINT}{poll}{call}"));
            let want = migrated(&py).replace("handler, page_cnt=8)", "handler)");
            check_migrate(&[("t.py", &py)], &[("t.py", &want)]);
        }
        // A default value is what a call that leaves the parameter out passes.
        let py = tool(
            "",
            &format!(
                "{PRINT}def poll(bpf, handler=print_event):\n    bpf[\"events\"].open_perf_buffer(handler)\n    {LOOP}\npoll(b)\n"
            ),
        );
        check_migrate(&[("t.py", &py)], &[("t.py", &migrated(&py))]);
    }

    /// `def printer(wide): def print_event(cpu, data, size): ... return print_event`, then
    /// `open_perf_buffer(printer(args.wide))`: the function the factory returns is the
    /// callback.
    const FACTORY: &str = "def printer(wide):\n    width = 20 if wide else 7\n\n    def print_event(cpu, data, size):\n        event = b[\"events\"].event(data)\n        print(\"%-*d %s\" % (width, event.pid, event.comm.decode()))\n\n    return print_event\n\n";

    #[test]
    fn a_callback_a_factory_returns_is_the_function_it_defines() {
        // The ring's size follows the page count (8 pages by default).
        for (open, ring) in [
            ("b[\"events\"].open_perf_buffer(printer(True))\n", "64"),
            (
                "b[\"events\"].open_perf_buffer(printer(wide=False), page_cnt=64)\n",
                "512",
            ),
        ] {
            let py = tool("", &format!("{FACTORY}{open}{LOOP}"));
            let want = migrated(&py)
                .replace("(events, 64)", &format!("(events, {ring})"))
                .replace(", page_cnt=64)", ")")
                .replace("    def print_event(cpu,", "    def print_event(ctx,");
            check_migrate(&[("t.py", &py)], &[("t.py", &want)]);
        }
    }

    #[test]
    fn a_factory_that_returns_another_function_too_or_is_used_elsewhere_is_refused() {
        let two = FACTORY.replace(
            "    return print_event\n",
            "    if wide:\n        return print_event\n    return lambda cpu, data, size: None\n",
        );
        let py = tool(
            "",
            &format!("{two}b[\"events\"].open_perf_buffer(printer(True))\n{LOOP}"),
        );
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackForm,
            "the callback factory `printer` returns something other than the one function it defines",
        );
        let py = tool(
            "",
            &format!(
                "{FACTORY}b[\"events\"].open_perf_buffer(printer(True))\nprinter(False)(0, None, 0)\n{LOOP}"
            ),
        );
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackForm,
            "the callback factory `printer` is also used elsewhere",
        );
    }

    /// A method that makes the callback (`self.printer(True)`) is not followed (only a
    /// function of the file is): refused, naming it, where migrating would have to rename the
    /// CPU parameter of a function defined inside a method.
    #[test]
    fn a_method_factory_is_refused_by_name() {
        let class = "class Tracer:\n    def printer(self, wide):\n        def print_event(cpu, data, size):\n            event = b[\"events\"].event(data)\n            print(event.pid)\n\n        return print_event\n\n    def run(self):\n        b[\"events\"].open_perf_buffer(self.printer(True))\n        while 1:\n            b.perf_buffer_poll()\n\n\nTracer().run()\n";
        let py = tool("", class);
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackForm,
            "the callback is built by `self.printer(...)`, which bpf-migrate cannot follow",
        );
    }

    #[test]
    fn a_callback_parameter_is_refused_when_its_callers_disagree_or_it_is_used_otherwise() {
        let poll = "def poll(bpf, handler):\n    bpf[\"events\"].open_perf_buffer(handler)\n    while 1:\n        bpf.perf_buffer_poll()\n\n";
        let other = PRINT.replace("print_event", "print_other");
        for (call, says) in [
            (
                "poll(b, print_event)\npoll(b, print_other)\n",
                "the calls of `poll` pass different callbacks as `handler`",
            ),
            ("", "`poll`, which is not called in this file"),
            (
                "import threading\nthreading.Thread(target=poll, args=(b, print_event)).start()\n",
                "`poll` is used other than in a call",
            ),
            (
                "poll(*[b, print_event])\n",
                "`poll` is called with unpacked arguments",
            ),
            ("poll(b)\n", "a call of `poll` does not pass `handler`"),
            (
                "poll(b, print_event)\nprint_event(0, None, 0)\n",
                "the callback `print_event` is also used here",
            ),
        ] {
            let py = tool("", &format!("{PRINT}{other}{poll}{call}"));
            check_refused(&[("t.py", &py)], Rule::CallbackForm, says);
        }
        // The parameter called with a CPU in the function itself.
        let py = tool(
            "",
            &format!(
                "{PRINT}def poll(bpf, handler):\n    handler(0, None, 0)\n    bpf[\"events\"].open_perf_buffer(handler)\n\npoll(b, print_event)\n"
            ),
        );
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackForm,
            "the callback `handler` is also used here",
        );
        // A method's parameter: its callers are not followed.
        let py = tool(
            "",
            &format!(
                "{PRINT}class Tracer:\n    def poll(self, handler):\n        b[\"events\"].open_perf_buffer(handler)\n\nTracer().poll(print_event)\n"
            ),
        );
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackForm,
            "a parameter of the method `poll`",
        );
    }

    /// A tool whose C is read from `events.c` by `read` (an expression or statements).
    fn reader(read: &str) -> String {
        format!(
            "#!/usr/bin/env python3\nfrom bcc import BPF\n\n{read}\nbpf_text = bpf_text.replace(\"FILTER\", \"\")\nb = BPF(text=bpf_text)\nb.attach_kprobe(event=b.get_syscall_fnname(\"execve\"), fn_name=\"trace_exec\")\n\n{PRINT}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"
        )
    }

    /// Another tool in the same directory, with its own C file defining a table of the same
    /// name: the tool's table cannot be told by directory alone.
    fn neighbour() -> String {
        format!(
            "from bcc import BPF\nb = BPF(src_file=\"other.c\")\n{PRINT}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"
        )
    }

    #[test]
    fn c_read_from_a_file_and_passed_as_text_is_migrated_with_the_tool() {
        let c_after = C
            .replace(
                "BPF_PERF_OUTPUT(events);",
                "BPF_RINGBUF_OUTPUT(events, 64);",
            )
            .replace(
                "events.perf_submit(ctx, &data, sizeof(data));",
                "events.ringbuf_output(&data, sizeof(data), 0);",
            );
        let other = neighbour();
        let with = |py: &str| -> Vec<(&'static str, String)> {
            vec![
                ("tools/t.py", py.to_string()),
                ("tools/events.c", C.to_string()),
                ("tools/other.py", other.clone()),
                ("tools/other.c", C.to_string()),
            ]
        };
        for read in [
            "bpf_text = open(\"events.c\").read()",
            "bpf_text = open(\"events.c\", \"r\").read()",
            "with open(\"events.c\") as f:\n    bpf_text = f.read()",
            "import os\nbpf_text = open(os.path.join(os.path.dirname(__file__), \"events.c\")).read()",
        ] {
            let py = reader(read);
            let files = with(&py);
            let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
            check_migrate(
                &files,
                &[("tools/t.py", &migrated(&py)), ("tools/events.c", &c_after)],
            );
        }
        // In a function, from a module-level read.
        let py = reader("bpf_text = open(\"events.c\").read()").replace(
            "b = BPF(text=bpf_text)",
            "def load():\n    return BPF(text=bpf_text)\nb = load()",
        );
        let files = with(&py);
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        check_migrate(&files, &[("tools/events.c", &c_after)]);
    }

    #[test]
    fn c_read_from_a_path_that_is_not_a_relative_literal_is_not_followed() {
        let other = neighbour();
        for read in [
            "bpf_text = open(\"/usr/share/t/events.c\").read()",
            "import sys\nbpf_text = open(sys.argv[1]).read()",
            // Two sources, one of them not a file.
            "bpf_text = open(\"events.c\").read()\nif len(__file__) > 99:\n    bpf_text = \"\"",
        ] {
            let py = reader(read);
            let (changed, diags) = run(
                &[
                    ("tools/t.py", &py),
                    ("tools/events.c", C),
                    ("tools/other.py", &other),
                    ("tools/other.c", C),
                ],
                &Options::default(),
            );
            assert!(!changed.contains_key("tools/t.py"), "{read}: {changed:?}");
            assert!(
                diags.iter().any(|d| d.rule == Rule::UnlinkedProgram
                    && d.file == "tools/t.py"
                    && d.message.contains("several BPF sources")),
                "{read}: {diags:?}"
            );
        }
    }

    #[test]
    fn a_table_named_by_an_f_string_with_a_placeholder_is_unresolved_not_an_empty_name() {
        for key in ["f\"{name}\"", "f\"ev{name}\""] {
            let print = PRINT.replace("b[\"events\"]", &format!("b[{key}]"));
            let py = tool(
                "",
                &format!(
                    "name = \"events\"\n\n{print}b[{key}].open_perf_buffer(print_event)\n{LOOP}"
                ),
            );
            check_refused(
                &[("t.py", &py)],
                Rule::UnresolvedMap,
                &format!("cannot tell which table `b[{key}]` is"),
            );
        }
        // Without a placeholder, an f-string is a plain name.
        let py = tool(
            "",
            &format!("{PRINT}b[f\"events\"].open_perf_buffer(print_event)\n{LOOP}"),
        );
        check_migrate(&[("t.py", &py)], &[("t.py", &migrated(&py))]);
    }

    /// `migrated` with the CPU carried in the event: the field, its assignment, and `line`
    /// (the callback's read of it) after `after`.
    fn migrated_with_cpu(py: &str, after: &str, line: &str) -> String {
        migrated(py)
            .replace(
                "    char comm[TASK_COMM_LEN];\n};",
                "    char comm[TASK_COMM_LEN];\n    unsigned int cpu;\n};",
            )
            .replace(
                "    events.ringbuf_output(",
                "    data.cpu = bpf_get_smp_processor_id();\n    events.ringbuf_output(",
            )
            .replacen(after, &format!("{after}{line}"), 1)
    }

    #[test]
    fn a_callback_that_prints_the_cpu_reads_it_from_a_field_added_to_the_event() {
        // Read after the event: from it.
        let print = PRINT
            .replace("(event.pid,", "(cpu, event.pid,")
            .replace("%-7d %s", "%-3d %-7d %s");
        let py = tool(
            "",
            &format!("{print}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"),
        );
        let after = "    event = b[\"events\"].event(data)";
        check_migrate(
            &[("t.py", &py)],
            &[(
                "t.py",
                &migrated_with_cpu(&py, after, "\n    cpu = event.cpu"),
            )],
        );
        // Read before the event (a filter first): from the table, at the top of the body.
        let print = print.replace(
            "    event = b[",
            "    if cpu != 0:\n        return\n    event = b[",
        );
        let py = tool(
            "",
            &format!("{print}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"),
        );
        check_migrate(
            &[("t.py", &py)],
            &[(
                "t.py",
                &migrated_with_cpu(
                    &py,
                    "def print_event(ctx, data, size):\n",
                    "    cpu = b[\"events\"].event(data).cpu\n",
                ),
            )],
        );
    }

    /// A callback that only passes its CPU on to a function of the file that never reads it
    /// does not read the CPU: it migrates, the name passed on following the parameter's.
    #[test]
    fn a_cpu_passed_on_unread_is_no_read() {
        let print = "def print_event(cpu, data, size, what):\n    event = b[\"events\"].event(data)\n    print(what, event.pid)\n\ndef on_exec(cpu, data, size):\n    print_event(cpu, data, size, \"exec\")\n\n";
        let py = tool(
            "",
            &format!("{print}b[\"events\"].open_perf_buffer(on_exec)\n{LOOP}"),
        );
        let want = migrated(&py)
            .replace("def print_event(ctx,", "def print_event(cpu,")
            .replace(
                "def on_exec(cpu, data, size):\n    print_event(cpu,",
                "def on_exec(ctx, data, size):\n    print_event(ctx,",
            );
        check_migrate(&[("t.py", &py)], &[("t.py", &want)]);
        // Read there: a read of the CPU, as before.
        let read = py.replace("print(what, event.pid)", "print(what, cpu, event.pid)");
        let (_, diags) =
            crate::engine::testkit::run(&[("t.py", &read)], &crate::engine::Options::default());
        assert!(
            diags.iter().any(|d| d.rule == Rule::CallbackUsesCpu),
            "{diags:?}"
        );
    }

    #[test]
    fn refuses_a_cpu_read_with_no_event_read_to_take_it_from() {
        // The event read through a ctypes class of the tool's own: no `.event(data)`.
        let print = "def print_event(cpu, data, size):\n    event = ct.cast(data, ct.POINTER(Data)).contents\n    print(cpu, event.pid)\n\n";
        let py = tool(
            "import ctypes as ct\n",
            &format!("{print}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"),
        );
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackUsesCpu,
            "does not read the event with",
        );
        // The table named by a name the callback assigns, before the event is read.
        let print = "def print_event(cpu, data, size):\n    t = b[\"events\"]\n    print(cpu)\n    event = t.event(data)\n\n";
        let py = tool(
            "",
            &format!("{print}b[\"events\"].open_perf_buffer(print_event)\n{LOOP}"),
        );
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackUsesCpu,
            "reads it through a name it assigns",
        );
    }

    #[test]
    fn refuses_a_cpu_read_of_packet_samples() {
        // Nothing can follow the packet bytes of a record: the CPU has nowhere to go.
        let py = include_str!("../../../../fixtures/bcc_pktsample/input/pktsample.py").replace(
            "    s = ct.cast(data, ct.POINTER(Sample)).contents\n",
            "    s = b[\"samples\"].event(data)\n    print(cpu)\n",
        );
        assert!(py.contains("print(cpu)"));
        check_refused(
            &[("t.py", &py)],
            Rule::CallbackUsesCpu,
            "followed by packet bytes",
        );
    }
}
