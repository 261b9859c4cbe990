//! BCC's C dialect (in Python strings or a `src_file`): `BPF_PERF_OUTPUT(name);`,
//! `name.perf_submit(ctx, data, size)`, and `name.perf_submit_skb(ctx, len, data, size)`
//! (a packet sample: `bpf::packet`).

use tree_sitter::Node;

use super::bpf::packet::{self, Dialect};
use super::context::{Analysis, Ctx, MapDef, MapKind, OutputSite, Report, other_map_uses};
use super::options::{Strategy, size_marker};
use super::{compat, reserve};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

/// Identifiers whose every occurrence must be explained by a site this module understood.
const TRIGGERS: &[&str] = &["BPF_PERF_OUTPUT", "perf_submit", "perf_submit_skb"];

pub fn has_trigger(text: &str) -> bool {
    TRIGGERS.iter().any(|t| text.contains(t))
}

/// C of libbpf's kind (programs in `SEC("...")` sections), which BCC C never is: a
/// `BPF_PERF_OUTPUT(name)` there is the program's own macro (`bpf::map_macro`).
pub fn is_libbpf_c(text: &str) -> bool {
    text.contains("SEC(\"")
}

pub fn analyze(cx: &mut Ctx, out: &mut Analysis) {
    let src = cx.src();
    let mut explained: Vec<(usize, usize)> = Vec::new();
    let mut defs: Vec<(String, (usize, usize))> = Vec::new();
    let mut outputs: Vec<OutputSite> = Vec::new();
    let mut cands = Vec::new();
    let mut packets = Vec::new();

    for call in cx.of_kind("call_expression") {
        let Some(f) = call.field("function") else {
            continue;
        };
        match f.kind() {
            "identifier" if c::text(f, src) == "BPF_PERF_OUTPUT" => {
                explained.push((f.start_byte(), f.end_byte()));
                let args = c::arg_spans(call);
                let name = args
                    .first()
                    .filter(|_| args.len() == 1)
                    .and_then(|&(s, e)| cx.name_at(s, e));
                let Some(name) = name else {
                    cx.report(
                        call.start_byte(),
                        Rule::UnsupportedForm,
                        match args.first().map(|&(s, e)| &src[s..e]) {
                            Some(t) if args.len() == 1 && t.contains('%') => format!(
                                "the table's name `{t}` is filled in by the tool's `%` formatting from an argument bpf-migrate cannot follow (a variable bound more than once, a parameter, a call)"
                            ),
                            _ => "BPF_PERF_OUTPUT() takes one table name".to_string(),
                        },
                        "migrate by hand",
                    );
                    continue;
                };
                let (s, e) = args[0];
                // As written: a format field stays one, for the tool's formatting to fill.
                let written = &src[s..e];
                let templated = written != name;
                // Migrated by --strategy compat already: the perf table of its `#ifdef`.
                if !templated
                    && super::lost_counter::mentions(src, &format!("{name}{}", compat::FLAG_SUFFIX))
                {
                    continue;
                }
                // Known even where it is refused: its outputs and reader link to it.
                defs.push((name.clone(), (s, e)));
                if templated && cx.opts.strategy == Strategy::Compat {
                    compat::refuse(
                        cx,
                        call.start_byte(),
                        super::bcc_format::compat_refusal(written),
                    );
                    continue;
                }
                let ring = format!("BPF_RINGBUF_OUTPUT({written}, {})", size_marker(&name));
                let (end, text) = if cx.opts.strategy == Strategy::Compat {
                    match compat::bcc_table(src, call.start_byte(), call.end_byte(), &name, &ring) {
                        Ok(t) => t,
                        Err(why) => {
                            compat::refuse(cx, call.start_byte(), why);
                            continue;
                        }
                    }
                } else {
                    (call.end_byte(), ring)
                };
                cx.edits.push(Edit::replace(
                    call.start_byte(),
                    end,
                    text,
                    Rule::BccPerfOutput,
                ));
            }
            "field_expression" => {
                let Some(field) = f.field("field") else {
                    continue;
                };
                let method = c::text(field, src);
                if !matches!(method, "perf_submit" | "perf_submit_skb") {
                    continue;
                }
                explained.push((field.start_byte(), field.end_byte()));
                if compat::in_own_helper(cx, call) {
                    continue;
                }
                let Some(table) = f.field("argument").filter(|a| a.kind() == "identifier") else {
                    cx.report(
                        call.start_byte(),
                        Rule::MapOtherUse,
                        format!("{method}() is called on an expression, not on a table name"),
                        "migrate by hand",
                    );
                    continue;
                };
                let Some(map) = cx.name_at(table.start_byte(), table.end_byte()) else {
                    cx.report(
                        call.start_byte(),
                        Rule::MapOtherUse,
                        format!(
                            "{method}() is called on `{}`, a table name filled in by the tool's `%` formatting from an argument bpf-migrate cannot follow",
                            c::text(table, src)
                        ),
                        "migrate by hand",
                    );
                    continue;
                };
                let args = c::arg_spans(call);
                let mut site = OutputSite {
                    map: map.clone(),
                    map_span: (table.start_byte(), table.end_byte()),
                    offset: call.start_byte(),
                    // `perf_submit(ctx, data, size)`: where the event could carry the CPU
                    // (None: the call is refused, and says so).
                    cpu: match (method, args.len()) {
                        ("perf_submit", 3) => Some(super::bpf::cpu_site::cpu_site(
                            cx, call, args[1], args[2],
                        )),
                        ("perf_submit_skb", _) => Some(Err((
                            call.start_byte(),
                            "the event is followed by packet bytes in the record, so a CPU field cannot be added at its end".to_string(),
                        ))),
                        _ => None,
                    },
                    wrapper: None,
                    event: None,
                };
                if method == "perf_submit_skb" {
                    let args = c::arg_spans(call);
                    if cx.opts.strategy == Strategy::Compat {
                        compat::refuse(
                            cx,
                            call.start_byte(),
                            format!(
                                "`{map}.perf_submit_skb()` appends packet bytes, which the helper both paths share does not carry"
                            ),
                        );
                    } else if args.len() != 4 {
                        cx.report(
                            call.start_byte(),
                            Rule::UnsupportedForm,
                            format!(
                                "{map}.perf_submit_skb() with {} arguments, not 4",
                                args.len()
                            ),
                            "migrate by hand",
                        );
                    } else if let Some(p) = packet::packet_site(cx, call, &args, &map, Dialect::Bcc)
                    {
                        packets.push(p);
                    }
                } else {
                    site.event = submit(cx, call, f, &map, &mut cands);
                }
                outputs.push(site);
            }
            _ => {}
        }
    }

    packet::plan(cx, packets);
    reserve::settle(cx, cands, out);

    // Any other mention of a perf table: an argument to a helper, a macro.
    let names: Vec<String> = defs
        .iter()
        .map(|d| d.0.clone())
        .chain(outputs.iter().map(|o| o.map.clone()))
        .collect();
    let mut allowed: Vec<(usize, usize)> = defs.iter().map(|d| d.1).collect();
    allowed.extend(outputs.iter().map(|o| o.map_span));
    other_map_uses(
        cx,
        &names,
        &allowed,
        &|t| format!("perf table `{t}` is used here, not only with perf_submit()"),
        "bpf-migrate converts tables whose only uses are BPF_PERF_OUTPUT() and perf_submit(); migrate this use by hand",
    );

    account(cx, &explained);
    for (name, (s, _)) in defs {
        out.maps.push(MapDef {
            name,
            offset: s,
            kind: MapKind::Bcc,
            value_type: None,
        });
    }
    out.outputs.extend(outputs);
}

