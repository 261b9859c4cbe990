//! Error checks of the new buffer: `libbpf_get_error(pb)`, `IS_ERR(pb)` and `PTR_ERR(pb)` read
//! an error pointer, but `ring_buffer__new()` returns NULL and sets errno.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::State;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::line_end_incl;

/// `libbpf_get_error(pb)` (and `IS_ERR`/`PTR_ERR`) read an error pointer; `ring_buffer__new`
/// returns NULL and sets errno, and `libbpf_get_error(NULL)` is 0 before libbpf 0.6. The check
/// becomes a NULL check.
pub(super) fn null_checks(cx: &mut Ctx, st: &mut State, call: Node, handle: &str) {
    let src = cx.src();
    let scope = c::ancestor(call, "function_definition").unwrap_or(cx.root());
    for n in cx.of_kind("call_expression") {
        if n.start_byte() < call.end_byte() || n.end_byte() > scope.end_byte() {
            continue;
        }
        let Some(name) = c::call_name(n, src) else {
            continue;
        };
        let args = c::arg_spans(n);
        if args.len() != 1 || c::strip_parens(&src[args[0].0..args[0].1]) != handle {
            continue;
        }
        let Some(text) = null_check(n, name, handle) else {
            continue;
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

/// What the check `n` (a call of `name` on `handle`) becomes, given where it stands.
fn null_check(n: Node, name: &str, handle: &str) -> Option<String> {
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
    // An argument of a call keeps the `long` both return: a variadic one (`printf("%ld",
    // PTR_ERR(pb))`) reads a long, and an int there is undefined.
    let argument = n.parent().is_some_and(|p| p.kind() == "argument_list");
    Some(match name {
        "libbpf_get_error" if in_condition => format!("!{handle}"),
        "libbpf_get_error" if argument => format!("({handle} ? 0L : (long)-errno)"),
        "libbpf_get_error" if plain => format!("{handle} ? 0 : -errno"),
        "libbpf_get_error" => format!("({handle} ? 0 : -errno)"),
        "IS_ERR" | "IS_ERR_OR_NULL" if in_condition => format!("!{handle}"),
        "IS_ERR" | "IS_ERR_OR_NULL" => format!("(!{handle})"),
        "PTR_ERR" if argument => "(long)-errno".to_string(),
        "PTR_ERR" => "-errno".to_string(),
        _ => return None,
    })
}

/// `#include <errno.h>` after the last system include (or the first include), for the
/// checks that now read errno.
pub(super) fn add_errno_include(cx: &mut Ctx) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{
        BPF, PERF_CALLBACK, PERF_DECLS, PERF_POLL, RING_CALLBACK, RING_DECLS, RING_POLL, loader,
        loader_calling,
    };
    use crate::engine::testkit::check_migrate;

    #[test]
    fn libbpf_get_error_reads_errno() {
        let before = loader(
            "",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\tint err;\n\n"),
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n\
                 \terr = libbpf_get_error(pb);\n\
                 \tif (err) {{\n\
                 \t\tfprintf(stderr, \"failed to open perf buffer: %d\\n\", err);\n\
                 \t\treturn 1;\n\
                 \t}}\n\
                 {PERF_POLL}\treturn 0;\n"
            ),
        );
        let after = loader(
            "",
            RING_CALLBACK,
            &format!("{RING_DECLS}\tint err;\n\n"),
            &format!(
                "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n\
                 \terr = pb ? 0 : -errno;\n\
                 \tif (err) {{\n\
                 \t\tfprintf(stderr, \"failed to open ring buffer: %d\\n\", err);\n\
                 \t\treturn 1;\n\
                 \t}}\n\
                 {RING_POLL}\treturn 0;\n"
            ),
        )
        // <errno.h> is added after libbpf's header.
        .replacen(
            "#include <bpf/libbpf.h>\n",
            "#include <bpf/libbpf.h>\n#include <errno.h>\n",
            1,
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    /// A loader whose `run()` makes the buffer, then handles an error with `check` (perf
    /// buffer) migrated to one with `ring_check`.
    fn check_error_handling(check: &str, ring_check: &str) {
        let run = |callback: &str, decl: &str, create: &str, check: &str, poll: &str| {
            loader_calling(
                "#include <errno.h>\n",
                &format!(
                    "{callback}\nstatic int run(struct x_bpf *skel)\n{{\n\tstruct {decl} *pb;\n\n\tpb = {create}(bpf_map__fd(skel->maps.events), {check}{poll}\treturn 0;\n}}\n"
                ),
                "run(skel)",
            )
        };
        let before = run(
            PERF_CALLBACK,
            "perf_buffer",
            "perf_buffer__new",
            &format!("8, handle_event, NULL, NULL, NULL);\n{check}"),
            PERF_POLL,
        );
        let after = run(
            RING_CALLBACK,
            "ring_buffer",
            "ring_buffer__new",
            &format!("handle_event, NULL, NULL);\n{ring_check}"),
            RING_POLL,
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    /// Passed to a variadic function (a test's `CHECK(..., "err %ld\n", PTR_ERR(pb))`), the
    /// error stays a long.
    #[test]
    fn an_error_passed_on_as_an_argument_stays_a_long() {
        check_error_handling(
            "\tif (IS_ERR(pb)) {\n\t\tfprintf(stderr, \"err %ld %ld\\n\", PTR_ERR(pb), libbpf_get_error(pb));\n\t\treturn 1;\n\t}\n",
            "\tif (!pb) {\n\t\tfprintf(stderr, \"err %ld %ld\\n\", (long)-errno, (pb ? 0L : (long)-errno));\n\t\treturn 1;\n\t}\n",
        );
    }

    #[test]
    fn is_err_and_ptr_err_in_a_condition() {
        check_error_handling(
            "\tif (IS_ERR(pb))\n\t\treturn PTR_ERR(pb);\n",
            "\tif (!pb)\n\t\treturn -errno;\n",
        );
    }
}
