//! Perf event array definitions: BTF (`struct { __uint(type, ...); ... } name SEC(".maps");`,
//! rule perf-map-def) and legacy (`struct bpf_map_def SEC("maps") name = { .type = ... };`,
//! rule legacy-perf-map-def). The type becomes `BPF_MAP_TYPE_RINGBUF`, the key and value go,
//! `max_entries` becomes the ring's size; any other field is refused (map-def-field).

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
use super::super::edits::{delete_member, delete_member_with_comment, own_line};
use super::super::options::size_marker;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;
use crate::source::{indent_at, line_end_incl, line_start};

pub(super) struct DefSite {
    pub name: String,
    pub name_span: (usize, usize),
    pub legacy: bool,
    /// The struct a BTF definition names as its value (`__type(value, struct event)`).
    pub value_type: Option<String>,
}

/// Every perf event array definition of the file, explained; those of `counters` are
/// recognised and left as they are, and not returned.
pub(super) fn map_defs(
    cx: &mut Ctx,
    counters: &[String],
    explained: &mut Vec<(usize, usize)>,
) -> Vec<DefSite> {
    let mut defs = Vec::new();
    for decl in cx.of_kind("declaration") {
        if let Some(def) =
            btf_map_def(cx, decl, counters).or_else(|| legacy_map_def(cx, decl, counters))
        {
            explained.push((decl.start_byte(), decl.end_byte()));
            if !counters.contains(&def.name) {
                defs.push(def);
            }
        }
    }
    defs
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

/// A member macro of a BTF map definition: `__uint(key, value);`.
pub(super) struct Member {
    pub(super) key: String,
    pub(super) value: (usize, usize),
    /// From the macro name to the `;`.
    pub(super) span: (usize, usize),
}

/// A BTF perf event array definition: its body, members, and which of them is the type.
struct BtfDef<'t> {
    site: DefSite,
    body: Node<'t>,
    members: Vec<Member>,
    ty: usize,
}

/// A BTF perf event array definition, its edits planned unless it is one of `counters`
/// (read with `bpf_perf_event_read_value`: it is recognised, and left as it is).
fn btf_map_def(cx: &mut Ctx, decl: Node, counters: &[String]) -> Option<DefSite> {
    let def = btf_def(cx.src(), decl)?;
    if !counters.contains(&def.site.name) {
        plan_btf(cx, &def);
    }
    Some(def.site)
}

fn btf_def<'t>(src: &str, decl: Node<'t>) -> Option<BtfDef<'t>> {
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
    let ty = members.iter().position(|m| m.key == "type")?;
    let value = members[ty].value;
    if c::strip_parens(&src[value.0..value.1]) != "BPF_MAP_TYPE_PERF_EVENT_ARRAY" {
        return None;
    }
    let value_type = members
        .iter()
        .find(|m| m.key == "value")
        .and_then(|m| c::strip_parens(&src[m.value.0..m.value.1]).strip_prefix("struct "))
        .map(|t| t.trim().to_string())
        .filter(|t| c::is_ident(t));
    let site = DefSite {
        name,
        name_span: (name_node.start_byte(), name_node.end_byte()),
        legacy: false,
        value_type,
    };
    Some(BtfDef {
        site,
        body,
        members,
        ty,
    })
}

fn plan_btf(cx: &mut Ctx, def: &BtfDef) {
    let src = cx.src();
    let name = &def.site.name;
    let ty_member = &def.members[def.ty];
    let mut edits = vec![Edit::replace(
        ty_member.value.0,
        ty_member.value.1,
        "BPF_MAP_TYPE_RINGBUF",
        Rule::PerfMapDef,
    )];
    let (mut ok, has_max) = btf_member_edits(cx, name, &def.members, &mut edits);
    // Text inside the body that is not a member macro (a macro hiding members, an #ifdef):
    // the definition is not plain enough to edit.
    if let Some(off) = stray_body_text(src, def.body, &def.members) {
        ok = false;
        cx.report(
            off,
            Rule::UnsupportedForm,
            format!("the definition of perf event array `{name}` holds text bpf-migrate does not understand"),
            "write the map with __uint()/__type() members only, or migrate it by hand",
        );
    }
    edits.extend(stale_comments(src, def.body));
    if !has_max {
        edits.push(btf_max_entries(cx, name, ty_member.span));
    }
    if ok {
        cx.edits.extend(edits);
    }
}

