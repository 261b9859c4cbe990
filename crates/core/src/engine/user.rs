//! libbpf C user space: `perf_buffer__new` (libbpf 1.x and the old `perf_buffer_opts` form),
//! the other `perf_buffer__*` calls, `struct perf_buffer`, and the sample and lost callbacks.

use std::collections::HashSet;

use tree_sitter::Node;

use super::context::{Analysis, Consumer, Ctx, Report};
use super::edits::delete_member;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;
use crate::source::{indent_at, line_end_incl, line_start};

/// `perf_buffer__*` functions that map one to one onto `ring_buffer__*`.
const RENAMED: &[&str] = &[
    "perf_buffer__poll",
    "perf_buffer__consume",
    "perf_buffer__epoll_fd",
    "perf_buffer__free",
];

/// Perf buffer APIs with no ring buffer equivalent.
const NO_EQUIVALENT: &[&str] = &[
    "perf_buffer__new_raw",
    "perf_buffer__buffer",
    "perf_buffer__consume_buffer",
    "perf_buffer__buffer_fd",
    "perf_buffer__buffer_cnt",
];

/// Functions that print a plain message.
const MESSAGE_FNS: &[&str] = &["perror", "puts", "fputs", "die", "fatal", "bail"];

/// Functions whose variadic arguments follow a printf format.
const PRINTF_LIKE: &[&str] = &[
    "printf", "fprintf", "sprintf", "snprintf", "dprintf", "syslog", "warn", "warnx", "err",
    "errx", "p_err", "p_warn", "p_info", "pr_warn", "pr_info", "pr_debug", "printk",
];

#[derive(Default)]
struct State {
    explained: Vec<(usize, usize)>,
    done_callbacks: HashSet<String>,
    needs_errno: bool,
    /// Page-count arguments of the perf buffers migrated.
    page_args: Vec<(usize, usize)>,
    /// Lost callbacks and the creation calls that pass them: one callback may serve several
    /// perf buffers, and is removed only once all of them are seen.
    lost: Vec<(String, Vec<(usize, usize)>)>,
}

pub fn analyze(cx: &mut Ctx, out: &mut Analysis) {
    let src = cx.src();
    collect_bpf_sources(cx, out);
    let toks = cx.tokens();
    // Only a file that calls the perf buffer API is a consumer; others (vmlinux.h, with the
    // kernel's own struct perf_buffer) are left alone.
    if !toks
        .iter()
        .any(|&(t, s, e)| t == Tok::Ident && src[s..e].starts_with("perf_buffer__"))
    {
        return;
    }
    // A header that declares the perf buffer API (libbpf.h vendored into a project) is the
    // library, not a consumer.
    if toks.iter().any(|&(t, s, e)| {
        t == Tok::Ident && &src[s..e] == "perf_buffer__new" && c::is_declared_name(cx.root(), s, e)
    }) {
        return;
    }
    let mut st = State::default();
    // Using a perf buffer this file does not create: its creation, elsewhere, is out of reach,
    // and renaming only the uses would break the program.
    if !toks
        .iter()
        .any(|&(t, s, e)| t == Tok::Ident && &src[s..e] == "perf_buffer__new")
        && let Some(&(_, s, e)) = toks
            .iter()
            .find(|&&(t, s, e)| t == Tok::Ident && RENAMED.contains(&&src[s..e]))
    {
        cx.report(
            s,
            Rule::UnlinkedProgram,
            format!("{}() on a perf buffer created in another file", &src[s..e]),
            "bpf-migrate migrates a perf buffer with the file that creates it (perf_buffer__new); keep them together or migrate by hand",
        );
        return;
    }

    for call in cx.of_kind("call_expression") {
        let Some(name) = c::call_name(call, src) else {
            continue;
        };
        if name == "perf_buffer__new" {
            let f = call.field("function").unwrap();
            st.explained.push((f.start_byte(), f.end_byte()));
            new_site(cx, &mut st, call, out);
        } else if NO_EQUIVALENT.contains(&name) {
            let f = call.field("function").unwrap();
            st.explained.push((f.start_byte(), f.end_byte()));
            cx.report(
                call.start_byte(),
                Rule::NoRingEquivalent,
                format!("{name}() has no ring buffer equivalent"),
                "the ring buffer has no per-CPU buffers to drain one by one; restructure this consumer around ring_buffer__poll()/ring_buffer__consume() by hand",
            );
        }
    }

    for (name, creation) in std::mem::take(&mut st.lost) {
        lost_callback(cx, &mut st, &name, &creation);
    }

    for n in cx.of_kind("identifier") {
        let t = c::text(n, src);
        if RENAMED.contains(&t) {
            st.explained.push((n.start_byte(), n.end_byte()));
            if t == "perf_buffer__consume" {
                consume_result(cx, n);
            }
            cx.edits.push(Edit::replace(
                n.start_byte(),
                n.end_byte(),
                t.replacen("perf_buffer", "ring_buffer", 1),
                Rule::PerfBufferApi,
            ));
        }
    }
    for n in cx.of_kind("struct_specifier") {
        if n.field("body").is_some() {
            continue;
        }
        if let Some(name) = n.field("name")
            && c::text(name, src) == "perf_buffer"
        {
            st.explained.push((name.start_byte(), name.end_byte()));
            cx.edits.push(Edit::replace(
                name.start_byte(),
                name.end_byte(),
                "ring_buffer",
                Rule::PerfBufferApi,
            ));
        }
    }

    messages(cx);
    unused_page_defines(cx, &st);
    if st.needs_errno && !src.contains("<errno.h>") {
        add_errno_include(cx);
    }

    // Every perf_buffer identifier must have been explained by a site above.
    for &(t, s, e) in toks {
        if t != Tok::Ident {
            continue;
        }
        let w = &src[s..e];
        let is_struct_tag = w == "perf_buffer"
            && toks
                .iter()
                .rev()
                .find(|x| x.2 <= s && x.0 != Tok::Comment)
                .is_some_and(|x| &src[x.1..x.2] == "struct");
        // `struct perf_buffer { ... }`: the kernel's own struct of that name (vmlinux.h).
        let defines_struct = is_struct_tag
            && cx
                .root()
                .descendant_for_byte_range(s, e)
                .and_then(|n| n.parent())
                .is_some_and(|p| p.kind() == "struct_specifier" && p.field("body").is_some());
        if (w.starts_with("perf_buffer_") || is_struct_tag)
            && !defines_struct
            && !st.explained.iter().any(|&(a, b)| s >= a && e <= b)
            && !c::is_declared_name(cx.root(), s, e)
        {
            cx.report(
                s,
                Rule::UnsupportedForm,
                format!("`{w}` is used in a form bpf-migrate does not understand"),
                "migrate this use by hand, or rewrite it in the plain libbpf form and run bpf-migrate again",
            );
        }
    }
}

