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
        let args = c::arg_spans(n, src);
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
    Some(match name {
        "libbpf_get_error" if in_condition => format!("!{handle}"),
        "libbpf_get_error" if plain => format!("{handle} ? 0 : -errno"),
        "libbpf_get_error" => format!("({handle} ? 0 : -errno)"),
        "IS_ERR" | "IS_ERR_OR_NULL" if in_condition => format!("!{handle}"),
        "IS_ERR" | "IS_ERR_OR_NULL" => format!("(!{handle})"),
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
    use super::super::testing::BPF;
    use crate::engine::testkit::check_migrate;

    #[test]
    fn libbpf_get_error_reads_errno() {
        let loader = r#"#include <stdio.h>
#include <bpf/libbpf.h>
#include "x.skel.h"

static void handle_event(void *ctx, int cpu, void *data, __u32 size)
{
	printf("pid %u\n", *(__u32 *)data);
}

int main(void)
{
	struct perf_buffer *pb;
	struct x_bpf *skel;
	int err;

	skel = x_bpf__open_and_load();
	if (!skel || x_bpf__attach(skel))
		return 1;
	pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);
	err = libbpf_get_error(pb);
	if (err) {
		fprintf(stderr, "failed to open perf buffer: %d\n", err);
		return 1;
	}
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	return 0;
}
"#;
        let after = r#"#include <stdio.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include "x.skel.h"

static int handle_event(void *ctx, void *data, size_t size)
{
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}

int main(void)
{
	struct ring_buffer *pb;
	struct x_bpf *skel;
	int err;

	skel = x_bpf__open_and_load();
	if (!skel || x_bpf__attach(skel))
		return 1;
	pb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
	err = pb ? 0 : -errno;
	if (err) {
		fprintf(stderr, "failed to open ring buffer: %d\n", err);
		return 1;
	}
	while (ring_buffer__poll(pb, 100) >= 0)
		;
	ring_buffer__free(pb);
	return 0;
}
"#;
        check_migrate(&[("x.bpf.c", BPF), ("x.c", loader)], &[("x.c", after)]);
    }

    #[test]
    fn is_err_and_ptr_err_in_a_condition() {
        let loader = r#"#include <stdio.h>
#include <errno.h>
#include <bpf/libbpf.h>
#include "x.skel.h"

static void handle_event(void *ctx, int cpu, void *data, __u32 size)
{
	printf("pid %u\n", *(__u32 *)data);
}

static int run(struct x_bpf *skel)
{
	struct perf_buffer *pb;

	pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);
	if (IS_ERR(pb))
		return PTR_ERR(pb);
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	return 0;
}

int main(void)
{
	struct x_bpf *skel = x_bpf__open_and_load();

	if (!skel || x_bpf__attach(skel))
		return 1;
	return run(skel);
}
"#;
        let after = r#"#include <stdio.h>
#include <errno.h>
#include <bpf/libbpf.h>
#include "x.skel.h"

static int handle_event(void *ctx, void *data, size_t size)
{
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}

static int run(struct x_bpf *skel)
{
	struct ring_buffer *pb;

	pb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
	if (!pb)
		return -errno;
	while (ring_buffer__poll(pb, 100) >= 0)
		;
	ring_buffer__free(pb);
	return 0;
}

int main(void)
{
	struct x_bpf *skel = x_bpf__open_and_load();

	if (!skel || x_bpf__attach(skel))
		return 1;
	return run(skel);
}
"#;
        check_migrate(&[("x.bpf.c", BPF), ("x.c", loader)], &[("x.c", after)]);
    }
}
