//! The BPF side: perf event array map definitions and `bpf_perf_event_output` calls.

use tree_sitter::Node;

use super::context::{Analysis, Ctx, MapDef, MapKind, OutputSite, Report, other_map_uses};
use super::edits::{delete_member, delete_member_with_comment, own_line};
use super::reserve;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;
use crate::source::{indent_at, line_end_incl, line_start};

/// Identifiers whose every occurrence must be explained by a site this module understood.
const TRIGGERS: &[&str] = &[
    "BPF_MAP_TYPE_PERF_EVENT_ARRAY",
    "bpf_perf_event_output",
    "bpf_skb_output",
    "bpf_xdp_output",
];

/// Helpers that read perf event counters: a perf event array used with them holds counters,
/// not an event stream, and is not ours to convert.
const COUNTER_READERS: &[&str] = &["bpf_perf_event_read", "bpf_perf_event_read_value"];

pub fn analyze(cx: &mut Ctx, out: &mut Analysis) {
    let src = cx.src();
    let mut explained: Vec<(usize, usize)> = Vec::new();
    let mut defs = Vec::new();

    // Counter arrays are left alone, definition and uses.
    let mut counters = Vec::new();
    for call in cx.of_kind("call_expression") {
        if let Some(name) = c::call_name(call, src)
            && COUNTER_READERS.contains(&name)
            && let Some(&(s, e)) = c::arg_spans(call, src).first()
            && let Some(map) = c::strip_parens(&src[s..e]).strip_prefix('&')
        {
            counters.push(map.trim().to_string());
        }
    }

    for decl in cx.of_kind("declaration") {
        if let Some(def) =
            btf_map_def(cx, decl, &counters).or_else(|| legacy_map_def(cx, decl, &counters))
        {
            explained.push((decl.start_byte(), decl.end_byte()));
            if !counters.contains(&def.name) {
                defs.push(def);
            }
        }
    }

    let mut outputs = Vec::new();
    let mut cands = Vec::new();
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
        if let Some(site) = output_call(cx, call, name, &mut cands) {
            if counters.contains(&site.map) {
                cx.report(
                    site.map_span.0,
                    Rule::MapOtherUse,
                    format!("perf event array `{}` is written here and read as counters elsewhere (bpf_perf_event_read*)", site.map),
                    "a map of counters cannot become a ring buffer; give the events a map of their own, then run bpf-migrate again",
                );
            }
            outputs.push(site);
        }
    }
    reserve::settle(cx, cands, out);

    // Every other mention of a perf map of this file, or of one this file writes to, is a use
    // bpf-migrate does not know how to carry over (a wrapper taking the map as an argument, a
    // lookup, a second program type).
    let mut names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    names.extend(outputs.iter().map(|o: &OutputSite| o.map.clone()));
    names.sort();
    names.dedup();
    names.retain(|n| !counters.contains(n));
    let mut allowed: Vec<(usize, usize)> = defs.iter().map(|d| d.name_span).collect();
    allowed.extend(outputs.iter().map(|o| o.map_span));
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

    account_triggers(cx, &explained, TRIGGERS);

    if !outputs.is_empty() || !defs.is_empty() {
        nmi_warning(cx);
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
        });
    }
    out.outputs.extend(outputs);
}

struct DefSite {
    name: String,
    name_span: (usize, usize),
    legacy: bool,
}

/// A member macro of a BTF map definition: `__uint(key, value);`.
struct Member {
    key: String,
    value: (usize, usize),
    /// From the macro name to the `;`.
    span: (usize, usize),
}