/// `perf_buffer__consume()` returns 0 or an error, `ring_buffer__consume()` the number of
/// records or an error. A result only compared with 0 for sign, or thrown away, means the
/// same; a truth test of the call becomes `< 0`; anything else is refused.
fn consume_result(cx: &mut Ctx, ident: Node) {
    let src = cx.src();
    let Some(call) = ident.parent().filter(|p| p.kind() == "call_expression") else {
        return;
    };
    let is_zero = |n: Option<Node>| n.is_some_and(|n| c::strip_parens(c::text(n, src)) == "0");
    let sign_test = |n: Node| -> bool {
        n.kind() == "binary_expression"
            && n.field("operator")
                .is_some_and(|o| matches!(c::text(o, src), "<" | ">="))
            && is_zero(n.field("right"))
    };
    let Some(parent) = call.parent() else { return };
    match parent.kind() {
        "expression_statement" => return,
        "binary_expression" if sign_test(parent) => return,
        "parenthesized_expression"
            if parent
                .parent()
                .is_some_and(|g| matches!(g.kind(), "if_statement" | "while_statement")) =>
        {
            cx.edits
                .push(Edit::insert(call.end_byte(), " < 0", Rule::PerfBufferApi));
            return;
        }
        "unary_expression" if c::text(parent, src).starts_with('!') => {
            cx.edits.push(Edit::replace(
                parent.start_byte(),
                parent.start_byte() + 1,
                "",
                Rule::PerfBufferApi,
            ));
            cx.edits
                .push(Edit::insert(call.end_byte(), " >= 0", Rule::PerfBufferApi));
            return;
        }
        _ => {}
    }
    // `v = perf_buffer__consume(pb);`: every read of v until it is set again tests its sign.
    let var = match parent.kind() {
        "assignment_expression" => parent.field("left").map(|l| c::text(l, src)),
        "init_declarator" => parent.field("declarator").map(|d| c::text(d, src)),
        _ => None,
    };
    let scope = c::ancestor(call, "function_definition");
    let ok = match (var, scope) {
        (Some(v), Some(f)) if c::is_ident(v) => {
            let mut ok = true;
            for n in cx.of_kind("identifier").iter().filter(|n| {
                n.kind() == "identifier"
                    && c::text(**n, src) == v
                    && n.start_byte() > call.end_byte()
                    && n.end_byte() <= f.end_byte()
            }) {
                let p = n.parent();
                if p.is_some_and(|p| {
                    p.kind() == "assignment_expression" && p.field("left") == Some(*n)
                }) {
                    break;
                }
                if p.is_some_and(|p| sign_test(p) && p.field("left") == Some(*n)) {
                    continue;
                }
                // Inside `if (v < 0) ...` the value is an error code in both APIs.
                let in_error_branch = {
                    let mut a = n.parent();
                    let mut found = false;
                    while let Some(x) = a {
                        if x.kind() == "if_statement"
                            && let (Some(cond), Some(then)) =
                                (x.field("condition"), x.field("consequence"))
                            && c::strip_parens(c::text(cond, src)).replace(' ', "")
                                == format!("{v}<0")
                            && n.start_byte() >= then.start_byte()
                            && n.end_byte() <= then.end_byte()
                        {
                            found = true;
                            break;
                        }
                        a = x.parent();
                    }
                    found
                };
                if !in_error_branch {
                    ok = false;
                    break;
                }
            }
            ok
        }
        _ => false,
    };
    if !ok {
        cx.report(
            call.start_byte(),
            Rule::ConsumeResult,
            "the result of perf_buffer__consume() is used as 0-or-error, but ring_buffer__consume() returns the number of records consumed",
            "test it with `< 0` (errors are negative in both APIs), then run bpf-migrate again",
        );
    }
}

/// `#include "x.skel.h"` and `bpf_object__open_file("x.bpf.o", ...)` name the BPF source.
fn collect_bpf_sources(cx: &Ctx, out: &mut Analysis) {
    let src = cx.src();
    for n in cx.of_kind("preproc_include") {
        if let Some(p) = n.field("path") {
            let path = c::text(p, src).trim_matches(['"', '<', '>']);
            let fname = path.rsplit('/').next().unwrap_or(path);
            if let Some(stem) = fname.strip_suffix(".skel.h") {
                out.bpf_sources.push(format!("{stem}.bpf.c"));
            }
        }
    }
    for call in cx.of_kind("call_expression") {
        if !matches!(
            c::call_name(call, src),
            Some("bpf_object__open_file" | "bpf_object__open")
        ) {
            continue;
        }
        if let Some(&(s, e)) = c::arg_spans(call, src).first() {
            let a = &src[s..e];
            if a.starts_with('"') && a.ends_with('"') {
                let path = a.trim_matches('"');
                let fname = path.rsplit('/').next().unwrap_or(path);
                if let Some(stem) = fname.strip_suffix(".o") {
                    out.bpf_sources.push(format!("{stem}.c"));
                }
            }
        }
    }
}

