//! libbpf-rs user space: `PerfBufferBuilder::new(MAP).sample_cb(CB)...build()` chains become
//! `RingBufferBuilder::new()` + `add(MAP, CB)` + `build()`, callbacks lose their CPU argument
//! and return 0, lost-sample callbacks go, imports and `PerfBuffer` types follow.
//!
//! `syn` finds the code; every change is a byte-range edit on the original text, so comments
//! and formatting outside the edited spans stay as they were.

use std::collections::HashSet;
use std::ops::Range;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use syn::{
    Block, Expr, ExprClosure, FnArg, ImplItemFn, ItemFn, ItemUse, Local, Pat, ReturnType, Stmt,
    UseTree,
};

use super::check::{Kept, wants_check_ahead};
use super::context::{Analysis, Consumer, Report};
use crate::edit::Edit;
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;
use crate::source::{indent_at, line_end_incl, line_start};

/// Builder methods that end a chain's error handling.
const TAIL_METHODS: &[&str] = &[
    "context",
    "with_context",
    "expect",
    "unwrap",
    "map_err",
    "unwrap_or_else",
];

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

/// All the parts of the file the analysis looks at.
#[derive(Default)]
struct Collect<'ast> {
    exprs: Vec<&'ast Expr>,
    locals: Vec<&'ast Local>,
    fns: Vec<Func<'ast>>,
    uses: Vec<&'ast ItemUse>,
    consts: Vec<&'ast syn::ItemConst>,
    impl_ty: Option<&'ast syn::Type>,
    /// The file defines a type named PerfBuffer or PerfBufferBuilder, or re-exports one
    /// (`pub use crate::perf_buffer::PerfBuffer;`): it is libbpf-rs itself, a crate with a
    /// perf buffer of its own, or a wrapper's API, not a user of libbpf-rs's.
    provides_perf_buffer: bool,
    /// A private import of one of those names from somewhere other than libbpf_rs (a
    /// wrapper crate, a module that re-exports it): the import and the path's first name.
    imported_elsewhere: Option<(&'ast syn::Ident, String)>,
}

/// The names whose definitions make a file the perf buffer's provider, not a user.
fn is_api_name(i: &syn::Ident) -> bool {
    i == "PerfBuffer" || i == "PerfBufferBuilder"
}

/// The API names a use tree brings in, each with the first name of its path (None when the
/// tree starts with the name itself).
fn imported_api_names<'a>(
    t: &'a UseTree,
    root: Option<&'a syn::Ident>,
    out: &mut Vec<(&'a syn::Ident, Option<&'a syn::Ident>)>,
) {
    match t {
        UseTree::Path(p) => imported_api_names(&p.tree, root.or(Some(&p.ident)), out),
        UseTree::Group(g) => g
            .items
            .iter()
            .for_each(|i| imported_api_names(i, root, out)),
        UseTree::Name(n) if is_api_name(&n.ident) => out.push((&n.ident, root)),
        UseTree::Rename(r) if is_api_name(&r.ident) => out.push((&r.ident, root)),
        _ => {}
    }
}

#[derive(Clone, Copy)]
struct Func<'ast> {
    /// The type of the `impl` block holding a method.
    owner: Option<&'ast syn::Type>,
    sig: &'ast syn::Signature,
    block: &'ast Block,
    attrs: &'ast [syn::Attribute],
    span: Span,
}

impl<'ast> Visit<'ast> for Collect<'ast> {
    fn visit_expr(&mut self, e: &'ast Expr) {
        self.exprs.push(e);
        visit::visit_expr(self, e);
    }
    fn visit_local(&mut self, l: &'ast Local) {
        self.locals.push(l);
        visit::visit_local(self, l);
    }
    fn visit_item_fn(&mut self, f: &'ast ItemFn) {
        self.fns.push(Func {
            owner: None,
            sig: &f.sig,
            block: &f.block,
            attrs: &f.attrs,
            span: f.span(),
        });
        visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast ImplItemFn) {
        self.fns.push(Func {
            owner: self.impl_ty,
            sig: &f.sig,
            block: &f.block,
            attrs: &f.attrs,
            span: f.span(),
        });
        visit::visit_impl_item_fn(self, f);
    }
    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let outer = self.impl_ty.replace(&i.self_ty);
        visit::visit_item_impl(self, i);
        self.impl_ty = outer;
    }
    fn visit_item_const(&mut self, c: &'ast syn::ItemConst) {
        self.consts.push(c);
        visit::visit_item_const(self, c);
    }
    fn visit_item_use(&mut self, u: &'ast ItemUse) {
        self.uses.push(u);
        let mut names = Vec::new();
        imported_api_names(&u.tree, None, &mut names);
        if !names.is_empty() && !matches!(u.vis, syn::Visibility::Inherited) {
            self.provides_perf_buffer = true;
        }
        if let Some((name, root)) = names
            .into_iter()
            .find(|(_, r)| r.is_none_or(|r| r != "libbpf_rs"))
        {
            self.imported_elsewhere
                .get_or_insert((name, root.map_or_else(String::new, |r| r.to_string())));
        }
        visit::visit_item_use(self, u);
    }
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let defined = match i {
            syn::Item::Struct(x) => Some(&x.ident),
            syn::Item::Enum(x) => Some(&x.ident),
            syn::Item::Union(x) => Some(&x.ident),
            syn::Item::Type(x) => Some(&x.ident),
            syn::Item::Trait(x) => Some(&x.ident),
            _ => None,
        };
        self.provides_perf_buffer |= defined.is_some_and(is_api_name);
        visit::visit_item(self, i);
    }
}

struct Rs<'a> {
    file: &'a SourceFile,
    edits: Vec<Edit>,
    diags: Vec<Diagnostic>,
    /// Every identifier of the file, macro arguments included: (text, start, end).
    idents: Vec<(String, usize, usize)>,
    /// Every string literal: (start, end).
    strings: Vec<(usize, usize)>,
    explained: Vec<(usize, usize)>,
    done_fns: HashSet<usize>,
    /// The sample_cb and lost_cb arguments of every chain in the file.
    cb_args: Vec<(usize, usize)>,
}

