//! cilium/ebpf: `perf.NewReader(m, size)` and `perf.NewReaderWithOptions(m, size, opts)`
//! become `ringbuf.NewReader(m)`; `perf.ErrClosed`, `perf.Record` and `*perf.Reader` become
//! the ring buffer's; `Read`, `ReadInto`, `Close` and `SetDeadline` are the same methods. A
//! record's `RawSample` stays; an `if rec.LostSamples != 0 { ... }` asks the ring's lost
//! counter (`lost_counter`) or goes with a note (a ring buffer record counts no losses); a
//! read of `rec.CPU`, `Pause`/`Resume`, an overwritable reader or options the tool cannot
//! read are refused with the reason.

use std::collections::HashSet;

use tree_sitter::Node;

use super::super::context::{Analysis, Consumer, Report};
use super::super::options::{Lost, Options};
use super::imports;
use super::lost_counter::{self, ReaderSite};
use super::{GoFile, PERF_PATH, RINGBUF_PATH, ancestor, call_args};
use crate::lang::NodeExt;
use crate::rules::Rule;

/// What this file's migration asks of its imports: the perf import's new path (None: drop
/// it, the ring buffer's package being imported already), and a path the code it adds needs.
pub(super) struct Switch {
    pub spec: usize,
    pub path: Option<String>,
    pub need: Vec<&'static str>,
}

/// cilium/ebpf itself, whose `*ebpf.Map` a lost counter holds.
const EBPF_PATH: &str = "github.com/cilium/ebpf";

pub(super) fn analyze(g: &mut GoFile, opts: &Options, a: &mut Analysis) -> Option<Switch> {
    let spec = imports::spec_of(g, PERF_PATH)?;
    let Some(pkg) = imports::name_of(g, spec) else {
        g.report(
            spec.start_byte(),
            Rule::UnsupportedForm,
            "cilium/ebpf's perf package is imported with `_` or `.`",
            "migrate this reader by hand",
        );
        return None;
    };
    let ring_spec = imports::spec_of(g, RINGBUF_PATH);
    let ring = match ring_spec {
        Some(s) => imports::name_of(g, s).unwrap_or_else(|| "ringbuf".into()),
        None => "ringbuf".into(),
    };
    let refusals = g.diags.len();
    if ring_spec.is_none()
        && let Some(clash) = g
            .of_kind("identifier")
            .into_iter()
            .find(|n| g.text(*n) == "ringbuf")
    {
        g.report(
            clash.start_byte(),
            Rule::UnsupportedForm,
            "the name `ringbuf`, which the ring buffer package would take, is used here",
            "rename it, or import github.com/cilium/ebpf/ringbuf under another name first",
        );
    }
    let readers = reader_names(g, &pkg);
    let mut options_spans: Vec<(usize, usize)> = Vec::new();
    let mut errors_needed = false;
    let mut sites: Vec<ReaderSite> = Vec::new();
    // Each use with its node and member; the readers first, so that the options they take
    // (a literal declared before the call, say) are known when the other uses come.
    let mut uses: Vec<((usize, usize), Node, &str)> = imports::uses(g, &pkg)
        .into_iter()
        .filter_map(|(s, e)| {
            let node = g.nodes.iter().copied().find(|n| {
                n.start_byte() == s && matches!(n.kind(), "selector_expression" | "qualified_type")
            })?;
            let member_field = if node.kind() == "selector_expression" {
                "field"
            } else {
                "name"
            };
            let member = node.field(member_field).map(|m| g.text(m)).unwrap_or("");
            Some(((s, e), node, member))
        })
        .collect();
    uses.sort_by_key(|(_, _, m)| !matches!(*m, "NewReader" | "NewReaderWithOptions"));
    for ((use_start, use_end), node, member) in uses {
        if options_spans
            .iter()
            .any(|&(s, e)| s <= use_start && use_end <= e)
        {
            continue;
        }
        match member {
            "NewReader" | "NewReaderWithOptions" => {
                match node.parent().filter(|p| {
                    p.kind() == "call_expression"
                        && p.field("function").is_some_and(|f| f.id() == node.id())
                }) {
                    Some(call) => {
                        let (span, site) = new_reader(g, call, node, member, (&pkg, &ring), a);
                        options_spans.extend(span);
                        sites.extend(site);
                    }
                    None => g.report(
                        node.start_byte(),
                        Rule::UnsupportedForm,
                        format!("`{pkg}.{member}` is used here without being called"),
                        "migrate this reader by hand",
                    ),
                }
            }
            // The old test of a closed reader: `errors.Is(err, ringbuf.ErrClosed)`, as it was.
            "IsClosed" => {
                let call = node.parent().filter(|p| {
                    p.kind() == "call_expression"
                        && p.field("function").is_some_and(|f| f.id() == node.id())
                });
                let arg = call.map(call_args).filter(|a| a.len() == 1);
                let errors = imports::spec_of(g, "errors").and_then(|s| imports::name_of(g, s));
                let shadowed = errors.is_none()
                    && g.of_kind("identifier")
                        .iter()
                        .any(|n| g.text(*n) == "errors");
                match (call, arg) {
                    (Some(call), Some(arg)) if !shadowed => {
                        let name = errors.unwrap_or_else(|| {
                            errors_needed = true;
                            "errors".into()
                        });
                        let text = format!("{name}.Is({}, {ring}.ErrClosed)", g.text(arg[0]));
                        g.replace(call.start_byte(), call.end_byte(), text, Rule::GoPerfReader);
                    }
                    _ => g.report(
                        node.start_byte(),
                        Rule::UnsupportedForm,
                        format!("`{pkg}.IsClosed` is used here in a form bpf-migrate does not follow (not called with one error, or the name `errors` is taken)"),
                        "write the test as errors.Is(err, perf.ErrClosed) and run bpf-migrate again, or migrate this reader by hand",
                    ),
                }
            }
            // ErrFlushed: both packages have it from v0.16.0 on, with Flush().
            "ErrClosed" | "ErrFlushed" | "Record" | "Reader" => {
                g.replace(use_start, use_end, ring.clone(), Rule::GoPerfReader);
            }
            other => g.report(
                node.start_byte(),
                Rule::UnsupportedForm,
                format!("`{pkg}.{other}` has no counterpart in cilium/ebpf's ringbuf package"),
                "migrate this reader by hand",
            ),
        }
    }
    let records = record_names(g, &pkg, &readers);
    let counted = record_fields(g, opts, &records, &sites, a);
    if counted {
        let end = g.src().len();
        let nl = if g.src().ends_with('\n') { "" } else { "\n" };
        // cilium/ebpf under the name the file imports it by.
        let ebpf = imports::spec_of(g, EBPF_PATH)
            .and_then(|s| imports::name_of(g, s))
            .unwrap_or_else(|| "ebpf".into());
        g.edits.push(crate::edit::Edit::insert(
            end,
            format!(
                "{nl}{}",
                lost_counter::LOST_COUNTER_TYPE.replace("*ebpf.Map", &format!("*{ebpf}.Map"))
            ),
            Rule::LostCounter,
        ));
    }
    for sel in g.of_kind("selector_expression") {
        let method = sel.field("field").map(|f| g.text(f)).unwrap_or("");
        if matches!(method, "Pause" | "Resume")
            && sel
                .field("operand")
                .is_some_and(|o| readers.contains(last_name(g, o)))
        {
            g.report(
                sel.start_byte(),
                Rule::NoRingEquivalent,
                format!("a ring buffer reader has no `{method}`: its BPF program's writes cannot be paused from user space"),
                "drop the pause, or have the BPF program check a flag the reader sets",
            );
        }
    }
    if g.diags[refusals..]
        .iter()
        .any(|d| d.severity == crate::report::Severity::Manual)
    {
        return None;
    }
    Some(Switch {
        spec: spec.start_byte(),
        path: ring_spec.is_none().then(|| RINGBUF_PATH.to_string()),
        need: [
            counted.then_some(EBPF_PATH),
            errors_needed.then_some("errors"),
        ]
        .into_iter()
        .flatten()
        .collect(),
    })
}

