//! `bpf_perf_event_output(ctx, &map, BPF_F_CURRENT_CPU, data, size)` becomes
//! `bpf_ringbuf_output(&map, data, size, 0)` (or, with `--strategy reserve`, a reservation:
//! the call is offered to `reserve`). Flags that append packet bytes (CTXLEN) go to `packet`;
//! other flags, a map not named directly, and the packet helpers
//! `bpf_skb_output`/`bpf_xdp_output` are refused. With `--strategy compat`, the call becomes
//! `MAP_output(ctx, data, size)`, the helper `compat` adds beside the map, which takes the
//! path (ring or perf buffer) user space picked before load.

use tree_sitter::Node;

use super::super::context::{Analysis, Ctx, OutputSite, Report};
use super::super::{Strategy, compat, reserve};
use super::{counters, cpu_site, packet, wrapper};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;

/// Every output call of the file: its edit planned (or its refusal recorded), its helper's
/// name explained, and the reservations settled.
pub(super) fn output_calls(
    cx: &mut Ctx,
    counters: &[String],
    explained: &mut Vec<(usize, usize)>,
    out: &mut Analysis,
) -> Vec<OutputSite> {
    let src = cx.src();
    let mut outputs: Vec<OutputSite> = Vec::new();
    let mut cands = Vec::new();
    // The output each reserve candidate comes from.
    let mut of_cand = Vec::new();
    let mut packets = Vec::new();
    for call in cx.of_kind("call_expression") {
        let Some(name) = c::call_name(call, src) else {
            continue;
        };
        if !matches!(
            name,
            "bpf_perf_event_output" | "bpf_skb_output" | "bpf_xdp_output"
        ) {
            continue;
        }
        let f = call.field("function").unwrap();
        explained.push((f.start_byte(), f.end_byte()));
        if compat::in_own_helper(cx, call) {
            continue;
        }
        if name == "bpf_perf_event_output"
            && let Some(sites) = wrapper::through_wrapper(cx, call)
        {
            if cx.opts.strategy == Strategy::Compat {
                compat::refuse(
                    cx,
                    call.start_byte(),
                    "this output goes through the program's own wrapper, its map a parameter"
                        .to_string(),
                );
            }
            outputs.extend(sites);
            continue;
        }
        let offered = cands.len();
        if let Some(site) = output_call(cx, call, name, &mut cands, &mut packets) {
            counters::written_as_counters(cx, &site, counters);
            if cands.len() > offered {
                of_cand.push(outputs.len());
            }
            outputs.push(site);
        }
    }
    packet::plan(cx, packets);
    // A stack event the reservation made a pointer is reached with `->`.
    for (converted, i) in reserve::settle(cx, cands, out).into_iter().zip(of_cand) {
        if let (true, Some(Ok(site))) = (converted, &mut outputs[i].cpu) {
            site.arrow = true;
        }
    }
    outputs
}

fn output_call<'t>(
    cx: &mut Ctx<'_, 't>,
    call: Node<'t>,
    name: &str,
    cands: &mut Vec<reserve::Candidate<'t>>,
    packets: &mut Vec<packet::PacketSite>,
) -> Option<OutputSite> {
    let (args, mut site) = output_site(cx, call, name)?;
    if name != "bpf_perf_event_output" {
        cx.report(
            call.start_byte(),
            Rule::SkbXdpOutput,
            format!("{name}() appends packet data to the event written to `{}`; the ring buffer has no such helper", site.map),
            "copy the packet bytes the consumer needs into the event (bpf_skb_load_bytes() in tc programs, bpf_probe_read_kernel() from skb->data in tracing programs) and migrate by hand",
        );
        return Some(site);
    }
    match flags(cx, call, &args, &site.map) {
        Flags::CurrentCpu => {
            site.cpu = Some(cpu_site::cpu_site(cx, call, args[3], args[4]));
            offer_copy(cx, call, &args, &site.map, cands);
        }
        Flags::Packet if cx.opts.strategy == Strategy::Compat => {
            compat::refuse(
                cx,
                args[2].0,
                format!(
                    "the output to `{}` appends packet bytes (CTXLEN flags)",
                    site.map
                ),
            );
        }
        Flags::Packet => {
            if let Some(p) =
                packet::packet_site(cx, call, &args, &site.map, packet::Dialect::Libbpf)
            {
                site.cpu = Some(Err((
                    args[3].0,
                    "the event is followed by packet bytes in the record, so a CPU field cannot be added at its end".to_string(),
                )));
                packets.push(p);
            }
        }
        Flags::Refused => {}
    }
    Some(site)
}

