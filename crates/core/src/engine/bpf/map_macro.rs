//! Perf event arrays defined through the program's own macro: `#define PERF_MAP(name) struct {
//! __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); ... } name SEC(".maps")` (or a body that is one
//! call of another macro given the type, `BPF_MAP(_name, BPF_MAP_TYPE_PERF_EVENT_ARRAY, ...)`),
//! then `PERF_MAP(events);` at file scope. Analysis records such macros and every file-scope
//! call (`MapMacro`, `TopCall`); linking (`engine::macro_maps`) makes each call of one a map
//! definition and rewrites the macro's body once, with `ring_body`.

use super::super::context::{Ctx, MapMacro, TopCall};
use super::map_def::btf_members;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;
use crate::source::{indent_at, line_start};

const PERF: &str = "BPF_MAP_TYPE_PERF_EVENT_ARRAY";

/// The function-like macros of the file that look like a perf event array's definition. The
/// type in their bodies is still reported here, as any use in a macro is; linking withdraws
/// that refusal for a macro it rewrites (`engine::macro_maps`).
pub(super) fn macros(cx: &Ctx) -> Vec<MapMacro> {
    let src = cx.src();
    let mut out = Vec::new();
    for def in cx.of_kind("preproc_function_def") {
        let (Some(name), Some(params), Some(value)) = (
            def.field("name"),
            def.field("parameters"),
            def.field("value"),
        ) else {
            continue;
        };
        let body = (value.start_byte(), value.end_byte());
        if !defines_map(src, body) {
            continue;
        }
        let mut cur = params.walk();
        let params = params
            .named_children(&mut cur)
            .map(|p| c::text(p, src).to_string())
            .collect();
        out.push(MapMacro {
            name: c::text(name, src).to_string(),
            params,
            offset: name.start_byte(),
            body,
        });
    }
    out
}

/// Whether a macro body looks like a perf event array's definition: `struct { ... } NAME
/// SEC(".maps")` naming the type, or one call of another macro given the type. Any other use of
/// the type in a macro (a comparison, say) stays a refusal (`uses::account_triggers`).
fn defines_map(src: &str, body: (usize, usize)) -> bool {
    let toks = code_tokens(src, body);
    let word = |k: usize| match toks.get(k) {
        Some(&(Tok::Ident, s, e)) => &src[s..e],
        _ => "",
    };
    let names_type = (0..toks.len()).any(|k| word(k) == PERF);
    let direct = word(0) == "struct" && named_param(src, body).is_some();
    let end = toks.len() - usize::from(matches!(toks.last(), Some((Tok::Punct(b';'), _, _))));
    let call = toks.len() > 3
        && toks[0].0 == Tok::Ident
        && matches!(toks[1].0, Tok::Punct(b'('))
        && c::matching_paren(&toks, 1) == Some(end - 1);
    names_type && (direct || call)
}

/// The file-scope calls `NAME(args);` of the file (map definitions through a macro among
/// them; inside `#if` blocks too), with the spans of their arguments.
pub(super) fn top_calls(cx: &Ctx) -> Vec<TopCall> {
    let src = cx.src();
    let mut out = Vec::new();
    for stmt in cx.of_kind("expression_statement") {
        let mut up = stmt.parent();
        while let Some(p) = up.filter(|p| p.kind().starts_with("preproc_")) {
            up = p.parent();
        }
        if up.is_none_or(|p| p.kind() != "translation_unit") {
            continue;
        }
        let Some(call) = stmt
            .named_child(0)
            .filter(|n| n.kind() == "call_expression")
        else {
            continue;
        };
        let Some(f) = call.field("function").filter(|f| f.kind() == "identifier") else {
            continue;
        };
        out.push(TopCall {
            name: c::text(f, src).to_string(),
            args: c::arg_spans(call),
            offset: call.start_byte(),
        });
    }
    out
}

/// The parameter that names the map a body of the direct form defines: the identifier before
/// its `SEC(".maps")`.
pub fn named_param(src: &str, body: (usize, usize)) -> Option<String> {
    let toks = code_tokens(src, body);
    let sec = toks
        .iter()
        .position(|&(t, s, e)| t == Tok::Ident && &src[s..e] == "SEC")?;
    let &(t, s, e) = toks.get(sec.checked_sub(1)?)?;
    (t == Tok::Ident).then(|| src[s..e].to_string())
}

/// The tokens of a macro body but its comments and line continuations.
fn code_tokens(src: &str, body: (usize, usize)) -> Vec<(Tok, usize, usize)> {
    c::lex(src, body.0..body.1)
        .into_iter()
        .filter(|t| t.0 != Tok::Comment && t.0 != Tok::Punct(b'\\'))
        .collect()
}

