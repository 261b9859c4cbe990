//! The libbpf <= 0.5 form `perf_buffer__new(fd, pages, &opts)`: the callbacks travel in a
//! local `struct perf_buffer_opts`, set in its initializer or by assignments. The options go
//! away; their callbacks and context become arguments of `ring_buffer__new()`.

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
use super::State;
use super::syntax::{statement_span, without_init};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;

pub(super) struct OldOpts {
    pub sample: String,
    pub lost: String,
    pub ctx: String,
    /// Where the options are named: their declaration and the statements that set them.
    pub spans: Vec<(usize, usize)>,
}

/// What is known of the options variable as its uses are read.
struct Found {
    /// `(field, value)` as set, in order.
    fields: Vec<(String, String)>,
    spans: Vec<(usize, usize)>,
    /// The statements that go with the options.
    deletions: Vec<(usize, usize)>,
    /// Nothing was refused.
    ok: bool,
}

/// The libbpf <= 0.5 form: `perf_buffer__new(fd, pages, &opts)` with the callbacks in a
/// `struct perf_buffer_opts`, set in its initializer or by assignments. The options go away.
pub(super) fn old_opts(
    cx: &mut Ctx,
    st: &mut State,
    call: Node,
    arg: &str,
    arg_at: usize,
) -> Option<OldOpts> {
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
    let Some((decl, declarator)) = declaration(cx, &scope_nodes, name) else {
        cx.report(
            arg_at,
            Rule::OptsUnsupported,
            format!("`{name}` is not declared as a struct perf_buffer_opts in this function"),
            "migrate by hand",
        );
        return None;
    };
    st.explained.push((decl.start_byte(), decl.end_byte()));
    // One declaration may declare the options of several buffers (`a = {}, b = {}`): it goes
    // once, when all of them have been migrated (`declarations_left`).
    let names = declared_names(decl, src);
    let deletion = statement_span(src, decl);
    let mut found = Found {
        fields: Vec::new(),
        spans: vec![(decl.start_byte(), decl.end_byte())],
        deletions: Vec::new(),
        ok: true,
    };
    match st.opts_decls.iter_mut().find(|d| d.span == deletion) {
        Some(d) => d.migrated.push(name.to_string()),
        None => st.opts_decls.push(OptsDecl {
            span: deletion,
            names,
            migrated: vec![name.to_string()],
            at: arg_at,
        }),
    }
    initializer(cx, declarator, &mut found);
    assignments(cx, call, decl, name, &scope_nodes, &mut found);
    let o = callbacks(cx, decl, name, &mut found);
    if !found.ok {
        return None;
    }
    for (s, e) in found.deletions {
        cx.edits.push(Edit::delete(s, e, Rule::PerfBufferOpts));
    }
    Some(o)
}

/// A declaration of perf buffer options, the names it declares and those whose buffers
/// were migrated: it is deleted once all of them are.
pub(super) struct OptsDecl {
    span: (usize, usize),
    names: Vec<String>,
    migrated: Vec<String>,
    /// The first options argument that named it.
    at: usize,
}

/// Deletes each options declaration all of whose names were migrated; one that also
/// declares options no migrated buffer takes is refused, naming them.
pub(super) fn declarations_left(cx: &mut Ctx, st: &mut State) {
    for d in std::mem::take(&mut st.opts_decls) {
        let left: Vec<&String> = d.names.iter().filter(|n| !d.migrated.contains(n)).collect();
        if left.is_empty() {
            cx.edits
                .push(Edit::delete(d.span.0, d.span.1, Rule::PerfBufferOpts));
            continue;
        }
        let left: Vec<String> = left.iter().map(|n| format!("`{n}`")).collect();
        cx.report(
            d.at,
            Rule::OptsUnsupported,
            format!(
                "the declaration of these perf buffer options also declares {}, which no migrated perf_buffer__new() takes",
                left.join(", ")
            ),
            "declare those options on their own, or migrate by hand",
        );
    }
}

/// The names a declaration declares.
fn declared_names(decl: Node, src: &str) -> Vec<String> {
    let mut cursor = decl.walk();
    decl.children_by_field_name("declarator", &mut cursor)
        .map(|d| c::text(without_init(d), src).to_string())
        .collect()
}

/// The declaration of `name` as a struct perf_buffer_opts among the function's nodes, and
/// its declarator of `name` (one declaration may have several).
fn declaration<'t>(cx: &Ctx, scope_nodes: &[Node<'t>], name: &str) -> Option<(Node<'t>, Node<'t>)> {
    let src = cx.src();
    scope_nodes.iter().copied().find_map(|n| {
        if n.kind() != "declaration" || !c::text(n, src).contains("perf_buffer_opts") {
            return None;
        }
        let mut cursor = n.walk();
        let d = n
            .children_by_field_name("declarator", &mut cursor)
            .find(|d| c::text(without_init(*d), src) == name);
        d.map(|d| (n, d))
    })
}