/// The call's arguments and its map, or `None` (refused) when it does not parse, does not
/// have five arguments, or does not name its map (`&map`).
fn output_site(cx: &mut Ctx, call: Node, name: &str) -> Option<(Vec<(usize, usize)>, OutputSite)> {
    let src = cx.src();
    let args = c::arg_spans(call);
    let argt = |i: usize| &src[args[i].0..args[i].1];
    if cx.has_error_in(call.start_byte(), call.end_byte()) {
        cx.report(
            call.start_byte(),
            Rule::UnsupportedForm,
            format!("this {name}() call does not parse as C"),
            "bpf-migrate edits only code it can parse; check the macros around this call",
        );
        return None;
    }
    let map_arg = 1;
    if args.len() != 5 {
        cx.report(
            call.start_byte(),
            Rule::UnsupportedForm,
            format!("{name}() called with {} arguments, not 5", args.len()),
            "migrate this call by hand",
        );
        return None;
    }
    let map_text = c::strip_parens(argt(map_arg));
    let Some(map) = map_text
        .strip_prefix('&')
        .map(str::trim)
        .filter(|m| c::is_ident(m))
    else {
        cx.report(
            args[map_arg].0,
            Rule::MapOtherUse,
            format!("{name}() writes to `{map_text}`, not to a map named directly (`&map`)"),
            "bpf-migrate follows maps by name; inline the wrapper that passes the map, or migrate by hand",
        );
        return None;
    };
    let map = map.to_string();
    let map_start = args[map_arg].0 + argt(map_arg).find(map.as_str()).unwrap_or(0);
    let site = OutputSite {
        map_span: (map_start, map_start + map.len()),
        map,
        offset: call.start_byte(),
        cpu: None,
        wrapper: None,
        event: None,
    };
    Some((args, site))
}

/// What the flags of an output ask for.
enum Flags {
    /// The current CPU's buffer.
    CurrentCpu,
    /// Packet bytes appended (CTXLEN bits): `packet` decides.
    Packet,
    /// Anything else, refused.
    Refused,
}

fn flags(cx: &mut Ctx, call: Node, args: &[(usize, usize)], map: &str) -> Flags {
    let flags = &cx.src()[args[2].0..args[2].1];
    let bare = strip_casts(flags);
    if matches!(bare, "BPF_F_CURRENT_CPU" | "BPF_F_INDEX_MASK") {
        return Flags::CurrentCpu;
    }
    if flags.contains("<<")
        || flags.contains("CTXLEN")
        || packet::flags_variable(cx, call, bare).is_some()
    {
        return Flags::Packet;
    } else {
        cx.report(
            args[2].0,
            Rule::OutputFlags,
            format!("the event written to `{map}` goes to the buffer of CPU `{flags}`, not of the current CPU"),
            "a ring buffer is shared by all CPUs; if the CPU matters to user space, put it in the event, then change the flags to BPF_F_CURRENT_CPU and run bpf-migrate again",
        );
    }
    Flags::Refused
}

