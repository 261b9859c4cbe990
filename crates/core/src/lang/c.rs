//! C front end: a small lexer (for masking and trigger accounting) and tree-sitter-c parsing.
//!
//! BPF C is full of macros that a plain C grammar misreads (`SEC("...")` after a declarator,
//! `__uint(type, ...)` as a struct member, `__always_inline`). Before parsing, such macros are
//! masked with text of the same length, so every byte offset in the tree is an offset in the
//! original text; the analysis reads macro arguments from the original text.

use std::ops::Range;

use tree_sitter::{Node, Tree};

use super::{Grammar, NodeExt, with_parser};
use crate::edit::Span;

/// A token of C source text, as far as masking and trigger accounting need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    Ident,
    Number,
    Str,
    Char,
    Comment,
    Punct(u8),
}

/// Tokenizes `text[range]`; comments, strings and character literals are single tokens.
pub fn lex(text: &str, range: Range<usize>) -> Vec<(Tok, usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = range.start;
    let end = range.end.min(b.len());
    while i < end {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && i + 1 < end && b[i + 1] == b'/' {
            let s = i;
            while i < end && b[i] != b'\n' {
                i += 1;
            }
            out.push((Tok::Comment, s, i));
        } else if c == b'/' && i + 1 < end && b[i + 1] == b'*' {
            let s = i;
            i += 2;
            while i < end && !(b[i] == b'*' && i + 1 < end && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(end);
            out.push((Tok::Comment, s, i));
        } else if c == b'"' || c == b'\'' {
            let s = i;
            i += 1;
            while i < end && b[i] != c && b[i] != b'\n' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(end);
            out.push((if c == b'"' { Tok::Str } else { Tok::Char }, s, i));
        } else if c == b'_' || c.is_ascii_alphabetic() {
            let s = i;
            while i < end && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            if let Some(close) = raw_string_end(b, s, i, end) {
                i = close;
                out.push((Tok::Str, s, i));
                continue;
            }
            out.push((Tok::Ident, s, i));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < end && (b[i] == b'_' || b[i] == b'.' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push((Tok::Number, s, i));
        } else {
            // Multi-byte UTF-8 characters outside strings and comments are kept whole.
            let len = text[i..].chars().next().map(char::len_utf8).unwrap_or(1);
            out.push((Tok::Punct(c), i, i + len));
            i += len;
        }
    }
    out
}

/// The end of a C++ raw string literal (`R"delim( ... )delim"`, with an encoding prefix or
/// not) whose prefix is `b[s..i]`, if one starts there and closes before `end`. Some C headers
/// are such a literal as a whole (BCC's helpers.h, embedded in a C++ library): their text is
/// a string, not code.
fn raw_string_end(b: &[u8], s: usize, i: usize, end: usize) -> Option<usize> {
    if !matches!(&b[s..i], b"R" | b"LR" | b"uR" | b"UR" | b"u8R") || i >= end || b[i] != b'"' {
        return None;
    }
    let open = i + 1 + b[i + 1..end].iter().take(17).position(|&c| c == b'(')?;
    let delim = &b[i + 1..open];
    if delim.iter().any(|c| b" ()\\\t\x0b\x0c\r\n".contains(c)) {
        return None;
    }
    let mut closing = Vec::with_capacity(delim.len() + 2);
    closing.push(b')');
    closing.extend_from_slice(delim);
    closing.push(b'"');
    let at = memchr::memmem::find(&b[open + 1..end], &closing)?;
    Some(open + 1 + at + closing.len())
}

/// Index of the token closing the parenthesis opened at token `open`.
pub fn matching_paren(toks: &[(Tok, usize, usize)], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.0 {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Macros and attributes that a C grammar misreads in BPF code; masked with spaces.
const MASKED_WORDS: &[&str] = &[
    "__always_inline",
    "__noinline",
    "__weak",
    "__packed",
    "__hidden",
    "__ksym",
    "__kconfig",
    "__kptr",
    "__kptr_ref",
    "__kptr_untrusted",
    "__percpu_kptr",
    "__rcu",
    "__user",
    "__arg_ctx",
    "__arg_nonnull",
    "__arg_trusted",
    "__arg_nullable",
    "__arg_arena",
    "__contains",
    "__uptr",
];

/// Struct-member macros of BTF map definitions; masked as `int _`.
const MEMBER_MACROS: &[&str] = &["__uint", "__type", "__array", "__ulong"];

fn blank(out: &mut [u8], s: usize, e: usize) {
    for c in &mut out[s..e] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// libbpf's CO-RE macros whose argument is a type (`bpf_core_type_exists(struct x)`).
const TYPE_ARG_MACROS: &[&str] = &[
    "bpf_core_type_exists",
    "bpf_core_type_matches",
    "bpf_core_type_size",
    "bpf_core_type_id_local",
    "bpf_core_type_id_kernel",
];

/// Returns `text` with BPF macros masked (same length, same newlines); `toks`, when given,
/// are the tokens of the single range (so that a file is lexed once).
pub fn mask(text: &str, ranges: &[Range<usize>], toks: Option<&[(Tok, usize, usize)]>) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    for r in ranges {
        let owned;
        let toks = match toks {
            Some(t) if ranges.len() == 1 => t,
            _ => {
                owned = lex(text, r.clone());
                &owned[..]
            }
        };
        let mut k = 0;
        while k < toks.len() {
            let (t, s, e) = toks[k];
            if t == Tok::Ident {
                let word = &text[s..e];
                // `__section("maps")` is how some projects (cilium/ebpf's) spell SEC.
                let section = word == "SEC" || word == "__section";
                let call_like = section || MEMBER_MACROS.contains(&word);
                if call_like && matches!(toks.get(k + 1), Some((Tok::Punct(b'('), _, _))) {
                    if let Some(close) = matching_paren(toks, k + 1) {
                        let end = toks[close].2;
                        blank(&mut out, s, end);
                        if !section {
                            out[s..s + 5].copy_from_slice(b"int _");
                        }
                        k = close + 1;
                        continue;
                    }
                } else if MASKED_WORDS.contains(&word) {
                    blank(&mut out, s, e);
                } else if TYPE_ARG_MACROS.contains(&word)
                    && matches!(toks.get(k + 1), Some((Tok::Punct(b'('), _, _)))
                    && let Some((Tok::Ident, ks, ke)) = toks.get(k + 2).copied()
                    && matches!(&text[ks..ke], "struct" | "union" | "enum")
                {
                    // `bpf_core_type_exists(struct task_struct)`: the type's name reads as
                    // an argument.
                    blank(&mut out, ks, ke);
                    k += 3;
                    continue;
                }
            }
            k += 1;
        }
    }
    // Only ASCII bytes were replaced, and only whole tokens: still valid UTF-8.
    out
}

pub struct CParse {
    pub tree: Tree,
    /// The text the tree was parsed from (masked), and how it was masked.
    masked: Vec<u8>,
    placeholders: bool,
    first_branches: bool,
}

/// Parses C in `text`; with `ranges`, only those byte ranges (C embedded in another file).
pub fn parse(text: &str, ranges: Option<&[Range<usize>]>) -> Option<CParse> {
    parse_with(text, ranges, false, None)
}

/// Parses BCC C: as `parse`, and placeholders that tools replace before compiling (`FILTER`,
/// `FILTER_PID` on a line of their own) are masked too.
pub fn parse_bcc(text: &str, ranges: Option<&[Range<usize>]>) -> Option<CParse> {
    parse_with(text, ranges, true, None)
}

/// `parse_bcc` of `ranges`, whose tokens (`lex` of each range, in order) the caller has.
pub fn parse_bcc_lexed(
    text: &str,
    ranges: &[Range<usize>],
    toks: &[(Tok, usize, usize)],
) -> Option<CParse> {
    parse_with(text, Some(ranges), true, Some(toks))
}

/// BCC C (before or after migration), parsed with placeholders masked.
pub fn looks_bcc(text: &str) -> bool {
    [
        "BPF_PERF_OUTPUT",
        "perf_submit",
        "BPF_RINGBUF_OUTPUT",
        ".ringbuf_output(",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// `parse_bcc` for BCC C, else `parse`: the same choice for a file before and after migration,
/// so their error counts compare.
pub fn parse_auto(text: &str, ranges: Option<&[Range<usize>]>) -> Option<CParse> {
    parse_with(text, ranges, looks_bcc(text), None)
}

/// `parse_auto` of one range whose tokens are already known.
pub fn parse_auto_lexed(
    text: &str,
    range: Range<usize>,
    toks: &[(Tok, usize, usize)],
) -> Option<CParse> {
    parse_with(text, Some(&[range]), looks_bcc(text), Some(toks))
}

/// Lines holding nothing but one upper-case identifier (or a format field): text
/// substitution placeholders.
fn mask_placeholders(text: &str, ranges: &[Range<usize>], out: &mut [u8]) {
    for r in ranges {
        let mut pos = r.start;
        for line in text[r.start..r.end.min(text.len())].split_inclusive('\n') {
            let t = line.trim();
            // `FILTER`, or `##FILTER##` as some tools spell it.
            let name = t
                .strip_prefix("##")
                .and_then(|w| w.strip_suffix("##"))
                .unwrap_or(t);
            let word = name.len() >= 2
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && name.chars().any(|c| c.is_ascii_uppercase());
            // `%s` of a %-formatted template, `{name}` of a .format() one.
            let format_spec = t.len() >= 2
                && t.starts_with('%')
                && t[1..t.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == '.')
                && t.ends_with(['s', 'd', 'i', 'u']);
            let format_field = t.len() >= 3
                && t.starts_with('{')
                && t.ends_with('}')
                && is_ident(&t[1..t.len() - 1]);
            let placeholder = word || format_spec || format_field;
            if placeholder {
                let s = pos + line.find(t).unwrap_or(0);
                blank(out, s, s + t.len());
            }
            pos += line.len();
        }
    }
}

/// Words after which a `%s` is a placeholder, not a modulo: C keywords and common type
/// names (`struct %s`, `return %d;`, `u32 %s = ...`).
const BEFORE_A_NAME: &[&str] = &[
    "struct", "union", "enum", "return", "case", "sizeof", "int", "char", "short", "long",
    "unsigned", "signed", "void", "const", "volatile", "static", "bool", "u8", "u16", "u32", "u64",
    "s8", "s16", "s32", "s64", "__u8", "__u16", "__u32", "__u64", "__s32", "__s64",
];

/// At token `k`, a `%`: `Some(true)` when it starts a Python format field (`%s`, `%d`,
/// `%u`, `%i`, `%x` written against the next word) where C wants an operand (not after one:
/// `x %s` is a modulo by `s`), `Some(false)` for `%%`, else `None`. Only BCC C is asked: a
/// %-formatted template's text before Python fills it in.
fn format_spec_at(text: &str, toks: &[(Tok, usize, usize)], k: usize) -> Option<bool> {
    let (_, s, e) = toks[k];
    let (nt, ns, _) = *toks.get(k + 1)?;
    if ns != e {
        return None;
    }
    if nt == Tok::Punct(b'%') {
        return Some(false);
    }
    if nt != Tok::Ident || !text[ns..].starts_with(['s', 'd', 'u', 'i', 'x']) {
        return None;
    }
    let prev = toks[..k].iter().rev().find(|p| p.0 != Tok::Comment);
    let operand_before = prev.is_some_and(|&(pt, ps, pe)| {
        // A line that starts with the field is a statement or declaration of its own.
        let same_line = !text[pe..s].contains('\n');
        same_line
            && match pt {
                Tok::Ident => !BEFORE_A_NAME.contains(&&text[ps..pe]),
                Tok::Number | Tok::Str | Tok::Char => true,
                Tok::Punct(c) => c == b')' || c == b']',
                Tok::Comment => false,
            }
    });
    (!operand_before).then_some(true)
}

/// BCC's table macros, whose arguments are types: `BPF_HASH(start, u32, struct val_t)`.
const BCC_TABLE_MACROS: &[&str] = &[
    "BPF_TABLE",
    "BPF_TABLE_PINNED",
    "BPF_TABLE_PUBLIC",
    "BPF_TABLE_SHARED",
    "BPF_F_TABLE",
    "BPF_HASH",
    "BPF_PERCPU_HASH",
    "BPF_HASH_OF_MAPS",
    "BPF_ARRAY",
    "BPF_PERCPU_ARRAY",
    "BPF_ARRAY_OF_MAPS",
    "BPF_HISTOGRAM",
    "BPF_LPM_TRIE",
    "BPF_PROG_ARRAY",
    "BPF_PERF_ARRAY",
    "BPF_STACK_TRACE",
    "BPF_STACK_TRACE_BUILDID",
    "BPF_QUEUE",
    "BPF_STACK",
    "BPF_DEVMAP",
    "BPF_CPUMAP",
    "BPF_XSKMAP",
    "BPF_SOCKMAP",
    "BPF_SOCKHASH",
    "BPF_CGROUP_ARRAY",
    "BPF_CGROUP_STORAGE",
    "BPF_PERCPU_CGROUP_STORAGE",
    "BPF_SK_STORAGE",
    "BPF_INODE_STORAGE",
    "BPF_TASK_STORAGE",
];

/// BCC's function-defining macros: `TRACEPOINT_PROBE(category, event) { ... }`, and those
/// whose first argument names the traced function and the rest are its parameters
/// (`KFUNC_PROBE(vfs_read, struct file *file)`).
const BCC_PROBE_MACROS: &[(&str, bool)] = &[
    ("TRACEPOINT_PROBE", false),
    ("RAW_TRACEPOINT_PROBE", false),
    ("BPF_ITER", false),
    ("KFUNC_PROBE", true),
    ("KRETFUNC_PROBE", true),
    ("KMOD_RET", true),
    ("LSM_PROBE", true),
];

/// BCC's macros read as the C they stand for, as far as a parser needs: in a table macro's
/// argument that is a type of several words (`struct val_t`, `unsigned long long`, `struct
/// sock *`), all but the last word go, so the macro reads as a call whose arguments are
/// names (every table name stays where it was); a probe macro before a `{` reads as the
/// header `int _(parameters)`; a `##NAME##` placeholder inside a line, as an identifier.
fn mask_bcc_macros(text: &str, toks: &[(Tok, usize, usize)], out: &mut [u8]) {
    let punct = |k: usize, c: u8| matches!(toks.get(k), Some(&(Tok::Punct(p), _, _)) if p == c);
    let mut k = 0;
    while k < toks.len() {
        let (t, s, e) = toks[k];
        // `##NAME##` inside a line (`if (##QUEUE##)`), text the tool puts an expression in:
        // read as an identifier. Alone on its line it is blanked already.
        let hash = Tok::Punct(b'#');
        if t == hash
            && let Some(w) = toks.get(k..k + 5)
            && [w[1].0, w[2].0, w[3].0, w[4].0] == [hash, Tok::Ident, hash, hash]
            && w.windows(2).all(|p| p[0].2 == p[1].1)
            && out[s] == b'#'
        {
            out[s..w[4].2].fill(b'_');
            k += 5;
            continue;
        }
        if t == Tok::Punct(b'%') && out[s] == b'%' {
            match format_spec_at(text, toks, k) {
                // `%s` of a %-formatted template where a name or value goes
                // (`BPF_PERF_OUTPUT(%s)`, `%s.perf_submit(%s, ...)`, `pid != %d`): read as
                // an identifier (`_s`), the one character masked.
                Some(true) => out[s] = b'_',
                // `%%`, a modulo once formatted: one `%`.
                Some(false) => out[toks[k + 1].1] = b' ',
                None => {}
            }
            k += 1;
            continue;
        }
        if t != Tok::Ident || !punct(k + 1, b'(') {
            k += 1;
            continue;
        }
        let word = &text[s..e];
        let table = BCC_TABLE_MACROS.contains(&word);
        let probe = BCC_PROBE_MACROS.iter().find(|m| m.0 == word);
        if !(table || probe.is_some()) {
            k += 1;
            continue;
        }
        let Some(close) = matching_paren(toks, k + 1) else {
            k += 1;
            continue;
        };
        // The top-level arguments, as token index ranges.
        let mut args = Vec::new();
        let (mut depth, mut from) = (0usize, k + 2);
        for (j, tok) in toks.iter().enumerate().take(close).skip(k + 2) {
            match tok.0 {
                Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
                Tok::Punct(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
                Tok::Punct(b',') if depth == 0 => {
                    args.push(from..j);
                    from = j + 1;
                }
                _ => {}
            }
        }
        args.push(from..close);
        if table {
            for a in args {
                let words = toks[a.clone()]
                    .iter()
                    .filter(|x| x.0 != Tok::Comment)
                    .all(|x| x.0 == Tok::Ident || x.0 == Tok::Punct(b'*'));
                let last = toks[a.clone()].iter().rposition(|x| x.0 == Tok::Ident);
                if let (true, Some(last)) = (words, last) {
                    for &(_, s, e) in &toks[a.start..a.start + last] {
                        blank(out, s, e);
                    }
                    for &(_, s, e) in &toks[a.start + last + 1..a.end] {
                        blank(out, s, e);
                    }
                }
            }
        } else if let Some(&(_, params)) = probe
            && punct(close + 1, b'{')
        {
            // `int _(` over the name and `(`, then the parameters, if any, or nothing.
            let keep_from = match (params, args.get(1)) {
                (true, Some(p)) => toks.get(p.start).map_or(toks[close].1, |x| x.1),
                _ => toks[close].1,
            };
            blank(out, s, keep_from);
            out[s..s + 6].copy_from_slice(b"int _(");
        }
        k = close + 1;
    }
}

/// Keeps only the first branch of each `#if`/`#ifdef` and blanks the directives, so that a
/// function header split across `#if ... #else ... #endif` reads as one header.
fn mask_else_branches(text: &str, ranges: &[Range<usize>], out: &mut [u8]) {
    for r in else_branches(text, ranges) {
        blank(out, r.start, r.end);
    }
}

/// What a parse of first branches only does not see: the conditional directives' lines and
/// every branch after the first (the blanks of `mask_else_branches`).
pub fn else_branches(text: &str, ranges: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        let mut pos = r.start;
        // For each open conditional: are we past its first branch?
        let mut stack: Vec<bool> = Vec::new();
        for line in text[r.start..r.end.min(text.len())].split_inclusive('\n') {
            let t = line.trim_start();
            let directive = t.strip_prefix('#').map(|d| {
                d.trim_start()
                    .split(|c: char| !c.is_ascii_alphabetic())
                    .next()
                    .unwrap_or("")
            });
            let skipping = stack.iter().any(|&b| b);
            let line_end = pos + line.trim_end().len();
            let hidden = match directive {
                Some("if" | "ifdef" | "ifndef") => {
                    stack.push(false);
                    Some(pos..line_end)
                }
                Some("else" | "elif" | "elifdef" | "elifndef") if !stack.is_empty() => {
                    *stack.last_mut().unwrap() = true;
                    Some(pos..line_end)
                }
                Some("endif") if !stack.is_empty() => {
                    stack.pop();
                    Some(pos..line_end)
                }
                _ if skipping => Some(pos..pos + line.len()),
                _ => None,
            };
            if let Some(h) = hidden {
                match out.last_mut() {
                    Some(last) if last.end >= h.start => last.end = last.end.max(h.end),
                    _ => out.push(h),
                }
            }
            pos += line.len();
        }
    }
    out
}

/// Parse errors in the C of `ranges` of `text` read with every branch of its conditionals
/// (the parse that `parse_with` may set aside for a first-branch one); `usize::MAX` when
/// the parser gives up.
pub fn errors_with_all_branches(text: &str, ranges: &[Range<usize>], placeholders: bool) -> usize {
    parse_masked(text, Some(ranges), placeholders, false, None)
        .map_or(usize::MAX, |p| error_nodes(p.tree.root_node()).len())
}

fn parse_with(
    text: &str,
    ranges: Option<&[Range<usize>]>,
    placeholders: bool,
    toks: Option<&[(Tok, usize, usize)]>,
) -> Option<CParse> {
    let first = parse_masked(text, ranges, placeholders, false, toks)?;
    if !first.tree.root_node().has_error() || !text.contains("#if") {
        return Some(first);
    }
    // Conditionals may split a declaration: try the first branches alone, keep the better.
    let second = parse_masked(text, ranges, placeholders, true, toks)?;
    let errs = |p: &CParse| error_nodes(p.tree.root_node()).len();
    Some(if errs(&second) < errs(&first) {
        second
    } else {
        first
    })
}

/// `old` (a parse of `old_text`) brought up to `new_text`, the same text with the edits
/// `spans`, masked the same way, re-parsing only what changed; `ranges` are the C in the new
/// text. None when the masks differ outside the edits (an edit that changes how later text
/// lexes): then only a full parse tells.
pub fn reparse(
    old: &CParse,
    old_text: &str,
    new_text: &str,
    ranges: &[Range<usize>],
    spans: &[Span],
) -> Option<CParse> {
    let masked = masked_text(new_text, ranges, None, old.placeholders, old.first_branches);
    let (mut at, mut delta) = (0usize, 0isize);
    for gap in spans
        .iter()
        .map(|s| (s.start, s.old_end, s.new_len))
        .chain([(old_text.len(), old_text.len(), 0)])
    {
        let (start, old_end, new_len) = gap;
        let new_at = at.checked_add_signed(delta)?;
        if old.masked.get(at..start)? != masked.get(new_at..new_at + (start - at))? {
            return None;
        }
        at = old_end;
        delta += new_len as isize - (old_end - start) as isize;
    }
    let mut tree = old.tree.clone();
    super::edit_tree(&mut tree, old_text, new_text, spans);
    let tree = with_parser(Grammar::C, |parser| {
        parser
            .set_included_ranges(&ts_ranges(new_text, ranges))
            .ok()?;
        parser.parse(&masked, Some(&tree))
    })?;
    Some(CParse {
        tree,
        masked,
        placeholders: old.placeholders,
        first_branches: old.first_branches,
    })
}

/// The bytes the C parser reads: `mask`, then placeholders and `#else` branches if asked.
fn masked_text(
    text: &str,
    ranges: &[Range<usize>],
    toks: Option<&[(Tok, usize, usize)]>,
    placeholders: bool,
    first_branches: bool,
) -> Vec<u8> {
    let mut masked = mask(text, ranges, toks);
    if placeholders {
        mask_placeholders(text, ranges, &mut masked);
        // Range by range, as `mask` does (the tokens given are those of a single range), so
        // that a parse and a re-parse of the same text mask it the same way.
        match toks {
            Some(toks) if ranges.len() == 1 => mask_bcc_macros(text, toks, &mut masked),
            _ => {
                for r in ranges {
                    mask_bcc_macros(text, &lex(text, r.clone()), &mut masked);
                }
            }
        }
    }
    if first_branches {
        mask_else_branches(text, ranges, &mut masked);
    }
    masked
}

fn parse_masked(
    text: &str,
    ranges: Option<&[Range<usize>]>,
    placeholders: bool,
    first_branches: bool,
    toks: Option<&[(Tok, usize, usize)]>,
) -> Option<CParse> {
    let whole = [0..text.len()];
    let masked = masked_text(
        text,
        ranges.unwrap_or(&whole),
        toks,
        placeholders,
        first_branches,
    );
    let tree = with_parser(Grammar::C, |parser| {
        parser
            .set_included_ranges(&ranges.map_or(Vec::new(), |r| ts_ranges(text, r)))
            .ok()?;
        parser.parse(&masked, None)
    })?;
    Some(CParse {
        tree,
        masked,
        placeholders,
        first_branches,
    })
}

fn ts_ranges(text: &str, ranges: &[Range<usize>]) -> Vec<tree_sitter::Range> {
    ranges
        .iter()
        .map(|r| tree_sitter::Range {
            start_byte: r.start,
            end_byte: r.end,
            start_point: point_at(text, r.start),
            end_point: point_at(text, r.end),
        })
        .collect()
}

fn point_at(text: &str, off: usize) -> tree_sitter::Point {
    let before = &text.as_bytes()[..off];
    let row = memchr::memchr_iter(b'\n', before).count();
    let col = off - memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    tree_sitter::Point { row, column: col }
}

pub fn text<'a>(node: Node, src: &'a str) -> &'a str {
    &src[node.start_byte()..node.end_byte()]
}

/// All nodes below (and including) `root`, in document order.
pub fn descendants(root: Node) -> Vec<Node> {
    let mut out = Vec::new();
    walk(root, |_| true, |n| out.push(n));
    out
}

/// The named nodes below (and including) `root`, and MISSING ones, in document order: what
/// analyses look up by kind (punctuation and keywords, about half of a tree, left out).
pub fn named_descendants(root: Node) -> Vec<Node> {
    let mut out = Vec::new();
    walk(
        root,
        |_| true,
        |n| {
            if n.is_named() || n.is_missing() {
                out.push(n)
            }
        },
    );
    out
}

/// Visits `root` and the nodes below it in document order, entering a node's children only
/// where `enter` says so.
fn walk<'t>(root: Node<'t>, enter: impl Fn(Node<'t>) -> bool, mut visit: impl FnMut(Node<'t>)) {
    let mut cursor = root.walk();
    // Depth below `root`, so that the walk stops there without asking the cursor for nodes.
    let mut depth = 0usize;
    loop {
        let n = cursor.node();
        visit(n);
        if enter(n) && cursor.goto_first_child() {
            depth += 1;
            continue;
        }
        loop {
            if depth == 0 {
                return;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            cursor.goto_parent();
            depth -= 1;
        }
    }
}

/// The nodes of `all` of one kind (compared by id: `Node::kind` measures and checks a C
/// string on every call).
pub fn of_kind<'t>(all: &[Node<'t>], kind: &str) -> Vec<Node<'t>> {
    let Some(first) = all.first() else {
        return Vec::new();
    };
    let id = super::kind_id(&first.language(), kind);
    all.iter().copied().filter(|n| n.kind_id() == id).collect()
}

/// Nearest ancestor of `node` of the given kind.
pub fn ancestor<'t>(node: Node<'t>, kind: &str) -> Option<Node<'t>> {
    let mut n = node.parent();
    while let Some(p) = n {
        if p.kind() == kind {
            return Some(p);
        }
        n = p.parent();
    }
    None
}

