//! The gate before a parse: which files hold anything to migrate or report (a one-pass
//! trigger search, a token scan that passes over declarations of the API), and which are
//! too big or too deep to parse.

use std::path::Path;

use super::context::{Analysis, Ctx};
use super::rust;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// Strings whose presence makes a C file worth parsing.
pub const C_TRIGGERS: &[&str] = &[
    "PERF_EVENT_ARRAY",
    "perf_event_output",
    "bpf_skb_output",
    "bpf_xdp_output",
    "perf_buffer",
    "BPF_PERF_OUTPUT",
    "perf_submit",
    "kprobe_poll",
    "PerfBuffer",
];

/// A searcher for fixed words. Leftmost-first, not the standard semantics: only then does
/// aho-corasick search with SIMD (Teddy), several times faster on the megabytes of a batch run.
fn word_finder(words: &[&str]) -> aho_corasick::AhoCorasick {
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(words)
        .expect("fixed patterns")
}

/// Whether `text` holds any of `C_TRIGGERS`: one pass over the text, whatever their number
/// (it runs on every file, vmlinux.h among them).
pub fn has_trigger(text: &str) -> bool {
    static FINDER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    FINDER
        .get_or_init(|| word_finder(C_TRIGGERS))
        .is_match(text)
}

/// Whether C text uses (not merely declares) a perf buffer API: a cheap token scan that keeps
/// big headers (vmlinux.h, with its enumerator BPF_MAP_TYPE_PERF_EVENT_ARRAY and the kernel's
/// struct perf_buffer; bpf_helper_defs.h, declaring the helpers) from being parsed.
/// Above this size, `c_needs_parse` looks only around the trigger words first.
const LARGE_FILE: usize = 256 * 1024;

/// `c_needs_parse` on the lines around each trigger word (the two before it, for an
/// enumerator's comma): false only if every mention is an enumerator or a helper declaration.
/// A window that starts inside a comment can only make a mention look like code, which means
/// a parse, never a skipped trigger.
fn c_needs_parse_around_triggers(text: &str) -> bool {
    static FINDER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| word_finder(PARSE_TRIGGERS));
    let ident = |b: u8| b == b'_' || b.is_ascii_alphanumeric();
    let bytes = text.as_bytes();
    finder.find_iter(text).any(|m| {
        let at = m.start();
        if at > 0 && ident(bytes[at - 1]) {
            return false;
        }
        let mut start = crate::source::line_start(text, at);
        for _ in 0..2 {
            if start > 0 {
                start = crate::source::line_start(text, start - 1);
            }
        }
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let toks = c::lex(text, start..end);
        c_needs_parse_in(text, &toks, false)
    })
}

/// Identifiers that make a C file worth parsing where they stand in code (one ending in `_`
/// is a prefix). `c_needs_parse` tests tokens against them; the large-file gate finds them.
const PARSE_TRIGGERS: &[&str] = &[
    "BPF_MAP_TYPE_PERF_EVENT_ARRAY",
    "bpf_perf_event_output",
    "bpf_skb_output",
    "bpf_xdp_output",
    "perf_buffer_",
    "BPF_PERF_OUTPUT",
    "perf_submit",
    "perf_submit_skb",
];

pub fn c_needs_parse(text: &str, toks: &[(Tok, usize, usize)]) -> bool {
    c_needs_parse_in(text, toks, true)
}

/// What an open brace opened, in `c_needs_parse_in`'s scan.
#[derive(Clone, Copy, PartialEq)]
enum Body {
    Enum,
    Struct,
    /// `extern "C" {`: still file scope.
    Extern,
    Other,
}