/// One `NewReader`/`NewReaderWithOptions` call: the function renamed and the arguments after
/// the map dropped; its map is this file's consumer. Returns the options argument's span.
fn new_reader<'t>(
    g: &mut GoFile<'_, 't>,
    call: Node<'t>,
    func: Node<'t>,
    member: &str,
    (pkg, ring): (&str, &str),
    a: &mut Analysis,
) -> (Option<(usize, usize)>, Option<ReaderSite<'t>>) {
    let args = call_args(call);
    let want = if member == "NewReader" { 2 } else { 3 };
    if args.len() != want {
        g.report(
            call.start_byte(),
            Rule::UnsupportedForm,
            format!(
                "`{pkg}.{member}` is called with {} arguments, not {want}",
                args.len()
            ),
            "migrate this reader by hand",
        );
        return (None, None);
    }
    let mut options = args.get(2).map(|o| (o.start_byte(), o.end_byte()));
    // Options in a variable set from a literal just for this call: the literal is read, and
    // its declaration goes with the call's argument.
    let mut options_decl = None;
    let literal = match args.get(2) {
        Some(&o) if o.kind() == "identifier" => match options_variable(g, o) {
            Some((decl, value)) => {
                options = Some((decl.start_byte(), decl.end_byte()));
                options_decl = Some(decl);
                Some(value)
            }
            None => Some(o),
        },
        other => other.copied(),
    };
    if let Some(o) = literal
        && !options_ok(g, o, pkg)
    {
        return (options, None);
    }
    let Some((map, bpf2go)) = map_of(g, args[0], 0) else {
        g.report(
            args[0].start_byte(),
            Rule::UnresolvedMap,
            format!("cannot tell which BPF map `{}` is", g.text(args[0])),
            "bpf-migrate follows bpf2go's objs.Field, coll.Maps[\"name\"], a variable set from one of them in the same function, and a parameter that every call in the file passes one of them",
        );
        return (options, None);
    };
    let pages = pages_of(g, args[1]);
    if pages.is_none() {
        g.size_chosen_at_run_time(args[1], "per-CPU buffer size", Rule::GoPerfReader);
    }
    g.replace(
        func.start_byte(),
        func.end_byte(),
        format!("{ring}.NewReader"),
        Rule::GoPerfReader,
    );
    let last = args[want - 1];
    g.replace(args[0].end_byte(), last.end_byte(), "", Rule::GoPerfReader);
    if let Some(decl) = options_decl {
        g.delete_lines(decl, Rule::GoPerfReader);
    }
    let site = reader_site(g, call, args[0], a.consumers.len());
    a.consumers.push(Consumer {
        map,
        offset: call.start_byte(),
        pages,
        lost_counted: false,
        bpf2go,
    });
    (options, site)
}

/// The reader made by `call` (its map `map`) for its lost counter: the statement, the local
/// it is held in, the counter map beside its map.
fn reader_site<'t>(
    g: &GoFile<'_, 't>,
    call: Node<'t>,
    map: Node<'t>,
    consumer: usize,
) -> Option<ReaderSite<'t>> {
    let stmt = call.parent()?.parent()?;
    let var = match stmt.kind() {
        "short_var_declaration" | "assignment_statement" => stmt
            .field("left")
            .and_then(|l| l.named_child(0))
            .filter(|v| v.kind() == "identifier")
            .map(|v| g.text(v).to_string()),
        _ => None,
    };
    Some(ReaderSite {
        consumer,
        stmt,
        var,
        counter: lost_counter::counter_of(g, map),
    })
}

/// The declaration `v := X{...}` (or `var v = X{...}`) of the options variable `var`, alone
/// on its lines, with its literal, when `var` is used nowhere else in its function.
fn options_variable<'t>(g: &GoFile<'_, 't>, var: Node<'t>) -> Option<(Node<'t>, Node<'t>)> {
    let value = assigned_value(g, var).filter(|v| v.kind() == "composite_literal")?;
    let decl =
        ancestor(value, "short_var_declaration").or_else(|| ancestor(value, "var_declaration"))?;
    let scope = ancestor(var, "block")?;
    let name = g.text(var);
    let uses = g
        .of_kind("identifier")
        .into_iter()
        .filter(|n| {
            g.text(*n) == name
                && n.start_byte() >= scope.start_byte()
                && n.end_byte() <= scope.end_byte()
        })
        .count();
    let src = g.src();
    let alone = src[crate::source::line_start(src, decl.start_byte())..decl.start_byte()]
        .trim()
        .is_empty();
    // The declaration's own name and this argument.
    (uses == 2 && alone).then_some((decl, value))
}

