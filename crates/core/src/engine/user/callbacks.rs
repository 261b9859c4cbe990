//! The sample callback: `void f(void *ctx, int cpu, void *data, __u32 size)` becomes
//! `int f(void *ctx, void *data, size_t size)`, returning 0 on every path. A callback that
//! reads the CPU is recorded for linking (`engine::cpu_field`), which gives it the CPU from
//! a field of the event; one used elsewhere or of another shape is refused.

use tree_sitter::Node;

use super::super::context::{CpuUse, Ctx, Report};
use super::State;
use super::messages::PRINTF_LIKE;
use super::syntax::{functions_named, other_uses, own_spans, statement_span};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{indent_at, line_start};

/// `void f(void *ctx, int cpu, void *data, __u32 size)` becomes
/// `int f(void *ctx, void *data, size_t size)`, returning 0 on every path.
pub(super) fn sample_callback(
    cx: &mut Ctx,
    st: &mut State,
    name: &str,
    creation: &[(usize, usize)],
    at: usize,
    maps: &[String],
) {
    if !st.done_callbacks.insert(name.to_string()) {
        return;
    }
    let fns = functions_named(cx, name);
    if !fns.iter().any(|(n, _)| n.kind() == "function_definition") {
        cx.report(
            at,
            Rule::CallbackForm,
            format!("the sample callback `{name}` is not defined in this file"),
            "bpf-migrate rewrites callbacks defined in the loader's own file; migrate by hand",
        );
        return;
    }
    let allowed = own_spans(&fns, creation);
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
        if !signature(cx, st, name, maps, node, fdecl) {
            return;
        }
    }
}

