//! The rest of the perf buffer API: `perf_buffer__poll/consume/epoll_fd/free` become their
//! `ring_buffer__` namesakes (a consume's result checked), `struct perf_buffer` becomes
//! `struct ring_buffer`, and the calls with no ring buffer equivalent are refused, as is a
//! buffer created in another file.

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
use super::State;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

/// `perf_buffer__*` functions that map one to one onto `ring_buffer__*`.
const RENAMED: &[&str] = &[
    "perf_buffer__poll",
    "perf_buffer__consume",
    "perf_buffer__epoll_fd",
    "perf_buffer__free",
];

/// Perf buffer APIs with no ring buffer equivalent.
pub(super) const NO_EQUIVALENT: &[&str] = &[
    "perf_buffer__new_raw",
    "perf_buffer__buffer",
    "perf_buffer__consume_buffer",
    "perf_buffer__buffer_fd",
    "perf_buffer__buffer_cnt",
];

/// Using a perf buffer this file does not create: its creation, elsewhere, is out of reach,
/// and renaming only the uses would break the program. True (after a refusal) when so.
pub(super) fn created_elsewhere(cx: &mut Ctx) -> bool {
    let src = cx.src();
    let toks = cx.tokens();
    // Made here, by either constructor (`perf_buffer__new_raw` is then refused on its own:
    // `no_equivalent`).
    if toks.iter().any(|&(t, s, e)| {
        t == Tok::Ident && matches!(&src[s..e], "perf_buffer__new" | "perf_buffer__new_raw")
    }) {
        return false;
    }
    let Some(&(_, s, e)) = toks
        .iter()
        .find(|&&(t, s, e)| t == Tok::Ident && RENAMED.contains(&&src[s..e]))
    else {
        return false;
    };
    cx.report(
        s,
        Rule::UnlinkedProgram,
        format!("{}() on a perf buffer created in another file", &src[s..e]),
        "bpf-migrate migrates a perf buffer with the file that creates it (perf_buffer__new); keep them together or migrate by hand",
    );
    true
}

/// A call of one of `NO_EQUIVALENT` is refused.
pub(super) fn no_equivalent(cx: &mut Ctx, st: &mut State, call: Node, name: &str) {
    let f = call.field("function").unwrap();
    st.explained.push((f.start_byte(), f.end_byte()));
    cx.report(
        call.start_byte(),
        Rule::NoRingEquivalent,
        format!("{name}() has no ring buffer equivalent"),
        "the ring buffer has no per-CPU buffers to drain one by one; restructure this consumer around ring_buffer__poll()/ring_buffer__consume() by hand",
    );
}

/// `perf_buffer__poll` and the others of `RENAMED` become `ring_buffer__...`.
pub(super) fn rename_calls(cx: &mut Ctx, st: &mut State) {
    let src = cx.src();
    for n in cx.of_kind("identifier") {
        let t = c::text(n, src);
        if RENAMED.contains(&t) {
            st.explained.push((n.start_byte(), n.end_byte()));
            if t == "perf_buffer__consume" {
                consume_result(cx, n);
            }
            if matches!(t, "perf_buffer__poll" | "perf_buffer__consume")
                && let Some(call) = n.parent().filter(|p| p.kind() == "call_expression")
            {
                super::lost_counter::check_after(cx, st, call);
            }
            cx.edits.push(Edit::replace(
                n.start_byte(),
                n.end_byte(),
                t.replacen("perf_buffer", "ring_buffer", 1),
                Rule::PerfBufferApi,
            ));
        }
    }
}

/// `struct perf_buffer` (not a definition of it) becomes `struct ring_buffer`.
pub(super) fn rename_struct_tags(cx: &mut Ctx, st: &mut State) {
    let src = cx.src();
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
}