/// The name of the function a call expression calls, when it is a plain identifier.
pub fn call_name<'a>(call: Node, src: &'a str) -> Option<&'a str> {
    let f = call.field("function")?;
    (f.kind() == "identifier").then(|| text(f, src))
}

/// The byte ranges of a call's arguments: the text between the parentheses and commas,
/// trimmed of blanks and of the comments at either end (`8, // pages per CPU` leaves the
/// comment out of both arguments); a comment inside an argument stays in it.
pub fn arg_spans(call: Node) -> Vec<(usize, usize)> {
    let Some(args) = call.field("arguments") else {
        return Vec::new();
    };
    // Per argument, the first and last byte of its pieces that are not comments.
    let mut spans = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut seps = 0;
    let mut cursor = args.walk();
    for child in args.children(&mut cursor) {
        match child.kind() {
            "(" | ")" | "," => {
                if seps > 0 {
                    spans.push(current.take());
                }
                seps += 1;
            }
            "comment" => {}
            _ => {
                let (s, e) = (child.start_byte(), child.end_byte());
                current = Some(current.map_or((s, e), |(cs, _)| (cs, e)));
            }
        }
    }
    if spans.len() == 1 && spans[0].is_none() {
        return Vec::new();
    }
    // An empty argument (`f(a, , b)` does not parse, but an error may leave one) keeps its
    // place as an empty span after its separator.
    let mut out = Vec::with_capacity(spans.len());
    let mut last_end = args.start_byte() + 1;
    for s in spans {
        let span = s.unwrap_or((last_end, last_end));
        last_end = span.1;
        out.push(span);
    }
    out
}