/// `c_needs_parse` on the whole file's tokens (`whole`), or on a window of lines where the
/// nesting is unknown and only the rules that need no context apply. With the whole file and
/// balanced brackets, declarations are told from uses: enumerators, prototypes and typedefs
/// at file scope, struct tags, and struct members without parentheses (a BTF map's
/// `__uint(type, ...)` has them).
fn c_needs_parse_in(text: &str, toks: &[(Tok, usize, usize)], whole: bool) -> bool {
    let tok = |k: Option<usize>| {
        k.and_then(|k| toks.get(k))
            .map(|&(_, s, e)| &text[s..e])
            .unwrap_or("")
    };
    // The nearest token before or after `k` that is not a comment.
    let prev = |k: usize| (0..k).rev().find(|&j| toks[j].0 != Tok::Comment);
    let next = |k: usize| (k + 1..toks.len()).find(|&j| toks[j].0 != Tok::Comment);
    let is_trigger = |w: &str| {
        PARSE_TRIGGERS.iter().any(|t| match t.strip_suffix('_') {
            // A prefix: `perf_buffer_` stands for the whole `perf_buffer__*` API.
            Some(_) => w.starts_with(t),
            None => w == *t,
        })
    };
    // The nesting is trusted only if brackets balance and never close more than they opened
    // (preprocessor branches can unbalance them).
    let nesting_ok = whole && {
        let mut depth = 0isize;
        let mut ok = true;
        for &(t, _, _) in toks {
            match t {
                Tok::Punct(b'{' | b'(') => depth += 1,
                Tok::Punct(b'}' | b')') => depth -= 1,
                _ => {}
            }
            ok &= depth >= 0;
        }
        ok && depth == 0
    };
    let mut braces: Vec<Body> = Vec::new();
    let mut parens = 0usize;
    let mut k = 0;
    while k < toks.len() {
        let (t, s, e) = toks[k];
        let (p, n) = (prev(k), next(k));
        if nesting_ok && parens == 0 && t == Tok::Ident {
            // A whole declaration, skipped to its `;`.
            let skip = match braces.iter().rfind(|&&b| b != Body::Extern) {
                None if &text[s..e] == "typedef" => declaration_end(toks, k),
                None if tok(n) == "(" && is_prototype_name(text, toks, p) => {
                    declaration_end(toks, k)
                }
                Some(Body::Struct) if matches!(tok(p), ";" | "{") => member_end(toks, k),
                _ => None,
            };
            // Only the perf buffer API's own names are declared so; a map type or a helper
            // between parentheses is a macro's argument (`static DEFINE_MAP(events,
            // BPF_MAP_TYPE_PERF_EVENT_ARRAY);`), and so is an API function standing alone
            // as a parameter (`static DEFINE_CLEANUP(struct perf_buffer *, perf_buffer__free);`).
            let skip = skip.filter(|&end| {
                (k..end).all(|j| {
                    let (t, s, e) = toks[j];
                    let w = &text[s..e];
                    let bare =
                        matches!(tok(prev(j)), "(" | ",") && matches!(tok(next(j)), "," | ")");
                    t != Tok::Ident
                        || !is_trigger(w)
                        || (w.starts_with("perf_buffer_")
                            && !(w.starts_with("perf_buffer__") && bare))
                })
            });
            if let Some(end) = skip {
                k = end + 1;
                continue;
            }
        }
        match t {
            Tok::Punct(b'{') => {
                let tag = p.filter(|&j| toks[j].0 == Tok::Ident).and_then(prev);
                let opener = |kw: &[&str]| kw.contains(&tok(p)) || kw.contains(&tok(tag));
                braces.push(if tok(p) == "\"C\"" && tok(p.and_then(prev)) == "extern" {
                    Body::Extern
                } else if opener(&["enum"]) {
                    Body::Enum
                } else if opener(&["struct", "union"]) {
                    Body::Struct
                } else {
                    Body::Other
                });
            }
            Tok::Punct(b'}') => {
                braces.pop();
            }
            Tok::Punct(b'(') => parens += 1,
            Tok::Punct(b')') => parens = parens.saturating_sub(1),
            Tok::Ident if is_trigger(&text[s..e]) => {
                let before = |j: usize| tok(k.checked_sub(j));
                // `X = 4,` in an enum; `(*bpf_perf_event_output)(...)` or
                // `(* const bpf_perf_event_output)(...)` declaring a helper.
                let enumerator = tok(n) == "=" && matches!(tok(p), "," | "{");
                let helper_decl = (before(1) == "*" && before(2) == "(")
                    || (before(1) == "const" && before(2) == "*" && before(3) == "(");
                let declared = nesting_ok
                    && parens == 0
                    && (
                        // Any enumerator, in an enum body.
                        (braces.last() == Some(&Body::Enum)
                            && matches!(tok(p), "," | "{")
                            && matches!(tok(n), "," | "}" | "="))
                        // A struct tag: `struct perf_buffer_opts {` or `;`.
                        || (matches!(tok(p), "struct" | "union" | "enum")
                            && matches!(tok(n), "{" | ";"))
                        // The name a `#define` defines.
                        || (before(1) == "define" && before(2) == "#")
                    );
                if !(enumerator || helper_decl || declared) {
                    return true;
                }
            }
            _ => {}
        }
        k += 1;
    }
    false
}

