//! The BPF side: perf event array map definitions and `bpf_perf_event_output` calls.
//!
//! `analyze` is the dispatch; each site has a handler of its own:
//!
//! | module | site |
//! |---|---|
//! | `cpu_site` | where an output's event could carry the CPU, for a callback that reads it |
//! | `counters` | perf event arrays read with `bpf_perf_event_read*`: counters, left alone |
//! | `map_def` | BTF (`struct { __uint(type, ...); } name SEC(".maps")`) and legacy (`struct bpf_map_def SEC("maps")`) definitions |
//! | `map_macro` | the program's own macros that define perf event arrays, and the file-scope calls that may use them (linked by `engine::macro_maps`) |
//! | `output` | `bpf_perf_event_output()` calls, and `bpf_skb_output`/`bpf_xdp_output` (refused) |
//! | `packet` | `bpf_perf_event_output()` calls that append packet bytes (CTXLEN flags) from an skb or XDP context: a per-CPU buffer and a helper |
//! | `uses` | any other use of a perf map, and trigger words no site explains |
//! | `nmi` | the warning for programs that run in NMI context |

mod counters;
pub(crate) mod cpu_site;
mod macro_output;
mod map_def;
pub(in crate::engine) mod map_macro;
mod nmi;
mod output;
pub(in crate::engine) mod packet;
#[cfg(test)]
pub(in crate::engine) mod snippets;
mod uses;
mod wrapper;

use super::context::{Analysis, Ctx, MapDef, MapKind};

pub use uses::account_triggers;

/// Identifiers whose every occurrence must be explained by a site this module understood.
const TRIGGERS: &[&str] = &[
    "BPF_MAP_TYPE_PERF_EVENT_ARRAY",
    "bpf_perf_event_output",
    "bpf_skb_output",
    "bpf_xdp_output",
];

pub fn analyze(cx: &mut Ctx, out: &mut Analysis) {
    let mut explained: Vec<(usize, usize)> = Vec::new();
    // Counter arrays are left alone, definition and uses.
    let counters = counters::counter_maps(cx);
    let defs = map_def::map_defs(cx, &counters, &mut explained);
    let mut outputs = output::output_calls(cx, &counters, &mut explained, out);
    outputs.extend(macro_output::macro_outputs(
        cx,
        &counters,
        &mut explained,
        out,
    ));
    out.map_macros = map_macro::macros(cx);
    out.top_calls = map_macro::top_calls(cx);
    // A map this file writes to, named in a file-scope call: defined through a macro, which
    // linking looks up (and refuses the call, if it is not one).
    let through_macros: Vec<(usize, usize)> = out
        .top_calls
        .iter()
        .flat_map(|c| c.args.iter().copied())
        .filter(|&(s, e)| {
            let arg = &cx.src()[s..e];
            outputs.iter().any(|o| o.map == arg) && !defs.iter().any(|d| d.name == arg)
        })
        .collect();
    uses::other_uses(cx, &defs, &outputs, &counters, &through_macros);

    account_triggers(cx, &explained, TRIGGERS);

    if !outputs.is_empty() || !defs.is_empty() {
        nmi::nmi_warning(cx);
    }
    for d in defs {
        out.maps.push(MapDef {
            name: d.name,
            offset: d.name_span.0,
            kind: if d.legacy {
                MapKind::Legacy
            } else {
                MapKind::Btf
            },
            value_type: d.value_type,
        });
    }
    out.outputs.extend(outputs);
}
