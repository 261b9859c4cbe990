//! Which map a perf buffer reads (`resolve_map`, following skeleton fields, lookups by name,
//! variables, struct fields and parameters), other uses of that map in the loader, and the
//! BPF sources a loader names.

use tree_sitter::Node;

use super::super::context::{Analysis, Ctx, Report};
use super::syntax::strip_ptr;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

/// `#include "x.skel.h"` and `bpf_object__open_file("x.bpf.o", ...)` name the BPF source.
pub(super) fn collect_bpf_sources(cx: &Ctx, out: &mut Analysis) {
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
        if let Some(&(s, e)) = c::arg_spans(call).first() {
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

/// A map name and the spans of the expressions followed to find it.
pub(super) type Resolved = (String, Vec<(usize, usize)>);

/// Adds the span of the expression that led to an answer.
fn through(span: (usize, usize)) -> impl FnOnce(Resolved) -> Resolved {
    move |(m, mut s)| {
        s.push(span);
        (m, s)
    }
}

/// Which map an fd expression reads: `bpf_map__fd(skel->maps.NAME)`,
/// `bpf_object__find_map_fd_by_name(obj, "NAME")`, or a variable (or parameter) set from one.
/// Returns the map name and the spans of the expressions followed.
pub(super) fn resolve_map(
    cx: &Ctx,
    expr: &str,
    expr_at: usize,
    at: Node,
    depth: usize,
) -> Option<Resolved> {
    if depth > 4 {
        return None;
    }
    let span = (expr_at, expr_at + expr.len());
    if let Some(found) = named_here(cx.src(), expr, span) {
        return Some(found);
    }
    let inner = c::strip_parens(expr);
    if let Some(arg) = inner
        .strip_prefix("bpf_map__fd")
        .map(str::trim)
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'))
    {
        let arg = arg.trim();
        let off = expr_at + expr.find(arg).unwrap_or(0);
        return resolve_map(cx, arg, off, at, depth + 1).map(through(span));
    }
    if !c::is_ident(inner) {
        return resolve_field(cx, inner, span, depth);
    }
    if let Some(v) = last_value(cx, inner, at) {
        let src = cx.src();
        return resolve_map(cx, c::text(v, src), v.start_byte(), v, depth + 1).map(through(span));
    }
    resolve_parameter(cx, inner, at, depth).map(through(span))
}

/// The map `bpf_object__next_map(obj, NULL)` (or the older `bpf_map__next(NULL, obj)`)
/// returns: the object's first, which linking names when the BPF source defines one map only
/// (`link::first_map`). Not an identifier, so no text of the loader matches it.
pub const FIRST_MAP: &str = "<the object's first map>";

/// A map named in the expression itself: `skel->maps.NAME` (or `maps->NAME`),
/// `bpf_object__find_map_fd_by_name(obj, "NAME")`, or the object's first map (`FIRST_MAP`).
fn named_here(src: &str, expr: &str, span: (usize, usize)) -> Option<Resolved> {
    let toks = c::lex(src, span.0..span.1);
    if let Some(name) = (0..toks.len()).find_map(|k| maps_field(src, &toks, k)) {
        return Some((src[toks[name].1..toks[name].2].to_string(), vec![span]));
    }
    let inner = c::strip_parens(expr);
    let first = |call: &str, null_at: usize| {
        let args = inner
            .strip_prefix(call)?
            .trim_start()
            .strip_prefix('(')?
            .strip_suffix(')')?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        (args.len() == 2 && c::is_null(args[null_at])).then_some(())
    };
    if first("bpf_object__next_map", 1)
        .or_else(|| first("bpf_map__next", 0))
        .is_some()
    {
        return Some((FIRST_MAP.to_string(), vec![span]));
    }
    if let Some(rest) = inner
        .strip_prefix("bpf_object__find_map_fd_by_name")
        .or_else(|| inner.strip_prefix("bpf_object__find_map_by_name"))
        && let Some(q1) = rest.find('"')
        && let Some(q2) = rest[q1 + 1..].find('"')
    {
        return Some((rest[q1 + 1..q1 + 1 + q2].to_string(), vec![span]));
    }
    None
}

/// The span of the value `var` holds at `at` (`last_value`).
pub(super) fn value_span(cx: &Ctx, var: &str, at: Node) -> Option<(usize, usize)> {
    last_value(cx, var, at).map(|v| (v.start_byte(), v.end_byte()))
}

/// A variable's value at `at`: its initializer or the last assignment before `at` in the same
/// function.
fn last_value<'t>(cx: &Ctx<'_, 't>, var: &str, at: Node<'t>) -> Option<Node<'t>> {
    let src = cx.src();
    let scope = c::ancestor(at, "function_definition").unwrap_or(cx.root());
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
                    .is_some_and(|d| strip_ptr(d, src) == var) =>
            {
                n.field("value")
            }
            "assignment_expression" if n.field("left").is_some_and(|l| c::text(l, src) == var) => {
                n.field("right")
            }
            _ => None,
        };
        if let Some(v) = value {
            best = Some(v);
        }
    }
    best
}