/// The edits that make the macro body at `body` of `src` define a ring buffer of `size`
/// (a C expression) named by its parameter `param`, or why it cannot be rewritten. A body of
/// the direct form keeps its layout: the type becomes `BPF_MAP_TYPE_RINGBUF`, the key and the
/// value go, `max_entries` is the ring's size. A body that is one call of another macro given
/// the type becomes a definition of its own.
pub fn ring_body(
    src: &str,
    body: (usize, usize),
    param: &str,
    size: &str,
) -> Result<Vec<Edit>, String> {
    let toks = code_tokens(src, body);
    let word = |k: usize| match toks.get(k) {
        Some(&(Tok::Ident, s, e)) => &src[s..e],
        _ => "",
    };
    let punct = |k: usize, p: u8| matches!(toks.get(k), Some((Tok::Punct(q), _, _)) if *q == p);
    let (first, last) = (
        toks.first().ok_or("its body is empty")?,
        toks[toks.len() - 1],
    );
    let semi = punct(toks.len() - 1, b';');
    let end = toks.len() - usize::from(semi);
    if word(0) == "struct" && punct(1, b'{') {
        let close = (2..end)
            .find(|&k| punct(k, b'}'))
            .ok_or("its struct does not close")?;
        let tail: Vec<&str> = (close + 1..end)
            .map(|k| &src[toks[k].1..toks[k].2])
            .collect();
        if tail != [param, "SEC", "(", "\".maps\"", ")"] {
            return Err(format!(
                "its body is not one definition `struct {{ ... }} {param} SEC(\".maps\")`"
            ));
        }
        return direct(src, (toks[1].2, toks[close].1), size);
    }
    // One call of another macro, given the name and the type.
    if toks.len() > 1 && punct(1, b'(') && c::matching_paren(&toks, 1) == Some(end - 1) {
        let args: Vec<&str> = (2..end - 1)
            .filter(|&k| toks[k].0 == Tok::Ident)
            .map(word)
            .collect();
        if args.contains(&param) && args.contains(&PERF) {
            let text = format!(
                "struct {{ __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, {size}); }} {param} SEC(\".maps\"){}",
                if semi { ";" } else { "" }
            );
            return Ok(vec![Edit::replace(first.1, last.2, text, Rule::PerfMapDef)]);
        }
    }
    Err(format!(
        "its body is neither a definition `struct {{ ... }} {param} SEC(\".maps\")` nor one call of another macro given `{param}` and the type"
    ))
}

/// The members between the braces of a direct body (`inner`): the type, key, value and size
/// rewritten as for a map defined in place (`map_def`).
fn direct(src: &str, inner: (usize, usize), size: &str) -> Result<Vec<Edit>, String> {
    let members = btf_members(src, inner.0, inner.1);
    let stray = code_tokens(src, inner)
        .into_iter()
        .find(|t| !members.iter().any(|m| t.1 >= m.span.0 && t.2 <= m.span.1));
    if let Some((_, s, e)) = stray {
        return Err(format!(
            "its struct holds `{}`, which is not a member macro",
            &src[s..e]
        ));
    }
    let ty = members
        .iter()
        .find(|m| m.key == "type" && c::strip_parens(&src[m.value.0..m.value.1]) == PERF)
        .ok_or("its type is not given as BPF_MAP_TYPE_PERF_EVENT_ARRAY")?;
    // On a line of its own, the line continuation keeps its column.
    let backslash = own_line(src, ty.span).map(|next| src[..next].rfind('\\').unwrap_or(next));
    let mut edits = vec![match backslash {
        Some(bs) => {
            let line = format!("BPF_MAP_TYPE_RINGBUF{}", &src[ty.value.1..ty.span.1]);
            let width = (bs - ty.value.0).max(line.len() + 1);
            Edit::replace(ty.value.0, bs, format!("{line:width$}"), Rule::PerfMapDef)
        }
        None => Edit::replace(
            ty.value.0,
            ty.value.1,
            "BPF_MAP_TYPE_RINGBUF",
            Rule::PerfMapDef,
        ),
    }];
    let mut has_max = false;
    for m in &members {
        match m.key.as_str() {
            "type" => {}
            "key_size" | "value_size" | "key" | "value" => edits.push(delete(src, m.span)),
            "max_entries" => {
                has_max = true;
                edits.push(Edit::replace(m.value.0, m.value.1, size, Rule::PerfMapDef));
            }
            other => {
                return Err(format!(
                    "it sets `{other}`, which a ring buffer does not take over as it is"
                ));
            }
        }
    }
    if !has_max {
        edits.push(match (own_line(src, ty.span), backslash) {
            (Some(next), Some(bs)) => {
                let line = format!("{}__uint(max_entries, {size});", indent_at(src, ty.span.0));
                let width = (bs - line_start(src, bs)).max(line.len() + 1);
                Edit::insert(next, format!("{line:width$}\\\n"), Rule::PerfMapDef)
            }
            _ => Edit::insert(
                ty.span.1,
                format!(" __uint(max_entries, {size});"),
                Rule::PerfMapDef,
            ),
        });
    }
    Ok(edits)
}