/// A BTF perf event array definition, its edits planned unless it is one of `counters`
/// (read with `bpf_perf_event_read_value`: it is recognised, and left as it is).
fn btf_map_def(cx: &mut Ctx, decl: Node, counters: &[String]) -> Option<DefSite> {
    let src = cx.src();
    let ty = decl.field("type")?;
    if ty.kind() != "struct_specifier" {
        return None;
    }
    let body = ty.field("body")?;
    if !c::text(body, src).contains("BPF_MAP_TYPE_PERF_EVENT_ARRAY") {
        return None;
    }
    let declarator = decl.field("declarator")?;
    let name_node = declarator_name(declarator)?;
    let name = c::text(name_node, src).to_string();
    let members = btf_members(src, body.start_byte() + 1, body.end_byte() - 1);
    let ty_member = members.iter().find(|m| m.key == "type")?;
    if c::strip_parens(&src[ty_member.value.0..ty_member.value.1])
        != "BPF_MAP_TYPE_PERF_EVENT_ARRAY"
    {
        return None;
    }
    let site = DefSite {
        name,
        name_span: (name_node.start_byte(), name_node.end_byte()),
        legacy: false,
    };
    if counters.contains(&site.name) {
        return Some(site);
    }
    let name = &site.name;
    let mut edits = vec![Edit::replace(
        ty_member.value.0,
        ty_member.value.1,
        "BPF_MAP_TYPE_RINGBUF",
        Rule::PerfMapDef,
    )];
    let mut ok = true;
    let mut has_max = false;
    for m in &members {
        match m.key.as_str() {
            "type" => {}
            "key_size" | "value_size" | "key" | "value" => {
                edits.push(delete_member_with_comment(src, m.span, Rule::PerfMapDef));
            }
            "max_entries" => {
                has_max = true;
                edits.push(Edit::replace(
                    m.value.0,
                    m.value.1,
                    cx.size_expr(),
                    Rule::PerfMapDef,
                ));
            }
            other => {
                ok = false;
                cx.report(
                    m.span.0,
                    Rule::MapDefField,
                    format!("perf event array `{name}` sets `{other}`, which a ring buffer does not take over as it is"),
                    "a pinned or flagged perf map is shared with other programs or loaders; migrate all of them together by hand",
                );
            }
        }
    }
    // Text inside the body that is not a member macro (a macro hiding members, an #ifdef):
    // the definition is not plain enough to edit.
    if let Some(off) = stray_body_text(src, body, &members) {
        ok = false;
        cx.report(
            off,
            Rule::UnsupportedForm,
            format!("the definition of perf event array `{name}` holds text bpf-migrate does not understand"),
            "write the map with __uint()/__type() members only, or migrate it by hand",
        );
    }
    // Comments in the definition about the perf buffer (a lint suppression such as
    // `bpflint: disable=perfbuf-usage`) are stale once it is a ring buffer.
    for &(t, cs, ce) in &c::lex(src, body.start_byte() + 1..body.end_byte() - 1) {
        let text = &src[cs..ce];
        let lower = text.to_ascii_lowercase();
        if t == Tok::Comment
            && own_line(src, cs, ce)
            && [
                "perfbuf",
                "perf buffer",
                "perf_buffer",
                "perf_event_array",
                "perf event array",
            ]
            .iter()
            .any(|w| lower.contains(w))
        {
            edits.push(Edit::delete(
                line_start(src, cs),
                line_end_incl(src, ce.saturating_sub(1)),
                Rule::PerfMapDef,
            ));
        }
    }
    if !has_max {
        let (s, e) = ty_member.span;
        let semi = e;
        if own_line(src, s, semi) {
            let indent = indent_at(src, s).to_string();
            edits.push(Edit::insert(
                line_end_incl(src, semi),
                format!("{indent}__uint(max_entries, {});\n", cx.size_expr()),
                Rule::PerfMapDef,
            ));
        } else {
            edits.push(Edit::insert(
                semi,
                format!(" __uint(max_entries, {});", cx.size_expr()),
                Rule::PerfMapDef,
            ));
        }
    }
    if ok {
        cx.edits.extend(edits);
    }
    Some(site)
}

fn declarator_name(mut n: Node) -> Option<Node> {
    loop {
        match n.kind() {
            "identifier" => return Some(n),
            "init_declarator" | "attributed_declarator" => {
                n = n.field("declarator").or_else(|| n.named_child(0))?;
            }
            _ => return None,
        }
    }
}

