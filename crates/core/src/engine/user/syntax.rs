//! Helpers the loader's site handlers share: the bytes to delete for a statement or a
//! top-level item, declarator names, and functions and identifiers found by name.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::super::edits::delete_member;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{line_end_incl, line_start};

/// The bytes to delete for a statement: its whole line when it stands alone there.
pub(super) fn statement_span(src: &str, n: Node) -> (usize, usize) {
    let e = delete_member(src, (n.start_byte(), n.end_byte()), Rule::PerfBufferOpts);
    (e.start, e.end)
}

/// The lines of a top-level item, with a comment right above it, and one of the blank lines
/// around it so that no double blank line is left.
pub(super) fn item_span(src: &str, n: Node) -> (usize, usize) {
    let mut start = n.start_byte();
    if let Some(prev) = n.prev_sibling()
        && prev.kind() == "comment"
        && src[prev.end_byte()..start].matches('\n').count() == 1
        && src[line_start(src, prev.start_byte())..prev.start_byte()]
            .trim()
            .is_empty()
    {
        start = prev.start_byte();
    }
    let s = line_start(src, start);
    let mut e = line_end_incl(src, n.end_byte().saturating_sub(1).max(start));
    let blank_before = s == 0 || src[..s].ends_with("\n\n") || src[..s].ends_with("\n\r\n");
    let next_line_end = line_end_incl(src, e);
    if blank_before && e < src.len() && src[e..next_line_end].trim().is_empty() {
        e = next_line_end;
    }
    (s, e)
}

/// The declarator of a declaration without its initializer: `x = 1` gives `x`.
pub(super) fn without_init(d: Node) -> Node {
    if d.kind() == "init_declarator" {
        d.field("declarator").unwrap_or(d)
    } else {
        d
    }
}

/// A declarator's text without its pointer stars: `*pb` gives `pb`.
pub(super) fn strip_ptr<'a>(mut d: Node, src: &'a str) -> &'a str {
    while d.kind() == "pointer_declarator" {
        match d.field("declarator") {
            Some(x) => d = x,
            None => break,
        }
    }
    c::text(d, src)
}

/// A function definition or prototype named `name`: (declaration node, function_declarator).
pub(super) fn functions_named<'t>(cx: &Ctx<'_, 't>, name: &str) -> Vec<(Node<'t>, Node<'t>)> {
    let src = cx.src();
    let mut out = Vec::new();
    for n in cx.of_kinds(&["function_definition", "declaration"]) {
        let Some(d) = n.field("declarator") else {
            continue;
        };
        if d.kind() != "function_declarator" {
            continue;
        }
        if d.field("declarator")
            .is_some_and(|i| c::text(i, src) == name)
        {
            out.push((n, d));
        }
    }
    out
}

/// The spans where `name` may appear without counting as another use: the creation calls
/// that pass it, and the names of its definition and prototypes.
pub(super) fn own_spans(fns: &[(Node, Node)], creation: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut allowed: Vec<(usize, usize)> = creation.to_vec();
    for (_, d) in fns {
        let i = d.field("declarator").unwrap();
        allowed.push((i.start_byte(), i.end_byte()));
    }
    allowed
}

/// Uses of identifier `name` outside the given spans.
pub(super) fn other_uses<'t>(
    cx: &Ctx<'_, 't>,
    name: &str,
    allowed: &[(usize, usize)],
) -> Vec<Node<'t>> {
    let src = cx.src();
    cx.of_kind("identifier")
        .into_iter()
        .filter(|n| c::text(*n, src) == name)
        .filter(|n| {
            !allowed
                .iter()
                .any(|&(a, b)| n.start_byte() >= a && n.end_byte() <= b)
        })
        .collect()
}