/// `perf_buffer__consume()` returns 0 or an error, `ring_buffer__consume()` the number of
/// records or an error. A result only compared with 0 for sign, or thrown away, means the
/// same; a truth test of the call becomes `< 0`; anything else is refused.
fn consume_result(cx: &mut Ctx, ident: Node) {
    let Some(call) = ident.parent().filter(|p| p.kind() == "call_expression") else {
        return;
    };
    let Some(parent) = call.parent() else { return };
    if read_in_place(cx, call, parent) {
        return;
    }
    let message = match stored_for_sign(cx, call, parent) {
        Some(Ok(())) => return,
        // Say which read: the one the user must change (a `return -err;` far below).
        Some(Err((v, at))) => {
            let (line, _) = cx.file.line_col(at);
            let stmt = cx.file.line_text(line).trim();
            format!(
                "the result of perf_buffer__consume() is kept in `{v}`, read on line {line} (`{stmt}`) for more than its sign; ring_buffer__consume() returns the number of records consumed, which that read would take for an error or a status"
            )
        }
        None => "the result of perf_buffer__consume() is used as 0-or-error, but ring_buffer__consume() returns the number of records consumed".to_string(),
    };
    cx.report(
        call.start_byte(),
        Rule::ConsumeResult,
        message,
        "test it with `< 0` (errors are negative in both APIs) everywhere it is read, or set it to 0 after the test, then run bpf-migrate again",
    );
}

/// `n` is `x < 0` or `x >= 0`, or compares `x` with an error code (`x != -EINTR`,
/// `x == -EAGAIN`): the same answer for 0 and for a count of records, neither of which is
/// negative.
fn is_sign_test(n: Node, src: &str) -> bool {
    if n.kind() != "binary_expression" {
        return false;
    }
    let (Some(op), Some(right)) = (n.field("operator"), n.field("right")) else {
        return false;
    };
    let right = c::strip_parens(c::text(right, src));
    match c::text(op, src) {
        "<" | ">=" => right == "0",
        "==" | "!=" => right.strip_prefix('-').is_some_and(|e| {
            let e = c::strip_parens(e.trim());
            c::is_ident(e) && e.starts_with('E') || e.parse::<u32>().is_ok_and(|k| k > 0)
        }),
        _ => false,
    }
}

/// The result read where the call stands (`parent`): thrown away or tested for sign, it means
/// the same; a truth test is made one (`if (consume(pb))`, `!consume(pb)`). True when so.
fn read_in_place(cx: &mut Ctx, call: Node, parent: Node) -> bool {
    let src = cx.src();
    match parent.kind() {
        "expression_statement" => true,
        "binary_expression" if is_sign_test(parent, src) => true,
        "parenthesized_expression"
            if parent
                .parent()
                .is_some_and(|g| matches!(g.kind(), "if_statement" | "while_statement")) =>
        {
            cx.edits
                .push(Edit::insert(call.end_byte(), " < 0", Rule::PerfBufferApi));
            true
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
            true
        }
        _ => false,
    }
}

/// `v = perf_buffer__consume(pb);`: every read of v until it is set again tests its sign. In a
/// loop, the reads before the call that the loop comes back to count too (its condition,
/// `while (!err)`, and the statements above the call), whatever is set between. None when the
/// result is not stored in a variable; Err names the variable and the first other read.
fn stored_for_sign<'s>(
    cx: &Ctx<'s, '_>,
    call: Node,
    parent: Node,
) -> Option<Result<(), (&'s str, usize)>> {
    let src = cx.src();
    let var = match parent.kind() {
        "assignment_expression" => parent.field("left").map(|l| c::text(l, src)),
        "init_declarator" => parent.field("declarator").map(|d| c::text(d, src)),
        _ => None,
    };
    let (Some(v), Some(f)) = (var, c::ancestor(call, "function_definition")) else {
        return None;
    };
    if !c::is_ident(v) {
        return None;
    }
    // The outermost loop around the call, within its function.
    let mut loop_start = None;
    let mut a = call.parent();
    while let Some(x) = a.filter(|x| x.id() != f.id()) {
        if matches!(
            x.kind(),
            "while_statement" | "for_statement" | "do_statement"
        ) {
            loop_start = Some(x.start_byte());
        }
        a = x.parent();
    }
    let reads_of_v = |from: usize, to: usize| {
        cx.of_kind("identifier")
            .into_iter()
            .filter(move |n| c::text(*n, src) == v && n.start_byte() >= from && n.end_byte() <= to)
    };
    let assigned = |n: Node| {
        n.parent()
            .is_some_and(|p| p.kind() == "assignment_expression" && p.field("left") == Some(n))
    };
    let for_sign = |n: Node| {
        n.parent()
            .is_some_and(|p| is_sign_test(p, src) && p.field("left") == Some(n))
            || in_error_branch(n, v, src)
    };
    if let Some(from) = loop_start
        && let Some(n) =
            reads_of_v(from, call.start_byte()).find(|n| !assigned(*n) && !for_sign(*n))
    {
        return Some(Err((v, n.start_byte())));
    }
    for n in reads_of_v(call.end_byte() + 1, f.end_byte()) {
        if assigned(n) {
            break;
        }
        if !for_sign(n) {
            return Some(Err((v, n.start_byte())));
        }
    }
    Some(Ok(()))
}

