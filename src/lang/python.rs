//! Python front end (BCC tools): tree-sitter-python. Node helpers are shared with the C
//! front end (`lang::c::{descendants, of_kind, text}` work on any tree).

use tree_sitter::{Parser, Tree};

pub fn parse(text: &str) -> Option<Tree> {
    // One parser per thread, reused.
    thread_local! {
        static PARSER: std::cell::RefCell<Parser> = std::cell::RefCell::new({
            let mut p = Parser::new();
            p.set_language(&tree_sitter_python::LANGUAGE.into())
                .expect("tree-sitter-python grammar matches the tree-sitter version");
            p
        });
    }
    PARSER.with_borrow_mut(|p| p.parse(text, None))
}