/// A parameter of the function around `at`: every call of the function in this file must
/// pass the same map.
fn resolve_parameter(cx: &Ctx, param: &str, at: Node, depth: usize) -> Option<Resolved> {
    let src = cx.src();
    let func = c::ancestor(at, "function_definition")?;
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
                .is_some_and(|d| strip_ptr(d, src) == param)
        })?;
    let mut found: Option<Resolved> = None;
    for call in cx.of_kind("call_expression") {
        if c::call_name(call, src) != Some(fname) {
            continue;
        }
        let args = c::arg_spans(call);
        let &(s, e) = args.get(idx)?;
        let (m, spans) = resolve_map(cx, &src[s..e], s, call, depth + 1)?;
        found = Some(agree(found, m, spans)?);
    }
    found
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
    found.map(through(span))
}

/// `skel->maps.NAME` elsewhere in the loader (resizing the map, setting its type) would not
/// survive the change of map type.
pub(super) fn map_other_uses(cx: &mut Ctx, map: &str, allowed: &[(usize, usize)]) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{
        BPF, PERF_CALLBACK, PERF_POLL, RING_CALLBACK, RING_POLL, head, loader_calling, perf, ring,
    };
    use crate::engine::Options;
    use crate::engine::testkit::{check_migrate, check_refused, run};
    use crate::rules::Rule;

    #[test]
    fn follows_a_variable() {
        let before = perf(
            "",
            PERF_CALLBACK,
            "\tint map_fd;\n",
            "\tmap_fd = bpf_map__fd(skel->maps.events);\n\
             \tpb = perf_buffer__new(map_fd, 8, handle_event, NULL, NULL, NULL);\n",
        );
        let after = ring(
            "",
            RING_CALLBACK,
            "\tint map_fd;\n",
            "\tmap_fd = bpf_map__fd(skel->maps.events);\n\
             \tpb = ring_buffer__new(map_fd, handle_event, NULL, NULL);\n",
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn follows_a_lookup_by_name() {
        let loader = r#"#include <stdio.h>
#include <bpf/libbpf.h>

static void handle_event(void *ctx, int cpu, void *data, __u32 size)
{
	printf("pid %u\n", *(__u32 *)data);
}

int main(void)
{
	struct bpf_object *obj;
	struct perf_buffer *pb;

	obj = bpf_object__open_file("x.bpf.o", NULL);
	if (!obj || bpf_object__load(obj))
		return 1;
	pb = perf_buffer__new(bpf_object__find_map_fd_by_name(obj, "events"), 8,
			      handle_event, NULL, NULL, NULL);
	if (!pb)
		return 1;
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	bpf_object__close(obj);
	return 0;
}
"#;
        let after = r#"#include <stdio.h>
#include <bpf/libbpf.h>

static int handle_event(void *ctx, void *data, size_t size)
{
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}

int main(void)
{
	struct bpf_object *obj;
	struct ring_buffer *pb;

	obj = bpf_object__open_file("x.bpf.o", NULL);
	if (!obj || bpf_object__load(obj))
		return 1;
	pb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "events"),
			      handle_event, NULL, NULL);
	if (!pb)
		return 1;
	while (ring_buffer__poll(pb, 100) >= 0)
		;
	ring_buffer__free(pb);
	bpf_object__close(obj);
	return 0;
}
"#;
        check_migrate(&[("x.bpf.c", BPF), ("x.c", loader)], &[("x.c", after)]);
    }

    #[test]
    fn finds_the_objects_first_map_by_its_name_when_the_source_defines_one() {
        // The kernel's XDP sample and xdp-tutorial's tcpdump take the object's first map.
        let loader = |lookup: &str| {
            format!(
                "#include <stdio.h>\n#include <bpf/libbpf.h>\n\n\
                 static void handle_event(void *ctx, int cpu, void *data, __u32 size)\n{{\n\tprintf(\"pid %u\\n\", *(__u32 *)data);\n}}\n\n\
                 int main(void)\n{{\n\tstruct bpf_object *obj;\n\tstruct bpf_map *map;\n\tstruct perf_buffer *pb;\n\n\
                 \tobj = bpf_object__open_file(\"x.bpf.o\", NULL);\n\tif (!obj || bpf_object__load(obj))\n\t\treturn 1;\n\
                 \tmap = {lookup};\n\tif (!map)\n\t\treturn 1;\n\
                 \tpb = perf_buffer__new(bpf_map__fd(map), 8, handle_event, NULL, NULL, NULL);\n\tif (!pb)\n\t\treturn 1;\n\
                 \twhile (perf_buffer__poll(pb, 100) >= 0)\n\t\t;\n\treturn 0;\n}}\n"
            )
        };
        for lookup in [
            "bpf_object__next_map(obj, NULL)",
            "bpf_map__next(NULL, obj)",
        ] {
            let (changed, _) = run(
                &[("x.bpf.c", BPF), ("x.c", &loader(lookup))],
                &Options::default(),
            );
            let c = &changed["x.c"];
            assert!(
                c.contains("\tmap = bpf_object__find_map_by_name(obj, \"events\");\n"),
                "{c}"
            );
            assert!(
                c.contains("ring_buffer__new(bpf_map__fd(map), handle_event, NULL, NULL)"),
                "{c}"
            );
        }
        // With a second map in the source, the first is the compiler's choice: refused.
        let two = BPF.replace(
            "SEC(\"tracepoint",
            "struct {\n\t__uint(type, BPF_MAP_TYPE_HASH);\n\t__uint(max_entries, 64);\n\t__type(key, u32);\n\t__type(value, u64);\n} seen SEC(\".maps\");\n\nSEC(\"tracepoint",
        );
        check_refused(
            &[
                ("x.bpf.c", &two),
                ("x.c", &loader("bpf_object__next_map(obj, NULL)")),
            ],
            Rule::UnresolvedMap,
            "x.bpf.c defines 2 maps",
        );
    }

    #[test]
    fn follows_a_struct_field() {
        let app = r#"static struct app {
	struct x_bpf *skel;
	int events_fd;
} app;