/// Rewrites one definition or prototype of the callback (`node`, declaring `fdecl`), and the
/// body of a definition; false (after a refusal) when it is not a perf buffer callback.
fn signature(
    cx: &mut Ctx,
    st: &mut State,
    name: &str,
    maps: &[String],
    node: Node,
    fdecl: Node,
) -> bool {
    let src = cx.src();
    let Some(ty) = node.field("type") else {
        return true;
    };
    if c::text(ty, src) != "void" {
        cx.report(
            ty.start_byte(),
            Rule::CallbackForm,
            format!("the sample callback `{name}` does not return void"),
            "migrate by hand",
        );
        return false;
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
        return false;
    }
    let size_ty = ps[3]
        .field("type")
        .map(|t| c::text(t, src))
        .unwrap_or("__u32");
    let size_name = param_name(ps[3], src);
    let cpu_name = param_name(ps[1], src);
    let new_params = vec![
        c::text(ps[0], src).to_string(),
        c::text(ps[2], src).to_string(),
        match size_name {
            Some(n) => format!("size_t {n}"),
            None => "size_t".to_string(),
        },
    ];
    if node.kind() == "function_definition" {
        let body = node.field("body").unwrap();
        let params = Params {
            cpu: cpu_name.map(|n| (c::text(ps[1], src), n)),
            data: param_name(ps[2], src),
            size: size_name,
            size_ty,
        };
        if let Some(u) = callback_body(cx, name, body, &params) {
            st.cpu_uses.push(CpuUse {
                maps: maps.to_vec(),
                ..u
            });
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
    true
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

/// The callback's parameters, as the body sees them: the CPU (as declared, and its name), the
/// data's name, the size's name and type.
struct Params<'a> {
    cpu: Option<(&'a str, &'a str)>,
    data: Option<&'a str>,
    size: Option<&'a str>,
    size_ty: &'a str,
}

/// The body of the callback: a printed size keeps its old type, and every path returns 0.
/// When it reads the CPU, what linking needs to give it the CPU from the event (the map
/// left blank).
fn callback_body(cx: &mut Ctx, name: &str, body: Node, p: &Params) -> Option<CpuUse> {
    let src = cx.src();
    let inside: Vec<Node> = cx.nodes_within(body);
    let mut edits = Vec::new();
    let reads = p
        .cpu
        .and_then(|(decl, cpu)| cpu_reads(src, &inside, cpu, &mut edits).map(|r| (decl, r)));
    if let Some(size) = p.size {
        printed_size(src, &inside, size, p.size_ty, &mut edits);
    }
    bare_returns(&inside, &mut edits);
    final_return(src, body, &mut edits);
    cx.edits.extend(edits);
    let (param, uses) = reads?;
    let lead = if c::text(body, src).contains('\n') {
        format!("\n{}", statement_indent(src, body))
    } else {
        " ".to_string()
    };
    Some(CpuUse {
        maps: Vec::new(),
        python: None,
        rust: false,
        callback: name.to_string(),
        offset: uses[0],
        uses: uses.len(),
        at: body.start_byte() + 1,
        lead,
        param: param.to_string(),
        data: p.data.map(str::to_string),
        read_as: p.data.map_or_else(Vec::new, |d| read_as(src, &inside, d)),
    })
}

/// The types the body reads the data through: casts of it (`(struct event *)data`) and
/// declarations it initialises (`const struct event *e = data;`); a plain C type (`char *`)
/// is left out, a struct gives its tag, anything else (a typedef, an assignment to a
/// variable declared elsewhere) an error to report.
fn read_as(src: &str, inside: &[Node], data: &str) -> Vec<Result<String, (usize, String)>> {
    let mut out = Vec::new();
    for n in inside
        .iter()
        .filter(|n| n.kind() == "identifier" && c::text(**n, src) == data)
    {
        let mut e = *n;
        while let Some(p) = e
            .parent()
            .filter(|p| p.kind() == "parenthesized_expression")
        {
            e = p;
        }
        let Some(p) = e.parent() else { continue };
        let ty = match p.kind() {
            "cast_expression" if p.field("value") == Some(e) => {
                p.field("type").and_then(|t| t.field("type"))
            }
            "init_declarator" if p.field("value") == Some(e) => {
                p.parent().and_then(|d| d.field("type"))
            }
            "assignment_expression" if p.field("right") == Some(e) => {
                out.push(Err((
                    p.start_byte(),
                    format!("`{}` is assigned the data, and bpf-migrate does not follow what type it reads it as; declare it with the data as its initialiser", p.field("left").map_or("", |l| c::text(l, src))),
                )));
                continue;
            }
            _ => continue,
        };
        let Some(ty) = ty else { continue };
        match ty.kind() {
            "primitive_type" | "sized_type_specifier" => {}
            "struct_specifier" if ty.field("body").is_none() => {
                if let Some(tag) = ty.field("name") {
                    out.push(Ok(c::text(tag, src).to_string()));
                }
            }
            _ => out.push(Err((
                ty.start_byte(),
                format!("the data is read as a `{}`, not as a `struct NAME` bpf-migrate can tie to the event", c::text(ty, src)),
            ))),
        }
    }
    out
}

/// The indentation of the body's statements.
fn statement_indent(src: &str, body: Node) -> String {
    let mut cursor = body.walk();
    let first = body
        .named_children(&mut cursor)
        .find(|n| n.kind() != "comment");
    match first {
        Some(s) => indent_at(src, s.start_byte()).to_string(),
        None => format!("{}\t", indent_at(src, body.end_byte() - 1)),
    }
}

/// A ring buffer does not say which CPU produced a record: the reads of `cpu` (their
/// offsets), if any; `(void)cpu;`, which only silences a warning, goes.
fn cpu_reads(src: &str, inside: &[Node], cpu: &str, edits: &mut Vec<Edit>) -> Option<Vec<usize>> {
    let mut uses = Vec::new();
    for n in inside
        .iter()
        .filter(|n| n.kind() == "identifier" && c::text(**n, src) == cpu)
    {
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
    (!uses.is_empty()).then_some(uses)
}

/// Printing the size with a 32-bit format would now pass a size_t: keep the old type.
fn printed_size(src: &str, inside: &[Node], size: &str, size_ty: &str, edits: &mut Vec<Edit>) {
    for n in inside
        .iter()
        .filter(|n| n.kind() == "identifier" && c::text(**n, src) == size)
    {
        // A known printf, or any call (a tool's own `p_debug`, `log_debug` macro) that has a
        // format string before it: variadic arguments read as the format says.
        let args = n.parent().filter(|p| p.kind() == "argument_list");
        let formatted_before = args.is_some_and(|a| {
            a.named_children(&mut a.walk())
                .take_while(|x| x.id() != n.id())
                .any(|x| {
                    matches!(x.kind(), "string_literal" | "concatenated_string")
                        && c::text(x, src).contains('%')
                })
        });
        let printed = formatted_before
            || args
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

/// `return;` becomes `return 0;`.
fn bare_returns(inside: &[Node], edits: &mut Vec<Edit>) {
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
}

/// A body that does not end in a return gets `return 0;` before its closing brace, on a line
/// of its own unless the body is on one line.
fn final_return(src: &str, body: Node, edits: &mut Vec<Edit>) {
    let mut cursor = body.walk();
    let stmts: Vec<Node> = body
        .named_children(&mut cursor)
        .filter(|n| n.kind() != "comment")
        .collect();
    if stmts.last().is_some_and(|s| s.kind() == "return_statement") {
        return;
    }
    let close = body.end_byte() - 1;
    if !c::text(body, src).contains('\n') {
        let pad = if src[..close].ends_with(' ') { "" } else { " " };
        edits.push(Edit::insert(
            close,
            format!("{pad}return 0; "),
            Rule::SampleCallback,
        ));
        return;
    }
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{BPF, PERF_DECLS, RING_DECLS, loader, perf, ring};
    use crate::engine::testkit::{check_migrate, check_refused};
    use crate::rules::Rule;

    /// The perf buffer over `events` that a test's `handle_event` reads.
    const CREATE: &str = "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n";

    /// A sample callback that checks the size of the sample, declared before it is defined.
    const CHECKED: &str = r#"static void handle_event(void *ctx, int cpu, void *data, __u32 data_sz);

static void handle_event(void *ctx, int cpu, void *data, __u32 data_sz)
{
	(void)cpu;
	if (data_sz < sizeof(__u32)) {
		fprintf(stderr, "short event: %u bytes\n", data_sz);
		return;
	}
	printf("pid %u\n", *(__u32 *)data);
}
"#;

    #[test]
    fn rewrites_the_prototype_and_the_body() {
        let before = perf("", CHECKED, "", CREATE);
        let callback = r#"static int handle_event(void *ctx, void *data, size_t data_sz);

static int handle_event(void *ctx, void *data, size_t data_sz)
{
	if (data_sz < sizeof(__u32)) {
		fprintf(stderr, "short event: %u bytes\n", (__u32)data_sz);
		return 0;
	}
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}
"#;
        let after = ring(
            "",
            callback,
            "",
            "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n",
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    /// The size printed through the tool's own logging macro, with a format before it: its
    /// old type kept too (a size_t read as `%d` is undefined).
    #[test]
    fn the_size_printed_by_a_logging_macro_of_the_tool_keeps_its_type() {
        let logged = CHECKED
            .replace(
                "\t(void)cpu;\n",
                "\t(void)cpu;\n\tp_debug(\"got %d bytes\", data_sz);\n\tlog_at(LOG_DEBUG, \"size=%u\", data_sz);\n",
            );
        let before = perf("", &logged, "", CREATE);
        let (changed, _) = crate::engine::testkit::run(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            &crate::engine::Options::default(),
        );
        let x = &changed["x.c"];
        assert!(
            x.contains("\tp_debug(\"got %d bytes\", (__u32)data_sz);\n"),
            "{x}"
        );
        assert!(
            x.contains("\tlog_at(LOG_DEBUG, \"size=%u\", (__u32)data_sz);\n"),
            "{x}"
        );
    }

    #[test]
    fn returns_0_in_a_one_line_body() {
        // This loader prints nothing: it has no <stdio.h>.
        let before = loader(
            "",
            "static unsigned long count;\n\n\
             static void count_event(void *ctx, int cpu, void *data, __u32 size) { count++; }\n",
            &format!("{PERF_DECLS}\n"),
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, count_event, NULL, NULL, NULL);\n\
             \tif (!pb)\n\t\treturn 1;\n\
             \twhile (perf_buffer__poll(pb, 100) >= 0 && count < 100)\n\t\t;\n\
             \tperf_buffer__free(pb);\n\treturn 0;\n",
        )
        .replacen("#include <stdio.h>\n", "", 1);
        let after = loader(
            "",
            "static unsigned long count;\n\n\
             static int count_event(void *ctx, void *data, size_t size) { count++; return 0; }\n",
            &format!("{RING_DECLS}\n"),
            "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), count_event, NULL, NULL);\n\
             \tif (!pb)\n\t\treturn 1;\n\
             \twhile (ring_buffer__poll(pb, 100) >= 0 && count < 100)\n\t\t;\n\
             \tring_buffer__free(pb);\n\treturn 0;\n",
        )
        .replacen("#include <stdio.h>\n", "", 1);
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn refuses_a_callback_defined_elsewhere() {
        let before = perf(
            "",
            "extern void handle_event(void *ctx, int cpu, void *data, __u32 data_sz);\n",
            "",
            CREATE,
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::CallbackForm,
            "the sample callback `handle_event` is not defined in this file",
        );
    }

    #[test]
    fn refuses_a_callback_used_elsewhere() {
        let before = perf(
            "",
            CHECKED,
            "",
            &format!("\thandle_event(NULL, 0, &skel, sizeof(__u32));\n{CREATE}"),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::CallbackForm,
            "the sample callback `handle_event` is also used here",
        );
    }

    #[test]
    fn refuses_a_callback_that_returns_a_value() {
        let callback = r#"static int handle_event(void *ctx, int cpu, void *data, __u32 data_sz)
{
	(void)cpu;
	if (data_sz < sizeof(__u32)) {
		fprintf(stderr, "short event: %u bytes\n", data_sz);
		return 0;
	}
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}
"#;
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &perf("", callback, "", CREATE))],
            Rule::CallbackForm,
            "the sample callback `handle_event` does not return void",
        );
    }

    #[test]
    fn refuses_a_callback_with_other_parameters() {
        let callback = r#"static void handle_event(void *ctx, void *data, __u32 data_sz)
{
	if (data_sz < sizeof(__u32)) {
		fprintf(stderr, "short event: %u bytes\n", data_sz);
		return;
	}
	printf("pid %u\n", *(__u32 *)data);
}
"#;
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &perf("", callback, "", CREATE))],
            Rule::CallbackForm,
            "does not take (ctx, cpu, data, size)",
        );
    }

    /// The CPU of a callback that reads it comes from the event (`engine::cpu_field`), which
    /// here is a `u32`, not a struct a field can be added to.
    #[test]
    fn refuses_a_callback_that_reads_the_cpu() {
        let callback = r#"static void handle_event(void *ctx, int cpu, void *data, __u32 data_sz)
{
	if (data_sz < sizeof(__u32)) {
		fprintf(stderr, "short event: %u bytes\n", data_sz);
		return;
	}
	printf("cpu %d pid %u\n", cpu, *(__u32 *)data);
}
"#;
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &perf("", callback, "", CREATE))],
            Rule::CallbackUsesCpu,
            "uses `cpu`, the CPU that produced the event, which a ring buffer does not report; bpf-migrate cannot add it to the events: the event `&pid` is a `u32`, not a struct",
        );
    }
}