/// Whether the options of `NewReaderWithOptions` can go: a `perf.ReaderOptions{...}` literal
/// whose wake-up settings get a note each; an overwritable reader, another field or options
/// the tool cannot read are refused.
fn options_ok(g: &mut GoFile, o: Node, pkg: &str) -> bool {
    let is_literal = o.kind() == "composite_literal"
        && o.field("type")
            .is_some_and(|t| g.text(t) == format!("{pkg}.ReaderOptions"));
    let Some(body) = o.field("body").filter(|_| is_literal) else {
        g.report(
            o.start_byte(),
            Rule::OptsUnsupported,
            format!("the reader's options are given as `{}`", g.text(o)),
            "bpf-migrate reads options only from a perf.ReaderOptions{...} literal in the call; write them there, or migrate by hand",
        );
        return false;
    };
    let mut ok = true;
    let mut cur = body.walk();
    let elems: Vec<Node> = body.named_children(&mut cur).collect();
    for el in elems {
        if el.kind() == "comment" {
            continue;
        }
        let key = el.field("key").map(|k| g.text(k)).unwrap_or("");
        let value = el.field("value").map(|v| g.text(v)).unwrap_or("");
        match key {
            "Watermark" | "WakeupEvents" => g.report(
                el.start_byte(),
                Rule::GoReaderOptions,
                format!("`{key}: {value}` has no ring buffer equivalent: the ring buffer wakes its reader for each record"),
                "to batch wake-ups, pass BPF_RB_NO_WAKEUP to bpf_ringbuf_output() and wake the reader with BPF_RB_FORCE_WAKEUP",
            ),
            "Overwritable" if value == "false" => {}
            "Overwritable" => {
                ok = false;
                g.report(
                    el.start_byte(),
                    Rule::OptsUnsupported,
                    "an overwritable perf buffer keeps the newest records by overwriting the oldest; a ring buffer has no overwrite mode",
                    "keep this reader on the perf buffer, or make it drain the ring continuously and migrate by hand",
                );
            }
            _ => {
                ok = false;
                g.report(
                    el.start_byte(),
                    Rule::OptsUnsupported,
                    format!("the reader option `{}` has no ring buffer equivalent bpf-migrate knows", g.text(el)),
                    "migrate this reader by hand",
                );
            }
        }
    }
    ok
}

/// The map `expr` names: bpf2go's `objs.Events` (a field name, matched at linking: bpf2go's
/// fields are exported, so `t.events`, a struct's own field, names no map that can be
/// followed), a collection's `coll.Maps["events"]`, or a variable set from one of those in
/// the same function.
fn map_of(g: &GoFile, expr: Node, depth: u8) -> Option<(String, bool)> {
    match expr.kind() {
        "parenthesized_expression" => map_of(g, expr.named_child(0)?, depth),
        "selector_expression" => {
            let field = g.text(expr.field("field")?);
            field
                .starts_with(|c: char| c.is_ascii_uppercase())
                .then(|| (field.to_string(), true))
        }
        "index_expression" => {
            let operand = expr.field("operand")?;
            let index = expr.field("index")?;
            let maps = operand.kind() == "selector_expression"
                && operand.field("field").is_some_and(|f| g.text(f) == "Maps");
            (maps && index.kind() == "interpreted_string_literal")
                .then(|| (g.text(index).trim_matches('"').to_string(), false))
        }
        "identifier" if depth < 3 => match assigned_value(g, expr) {
            Some(value) => map_of(g, value, depth + 1),
            None => {
                // A parameter: the map every call of the function passes there.
                let mut maps = parameter_arguments(g, expr)?
                    .into_iter()
                    .map(|a| map_of(g, a, depth + 1));
                let first = maps.next()??;
                maps.all(|m| m.as_ref() == Some(&first)).then_some(first)
            }
        },
        _ => None,
    }
}

/// When `var` is a parameter of the function (or method) it is used in, the arguments every
/// call of that function in the file passes there; None when it is not a parameter or is
/// never called here.
fn parameter_arguments<'t>(g: &GoFile<'_, 't>, var: Node<'t>) -> Option<Vec<Node<'t>>> {
    let name = g.text(var);
    let func =
        ancestor(var, "function_declaration").or_else(|| ancestor(var, "method_declaration"))?;
    let fname = g.text(func.field("name")?);
    let params = func.field("parameters")?;
    let mut index = None;
    let mut at = 0;
    let mut cur = params.walk();
    for decl in params.named_children(&mut cur) {
        if decl.kind() != "parameter_declaration" {
            continue;
        }
        let mut c = decl.walk();
        for n in decl.children_by_field_name("name", &mut c) {
            if g.text(n) == name {
                index = Some(at);
            }
            at += 1;
        }
    }
    let index = index?;
    let args: Vec<Node> = g
        .of_kind("call_expression")
        .into_iter()
        .filter(|c| {
            c.field("function").is_some_and(|f| match f.kind() {
                "identifier" => g.text(f) == fname,
                "selector_expression" => f.field("field").is_some_and(|x| g.text(x) == fname),
                _ => false,
            })
        })
        .filter_map(|c| call_args(c).get(index).copied())
        .collect();
    (!args.is_empty()).then_some(args)
}

/// The value last given to variable `var` before its use, in the function it is used in:
/// `v := X`, `v, ok := X`, `v = X` or `var v = X`.
fn assigned_value<'t>(g: &GoFile<'_, 't>, var: Node<'t>) -> Option<Node<'t>> {
    let name = g.text(var);
    let scope = ancestor(var, "function_declaration")
        .or_else(|| ancestor(var, "func_literal"))
        .or_else(|| ancestor(var, "method_declaration"))?;
    let mut found = None;
    for n in &g.nodes {
        if n.start_byte() < scope.start_byte() || n.end_byte() > var.start_byte() {
            continue;
        }
        let (left, right) = match n.kind() {
            "short_var_declaration" | "assignment_statement" => (n.field("left"), n.field("right")),
            "var_spec" => (None, n.field("value")),
            _ => continue,
        };
        let names: Vec<Node> = match left {
            Some(l) => {
                let mut c = l.walk();
                l.named_children(&mut c).collect()
            }
            None => {
                let mut c = n.walk();
                n.children_by_field_name("name", &mut c).collect()
            }
        };
        let Some(right) = right else { continue };
        let mut c = right.walk();
        let values: Vec<Node> = right.named_children(&mut c).collect();
        if let Some(i) = names.iter().position(|l| g.text(*l) == name) {
            // `v, ok := m["x"]` has one value for two names.
            found = values.get(i).or(values.first()).copied();
        }
    }
    found
}

/// The pages per CPU a reader's size asks for, when it is a number of bytes the file says
/// (`os.Getpagesize() * N`, `N * 4096`, `1 << 16`, with literals, constants of the file and
/// variables set from such in the same function) that is a multiple of 4096.
fn pages_of(g: &GoFile, size: Node) -> Option<u64> {
    bytes_of(g, size, 0)
        .filter(|b| b % 4096 == 0)
        .map(|b| b / 4096)
}