/// Inside `if (v < 0) ...`, or `if (v < 0 && ...)`, the value is an error code in both APIs.
fn in_error_branch(n: Node, v: &str, src: &str) -> bool {
    let negative = format!("{v}<0");
    let tests_negative = |cond: &str| {
        let cond: String = c::strip_parens(cond)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        // A conjunction of plain tests: every one holds in the branch.
        !cond.contains("||")
            && !cond.contains('?')
            && cond
                .split("&&")
                .any(|t| t.trim_start_matches('(').trim_end_matches(')') == negative)
    };
    let mut a = n.parent();
    while let Some(x) = a {
        if x.kind() == "if_statement"
            && let (Some(cond), Some(then)) = (x.field("condition"), x.field("consequence"))
            && tests_negative(c::text(cond, src))
            && n.start_byte() >= then.start_byte()
            && n.end_byte() <= then.end_byte()
        {
            return true;
        }
        a = x.parent();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        BPF, PERF_CALLBACK, PERF_DECLS, RING_CALLBACK, RING_DECLS, loader,
    };
    use crate::engine::testkit::{check_migrate, check_refused};
    use crate::rules::Rule;

    /// A perf buffer over `events`, with the usual sample callback, and main's return if it
    /// failed.
    const CREATE: &str = "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n\
                          \tif (!pb)\n\t\treturn 1;\n";

    #[test]
    fn renames_the_calls_and_tests_consume_for_errors() {
        let drain = r#"
static int drain(struct perf_buffer *pb)
{
	int err = perf_buffer__consume(pb);

	if (err < 0) {
		fprintf(stderr, "consume failed: %d\n", err);
		return err;
	}
	return 0;
}
"#;
        let body = r#"	pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);
	if (!pb)
		return 1;
	epfd = perf_buffer__epoll_fd(pb);
	for (;;) {
		if (epoll_wait(epfd, &ev, 1, 100) < 0)
			break;
		if (perf_buffer__consume(pb))
			break;
	}
	if (!perf_buffer__consume(pb))
		drain(pb);
	perf_buffer__free(pb);
	return 0;
"#;
        let before = loader(
            "#include <sys/epoll.h>\n",
            &format!("{PERF_CALLBACK}{drain}"),
            &format!("\tstruct epoll_event ev;\n{PERF_DECLS}\tint epfd;\n\n"),
            body,
        );
        let drain_after = r#"
static int drain(struct ring_buffer *pb)
{
	int err = ring_buffer__consume(pb);

	if (err < 0) {
		fprintf(stderr, "consume failed: %d\n", err);
		return err;
	}
	return 0;
}
"#;
        let body_after = r#"	pb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
	if (!pb)
		return 1;
	epfd = ring_buffer__epoll_fd(pb);
	for (;;) {
		if (epoll_wait(epfd, &ev, 1, 100) < 0)
			break;
		if (ring_buffer__consume(pb) < 0)
			break;
	}
	if (ring_buffer__consume(pb) >= 0)
		drain(pb);
	ring_buffer__free(pb);
	return 0;
"#;
        let after = loader(
            "#include <sys/epoll.h>\n",
            &format!("{RING_CALLBACK}{drain_after}"),
            &format!("\tstruct epoll_event ev;\n{RING_DECLS}\tint epfd;\n\n"),
            body_after,
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn a_consume_result_tested_for_an_error_code_means_the_same() {
        // Compared with -EINTR, and read in the branch where it is negative: the same for a
        // count of records as for 0.
        let body = |api: &str| {
            format!(
                "\twhile (!exiting) {{\n\
                 \t\terr = {api}__consume(pb);\n\
                 \t\tif (err < 0 && err != -EINTR) {{\n\
                 \t\t\tfprintf(stderr, \"consume: %d\\n\", err);\n\
                 \t\t\tbreak;\n\
                 \t\t}}\n\
                 \t\tif (err == -EAGAIN)\n\
                 \t\t\tcontinue;\n\
                 \t\tusleep(1000);\n\
                 \t}}\n\
                 \terr = 0;\n\
                 \t{api}__free(pb);\n\treturn err;\n"
            )
        };
        let before = loader(
            "#include <errno.h>\n#include <unistd.h>\n",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\tint err;\n\n"),
            &format!("{CREATE}{}", body("perf_buffer")),
        );
        let after = loader(
            "#include <errno.h>\n#include <unistd.h>\n",
            RING_CALLBACK,
            &format!("{RING_DECLS}\tint err;\n\n"),
            &format!(
                "{}{}",
                CREATE
                    .replace("perf_buffer__new", "ring_buffer__new")
                    .replace(
                        ", 8, handle_event, NULL, NULL, NULL",
                        ", handle_event, NULL, NULL"
                    ),
                body("ring_buffer")
            ),
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn refuses_a_consume_result_read_as_0_or_error() {
        let before = loader(
            "",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\tint err;\n\n"),
            &format!(
                "{CREATE}\twhile (perf_buffer__poll(pb, 100) >= 0)\n\t\t;\n\
                 \terr = perf_buffer__consume(pb);\n\
                 \tperf_buffer__free(pb);\n\treturn err == 0 ? 0 : 1;\n"
            ),
        );
        // The read that refuses is named, with its line: the one to change.
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::ConsumeResult,
            "is kept in `err`, read on line",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::ConsumeResult,
            "(`return err == 0 ? 0 : 1;`) for more than its sign",
        );
        // Read where it may be a count: in a loop's condition, before the call that sets it
        // (`while (!err)` stops after the first records a ring hands over).
        let before = loader(
            "#include <unistd.h>\n",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\tint err = 0;\n\n"),
            &format!(
                "{CREATE}\twhile (!err) {{\n\t\tusleep(1000);\n\
                 \t\terr = perf_buffer__consume(pb);\n\t}}\n\
                 \tperf_buffer__free(pb);\n\treturn 0;\n"
            ),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::ConsumeResult,
            "ring_buffer__consume() returns the number of records consumed",
        );
        // Read where it may be a count: in the branch of a test that is not only of its sign.
        let before = loader(
            "#include <errno.h>\n",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\tint err;\n\n"),
            &format!(
                "{CREATE}\terr = perf_buffer__consume(pb);\n\
                 \tif (err < 0 || err != -EINTR)\n\t\treturn err;\n\
                 \tperf_buffer__free(pb);\n\treturn 0;\n"
            ),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::ConsumeResult,
            "ring_buffer__consume() returns the number of records consumed",
        );
    }

    #[test]
    fn refuses_calls_with_no_equivalent() {
        let before = loader(
            "",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\tsize_t i;\n\n"),
            &format!(
                "{CREATE}\tfor (;;)\n\
                 \t\tfor (i = 0; i < perf_buffer__buffer_cnt(pb); i++)\n\
                 \t\t\tperf_buffer__consume_buffer(pb, i);\n\
                 \treturn 0;\n"
            ),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::NoRingEquivalent,
            "perf_buffer__buffer_cnt() has no ring buffer equivalent",
        );
        // Made raw, with its own perf event attributes: refused for that, not as a buffer
        // made in another file.
        let raw = loader(
            "",
            "static enum bpf_perf_event_ret on_raw(void *ctx, int cpu, struct perf_event_header *h)\n{\n\treturn LIBBPF_PERF_EVENT_CONT;\n}\n",
            &format!(
                "{PERF_DECLS}\tstruct perf_event_attr attr = {{ .type = PERF_TYPE_SOFTWARE }};\n\n"
            ),
            "\tpb = perf_buffer__new_raw(bpf_map__fd(skel->maps.events), 8, &attr, on_raw, NULL, NULL);\n\twhile (perf_buffer__poll(pb, 100) >= 0)\n\t\t;\n\treturn 0;\n",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &raw)],
            Rule::NoRingEquivalent,
            "perf_buffer__new_raw() has no ring buffer equivalent",
        );
    }
    #[test]
    fn refuses_a_buffer_created_in_another_file() {
        let loader = r#"#include <bpf/libbpf.h>
#include "x.skel.h"

struct perf_buffer *open_events(struct x_bpf *skel);

int main(void)
{
	struct x_bpf *skel = x_bpf__open_and_load();
	struct perf_buffer *pb;

	if (!skel || x_bpf__attach(skel))
		return 1;
	pb = open_events(skel);
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	return 0;
}
"#;
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", loader)],
            Rule::UnlinkedProgram,
            "perf_buffer__poll() on a perf buffer created in another file",
        );
    }
}