fn new_site(cx: &mut Ctx, st: &mut State, call: Node, out: &mut Analysis) {
    let src = cx.src();
    let args = c::arg_spans(call, src);
    let argt = |i: usize| &src[args[i].0..args[i].1];
    let at = call.start_byte();
    if cx.has_error_in(call.start_byte(), call.end_byte()) {
        cx.report(
            at,
            Rule::UnsupportedForm,
            "this perf_buffer__new() call does not parse as C",
            "check the macros around this call",
        );
        return;
    }
    // Where this call's pieces may be named without counting as other uses.
    let mut creation: Vec<(usize, usize)> = vec![(call.start_byte(), call.end_byte())];
    let (sample, lost, ctx_arg) = match args.len() {
        6 => {
            if !c::is_null(argt(5)) {
                cx.report(
                    args[5].0,
                    Rule::OptsUnsupported,
                    format!("perf_buffer__new() is given options (`{}`) that a ring buffer does not take", argt(5)),
                    "perf_buffer_opts such as sample_period have no ring buffer equivalent; migrate by hand",
                );
                return;
            }
            (
                argt(2).to_string(),
                argt(3).to_string(),
                argt(4).to_string(),
            )
        }
        3 => match old_opts(cx, st, call, argt(2), args[2].0) {
            Some(o) => {
                creation.extend(o.spans);
                (o.sample, o.lost, o.ctx)
            }
            None => return,
        },
        n => {
            cx.report(at, Rule::UnsupportedForm, format!("perf_buffer__new() with {n} arguments is neither the libbpf 1.x nor the old form"), "migrate by hand");
            return;
        }
    };

    let fd = argt(0).to_string();
    let Some((map, fd_spans)) = resolve_map(cx, &fd, args[0].0, call, 0) else {
        cx.report(
            args[0].0,
            Rule::UnresolvedMap,
            format!("cannot tell which map `{fd}` refers to"),
            "bpf-migrate follows skel->maps.NAME, bpf_object__find_map_fd_by_name(obj, \"NAME\") and variables set from them in the same file",
        );
        return;
    };
    map_other_uses(cx, &map, &fd_spans);

    if !c::is_ident(&sample) {
        cx.report(
            at,
            Rule::CallbackForm,
            format!("the sample callback `{sample}` is not a function name"),
            "bpf-migrate rewrites callbacks defined as functions in the same file",
        );
        return;
    }
    sample_callback(cx, st, &sample, &creation, at);
    if !c::is_null(&lost) {
        match st.lost.iter_mut().find(|(n, _)| *n == lost) {
            Some((_, spans)) => spans.extend(creation.iter().copied()),
            None => st.lost.push((lost, creation.clone())),
        }
    }

    let new_args = vec![fd.clone(), sample, ctx_arg, "NULL".to_string()];
    let text = c::layout_call(
        src,
        call.start_byte(),
        call.end_byte(),
        "ring_buffer__new",
        &new_args,
    );
    cx.edits.push(Edit::replace(
        call.start_byte(),
        call.end_byte(),
        text,
        Rule::PerfBufferNew,
    ));

    if let Some(h) = handle_of(call, src) {
        null_checks(cx, st, call, &h);
    }
    if args.len() == 6 || args.len() == 3 {
        st.page_args.push(args[1]);
    }
    let pages = eval_int(cx, argt(1), 0);
    if pages.is_none() {
        runtime_page_count(cx, call, argt(1), args[1]);
    }
    out.consumers.push(Consumer {
        map,
        offset: at,
        pages,
    });
}

/// A page count chosen at run time no longer sizes anything: the ring's size is fixed in the
/// BPF map. Say so; a local variable that only held it would be left unused, so refuse that.
fn runtime_page_count(cx: &mut Ctx, call: Node, text: &str, span: (usize, usize)) {
    let src = cx.src();
    if c::is_ident(text)
        && let Some(func) = c::ancestor(call, "function_definition")
    {
        let local = cx.of_kind("declaration").iter().any(|n| {
            n.start_byte() >= func.start_byte() && n.end_byte() <= func.end_byte() && {
                let mut cursor = n.walk();
                n.children_by_field_name("declarator", &mut cursor)
                    .any(|d| {
                        let d = if d.kind() == "init_declarator" {
                            d.field("declarator").unwrap_or(d)
                        } else {
                            d
                        };
                        strip_ptr(d, src) == text
                    })
            }
        });
        let uses = cx
            .of_kind("identifier")
            .iter()
            .filter(|n| {
                n.kind() == "identifier"
                    && c::text(**n, src) == text
                    && n.start_byte() >= func.start_byte()
                    && n.end_byte() <= func.end_byte()
            })
            .count();
        // The declaration and the perf_buffer__new argument: nothing else reads it.
        if local && uses <= 2 {
            cx.report(
                span.0,
                Rule::UnsupportedForm,
                format!("the page count `{text}` is a local variable that only sizes this perf buffer; it would be left unused"),
                "the ring buffer's size is set in the BPF map (max_entries); remove the variable or make the page count a constant, then run bpf-migrate again",
            );
            return;
        }
    }
    cx.diag(
        span.0,
        Rule::PerfBufferNew,
        format!("the page count `{text}` is chosen at run time and no longer applies"),
        Some("a ring buffer's size is fixed by the map's max_entries in the BPF program (--ringbuf-size); an option that set the page count now does nothing"),
    );
}

/// A `#define` that only gave perf buffers their page count is dead once they are gone.
fn unused_page_defines(cx: &mut Ctx, st: &State) {
    let src = cx.src();
    let mut names: Vec<&str> = st
        .page_args
        .iter()
        .map(|&(s, e)| &src[s..e])
        .filter(|t| c::is_ident(t))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let Some(def) = cx
            .of_kind("preproc_def")
            .into_iter()
            .find(|d| d.field("name").is_some_and(|n| c::text(n, src) == name))
        else {
            continue;
        };
        let used = cx.tokens().iter().any(|&(t, s, e)| {
            t == Tok::Ident
                && &src[s..e] == name
                && !(s >= def.start_byte() && e <= def.end_byte())
                && !st.page_args.iter().any(|&(a, b)| s >= a && e <= b)
        });
        if !used {
            let (s, e) = item_span(src, def);
            cx.edits.push(Edit::delete(s, e, Rule::PerfBufferNew));
        }
    }
}

struct OldOpts {
    sample: String,
    lost: String,
    ctx: String,
    spans: Vec<(usize, usize)>,
}

