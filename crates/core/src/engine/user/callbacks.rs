//! The sample callback: `void f(void *ctx, int cpu, void *data, __u32 size)` becomes
//! `int f(void *ctx, void *data, size_t size)`, returning 0 on every path. A callback that
//! reads the CPU, is used elsewhere or has another shape is refused.

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
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
        if !signature(cx, name, node, fdecl) {
            return;
        }
    }
}

/// Rewrites one definition or prototype of the callback (`node`, declaring `fdecl`), and the
/// body of a definition; false (after a refusal) when it is not a perf buffer callback.
fn signature(cx: &mut Ctx, name: &str, node: Node, fdecl: Node) -> bool {
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
        if !callback_body(cx, name, body, cpu_name, size_name, size_ty) {
            return false;
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

/// The body of the callback: the CPU must not be read, a printed size keeps its old type, and
/// every path returns 0. False (after a refusal) when the body reads the CPU.
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
    if let Some(cpu) = cpu
        && !cpu_unused(cx, name, &inside, cpu, &mut edits)
    {
        return false;
    }
    if let Some(size) = size {
        printed_size(src, &inside, size, size_ty, &mut edits);
    }
    bare_returns(&inside, &mut edits);
    final_return(src, body, &mut edits);
    cx.edits.extend(edits);
    true
}

/// A ring buffer does not say which CPU produced a record: a read of `cpu` is refused, and
/// `(void)cpu;`, which only silences a warning, goes.
fn cpu_unused(cx: &mut Ctx, name: &str, inside: &[Node], cpu: &str, edits: &mut Vec<Edit>) -> bool {
    let src = cx.src();
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
    let Some(&first) = uses.first() else {
        return true;
    };
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
    false
}

/// Printing the size with a 32-bit format would now pass a size_t: keep the old type.
fn printed_size(src: &str, inside: &[Node], size: &str, size_ty: &str, edits: &mut Vec<Edit>) {
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
            "the sample callback `handle_event` uses `cpu`",
        );
    }
}