impl Report for Rs<'_> {
    fn report_to(&mut self) -> (&SourceFile, &mut Vec<Diagnostic>) {
        (self.file, &mut self.diags)
    }
}

impl Rs<'_> {
    fn src(&self) -> &str {
        &self.file.text
    }
    fn range(&self, span: Span) -> (usize, usize) {
        (
            offset(self.file, span.start()),
            offset(self.file, span.end()),
        )
    }
    fn text(&self, span: Span) -> &str {
        let (s, e) = self.range(span);
        &self.file.text[s..e]
    }
    /// Uses of identifier `name` inside `start..end`.
    fn uses_in(&self, name: &str, start: usize, end: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .idents
            .iter()
            .filter(|(t, s, e)| t == name && *s >= start && *e <= end)
            .map(|x| x.1)
            .collect();
        // Format strings capture variables by name: `println!("{cpu}")`.
        for &(s, e) in self
            .strings
            .iter()
            .filter(|&&(s, e)| s >= start && e <= end)
        {
            let lit = &self.file.text[s..e];
            if lit.contains(&format!("{{{name}}}")) || lit.contains(&format!("{{{name}:")) {
                v.push(s);
            }
        }
        v.sort();
        v
    }
    /// Uses of `name` anywhere in the file except the callback arguments of chains.
    fn other_uses(&self, name: &str, except: (usize, usize)) -> Vec<usize> {
        self.uses_in(name, 0, self.file.text.len())
            .into_iter()
            .filter(|&u| u != except.0 && !self.cb_args.iter().any(|&(a, b)| u >= a && u < b))
            .collect()
    }
}

/// Identifiers and string literals of the file, macro arguments included, in one walk of
/// the token stream (a lexer for another language would take `'a` for a character literal).
fn collect_tokens(
    ts: TokenStream,
    rs: &Rs,
    idents: &mut Vec<(String, usize, usize)>,
    strings: &mut Vec<(usize, usize)>,
) {
    for tt in ts {
        match tt {
            TokenTree::Ident(i) => {
                let (s, e) = rs.range(i.span());
                idents.push((i.to_string(), s, e));
            }
            TokenTree::Literal(l) => {
                let text = l.to_string();
                let body = text.trim_start_matches(['r', 'b', 'c', '#']);
                let (s, e) = rs.range(l.span());
                // Doc comments reach the token stream as `#[doc = "..."]`: not literals.
                if body.starts_with('"') && !rs.file.text[s..e].starts_with('/') {
                    strings.push((s, e));
                }
            }
            TokenTree::Group(g) => collect_tokens(g.stream(), rs, idents, strings),
            _ => {}
        }
    }
}

/// `syn::parse_file`, and the tokens the file was parsed from (asking the tree for them
/// again, `to_token_stream`, rebuilt every token).
fn parse(text: &str) -> syn::Result<(proc_macro2::TokenStream, syn::File)> {
    let content = text.strip_prefix('\u{feff}').unwrap_or(text);
    // `#![attr]` opens many crate roots and is no shebang; whatever else starts with `#!`,
    // parse_file tells (it skips a shebang line).
    if content
        .strip_prefix("#!")
        .is_some_and(|rest| !rest.trim_start().starts_with('['))
    {
        let ast = syn::parse_file(text)?;
        return Ok((ast.to_token_stream(), ast));
    }
    let tokens: proc_macro2::TokenStream = content.parse()?;
    let ast = syn::parse2(tokens.clone())?;
    Ok((tokens, ast))
}