/// The libbpf <= 0.5 form: `perf_buffer__new(fd, pages, &opts)` with the callbacks in a
/// `struct perf_buffer_opts`, set in its initializer or by assignments. The options go away.
fn old_opts(cx: &mut Ctx, st: &mut State, call: Node, arg: &str, arg_at: usize) -> Option<OldOpts> {
    let src = cx.src();
    let Some(name) = c::strip_parens(arg)
        .strip_prefix('&')
        .map(str::trim)
        .filter(|n| c::is_ident(n))
    else {
        cx.report(
            arg_at,
            Rule::OptsUnsupported,
            format!("the perf buffer options `{arg}` are not a local struct perf_buffer_opts"),
            "migrate by hand",
        );
        return None;
    };
    let scope = c::ancestor(call, "function_definition").unwrap_or(cx.root());
    let scope_nodes: Vec<Node> = cx
        .nodes_within(scope)
        .into_iter()
        .filter(|n| matches!(n.kind(), "declaration" | "identifier"))
        .collect();
    let decl = scope_nodes.iter().copied().find(|n| {
        n.kind() == "declaration"
            && c::text(*n, src).contains("perf_buffer_opts")
            && n.field("declarator").is_some_and(|d| {
                let d = if d.kind() == "init_declarator" {
                    d.field("declarator").unwrap_or(d)
                } else {
                    d
                };
                c::text(d, src) == name
            })
    });
    let Some(decl) = decl else {
        cx.report(
            arg_at,
            Rule::OptsUnsupported,
            format!("`{name}` is not declared as a struct perf_buffer_opts in this function"),
            "migrate by hand",
        );
        return None;
    };
    st.explained.push((decl.start_byte(), decl.end_byte()));
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut spans = vec![(decl.start_byte(), decl.end_byte())];
    let mut deletions = vec![statement_span(src, decl)];
    let mut ok = true;
    if let Some(init) = decl.field("declarator").and_then(|d| d.field("value")) {
        let mut cursor = init.walk();
        for p in init.named_children(&mut cursor) {
            match p.kind() {
                "initializer_pair" => {
                    let f = p
                        .field("designator")
                        .map(|d| c::text(d, src).trim_start_matches('.').to_string())
                        .unwrap_or_default();
                    let v = p
                        .field("value")
                        .map(|v| c::text(v, src).to_string())
                        .unwrap_or_default();
                    fields.push((f, v));
                }
                "comment" => {}
                _ if c::text(p, src) == "0" => {}
                _ => {
                    ok = false;
                    cx.report(
                        p.start_byte(),
                        Rule::OptsUnsupported,
                        "positional initializers of perf_buffer_opts are not understood",
                        "use designated initializers (.sample_cb = ...) or migrate by hand",
                    );
                }
            }
        }
    }
    // Assignments `name.field = value;` and a clearing memset, anywhere in the function.
    for n in &scope_nodes {
        if n.kind() != "identifier"
            || c::text(*n, src) != name
            || (n.start_byte() >= decl.start_byte() && n.end_byte() <= decl.end_byte())
        {
            continue;
        }
        if n.start_byte() >= call.start_byte() && n.end_byte() <= call.end_byte() {
            continue;
        }
        let stmt = c::ancestor(*n, "expression_statement");
        let assigned = n
            .parent()
            .filter(|p| p.kind() == "field_expression")
            .and_then(|fe| {
                let asg = fe.parent().filter(|a| {
                    a.kind() == "assignment_expression" && a.field("left") == Some(fe)
                })?;
                let field = fe.field("field").map(|f| c::text(f, src).to_string())?;
                let value = asg.field("right").map(|r| c::text(r, src).to_string())?;
                Some((field, value))
            });
        let stmt_text = stmt
            .map(|s| c::text(s, src).replace(char::is_whitespace, ""))
            .unwrap_or_default();
        if let (Some((f, v)), Some(s)) = (assigned, stmt) {
            fields.push((f, v));
            spans.push((s.start_byte(), s.end_byte()));
            deletions.push(statement_span(src, s));
        } else if let Some(s) =
            stmt.filter(|_| stmt_text.starts_with(&format!("memset(&{name},0,")))
        {
            spans.push((s.start_byte(), s.end_byte()));
            deletions.push(statement_span(src, s));
        } else {
            ok = false;
            cx.report(
                n.start_byte(),
                Rule::OptsUnsupported,
                format!("the perf buffer options `{name}` are used here"),
                "migrate by hand",
            );
        }
    }
    let mut o = OldOpts {
        sample: String::new(),
        lost: "NULL".into(),
        ctx: "NULL".into(),
        spans,
    };
    for (f, v) in fields {
        match f.as_str() {
            "sample_cb" => o.sample = v,
            "lost_cb" => o.lost = v,
            "ctx" => o.ctx = v,
            other => {
                ok = false;
                cx.report(
                    decl.start_byte(),
                    Rule::OptsUnsupported,
                    format!("perf_buffer_opts field `{other}` has no ring buffer equivalent"),
                    "migrate by hand",
                );
            }
        }
    }
    if o.sample.is_empty() {
        ok = false;
        cx.report(
            decl.start_byte(),
            Rule::OptsUnsupported,
            format!("no sample_cb is set in `{name}`"),
            "migrate by hand",
        );
    }
    if !ok {
        return None;
    }
    for (s, e) in deletions {
        cx.edits.push(Edit::delete(s, e, Rule::PerfBufferOpts));
    }
    Some(o)
}

/// The bytes to delete for a statement: its whole line when it stands alone there.
fn statement_span(src: &str, n: Node) -> (usize, usize) {
    let e = delete_member(src, (n.start_byte(), n.end_byte()), Rule::PerfBufferOpts);
    (e.start, e.end)
}

/// The expression the new buffer is stored in: `pb` in `pb = perf_buffer__new(...)`.
fn handle_of(call: Node, src: &str) -> Option<String> {
    let mut p = call.parent()?;
    while p.kind() == "parenthesized_expression" || p.kind() == "cast_expression" {
        p = p.parent()?;
    }
    match p.kind() {
        "assignment_expression" => p.field("left").map(|l| c::text(l, src).to_string()),
        "init_declarator" => {
            let mut d = p.field("declarator")?;
            while d.kind() == "pointer_declarator" {
                d = d.field("declarator")?;
            }
            Some(c::text(d, src).to_string())
        }
        _ => None,
    }
}