/// The copy, `bpf_ringbuf_output(&map, data, size, 0)`, offered to the reserve strategy
/// (under compat, `MAP_output(ctx, data, size)`, which no reservation replaces).
fn offer_copy<'t>(
    cx: &mut Ctx<'_, 't>,
    call: Node<'t>,
    args: &[(usize, usize)],
    map: &str,
    cands: &mut Vec<reserve::Candidate<'t>>,
) {
    let src = cx.src();
    let argt = |i: usize| src[args[i].0..args[i].1].to_string();
    let (helper, new_args) = if cx.opts.strategy == Strategy::Compat {
        (compat::output_helper(map), vec![argt(0), argt(3), argt(4)])
    } else {
        let zero = "0".to_string();
        (
            "bpf_ringbuf_output".to_string(),
            vec![argt(1), argt(3), argt(4), zero],
        )
    };
    let text = c::layout_call(src, call.start_byte(), call.end_byte(), &helper, &new_args);
    let copy = Edit::replace(
        call.start_byte(),
        call.end_byte(),
        text,
        Rule::PerfEventOutput,
    );
    reserve::offer(
        cx,
        cands,
        reserve::Candidate {
            call,
            data: args[3],
            size: args[4],
            dialect: reserve::Dialect::Libbpf { map_arg: argt(1) },
            copy,
        },
    );
}