/// The analysis of a Rust file, and what `check_ahead` needs when it has edits: the byte
/// ranges of its top-level items.
pub fn analyze(file: &SourceFile) -> (Analysis, Option<Kept>) {
    let mut a = Analysis::default();
    let (tokens, ast) = match parse(&file.text) {
        Ok(f) => f,
        Err(e) => {
            let at = offset(file, e.span().start());
            a.diags.push(Diagnostic::at(
                file,
                at,
                Rule::ParseError,
                format!("cannot parse this Rust file: {e}"),
            ));
            return (a, None);
        }
    };
    // Byte offsets come from proc-macro2's span locations; a build without them (cargo fuzz
    // sets cfg(fuzzing), which turns them off) would place every edit at offset 0.
    if ast
        .items
        .first()
        .is_some_and(|i| i.span().start().line == 0)
    {
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::InternalError,
            "this build of bpf-migrate has no source positions for Rust; the file is left untouched",
        ));
        return (a, None);
    }
    let mut col = Collect::default();
    col.visit_file(&ast);
    // Not a user of libbpf-rs's perf buffer: nothing to migrate here (a BPF side that only
    // this file reads finds no reader and is refused at linking).
    if col.provides_perf_buffer {
        return (a, None);
    }
    let mut rs = Rs {
        file,
        edits: Vec::new(),
        diags: Vec::new(),
        idents: Vec::new(),
        explained: Vec::new(),
        done_fns: HashSet::new(),
        cb_args: Vec::new(),
        strings: Vec::new(),
    };
    if let Some((name, root)) = &col.imported_elsewhere {
        let from = if root.is_empty() {
            "a path of its own".to_string()
        } else {
            format!("`{root}`")
        };
        let at = rs.range(name.span()).0;
        rs.report(at, Rule::UnsupportedForm, format!("`{name}` is imported from {from}, not from libbpf_rs: bpf-migrate migrates libbpf-rs's perf buffer, used directly"), "import it from libbpf_rs, or migrate by hand");
        a.diags.extend(rs.diags);
        return (a, None);
    }
    let (mut idents, mut strings) = (Vec::new(), Vec::new());
    collect_tokens(tokens, &rs, &mut idents, &mut strings);
    rs.idents = idents;
    rs.strings = strings;

    for (s, _) in rs.src().match_indices(".skel.rs\"") {
        let before = &rs.src()[..s];
        let start = before.rfind(['"', '/']).map(|i| i + 1).unwrap_or(0);
        a.bpf_sources.push(format!("{}.bpf.c", &before[start..]));
    }

    // Aliases: `use libbpf_rs::PerfBufferBuilder as PerfBuilder;`.
    let mut builder_names = vec!["PerfBufferBuilder".to_string()];
    let mut ring_imported = false;
    for u in &col.uses {
        walk_use(&u.tree, &mut |t| match t {
            UseTree::Rename(r) if r.ident == "PerfBufferBuilder" => {
                builder_names.push(r.rename.to_string())
            }
            UseTree::Name(n) if n.ident == "RingBufferBuilder" => ring_imported = true,
            _ => {}
        });
    }

    // Chains, outermost first.
    let mut chains: Vec<Chain> = col
        .exprs
        .iter()
        .filter_map(|e| match_chain(&rs, e, &builder_names))
        .collect();
    let ranges: Vec<(usize, usize)> = chains.iter().map(|c| c.whole).collect();
    chains.retain(|c| {
        !ranges
            .iter()
            .any(|r| *r != c.whole && r.0 <= c.whole.0 && c.whole.1 <= r.1)
    });
    for c in &chains {
        for e in [c.sample, c.lost].into_iter().flatten() {
            let r = rs.range(e.span());
            rs.cb_args.push(r);
        }
    }
    for c in &chains {
        rs.explained.push(c.whole);
        rewrite_chain(&mut rs, &col, c, &mut a);
    }

    // Imports and types.
    for u in &col.uses {
        rewrite_use(&mut rs, u, ring_imported);
    }
    let chain_ranges: Vec<(usize, usize)> = chains.iter().map(|c| c.whole).collect();
    let idents = rs.idents.clone();
    for (t, s, e) in &idents {
        let inside = |r: &[(usize, usize)]| r.iter().any(|&(a, b)| *s >= a && *e <= b);
        if inside(&chain_ranges) || inside(&rs.explained) {
            continue;
        }
        if t == "PerfBuffer" {
            rs.edits.push(Edit::replace(
                *s,
                *e,
                "RingBuffer",
                Rule::RsPerfBufferBuilder,
            ));
        } else if builder_names.contains(t) {
            rs.report(*s, Rule::UnsupportedForm, format!("`{t}` is used here in a form bpf-migrate does not understand"), "bpf-migrate rewrites PerfBufferBuilder::new(map)...build() chains written as one expression; migrate this use by hand");
        }
    }
    // Messages follow a migration made in this file; alone, they are someone else's words.
    if !rs.edits.is_empty() {
        messages(&mut rs, &chain_ranges);
    }
    a.edits.extend(rs.edits);
    a.diags.extend(rs.diags);
    let kept = wants_check_ahead(&a).then(|| Kept::Rust(item_ranges(file, &ast)));
    (a, kept)
}

/// The byte offset in `file` of a proc-macro2 position (lines from 1, columns in characters):
/// positions are those of the text after a byte-order mark, which syn and the token parser
/// skip, so a column on line 1 is one character short of the file's.
fn offset(file: &SourceFile, at: proc_macro2::LineColumn) -> usize {
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
/// so the file parses whenever they do. False when an edit is not inside one item (between
/// items, in an inner attribute), or a touched item does not parse or shares its last line
/// with what follows: a full parse decides then.
pub fn items_parse(items: &[Range<usize>], new: &str, spans: &[crate::edit::Span]) -> bool {
    let mut touched: Vec<Range<usize>> = Vec::new();
    for s in spans {
        match items
            .iter()
            .find(|r| r.start <= s.start && s.old_end <= r.end)
        {
            Some(r) if touched.last() == Some(r) => {}
            Some(r) => touched.push(r.clone()),
            None => return false,
        }
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

fn walk_use<'a>(t: &'a UseTree, f: &mut dyn FnMut(&'a UseTree)) {
    f(t);
    match t {
        UseTree::Path(p) => walk_use(&p.tree, f),
        UseTree::Group(g) => g.items.iter().for_each(|i| walk_use(i, f)),
        _ => {}
    }
}

struct Chain<'a> {
    /// The whole expression, error handling included.
    whole: (usize, usize),
    /// `.context(...)?` and the like after `.build()`, as written.
    tail: String,
    /// `libbpf_rs::` when the builder was named by a path.
    prefix: String,
    map: &'a Expr,
    sample: Option<&'a Expr>,
    lost: Option<&'a Expr>,
    pages: Option<&'a Expr>,
    expr: &'a Expr,
}

fn match_chain<'a>(rs: &Rs, e: &'a Expr, names: &[String]) -> Option<Chain<'a>> {
    let whole_e = e;
    let mut e = e;
    loop {
        match e {
            Expr::Try(t) => e = &t.expr,
            Expr::MethodCall(m) if TAIL_METHODS.contains(&m.method.to_string().as_str()) => {
                e = &m.receiver
            }
            Expr::Paren(p) => e = &p.expr,
            _ => break,
        }
    }
    let Expr::MethodCall(build) = e else {
        return None;
    };
    if build.method != "build" || !build.args.is_empty() {
        return None;
    }
    let build_end = rs.range(build.span()).1;
    let (mut sample, mut lost, mut pages) = (None, None, None);
    let mut cur = &*build.receiver;
    loop {
        match cur {
            Expr::MethodCall(m) => {
                let name = m.method.to_string();
                let arg = m.args.first();
                match name.as_str() {
                    "sample_cb" => sample = arg,
                    "lost_cb" => lost = arg,
                    "pages" => pages = arg,
                    _ => return None,
                }
                cur = &m.receiver;
            }
            Expr::Call(c) => {
                let Expr::Path(p) = &*c.func else { return None };
                let segs: Vec<String> = p
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                if segs.len() < 2
                    || segs[segs.len() - 1] != "new"
                    || !names.contains(&segs[segs.len() - 2])
                    || c.args.len() != 1
                {
                    return None;
                }
                let prefix: String = segs[..segs.len() - 2]
                    .iter()
                    .map(|s| format!("{s}::"))
                    .collect();
                let (ws, we) = rs.range(whole_e.span());
                return Some(Chain {
                    whole: (ws, we),
                    tail: rs.src()[build_end..we].to_string(),
                    prefix,
                    map: &c.args[0],
                    sample,
                    lost,
                    pages,
                    expr: whole_e,
                });
            }
            _ => return None,
        }
    }
}