/// Whether the token after `p` names a function that a prototype declares: the token `p`
/// before it is `*` or a type's identifier, not on a preprocessor line (`#endif` then
/// `BPF_PERF_OUTPUT(events);` is a use).
fn is_prototype_name(text: &str, toks: &[(Tok, usize, usize)], p: Option<usize>) -> bool {
    const NOT_A_TYPE: &[&str] = &[
        "return",
        "else",
        "do",
        "case",
        "goto",
        "sizeof",
        "typeof",
        "__typeof__",
        "defined",
    ];
    let Some(&(t, s, e)) = p.and_then(|p| toks.get(p)) else {
        return false;
    };
    let type_before = match t {
        Tok::Punct(b'*') => true,
        Tok::Ident => !NOT_A_TYPE.contains(&&text[s..e]),
        _ => false,
    };
    type_before && !on_preprocessor_line(text, s)
}

/// Whether `at` is on a `#` line or on a line continuing one.
fn on_preprocessor_line(text: &str, at: usize) -> bool {
    let mut line = crate::source::line_start(text, at);
    loop {
        // A byte-order mark or block comments may come before the `#`.
        let mut rest = text[line..].trim_start_matches('\u{feff}').trim_start();
        while let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        }
        if rest.starts_with('#') {
            return true;
        }
        // A backslash continues a line even with spaces after it (GCC warns, but does).
        // Only that line's own trailing blanks: a continued line may be empty, and ends there.
        if line == 0
            || !text[..line - 1]
                .trim_end_matches([' ', '\t', '\r'])
                .ends_with('\\')
        {
            return false;
        }
        line = crate::source::line_start(text, line - 1);
    }
}

/// The `;` that ends the declaration starting at token `k` (a prototype's parameters and
/// attributes, a typedef), or None when a body or an initializer comes first.
fn declaration_end(toks: &[(Tok, usize, usize)], k: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, &(t, _, _)) in toks.iter().enumerate().skip(k) {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.checked_sub(1)?,
            Tok::Punct(b';') if depth == 0 => return Some(j),
            Tok::Punct(b'{' | b'}' | b'=') => return None,
            _ => {}
        }
    }
    None
}

/// The `;` that ends the struct member declared from token `k`, if it has no parentheses,
/// braces or initializer (`perf_buffer_sample_fn sample_cb;`).
fn member_end(toks: &[(Tok, usize, usize)], k: usize) -> Option<usize> {
    for (j, &(t, _, _)) in toks.iter().enumerate().skip(k) {
        match t {
            Tok::Punct(b';') => return Some(j),
            Tok::Punct(b'(' | b')' | b'{' | b'}' | b'=') => return None,
            _ => {}
        }
    }
    None
}