/// `libbpf_get_error(pb)` (and `IS_ERR`/`PTR_ERR`) read an error pointer; `ring_buffer__new`
/// returns NULL and sets errno, and `libbpf_get_error(NULL)` is 0 before libbpf 0.6. The check
/// becomes a NULL check.
fn null_checks(cx: &mut Ctx, st: &mut State, call: Node, handle: &str) {
    let src = cx.src();
    let scope = c::ancestor(call, "function_definition").unwrap_or(cx.root());
    for n in cx.of_kind("call_expression") {
        if n.start_byte() < call.end_byte() || n.end_byte() > scope.end_byte() {
            continue;
        }
        let Some(name) = c::call_name(n, src) else {
            continue;
        };
        let args = c::arg_spans(n, src);
        if args.len() != 1 || c::strip_parens(&src[args[0].0..args[0].1]) != handle {
            continue;
        }
        let in_condition = n
            .parent()
            .filter(|p| p.kind() == "parenthesized_expression")
            .and_then(|p| p.parent())
            .is_some_and(|g| matches!(g.kind(), "if_statement" | "while_statement"));
        let plain = n.parent().is_some_and(|p| {
            matches!(
                p.kind(),
                "assignment_expression" | "init_declarator" | "return_statement"
            )
        });
        let text = match name {
            "libbpf_get_error" if in_condition => format!("!{handle}"),
            "libbpf_get_error" if plain => format!("{handle} ? 0 : -errno"),
            "libbpf_get_error" => format!("({handle} ? 0 : -errno)"),
            "IS_ERR" | "IS_ERR_OR_NULL" if in_condition => format!("!{handle}"),
            "IS_ERR" | "IS_ERR_OR_NULL" => format!("(!{handle})"),
            "PTR_ERR" => "-errno".to_string(),
            _ => continue,
        };
        if text.contains("errno") {
            st.needs_errno = true;
        }
        cx.edits.push(Edit::replace(
            n.start_byte(),
            n.end_byte(),
            text,
            Rule::NullCheck,
        ));
    }
}

fn add_errno_include(cx: &mut Ctx) {
    let src = cx.src();
    let includes = cx.of_kind("preproc_include");
    let anchor = includes
        .iter()
        .rfind(|n| {
            n.field("path")
                .is_some_and(|p| p.kind() == "system_lib_string")
        })
        .or(includes.first());
    let at = anchor
        .map(|n| line_end_incl(src, n.end_byte().saturating_sub(1)))
        .unwrap_or(0);
    cx.edits
        .push(Edit::insert(at, "#include <errno.h>\n", Rule::NullCheck));
}

/// Which map an fd expression reads: `bpf_map__fd(skel->maps.NAME)`,
/// `bpf_object__find_map_fd_by_name(obj, "NAME")`, or a variable (or parameter) set from one.
/// Returns the map name and the spans of the expressions followed.
fn resolve_map(cx: &Ctx, expr: &str, expr_at: usize, at: Node, depth: usize) -> Option<Resolved> {
    if depth > 4 {
        return None;
    }
    let src = cx.src();
    let span = (expr_at, expr_at + expr.len());
    let toks = c::lex(src, span.0..span.1);
    if let Some(name) = (0..toks.len()).find_map(|k| maps_field(src, &toks, k)) {
        return Some((src[toks[name].1..toks[name].2].to_string(), vec![span]));
    }
    let inner = c::strip_parens(expr);
    if let Some(rest) = inner
        .strip_prefix("bpf_object__find_map_fd_by_name")
        .or_else(|| inner.strip_prefix("bpf_object__find_map_by_name"))
        && let Some(q1) = rest.find('"')
        && let Some(q2) = rest[q1 + 1..].find('"')
    {
        return Some((rest[q1 + 1..q1 + 1 + q2].to_string(), vec![span]));
    }
    if let Some(arg) = inner
        .strip_prefix("bpf_map__fd")
        .map(str::trim)
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'))
    {
        let arg = arg.trim();
        let off = expr_at + expr.find(arg).unwrap_or(0);
        return resolve_map(cx, arg, off, at, depth + 1).map(|(m, mut s)| {
            s.push(span);
            (m, s)
        });
    }
    if !c::is_ident(inner) {
        return resolve_field(cx, inner, span, depth);
    }
    // A variable: its initializer or the last assignment before `at` in the same function.
    let func = c::ancestor(at, "function_definition");
    let scope = func.unwrap_or(cx.root());
    let mut best: Option<Node> = None;
    for n in cx.nodes_within(scope) {
        if !matches!(n.kind(), "init_declarator" | "assignment_expression")
            || n.start_byte() >= at.start_byte()
        {
            continue;
        }
        let value = match n.kind() {
            "init_declarator"
                if n.field("declarator")
                    .is_some_and(|d| strip_ptr(d, src) == inner) =>
            {
                n.field("value")
            }
            "assignment_expression"
                if n.field("left").is_some_and(|l| c::text(l, src) == inner) =>
            {
                n.field("right")
            }
            _ => None,
        };
        if let Some(v) = value {
            best = Some(v);
        }
    }
    if let Some(v) = best {
        return resolve_map(cx, c::text(v, src), v.start_byte(), v, depth + 1).map(|(m, mut s)| {
            s.push(span);
            (m, s)
        });
    }
    // A parameter: every call of the function in this file must pass the same map.
    let func = func?;
    let decl = func.field("declarator")?;
    let fdecl = if decl.kind() == "function_declarator" {
        decl
    } else {
        c::descendants(decl)
            .into_iter()
            .find(|n| n.kind() == "function_declarator")?
    };
    let fname = c::text(fdecl.field("declarator")?, src);
    let params = fdecl.field("parameters")?;
    let mut cursor = params.walk();
    let idx = params
        .named_children(&mut cursor)
        .filter(|p| p.kind() == "parameter_declaration")
        .position(|p| {
            p.field("declarator")
                .is_some_and(|d| strip_ptr(d, src) == inner)
        })?;
    let mut found: Option<Resolved> = None;
    for call in cx.of_kind("call_expression") {
        if c::call_name(call, src) != Some(fname) {
            continue;
        }
        let args = c::arg_spans(call, src);
        let &(s, e) = args.get(idx)?;
        let (m, spans) = resolve_map(cx, &src[s..e], s, call, depth + 1)?;
        found = Some(agree(found, m, spans)?);
    }
    found.map(|(m, mut s)| {
        s.push(span);
        (m, s)
    })
}

/// Several places (callers, assignments) must name the same map: their spans merge; a
/// different map makes the answer unknown.
fn agree(found: Option<Resolved>, m: String, spans: Vec<(usize, usize)>) -> Option<Resolved> {
    match found {
        None => Some((m, spans)),
        Some((m0, mut s0)) if m0 == m => {
            s0.extend(spans);
            Some((m0, s0))
        }
        Some(_) => None,
    }
}