/// The map's field name on the skeleton: `&skel.maps.events`, `skel.maps().events()`,
/// `skel.maps_mut().events()`, `obj.map("events")`.
fn map_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Reference(r) => map_name(&r.expr),
        Expr::Paren(p) => map_name(&p.expr),
        Expr::Field(f) => match &f.member {
            syn::Member::Named(i) => Some(i.to_string()),
            _ => None,
        },
        Expr::MethodCall(m) => {
            let name = m.method.to_string();
            match name.as_str() {
                "unwrap" | "expect" => map_name(&m.receiver),
                "map" | "map_mut" => match m.args.first() {
                    Some(Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    })) => Some(s.value()),
                    _ => None,
                },
                "maps" | "maps_mut" => None,
                _ if m.args.is_empty() => Some(name),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A map that is a parameter of the enclosing function: every call of the function in this
/// file must pass the same skeleton map.
fn map_from_callers(rs: &Rs, col: &Collect, e: &Expr, func: Option<Func>) -> Option<String> {
    let Expr::Path(p) = e else { return None };
    let param = p.path.get_ident()?.to_string();
    let f = func?;
    let idx = f
        .sig
        .inputs
        .iter()
        .filter(|a| matches!(a, FnArg::Typed(_)))
        .position(
            |a| matches!(a, FnArg::Typed(t) if pat_name(&t.pat).as_deref() == Some(param.as_str())),
        )?;
    let fname = f.sig.ident.to_string();
    // `Owner::new(...)` or `Self::new(...)` for an associated function, `name(...)` for a free one.
    let owner = f.owner.and_then(|t| match t {
        syn::Type::Path(tp) => tp.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    });
    let calls_it = |fp: &syn::ExprPath| {
        let segs: Vec<String> = fp
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        match (&owner, &segs[..]) {
            (Some(o), [.., ty, name]) => *name == fname && (ty == o || ty == "Self"),
            (None, [name]) => *name == fname,
            _ => false,
        }
    };
    let mut found: Option<String> = None;
    for ex in &col.exprs {
        let args: Vec<&Expr> = match ex {
            Expr::Call(c) if matches!(&*c.func, Expr::Path(fp) if calls_it(fp)) => {
                c.args.iter().collect()
            }
            Expr::MethodCall(m) if m.method == fname => m.args.iter().collect(),
            _ => continue,
        };
        let name = map_name(args.get(idx)?)?;
        match &found {
            Some(f) if *f != name => return None,
            _ => found = Some(name),
        }
    }
    let _ = rs;
    found
}

fn enclosing_fn<'ast>(rs: &Rs, col: &Collect<'ast>, at: (usize, usize)) -> Option<Func<'ast>> {
    col.fns
        .iter()
        .filter(|f| {
            let (s, e) = rs.range(f.span);
            s <= at.0 && at.1 <= e
        })
        .min_by_key(|f| {
            let (s, e) = rs.range(f.span);
            e - s
        })
        .copied()
}

fn rewrite_chain(rs: &mut Rs, col: &Collect, c: &Chain, a: &mut Analysis) {
    let src = rs.src().to_string();
    let at = c.whole.0;
    let func = enclosing_fn(rs, col, c.whole);
    let Some(map) = map_name(c.map).or_else(|| map_from_callers(rs, col, c.map, func)) else {
        rs.report(rs.range(c.map.span()).0, Rule::UnresolvedMap, format!("cannot tell which map `{}` is", rs.text(c.map.span())), "bpf-migrate follows &skel.maps.NAME, skel.maps().NAME() and obj.map(\"NAME\"); migrate by hand");
        return;
    };
    let Some(sample) = c.sample else {
        rs.report(
            at,
            Rule::CallbackForm,
            "this PerfBufferBuilder has no sample_cb",
            "migrate by hand",
        );
        return;
    };
    let Some(cb_text) = callback(rs, col, sample, func, &map) else {
        return;
    };
    if let Some(l) = c.lost {
        lost_callback(rs, col, l, func);
    }
    let mut pages = c
        .pages
        .and_then(|p| rs.text(p.span()).replace('_', "").parse::<u64>().ok());
    if let Some(p) = c.pages.filter(|_| pages.is_none()) {
        match page_const(rs, col, p) {
            Some(v) => pages = v,
            None => {
                rs.report(rs.range(p.span()).0, Rule::UnsupportedForm, format!("the page count `{}` is chosen at run time; it would be left unused (a dead option or field warns in Rust)", rs.text(p.span())), "a ring buffer's size is the BPF map's max_entries: remove the option, or make the page count a literal, then run bpf-migrate again");
                return;
            }
        }
    }

    // A builder variable that does not clash with a name already in the function.
    let fn_range = func.map(|f| rs.range(f.span)).unwrap_or((0, src.len()));
    let builder = ["builder", "ringbuf_builder", "rb_builder"]
        .into_iter()
        .find(|n| rs.uses_in(n, fn_range.0, fn_range.1).is_empty())
        .unwrap_or("ringbuf_builder");
    let map_text = rs.text(c.map.span()).to_string();
    // Error handling written over several lines is copied onto one.
    let tail: String = message_text(&c.tail).lines().map(str::trim).collect();
    let new = format!("{}RingBufferBuilder::new()", c.prefix);
    let add = format!("{builder}.add({map_text}, {cb_text})");
    let local = col.locals.iter().find(|l| {
        l.init
            .as_ref()
            .is_some_and(|i| std::ptr::eq(&*i.expr, c.expr))
    });
    match local {
        Some(l) => {
            let (ls, le) = rs.range(l.span());
            let indent = indent_at(&src, ls).to_string();
            let pat = rs.text(l.pat.span()).replace("PerfBuffer", "RingBuffer");
            let text = if tail.is_empty() {
                format!(
                    "let mut {builder} = {new};\n{indent}let {pat} = {add}.map(|_| ()).and_then(|_| {builder}.build());"
                )
            } else {
                format!(
                    "let mut {builder} = {new};\n{indent}{add}{tail};\n{indent}let {pat} = {builder}.build(){tail};"
                )
            };
            rs.explained.push((ls, le));
            rs.edits
                .push(Edit::replace(ls, le, text, Rule::RsPerfBufferBuilder));
        }
        None => {
            let text = if tail.is_empty() {
                format!(
                    "{{ let mut {builder} = {new}; {add}.map(|_| ()).and_then(|_| {builder}.build()) }}"
                )
            } else {
                format!(
                    "{{\n{i}    let mut {builder} = {new};\n{i}    {add}{tail};\n{i}    {builder}.build(){tail}\n{i}}}",
                    i = indent_at(&src, at)
                )
            };
            rs.edits.push(Edit::replace(
                c.whole.0,
                c.whole.1,
                text,
                Rule::RsPerfBufferBuilder,
            ));
        }
    }
    a.consumers.push(Consumer {
        map,
        offset: at,
        pages,
    });
}

