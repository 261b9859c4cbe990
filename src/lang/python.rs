//! Python front end (BCC tools): tree-sitter-python. Node helpers are shared with the C
//! front end (`lang::c::{descendants, of_kind, text}` work on any tree).

use tree_sitter::{Parser, Tree};

use crate::edit::Span;

pub fn parse(text: &str) -> Option<Tree> {
    with_parser(|p| p.parse(text, None))
}

/// `old` (the tree of `old_text`) brought up to `new_text`, the same text with the edits
/// `spans`, re-parsing only what changed.
pub fn reparse(old: &Tree, old_text: &str, new_text: &str, spans: &[Span]) -> Option<Tree> {
    let mut tree = old.clone();
    super::edit_tree(&mut tree, old_text, new_text, spans);
    with_parser(|p| p.parse(new_text, Some(&tree)))
}

/// The Python parser of this thread, reused.
fn with_parser<R>(f: impl FnOnce(&mut Parser) -> R) -> R {
    thread_local! {
        static PARSER: std::cell::RefCell<Parser> = std::cell::RefCell::new({
            let mut p = Parser::new();
            p.set_language(&tree_sitter_python::LANGUAGE.into())
                .expect("tree-sitter-python grammar matches the tree-sitter version");
            p
        });
    }
    PARSER.with_borrow_mut(f)
}
