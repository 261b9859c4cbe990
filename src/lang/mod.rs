//! Language front ends.
pub mod c;
pub mod python;

use tree_sitter::{InputEdit, Point, Tree};

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