/// A page count named by a `const`: its value, and the const goes when nothing else uses it.
/// `None` when the expression is not such a constant.
fn page_const(rs: &mut Rs, col: &Collect, p: &Expr) -> Option<Option<u64>> {
    let Expr::Path(path) = p else { return None };
    let name = path.path.segments.last()?.ident.to_string();
    let item = col.consts.iter().find(|c| c.ident == name)?;
    let value = match &*item.expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => i.base10_parse::<u64>().ok(),
        _ => None,
    };
    let (is, ie) = rs.range(item.span());
    let def = rs.range(item.ident.span());
    let (ps, pe) = rs.range(p.span());
    let used_elsewhere = rs
        .uses_in(&name, 0, rs.file.text.len())
        .into_iter()
        .any(|u| u != def.0 && !(u >= ps && u < pe));
    if !used_elsewhere {
        let mut s = is;
        if let Some(first) = item.attrs.first() {
            s = s.min(rs.range(first.span()).0);
        }
        let (a, b) = item_lines(&rs.file.text, s, ie);
        rs.edits.push(Edit::delete(a, b, Rule::RsPerfBufferBuilder));
    }
    Some(value)
}

/// Text with messages that name the perf buffer updated.
fn message_text(s: &str) -> String {
    s.replace("perf buffer", "ring buffer")
        .replace("Perf buffer", "Ring buffer")
        .replace("perfbuf", "ringbuf")
}

/// String literals elsewhere in the file that name the perf buffer.
fn messages(rs: &mut Rs, skip: &[(usize, usize)]) {
    let src = rs.src().to_string();
    for (s, e) in rs.strings.clone() {
        if skip.iter().any(|&(a, b)| s >= a && e <= b) {
            continue;
        }
        let lit = &src[s..e];
        let new = lit
            .replace("perf buffer", "ring buffer")
            .replace("Perf buffer", "Ring buffer");
        if new != lit {
            rs.edits
                .push(Edit::replace(s, e, new, Rule::PerfBufferMessage));
        }
    }
}

/// The callback's new text (closures are rewritten in place in the copied text; functions are
/// edited where they are defined and keep their name).
fn callback(
    rs: &mut Rs,
    col: &Collect,
    cb: &Expr,
    func: Option<Func>,
    map: &str,
) -> Option<String> {
    let src = rs.src().to_string();
    let (cs, ce) = rs.range(cb.span());
    match cb {
        Expr::Closure(cl) => {
            let mut edits = Vec::new();
            if !closure_edits(rs, cl, map, &mut edits) {
                return None;
            }
            let mut rel: Vec<Edit> = edits
                .into_iter()
                .map(|e| Edit {
                    start: e.start - cs,
                    end: e.end - cs,
                    ..e
                })
                .collect();
            if crate::edit::normalize(&mut rel).is_err() {
                return None;
            }
            Some(crate::edit::apply(&src[cs..ce], &rel, false))
        }
        Expr::Path(p) => {
            let name = p.path.segments.last().unwrap().ident.to_string();
            // A local closure: `let cb = |cpu, data| ...;`.
            if p.path.segments.len() == 1
                && let Some(f) = func
            {
                let (fs, fe) = rs.range(f.span);
                let local = col.locals.iter().find(|l| {
                    let (ls, le) = rs.range(l.span());
                    ls >= fs
                        && le <= fe
                        && ls < cs
                        && matches!(&l.pat, Pat::Ident(i) if i.ident == name)
                });
                if let Some(l) = local {
                    let Some(Expr::Closure(cl)) = l.init.as_ref().map(|i| &*i.expr) else {
                        rs.report(cs, Rule::CallbackForm, format!("the sample callback `{name}` is not a closure or a function bpf-migrate can see"), "migrate by hand");
                        return None;
                    };
                    let mut edits = Vec::new();
                    if !closure_edits(rs, cl, map, &mut edits) {
                        return None;
                    }
                    rs.edits.extend(edits);
                    return Some(src[cs..ce].to_string());
                }
            }
            let Some(f) = col.fns.iter().find(|f| f.sig.ident == name).copied() else {
                rs.report(
                    cs,
                    Rule::CallbackForm,
                    format!("the sample callback `{name}` is not defined in this file"),
                    "bpf-migrate rewrites callbacks defined in the same file; migrate by hand",
                );
                return None;
            };
            let (fs, fe) = rs.range(f.span);
            let def_ident = rs.range(f.sig.ident.span());
            let others = rs.other_uses(&name, def_ident);
            if let Some(&u) = others.first() {
                rs.report(
                    u,
                    Rule::CallbackForm,
                    format!("the sample callback `{name}` is also used here"),
                    "its signature changes to fn(&[u8]) -> i32; migrate by hand",
                );
                return None;
            }
            if rs.done_fns.insert(fs) {
                let inputs: Vec<&FnArg> = f.sig.inputs.iter().collect();
                if inputs.len() != 2 || !matches!(f.sig.output, ReturnType::Default) {
                    rs.report(fs, Rule::CallbackForm, format!("the sample callback `{name}` does not look like fn(cpu: i32, data: &[u8])"), "migrate by hand");
                    return None;
                }
                let cpu = match inputs[0] {
                    FnArg::Typed(t) => pat_name(&t.pat),
                    _ => None,
                };
                let (bs, be) = rs.range(f.block.span());
                if let Some(cpu) = cpu.filter(|c| !rs.uses_in(c, bs, be).is_empty()) {
                    let u = rs.uses_in(&cpu, bs, be)[0];
                    rs.report(u, Rule::CallbackUsesCpu, format!("the sample callback `{name}` uses `{cpu}`, the CPU that produced the event; a ring buffer does not report it"), "add a cpu field to the event, set it with bpf_get_smp_processor_id() on the BPF side, read that field instead, then run bpf-migrate again");
                    return None;
                }
                let p0 = rs.range(inputs[0].span()).0;
                let p1 = rs.range(inputs[1].span()).0;
                rs.edits.push(Edit::delete(p0, p1, Rule::RsCallback));
                let close = rs.range(f.sig.paren_token.span.close()).1;
                rs.edits
                    .push(Edit::insert(close, " -> i32", Rule::RsCallback));
                let mut edits = Vec::new();
                block_edits(rs, f.block, &mut edits);
                rs.edits.extend(edits);
                let _ = fe;
            }
            Some(src[cs..ce].to_string())
        }
        _ => {
            rs.report(
                cs,
                Rule::CallbackForm,
                "the sample callback is neither a closure nor a function name",
                "migrate by hand",
            );
            None
        }
    }
}