/// Whether a file's text may hold anything to migrate or report: a trigger string, and, for
/// a large C header (vmlinux.h), a trigger that is not just an enumerator or a helper
/// declaration (told from a few lines around each mention, without lexing megabytes), and
/// for Rust, a PerfBuffer name in code. Discovery asks before keeping a file (one it turns
/// down is counted as scanned, never held); `analyze` asks again, for callers that skip it.
pub fn worth_analysing(path: &Path, text: &str) -> bool {
    if is_go(path) {
        return super::go::worth_analysing(text);
    }
    let c_like = !is_python_source(path, text) && !is_rust(path);
    has_trigger(text)
        && !(c_like
            && (LARGE_FILE..=MAX_PARSED_BYTES).contains(&text.len())
            && !c_needs_parse_around_triggers(text))
        // Rust that names PerfBuffer only in comments and literals (this tool's own source).
        && (!is_rust(path) || rust::names_perf_buffer_in_code(text))
}

/// Where a file shows that it already works with both buffers, picking the ring buffer where
/// the kernel has one (libbpf-tools' `compat.bpf.h`/`compat.c`, a BCC tool that chooses at run
/// time, or what `--strategy compat` wrote): a BPF source that writes one map with both
/// `bpf_ringbuf_output`/`bpf_ringbuf_reserve` and `bpf_perf_event_output`, a loader that makes
/// both kinds of buffer and sets or probes the map's type, a Python tool that opens both. The
/// offset of its perf buffer use; None otherwise.
pub fn picks_both_buffers(path: &Path, text: &str) -> Option<usize> {
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    if is_python_source(path, text) {
        return (text.contains("open_ring_buffer(") && text.contains("open_perf_buffer("))
            .then(|| text.find("open_perf_buffer(").expect("found"));
    }
    if is_rust(path) || is_go(path) {
        return None;
    }
    if text.contains("ring_buffer__new(")
        && text.contains("perf_buffer__new(")
        && (text.contains("bpf_map__set_type(") || text.contains("libbpf_probe_bpf_map_type("))
    {
        return text.find("perf_buffer__new(");
    }
    // The whole text without blanks, only for a file that writes a ring at all.
    if !text.contains("bpf_ringbuf_") {
        return None;
    }
    let flat = squeeze(text);
    for (at, _) in text.match_indices("bpf_perf_event_output(") {
        let args = &text[at + "bpf_perf_event_output(".len()..];
        let Some(map) = args.split(',').nth(1) else {
            continue;
        };
        let map = squeeze(map);
        let map = map.trim_start_matches(['&', '(']).trim_end_matches(')');
        if !map.is_empty()
            && (flat.contains(&format!("bpf_ringbuf_output(&{map},"))
                || flat.contains(&format!("bpf_ringbuf_reserve(&{map},")))
        {
            return Some(at);
        }
    }
    None
}

/// C++ (`.cc`, `.cpp`, `.cxx`): BCC's C++ API and C++ loaders, which bpf-migrate reads only
/// to say that it does not migrate them.
pub fn is_cpp(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e == "cc" || e == "cpp" || e == "cxx")
}

pub fn is_rust(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "rs")
}

pub fn is_go(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "go")
}

/// Whether a file is Python by its name: `.py`, `.python`.
pub fn is_python(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "py" || e == "python")
}

/// Whether a file is Python: by its name, or by a Python shebang on its first line when its
/// name does not say C or Rust (BCC installs its tools without an extension,
/// `tools/opensnoop`; Debian as `/usr/sbin/opensnoop-bpfcc`).
pub fn is_python_source(p: &Path, text: &str) -> bool {
    is_python(p)
        || !p
            .extension()
            .is_some_and(|e| e == "c" || e == "h" || e == "rs" || e == "go")
            && python_shebang(text.as_bytes())
}

/// How many bytes of a file `python_shebang` looks at: a shebang line is short.
pub const SHEBANG_BYTES: usize = 128;