fn bytes_of(g: &GoFile, n: Node, depth: u8) -> Option<u64> {
    if let Some(v) = g.int_value(n) {
        return Some(v);
    }
    match n.kind() {
        "parenthesized_expression" => bytes_of(g, n.named_child(0)?, depth),
        "call_expression" if g.text(n).replace(' ', "") == "os.Getpagesize()" => Some(4096),
        "binary_expression" => {
            let l = bytes_of(g, n.field("left")?, depth)?;
            let r = bytes_of(g, n.field("right")?, depth)?;
            match g.text(n.field("operator")?) {
                "*" => l.checked_mul(r),
                "<<" => u32::try_from(r).ok().and_then(|r| l.checked_shl(r)),
                _ => None,
            }
        }
        "identifier" if depth < 2 => bytes_of(g, assigned_value(g, n)?, depth + 1),
        _ => None,
    }
}

/// The last name of an expression: `rd` of `rd` and of `t.rd`.
fn last_name<'a>(g: &GoFile<'a, '_>, n: Node) -> &'a str {
    match n.kind() {
        "selector_expression" => n.field("field").map(|f| g.text(f)).unwrap_or(""),
        _ => g.text(n),
    }
}

/// Whether type node `t` is `PKG.NAME` or `*PKG.NAME`.
fn is_type(g: &GoFile, t: Node, pkg: &str, name: &str) -> bool {
    let t = if t.kind() == "pointer_type" {
        match t.named_child(0) {
            Some(x) => x,
            None => return false,
        }
    } else {
        t
    };
    t.kind() == "qualified_type" && g.text(t) == format!("{pkg}.{name}")
}

/// The names declared with a type `t` satisfies: variables, parameters and struct fields.
fn declared_with<'a>(g: &GoFile<'a, '_>, ty: &dyn Fn(Node) -> bool) -> HashSet<&'a str> {
    let mut out = HashSet::new();
    for n in &g.nodes {
        if matches!(
            n.kind(),
            "var_spec" | "parameter_declaration" | "field_declaration"
        ) && n.field("type").is_some_and(ty)
        {
            let mut c = n.walk();
            for name in n.children_by_field_name("name", &mut c) {
                out.insert(g.text(name));
            }
        }
    }
    out
}

/// The names (variables, fields, parameters) that hold a perf reader.
fn reader_names<'a>(g: &GoFile<'a, '_>, pkg: &str) -> HashSet<&'a str> {
    let mut out = declared_with(g, &|t| is_type(g, t, pkg, "Reader"));
    for n in &g.nodes {
        if !matches!(n.kind(), "short_var_declaration" | "assignment_statement") {
            continue;
        }
        let (Some(l), Some(r)) = (n.field("left"), n.field("right")) else {
            continue;
        };
        let creates = r.named_child(0).is_some_and(|v| {
            v.kind() == "call_expression"
                && v.field("function").is_some_and(|f| {
                    let t = g.text(f);
                    t == format!("{pkg}.NewReader") || t == format!("{pkg}.NewReaderWithOptions")
                })
        });
        if creates && let Some(first) = l.named_child(0) {
            out.insert(last_name(g, first));
        }
    }
    out
}

/// The names that hold a perf record: set from a reader's `Read()`, read into with
/// `ReadInto(&v)`, declared as `perf.Record`, or whose `RawSample` or `LostSamples` is read.
fn record_names<'a>(g: &GoFile<'a, '_>, pkg: &str, readers: &HashSet<&str>) -> HashSet<&'a str> {
    let mut out = declared_with(g, &|t| is_type(g, t, pkg, "Record"));
    let reader_call = |v: Node, method: &str| {
        v.kind() == "call_expression"
            && v.field("function").is_some_and(|f| {
                f.kind() == "selector_expression"
                    && f.field("field").is_some_and(|m| g.text(m) == method)
                    && f.field("operand")
                        .is_some_and(|o| readers.contains(last_name(g, o)))
            })
    };
    for n in &g.nodes {
        match n.kind() {
            "short_var_declaration" | "assignment_statement" => {
                let (Some(l), Some(r)) = (n.field("left"), n.field("right")) else {
                    continue;
                };
                if r.named_child(0).is_some_and(|v| reader_call(v, "Read"))
                    && let Some(first) = l.named_child(0)
                {
                    out.insert(last_name(g, first));
                }
            }
            "call_expression" if reader_call(*n, "ReadInto") => {
                if let Some(arg) = call_args(*n).first()
                    && arg.kind() == "unary_expression"
                    && let Some(v) = arg.field("operand")
                {
                    out.insert(last_name(g, v));
                }
            }
            "selector_expression" => {
                let field = n.field("field").map(|f| g.text(f));
                if matches!(field, Some("RawSample" | "LostSamples"))
                    && let Some(o) = n.field("operand")
                {
                    out.insert(last_name(g, o));
                }
            }
            _ => {}
        }
    }
    out
}

/// A record's `CPU` is refused; its `LostSamples` goes with the `if` that tests it.
fn record_fields(
    g: &mut GoFile,
    opts: &Options,
    records: &HashSet<&str>,
    sites: &[ReaderSite],
    a: &mut Analysis,
) -> bool {
    let mut dropped: Vec<(usize, usize)> = Vec::new();
    let mut made: Vec<usize> = Vec::new();
    for sel in g.of_kind("selector_expression") {
        let Some(operand) = sel.field("operand") else {
            continue;
        };
        if !records.contains(last_name(g, operand)) {
            continue;
        }
        let field = sel.field("field").map(|f| g.text(f)).unwrap_or("");
        match field {
            "CPU" => g.report(
                sel.start_byte(),
                Rule::CallbackUsesCpu,
                format!("`{}` reads the CPU a perf record came from; a ring buffer record does not say", g.text(sel)),
                "add a `cpu` member to the event, set it with bpf_get_smp_processor_id() in the BPF program and read it from RawSample; bpf-migrate does this for libbpf C and BCC, not yet for Go",
            ),
            "LostSamples" => {
                let at = sel.start_byte();
                if dropped.iter().any(|&(s, e)| s <= at && at < e) {
                    continue;
                }
                let Some((stmt, keep)) = lost_test(g, sel) else {
                    g.report(
                        at,
                        Rule::UnsupportedForm,
                        format!("`{}` is read here, outside a test bpf-migrate can settle (`if`, or a `switch` case, comparing it with 0)", g.text(sel)),
                        "a ring buffer record has no lost count: remove this use by hand, then run bpf-migrate again",
                    );
                    continue;
                };
                dropped.push((stmt.start_byte(), stmt.end_byte()));
                // Under --lost count, an `if X != 0 { ... }` asks the counter instead.
                let why = match opts.lost {
                    Lost::Drop => "--lost drop".to_string(),
                    Lost::Count if keep.is_some() || stmt.kind() != "if_statement" => {
                        "only an `if` testing it for a loss can ask a counter".to_string()
                    }
                    Lost::Count => match site_before(sites, stmt) {
                        None => "the reader is not made in a block that holds this test".to_string(),
                        Some(site) => match lost_counter::count(g, stmt, sel, site, &mut made) {
                            Ok(()) => {
                                a.consumers[site.consumer].lost_counted = true;
                                continue;
                            }
                            Err(why) => why,
                        },
                    },
                };
                let what = if keep.is_some() {
                    "this test is removed and its body kept"
                } else {
                    "this test and what it does are removed"
                };
                g.report(
                    stmt.start_byte(),
                    Rule::LostCallback,
                    format!("`{}` is always 0 on a ring buffer record, so {what}: records that do not fit are dropped without a word ({why})", g.text(sel)),
                    "to count drops, have the BPF program count failed bpf_ringbuf_output() calls in a per-CPU array and print it from the reader",
                );
                match keep {
                    None => g.delete_lines(stmt, Rule::LostCallback),
                    Some(block) => unwrap_block(g, stmt, block),
                }
            }
            _ => {}
        }
    }
    !made.is_empty()
}