/// A map name and the spans of the expressions followed to find it.
type Resolved = (String, Vec<(usize, usize)>);

/// A struct field holding the fd (`env.events_fd`, `app->fd`): the assignments to it in this
/// file must all resolve to the same map.
fn resolve_field(cx: &Ctx, path: &str, span: (usize, usize), depth: usize) -> Option<Resolved> {
    let src = cx.src();
    let squash = |t: &str| t.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let want = squash(path);
    let is_path = want
        .split(['.', '>'])
        .all(|p| c::is_ident(p.trim_end_matches('-')));
    if !is_path {
        return None;
    }
    let mut found: Option<Resolved> = None;
    for n in cx.of_kind("assignment_expression").iter() {
        if n.field("left")
            .is_none_or(|l| squash(c::text(l, src)) != want)
        {
            continue;
        }
        let v = n.field("right")?;
        let (m, spans) = resolve_map(cx, c::text(v, src), v.start_byte(), v, depth + 1)?;
        found = Some(agree(found, m, spans)?);
    }
    found.map(|(m, mut s)| {
        s.push(span);
        (m, s)
    })
}

fn strip_ptr<'a>(mut d: Node, src: &'a str) -> &'a str {
    while d.kind() == "pointer_declarator" {
        match d.field("declarator") {
            Some(x) => d = x,
            None => break,
        }
    }
    c::text(d, src)
}

/// `skel->maps.NAME` elsewhere in the loader (resizing the map, setting its type) would not
/// survive the change of map type.
fn map_other_uses(cx: &mut Ctx, map: &str, allowed: &[(usize, usize)]) {
    let src = cx.src();
    let toks = cx.tokens();
    for k in 0..toks.len() {
        let Some(i) = maps_field(src, toks, k) else {
            continue;
        };
        let (s, e) = (toks[i].1, toks[i].2);
        if &src[s..e] == map && !allowed.iter().any(|&(a, b)| s >= a && e <= b) {
            cx.report(
                toks[k].1,
                Rule::MapOtherUse,
                format!("the loader uses map `{map}` here as well as for its perf buffer"),
                "a ring buffer map takes no per-CPU sizing or perf-specific setup; remove or adapt this use by hand, then run bpf-migrate again",
            );
        }
    }
}

/// For `maps.NAME` or `maps->NAME` starting at token `k`, the index of the NAME token.
fn maps_field(src: &str, toks: &[(Tok, usize, usize)], k: usize) -> Option<usize> {
    let (t, s, e) = *toks.get(k)?;
    if t != Tok::Ident || &src[s..e] != "maps" {
        return None;
    }
    let name = match toks.get(k + 1)?.0 {
        Tok::Punct(b'.') => k + 2,
        Tok::Punct(b'-') if toks.get(k + 2)?.0 == Tok::Punct(b'>') => k + 3,
        _ => return None,
    };
    (toks.get(name)?.0 == Tok::Ident).then_some(name)
}

/// Integer value of a page count: a literal, a `#define`, or a product or shift of those.
fn eval_int(cx: &Ctx, expr: &str, depth: usize) -> Option<u64> {
    if depth > 4 {
        return None;
    }
    let e = c::strip_parens(expr);
    if let Some((a, b)) = e.split_once('*') {
        return eval_int(cx, a, depth + 1)?.checked_mul(eval_int(cx, b, depth + 1)?);
    }
    if let Some((a, b)) = e.split_once("<<") {
        return eval_int(cx, a, depth + 1)?.checked_shl(eval_int(cx, b, depth + 1)? as u32);
    }
    let lit = e.trim_end_matches(['u', 'U', 'l', 'L']);
    if let Some(h) = lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    if let Ok(v) = lit.parse() {
        return Some(v);
    }
    if !c::is_ident(e) {
        return None;
    }
    let src = cx.src();
    cx.of_kind("preproc_def")
        .into_iter()
        .find(|d| d.field("name").is_some_and(|n| c::text(n, src) == e))
        .and_then(|d| d.field("value"))
        .and_then(|v| eval_int(cx, c::text(v, src), depth + 1))
}

/// A function definition or prototype named `name`: (declaration node, function_declarator).
fn functions_named<'t>(cx: &Ctx<'_, 't>, name: &str) -> Vec<(Node<'t>, Node<'t>)> {
    let src = cx.src();
    let mut out = Vec::new();
    for n in cx.of_kinds(&["function_definition", "declaration"]) {
        let Some(d) = n.field("declarator") else {
            continue;
        };
        if d.kind() != "function_declarator" {
            continue;
        }
        if d.field("declarator")
            .is_some_and(|i| c::text(i, src) == name)
        {
            out.push((n, d));
        }
    }
    out
}

/// Uses of identifier `name` outside the given spans.
fn other_uses<'t>(cx: &Ctx<'_, 't>, name: &str, allowed: &[(usize, usize)]) -> Vec<Node<'t>> {
    let src = cx.src();
    cx.of_kind("identifier")
        .into_iter()
        .filter(|n| c::text(*n, src) == name)
        .filter(|n| {
            !allowed
                .iter()
                .any(|&(a, b)| n.start_byte() >= a && n.end_byte() <= b)
        })
        .collect()
}

fn param_name<'a>(p: Node, src: &'a str) -> Option<&'a str> {
    let mut d = p.field("declarator")?;
    loop {
        match d.kind() {
            "identifier" => return Some(c::text(d, src)),
            "pointer_declarator" | "array_declarator" => d = d.field("declarator")?,
            _ => return None,
        }
    }
}