/// The `__uint(k, v);`-style members between `start` and `end`.
fn btf_members(src: &str, start: usize, end: usize) -> Vec<Member> {
    let toks = c::lex(src, start..end);
    let mut out = Vec::new();
    let mut k = 0;
    while k < toks.len() {
        let (t, s, e) = toks[k];
        if t == Tok::Ident
            && matches!(&src[s..e], "__uint" | "__type" | "__ulong" | "__array")
            && matches!(toks.get(k + 1), Some((Tok::Punct(b'('), _, _)))
            && let Some(close) = c::matching_paren(&toks, k + 1)
        {
            // key: the first token; value: from after the first comma to the close paren.
            let comma = (k + 2..close).find(|&j| toks[j].0 == Tok::Punct(b','));
            let key = src[toks[k + 2].1..toks[k + 2].2].to_string();
            let value = match comma {
                Some(j) if j + 1 < close => (toks[j + 1].1, toks[close - 1].2),
                _ => (toks[close].1, toks[close].1),
            };
            let mut span_end = toks[close].2;
            if matches!(toks.get(close + 1), Some((Tok::Punct(b';'), _, _))) {
                span_end = toks[close + 1].2;
                k = close + 2;
            } else {
                k = close + 1;
            }
            out.push(Member {
                key,
                value,
                span: (s, span_end),
            });
            continue;
        }
        k += 1;
    }
    out
}

fn stray_body_text(src: &str, body: Node, members: &[Member]) -> Option<usize> {
    let toks = c::lex(src, body.start_byte() + 1..body.end_byte() - 1);
    toks.iter()
        .filter(|t| t.0 != Tok::Comment)
        .find(|t| !members.iter().any(|m| t.1 >= m.span.0 && t.2 <= m.span.1))
        .map(|t| t.1)
}

/// A `struct bpf_map_def SEC("maps")` perf event array, as `btf_map_def`.
fn legacy_map_def(cx: &mut Ctx, decl: Node, counters: &[String]) -> Option<DefSite> {
    let src = cx.src();
    let ty = decl.field("type")?;
    if ty.kind() != "struct_specifier"
        || ty.field("name").map(|n| c::text(n, src)) != Some("bpf_map_def")
    {
        return None;
    }
    let init = decl.field("declarator")?;
    if init.kind() != "init_declarator" {
        return None;
    }
    let name_node = declarator_name(init.field("declarator")?)?;
    let list = init.field("value")?;
    if list.kind() != "initializer_list" {
        return None;
    }
    let name = c::text(name_node, src).to_string();
    let mut pairs = Vec::new();
    let mut cursor = list.walk();
    for p in list.named_children(&mut cursor) {
        if p.kind() != "initializer_pair" {
            continue;
        }
        let field = p
            .field("designator")
            .map(|d| c::text(d, src).trim_start_matches('.').to_string())
            .unwrap_or_default();
        let value = p.field("value")?;
        // Extend the pair over its trailing comma.
        let mut end = p.end_byte();
        if let Some(next) = p.next_sibling()
            && next.kind() == ","
        {
            end = next.end_byte();
        }
        pairs.push((field, value, (p.start_byte(), end)));
    }
    let (_, ty_value, ty_span) = pairs.iter().find(|(f, _, _)| f == "type")?;
    if c::strip_parens(c::text(*ty_value, src)) != "BPF_MAP_TYPE_PERF_EVENT_ARRAY" {
        return None;
    }
    let site = DefSite {
        name,
        name_span: (name_node.start_byte(), name_node.end_byte()),
        legacy: true,
    };
    if counters.contains(&site.name) {
        return Some(site);
    }
    let name = &site.name;
    let mut edits = vec![Edit::replace(
        ty_value.start_byte(),
        ty_value.end_byte(),
        "BPF_MAP_TYPE_RINGBUF",
        Rule::LegacyPerfMapDef,
    )];
    let mut ok = true;
    let mut has_max = false;
    for (field, value, span) in &pairs {
        match field.as_str() {
            "type" => {}
            "key_size" | "value_size" => {
                edits.push(delete_member(src, *span, Rule::LegacyPerfMapDef))
            }
            "max_entries" => {
                has_max = true;
                edits.push(Edit::replace(
                    value.start_byte(),
                    value.end_byte(),
                    cx.size_expr(),
                    Rule::LegacyPerfMapDef,
                ));
            }
            "map_flags" if c::strip_parens(c::text(*value, src)) == "0" => {}
            other => {
                ok = false;
                cx.report(
                    span.0,
                    Rule::MapDefField,
                    format!("perf event array `{name}` sets `.{other}`, which a ring buffer does not take over as it is"),
                    "migrate this map by hand",
                );
            }
        }
    }
    if !has_max {
        let (s, e) = *ty_span;
        let has_comma = src[s..e].trim_end().ends_with(',');
        if own_line(src, s, e) && has_comma {
            let indent = indent_at(src, s).to_string();
            edits.push(Edit::insert(
                line_end_incl(src, e),
                format!("{indent}.max_entries = {},\n", cx.size_expr()),
                Rule::LegacyPerfMapDef,
            ));
        } else if has_comma {
            edits.push(Edit::insert(
                e,
                format!(" .max_entries = {},", cx.size_expr()),
                Rule::LegacyPerfMapDef,
            ));
        } else {
            edits.push(Edit::insert(
                e,
                format!(", .max_entries = {}", cx.size_expr()),
                Rule::LegacyPerfMapDef,
            ));
        }
    }
    if ok {
        cx.edits.extend(edits);
    }
    Some(site)
}