/// The reader made last before `stmt` in a block that holds `stmt` (closures included),
/// where a variable declared after the reader is in scope.
fn site_before<'s, 't>(sites: &'s [ReaderSite<'t>], stmt: Node) -> Option<&'s ReaderSite<'t>> {
    sites
        .iter()
        .filter(|s| {
            s.stmt.start_byte() < stmt.start_byte()
                && s.stmt
                    .parent()
                    .is_some_and(|b| stmt.end_byte() <= b.end_byte())
        })
        .max_by_key(|s| s.stmt.start_byte())
}

/// What to do with the test `sel` (a record's `LostSamples`, always 0 on a ring buffer) is
/// part of, alone on its lines: an `if X != 0 { ... }` (or `> 0`) without initializer or
/// else, or a `case X != 0:` of an expressionless `switch`, goes (None); an
/// `if X == 0 { ... }` without initializer or else gives way to its block (Some).
fn lost_test<'t>(g: &GoFile<'_, 't>, sel: Node<'t>) -> Option<(Node<'t>, Option<Node<'t>>)> {
    let cond = sel.parent()?;
    if cond.kind() != "binary_expression" {
        return None;
    }
    let op = cond.field("operator").map(|o| g.text(o))?;
    let other = if cond.field("left")?.id() == sel.id() {
        cond.field("right")?
    } else {
        cond.field("left")?
    };
    if g.text(other) != "0" {
        return None;
    }
    let parent = cond.parent()?;
    let (stmt, keep) = match parent.kind() {
        "if_statement"
            if parent
                .field("condition")
                .is_some_and(|c| c.id() == cond.id())
                && parent.field("initializer").is_none()
                && parent.field("alternative").is_none() =>
        {
            match op {
                "!=" | ">" => (parent, None),
                "==" => (parent, Some(parent.field("consequence")?)),
                _ => return None,
            }
        }
        "expression_list" if parent.named_child_count() == 1 && matches!(op, "!=" | ">") => {
            let case = parent.parent().filter(|c| c.kind() == "expression_case")?;
            let switch = case.parent()?;
            (switch.kind() == "expression_switch_statement" && switch.field("value").is_none())
                .then_some((case, None))?
        }
        _ => return None,
    };
    let src = g.src();
    let end = super::end_trimmed(src, stmt);
    let ls = crate::source::line_start(src, stmt.start_byte());
    let le = crate::source::line_end_incl(src, end);
    let alone = src[ls..stmt.start_byte()].trim().is_empty() && src[end..le].trim().is_empty();
    alone.then_some((stmt, keep))
}

/// `stmt` (an `if` alone on its lines) replaced by the statements of its `block`, one tab
/// less indented.
fn unwrap_block(g: &mut GoFile, stmt: Node, block: Node) {
    let src = g.src();
    let ls = crate::source::line_start(src, stmt.start_byte());
    let le = crate::source::line_end_incl(src, stmt.end_byte());
    // The block's lines between its braces.
    let inner_start = crate::source::line_end_incl(src, block.start_byte());
    let inner_end = crate::source::line_start(src, block.end_byte() - 1);
    let body: String = src[inner_start..inner_end.max(inner_start)]
        .split_inclusive('\n')
        .map(|l| l.strip_prefix('\t').unwrap_or(l))
        .collect();
    g.replace(ls, le, body, Rule::LostCallback);
}

#[cfg(test)]
mod tests {
    use crate::engine::testkit::{check_migrate, check_refused, run};
    use crate::engine::{Lost, Options};
    use crate::rules::Rule;

    /// A BPF program writing perf event array `exec_events`, built by bpf2go for `main.go`.
    const BPF: &str = "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\nstruct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} exec_events SEC(\".maps\");\n\nSEC(\"tp/syscalls/sys_enter_execve\")\nint on_exec(void *ctx)\n{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\tbpf_perf_event_output(ctx, &exec_events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}\n";

    /// `main.go` around `body` (the statements after the objects are loaded), with
    /// `imports` in the second group.
    fn reader(imports: &str, body: &str) -> String {
        format!(
            "package main\n\n//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang demo x.bpf.c -- -I.\n\nimport (\n\t\"errors\"\n\t\"log\"\n\t\"os\"\n\n{imports})\n\nfunc main() {{\n\tvar objs demoObjects\n\tif err := loadDemoObjects(&objs, nil); err != nil {{\n\t\tlog.Fatal(err)\n\t}}\n{body}}}\n"
        )
    }

    const PERF: &str = "\t\"github.com/cilium/ebpf/link\"\n\t\"github.com/cilium/ebpf/perf\"\n\t\"github.com/cilium/ebpf/rlimit\"\n";
    const RING: &str = "\t\"github.com/cilium/ebpf/link\"\n\t\"github.com/cilium/ebpf/ringbuf\"\n\t\"github.com/cilium/ebpf/rlimit\"\n";
    const USES: &str = "\t_ = link.Kprobe\n\t_ = rlimit.RemoveMemlock\n\t_ = errors.Is\n";

    /// The migrated `main.go` of `before` (with `x.bpf.c`), and the diagnostics.
    fn migrate(before: &str, opts: &Options) -> (String, Vec<crate::report::Diagnostic>) {
        let (changed, diags) = run(&[("x.bpf.c", BPF), ("main.go", before)], opts);
        let go = changed
            .get("main.go")
            .cloned()
            .unwrap_or_else(|| panic!("{diags:?}"));
        (go, diags)
    }