/// Where the line after `span` starts, when the member has its line to itself in the macro
/// (nothing but blanks before it, and a line continuation after it).
fn own_line(src: &str, (s, e): (usize, usize)) -> Option<usize> {
    let before = &src[line_start(src, s)..s];
    let nl = e + src[e..].find('\n')?;
    let after = src[e..nl].trim();
    (before.trim().is_empty() && after == "\\").then_some(nl + 1)
}

/// A member deleted: its whole line where it has one, else the member and the blanks after.
fn delete(src: &str, span: (usize, usize)) -> Edit {
    match own_line(src, span) {
        Some(next) => Edit::delete(line_start(src, span.0), next, Rule::PerfMapDef),
        None => {
            let rest = &src[span.1..];
            let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
            Edit::delete(span.0, span.1 + ws, Rule::PerfMapDef)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{named_param, ring_body};
    use crate::edit;

    /// The body of the first `#define` of `text` rewritten for `param`.
    fn rewrite(text: &str, param: &str) -> Result<String, String> {
        let start = text.find(')').unwrap() + 1;
        let end = text.trim_end().len();
        let mut edits = ring_body(text, (start, end), param, "256 * 1024")?;
        edit::normalize(&mut edits).unwrap();
        Ok(edit::apply_spans(text, &edits, false).0)
    }

    #[test]
    fn a_direct_body_keeps_its_layout() {
        let before = "#define PERF_OUT(_name)                               \\\n\tstruct {                                      \\\n\t\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); \\\n\t\t__uint(key_size, sizeof(int));               \\\n\t\t__uint(value_size, sizeof(__u32));           \\\n\t} _name SEC(\".maps\")\n";
        assert_eq!(
            named_param(before, (16, before.len())).as_deref(),
            Some("_name")
        );
        let after = "#define PERF_OUT(_name)                               \\\n\tstruct {                                      \\\n\t\t__uint(type, BPF_MAP_TYPE_RINGBUF);          \\\n\t\t__uint(max_entries, 256 * 1024);             \\\n\t} _name SEC(\".maps\")\n";
        assert_eq!(rewrite(before, "_name").unwrap(), after);
        // With a size of its own, and on one line.
        let one = "#define PERF_OUT(n, max) struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __type(key, int); __type(value, int); __uint(max_entries, max); } n SEC(\".maps\");\n";
        assert_eq!(
            rewrite(one, "n").unwrap(),
            "#define PERF_OUT(n, max) struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 256 * 1024); } n SEC(\".maps\");\n"
        );
    }

    #[test]
    fn a_body_that_calls_another_macro_becomes_a_definition() {
        let before = "#define BPF_PERF_OUTPUT(_name, _max_entries) \\\n\tBPF_MAP(_name, BPF_MAP_TYPE_PERF_EVENT_ARRAY, int, __u32, _max_entries)\n";
        assert_eq!(
            rewrite(before, "_name").unwrap(),
            "#define BPF_PERF_OUTPUT(_name, _max_entries) \\\n\tstruct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 256 * 1024); } _name SEC(\".maps\")\n"
        );
    }

    #[test]
    fn what_cannot_be_rewritten_says_why() {
        let pinned = "#define PERF_OUT(n) struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(pinning, LIBBPF_PIN_BY_NAME); } n SEC(\".maps\")\n";
        assert!(
            rewrite(pinned, "n")
                .unwrap_err()
                .contains("it sets `pinning`")
        );
        let two = "#define PERF_OUT(n) struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); } n SEC(\".maps\"); int n##_count\n";
        assert!(
            rewrite(two, "n")
                .unwrap_err()
                .contains("is not one definition")
        );
        let typed = "#define MAP(n, t) struct { __uint(type, t); } n SEC(\".maps\") /* BPF_MAP_TYPE_PERF_EVENT_ARRAY */\n";
        assert!(
            rewrite(typed, "n")
                .unwrap_err()
                .contains("its type is not given")
        );
        let other = "#define PERF_OUT(n) DEFINE_MAP(BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4)\n";
        assert!(
            rewrite(other, "n")
                .unwrap_err()
                .contains("neither a definition")
        );
    }
}