fn output_call<'t>(
    cx: &mut Ctx<'_, 't>,
    call: Node<'t>,
    name: &str,
    cands: &mut Vec<reserve::Candidate<'t>>,
) -> Option<OutputSite> {
    let src = cx.src();
    let args = c::arg_spans(call, src);
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
    let map_span = (map_start, map_start + map.len());
    if name != "bpf_perf_event_output" {
        cx.report(
            call.start_byte(),
            Rule::SkbXdpOutput,
            format!("{name}() appends packet data to the event written to `{map}`; the ring buffer has no such helper"),
            "copy the packet bytes the consumer needs into the event (bpf_skb_load_bytes() in tc programs, bpf_probe_read_kernel() from skb->data in tracing programs) and migrate by hand",
        );
        return Some(OutputSite {
            map,
            map_span,
            offset: call.start_byte(),
        });
    }
    let flags = argt(2);
    let bare = strip_casts(flags);
    if !matches!(bare, "BPF_F_CURRENT_CPU" | "BPF_F_INDEX_MASK") {
        if flags.contains("<<") || flags.contains("CTXLEN") {
            cx.report(
                args[2].0,
                Rule::OutputCtxlen,
                format!("the flags `{flags}` append packet data (BPF_F_CTXLEN_MASK bits) to the event written to `{map}`"),
                "the ring buffer cannot append packet data: copy the bytes into the event with bpf_skb_load_bytes() and migrate by hand",
            );
        } else {
            cx.report(
                args[2].0,
                Rule::OutputFlags,
                format!("the event written to `{map}` goes to the buffer of CPU `{flags}`, not of the current CPU"),
                "a ring buffer is shared by all CPUs; if the CPU matters to user space, put it in the event, then change the flags to BPF_F_CURRENT_CPU and run bpf-migrate again",
            );
        }
        return Some(OutputSite {
            map,
            map_span,
            offset: call.start_byte(),
        });
    }
    let new_args = vec![
        argt(1).to_string(),
        argt(3).to_string(),
        argt(4).to_string(),
        "0".to_string(),
    ];
    let text = c::layout_call(
        src,
        call.start_byte(),
        call.end_byte(),
        "bpf_ringbuf_output",
        &new_args,
    );
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
            dialect: reserve::Dialect::Libbpf {
                map_arg: argt(1).to_string(),
            },
            copy,
        },
    );
    Some(OutputSite {
        map,
        map_span,
        offset: call.start_byte(),
    })
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

/// Programs attached to perf events run in NMI context, where a ring buffer reservation can
/// fail under contention even when the ring has room.
fn nmi_warning(cx: &mut Ctx) {
    let src = cx.src();
    let toks = cx.tokens();
    for w in toks.windows(3) {
        if w[0].0 == Tok::Ident
            && matches!(&src[w[0].1..w[0].2], "SEC" | "__section")
            && w[2].0 == Tok::Str
            && src[w[2].1..w[2].2]
                .trim_matches('"')
                .starts_with("perf_event")
        {
            cx.diag(
                w[0].1,
                Rule::NmiContext,
                "this program runs in NMI context (perf_event): ring buffer writes can fail under contention even when the ring has room",
                Some("check the return value of bpf_ringbuf_output() and count failures in a map, so drops show"),
            );
        }
    }
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