    /// The old `perf.IsClosed(err)` becomes `errors.Is(err, ringbuf.ErrClosed)`, with
    /// `errors` imported in the standard library's group where the file does not import it.
    #[test]
    fn is_closed_becomes_errors_is() {
        let body = "\t_ = link.Kprobe\n\t_ = rlimit.RemoveMemlock\n\trd, _ := perf.NewReader(objs.ExecEvents, os.Getpagesize())\n\tfor {\n\t\trec, err := rd.Read()\n\t\tif perf.IsClosed(err) {\n\t\t\treturn\n\t\t}\n\t\tlog.Print(rec.RawSample)\n\t}\n";
        let before = reader(PERF, body).replace("\t\"errors\"\n", "");
        let (go, _) = migrate(&before, &Options::default());
        assert!(
            go.contains("\t\tif errors.Is(err, ringbuf.ErrClosed) {\n"),
            "{go}"
        );
        assert!(go.contains("import (\n\t\"errors\"\n\t\"log\"\n"), "{go}");
        // Imported already (under its own name): nothing to add.
        let (go, _) = migrate(&reader(PERF, body), &Options::default());
        assert_eq!(go.matches("\"errors\"").count(), 1, "{go}");
    }

    #[test]
    fn a_bpf2go_reader_becomes_a_ring_reader_and_its_imports_follow() {
        let body = format!(
            "{USES}\trd, err := perf.NewReader(objs.ExecEvents, os.Getpagesize()*16)\n\tif err != nil {{\n\t\tlog.Fatal(err)\n\t}}\n\tfor {{\n\t\trec, err := rd.Read()\n\t\tif errors.Is(err, perf.ErrClosed) {{\n\t\t\treturn\n\t\t}}\n\t\tlog.Print(rec.RawSample)\n\t}}\n"
        );
        let after = reader(RING, &body)
            .replace("\t\"os\"\n", "")
            .replace(
                "perf.NewReader(objs.ExecEvents, os.Getpagesize()*16)",
                "ringbuf.NewReader(objs.ExecEvents)",
            )
            .replace("perf.ErrClosed", "ringbuf.ErrClosed");
        check_migrate(
            &[("x.bpf.c", BPF), ("main.go", &reader(PERF, &body))],
            &[("main.go", &after)],
        );
    }

    #[test]
    fn a_collection_map_through_a_variable_and_the_reader_types() {
        let body = format!(
            "{USES}\t_ = os.Args\n\tcoll, _ := ebpf.LoadCollection(\"x.bpf.o\")\n\tevents, ok := coll.Maps[\"exec_events\"]\n\tif !ok {{\n\t\treturn\n\t}}\n\tvar rec perf.Record\n\trd, _ := perf.NewReader(events, 8192)\n\tdrain(rd, &rec)\n}}\n\nfunc drain(rd *perf.Reader, rec *perf.Record) {{\n\t_ = rd.ReadInto(rec)\n"
        );
        let before = reader(&format!("\t\"github.com/cilium/ebpf\"\n{PERF}"), &body);
        let (go, diags) = migrate(&before, &Options::default());
        assert!(
            go.contains("\trd, _ := ringbuf.NewReader(events)\n"),
            "{go}"
        );
        assert!(go.contains("var rec ringbuf.Record\n"), "{go}");
        assert!(
            go.contains("func drain(rd *ringbuf.Reader, rec *ringbuf.Record) {"),
            "{go}"
        );
        // 8192 bytes per CPU: two pages, said in the map's note.
        assert!(
            diags
                .iter()
                .any(|d| d.rule == Rule::PerfMapDef && d.message.contains("2 pages")),
            "{diags:?}"
        );
    }

    /// `main.go` with a read loop whose record is `rec`, testing it with `test`.
    fn lost_loop(test: &str) -> String {
        let body = format!(
            "\t_ = errors.Is\n\t_ = os.Args\n\trd, _ := perf.NewReader(objs.ExecEvents, 4096)\n\tfor {{\n\t\trec, _ := rd.Read()\n\n{test}\n\t\t_ = rec.RawSample\n\t}}\n"
        );
        reader("\t\"github.com/cilium/ebpf/perf\"\n", &body).replace(
            "\tif err := loadDemoObjects(&objs, nil); err != nil {\n\t\tlog.Fatal(err)\n\t}\n",
            "\t_ = loadDemoObjects(&objs, nil)\n",
        )
    }

    #[test]
    fn lost_samples_tests_go_with_a_note_and_their_only_import_too_under_lost_drop() {
        let before = lost_loop(
            "\t\tif rec.LostSamples > 0 {\n\t\t\tlog.Printf(\"lost %d\", rec.LostSamples)\n\t\t\tcontinue\n\t\t}\n",
        );
        let opts = Options {
            lost: Lost::Drop,
            ..Options::default()
        };
        let (go, diags) = migrate(&before, &opts);
        assert!(
            go.contains("\t\trec, _ := rd.Read()\n\n\t\t_ = rec.RawSample\n"),
            "{go}"
        );
        assert!(!go.contains("\"log\""), "log was used only there: {go}");
        assert!(
            diags.iter().any(|d| d.rule == Rule::LostCallback),
            "{diags:?}"
        );
    }

