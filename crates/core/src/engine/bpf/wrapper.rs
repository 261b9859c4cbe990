//! An output inside the program's own wrapper, whose map (and flags) are parameters:
//! `static int event_output(void *ctx, void *map, u64 flags, void *data, u64 size)
//! { return bpf_perf_event_output(ctx, map, flags, data, size); }`, called from many probes
//! as `event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e))`.
//!
//! The call inside becomes `bpf_ringbuf_output(map, data, size, 0)` when the wrapper is a
//! static function of the file that nothing uses but calls, and every call passes a map
//! named directly (`&events`) and, for flags that are a parameter, `BPF_F_CURRENT_CPU`. Each
//! call is then an output of the map it passes, for linking (every one of those maps must
//! migrate). The wrapper's events are copied: the reserve strategy and a CPU field do not
//! follow them through the wrapper. A kept lost callback's counter does, where every call
//! passes the same map (`engine::lost_counter`).

use tree_sitter::Node;

use super::super::context::{Ctx, OutputSite, Report, Wrapper};
use crate::edit::Edit;
use crate::engine::options::Strategy;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

/// The outputs of the output call `call` made through its wrapper, with the edit of `call`
/// planned; None when `call` does not take its map from a parameter of a function around it
/// (the caller refuses it then), or when the wrapper's callers do not allow it (also
/// refused, here, with the reason).
pub(super) fn through_wrapper(cx: &mut Ctx, call: Node) -> Option<Vec<OutputSite>> {
    let src = cx.src();
    let args = c::arg_spans(call);
    if args.len() != 5 || cx.has_error_in(call.start_byte(), call.end_byte()) {
        return None;
    }
    let map_param = c::strip_parens(&src[args[1].0..args[1].1]);
    if !c::is_ident(map_param) {
        return None;
    }
    let func = c::ancestor(call, "function_definition")?;
    let params = parameters(func, src)?;
    let map_k = params.iter().position(|p| p == map_param)?;
    let flags_text = c::strip_parens(&src[args[2].0..args[2].1]);
    let flags_k = params.iter().position(|p| p == flags_text);
    let name_node = function_name(func)?;
    let name = c::text(name_node, src);
    let refuse = |cx: &mut Ctx, why: String| {
        cx.report(
            args[1].0,
            Rule::MapOtherUse,
            format!("bpf_perf_event_output() writes to the map its wrapper `{name}` is given, and {why}"),
            "bpf-migrate follows a wrapper that is a static function of the file, called with maps named directly (`&map`) and BPF_F_CURRENT_CPU; inline the wrapper or migrate by hand",
        );
        None
    };
    if flags_k.is_none() && flags_text != "BPF_F_CURRENT_CPU" {
        return refuse(
            cx,
            format!("its flags `{flags_text}` are not BPF_F_CURRENT_CPU"),
        );
    }
    if !is_static(func, src) {
        return refuse(cx, "it is not static: other files may call it".into());
    }
    // Every mention of the wrapper is its definition's name or a call of it.
    let decl_name = Some(name_node.start_byte());
    let mut calls = Vec::new();
    for &(t, s, e) in cx.tokens() {
        if t != Tok::Ident || src[s..e] != *name || Some(s) == decl_name {
            continue;
        }
        let Some(caller) = cx
            .root()
            .descendant_for_byte_range(s, e)
            .and_then(|n| n.parent())
            .filter(|p| {
                p.kind() == "call_expression"
                    && p.field("function").is_some_and(|f| f.start_byte() == s)
            })
        else {
            return refuse(
                cx,
                format!(
                    "`{name}` is used other than called (line {})",
                    cx.file.line_col(s).0
                ),
            );
        };
        calls.push(caller);
    }
    if calls.is_empty() {
        return None;
    }
    let mut sites = Vec::new();
    for caller in calls {
        let cargs = c::arg_spans(caller);
        let line = cx.file.line_col(caller.start_byte()).0;
        if cargs.len() != params.len() {
            return refuse(
                cx,
                format!("its call on line {line} does not pass every parameter"),
            );
        }
        let (ms, me) = cargs[map_k];
        let Some(map) = c::strip_parens(&src[ms..me])
            .strip_prefix('&')
            .map(str::trim)
            .filter(|m| c::is_ident(m))
        else {
            return refuse(
                cx,
                format!(
                    "its call on line {line} passes `{}`, not a map named directly",
                    &src[ms..me]
                ),
            );
        };
        if let Some(k) = flags_k {
            let f = c::strip_parens(&src[cargs[k].0..cargs[k].1]);
            if f != "BPF_F_CURRENT_CPU" {
                return refuse(
                    cx,
                    format!(
                        "its call on line {line} passes the flags `{f}`, not BPF_F_CURRENT_CPU"
                    ),
                );
            }
        }
        let at = ms + src[ms..me].find(map).unwrap_or(0);
        sites.push(OutputSite {
            map: map.to_string(),
            map_span: (at, at + map.len()),
            offset: caller.start_byte(),
            cpu: Some(Err((
                caller.start_byte(),
                format!("the event is sent through the wrapper `{name}`"),
            ))),
            wrapper: Some(Wrapper {
                name: name.to_string(),
                param: map_param.to_string(),
                call: (call.start_byte(), call.end_byte()),
            }),
            event: None,
        });
    }
    let argt = |i: usize| src[args[i].0..args[i].1].to_string();
    let text = c::layout_call(
        src,
        call.start_byte(),
        call.end_byte(),
        "bpf_ringbuf_output",
        &[argt(1), argt(3), argt(4), "0".to_string()],
    );
    cx.edits.push(Edit::replace(
        call.start_byte(),
        call.end_byte(),
        text,
        Rule::PerfEventOutput,
    ));
    if cx.opts.strategy == Strategy::Reserve {
        cx.diag(
            call.start_byte(),
            Rule::ReserveFallback,
            format!("this event is copied into the ring buffer, not reserved in it: it comes through the wrapper `{name}` from its callers"),
            Some("the copy is correct, only slower"),
        );
    }
    Some(sites)
}