/// `t.perf_submit(ctx, data, size)` → `t.ringbuf_output(data, size, 0)`.
fn submit<'t>(
    cx: &mut Ctx<'_, 't>,
    call: Node<'t>,
    f: Node<'t>,
    map: &str,
    cands: &mut Vec<reserve::Candidate<'t>>,
) -> Option<(String, usize)> {
    let src = cx.src();
    let args = c::arg_spans(call);
    if args.len() != 3 {
        cx.report(
            call.start_byte(),
            Rule::UnsupportedForm,
            format!("{map}.perf_submit() with {} arguments, not 3", args.len()),
            "migrate by hand",
        );
        return None;
    }
    let arg = |k: usize| src[args[k].0..args[k].1].to_string();
    let table = c::text(f.field("argument").unwrap(), src);
    // A table named by a format field: its C is a template that Python's `%` fills in.
    let templated = table != map;
    if templated && cx.opts.strategy == Strategy::Compat {
        compat::refuse(
            cx,
            call.start_byte(),
            super::bcc_format::compat_refusal(table),
        );
        return None;
    }
    // `ringbuf_output()` takes no context: a context that is a format field goes, and its
    // argument out of the format's with it, or the fields after it would take the wrong ones.
    let ctx_fields: Vec<_> = cx
        .format_fields
        .iter()
        .filter(|x| x.at >= args[0].0 && x.end <= args[0].1)
        .cloned()
        .collect();
    let drop_ctx = match &ctx_fields[..] {
        [] => None,
        [one] if (one.at, one.end) == args[0] => Some(Edit::replace(
            one.remove.0.start,
            one.remove.0.end,
            one.remove.1.clone(),
            Rule::BccPerfSubmit,
        )),
        _ => {
            cx.report(
                args[0].0,
                Rule::UnsupportedForm,
                format!("the context `{}` holds format fields that are not the whole argument, and ringbuf_output() takes no context", arg(0)),
                "migrate by hand",
            );
            return None;
        }
    };
    if cx.opts.strategy == Strategy::Compat {
        // `MAP_output(ctx, data, size)`, the helper `compat` adds before the first function
        // that outputs, taking the event's type.
        let event = match super::bpf::cpu_site::event_type(cx, call, args[1]) {
            Ok(e) => e,
            Err(why) => {
                compat::refuse(
                    cx,
                    args[1].0,
                    format!(
                        "{why}; BCC lays out `b[\"{map}\"].event()` from the type the output sends, so the helper both paths share must take it"
                    ),
                );
                return None;
            }
        };
        let text = c::layout_call(
            src,
            call.start_byte(),
            call.end_byte(),
            &compat::output_helper(map),
            &[arg(0), arg(1), arg(2)],
        );
        cx.edits.push(Edit::replace(
            call.start_byte(),
            call.end_byte(),
            text,
            Rule::CompatOutput,
        ));
        return Some(event);
    }
    let callee = format!("{table}.ringbuf_output");
    let new_args = vec![arg(1), arg(2), "0".to_string()];
    let text = c::layout_call(src, call.start_byte(), call.end_byte(), &callee, &new_args);
    let copy = Edit::replace(
        call.start_byte(),
        call.end_byte(),
        text,
        Rule::BccPerfSubmit,
    );
    cx.edits.extend(drop_ctx);
    if templated {
        // A reservation would write the table's field again (`%s.ringbuf_reserve`), and a
        // field more takes an argument the format does not have: copied.
        if cx.opts.strategy == Strategy::Reserve {
            cx.diag(
                call.start_byte(),
                Rule::ReserveFallback,
                format!("this event is copied into the ring buffer, not reserved in it: the table's name `{table}` is a format field, and a reservation would add another"),
                None,
            );
        }
        cx.edits.push(copy);
        return None;
    }
    reserve::offer(
        cx,
        cands,
        reserve::Candidate {
            call,
            data: args[1],
            size: args[2],
            dialect: reserve::Dialect::Bcc {
                table: table.to_string(),
            },
            copy,
        },
    );
    None
}

fn account(cx: &mut Ctx, explained: &[(usize, usize)]) {
    let src = cx.src();
    for &(t, s, e) in cx.tokens() {
        if t == Tok::Ident
            && TRIGGERS.contains(&&src[s..e])
            && !explained.iter().any(|&(a, b)| s >= a && e <= b)
        {
            cx.report(
                s,
                Rule::UnsupportedForm,
                format!("`{}` is used in a form bpf-migrate does not understand", &src[s..e]),
                "migrate this use by hand, or write it as BPF_PERF_OUTPUT(name); / name.perf_submit(ctx, data, size) and run bpf-migrate again",
            );
        }
    }
}