    #[test]
    fn lost_samples_tests_ask_the_counter_of_the_ring_by_default() {
        let before = lost_loop(
            "\t\tif rec.LostSamples > 0 {\n\t\t\tlog.Printf(\"lost %d\", rec.LostSamples)\n\t\t\tcontinue\n\t\t}\n",
        );
        let bpf = format!("{BPF}\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n");
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf), ("main.go", &before)],
            &Options::default(),
        );
        let go = changed
            .get("main.go")
            .unwrap_or_else(|| panic!("{diags:?}"));
        assert!(
            go.contains("\trd, _ := ringbuf.NewReader(objs.ExecEvents)\n\trdLost := &lostCounter{m: objs.ExecEventsLost}\n"),
            "{go}"
        );
        assert!(
            go.contains("\t\tif lost := rdLost.lostSince(); lost != 0 {\n\t\t\tlog.Printf(\"lost %d\", lost)\n\t\t}\n"),
            "{go}"
        );
        assert!(
            go.contains("\t\"github.com/cilium/ebpf\"\n\t\"github.com/cilium/ebpf/ringbuf\"\n"),
            "{go}"
        );
        assert!(
            go.contains("func (c *lostCounter) lostSince() uint64 {"),
            "{go}"
        );
        let c = &changed["x.bpf.c"];
        assert!(c.contains("} exec_events_lost SEC(\".maps\");"), "{c}");
        assert!(
            c.contains("exec_events_lost_count(bpf_ringbuf_output(&exec_events,"),
            "{c}"
        );
        assert!(
            !diags.iter().any(|d| d.rule == Rule::LostCallback),
            "{diags:?}"
        );
        // A test in a function the reader is not made in cannot reach the counter: it goes.
        let elsewhere = before.replace(
            "\tfor {\n",
            "\tloop(rd)\n}\n\nfunc loop(rd *perf.Reader) {\n\tfor {\n",
        );
        let (go, diags) = migrate(&elsewhere, &Options::default());
        assert!(
            !go.contains("LostSamples") && !go.contains("lostCounter"),
            "{go}"
        );
        assert!(
            diags.iter().any(|d| d.rule == Rule::LostCallback
                && d.message
                    .contains("not made in a block that holds this test")),
            "{diags:?}"
        );
    }

    #[test]
    fn a_switch_case_on_lost_samples_goes_and_an_equal_to_zero_test_keeps_its_body() {
        let case = lost_loop(
            "\t\tswitch {\n\t\tcase rec.LostSamples != 0:\n\t\t\tlog.Print(rec.LostSamples)\n\t\tdefault:\n\t\t\tlog.Print(rec.RawSample)\n\t\t}\n",
        );
        let (go, _) = migrate(&case, &Options::default());
        assert!(
            go.contains("\t\tswitch {\n\t\tdefault:\n\t\t\tlog.Print(rec.RawSample)\n\t\t}\n"),
            "{go}"
        );
        let eq = lost_loop(
            "\t\tif rec.LostSamples == 0 {\n\t\t\tlog.Print(rec.RawSample)\n\t\t\tcontinue\n\t\t}\n",
        );
        let (go, _) = migrate(&eq, &Options::default());
        assert!(
            go.contains(
                "\t\trec, _ := rd.Read()\n\n\t\tlog.Print(rec.RawSample)\n\t\tcontinue\n\n"
            ),
            "{go}"
        );
    }

    #[test]
    fn lost_samples_added_up_outside_a_test_is_refused() {
        let before = lost_loop("\t\tn := rec.LostSamples\n\t\t_ = n\n");
        check_refused(
            &[("x.bpf.c", BPF), ("main.go", &before)],
            Rule::UnsupportedForm,
            "rec.LostSamples",
        );
    }

    #[test]
    fn the_cpu_of_a_record_is_refused() {
        let body = format!(
            "{USES}\trd, _ := perf.NewReader(objs.ExecEvents, 4096)\n\trecord, _ := rd.Read()\n\tlog.Printf(\"cpu %d\", record.CPU)\n\t_ = os.Args\n"
        );
        check_refused(
            &[("x.bpf.c", BPF), ("main.go", &reader(PERF, &body))],
            Rule::CallbackUsesCpu,
            "record.CPU",
        );
    }

    #[test]
    fn an_overwritable_reader_is_refused_and_wakeup_options_get_a_note() {
        let body = |opt: &str| {
            format!(
                "{USES}\t_ = os.Args\n\trd, _ := perf.NewReaderWithOptions(objs.ExecEvents, 4096, perf.ReaderOptions{{\n\t\t{opt},\n\t}})\n\t_, _ = rd.Read()\n"
            )
        };
        check_refused(
            &[
                ("x.bpf.c", BPF),
                ("main.go", &reader(PERF, &body("Overwritable: true"))),
            ],
            Rule::OptsUnsupported,
            "overwrite",
        );
        let (go, diags) = migrate(&reader(PERF, &body("Watermark: 4096")), &Options::default());
        assert!(
            go.contains("\trd, _ := ringbuf.NewReader(objs.ExecEvents)\n"),
            "{go}"
        );
        assert!(
            diags.iter().any(|d| d.rule == Rule::GoReaderOptions),
            "{diags:?}"
        );
    }

    #[test]
    fn a_map_the_tool_cannot_follow_is_refused() {
        let body = format!(
            "{USES}\t_ = os.Args\n\trd, _ := perf.NewReader(pick(), 4096)\n\t_, _ = rd.Read()\n"
        );
        check_refused(
            &[("x.bpf.c", BPF), ("main.go", &reader(PERF, &body))],
            Rule::UnresolvedMap,
            "pick()",
        );
    }

    #[test]
    fn a_generated_file_is_never_edited() {
        let generated = "// Code generated by bpf2go; DO NOT EDIT.\n\npackage main\n\nimport \"github.com/cilium/ebpf/perf\"\n\nvar _ = perf.NewReader\n";
        let (changed, diags) = run(&[("demo_bpfel.go", generated)], &Options::default());
        assert!(
            changed.is_empty() && diags.is_empty(),
            "{changed:?} {diags:?}"
        );
    }

    #[test]
    fn options_and_a_size_in_variables_go_with_the_call_and_the_comment_above_them() {
        let body = "\t_ = errors.Is\n\tdefer objs.Close()\n\n\t// Wake up less often.\n\tsize := 16 * os.Getpagesize()\n\topts := perf.ReaderOptions{\n\t\tWatermark: size / 2,\n\t}\n\n\trd, _ := perf.NewReaderWithOptions(objs.ExecEvents, size, opts)\n\t_, _ = rd.Read()\n";
        let (go, diags) = migrate(
            &reader("\t\"github.com/cilium/ebpf/perf\"\n", body),
            &Options::default(),
        );
        assert!(
            go.contains("\tdefer objs.Close()\n\n\trd, _ := ringbuf.NewReader(objs.ExecEvents)\n"),
            "{go}"
        );
        assert!(!go.contains("\"os\""), "{go}");
        assert!(
            diags
                .iter()
                .any(|d| d.rule == Rule::PerfMapDef && d.message.contains("16 pages")),
            "{diags:?}"
        );
    }

    /// Messages passed to calls name the ring buffer reader now; a string that is no call's
    /// argument (a flag's default), or one about the perf buffer's size (a setting that
    /// sizes nothing now), keeps its words.
    #[test]
    fn messages_that_name_the_perf_reader_follow() {
        let body = "\t_ = errors.Is\n\t_ = os.Args\n\tname := \"perf reader\"\n\trd, err := perf.NewReader(objs.ExecEvents, 4096)\n\tif err != nil {\n\t\tlog.Fatalf(\"creating perf event reader: %s\", err)\n\t}\n\tif len(os.Args) > 2 {\n\t\tlog.Fatalf(\"invalid perf buffer size %s\", os.Args[2])\n\t}\n\tdefer rd.Close()\n\tfor {\n\t\trec, err := rd.Read()\n\t\tif err != nil {\n\t\t\tlog.Printf(`reading from perf buffer (%s): %v`, name, err)\n\t\t\tcontinue\n\t\t}\n\t\tlog.Print(rec.RawSample)\n\t}\n";
        let (go, _) = migrate(
            &reader("\t\"github.com/cilium/ebpf/perf\"\n", body),
            &Options::default(),
        );
        assert!(
            go.contains("log.Fatalf(\"creating ring buffer reader: %s\", err)")
                && go.contains("log.Printf(`reading from ring buffer (%s): %v`, name, err)")
                && go.contains("name := \"perf reader\"")
                && go.contains("log.Fatalf(\"invalid perf buffer size %s\", os.Args[2])"),
            "{go}"
        );
    }

    #[test]
    fn a_size_from_a_constant_and_a_variable_whose_value_may_act_is_kept_as_a_blank() {
        let body = "\t_ = errors.Is\n\t_ = os.Args\n\tsize := pickSize()\n\trd, _ := perf.NewReader(objs.ExecEvents, size)\n\t_, _ = rd.Read()\n\trd2, _ := perf.NewReader(objs.ExecEvents, pages*4096)\n\t_, _ = rd2.Read()\n";
        let go = reader("\t\"github.com/cilium/ebpf/perf\"\n", body)
            .replace("func main() {", "const pages = 32\n\nfunc main() {");
        let (go, diags) = migrate(&go, &Options::default());
        assert!(go.contains("\t_ = pickSize()\n"), "{go}");
        // The size no literal or constant gives is said to apply no more; the constant's not.
        let run_time: Vec<&str> = diags
            .iter()
            .filter(|d| d.message.contains("chosen at run time"))
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            run_time,
            ["the per-CPU buffer size `size` is chosen at run time and no longer applies"]
        );
        assert!(
            diags
                .iter()
                .any(|d| d.rule == Rule::PerfMapDef && d.message.contains("32 pages")),
            "{diags:?}"
        );
    }

    /// A struct's own (unexported) field is no bpf2go object's: its map is not followed (it
    /// may hold a pinned map of another tool), the reader is refused.
    #[test]
    fn an_unexported_field_names_no_bpf2go_map() {
        let body = "\t_ = errors.Is\n\t_ = os.Args\n\tt := &tracer{events: objs.ExecEvents}\n\trd, _ := perf.NewReader(t.events, 4096)\n\t_, _ = rd.Read()\n";
        let go = reader("\t\"github.com/cilium/ebpf/perf\"\n", body).replace(
            "func main() {",
            "type tracer struct{ events *ebpf.Map }\n\nfunc main() {",
        );
        let (changed, diags) = run(&[("x.bpf.c", BPF), ("main.go", &go)], &Options::default());
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags
                .iter()
                .any(|d| d.rule == Rule::UnresolvedMap && d.message.contains("`t.events`")),
            "{diags:?}"
        );
    }

    #[test]
    fn a_map_passed_to_the_function_that_makes_the_reader_is_followed() {
        let body = "\t_ = errors.Is\n\t_ = os.Args\n\twatch(objs.ExecEvents)\n\twatch(objs.ExecEvents)\n}\n\nfunc watch(m *ebpf.Map) {\n\trd, _ := perf.NewReader(m, 4096)\n\t_, _ = rd.Read()\n";
        let imports = "\t\"github.com/cilium/ebpf\"\n\t\"github.com/cilium/ebpf/perf\"\n";
        let (go, _) = migrate(&reader(imports, body), &Options::default());
        assert!(go.contains("\trd, _ := ringbuf.NewReader(m)\n"), "{go}");
        // Callers that pass different maps: which one is it?
        let two = reader(
            imports,
            &body.replace(
                "\twatch(objs.ExecEvents)\n\twatch",
                "\twatch(objs.Other)\n\twatch",
            ),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("main.go", &two)],
            Rule::UnresolvedMap,
            "`m`",
        );
    }

    #[test]
    fn the_counter_type_uses_the_name_cilium_ebpf_is_imported_by() {
        let body = "\t_ = errors.Is\n\t_ = os.Args\n\tcoll, _ := cle.NewCollection(nil)\n\trd, _ := perf.NewReader(coll.Maps[\"exec_events\"], 4096)\n\tfor {\n\t\trec, _ := rd.Read()\n\t\tif rec.LostSamples != 0 {\n\t\t\tlog.Print(rec.LostSamples)\n\t\t\tcontinue\n\t\t}\n\t\t_ = rec.RawSample\n\t}\n";
        let imports = "\tcle \"github.com/cilium/ebpf\"\n\t\"github.com/cilium/ebpf/perf\"\n";
        let bpf = format!("{BPF}\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n");
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf), ("main.go", &reader(imports, body))],
            &Options::default(),
        );
        let go = changed
            .get("main.go")
            .unwrap_or_else(|| panic!("{diags:?}"));
        assert!(go.contains("\tm    *cle.Map\n"), "{go}");
        assert!(
            go.contains("rdLost := &lostCounter{m: coll.Maps[\"exec_events_lost\"]}"),
            "{go}"
        );
        assert!(
            go.contains(
                "\t\tif lost := rdLost.lostSince(); lost != 0 {\n\t\t\tlog.Print(lost)\n\t\t}\n"
            ),
            "{go}"
        );
        // A test that only skips the loss record has nothing to report: it goes.
        let skip = body.replace("\t\t\tlog.Print(rec.LostSamples)\n", "");
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf), ("main.go", &reader(imports, &skip))],
            &Options::default(),
        );
        assert!(!changed["main.go"].contains("lostCounter"), "{changed:?}");
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("only skips the loss record")),
            "{diags:?}"
        );
    }

    #[test]
    fn a_reader_made_in_an_inner_block_gives_no_counter_to_a_loop_outside_it() {
        let before = lost_loop(
            "\t\tif rec.LostSamples > 0 {\n\t\t\tlog.Printf(\"lost %d\", rec.LostSamples)\n\t\t\tcontinue\n\t\t}\n",
        )
        .replace(
            "\trd, _ := perf.NewReader(objs.ExecEvents, 4096)\n",
            "\tvar rd *perf.Reader\n\tif len(os.Args) > 0 {\n\t\trd, _ = perf.NewReader(objs.ExecEvents, 4096)\n\t}\n",
        );
        let (go, diags) = migrate(&before, &Options::default());
        assert!(
            !go.contains("lostCounter") && !go.contains("LostSamples"),
            "{go}"
        );
        assert!(
            diags.iter().any(|d| d
                .message
                .contains("not made in a block that holds this test")),
            "{diags:?}"
        );
    }
}