/// The identifier that is the whole of `expr` (through parentheses and casts), if any.
pub fn strip_parens(s: &str) -> &str {
    let mut s = s.trim();
    while s.starts_with('(') && s.ends_with(')') && balanced(&s[1..s.len() - 1]) {
        s = s[1..s.len() - 1].trim();
    }
    s
}

fn balanced(s: &str) -> bool {
    let mut d = 0i32;
    for c in s.chars() {
        match c {
            '(' => d += 1,
            ')' => {
                d -= 1;
                if d < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    d == 0
}

pub fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && cs.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `NULL`, `0`, `nullptr` and the like.
pub fn is_null(s: &str) -> bool {
    matches!(
        strip_parens(s),
        "NULL" | "0" | "nullptr" | "(void *)0" | "((void *)0)"
    )
}

/// Visual column (tabs to 8) of the end of `prefix`.
pub fn visual_width(prefix: &str) -> usize {
    let mut col = 0;
    for c in prefix.chars() {
        if c == '\t' {
            col = (col / 8 + 1) * 8;
        } else {
            col += 1;
        }
    }
    col
}

/// Whitespace reaching visual column `col`: tabs then spaces when `tabs`, else spaces.
pub fn pad_to(col: usize, tabs: bool) -> String {
    if tabs {
        format!("{}{}", "\t".repeat(col / 8), " ".repeat(col % 8))
    } else {
        " ".repeat(col)
    }
}

/// Text for a call to `name(args)` that replaces the call at `start..end` of `src`, laid out
/// like the original: on one line if the original was, else wrapped to the original's width
/// with continuation lines aligned the way the original aligned them.
pub fn layout_call(src: &str, start: usize, end: usize, name: &str, args: &[String]) -> String {
    // An argument that spanned lines is joined: its old continuation indent would not fit
    // its new column (a `//` comment inside it keeps it as it is).
    let joined: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains('\n') && !a.contains("//") {
                a.split('\n').map(str::trim).collect::<Vec<_>>().join(" ")
            } else {
                a.clone()
            }
        })
        .collect();
    let args = &joined[..];
    let orig = &src[start..end];
    let one_line = format!("{name}({})", args.join(", "));
    if !orig.contains('\n') {
        return one_line;
    }
    let line_begin = crate::source::line_start(src, start);
    let prefix = &src[line_begin..start];
    let start_col = visual_width(prefix);
    let line_width = src[line_begin..crate::source::line_end_incl(src, end)]
        .lines()
        .map(visual_width)
        .max()
        .unwrap_or(80);
    let limit = line_width.clamp(80, 100);
    if start_col + one_line.len() + 2 <= limit {
        return one_line;
    }
    // How did the original indent its continuation lines?
    let paren = orig.find('(').unwrap_or(0);
    let open_col = visual_width(&format!("{prefix}{}", &orig[..=paren]));
    let second = orig.split('\n').nth(1).unwrap_or("");
    let cont_ws: String = second
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    let cont_col = visual_width(&cont_ws);
    let tabs = cont_ws.contains('\t') || prefix.starts_with('\t');
    let indent = if cont_col == open_col {
        pad_to(start_col + name.len() + 1, tabs)
    } else {
        cont_ws
    };
    let indent_col = visual_width(&indent);
    // Greedy fill; where that leaves one short argument alone on the last line, break one
    // argument earlier so that it has company.
    let fill = |early: Option<usize>| {
        let mut out = format!("{name}(");
        let mut col = start_col + name.len() + 1;
        let mut breaks = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let piece = if i + 1 == args.len() {
                format!("{a})")
            } else {
                format!("{a},")
            };
            if i > 0 {
                if col + 1 + piece.len() > limit || early == Some(i) {
                    out.push('\n');
                    out.push_str(&indent);
                    col = indent_col;
                    breaks.push(i);
                } else {
                    out.push(' ');
                    col += 1;
                }
            }
            out.push_str(&piece);
            col += piece.len();
        }
        (out, breaks)
    };
    let (out, breaks) = fill(None);
    let n = args.len();
    if n >= 3
        && breaks.last() == Some(&(n - 1))
        && args[n - 1].len() <= 8
        && !breaks.contains(&(n - 2))
    {
        return fill(Some(n - 2)).0;
    }
    out
}