fn pat_name(p: &Pat) -> Option<String> {
    match p {
        Pat::Ident(i) => Some(i.ident.to_string()),
        Pat::Type(t) => pat_name(&t.pat),
        _ => None,
    }
}

/// `|cpu, data| body` → `|data| { body; 0 }` (or the block with returns fixed).
fn closure_edits(rs: &mut Rs, cl: &ExprClosure, map: &str, edits: &mut Vec<Edit>) -> bool {
    let inputs: Vec<&Pat> = cl.inputs.iter().collect();
    let at = rs.range(cl.span()).0;
    if inputs.len() != 2 || !matches!(cl.output, ReturnType::Default) {
        rs.report(
            at,
            Rule::CallbackForm,
            format!("the sample callback for `{map}` does not look like |cpu, data| ..."),
            "migrate by hand",
        );
        return false;
    }
    let (bs, be) = rs.range(cl.body.span());
    if let Some(cpu) = pat_name(inputs[0]) {
        let uses = rs.uses_in(&cpu, bs, be);
        if let Some(&u) = uses.first() {
            rs.report(u, Rule::CallbackUsesCpu, format!("the sample callback for `{map}` uses `{cpu}`, the CPU that produced the event; a ring buffer does not report it"), "add a cpu field to the event, set it with bpf_get_smp_processor_id() on the BPF side, read that field instead, then run bpf-migrate again");
            return false;
        }
    }
    let p0 = rs.range(inputs[0].span()).0;
    let p1 = rs.range(inputs[1].span()).0;
    edits.push(Edit::delete(p0, p1, Rule::RsCallback));
    match &*cl.body {
        Expr::Block(b) if b.label.is_none() => block_edits(rs, &b.block, edits),
        body => {
            let (s, e) = rs.range(body.span());
            let mut rets = Vec::new();
            returns(rs, body, &mut rets);
            edits.extend(rets);
            edits.push(Edit::insert(s, "{ ", Rule::RsCallback));
            edits.push(Edit::insert(e, "; 0 }", Rule::RsCallback));
        }
    }
    true
}

