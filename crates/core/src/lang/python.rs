//! Python front end (BCC tools): tree-sitter-python. Node helpers are shared with the C
//! front end (`lang::c::{descendants, of_kind, text}` work on any tree).

use tree_sitter::Tree;

use super::{Grammar, NodeExt, with_parser};
use crate::edit::Span;

pub fn parse(text: &str) -> Option<Tree> {
    with_parser(Grammar::Python, |p| p.parse(text, None))
}

/// `old` (the tree of `old_text`) brought up to `new_text`, the same text with the edits
/// `spans`, re-parsing only what changed.
pub fn reparse(old: &Tree, old_text: &str, new_text: &str, spans: &[Span]) -> Option<Tree> {
    let mut tree = old.clone();
    super::edit_tree(&mut tree, old_text, new_text, spans);
    with_parser(Grammar::Python, |p| p.parse(new_text, Some(&tree)))
}

/// Whether `edits` (normalized) leave the Python token structure of `src` as it is, or only
/// drop arguments, so that its parse errors are no more than before without a re-parse.
/// True when each edit is either a change inside one string's content that cannot end the
/// string, escape, or open an f-string field (no quote, backslash or brace; no line break in
/// a one-line string), one identifier replaced by another that is no keyword, an argument
/// list rebuilt as one of its own arguments (`(cb, page_cnt=64)` to `(cb)`), or text
/// replaced by itself. Anything else needs the parser.
pub fn edits_keep_structure(tree: &Tree, src: &str, edits: &[crate::edit::Edit]) -> bool {
    // Keywords, soft keywords and the Python 2 statements tree-sitter-python knows.
    const KEYWORDS: &[&str] = &[
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "case", "class",
        "continue", "def", "del", "elif", "else", "except", "exec", "finally", "for", "from",
        "global", "if", "import", "in", "is", "lambda", "match", "nonlocal", "not", "or", "pass",
        "print", "raise", "return", "try", "type", "while", "with", "yield",
    ];
    let root = tree.root_node();
    edits.iter().all(|e| {
        let old = &src[e.start..e.end];
        // A replacement by the same text (an argument list rebuilt as it was).
        if old == e.text {
            return true;
        }
        let Some(n) = root.descendant_for_byte_range(e.start, e.end) else {
            return false;
        };
        let ident = |t: &str| {
            t.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
                && t.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                && !KEYWORDS.contains(&t)
        };
        let whole = (n.start_byte(), n.end_byte()) == (e.start, e.end);
        if n.kind() == "identifier" && whole {
            return ident(old) && ident(&e.text);
        }
        if n.kind() == "argument_list" && whole {
            // Inside brackets Python ignores line breaks and indentation, so the argument
            // kept (as written, or a keyword argument written `name=value`) reads as before,
            // and the arguments dropped take their errors, if any, with them.
            let Some(kept) = e.text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) else {
                return false;
            };
            let mut cursor = n.walk();
            return n.named_children(&mut cursor).any(|a| {
                let as_written = &src[a.start_byte()..a.end_byte()];
                let rebuilt = || {
                    let (k, v) = (a.field("name")?, a.field("value")?);
                    let (k, v) = (
                        &src[k.start_byte()..k.end_byte()],
                        &src[v.start_byte()..v.end_byte()],
                    );
                    Some(kept.strip_prefix(k)?.strip_prefix('=')? == v)
                };
                !a.has_error()
                    && a.kind() != "comment"
                    && (kept == as_written
                        || a.kind() == "keyword_argument" && rebuilt() == Some(true))
            });
        }
        if n.kind() != "string_content" {
            return false;
        }
        let Some(start) = n.parent().and_then(|s| s.child(0)) else {
            return false;
        };
        let opener = &src[start.start_byte()..start.end_byte()];
        let triple = opener.ends_with("\"\"\"") || opener.ends_with("'''");
        let fstring = opener.contains(['f', 'F']);
        let unsafe_in_string = |t: &str| {
            t.contains(['"', '\'', '\\'])
                || (!triple && t.contains(['\n', '\r']))
                || (fstring && t.contains(['{', '}']))
        };
        !unsafe_in_string(old) && !unsafe_in_string(&e.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::Edit;
    use crate::rules::Rule;

    #[test]
    fn edits_that_keep_the_token_structure() {
        let src = "b = BPF(text=\"\"\"\nBPF_PERF_OUTPUT(events);\n\"\"\")\nmsg = 'perf buffer'\nf = f\"{n} perf buffer\"\nb[\"events\"].open_perf_buffer(cb)\n";
        let tree = parse(src).unwrap();
        let at = |s: &str| src.find(s).unwrap();
        let keeps = |start: usize, end: usize, text: &str| {
            edits_keep_structure(
                &tree,
                src,
                &[Edit::replace(start, end, text, Rule::PerfEventOutput)],
            )
        };
        let c = at("BPF_PERF_OUTPUT(events);");
        assert!(keeps(c, c + 24, "BPF_RINGBUF_OUTPUT(events, 8);\n{ }"));
        let m = at("open_perf_buffer");
        assert!(keeps(m, m + 16, "open_ring_buffer"));
        // A keyword, a quote, a line break in a one-line string, a brace in an f-string,
        // or anything that is not one identifier or inside one string: the parser decides.
        assert!(!keeps(m, m + 16, "lambda"));
        assert!(!keeps(c, c + 24, "BPF_RINGBUF_OUTPUT(events, \"8\");"));
        let p = at("perf buffer'");
        assert!(!keeps(p, p + 11, "ring\\nbuffer"));
        assert!(!keeps(p, p + 11, "ring\nbuffer"));
        assert!(keeps(p, p + 11, "ring buffer"));
        let f = at("perf buffer\"");
        assert!(!keeps(f, f + 11, "{ring} buffer"));
        assert!(!keeps(m - 1, m + 16, ".open_ring_buffer"));
        let args = at("(cb)");
        assert!(keeps(args, args + 4, "(cb)"));
        assert!(!keeps(args, args + 4, "(cb"));
        // An argument list rebuilt as one of its arguments.
        let call = "t.open_perf_buffer(\n    print_event, # the callback\n    page_cnt=64, lost_cb = on_lost)\nt.open_perf_buffer(callback = cb, page_cnt=(8)\n)\n";
        let call_tree = parse(call).unwrap();
        let lists: Vec<(usize, usize)> = {
            let nodes = crate::lang::c::descendants(call_tree.root_node());
            crate::lang::c::of_kind(&nodes, "argument_list")
                .iter()
                .map(|n| (n.start_byte(), n.end_byte()))
                .collect()
        };
        let keeps = |list: usize, text: &str| {
            let (s, e) = lists[list];
            edits_keep_structure(
                &call_tree,
                call,
                &[Edit::replace(s, e, text, Rule::PerfEventOutput)],
            )
        };
        for (list, text) in [
            (0, "(print_event)"),
            (0, "(lost_cb = on_lost)"),
            (0, "(lost_cb=on_lost)"),
            (1, "(callback=cb)"),
            (1, "(page_cnt=(8))"),
        ] {
            assert!(keeps(list, text), "{text}");
            let (s, e) = lists[list];
            let new = format!("{}{text}{}", &call[..s], &call[e..]);
            assert!(!parse(&new).unwrap().root_node().has_error(), "{new}");
        }
        // Not one of its own arguments as written (or a comment), or not a list.
        for (list, text) in [
            (0, "(print_event, 1)"),
            (0, "(# the callback)"),
            (0, "(on_lost)"),
            (1, "(callback=cb"),
            (1, "callback=cb"),
            (1, "(callback=(8))"),
            (1, "(page_cnt=8)"),
        ] {
            assert!(!keeps(list, text), "{text}");
        }
        // After a kept edit, a re-parse of the new text finds the same tree.
        let new = format!("{}open_ring_buffer{}", &src[..m], &src[m + 16..]);
        assert_eq!(
            parse(&new).unwrap().root_node().to_sexp(),
            tree.root_node().to_sexp()
        );
    }
}