"#;
        let setup = r#"
static int setup(void)
{
	app.skel = x_bpf__open_and_load();
	if (!app.skel || x_bpf__attach(app.skel))
		return -1;
	app.events_fd = bpf_map__fd(app.skel->maps.events);
	return 0;
}
"#;
        // `setup()` opens the skeleton, and `main` reads the fd it leaves.
        let before = format!(
            "{}{app}{PERF_CALLBACK}{setup}\n\
             int main(void)\n{{\n\tstruct perf_buffer *pb;\n\n\tif (setup())\n\t\treturn 1;\n\
             \tpb = perf_buffer__new(app.events_fd, 8, handle_event, NULL, NULL, NULL);\n\
             \tif (!pb)\n\t\treturn 1;\n{PERF_POLL}\treturn 0;\n}}\n",
            head("")
        );
        let after = format!(
            "{}{app}{RING_CALLBACK}{setup}\n\
             int main(void)\n{{\n\tstruct ring_buffer *pb;\n\n\tif (setup())\n\t\treturn 1;\n\
             \tpb = ring_buffer__new(app.events_fd, handle_event, NULL, NULL);\n\
             \tif (!pb)\n\t\treturn 1;\n{RING_POLL}\treturn 0;\n}}\n",
            head("")
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn follows_a_parameter_to_its_callers() {
        let poll_events = |pb: &str, create: &str, poll: &str| {
            format!(
                "\nstatic int poll_events(int map_fd)\n{{\n\tstruct {pb} *pb;\n\n{create}\
                 \tif (!pb)\n\t\treturn -1;\n{poll}\treturn 0;\n}}\n"
            )
        };
        let before = loader_calling(
            "",
            &format!(
                "{PERF_CALLBACK}{}",
                poll_events(
                    "perf_buffer",
                    "\tpb = perf_buffer__new(map_fd, 8, handle_event, NULL, NULL, NULL);\n",
                    PERF_POLL,
                )
            ),
            "poll_events(bpf_map__fd(skel->maps.events))",
        );
        let after = loader_calling(
            "",
            &format!(
                "{RING_CALLBACK}{}",
                poll_events(
                    "ring_buffer",
                    "\tpb = ring_buffer__new(map_fd, handle_event, NULL, NULL);\n",
                    RING_POLL,
                )
            ),
            "poll_events(bpf_map__fd(skel->maps.events))",
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn refuses_an_fd_it_cannot_follow() {
        let before = perf(
            "",
            PERF_CALLBACK,
            "\tint map_fd;\n",
            "\tmap_fd = atoi(getenv(\"EVENTS_FD\"));\n\
             \tpb = perf_buffer__new(map_fd, 8, handle_event, NULL, NULL, NULL);\n",
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::UnresolvedMap,
            "cannot tell which map `map_fd` refers to",
        );
    }

    #[test]
    fn refuses_another_use_of_the_map() {
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
	int map_fd;

	skel = x_bpf__open();
	if (!skel)
		return 1;
	bpf_map__set_max_entries(skel->maps.events, 4);
	if (x_bpf__load(skel) || x_bpf__attach(skel))
		return 1;
	map_fd = bpf_map__fd(skel->maps.events);
	pb = perf_buffer__new(map_fd, 8, handle_event, NULL, NULL, NULL);
	if (!pb)
		return 1;
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	return 0;
}
"#;
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", loader)],
            Rule::MapOtherUse,
            "the loader uses map `events` here",
        );
    }
}
