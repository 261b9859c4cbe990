//! Language front ends.
pub mod c;
pub mod go;
pub mod python;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use tree_sitter::{InputEdit, Language, Node, Parser, Point, Tree};

use crate::edit::Span;

/// Tells `tree`, parsed from `old`, about the edits that made `new` (`spans`, in order), so
/// that a parse of `new` given this tree re-parses only what changed.
pub fn edit_tree(tree: &mut Tree, old: &str, new: &str, spans: &[Span]) {
    // Points of each span in the old text, and where its replacement ends in the new one;
    // one pass over each text.
    let mut edits = Vec::with_capacity(spans.len());
    let (mut old_at, mut old_pt) = (0, Point { row: 0, column: 0 });
    let mut delta = 0isize;
    let advance = |text: &str, from: usize, to: usize, pt: Point| {
        let piece = &text.as_bytes()[from..to];
        match piece.iter().rposition(|&b| b == b'\n') {
            Some(i) => Point {
                row: pt.row + piece.iter().filter(|&&b| b == b'\n').count(),
                column: piece.len() - i - 1,
            },
            None => Point {
                row: pt.row,
                column: pt.column + piece.len(),
            },
        }
    };
    for s in spans {
        let start_pt = advance(old, old_at, s.start, old_pt);
        let old_end_pt = advance(old, s.start, s.old_end, start_pt);
        let new_start = s.start.wrapping_add_signed(delta);
        let new_end_pt = advance(new, new_start, new_start + s.new_len, start_pt);
        edits.push(InputEdit {
            start_byte: s.start,
            old_end_byte: s.old_end,
            new_end_byte: s.start + s.new_len,
            start_position: start_pt,
            old_end_position: old_end_pt,
            new_end_position: new_end_pt,
        });
        (old_at, old_pt) = (s.old_end, old_end_pt);
        delta += s.new_len as isize - (s.old_end - s.start) as isize;
    }
    // From the last: each edit's old offsets are still offsets of the tree as edited so far.
    for e in edits.iter().rev() {
        tree.edit(e);
    }
}

/// The grammars bpf-migrate parses with tree-sitter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grammar {
    C,
    Python,
    Go,
}

impl Grammar {
    const ALL: [Grammar; 3] = [Grammar::C, Grammar::Python, Grammar::Go];

    pub fn language(self) -> &'static Language {
        static LANGUAGES: LazyLock<[Language; 3]> = LazyLock::new(|| {
            [
                tree_sitter_c::LANGUAGE.into(),
                tree_sitter_python::LANGUAGE.into(),
                tree_sitter_go::LANGUAGE.into(),
            ]
        });
        &LANGUAGES[self as usize]
    }

    fn of(lang: &Language) -> Option<Grammar> {
        Grammar::ALL.into_iter().find(|g| g.language() == lang)
    }
}

/// Runs `f` with this thread's parser for `grammar`: one per thread and grammar, reused
/// (a new one costs more than parsing a small file).
pub fn with_parser<R>(grammar: Grammar, f: impl FnOnce(&mut Parser) -> R) -> R {
    thread_local! {
        static PARSERS: RefCell<[Parser; 3]> = RefCell::new(Grammar::ALL.map(|g| {
            let mut p = Parser::new();
            p.set_language(g.language())
                .expect("the grammar matches the tree-sitter version");
            p
        }));
    }
    PARSERS.with_borrow_mut(|p| f(&mut p[grammar as usize]))
}

/// Kind and field ids by name, found once per thread and grammar and kept: tree-sitter
/// finds an id by comparing the name with every name of the grammar, at each
/// `child_by_field_name` and `id_for_node_kind`, and the analyses ask thousands of times per
/// file. Only the names asked for are looked up, so a run over one small file pays nothing.
fn cached_id(lang: &Language, field: bool, name: &str) -> Option<u16> {
    let look_up = || match field {
        true => lang.field_id_for_name(name).map(|id| id.get()),
        false => Some(lang.id_for_node_kind(name, true)),
    };
    let Some(grammar) = Grammar::of(lang) else {
        return look_up();
    };
    /// By grammar, then kinds and fields.
    type Tables = [[HashMap<String, Option<u16>, foldhash::fast::FixedState>; 2]; 3];
    thread_local! {
        static IDS: RefCell<Tables> = RefCell::default();
    }
    IDS.with_borrow_mut(|ids| {
        let table = &mut ids[grammar as usize][usize::from(field)];
        match table.get(name) {
            Some(&id) => id,
            None => *table.entry(name.to_string()).or_insert_with(look_up),
        }
    })
}

/// The id of the named node kind `kind` in `lang`, as `Language::id_for_node_kind(kind, true)`.
pub fn kind_id(lang: &Language, kind: &str) -> u16 {
    cached_id(lang, false, kind).unwrap_or(0)
}

/// `child_by_field_name` with the field's id looked up once per grammar.
pub trait NodeExt<'t> {
    fn field(&self, name: &str) -> Option<Node<'t>>;
}

impl<'t> NodeExt<'t> for Node<'t> {
    fn field(&self, name: &str) -> Option<Node<'t>> {
        self.child_by_field_id(cached_id(&self.language(), true, name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached ids are the ones tree-sitter gives, for every name of both grammars, and
    /// `field` finds what `child_by_field_name` finds on every node of a real file.
    #[test]
    fn cached_ids_match_tree_sitter() {
        for lang in Grammar::ALL.map(Grammar::language) {
            for id in 0..lang.node_kind_count() as u16 {
                let kind = lang.node_kind_for_id(id).unwrap();
                assert_eq!(
                    kind_id(lang, kind),
                    lang.id_for_node_kind(kind, true),
                    "{kind}"
                );
            }
            assert_eq!(kind_id(lang, "no_such_kind"), 0);
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let c_text = std::fs::read_to_string(root.join("execsnoop/input/execsnoop.c")).unwrap();
        let py_text =
            std::fs::read_to_string(root.join("bcc_tcpconnect/input/tcpconnect.py")).unwrap();
        let trees = [
            c::parse(&c_text, None).unwrap().tree,
            python::parse(&py_text).unwrap(),
        ];
        for tree in &trees {
            let lang = tree.language();
            let names: Vec<&str> = (1..=lang.field_count() as u16)
                .filter_map(|id| lang.field_name_for_id(id))
                .chain(["no_such_field"])
                .collect();
            for n in c::descendants(tree.root_node()) {
                for name in &names {
                    assert_eq!(n.field(name), n.child_by_field_name(name), "{name}");
                }
            }
        }
    }
}