/// The fields the initializer of `declarator` sets: designated ones only (`{}` and `{0}`
/// set none).
fn initializer(cx: &mut Ctx, declarator: Node, found: &mut Found) {
    let src = cx.src();
    let Some(init) = declarator.field("value") else {
        return;
    };
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
                found.fields.push((f, v));
            }
            "comment" => {}
            _ if c::text(p, src) == "0" => {}
            _ => {
                found.ok = false;
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

/// Assignments `name.field = value;` and a clearing memset, anywhere in the function; any
/// other use of the options is refused.
fn assignments(
    cx: &mut Ctx,
    call: Node,
    decl: Node,
    name: &str,
    scope_nodes: &[Node],
    found: &mut Found,
) {
    let src = cx.src();
    let within = |n: &Node, outer: Node| {
        n.start_byte() >= outer.start_byte() && n.end_byte() <= outer.end_byte()
    };
    for n in scope_nodes {
        if n.kind() != "identifier" || c::text(*n, src) != name || within(n, decl) {
            continue;
        }
        if within(n, call) {
            continue;
        }
        let stmt = c::ancestor(*n, "expression_statement");
        let stmt_text = stmt
            .map(|s| c::text(s, src).replace(char::is_whitespace, ""))
            .unwrap_or_default();
        if let (Some((f, v)), Some(s)) = (field_set(*n, src), stmt) {
            found.fields.push((f, v));
            found.spans.push((s.start_byte(), s.end_byte()));
            found.deletions.push(statement_span(src, s));
        } else if let Some(s) =
            stmt.filter(|_| stmt_text.starts_with(&format!("memset(&{name},0,")))
        {
            found.spans.push((s.start_byte(), s.end_byte()));
            found.deletions.push(statement_span(src, s));
        } else {
            found.ok = false;
            cx.report(
                n.start_byte(),
                Rule::OptsUnsupported,
                format!("the perf buffer options `{name}` are used here"),
                "migrate by hand",
            );
        }
    }
}

/// `(field, value)` when the identifier `n` is the struct of `n.field = value`.
fn field_set(n: Node, src: &str) -> Option<(String, String)> {
    let fe = n.parent().filter(|p| p.kind() == "field_expression")?;
    let asg = fe
        .parent()
        .filter(|a| a.kind() == "assignment_expression" && a.field("left") == Some(fe))?;
    let field = fe.field("field").map(|f| c::text(f, src).to_string())?;
    let value = asg.field("right").map(|r| c::text(r, src).to_string())?;
    Some((field, value))
}

/// The callbacks and context the fields set; any other field, or no sample callback, is
/// refused.
fn callbacks(cx: &mut Ctx, decl: Node, name: &str, found: &mut Found) -> OldOpts {
    let mut o = OldOpts {
        sample: String::new(),
        lost: "NULL".into(),
        ctx: "NULL".into(),
        spans: std::mem::take(&mut found.spans),
    };
    for (f, v) in std::mem::take(&mut found.fields) {
        match f.as_str() {
            "sample_cb" => o.sample = v,
            "lost_cb" => o.lost = v,
            "ctx" => o.ctx = v,
            other => {
                found.ok = false;
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
        found.ok = false;
        cx.report(
            decl.start_byte(),
            Rule::OptsUnsupported,
            format!("no sample_cb is set in `{name}`"),
            "migrate by hand",
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        BPF, PERF_CALLBACK, PERF_DECLS, PERF_POLL, RING_CALLBACK, bpf_two_maps, loader, ring,
    };
    use crate::engine::testkit::{check_migrate, check_refused, run};
    use crate::rules::Rule;

    /// Two buffers whose options one declaration declares: `a` for `events`, `b` for
    /// `errors`, and the third declarator `more`.
    fn two_declarators(more: &str) -> String {
        loader(
            "",
            PERF_CALLBACK,
            &format!(
                "\tstruct perf_buffer_opts a = {{\n\t\t.sample_cb = handle_event,\n\t}}, b = {{}}{more};\n\
                 {PERF_DECLS}\tstruct perf_buffer *pb2;\n\n\tb.sample_cb = handle_event;\n"
            ),
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, &a);\n\
                 \tpb2 = perf_buffer__new(bpf_map__fd(skel->maps.errors), 8, &b);\n\
                 \tif (!pb || !pb2)\n\t\treturn 1;\n{PERF_POLL}\tperf_buffer__free(pb2);\n\treturn 0;\n"
            ),
        )
    }

    #[test]
    fn one_declaration_of_the_options_of_two_buffers_goes_once_both_are_migrated() {
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf_two_maps()), ("x.c", &two_declarators(""))],
            &crate::engine::Options::default(),
        );
        let x = changed.get("x.c").unwrap_or_else(|| panic!("{diags:?}"));
        assert!(
            !x.contains("perf_buffer_opts") && !x.contains("b.sample_cb"),
            "{x}"
        );
        for map in ["events", "errors"] {
            assert!(
                x.contains(&format!(
                    "ring_buffer__new(bpf_map__fd(skel->maps.{map}), handle_event, NULL, NULL)"
                )),
                "{x}"
            );
        }
    }

    #[test]
    fn refuses_a_declaration_that_also_declares_options_no_buffer_takes() {
        check_refused(
            &[
                ("x.bpf.c", &bpf_two_maps()),
                ("x.c", &two_declarators(", spare = {}")),
            ],
            Rule::OptsUnsupported,
            "also declares `spare`, which no migrated perf_buffer__new() takes",
        );
    }

    /// A loader of the old form: `main` declares the options `decl` first, runs `start`
    /// after its declarations, and passes `opts` to `perf_buffer__new()`.
    fn with_opts(top: &str, decl: &str, start: &str, opts: &str) -> String {
        loader(
            "",
            top,
            &format!("{decl}{PERF_DECLS}\n{start}"),
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, {opts});\n\
                 \tif (!pb)\n\t\treturn 1;\n{PERF_POLL}\treturn 0;\n"
            ),
        )
    }

    /// Options in `main` with the designated initializers `fields`.
    fn opts(fields: &str) -> String {
        format!("\tstruct perf_buffer_opts pb_opts = {{\n{fields}\t}};\n")
    }

    /// `with_opts` for options `pb_opts` in `main`, initialized with `fields`.
    fn initialized(fields: &str) -> String {
        with_opts(PERF_CALLBACK, &opts(fields), "", "&pb_opts")
    }

    #[test]
    fn moves_assigned_callbacks_into_the_call() {
        let before = loader(
            "#include <string.h>\n",
            PERF_CALLBACK,
            &format!("\tstruct perf_buffer_opts pb_opts;\n{PERF_DECLS}\tlong total = 0;\n\n"),
            &format!(
                "\tmemset(&pb_opts, 0, sizeof(pb_opts));\n\
                 \tpb_opts.sample_cb = handle_event;\n\
                 \tpb_opts.ctx = &total;\n\
                 \tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, &pb_opts);\n\
                 \tif (!pb)\n\t\treturn 1;\n{PERF_POLL}\treturn 0;\n"
            ),
        );
        let after = ring(
            "#include <string.h>\n",
            RING_CALLBACK,
            "\tlong total = 0;\n",
            "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, &total, NULL);\n",
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn moves_designated_initializers_into_the_call() {
        let after = ring(
            "",
            RING_CALLBACK,
            "",
            "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n",
        );
        check_migrate(
            &[
                ("x.bpf.c", BPF),
                ("x.c", &initialized("\t\t.sample_cb = handle_event,\n")),
            ],
            &[("x.c", &after)],
        );
    }

    #[test]
    fn refuses_options_that_are_not_a_local_struct() {
        let before = with_opts(
            PERF_CALLBACK,
            &format!(
                "{}\tstruct perf_buffer_opts *opts = &pb_opts;\n",
                opts("\t\t.sample_cb = handle_event,\n")
            ),
            "",
            "opts",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::OptsUnsupported,
            "the perf buffer options `opts` are not a local struct perf_buffer_opts",
        );
    }

    #[test]
    fn refuses_options_declared_outside_the_function() {
        let before = with_opts(
            &format!(
                "{PERF_CALLBACK}\n\
                 static struct perf_buffer_opts pb_opts = {{\n\t.sample_cb = handle_event,\n}};\n"
            ),
            "",
            "",
            "&pb_opts",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::OptsUnsupported,
            "`pb_opts` is not declared as a struct perf_buffer_opts in this function",
        );
    }

    #[test]
    fn refuses_positional_initializers() {
        check_refused(
            &[
                ("x.bpf.c", BPF),
                ("x.c", &initialized("\t\thandle_event,\n")),
            ],
            Rule::OptsUnsupported,
            "positional initializers of perf_buffer_opts are not understood",
        );
    }

    #[test]
    fn refuses_another_use_of_the_options() {
        let before = with_opts(
            PERF_CALLBACK,
            &opts("\t\t.sample_cb = handle_event,\n"),
            "\tprintf(\"opts at %p\\n\", (void *)&pb_opts);\n",
            "&pb_opts",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::OptsUnsupported,
            "the perf buffer options `pb_opts` are used here",
        );
    }

    #[test]
    fn refuses_a_field_with_no_equivalent() {
        let before = initialized(
            "\t\t.sample_cb = handle_event,\n\
             \t\t.sz = sizeof(struct perf_buffer_opts),\n",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::OptsUnsupported,
            "perf_buffer_opts field `sz` has no ring buffer equivalent",
        );
    }

    #[test]
    fn refuses_options_without_a_sample_callback() {
        check_refused(
            &[
                ("x.bpf.c", BPF),
                ("x.c", &initialized("\t\t.ctx = NULL,\n")),
            ],
            Rule::OptsUnsupported,
            "no sample_cb is set in `pb_opts`",
        );
    }
}