/// The parameter names of a function definition, in order.
fn parameters(func: Node, src: &str) -> Option<Vec<String>> {
    let mut d = func.field("declarator")?;
    while d.kind() != "function_declarator" {
        d = d.field("declarator")?;
    }
    let list = d.field("parameters")?;
    let mut cursor = list.walk();
    let names = list
        .named_children(&mut cursor)
        .filter(|p| p.kind() == "parameter_declaration")
        .map(|p| {
            let mut n = p.field("declarator");
            while let Some(x) = n.filter(|x| x.kind() != "identifier") {
                n = x.field("declarator");
            }
            n.map(|n| c::text(n, src).to_string()).unwrap_or_default()
        })
        .collect();
    Some(names)
}

/// The name a function definition defines.
fn function_name(func: Node) -> Option<Node> {
    let mut d = func.field("declarator")?;
    while d.kind() != "identifier" {
        d = d.field("declarator")?;
    }
    Some(d)
}

fn is_static(func: Node, src: &str) -> bool {
    let mut cursor = func.walk();
    func.children(&mut cursor)
        .any(|c| c.kind() == "storage_class_specifier" && c::text(c, src) == "static")
}

#[cfg(test)]
mod tests {
    use crate::engine::Options;
    use crate::engine::testkit::{check_migrate, check_refused, run};
    use crate::engine::user::testing::{PERF_CALLBACK, perf};
    use crate::report::Severity;
    use crate::rules::Rule;