/// `void f(void *ctx, int cpu, void *data, __u32 size)` becomes
/// `int f(void *ctx, void *data, size_t size)`, returning 0 on every path.
fn sample_callback(
    cx: &mut Ctx,
    st: &mut State,
    name: &str,
    creation: &[(usize, usize)],
    at: usize,
) {
    if !st.done_callbacks.insert(name.to_string()) {
        return;
    }
    let src = cx.src();
    let fns = functions_named(cx, name);
    let Some(_) = fns.iter().find(|(n, _)| n.kind() == "function_definition") else {
        cx.report(
            at,
            Rule::CallbackForm,
            format!("the sample callback `{name}` is not defined in this file"),
            "bpf-migrate rewrites callbacks defined in the loader's own file; migrate by hand",
        );
        return;
    };
    let mut allowed: Vec<(usize, usize)> = creation.to_vec();
    for (_, d) in &fns {
        let i = d.field("declarator").unwrap();
        allowed.push((i.start_byte(), i.end_byte()));
    }
    if let Some(u) = other_uses(cx, name, &allowed).first() {
        cx.report(
            u.start_byte(),
            Rule::CallbackForm,
            format!("the sample callback `{name}` is also used here"),
            "its signature changes (int f(void *ctx, void *data, size_t size)); migrate by hand",
        );
        return;
    }
    for &(node, fdecl) in &fns {
        let Some(ty) = node.field("type") else {
            continue;
        };
        if c::text(ty, src) != "void" {
            cx.report(
                ty.start_byte(),
                Rule::CallbackForm,
                format!("the sample callback `{name}` does not return void"),
                "migrate by hand",
            );
            return;
        }
        let params = fdecl.field("parameters").unwrap();
        let mut cursor = params.walk();
        let ps: Vec<Node> = params
            .named_children(&mut cursor)
            .filter(|p| p.kind() != "comment")
            .collect();
        if ps.len() != 4 || ps.iter().any(|p| p.kind() != "parameter_declaration") {
            cx.report(
                params.start_byte(),
                Rule::CallbackForm,
                format!("the sample callback `{name}` does not take (ctx, cpu, data, size)"),
                "migrate by hand",
            );
            return;
        }
        let size_ty = ps[3]
            .field("type")
            .map(|t| c::text(t, src))
            .unwrap_or("__u32");
        let size_name = param_name(ps[3], src);
        let cpu_name = param_name(ps[1], src);
        let mut new_params = vec![
            c::text(ps[0], src).to_string(),
            c::text(ps[2], src).to_string(),
        ];
        new_params.push(match size_name {
            Some(n) => format!("size_t {n}"),
            None => "size_t".to_string(),
        });
        let size_ty = size_ty.to_string();
        if node.kind() == "function_definition" {
            let body = node.field("body").unwrap();
            if !callback_body(cx, name, body, cpu_name, size_name, &size_ty) {
                return;
            }
        }
        cx.edits.push(Edit::replace(
            ty.start_byte(),
            ty.end_byte(),
            "int",
            Rule::SampleCallback,
        ));
        let text = c::layout_call(src, params.start_byte(), params.end_byte(), "", &new_params);
        cx.edits.push(Edit::replace(
            params.start_byte(),
            params.end_byte(),
            text,
            Rule::SampleCallback,
        ));
    }
}

fn callback_body(
    cx: &mut Ctx,
    name: &str,
    body: Node,
    cpu: Option<&str>,
    size: Option<&str>,
    size_ty: &str,
) -> bool {
    let src = cx.src();
    let inside: Vec<Node> = cx.nodes_within(body);
    let mut edits = Vec::new();
    let mut ok = true;
    if let Some(cpu) = cpu {
        let mut uses = Vec::new();
        for n in inside
            .iter()
            .filter(|n| n.kind() == "identifier" && c::text(**n, src) == cpu)
        {
            // `(void)cpu;` only silences a warning: it goes.
            let silencer = n
                .parent()
                .filter(|p| p.kind() == "cast_expression")
                .and_then(|p| p.parent())
                .filter(|s| s.kind() == "expression_statement");
            if let Some(s) = silencer {
                let (a, b) = statement_span(src, s);
                edits.push(Edit::delete(a, b, Rule::SampleCallback));
            } else {
                uses.push(n.start_byte());
            }
        }
        if let Some(&first) = uses.first() {
            ok = false;
            let more = match uses.len() {
                1 => String::new(),
                n => format!(" ({n} uses)"),
            };
            cx.report(
                first,
                Rule::CallbackUsesCpu,
                format!("the sample callback `{name}` uses `{cpu}`{more}, the CPU that produced the event; a ring buffer does not report it"),
                "add a cpu field to the event, set it with bpf_get_smp_processor_id() on the BPF side, read that field here instead, then run bpf-migrate again",
            );
        }
    }
    if !ok {
        return false;
    }
    // Printing the size with a 32-bit format would now pass a size_t: keep the old type.
    if let Some(size) = size {
        for n in inside
            .iter()
            .filter(|n| n.kind() == "identifier" && c::text(**n, src) == size)
        {
            let printed = n
                .parent()
                .filter(|p| p.kind() == "argument_list")
                .and_then(|p| p.parent())
                .and_then(|call| c::call_name(call, src))
                .is_some_and(|f| PRINTF_LIKE.contains(&f));
            if printed && size_ty != "size_t" {
                edits.push(Edit::replace(
                    n.start_byte(),
                    n.end_byte(),
                    format!("({size_ty}){size}"),
                    Rule::SampleCallback,
                ));
            }
        }
    }
    for r in inside.iter().filter(|n| n.kind() == "return_statement") {
        if r.named_child_count() == 0
            || r.named_children(&mut r.walk())
                .all(|c| c.kind() == "comment")
        {
            edits.push(Edit::replace(
                r.start_byte(),
                r.end_byte(),
                "return 0;",
                Rule::SampleCallback,
            ));
        }
    }
    let mut cursor = body.walk();
    let stmts: Vec<Node> = body
        .named_children(&mut cursor)
        .filter(|n| n.kind() != "comment")
        .collect();
    if stmts.last().is_none_or(|s| s.kind() != "return_statement") {
        let close = body.end_byte() - 1;
        let body_text = c::text(body, src);
        if body_text.contains('\n') {
            let indent = match stmts.first() {
                Some(s) => indent_at(src, s.start_byte()).to_string(),
                None => format!("{}\t", indent_at(src, close)),
            };
            let ls = line_start(src, close);
            if src[ls..close].trim().is_empty() {
                edits.push(Edit::insert(
                    ls,
                    format!("{indent}return 0;\n"),
                    Rule::SampleCallback,
                ));
            } else {
                edits.push(Edit::insert(
                    close,
                    format!("\n{indent}return 0;\n"),
                    Rule::SampleCallback,
                ));
            }
        } else {
            let pad = if src[..close].ends_with(' ') { "" } else { " " };
            edits.push(Edit::insert(
                close,
                format!("{pad}return 0; "),
                Rule::SampleCallback,
            ));
        }
    }
    cx.edits.extend(edits);
    true
}

