//! BCC tools in Python: the C inside string literals (analysed by `bcc` with the strings'
//! contents as included ranges, so every offset is an offset in the Python file), and the
//! Python consumer: `open_perf_buffer`, `perf_buffer_poll`/`perf_buffer_consume`, callbacks,
//! `BPF(src_file=...)`.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use tree_sitter::Node;

use super::bcc;
use super::check::{Kept, check_bcc_c, wants_check_ahead};
use super::context::{Analysis, Consumer, Ctx, Report};
use super::options::Options;
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
    edits: Vec<Edit>,
    diags: Vec<Diagnostic>,
    explained: Vec<(usize, usize)>,
    done_callbacks: HashSet<usize>,
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

    let mut py = Py {
        file,
        nodes: &nodes,
        edits: Vec::new(),
        diags: Vec::new(),
        explained: Vec::new(),
        done_callbacks: HashSet::new(),
    };
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
                let new = if name == "perf_buffer_consume" {
                    "ring_buffer_consume"
                } else {
                    "ring_buffer_poll"
                };
                py.edits.push(Edit::replace(
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
    a.edits.extend(py.edits);
    a.diags.extend(py.diags);
    drop(nodes);
    let kept = wants_check_ahead(&a).then_some(Kept::Python(tree));
    (a, kept)
}

/// `BPF(src_file="x.c")`, `BPF(src_file=os.path.join(os.path.dirname(__file__), "x.c"))`:
/// the C file, relative to the tool's directory (where BCC looks too).
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
        if kw.field("name").is_none_or(|n| text(n, src) != "src_file") {
            continue;
        }
        let Some(v) = kw.field("value") else {
            continue;
        };
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
        match literals.last() {
            Some(name) if !dynamic => {
                let dir = py.file.path.parent().unwrap_or(Path::new(""));
                let rel = name.trim_start_matches('/');
                let p = if v.kind() == "string" && name.starts_with('/') {
                    PathBuf::from(name)
                } else {
                    dir.join(rel)
                };
                a.bcc_sources.push(p.components().collect());
            }
            // A note, not yet a refusal: the tables may still be found in the tool's own
            // strings; if they are not, linking refuses the tool.
            _ => {
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

/// The table an expression refers to: `b["events"]`, `b[b"events"]`, `b.get_table("events")`,
/// or a variable (or attribute) assigned one of those.
fn table_name(py: &Py, expr: Node, depth: usize) -> Option<String> {
    let src = py.src();
    if depth > 4 {
        return None;
    }
    match expr.kind() {
        "subscript" => {
            let key = expr.field("subscript")?;
            (key.kind() == "string").then(|| string_value(key, src))
        }
        "call" => {
            let f = expr.field("function")?;
            let attr = f.field("attribute")?;
            if text(attr, src) != "get_table" {
                return None;
            }
            let args = expr.field("arguments")?;
            let first = args.named_child(0)?;
            (first.kind() == "string").then(|| string_value(first, src))
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

fn ancestor_any<'t>(n: Node<'t>, kinds: &[&str]) -> Option<Node<'t>> {
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
    if let Some(l) = lost.filter(|l| text(*l, src) != "None") {
        py.report(
            l.start_byte(),
            Rule::BccOpenPerfBuffer,
            format!("the lost-event callback `{}` is no longer called: a ring buffer has none", text(l, src)),
            "events dropped when the ring is full make ringbuf_output() return -EAGAIN in the BPF program: count them there in a BPF_PERCPU_ARRAY and read it from Python",
        );
    }
    let page_value = pages.map(|p| text(p, src).trim().parse::<u64>().ok());
    if let Some(None) = page_value {
        py.report(
            pages.unwrap().start_byte(),
            Rule::BccOpenPerfBuffer,
            format!("the page count `{}` is chosen at run time and no longer applies", text(pages.unwrap(), src)),
            "a ring buffer's size is set in the C text, BPF_RINGBUF_OUTPUT(name, pages) (--ringbuf-size); an option that set the page count now does nothing",
        );
    }
    let cb_text = if cb_kw {
        format!("callback={}", text(cb, src))
    } else {
        text(cb, src).to_string()
    };
    py.edits.push(Edit::replace(
        attr.start_byte(),
        attr.end_byte(),
        "open_ring_buffer",
        Rule::BccOpenPerfBuffer,
    ));
    py.edits.push(Edit::replace(
        args.start_byte(),
        args.end_byte(),
        format!("({cb_text})"),
        Rule::BccOpenPerfBuffer,
    ));
    a.consumers.push(Consumer {
        map,
        offset: at,
        pages: page_value.flatten(),
    });
}

/// The callback's CPU parameter becomes `ctx` (BCC passes the ring buffer's ctx first). A
/// callback that reads the CPU would silently print something else: refused.
fn callback(py: &mut Py, cb: Node, map: &str) -> bool {
    let src = py.src();
    let (def, params) = match resolve_callback(py, cb, 0) {
        Ok(x) => x,
        Err(msg) => {
            py.report(cb.start_byte(), Rule::CallbackForm, msg, "bpf-migrate rewrites callbacks defined in the same file as def f(cpu, data, size), methods, lambdas and functools.partial of those; migrate by hand");
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
    let uses: Vec<Node> = descendants(body)
        .into_iter()
        .filter(|n| text(*n, src) == cpu_name && is_variable(*n))
        .collect();
    if let Some(u) = uses.first() {
        py.report(
            u.start_byte(),
            Rule::CallbackUsesCpu,
            format!("the callback for `{map}` uses `{cpu_name}`, the CPU that produced the event; a ring buffer callback receives a context there instead"),
            "add a cpu field to the event, set it with bpf_get_smp_processor_id() in the C code, print that field instead, then run bpf-migrate again",
        );
        return false;
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
        py.edits.push(Edit::replace(
            cpu.start_byte(),
            cpu.end_byte(),
            new,
            Rule::BccCallback,
        ));
    }
    true
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
fn resolve_callback<'t>(
    py: &Py<'_, 't>,
    cb: Node<'t>,
    depth: usize,
) -> Result<(Node<'t>, Vec<Node<'t>>), String> {
    let src = py.src();
    if depth > 3 {
        return Err("the callback is wrapped too deeply".into());
    }
    let (def, name) = match cb.kind() {
        "identifier" => {
            let name = text(cb, src);
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
                        Some(v) => resolve_callback(py, v, depth + 1),
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
            if fname != "partial" && fname != "functools.partial" {
                return Err(format!(
                    "the callback is built by `{fname}(...)`, which bpf-migrate cannot follow"
                ));
            }
            let first = cb
                .field("arguments")
                .and_then(|a| a.named_child(0))
                .ok_or("partial() without a function")?;
            return resolve_callback(py, first, depth + 1);
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
        if !in_open {
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