/// The edits of the members: key and value deleted, `max_entries` sized; any other member
/// refused. Returns whether all were understood, and whether there was a `max_entries`.
fn btf_member_edits(
    cx: &mut Ctx,
    name: &str,
    members: &[Member],
    edits: &mut Vec<Edit>,
) -> (bool, bool) {
    let src = cx.src();
    let mut ok = true;
    let mut has_max = false;
    for m in members {
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
                    size_marker(name),
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
    (ok, has_max)
}

/// Comments in the definition about the perf buffer (a lint suppression such as
/// `bpflint: disable=perfbuf-usage`) are stale once it is a ring buffer: their lines go.
fn stale_comments(src: &str, body: Node) -> Vec<Edit> {
    let mut edits = Vec::new();
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
    edits
}

/// `__uint(max_entries, size);` after the type member (`s..semi`): on a line of its own when
/// the type has one.
fn btf_max_entries(cx: &Ctx, name: &str, (s, semi): (usize, usize)) -> Edit {
    let src = cx.src();
    if own_line(src, s, semi) {
        let indent = indent_at(src, s).to_string();
        Edit::insert(
            line_end_incl(src, semi),
            format!("{indent}__uint(max_entries, {});\n", size_marker(name)),
            Rule::PerfMapDef,
        )
    } else {
        Edit::insert(
            semi,
            format!(" __uint(max_entries, {});", size_marker(name)),
            Rule::PerfMapDef,
        )
    }
}

/// The `__uint(k, v);`-style members between `start` and `end`.
pub(super) fn btf_members(src: &str, start: usize, end: usize) -> Vec<Member> {
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

/// A designated initialiser of a legacy definition: `.field = value,`.
struct Pair<'t> {
    field: String,
    value: Node<'t>,
    /// The pair with its trailing comma.
    span: (usize, usize),
}

/// A legacy perf event array definition: its initialisers, and which of them is the type.
struct LegacyDef<'t> {
    site: DefSite,
    pairs: Vec<Pair<'t>>,
    ty: usize,
}

/// A `struct bpf_map_def SEC("maps")` perf event array, as `btf_map_def`.
fn legacy_map_def(cx: &mut Ctx, decl: Node, counters: &[String]) -> Option<DefSite> {
    let def = legacy_def(cx.src(), decl)?;
    if !counters.contains(&def.site.name) {
        plan_legacy(cx, &def);
    }
    Some(def.site)
}

fn legacy_def<'t>(src: &str, decl: Node<'t>) -> Option<LegacyDef<'t>> {
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
    let pairs = initializer_pairs(src, list)?;
    let ty = pairs.iter().position(|p| p.field == "type")?;
    if c::strip_parens(c::text(pairs[ty].value, src)) != "BPF_MAP_TYPE_PERF_EVENT_ARRAY" {
        return None;
    }
    let site = DefSite {
        name,
        name_span: (name_node.start_byte(), name_node.end_byte()),
        legacy: true,
        value_type: None,
    };
    Some(LegacyDef { site, pairs, ty })
}

/// The designated initialisers of `list`; `None` when one has no value.
fn initializer_pairs<'t>(src: &str, list: Node<'t>) -> Option<Vec<Pair<'t>>> {
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
        pairs.push(Pair {
            field,
            value,
            span: (p.start_byte(), end),
        });
    }
    Some(pairs)
}

fn plan_legacy(cx: &mut Ctx, def: &LegacyDef) {
    let ty = &def.pairs[def.ty];
    let mut edits = vec![Edit::replace(
        ty.value.start_byte(),
        ty.value.end_byte(),
        "BPF_MAP_TYPE_RINGBUF",
        Rule::LegacyPerfMapDef,
    )];
    let (ok, has_max) = legacy_field_edits(cx, &def.site.name, &def.pairs, &mut edits);
    if !has_max {
        edits.push(legacy_max_entries(cx, &def.site.name, ty.span));
    }
    if ok {
        cx.edits.extend(edits);
    }
}

