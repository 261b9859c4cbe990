//! What the site handlers did not explain: any other use of a perf map (`map-other-use`), and
//! trigger words outside every understood site (`unsupported-form`).

use super::super::context::{Ctx, OutputSite, Report, other_map_uses};
use super::map_def::DefSite;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

/// Every other mention of a perf map of this file, or of one this file writes to, is a use
/// bpf-migrate does not know how to carry over (a wrapper taking the map as an argument, a
/// lookup, a second program type). `through_macros`: arguments of file-scope calls that name a
/// map this file writes to and does not define, which linking judges (`engine::macro_maps`).
pub(super) fn other_uses(
    cx: &mut Ctx,
    defs: &[DefSite],
    outputs: &[OutputSite],
    counters: &[String],
    through_macros: &[(usize, usize)],
) {
    let mut names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    names.extend(outputs.iter().map(|o: &OutputSite| o.map.clone()));
    names.sort();
    names.dedup();
    names.retain(|n| !counters.contains(n));
    let mut allowed: Vec<(usize, usize)> = defs.iter().map(|d| d.name_span).collect();
    allowed.extend(outputs.iter().map(|o| o.map_span));
    allowed.extend(through_macros);
    other_map_uses(
        cx,
        &names,
        &allowed,
        &|t| {
            format!(
                "perf event array `{t}` is used here, not only as the map of bpf_perf_event_output()"
            )
        },
        "bpf-migrate converts maps whose only uses are their definition and bpf_perf_event_output(&map, ...); migrate this use by hand, or inline the wrapper",
    );
}

/// Reports every trigger identifier that no understood site explains.
pub fn account_triggers(cx: &mut Ctx, explained: &[(usize, usize)], triggers: &[&str]) {
    let src = cx.src();
    let toks = cx.tokens();
    for &(t, s, e) in toks.iter() {
        if t != Tok::Ident || !triggers.contains(&&src[s..e]) {
            continue;
        }
        if explained.iter().any(|&(a, b)| s >= a && e <= b) || c::is_declared_name(cx.root(), s, e)
        {
            continue;
        }
        let word = &src[s..e];
        let in_macro = cx
            .of_kinds(&["preproc_function_def", "preproc_def"])
            .into_iter()
            .find(|n| n.start_byte() <= s && e <= n.end_byte())
            .and_then(|n| n.field("name"))
            .map(|n| c::text(n, src).to_string());
        let msg = match in_macro {
            Some(m) => format!(
                "`{word}` is used inside the macro `{m}`, where bpf-migrate cannot follow it"
            ),
            None => format!("`{word}` is used in a form bpf-migrate does not understand"),
        };
        cx.report(
            s,
            Rule::UnsupportedForm,
            msg,
            "expand the macro or wrapper by hand, then run bpf-migrate again, or migrate this program by hand",
        );
        // The map type as a value (a case label, a table of type names) is only a refusal in
        // a program being migrated.
        if word == "BPF_MAP_TYPE_PERF_EVENT_ARRAY"
            && let Some(d) = cx.diags.last_mut()
        {
            d.program_only = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{OUTPUT, PERF_MAP, refused};
    use crate::engine::Options;
    use crate::engine::testkit::run;
    use crate::report::Severity;
    use crate::rules::Rule;

    #[test]
    fn refuses_a_lookup_in_the_perf_map() {
        let code = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	u32 key = 0;

	if (bpf_map_lookup_elem(&events, &key))
		return 0;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::MapOtherUse,
            "perf event array `events` is used here, not only as the map of bpf_perf_event_output()",
        );
    }

    #[test]
    fn refuses_the_perf_map_passed_to_a_function() {
        let code = r#"static __always_inline void emit(void *ctx, void *map, u32 pid)
{
	bpf_printk("%d", pid);
}

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	emit(ctx, &events, bpf_get_current_pid_tgid() >> 32);
	return 0;
}
"#;
        refused(
            &[
                PERF_MAP,
                code,
                OUTPUT.replace("trace_exec", "trace_exec2").as_str(),
            ],
            Rule::MapOtherUse,
            "perf event array `events` is used here",
        );
    }

    /// A macro whose body is not C until it is expanded (token pasting): its output cannot be
    /// rewritten in place (`macro_output`), and is refused.
    #[test]
    fn refuses_an_output_call_inside_a_macro_that_is_not_c() {
        let code = r#"#define EMIT(ctx, v) bpf_perf_event_output(ctx, &ev##ents, BPF_F_CURRENT_CPU, &(v), sizeof(v))

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	EMIT(ctx, pid);
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::UnsupportedForm,
            "`bpf_perf_event_output` is used inside the macro `EMIT`, where bpf-migrate cannot follow it",
        );
    }

    #[test]
    fn refuses_the_helper_as_a_function_pointer() {
        let code = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	long (*emit)(void *, void *, u64, void *, u64) = bpf_perf_event_output;
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	emit(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::UnsupportedForm,
            "`bpf_perf_event_output` is used in a form bpf-migrate does not understand",
        );
    }

    #[test]
    fn refuses_the_map_type_as_a_value_in_a_program() {
        let code = r#"static int is_perf(int type)
{
	return type == BPF_MAP_TYPE_PERF_EVENT_ARRAY;
}
"#;
        refused(
            &[PERF_MAP, code, OUTPUT],
            Rule::UnsupportedForm,
            "`BPF_MAP_TYPE_PERF_EVENT_ARRAY` is used in a form bpf-migrate does not understand",
        );
    }

    /// Outside any program, the map type as a value is only a warning (`program_only`).
    #[test]
    fn warns_of_the_map_type_as_a_value_outside_programs() {
        let util = r#"#include <linux/bpf.h>

const char *map_type_name(int t)
{
	switch (t) {
	case BPF_MAP_TYPE_PERF_EVENT_ARRAY:
		return "perf";
	default:
		return "?";
	}
}
"#;
        let (changed, diags) = run(&[("util.c", util)], &Options::default());
        assert!(changed.is_empty(), "changed: {:?}", changed.keys());
        assert!(
            diags.iter().all(|d| d.severity == Severity::Warning)
                && diags.iter().any(|d| d.rule == Rule::UnsupportedForm
                    && d.message
                        .contains("`BPF_MAP_TYPE_PERF_EVENT_ARRAY` is used here")),
            "{diags:?}"
        );
    }
}