/// A lost-sample callback has no ring buffer equivalent. A static one that nothing else uses
/// is removed (else `-Wunused-function` would warn), with file-scope statics only it used.
fn lost_callback(cx: &mut Ctx, st: &mut State, name: &str, creation: &[(usize, usize)]) {
    let at = creation[0].0;
    const HELP: &str = "when the ring is full, bpf_ringbuf_output() returns -EAGAIN on the BPF side: count those failures there (e.g. in a per-CPU array) and read the counter from user space";
    if !st.done_callbacks.insert(name.to_string()) {
        return;
    }
    let src = cx.src();
    // Kept (not static, used elsewhere, or not a plain function): it just is no longer called.
    let kept = |cx: &mut Ctx| {
        let msg = format!(
            "the lost-sample callback `{name}` is no longer called: a ring buffer has none"
        );
        cx.diag(at, Rule::LostCallback, msg, Some(HELP));
    };
    if !c::is_ident(name) {
        kept(cx);
        return;
    }
    let fns = functions_named(cx, name);
    let def = fns
        .iter()
        .find(|(n, _)| n.kind() == "function_definition")
        .map(|x| x.0);
    let mut allowed: Vec<(usize, usize)> = creation.to_vec();
    for (_, d) in &fns {
        let i = d.field("declarator").unwrap();
        allowed.push((i.start_byte(), i.end_byte()));
    }
    let is_static = def.is_some_and(|d| {
        let mut cursor = d.walk();
        d.children(&mut cursor)
            .any(|c| c.kind() == "storage_class_specifier" && c::text(c, src) == "static")
    });
    // Code that does not parse can make a function appear to run on over what follows it:
    // such a definition is not deleted.
    let whole = |d: &Node| {
        !d.has_error()
            && !creation
                .iter()
                .any(|&(s, e)| s < d.end_byte() && e > d.start_byte())
    };
    let Some(def) =
        def.filter(|d| is_static && whole(d) && other_uses(cx, name, &allowed).is_empty())
    else {
        kept(cx);
        return;
    };
    for (n, _) in &fns {
        let (s, e) = item_span(src, *n);
        cx.edits.push(Edit::delete(s, e, Rule::LostCallback));
    }
    // File-scope statics that only the callback used would now be unused.
    let body = def.field("body").unwrap();
    let used: HashSet<&str> = cx
        .of_kind("identifier")
        .iter()
        .filter(|n| {
            n.kind() == "identifier"
                && n.start_byte() >= body.start_byte()
                && n.end_byte() <= body.end_byte()
        })
        .map(|n| c::text(*n, src))
        .collect();
    let root = cx.root();
    let mut cursor = root.walk();
    let top: Vec<Node> = root.named_children(&mut cursor).collect();
    for item in top {
        if item.kind() != "declaration" || !c::text(item, src).trim_start().starts_with("static") {
            continue;
        }
        let Some(d) = item.field("declarator") else {
            continue;
        };
        let var = strip_ptr(
            if d.kind() == "init_declarator" {
                d.field("declarator").unwrap_or(d)
            } else {
                d
            },
            src,
        );
        if !used.contains(var) {
            continue;
        }
        let mut cursor2 = item.walk();
        if item
            .children_by_field_name("declarator", &mut cursor2)
            .count()
            != 1
        {
            continue;
        }
        let elsewhere = other_uses(
            cx,
            var,
            &[
                (item.start_byte(), item.end_byte()),
                (def.start_byte(), def.end_byte()),
            ],
        );
        if elsewhere.is_empty() {
            let (s, e) = item_span(src, item);
            cx.edits.push(Edit::delete(s, e, Rule::LostCallback));
        }
    }
    cx.diag(
        def.start_byte(),
        Rule::LostCallback,
        format!("the lost-sample callback `{name}` is removed: a ring buffer has none"),
        Some(HELP),
    );
}

/// The lines of a top-level item, with a comment right above it, and one of the blank lines
/// around it so that no double blank line is left.
fn item_span(src: &str, n: Node) -> (usize, usize) {
    let mut start = n.start_byte();
    if let Some(prev) = n.prev_sibling()
        && prev.kind() == "comment"
        && src[prev.end_byte()..start].matches('\n').count() == 1
        && src[line_start(src, prev.start_byte())..prev.start_byte()]
            .trim()
            .is_empty()
    {
        start = prev.start_byte();
    }
    let s = line_start(src, start);
    let mut e = line_end_incl(src, n.end_byte().saturating_sub(1).max(start));
    let blank_before = s == 0 || src[..s].ends_with("\n\n") || src[..s].ends_with("\n\r\n");
    let next_line_end = line_end_incl(src, e);
    if blank_before && e < src.len() && src[e..next_line_end].trim().is_empty() {
        e = next_line_end;
    }
    (s, e)
}

/// Messages that name the perf buffer now talk about the ring buffer.
fn messages(cx: &mut Ctx) {
    let src = cx.src();
    const PAIRS: &[(&str, &str)] = &[
        ("perf buffer", "ring buffer"),
        ("Perf buffer", "Ring buffer"),
        ("PERF BUFFER", "RING BUFFER"),
        ("perf_buffer", "ring_buffer"),
        ("perf event buffer", "ring buffer"),
    ];
    for n in cx.of_kind("string_literal") {
        let t = c::text(n, src);
        if !PAIRS.iter().any(|(a, _)| t.contains(a)) {
            continue;
        }
        // Only messages: strings handed to printf-like functions. A map name looked up by
        // string or a command-line option keeps its spelling.
        let printed = n
            .parent()
            .filter(|p| p.kind() == "argument_list")
            .and_then(|p| p.parent())
            .and_then(|call| c::call_name(call, src))
            .is_some_and(|f| PRINTF_LIKE.contains(&f) || MESSAGE_FNS.contains(&f));
        if !printed {
            continue;
        }
        let mut new = t.to_string();
        for (a, b) in PAIRS {
            new = new.replace(a, b);
        }
        cx.edits.push(Edit::replace(
            n.start_byte(),
            n.end_byte(),
            new,
            Rule::PerfBufferMessage,
        ));
    }
}