/// As `btf_member_edits`, for the initialisers; `.map_flags = 0` is kept.
fn legacy_field_edits(
    cx: &mut Ctx,
    name: &str,
    pairs: &[Pair],
    edits: &mut Vec<Edit>,
) -> (bool, bool) {
    let src = cx.src();
    let mut ok = true;
    let mut has_max = false;
    for Pair { field, value, span } in pairs {
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
                    size_marker(name),
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
    (ok, has_max)
}

/// `.max_entries = size,` after the type's initialiser (`s..e`, its comma included when it
/// has one): on a line of its own when the type has one.
fn legacy_max_entries(cx: &Ctx, name: &str, (s, e): (usize, usize)) -> Edit {
    let src = cx.src();
    let has_comma = src[s..e].trim_end().ends_with(',');
    if own_line(src, s, e) && has_comma {
        let indent = indent_at(src, s).to_string();
        Edit::insert(
            line_end_incl(src, e),
            format!("{indent}.max_entries = {},\n", size_marker(name)),
            Rule::LegacyPerfMapDef,
        )
    } else if has_comma {
        Edit::insert(
            e,
            format!(" .max_entries = {},", size_marker(name)),
            Rule::LegacyPerfMapDef,
        )
    } else {
        Edit::insert(
            e,
            format!(", .max_entries = {}", size_marker(name)),
            Rule::LegacyPerfMapDef,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{
        OUTPUT, OUTPUT_AFTER, PERF_MAP, RING_MAP, migrates, migrates_with, refused,
    };
    use crate::engine::Options;
    use crate::rules::Rule;

    #[test]
    fn btf_key_and_value_sizes_go_and_max_entries_is_added() {
        migrates(&[PERF_MAP, OUTPUT], &[RING_MAP, OUTPUT_AFTER]);
    }

    #[test]
    fn btf_key_and_value_types_go_and_max_entries_is_resized() {
        let other = r#"struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} seen SEC(".maps");
"#;
        let map = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__type(key, int);
	__type(value, u32);
	__uint(max_entries, 64);
} events SEC(".maps");
"#;
        migrates(&[other, map, OUTPUT], &[other, RING_MAP, OUTPUT_AFTER]);
    }

    #[test]
    fn btf_definition_on_one_line() {
        let map =
            "struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); } events SEC(\".maps\");\n";
        let after = "struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 256 * 1024); } events SEC(\".maps\");\n";
        migrates(&[map, OUTPUT], &[after, OUTPUT_AFTER]);
    }

    #[test]
    fn btf_comments_on_the_perf_buffer_and_the_key_go() {
        let map = r#"struct {
	/* bpflint: disable=perfbuf-usage */
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	/* one buffer per CPU: */
	// the key is the CPU
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32)); /* an fd */
} events SEC(".maps");
"#;
        migrates(&[map, OUTPUT], &[RING_MAP, OUTPUT_AFTER]);
    }

    #[test]
    fn btf_ring_size_from_the_options() {
        let opts = Options {
            ring_size: 1 << 20,
            ring_size_given: true,
            ..Options::default()
        };
        let after = RING_MAP.replace("256 * 1024", "1 * 1024 * 1024");
        migrates_with(&[PERF_MAP, OUTPUT], &[&after, OUTPUT_AFTER], &opts);
    }

    #[test]
    fn legacy_key_and_value_sizes_go_and_max_entries_is_resized() {
        let map = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
	.key_size = sizeof(int),
	.value_size = sizeof(u32),
	.max_entries = 128,
};
"#;
        let after = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.max_entries = 256 * 1024,
};
"#;
        migrates(&[map, OUTPUT], &[after, OUTPUT_AFTER]);
    }

    #[test]
    fn legacy_without_max_entries_or_a_trailing_comma() {
        let map = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
	.key_size = sizeof(int),
	.value_size = sizeof(u32)
};
"#;
        let after = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.max_entries = 256 * 1024,
};
"#;
        migrates(&[map, OUTPUT], &[after, OUTPUT_AFTER]);
    }

    #[test]
    fn legacy_type_alone_without_a_comma() {
        let map = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY
};
"#;
        let after = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_RINGBUF, .max_entries = 256 * 1024
};
"#;
        migrates(&[map, OUTPUT], &[after, OUTPUT_AFTER]);
    }

    #[test]
    fn legacy_definition_on_one_line() {
        let map = "struct bpf_map_def SEC(\"maps\") events = { .type = BPF_MAP_TYPE_PERF_EVENT_ARRAY, .key_size = 4, .value_size = 4 };\n";
        let after = "struct bpf_map_def SEC(\"maps\") events = { .type = BPF_MAP_TYPE_RINGBUF, .max_entries = 256 * 1024, };\n";
        migrates(&[map, OUTPUT], &[after, OUTPUT_AFTER]);
    }

    #[test]
    fn legacy_map_flags_of_zero_are_kept() {
        let map = "struct bpf_map_def SEC(\"maps\") events = { .type = BPF_MAP_TYPE_PERF_EVENT_ARRAY, .map_flags = 0 };\n";
        let after = "struct bpf_map_def SEC(\"maps\") events = { .type = BPF_MAP_TYPE_RINGBUF, .max_entries = 256 * 1024, .map_flags = 0 };\n";
        migrates(&[map, OUTPUT], &[after, OUTPUT_AFTER]);
    }

    #[test]
    fn refuses_a_pinned_btf_map() {
        let map = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");
"#;
        refused(
            &[map, OUTPUT],
            Rule::MapDefField,
            "perf event array `events` sets `pinning`",
        );
    }

    #[test]
    fn refuses_legacy_map_flags() {
        let map = r#"struct bpf_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
	.key_size = sizeof(int),
	.value_size = sizeof(u32),
	.map_flags = BPF_F_NUMA_NODE,
};
"#;
        refused(
            &[map, OUTPUT],
            Rule::MapDefField,
            "perf event array `events` sets `.map_flags`",
        );
    }

    #[test]
    fn refuses_a_macro_among_the_members() {
        let map = r#"#define PERF_KEYS __uint(key_size, sizeof(u32));

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	PERF_KEYS
} events SEC(".maps");
"#;
        refused(
            &[map, OUTPUT],
            Rule::UnsupportedForm,
            "the definition of perf event array `events` holds text bpf-migrate does not understand",
        );
    }

    #[test]
    fn refuses_an_ifdef_among_the_members() {
        let map = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
#ifdef BIG
	__uint(max_entries, 128);
#endif
} events SEC(".maps");
"#;
        refused(
            &[map, OUTPUT],
            Rule::UnsupportedForm,
            "the definition of perf event array `events` holds text bpf-migrate does not understand",
        );
    }
}
