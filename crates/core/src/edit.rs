//! Byte-range edits on the original text: sorted, de-duplicated, overlap-checked.

use crate::rules::Rule;
use std::fmt;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// Rule that produced the edit.
    pub rule: Rule,
}

impl Edit {
    pub fn replace(start: usize, end: usize, text: impl Into<String>, rule: Rule) -> Self {
        Edit {
            start,
            end,
            text: text.into(),
            rule,
        }
    }

    pub fn insert(at: usize, text: impl Into<String>, rule: Rule) -> Self {
        Self::replace(at, at, text, rule)
    }

    pub fn delete(start: usize, end: usize, rule: Rule) -> Self {
        Self::replace(start, end, "", rule)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlapError {
    pub first: (usize, usize, Rule),
    pub second: (usize, usize, Rule),
}

impl fmt::Display for OverlapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "internal error: edits overlap ({} at {}..{} and {} at {}..{})",
            self.first.2, self.first.0, self.first.1, self.second.2, self.second.0, self.second.1
        )
    }
}

/// Sorts and de-duplicates `edits` (the same edit planned twice, e.g. for a callback shared by
/// two perf buffers, is applied once) and checks that no two overlap.
pub fn normalize(edits: &mut Vec<Edit>) -> Result<(), OverlapError> {
    edits.sort_by_key(|e| (e.start, e.end));
    edits.dedup_by(|b, a| a.start == b.start && a.end == b.end && a.text == b.text);
    for w in edits.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        // Two insertions at one point, or a range starting inside another, are ambiguous.
        if b.start < a.end || (a.start == a.end && b.start == b.end && b.start == a.start) {
            return Err(OverlapError {
                first: (a.start, a.end, a.rule),
                second: (b.start, b.end, b.rule),
            });
        }
    }
    Ok(())
}

/// Applies normalized edits. Newlines in inserted text follow the file's line ending.
pub fn apply(text: &str, edits: &[Edit], crlf: bool) -> String {
    apply_spans(text, edits, crlf).0
}

/// Where an applied edit landed: `start..old_end` of the old text became `new_len` bytes
/// (`start` is the same offset in both texts, counting from the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub old_end: usize,
    pub new_len: usize,
}

/// Byte ranges of a text moved to where they lie after the edits `spans` (in order): an edit
/// inside a range (or inserting at either end) resizes it, one before it moves it. None if an
/// edit straddles a range's start or end.
pub fn map_ranges(ranges: &[Range<usize>], spans: &[Span]) -> Option<Vec<Range<usize>>> {
    ranges
        .iter()
        .map(|r| {
            let (mut start, mut end) = (r.start as isize, r.end as isize);
            for s in spans {
                let delta = s.new_len as isize - (s.old_end - s.start) as isize;
                if s.old_end <= r.start && s.start < r.start {
                    start += delta;
                    end += delta;
                } else if s.start >= r.start && s.old_end <= r.end {
                    end += delta;
                } else if s.start < r.end && s.old_end > r.start {
                    return None;
                }
            }
            Some(start as usize..end as usize)
        })
        .collect()
}

/// `apply`, and the span of each edit, in order: what an incremental re-parse must be told.
pub fn apply_spans(text: &str, edits: &[Edit], crlf: bool) -> (String, Vec<Span>) {
    let mut out = String::with_capacity(text.len() + 64);
    let mut spans = Vec::with_capacity(edits.len());
    let mut pos = 0;
    for e in edits {
        out.push_str(&text[pos..e.start]);
        let before = out.len();
        if crlf {
            out.push_str(&e.text.replace("\r\n", "\n").replace('\n', "\r\n"));
        } else {
            out.push_str(&e.text);
        }
        spans.push(Span {
            start: e.start,
            old_end: e.end,
            new_len: out.len() - before,
        });
        pos = e.end;
    }
    out.push_str(&text[pos..]);
    (out, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_refused_and_duplicates_merge() {
        let mut v = vec![
            Edit::replace(4, 6, "x", Rule::PerfEventOutput),
            Edit::replace(0, 2, "y", Rule::PerfEventOutput),
            Edit::replace(0, 2, "y", Rule::PerfEventOutput),
        ];
        normalize(&mut v).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(apply("abcdefg", &v, false), "ycdxg");
        let mut bad = vec![
            Edit::replace(0, 3, "", Rule::PerfEventOutput),
            Edit::replace(2, 4, "", Rule::PerfEventOutput),
        ];
        assert!(normalize(&mut bad).is_err());
    }

    #[test]
    fn ranges_follow_the_edits_around_and_inside_them() {
        // "ab[cdef]gh": an edit before the range moves it, one inside or at an end resizes it.
        let text = "abcdefgh";
        let edits = vec![
            Edit::replace(0, 1, "AAA", Rule::PerfEventOutput),
            Edit::insert(2, "<", Rule::PerfEventOutput),
            Edit::replace(3, 5, "", Rule::PerfEventOutput),
            Edit::insert(6, ">", Rule::PerfEventOutput),
            Edit::replace(7, 8, "", Rule::PerfEventOutput),
        ];
        let (new, spans) = apply_spans(text, &edits, false);
        assert_eq!(new, "AAAb<cf>g");
        let mapped = map_ranges(&[2..6], &spans).unwrap();
        assert_eq!(&new[mapped[0].clone()], "<cf>");
        // An edit across a range's end has no place in it.
        let (_, spans) = apply_spans(
            text,
            &[Edit::replace(5, 7, "", Rule::PerfEventOutput)],
            false,
        );
        assert!(map_ranges(&[2..6], &spans).is_none());
    }

    #[test]
    fn crlf_follows_file() {
        let v = vec![Edit::insert(1, "x\ny", Rule::PerfEventOutput)];
        assert_eq!(apply("a\r\nb", &v, true), "ax\r\ny\r\nb");
        let (_, spans) = apply_spans("a\r\nb", &v, true);
        assert_eq!(
            spans,
            [Span {
                start: 1,
                old_end: 1,
                new_len: 4
            }]
        );
    }
}