/// Whether `head` (a file's first bytes; `SHEBANG_BYTES` are enough) opens with a shebang
/// that runs Python: `#!/usr/bin/python3`, `#!/usr/bin/python -u`, `#!/usr/bin/env python`,
/// `#!/usr/bin/env -S python3 -u`, `python2.7`...
pub fn python_shebang(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"#!") else {
        return false;
    };
    let rest = &rest[..rest.len().min(SHEBANG_BYTES)];
    // The first line, whole: a line cut off at the limit is not trusted.
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let Ok(line) = std::str::from_utf8(&rest[..end]) else {
        return false;
    };
    let mut words = line.split_ascii_whitespace();
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    let Some(mut program) = words.next().map(base) else {
        return false;
    };
    if program == "env" {
        // env's options (`-S`) and variables (`A=b`) come before the program.
        match words.find(|w| !w.starts_with('-') && !w.contains('=')) {
            Some(w) => program = base(w),
            None => return false,
        }
    }
    program
        .strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Files with a trigger larger than this are reported, not parsed (a generated file, most
/// likely; a parse would take seconds and hundreds of MiB).
pub(super) const MAX_PARSED_BYTES: usize = 16 << 20;

/// Bracket nesting beyond which a file is not parsed: syn and the analyses recurse.
const MAX_NESTING: usize = 256;

fn nesting(text: &str) -> usize {
    // A table and no branches: this runs over every file that is parsed.
    const STEP: [i32; 256] = {
        let mut t = [0; 256];
        (t[b'(' as usize], t[b'[' as usize], t[b'{' as usize]) = (1, 1, 1);
        (t[b')' as usize], t[b']' as usize], t[b'}' as usize]) = (-1, -1, -1);
        t
    };
    let (mut depth, mut max) = (0i32, 0i32);
    for &b in text.as_bytes() {
        depth = (depth + STEP[usize::from(b)]).max(0);
        max = max.max(depth);
    }
    max as usize
}

/// Brackets nested past what the parsers take: an error instead of a parse.
pub(super) fn too_deep(file: &SourceFile) -> Option<Analysis> {
    (nesting(&file.text) > MAX_NESTING).then(|| {
        let mut a = Analysis::default();
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            format!("brackets nest deeper than {MAX_NESTING} levels; the file is left untouched"),
        ));
        a
    })
}

/// Whether the file defines a `perf_buffer__*` function: it is the API's implementation
/// (libbpf.c, vendored as a submodule in many repositories), which uses perf event arrays
/// and perf buffers in its own terms. Nothing there is to migrate or report, as with the
/// prototypes in libbpf.h.
pub(super) fn implements_perf_buffer_api(cx: &Ctx) -> bool {
    let src = cx.src();
    cx.of_kind("function_definition").into_iter().any(|f| {
        let mut d = f.field("declarator");
        while let Some(n) = d {
            if n.kind() == "identifier" {
                return c::text(n, src).starts_with("perf_buffer__");
            }
            d = n.field("declarator").or_else(|| n.named_child(0));
        }
        false
    })
}

#[cfg(test)]
mod tests {
    /// One map written both ways, a loader making both buffers and picking the type, a tool
    /// opening both; not a file with only one of them, nor two maps one of each.
    #[test]
    fn files_that_already_pick_their_buffer() {
        let c = Path::new("x.bpf.c");
        let both = "if (ring)\n\treturn bpf_ringbuf_output(&events, d, n, 0);\nreturn bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, d, n);\n";
        assert!(picks_both_buffers(c, both).is_some());
        let two_maps = both.replace("bpf_ringbuf_output(&events", "bpf_ringbuf_output(&other");
        assert_eq!(picks_both_buffers(c, &two_maps), None);
        let loader = "if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1) use_perf = 1;\npb = perf_buffer__new(fd, 8, cb, NULL, NULL, NULL);\nrb = ring_buffer__new(fd, rcb, NULL, NULL);\n";
        assert!(picks_both_buffers(Path::new("x.c"), loader).is_some());
        let only_perf = "pb = perf_buffer__new(fd, 8, cb, NULL, NULL, NULL);\n";
        assert_eq!(picks_both_buffers(Path::new("x.c"), only_perf), None);
        let py = "b[\"e\"].open_ring_buffer(cb) if ring else b[\"e\"].open_perf_buffer(cb)\n";
        assert!(picks_both_buffers(Path::new("t.py"), py).is_some());
    }

    use std::path::Path;

    use super::*;