/// Whether the identifier at `start..end` is a name being declared or defined (a function
/// prototype, a variable, an enumerator, a macro) rather than a use of it: a library header
/// that declares `bpf_perf_event_output` or `perf_buffer__new` is not code to migrate.
pub fn is_declared_name(root: Node, start: usize, end: usize) -> bool {
    let Some(mut n) = root.descendant_for_byte_range(start, end) else {
        return false;
    };
    let Some(p) = n.parent() else { return false };
    if matches!(
        p.kind(),
        "enumerator" | "preproc_def" | "preproc_function_def"
    ) && p.field("name") == Some(n)
    {
        return true;
    }
    while let Some(p) = n.parent() {
        match p.kind() {
            "function_declarator"
            | "pointer_declarator"
            | "parenthesized_declarator"
            | "array_declarator"
            | "init_declarator"
                if p.field("declarator") == Some(n) || p.kind() == "parenthesized_declarator" =>
            {
                n = p
            }
            "declaration" | "field_declaration" | "type_definition" | "parameter_declaration" => {
                let mut cursor = p.walk();
                return p
                    .children_by_field_name("declarator", &mut cursor)
                    .any(|d| d == n);
            }
            _ => return false,
        }
    }
    false
}

/// Whether any ERROR or MISSING node of `errors` (`error_nodes`) lies inside `start..end`.
pub fn has_error_in(errors: &[(usize, usize)], start: usize, end: usize) -> bool {
    errors
        .iter()
        .any(|&(s, e)| s < end.max(start + 1) && e > start)
}