/// `(u64)BPF_F_CURRENT_CPU` → `BPF_F_CURRENT_CPU`.
fn strip_casts(s: &str) -> &str {
    let mut s = c::strip_parens(s);
    loop {
        if s.starts_with('(')
            && let Some(close) = s.find(')')
        {
            let inner = &s[1..close];
            if inner.split_whitespace().all(c::is_ident) || inner.ends_with('*') {
                s = c::strip_parens(&s[close + 1..]);
                continue;
            }
        }
        return s;
    }
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{PERF_MAP, RING_MAP, migrates, refused};
    use crate::rules::Rule;

    /// A tracepoint program whose body is `call` after the pid is read.
    fn program(call: &str) -> String {
        format!(
            "SEC(\"tracepoint/syscalls/sys_enter_execve\")\nint trace_exec(void *ctx)\n{{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\t{call}\n\treturn 0;\n}}\n"
        )
    }

    #[test]
    fn a_call_split_over_lines_is_written_on_one() {
        let before = program(
            "bpf_perf_event_output(ctx, &events,\n\t\t\t      BPF_F_CURRENT_CPU,\n\t\t\t      &pid, sizeof(pid));",
        );
        let after = program("bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);");
        migrates(&[PERF_MAP, &before], &[RING_MAP, &after]);
    }

    #[test]
    fn calls_whose_result_is_assigned_tested_or_returned() {
        let code = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	long err;

	err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	if (err)
		return 1;
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid)) < 0)
		return 1;
	return bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
}
"#;
        let after = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	long err;

	err = bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	if (err)
		return 1;
	if (bpf_ringbuf_output(&events, &pid, sizeof(pid), 0) < 0)
		return 1;
	return bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
}
"#;
        migrates(&[PERF_MAP, code], &[RING_MAP, after]);
    }

    #[test]
    fn flags_cast_or_in_parentheses_and_the_map_in_parentheses() {
        let code = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_perf_event_output(ctx, &events, (u64)BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	bpf_perf_event_output(ctx, &events, (BPF_F_CURRENT_CPU), &pid, sizeof(pid));
	bpf_perf_event_output(ctx, &events, (unsigned long long) BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	bpf_perf_event_output(ctx, &events, BPF_F_INDEX_MASK, &pid, sizeof(pid));
	bpf_perf_event_output(ctx, (&events), BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	return 0;
}
"#;
        let after = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	bpf_ringbuf_output((&events), &pid, sizeof(pid), 0);
	return 0;
}
"#;
        migrates(&[PERF_MAP, code], &[RING_MAP, after]);
    }

    #[test]
    fn a_struct_event_on_the_stack() {
        let event = "struct event {\n\tu32 pid;\n\tchar comm[16];\n};\n";
        let code = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	struct event e = {};

	e.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#;
        let after = code.replace(
            "bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));",
            "bpf_ringbuf_output(&events, &e, sizeof(e), 0);",
        );
        migrates(&[event, PERF_MAP, code], &[event, RING_MAP, &after]);
    }

    #[test]
    fn refuses_the_buffer_of_cpu_0() {
        let code = program("bpf_perf_event_output(ctx, &events, 0, &pid, sizeof(pid));");
        refused(
            &[PERF_MAP, &code],
            Rule::OutputFlags,
            "the event written to `events` goes to the buffer of CPU `0`, not of the current CPU",
        );
    }

    #[test]
    fn refuses_the_buffer_of_a_cpu_chosen_at_run_time() {
        let code = program(
            "bpf_perf_event_output(ctx, &events, bpf_get_smp_processor_id(), &pid, sizeof(pid));",
        );
        refused(
            &[PERF_MAP, &code],
            Rule::OutputFlags,
            "goes to the buffer of CPU `bpf_get_smp_processor_id()`",
        );
    }

    #[test]
    fn refuses_a_context_length_shifted_into_the_flags_of_a_tracepoint() {
        let code = program(
            "bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | ((u64)pid << 32), &pid, sizeof(pid));",
        );
        refused(
            &[PERF_MAP, &code],
            Rule::OutputCtxlen,
            "the packet data appended to the event written to `events` comes from `ctx`, a `void *`",
        );
    }

    #[test]
    fn refuses_a_context_length_masked_into_the_flags() {
        let code = program(
            "bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | (BPF_F_CTXLEN_MASK & 64), &pid, sizeof(pid));",
        );
        refused(
            &[PERF_MAP, &code],
            Rule::OutputCtxlen,
            "the flags `BPF_F_CURRENT_CPU | (BPF_F_CTXLEN_MASK & 64)` append packet data (BPF_F_CTXLEN_MASK bits) to the event written to `events`, but not as",
        );
    }

    #[test]
    fn refuses_bpf_skb_output() {
        let code = r#"SEC("tc")
int on_packet(struct __sk_buff *skb)
{
	u32 len = skb->len;

	bpf_skb_output(skb, &events, BPF_F_CURRENT_CPU, &len, sizeof(len));
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::SkbXdpOutput,
            "bpf_skb_output() appends packet data to the event written to `events`",
        );
    }

    #[test]
    fn refuses_bpf_xdp_output() {
        let code = r#"SEC("fentry/xdp")
int BPF_PROG(on_xdp, struct xdp_buff *xdp)
{
	u32 len = 0;

	bpf_xdp_output(xdp, &events, BPF_F_CURRENT_CPU, &len, sizeof(len));
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::SkbXdpOutput,
            "bpf_xdp_output() appends packet data to the event written to `events`",
        );
    }

    #[test]
    fn refuses_a_call_with_four_arguments() {
        let code = program("bpf_perf_event_output(ctx, &events, &pid, sizeof(pid));");
        refused(
            &[PERF_MAP, &code],
            Rule::UnsupportedForm,
            "bpf_perf_event_output() called with 4 arguments, not 5",
        );
    }

    #[test]
    fn refuses_a_call_that_does_not_parse() {
        let code =
            program("bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid) +);");
        refused(
            &[PERF_MAP, &code],
            Rule::UnsupportedForm,
            "this bpf_perf_event_output() call does not parse as C",
        );
    }

    #[test]
    fn refuses_a_map_it_cannot_follow() {
        // A wrapper's map parameter is followed (`wrapper`), not a variable set from it.
        let code = r#"static __always_inline void emit(void *ctx, void *map, u32 pid)
{
	void *m = map;

	bpf_perf_event_output(ctx, m, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
}

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	emit(ctx, &events, bpf_get_current_pid_tgid() >> 32);
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::MapOtherUse,
            "bpf_perf_event_output() writes to `m`, not to a map named directly (`&map`)",
        );
    }
}