    /// Discovery does not keep a Rust file that names the perf buffer only in comments or
    /// string literals; one that uses it in code is analysed.
    #[test]
    fn rust_that_only_mentions_perf_buffers_is_not_kept() {
        let rs = Path::new("src/main.rs");
        assert!(!worth_analysing(
            rs,
            "// was PerfBufferBuilder\nfn main() { let _ = \"PerfBuffer\"; }\n"
        ));
        assert!(worth_analysing(
            rs,
            "use libbpf_rs::PerfBufferBuilder;\nfn main() {}\n"
        ));
        // The same words in C are a reason to look.
        assert!(worth_analysing(Path::new("x.h"), "// PerfBuffer\n"));
    }

    fn needs_parse(text: &str) -> bool {
        c_needs_parse(text, &c::lex(text, 0..text.len()))
    }

    /// Declarations of the API (prototypes, enumerators, helper pointers) are no reason to
    /// parse; a use anywhere else is, including forms that look like a declaration in part.
    #[test]
    fn only_uses_of_the_api_make_a_c_file_worth_parsing() {
        let skipped = [
            "enum bpf_map_type {\n\tBPF_MAP_TYPE_HASH,\n\tBPF_MAP_TYPE_PERF_EVENT_ARRAY,\n\tBPF_MAP_TYPE_ARRAY_OF_MAPS\n};\n",
            "enum { BPF_MAP_TYPE_PERF_EVENT_ARRAY };\n",
            "typedef enum bpf_map_type { X, BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4 } t;\n",
            "LIBBPF_API struct perf_buffer *\nperf_buffer__new(int map_fd, size_t page_cnt,\n\t\t perf_buffer_sample_fn sample_cb, void *ctx,\n\t\t const struct perf_buffer_opts *opts);\n",
            "LIBBPF_API int perf_buffer__poll(struct perf_buffer *pb, int timeout_ms) LIBBPF_DEPRECATED(\"x (y)\");\r\n",
            "static long (* const bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *) 25;\n",
            "static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *) 25;\n",
            // A macro continued onto an empty line ends there.
            "#define LIBBPF_HIDDEN \\\n\nLIBBPF_API int perf_buffer__poll(struct perf_buffer *pb, int timeout_ms);\n",
            "#ifdef __cplusplus\nextern \"C\" {\n#endif\n/* the callback */\ntypedef void (*perf_buffer_sample_fn)(void *ctx, int cpu,\n\t\t\t\t      void *data, __u32 size);\nstruct perf_buffer_opts {\n\tsize_t sz;\n\tperf_buffer_sample_fn sample_cb;\n};\n#define perf_buffer_opts__last_field sz\nstruct perf_buffer_opts;\nvoid start(perf_buffer_sample_fn cb, const struct perf_buffer_opts *opts);\n#ifdef __cplusplus\n}\n#endif\n",
        ];
        for text in skipped {
            assert!(!needs_parse(text), "parsed: {text}");
        }
        let parsed = [
            // Calls, in a body or behind a multiplication that reads like `type *name(`.
            "int f(void) { return perf_buffer__poll(pb, 100); }\n",
            "void f(void) { n = sz * perf_buffer__buffer_cnt(pb); }\n",
            "void f(void) {\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));\n}\n",
            // A positional map definition (not an enum body).
            "struct bpf_map_def SEC(\"maps\") events = {\n\tBPF_MAP_TYPE_PERF_EVENT_ARRAY,\n\tsizeof(int),\n};\n",
            "struct bpf_map_def SEC(\"maps\") events = { BPF_MAP_TYPE_PERF_EVENT_ARRAY };\n",
            // Macro bodies hold expressions.
            "#define POLL perf_buffer__poll(pb, 100);\n",
            "#define POLL(x) \\\n\tx * perf_buffer__buffer_cnt(pb);\n",
            "#define POLL(x) \\\r\n\tx * perf_buffer__buffer_cnt(pb);\r\n",
            // A definition, an initialised declaration, a declaration list.
            "int perf_buffer__poll(struct perf_buffer *pb, int t) { return 0; }\n",
            "int perf_buffer__foo(int a) = 0;\n",
            "int a, perf_buffer__foo(int);\n",
            // Unbalanced braces (preprocessor branches): the nesting is not trusted.
            "void f(void) {\n#if A\n}\n#else\n}\n#endif\nint perf_buffer__poll(struct perf_buffer *pb, int t);\n",
            "void f(void)\n{\n\tint perf_buffer__poll(struct perf_buffer *pb, int t);\n",
            "enum e { A = sizeof(int (*)(void)), B = f(BPF_MAP_TYPE_PERF_EVENT_ARRAY) };\n",
            "__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n",
            "struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n} events SEC(\".maps\");\n",
            "typedef struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n} perf_map_t;\n",
            // A macro's arguments are no parameters.
            "static DEFINE_MAP(events, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n",
            "static DEFINE_TRIVIAL_CLEANUP_FUNC(struct perf_buffer *, perf_buffer__free);\n",
            // Preprocessor lines: continued after trailing spaces, after a comment or a BOM.
            "#define P(x) \\  \n\tx * perf_buffer__poll(pb, 1);\n",
            "/* c */ #define P x * perf_buffer__buffer_cnt(pb);\n",
            "\u{feff}#define P x * perf_buffer__buffer_cnt(pb);\n",
            "struct s {\n\tMAP_TYPE BPF_MAP_TYPE_PERF_EVENT_ARRAY;\n};\n",
            // A use after a preprocessor line, which is no type before a prototype's name.
            "#endif\nBPF_PERF_OUTPUT(events);\n",
            "#include <uapi/linux/ptrace.h>\nBPF_PERF_OUTPUT(events);\n",
            "// events\nBPF_PERF_OUTPUT(events);\n",
            // A struct variable with its options, and a member that holds a call.
            "struct perf_buffer_opts pb_opts = { .sample_cb = handle };\n",
            "struct s { int x[sizeof(perf_buffer_opts)]; };\n",
        ];
        for text in parsed {
            assert!(needs_parse(text), "not parsed: {text}");
        }
        // The library and kernel headers a repository vendors.
        for h in ["/usr/include/bpf/libbpf.h", "/usr/include/linux/bpf.h"] {
            let text = std::fs::read_to_string(h).unwrap();
            assert!(!needs_parse(&text), "{h} would be parsed");
        }
    }