/// Byte ranges of ERROR and MISSING nodes, in document order. The walk enters only subtrees
/// that hold an error (`has_error`, kept by tree-sitter on every node).
pub fn error_nodes(root: Node) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    walk(
        root,
        |n| n.has_error(),
        |n| {
            if n.is_error() || n.is_missing() {
                out.push((n.start_byte(), n.end_byte()));
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_length_and_parse_clean() {
        let src = "struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__type(key, u32);\n} events SEC(\".maps\");\n\nSEC(\"tp/sched/sched_process_exec\")\nint handle(void *ctx)\n{\n\treturn 0;\n}\nstatic __always_inline int f(void) { return 1; }\n";
        let m = mask(src, &[0..src.len()], None);
        assert_eq!(m.len(), src.len());
        let p = parse(src, None).unwrap();
        assert!(
            !p.tree.root_node().has_error(),
            "{}",
            p.tree.root_node().to_sexp()
        );
    }

    #[test]
    fn argument_spans_leave_the_comments_at_their_ends_out() {
        let src = "void f(void)\n{\n\tg(a, 8, // pages\n\t  /* cb */ cb /* ! */, x /* in */ + y, h());\n\tk();\n}\n";
        let p = parse(src, None).unwrap();
        let calls: Vec<Node> = descendants(p.tree.root_node())
            .into_iter()
            .filter(|n| n.kind() == "call_expression")
            .collect();
        let texts = |call: Node| -> Vec<&str> {
            arg_spans(call)
                .into_iter()
                .map(|(s, e)| &src[s..e])
                .collect()
        };
        assert_eq!(texts(calls[0]), ["a", "8", "cb", "x /* in */ + y", "h()"]);
        assert!(texts(calls[1]).is_empty());
    }

    /// ERROR and MISSING nodes found by looking at every node.
    fn error_nodes_by_full_walk(root: Node) -> Vec<(usize, usize)> {
        descendants(root)
            .into_iter()
            .filter(|n| n.is_error() || n.is_missing())
            .map(|n| (n.start_byte(), n.end_byte()))
            .collect()
    }

    #[test]
    fn error_walk_finds_what_a_full_walk_finds() {
        for src in [
            "int f(void) { return 1 }\nint g(void) { x = ; }\n",
            "int f(void) { if (a { b(); } }\n",
            "struct { int a; } x = { .a = };\nvoid h(void) { g(1, 2; }\n",
            "int ok(void) { return 0; }\n",
            "}}} int x;\n",
        ] {
            let p = parse(src, None).unwrap();
            let root = p.tree.root_node();
            assert_eq!(error_nodes(root), error_nodes_by_full_walk(root), "{src}");
        }
        // Every fixture's C, each with its last third cut off (errors at the cut).
        let mut dirs =
            vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "c" || x == "h") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let cut = text.floor_char_boundary(text.len() * 2 / 3);
                    for src in [&text[..], &text[..cut]] {
                        let p = parse(src, None).unwrap();
                        let root = p.tree.root_node();
                        assert_eq!(
                            error_nodes(root),
                            error_nodes_by_full_walk(root),
                            "{path:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn section_attributes_are_masked_in_either_spelling() {
        let src = "struct bpf_map_def events __section(\"maps\") = {\n\t.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,\n\t.max_entries = 64,\n};\n__section(\"kprobe/x\") int probe(void *ctx) { return 0; }\n";
        let p = parse(src, None).unwrap();
        let root = p.tree.root_node();
        assert!(!root.has_error(), "{}", root.to_sexp());
        let nodes = descendants(root);
        assert_eq!(of_kind(&nodes, "init_declarator").len(), 1);
        assert_eq!(of_kind(&nodes, "function_definition").len(), 1);
    }

    #[test]
    fn format_fields_of_a_percent_template_parse_as_names() {
        // A tool that makes its C per probe with Python's `%`: names, values and whole
        // lines are format fields until it runs.
        let src = "struct %s\n{\n%s\n        u32 pid;\n};\n\nBPF_PERF_OUTPUT(%s);\n%s\n\nint %s_entry(struct pt_regs *ctx)\n{\n        if (!(%s)) return 0;\n        if (bpf_get_current_pid_tgid() >> 32 != %d) return 0;\n        struct %s __data = {0};\n        __data.pid = 7 %% 3;\n        %s.perf_submit(%s, &__data, sizeof(__data));\n        return 0;\n}\n";
        assert!(parse(src, None).unwrap().tree.root_node().has_error());
        let p = parse_bcc(src, None).unwrap();
        let root = p.tree.root_node();
        assert!(!root.has_error(), "{}", root.to_sexp());
        let nodes = descendants(root);
        let calls: Vec<&str> = of_kind(&nodes, "call_expression")
            .iter()
            .map(|n| text(*n, src))
            .collect();
        assert!(calls.contains(&"BPF_PERF_OUTPUT(%s)"), "{calls:?}");
        assert!(
            calls.contains(&"%s.perf_submit(%s, &__data, sizeof(__data))"),
            "{calls:?}"
        );
        // After an operand, `%` is a modulo, left as it is.
        let modulo = "int f(int a, int s)\n{\n\tevents.perf_submit(ctx, &a, a %s);\n\treturn a%s + (a) %s;\n}\n";
        let p = parse_bcc(modulo, None).unwrap();
        assert!(!p.tree.root_node().has_error());
        assert_eq!(p.masked.iter().filter(|&&c| c == b'%').count(), 3);
    }

    #[test]
    fn bcc_macros_parse_as_the_c_they_stand_for() {
        let src = "BPF_HASH(start, u32, struct start_t);\nBPF_HASH(birth, struct dentry *);\nBPF_HASH(names, u32, const char *);\nBPF_ARRAY(total, unsigned long long, 1);\nBPF_TABLE(\"hash\", struct key_t, u64, counts, 10240);\nBPF_PERCPU_ARRAY(raise, struct counter, NR_SOFTIRQS);\nBPF_PERF_OUTPUT(events);\n\nTRACEPOINT_PROBE(sched, sched_switch)\n{\n\t##FILTER_PID##\n\tif (##QUEUE##)\n\t\tevents.perf_submit(args, &d, sizeof(d));\n\treturn 0;\n}\n\nKFUNC_PROBE(vfs_read, struct file *file, char *buf)\n{\n\treturn 0;\n}\n\nRAW_TRACEPOINT_PROBE(sched_wakeup) { return 0; }\n";
        assert!(parse(src, None).unwrap().tree.root_node().has_error());
        let p = parse_bcc(src, None).unwrap();
        let root = p.tree.root_node();
        assert!(!root.has_error(), "{}", root.to_sexp());
        assert_eq!(p.masked.len(), src.len());
        // Every table name is still an identifier where it was; the probes are functions
        // with the macro's parameters.
        let nodes = descendants(root);
        let idents: Vec<&str> = of_kind(&nodes, "identifier")
            .iter()
            .map(|n| text(*n, src))
            .collect();
        for name in [
            "start",
            "birth",
            "names",
            "total",
            "counts",
            "raise",
            "events",
            "NR_SOFTIRQS",
        ] {
            assert!(idents.contains(&name), "{name}: {idents:?}");
        }
        let functions = of_kind(&nodes, "function_definition");
        assert_eq!(functions.len(), 3);
        let params: Vec<&str> = of_kind(&nodes, "parameter_declaration")
            .iter()
            .map(|n| text(*n, src))
            .collect();
        assert_eq!(params, ["struct file *file", "char *buf"]);
        // A macro of that name that is not followed by a body, or a table macro's argument
        // that is an expression, is left as written.
        for src in [
            "x = TRACEPOINT_PROBE(a, b);\n",
            "BPF_ARRAY(a, u64, 1 << 10);\n",
        ] {
            assert_eq!(
                masked_text(src, &[0..src.len()], None, true, false),
                src.as_bytes()
            );
        }
    }

    #[test]
    fn raw_string_literals_are_one_token() {
        let src = "R\"**(\n#define BPF_PERF_OUTPUT(_name) \\\n  int (*perf_submit) (void *);\n)**\"\nint x = u8R\"(a)\" R\"x(b)x\";";
        let toks = lex(src, 0..src.len());
        let kinds: Vec<Tok> = toks.iter().map(|t| t.0).collect();
        assert_eq!(
            kinds,
            [
                Tok::Str,
                Tok::Ident,
                Tok::Ident,
                Tok::Punct(b'='),
                Tok::Str,
                Tok::Str,
                Tok::Punct(b';')
            ]
        );
        assert_eq!((toks[0].1, toks[0].2), (0, src.find(")**\"").unwrap() + 4));
        // Not a raw string: a macro named R before a string, no `(`, a delimiter too long or
        // with a space, no closing.
        for src in [
            "R \"(x)\"",
            "R\"x\"",
            "R\"12345678901234567(x)12345678901234567\"",
            "R\"a b(x)a b\"",
            "R\"(x\"",
            "Rx\"(x)\"",
        ] {
            assert_eq!(lex(src, 0..src.len())[0].0, Tok::Ident, "{src}");
        }
        // A range (a string's C) that ends on the `R`, with a quote after it.
        assert_eq!(
            lex("x R\"(y)\"", 0..3),
            [(Tok::Ident, 0, 1), (Tok::Ident, 2, 3)]
        );
    }

    #[test]
    fn layout_rewraps_aligned_calls() {
        let src = "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU,\n\t\t\t      e, sizeof(*e));\n";
        let out = layout_call(
            src,
            1,
            src.len() - 2,
            "bpf_ringbuf_output",
            &[
                "&events".into(),
                "e".into(),
                "sizeof(*e)".into(),
                "0".into(),
            ],
        );
        assert_eq!(out, "bpf_ringbuf_output(&events, e, sizeof(*e), 0)");
    }
}
