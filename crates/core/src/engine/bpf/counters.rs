//! Perf event arrays of counters: a map read with `bpf_perf_event_read*` holds hardware or
//! software counters, not an event stream. Its definition and uses are left as they are; an
//! output call that also writes to it is refused.

use super::super::context::{Ctx, OutputSite, Report};
use crate::lang::c;
use crate::rules::Rule;

/// Helpers that read perf event counters: a perf event array used with them holds counters,
/// not an event stream, and is not ours to convert.
const COUNTER_READERS: &[&str] = &["bpf_perf_event_read", "bpf_perf_event_read_value"];

/// The maps the counter readers are called on (`bpf_perf_event_read(&map, ...)`).
pub(super) fn counter_maps(cx: &Ctx) -> Vec<String> {
    let src = cx.src();
    let mut counters = Vec::new();
    for call in cx.of_kind("call_expression") {
        if let Some(name) = c::call_name(call, src)
            && COUNTER_READERS.contains(&name)
            && let Some(&(s, e)) = c::arg_spans(call).first()
            && let Some(map) = c::strip_parens(&src[s..e]).strip_prefix('&')
        {
            counters.push(map.trim().to_string());
        }
    }
    counters
}

/// Refuses an output call that writes events to a map of counters.
pub(super) fn written_as_counters(cx: &mut Ctx, site: &OutputSite, counters: &[String]) {
    if counters.contains(&site.map) {
        cx.report(
            site.map_span.0,
            Rule::MapOtherUse,
            format!("perf event array `{}` is written here and read as counters elsewhere (bpf_perf_event_read*)", site.map),
            "a map of counters cannot become a ring buffer; give the events a map of their own, then run bpf-migrate again",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{PERF_MAP, RING_MAP, bpf, migrates, refused};
    use crate::engine::Options;
    use crate::engine::testkit::run;
    use crate::rules::Rule;

    const CYCLES: &str = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} cycles SEC(".maps");
"#;

    #[test]
    fn a_counter_array_beside_the_events_is_left_alone() {
        let code = r#"SEC("perf_event")
int on_sample(void *ctx)
{
	struct bpf_perf_event_value v = {};

	bpf_perf_event_read_value(&cycles, BPF_F_CURRENT_CPU, &v, sizeof(v));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &v, sizeof(v));
	return 0;
}
"#;
        let after = code.replace(
            "bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &v, sizeof(v));",
            "bpf_ringbuf_output(&events, &v, sizeof(v), 0);",
        );
        migrates(&[CYCLES, PERF_MAP, code], &[CYCLES, RING_MAP, &after]);
    }

    #[test]
    fn a_program_that_only_reads_counters_is_not_touched() {
        let code = r#"SEC("perf_event")
int on_sample(void *ctx)
{
	u64 n = bpf_perf_event_read(&cycles, BPF_F_CURRENT_CPU);

	bpf_printk("%llu", n);
	return 0;
}
"#;
        let text = bpf(&[CYCLES, code]);
        let (changed, diags) = run(&[("x.bpf.c", &text)], &Options::default());
        assert!(changed.is_empty(), "changed: {:?}", changed.keys());
        assert!(diags.is_empty(), "{diags:?}");
    }

    #[test]
    fn refuses_events_written_to_a_counter_array() {
        let code = r#"SEC("perf_event")
int on_sample(void *ctx)
{
	struct bpf_perf_event_value v = {};

	bpf_perf_event_read_value(&events, BPF_F_CURRENT_CPU, &v, sizeof(v));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &v, sizeof(v));
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::MapOtherUse,
            "perf event array `events` is written here and read as counters elsewhere",
        );
    }
}