    /// A BPF source whose probes send through `wrapper` (with `params`, and `inner` its
    /// output call), called as `call` twice.
    fn bpf(head: &str, params: &str, inner: &str, call: &str) -> String {
        format!(
            "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\n\
             struct {{\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n}} events SEC(\".maps\");\n\n\
             {head}static __always_inline long send(void *ctx, {params})\n{{\n\treturn {inner};\n}}\n\n\
             SEC(\"tracepoint/syscalls/sys_enter_execve\")\nint on_exec(void *ctx)\n{{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\t{call};\n\treturn 0;\n}}\n\n\
             SEC(\"tracepoint/syscalls/sys_enter_kill\")\nint on_kill(void *ctx)\n{{\n\tu32 pid = 1;\n\n\t{call};\n\treturn 0;\n}}\n"
        )
    }

    const PARAMS: &str = "void *map, u64 flags, void *data, u64 size";
    const INNER: &str = "bpf_perf_event_output(ctx, map, flags, data, size)";
    const CALL: &str = "send(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid))";

    fn loader(lost: &str) -> String {
        perf(
            "",
            PERF_CALLBACK,
            "",
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, {lost}, NULL, NULL);\n"
            ),
        )
    }

    #[test]
    fn the_output_in_a_wrapper_becomes_a_ring_output_of_its_map_parameter() {
        let before = bpf("", PARAMS, INNER, CALL);
        let after = before
            .replace(INNER, "bpf_ringbuf_output(map, data, size, 0)")
            .replace(
                "\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));",
                "\t__uint(type, BPF_MAP_TYPE_RINGBUF);\n\t__uint(max_entries, 256 * 1024);",
            );
        check_migrate(
            &[("x.bpf.c", &before), ("x.c", &loader("NULL"))],
            &[("x.bpf.c", &after)],
        );
    }

    #[test]
    fn callers_must_name_the_map_and_the_current_cpu_and_only_call_it() {
        let files = |b: String| [("x.bpf.c", b), ("x.c", loader("NULL"))];
        let check = |b: String, says: &str| {
            let f = files(b);
            let f: Vec<(&str, &str)> = f.iter().map(|(n, t)| (*n, t.as_str())).collect();
            check_refused(&f, Rule::MapOtherUse, says);
        };
        check(
            bpf(
                "",
                PARAMS,
                INNER,
                "send(ctx, &events, 0, &pid, sizeof(pid))",
            ),
            "passes the flags `0`, not BPF_F_CURRENT_CPU",
        );
        check(
            bpf("", PARAMS, INNER, CALL).replace("static __always_inline long send", "long send"),
            "it is not static",
        );
        check(
            bpf("", PARAMS, INNER, CALL).replace("\treturn 0;\n}\n\nSEC(\"tracepoint/syscalls/sys_enter_kill\")", "\treturn 0;\n}\n\nvoid *keep = send;\n\nSEC(\"tracepoint/syscalls/sys_enter_kill\")"),
            "is used other than called",
        );
        check(
            bpf(
                "",
                "void *map, void *data, u64 size",
                "bpf_perf_event_output(ctx, map, 7, data, size)",
                "send(ctx, &events, &pid, sizeof(pid))",
            ),
            "its flags `7` are not BPF_F_CURRENT_CPU",
        );
    }

    /// Every call passes `events`: the wrapper's output counts for its ring
    /// (`engine::lost_counter`, where a wrapper of two rings is refused).
    #[test]
    fn a_kept_lost_callback_counts_through_a_wrapper_of_one_map() {
        let lost = "static void handle_lost(void *ctx, int cpu, __u64 n)\n{\n}\n";
        let before = bpf("", PARAMS, INNER, CALL);
        let l = perf(
            "",
            &format!("{PERF_CALLBACK}\n{lost}"),
            "",
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost, NULL, NULL);\n",
        );
        let (changed, diags) = run(&[("x.bpf.c", &before), ("x.c", &l)], &Options::default());
        assert!(
            diags.iter().all(|d| d.severity != Severity::Manual),
            "{diags:?}"
        );
        assert!(
            changed["x.bpf.c"]
                .contains("events_lost_count(bpf_ringbuf_output(map, data, size, 0))"),
            "{}",
            changed["x.bpf.c"]
        );
    }
}
