//! A file as read from disk: its text, where its lines start, and its line-ending style.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as used to open the file.
    pub path: PathBuf,
    /// Path as shown to the user and in diff headers (relative, `/`-separated).
    pub display: String,
    pub text: String,
    line_starts: Vec<usize>,
    /// The file's dominant line ending is CRLF: inserted text follows it.
    pub crlf: bool,
}

impl SourceFile {
    pub fn new(path: PathBuf, display: String, text: String) -> Self {
        let mut line_starts = vec![0];
        let mut crlf_lines = 0usize;
        let mut lf_lines = 0usize;
        let bytes = text.as_bytes();
        for i in memchr::memchr_iter(b'\n', bytes) {
            line_starts.push(i + 1);
            if i > 0 && bytes[i - 1] == b'\r' {
                crlf_lines += 1;
            } else {
                lf_lines += 1;
            }
        }
        SourceFile {
            path,
            display,
            text,
            line_starts,
            crlf: crlf_lines > lf_lines,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        (line + 1, col)
    }

    /// Byte offset of a 1-based line and a 0-based column counted in characters (the
    /// positions proc-macro2 reports).
    pub fn offset_of(&self, line: usize, col_chars: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        start
            + rest
                .char_indices()
                .nth(col_chars)
                .map(|(i, _)| i)
                .unwrap_or(rest.len())
    }

    /// The text of a 1-based line, without its line ending.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Byte offset of the start of the line holding `offset`.
pub fn line_start(text: &str, offset: usize) -> usize {
    text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0)
}

/// Byte offset just past the end of the line holding `offset` (past its newline).
pub fn line_end_incl(text: &str, offset: usize) -> usize {
    text[offset..]
        .find('\n')
        .map(|i| offset + i + 1)
        .unwrap_or(text.len())
}

/// The leading whitespace of the line holding `offset`.
pub fn indent_at(text: &str, offset: usize) -> &str {
    let start = line_start(text, offset);
    let rest = &text[start..];
    let n = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    &rest[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_and_endings() {
        let f = SourceFile::new("a".into(), "a".into(), "ab\r\ncd\r\nef".into());
        assert!(f.crlf);
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(5), (2, 2));
        assert_eq!(f.line_text(2), "cd");
        assert_eq!(f.line_text(3), "ef");
        assert_eq!(indent_at("x\n\t  y", 5), "\t  ");
    }
}