    #[test]
    fn python_is_told_by_name_or_by_the_shebang_of_a_file_without_an_extension() {
        for head in [
            "#!/usr/bin/python3\n",
            "#!/usr/bin/python\n",
            "#!/usr/bin/env python\n",
            "#!/usr/bin/env python3\n",
            "#! /usr/bin/python3 -u\nimport os\n",
            "#!/usr/bin/env -S python3 -u\n",
            "#!/usr/bin/env PYTHONUNBUFFERED=1 python2.7\n",
            "#!/usr/local/bin/python3.12\r\n",
        ] {
            assert!(python_shebang(head.as_bytes()), "{head:?}");
            assert!(is_python_source(Path::new("tools/opensnoop"), head));
            assert!(is_python_source(Path::new("opensnoop-bpfcc"), head));
            // A name that says C is C, whatever its first line.
            assert!(!is_python_source(Path::new("x.c"), head));
        }
        for head in [
            "#!/bin/sh\n",
            "#!/usr/bin/env bash\n",
            "#!/usr/bin/pythonic\n",
            "#!/usr/bin/env\n",
            "# !/usr/bin/python3\n",
            "#include <linux/bpf.h>\n",
            "\u{7f}ELF",
            // A first line longer than the bytes looked at.
            &format!("#!/usr/bin/{}/python3\n", "d".repeat(SHEBANG_BYTES)),
            "#!/usr/bin/python3",
        ] {
            assert!(!python_shebang(head.as_bytes()), "{head:?}");
        }
        assert!(is_python(Path::new("tools/x.python")) && is_python(Path::new("x.py")));
        assert!(!is_python_source(Path::new("tools/run"), "#!/bin/sh\n"));
    }
}
