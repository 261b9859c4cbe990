//! Whether a Rust file is worth parsing: a `PerfBuffer` identifier must stand in its code.

/// Whether an identifier holding `PerfBuffer` stands in code, not only in comments and string
/// literals: everything the Rust analysis acts on starts from such an identifier (the builder,
/// its aliases, the type), so a file without one is not parsed. A light lexer; whatever it is
/// unsure of (an unterminated literal) counts as code.
pub fn names_perf_buffer_in_code(text: &str) -> bool {
    if !text.contains("PerfBuffer") {
        return false;
    }
    let b = text.as_bytes();
    let ident = |c: u8| c == b'_' || c.is_ascii_alphanumeric() || c >= 0x80;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest.
                let mut depth = 0;
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (None, _) => return true,
                        (Some(b'/'), Some(b'*')) => (depth, i) = (depth + 1, i + 2),
                        (Some(b'*'), Some(b'/')) => {
                            (depth, i) = (depth - 1, i + 2);
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
            }
            b'"' => match skip_string(b, i + 1) {
                Some(end) => i = end,
                None => return true,
            },
            b'\'' => {
                // A character literal ('x', '\n', 'é'), or a lifetime or label ('a).
                let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                if b.get(i + 1) == Some(&b'\\') {
                    // The escaped character (at i + 2) may itself be a quote: '\''.
                    match b.get(i + 3..).and_then(|rest| memchr::memchr(b'\'', rest)) {
                        Some(n) => i += n + 4,
                        None => return true,
                    }
                } else if b.get(i + 1 + width) == Some(&b'\'') {
                    i += width + 2;
                } else {
                    i += 1;
                }
            }
            c if ident(c) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                if word.contains("PerfBuffer") {
                    return true;
                }
                // String prefixes: b"..", c"..", r"..", r#".."#, br#".."#, cr"..".
                let raw = matches!(word, "r" | "br" | "cr");
                if raw && matches!(b.get(i), Some(b'"' | b'#')) {
                    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
                    if b.get(i + hashes) != Some(&b'"') {
                        continue;
                    }
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    match memchr::memmem::find(&b[i + hashes + 1..], &close) {
                        Some(n) => i += hashes + 1 + n + close.len(),
                        None => return true,
                    }
                } else if matches!(word, "b" | "c") && b.get(i) == Some(&b'"') {
                    match skip_string(b, i + 1) {
                        Some(end) => i = end,
                        None => return true,
                    }
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// The end of a string literal whose body starts at `at`, past its closing quote.
fn skip_string(b: &[u8], mut at: usize) -> Option<usize> {
    while at < b.len() {
        match b[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::names_perf_buffer_in_code as in_code;

    #[test]
    fn perf_buffer_in_comments_and_literals_is_not_code() {
        for text in [
            "// PerfBufferBuilder::new(&maps.events)\nfn main() {}",
            "/* outer /* PerfBuffer */ still a comment: PerfBuffer */ fn f() {}",
            "const S: &str = \"PerfBufferBuilder \\\" PerfBuffer\";",
            "const R: &str = r#\"a \"quoted\" PerfBuffer\"#;",
            "const B: &[u8] = br\"PerfBuffer\";",
            "const C: &core::ffi::CStr = c\"PerfBuffer\";",
            "fn f<'a>(x: &'a str) -> char { let _ = '\"'; let _ = '\\''; 'x' } // PerfBuffer",
            "/// Reads the PerfBuffer.\nfn g() {}",
            "fn main() {}",
        ] {
            assert!(!in_code(text), "{text}");
        }
    }

    #[test]
    fn perf_buffer_in_code_is_found() {
        for text in [
            "use libbpf_rs::PerfBufferBuilder;",
            "use libbpf_rs::PerfBufferBuilder as Builder;",
            "struct S<'a> { pb: libbpf_rs::PerfBuffer<'a> }",
            "let s = \"done\"; let pb = PerfBufferBuilder::new(&m).build()?;",
            "let r = r#\"x\"#; let t = 'a'; PerfBuffer",
            "macro_rules! m { () => { PerfBufferBuilder::new } }",
            "let c = 'é'; let pb: PerfBuffer;",
            // An escaped quote as the character: '\'' ends at its second quote.
            "let q = ['\\'','\"']; let pb: PerfBuffer; let d = '\"';",
            // Unsure (an unterminated literal): counts as code, and the parser says what is wrong.
            "let s = \"PerfBuffer",
            "/* PerfBuffer",
        ] {
            assert!(in_code(text), "{text}");
        }
    }
}
