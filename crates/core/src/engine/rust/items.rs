//! Positions and item ranges: byte offsets from proc-macro2's line/column positions, the
//! top-level items `check_ahead` keeps for the parse check, and the lines an item takes when
//! it is deleted.

use std::ops::Range;

use syn::spanned::Spanned;

use crate::source::SourceFile;
use crate::source::{line_end_incl, line_start};

/// The byte offset in `file` of a proc-macro2 position (lines from 1, columns in characters):
/// positions are those of the text after a byte-order mark, which syn and the token parser
/// skip, so a column on line 1 is one character short of the file's.
pub(super) fn offset(file: &SourceFile, at: proc_macro2::LineColumn) -> usize {
    let bom = usize::from(at.line == 1 && file.text.starts_with('\u{feff}'));
    file.offset_of(at.line, at.column + bom)
}

/// The byte ranges of a file's top-level items, outer attributes and doc comments included.
pub fn item_ranges(file: &SourceFile, ast: &syn::File) -> Vec<Range<usize>> {
    ast.items
        .iter()
        .map(|i| offset(file, i.span().start())..offset(file, i.span().end()))
        .collect()
}

/// Whether the Rust text `new`, made from a file whose top-level items were `items` by the
/// edits `spans` (in order), still parses, told from the items the edits touch: each must
/// parse alone as an item and end its line. An item ends in `}` or `;`, the text around the
/// touched items is unchanged, and a line comment it may now end in stops at the line's end,
/// so the file parses whenever they do; so does a text of whole items added at the end of the
/// file, after an item. False when an edit is not inside one item (between items, in an inner
/// attribute), or a touched item does not parse or shares its last line with what follows: a
/// full parse decides then.
pub fn items_parse(items: &[Range<usize>], new: &str, spans: &[crate::edit::Span]) -> bool {
    let mut touched: Vec<Range<usize>> = Vec::new();
    // How far the edits before a span moved the text.
    let mut delta = 0isize;
    for s in spans {
        match items
            .iter()
            .find(|r| r.start <= s.start && s.old_end <= r.end)
        {
            Some(r) if touched.last() == Some(r) => {}
            Some(r) => touched.push(r.clone()),
            // Whole items added at the end of the file, on lines of their own, after an item.
            None if s.start == s.old_end => {
                let at = s.start.saturating_add_signed(delta);
                let (Some(before), Some(added), Some(after)) = (
                    new.get(..at),
                    new.get(at..at + s.new_len),
                    new.get(at + s.new_len..),
                ) else {
                    return false;
                };
                if !before.ends_with('\n')
                    || !before.trim_end().ends_with(['}', ';'])
                    || !after.trim().is_empty()
                    || syn::parse_file(added).is_err()
                {
                    return false;
                }
            }
            None => return false,
        }
        delta += s.new_len as isize - (s.old_end - s.start) as isize;
    }
    let Some(moved) = crate::edit::map_ranges(&touched, spans) else {
        return false;
    };
    // An item may now end in a line comment, which would swallow whatever follows it on its
    // line: only an item that ends its line is judged alone.
    moved.into_iter().all(|r| {
        let ends_line = new
            .get(r.end..)
            .and_then(|rest| rest.split('\n').next())
            .is_some_and(|rest| rest.trim().is_empty());
        ends_line
            && new
                .get(r)
                .is_some_and(|t| syn::parse_str::<syn::Item>(t).is_ok())
    })
}

/// The lines of an item, with one blank line around it so that no double blank line is left.
pub(super) fn item_lines(src: &str, s: usize, e: usize) -> (usize, usize) {
    let mut s = line_start(src, s);
    // `//` comment lines right above the item speak of it.
    while s > 0 {
        let prev = line_start(src, s - 1);
        let t = src[prev..s].trim();
        if !(t.starts_with("//") || (t.starts_with("/*") && t.ends_with("*/"))) {
            break;
        }
        s = prev;
    }
    let mut e = line_end_incl(src, e.saturating_sub(1));
    let blank_before = s == 0 || src[..s].ends_with("\n\n");
    let next = line_end_incl(src, e);
    if blank_before && e < src.len() && src[e..next].trim().is_empty() {
        e = next;
    }
    (s, e)
}

#[cfg(test)]
mod tests {
    use super::super::test_crate::{BPF, main_rs};
    use super::item_lines;
    use crate::engine::testkit::check_migrate;

    /// proc-macro2's positions on line 1 start after a byte-order mark: the edits there land
    /// where they should.
    #[test]
    fn byte_order_mark_shifts_no_edit() {
        let before = format!(
            "\u{feff}{}",
            main_rs(
                r#"
                use libbpf_rs::PerfBufferBuilder;

                fn handle(_cpu: i32, data: &[u8]) {
                    println!("{}", data.len());
                }

                fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                    let perf = PerfBufferBuilder::new(&skel.maps.events).sample_cb(handle).build()?;
                    perf.poll(std::time::Duration::from_millis(100))?;
                    Ok(())
                }
                "#
            )
        );
        let after = format!(
            "\u{feff}{}",
            main_rs(
                r#"
                use libbpf_rs::RingBufferBuilder;

                fn handle(data: &[u8]) -> i32 {
                    println!("{}", data.len());
                    0
                }

                fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                    let mut builder = RingBufferBuilder::new();
                    builder.add(&skel.maps.events, handle)?;
                    let perf = builder.build()?;
                    perf.poll(std::time::Duration::from_millis(100))?;
                    Ok(())
                }
                "#
            )
        );
        check_migrate(
            &[("src/main.rs", &before), ("src/bpf/x.bpf.c", BPF)],
            &[("src/main.rs", &after)],
        );
    }

    /// An item's lines take the `//` comments above it and one blank line around it.
    #[test]
    fn item_lines_take_comments_and_one_blank_line() {
        let src = "fn a() {}\n\n// b's comment\n/* and more */\nfn b() {}\n\nfn c() {}\n";
        let (s, e) = (src.find("fn b").unwrap(), src.find("fn c").unwrap() - 2);
        let (ls, le) = item_lines(src, s, e);
        assert_eq!(&src[..ls], "fn a() {}\n\n");
        assert_eq!(&src[le..], "fn c() {}\n");
    }

    /// Items added at the end of the file are judged alone, after an item and when nothing
    /// but blank lines follows them; anywhere else between items, a full parse decides.
    #[test]
    fn items_added_at_the_end_are_judged_alone() {
        use super::items_parse;
        use crate::edit::{Edit, apply_spans};
        use crate::rules::Rule;
        let old = "fn a() {}\n\nfn b() {}\n";
        let items = [0..9, 11..20];
        let judge = |at: usize, text: &str| {
            let edits = [Edit::insert(at, text, Rule::LostCounter)];
            let (new, spans) = apply_spans(old, &edits, false);
            items_parse(&items, &new, &spans)
        };
        assert!(judge(old.len(), "\n/// c\nfn c() {}\n"));
        assert!(!judge(old.len(), "\nfn c() {\n"));
        assert!(!judge(10, "fn c() {}\n"));
        let commented = "fn a() {}\n// the end\n";
        let edits = [Edit::insert(
            commented.len(),
            "fn c() {}\n",
            Rule::LostCounter,
        )];
        let (new, spans) = apply_spans(commented, &edits, false);
        assert!(!items_parse(&[0..9], &new, &spans));
    }
}