/// `return;` → `return 0;` in `e`, not in nested closures or items.
fn returns(rs: &Rs, e: &Expr, out: &mut Vec<Edit>) {
    struct V<'r, 'a> {
        rs: &'r Rs<'a>,
        out: &'r mut Vec<Edit>,
    }
    impl<'ast> Visit<'ast> for V<'_, '_> {
        fn visit_expr_closure(&mut self, _: &'ast ExprClosure) {}
        fn visit_item(&mut self, _: &'ast syn::Item) {}
        fn visit_expr_return(&mut self, r: &'ast syn::ExprReturn) {
            if r.expr.is_none() {
                let (s, e) = self.rs.range(r.span());
                self.out
                    .push(Edit::replace(s, e, "return 0", Rule::RsCallback));
            }
        }
    }
    V { rs, out }.visit_expr(e);
}

/// A callback body returns 0 on every path.
fn block_edits(rs: &Rs, b: &Block, edits: &mut Vec<Edit>) {
    let src = rs.src();
    for s in &b.stmts {
        struct V<'r, 'a> {
            rs: &'r Rs<'a>,
            out: &'r mut Vec<Edit>,
        }
        impl<'ast> Visit<'ast> for V<'_, '_> {
            fn visit_expr(&mut self, e: &'ast Expr) {
                returns(self.rs, e, self.out);
            }
            fn visit_item(&mut self, _: &'ast syn::Item) {}
        }
        V { rs, out: edits }.visit_stmt(s);
    }
    let (bs, be) = rs.range(b.span());
    match b.stmts.last() {
        None => {
            let close = be - 1;
            let ls = line_start(src, close);
            if src[ls..close].trim().is_empty() && src[bs + 1..close].contains('\n') {
                let indent = format!("{}    ", indent_at(src, close));
                edits.push(Edit::insert(ls, format!("{indent}0\n"), Rule::RsCallback));
            } else {
                edits.push(Edit::replace(bs + 1, close, " 0 ", Rule::RsCallback));
            }
        }
        Some(last) => {
            let (_, le) = rs.range(last.span());
            let indent = indent_at(src, rs.range(last.span()).0).to_string();
            match last {
                Stmt::Expr(Expr::Return(_), _) => {}
                Stmt::Expr(e, None) if block_like(e) => {
                    edits.push(Edit::insert(le, format!("\n{indent}0"), Rule::RsCallback))
                }
                Stmt::Expr(_, None) => {
                    edits.push(Edit::insert(le, format!(";\n{indent}0"), Rule::RsCallback))
                }
                Stmt::Macro(m) if m.semi_token.is_none() => {
                    edits.push(Edit::insert(le, format!(";\n{indent}0"), Rule::RsCallback))
                }
                _ => edits.push(Edit::insert(le, format!("\n{indent}0"), Rule::RsCallback)),
            }
        }
    }
}

fn block_like(e: &Expr) -> bool {
    matches!(
        e,
        Expr::If(_)
            | Expr::Match(_)
            | Expr::Block(_)
            | Expr::Loop(_)
            | Expr::While(_)
            | Expr::ForLoop(_)
            | Expr::Unsafe(_)
    )
}

/// The lost-sample callback goes: a function only it used is removed, and so is a closure held
/// in a variable, with the variables only it captured (they would be unused).
fn lost_callback(rs: &mut Rs, col: &Collect, lost: &Expr, func: Option<Func>) {
    let src = rs.src().to_string();
    let (ls, le) = rs.range(lost.span());
    const HELP: &str = "when the ring is full, bpf_ringbuf_output() returns -EAGAIN in the BPF program: count those failures there (e.g. in a per-CPU array) and read the counter from user space";
    let mut closure_range = (ls, le);
    if let Expr::Path(p) = lost {
        let name = p.path.segments.last().unwrap().ident.to_string();
        let fn_ident = col
            .fns
            .iter()
            .find(|f| f.sig.ident == name)
            .map(|f| rs.range(f.sig.ident.span()))
            .unwrap_or((usize::MAX, 0));
        let others = rs.other_uses(&name, fn_ident);
        // A local closure.
        let local = func.and_then(|f| {
            let (fs, fe) = rs.range(f.span);
            col.locals.iter().find(|l| {
                let (a, b) = rs.range(l.span());
                a >= fs && b <= fe && a < ls && matches!(&l.pat, Pat::Ident(i) if i.ident == name)
            })
        });
        let local_ident = local.map(|l| rs.range(l.pat.span()).0);
        let others: Vec<usize> = others
            .into_iter()
            .filter(|&u| Some(u) != local_ident)
            .collect();
        if let Some(l) = local
            && others.is_empty()
        {
            let (a, b) = rs.range(l.span());
            let (ds, de) = item_lines(&src, a, b);
            rs.edits.push(Edit::delete(ds, de, Rule::RsLostCallback));
            closure_range = (a, b);
        } else if let Some(f) = col.fns.iter().find(|f| f.sig.ident == name)
            && others.is_empty()
        {
            let (mut fs, fe) = rs.range(f.span);
            if let Some(first) = f.attrs.first() {
                fs = fs.min(rs.range(first.span()).0);
            }
            let (s, e) = item_lines(&src, fs, fe);
            rs.edits.push(Edit::delete(s, e, Rule::RsLostCallback));
            rs.report(
                fs,
                Rule::RsLostCallback,
                format!("the lost-sample callback `{name}` is removed: a ring buffer has none"),
                HELP,
            );
            return;
        } else {
            rs.report(
                ls,
                Rule::RsLostCallback,
                format!(
                    "the lost-sample callback `{name}` is no longer called: a ring buffer has none"
                ),
                HELP,
            );
            return;
        }
    }
    // Variables the closure captured that nothing else uses, and then those that only the
    // removed lets used (`let lost = ...; let lost2 = lost.clone();`).
    if let Some(f) = func {
        let (fs, fe) = rs.range(f.span);
        let mut removed: Vec<(usize, usize)> = vec![closure_range, (ls, le)];
        loop {
            let mut changed = false;
            for l in &col.locals {
                let (a, b) = rs.range(l.span());
                if a < fs || b > fe || removed.iter().any(|&(x, y)| a >= x && b <= y) {
                    continue;
                }
                let Pat::Ident(i) = &l.pat else { continue };
                let name = i.ident.to_string();
                let uses = rs.uses_in(&name, fs, fe);
                let in_removed = uses
                    .iter()
                    .any(|&u| removed.iter().any(|&(x, y)| u >= x && u < y));
                let elsewhere = uses.iter().any(|&u| {
                    let in_own = u >= a && u < b;
                    let in_removed = removed.iter().any(|&(x, y)| u >= x && u < y);
                    !in_own && !in_removed
                });
                if in_removed && !elsewhere {
                    let (ds, de) = item_lines(&src, a, b);
                    rs.edits.push(Edit::delete(ds, de, Rule::RsLostCallback));
                    removed.push((a, b));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
    rs.report(
        ls,
        Rule::RsLostCallback,
        "the lost-sample callback is removed: a ring buffer has none",
        HELP,
    );
}

/// The lines of an item, with one blank line around it so that no double blank line is left.
fn item_lines(src: &str, s: usize, e: usize) -> (usize, usize) {
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

/// `use libbpf_rs::PerfBufferBuilder;` → `RingBufferBuilder` (the alias dropped: the new code
/// names RingBufferBuilder), or removed when RingBufferBuilder is imported already.
fn rewrite_use(rs: &mut Rs, u: &ItemUse, ring_imported: bool) {
    let src = rs.src().to_string();
    let mut edits = Vec::new();
    fn visit(
        rs: &Rs,
        t: &UseTree,
        parent: Option<&syn::UseGroup>,
        ring_imported: bool,
        item: &ItemUse,
        src: &str,
        out: &mut Vec<Edit>,
    ) {
        match t {
            UseTree::Path(p) => visit(rs, &p.tree, None, ring_imported, item, src, out),
            UseTree::Group(g) => g
                .items
                .iter()
                .for_each(|i| visit(rs, i, Some(g), ring_imported, item, src, out)),
            UseTree::Name(n) if n.ident == "PerfBufferBuilder" || n.ident == "PerfBuffer" => {
                let (s, e) = rs.range(n.ident.span());
                if n.ident == "PerfBufferBuilder" && ring_imported {
                    out.push(remove_use_tree(rs, t, parent, item, src));
                } else {
                    out.push(Edit::replace(
                        s,
                        e,
                        n.ident.to_string().replace("Perf", "Ring"),
                        Rule::RsPerfBufferBuilder,
                    ));
                }
            }
            UseTree::Rename(r) if r.ident == "PerfBufferBuilder" => {
                let (s, e) = rs.range(r.span());
                if ring_imported {
                    out.push(remove_use_tree(rs, t, parent, item, src));
                } else {
                    out.push(Edit::replace(
                        s,
                        e,
                        "RingBufferBuilder",
                        Rule::RsPerfBufferBuilder,
                    ));
                }
            }
            _ => {}
        }
    }
    visit(rs, &u.tree, None, ring_imported, u, &src, &mut edits);
    for e in edits {
        rs.explained.push((e.start, e.end));
        rs.edits.push(e);
    }
}

fn remove_use_tree(
    rs: &Rs,
    t: &UseTree,
    group: Option<&syn::UseGroup>,
    item: &ItemUse,
    src: &str,
) -> Edit {
    let (s, e) = rs.range(t.span());
    match group {
        Some(g) if g.items.len() > 1 => {
            // Take the separator after the item (or before it, for the last one).
            let after = &src[e..];
            let trimmed = after.trim_start();
            if let Some(rest) = trimmed.strip_prefix(',') {
                let ws = rest.len() - rest.trim_start().len();
                Edit::delete(
                    s,
                    e + (after.len() - trimmed.len()) + 1 + ws,
                    Rule::RsPerfBufferBuilder,
                )
            } else {
                let before = src[..s].trim_end();
                let comma = before.rfind(',').unwrap_or(s);
                Edit::delete(comma, e, Rule::RsPerfBufferBuilder)
            }
        }
        _ => {
            let (is, ie) = rs.range(item.span());
            Edit::delete(
                line_start(src, is),
                line_end_incl(src, ie.saturating_sub(1)),
                Rule::RsPerfBufferBuilder,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_perf_buffer_in_code as in_code;

    /// A file that defines or re-exports the perf buffer's names is its provider: left alone.
    /// One that imports them from elsewhere than libbpf_rs is reported, not migrated.
    #[test]
    fn providers_are_left_alone_and_other_perf_buffers_reported() {
        let chain = "fn f(m: &libbpf_rs::Map) { let _pb = PerfBufferBuilder::new(m).sample_cb(|_c: i32, _d: &[u8]| {}).build(); }\n";
        let analyse = |head: &str| {
            let text = format!("{head}\n{chain}");
            let file = crate::source::SourceFile::new("src/x.rs".into(), "x.rs".into(), text);
            super::analyze(&file).0
        };
        for provider in [
            "pub use crate::perf_buffer::PerfBuffer;\nuse crate::perf_buffer::PerfBufferBuilder;",
            "pub(crate) use libbpf_rs::PerfBufferBuilder;",
            "pub use libbpf_rs::{MapCore, PerfBuffer};\nuse libbpf_rs::PerfBufferBuilder;",
            "use libbpf_rs::PerfBufferBuilder;\npub struct PerfBuffer { fd: i32 }",
            "use libbpf_rs::PerfBufferBuilder;\nmod inner { pub type PerfBufferBuilder = u8; }",
        ] {
            let a = analyse(provider);
            assert!(
                a.edits.is_empty() && a.diags.is_empty(),
                "{provider}: {:?}",
                a.diags
            );
        }
        for (other, from) in [
            ("use bpfkit::PerfBufferBuilder;", "`bpfkit`"),
            (
                "use crate::bpf::{Skel, PerfBufferBuilder as PerfBufferBuilder};",
                "`crate`",
            ),
        ] {
            let a = analyse(other);
            assert!(a.edits.is_empty(), "{other}");
            assert_eq!(a.diags.len(), 1, "{other}");
            assert!(a.diags[0].message.contains(from), "{}", a.diags[0].message);
        }
        for user in [
            "use libbpf_rs::PerfBufferBuilder;",
            "use ::libbpf_rs::{PerfBufferBuilder, MapCore};",
        ] {
            assert!(!analyse(user).edits.is_empty(), "{user}");
        }
    }

    #[test]
    fn shebang_lines_and_crate_attributes() {
        // A shebang line is skipped; `#![...]` (even spaced out) is an inner attribute.
        for (text, shebang, attrs) in [
            ("#!/usr/bin/env rust-script\nfn main() {}", true, 0),
            ("#![allow(dead_code)]\nfn main() {}", false, 1),
            ("\u{feff}#! [allow(dead_code)]\nfn main() {}", false, 1),
            ("#!\n[test]\nfn main() {}", false, 1),
        ] {
            let (tokens, ast) = super::parse(text).unwrap();
            assert_eq!(ast.shebang.is_some(), shebang, "{text:?}");
            assert_eq!(ast.attrs.len(), attrs, "{text:?}");
            assert_eq!(ast.items.len(), 1, "{text:?}");
            assert!(tokens.to_string().contains("main"), "{text:?}");
        }
    }

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
