//! Edits shared by the analyses: deleting a member or a declaration (with its line when it
//! stands alone there, and the comment lines right above it).

use crate::edit::Edit;
use crate::rules::Rule;
use crate::source::{line_end_incl, line_start};

/// Whether `s..e` is alone on its line(s), but for whitespace and a trailing comment.
pub(super) fn own_line(src: &str, s: usize, e: usize) -> bool {
    let before = &src[line_start(src, s)..s];
    let after_end = line_end_incl(src, e);
    let after = src[e..after_end].trim();
    before.trim().is_empty()
        && (after.is_empty()
            || after.starts_with("//")
            || (after.starts_with("/*") && after.ends_with("*/")))
}

/// Deletes `s..e` with its line when it stands alone on it, else with the space after it.
pub fn delete_member(src: &str, (s, e): (usize, usize), rule: Rule) -> Edit {
    if own_line(src, s, e) {
        Edit::delete(line_start(src, s), line_end_incl(src, e), rule)
    } else {
        let ws = src[e..].len() - src[e..].trim_start_matches([' ', '\t']).len();
        Edit::delete(s, e + ws, rule)
    }
}

/// Like `delete_member`, and comment lines right above the member go with it: they spoke of
/// the key or value that is removed.
pub fn delete_member_with_comment(src: &str, (s, e): (usize, usize), rule: Rule) -> Edit {
    let mut d = delete_member(src, (s, e), rule);
    if d.start == line_start(src, s) {
        loop {
            if d.start == 0 {
                break;
            }
            let prev = line_start(src, d.start - 1);
            let t = src[prev..d.start].trim();
            let is_comment = t.starts_with("//") || (t.starts_with("/*") && t.ends_with("*/"));
            if !is_comment {
                break;
            }
            d.start = prev;
        }
    }
    d
}

/// `text` inserted at `at`, after what is inserted there already (one insertion: two at one
/// point would not keep an order), with `rule` when it is the first.
pub(super) fn insert_after(edits: &mut Vec<Edit>, at: usize, text: String, rule: Rule) {
    match edits.iter_mut().find(|e| e.start == at && e.end == at) {
        Some(e) => e.text.push_str(&text),
        None => edits.push(Edit::insert(at, text, rule)),
    }
}
