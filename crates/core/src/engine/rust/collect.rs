//! What the analysis reads from a file: the parse, the items, expressions and `let`s a syn
//! visitor collects, and the identifiers and string literals of the token stream.

use crate::edit::Edit;
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use syn::{Block, Expr, ImplItemFn, ItemFn, ItemUse, Local, Pat};

use super::Rs;
use super::imports::{imported_api_names, is_api_name};
use super::items::offset;
use crate::engine::context::Analysis;
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// All the parts of the file the analysis looks at.
#[derive(Default)]
pub(super) struct Collect<'ast> {
    pub(super) exprs: Vec<&'ast Expr>,
    pub(super) locals: Vec<&'ast Local>,
    pub(super) fns: Vec<Func<'ast>>,
    pub(super) uses: Vec<&'ast ItemUse>,
    pub(super) consts: Vec<&'ast syn::ItemConst>,
    pub(super) impl_ty: Option<&'ast syn::Type>,
    /// The file defines a type named PerfBuffer or PerfBufferBuilder, or re-exports one
    /// (`pub use crate::perf_buffer::PerfBuffer;`): it is libbpf-rs itself, a crate with a
    /// perf buffer of its own, or a wrapper's API, not a user of libbpf-rs's.
    pub(super) provides_perf_buffer: bool,
    /// A private import of one of those names from somewhere other than libbpf_rs (a
    /// wrapper crate, a module that re-exports it): the import and the path's first name.
    pub(super) imported_elsewhere: Option<(&'ast syn::Ident, String)>,
}

#[derive(Clone, Copy)]
pub(super) struct Func<'ast> {
    /// The type of the `impl` block holding a method.
    pub(super) owner: Option<&'ast syn::Type>,
    pub(super) sig: &'ast syn::Signature,
    pub(super) block: &'ast Block,
    pub(super) attrs: &'ast [syn::Attribute],
    pub(super) span: Span,
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

/// The `let` binding `name` in function `f` nearest before offset `before` (the one in scope
/// there, shadowing aside): a closure held in a variable (`let cb = |cpu, data| ...;`), a
/// skeleton.
pub(super) fn local_named<'ast>(
    rs: &Rs,
    col: &Collect<'ast>,
    f: Func,
    name: &str,
    before: usize,
) -> Option<&'ast Local> {
    let (fs, fe) = rs.range(f.span);
    col.locals.iter().copied().rfind(|l| {
        let (ls, le) = rs.range(l.span());
        ls >= fs && le <= fe && ls < before && binding(&l.pat).is_some_and(|i| i.ident == name)
    })
}

/// The receiver of a skeleton's load that `l` binds: `OPEN` of `let skel = OPEN.load()...;`.
pub(super) fn load_of(l: &Local) -> Option<&Expr> {
    let init = l.init.as_ref()?;
    match super::builder::without_error_handling(&init.expr).0 {
        Expr::MethodCall(m) if m.method == "load" && m.args.is_empty() => Some(&*m.receiver),
        _ => None,
    }
}

/// The variable `l` binds made `mut` where it is not (an edit, once however many ask).
pub(super) fn make_mut(rs: &mut Rs, l: &Local) {
    if let Some(b) = binding(&l.pat).filter(|b| b.mutability.is_none()) {
        let at = rs.range(b.ident.span()).0;
        let edit = Edit::insert(at, "mut ".to_string(), Rule::RsPerfBufferBuilder);
        if !rs
            .edits
            .iter()
            .any(|e| (e.start, e.end, &e.text) == (at, at, &edit.text))
        {
            rs.edits.push(edit);
        }
    }
}

/// The name a `let` or a parameter binds (`x`, `mut x`, `x: T`).
pub(super) fn binding(pat: &Pat) -> Option<&syn::PatIdent> {
    match pat {
        Pat::Ident(i) => Some(i),
        Pat::Type(t) => binding(&t.pat),
        _ => None,
    }
}

/// Identifiers and string literals of the file, macro arguments included, in one walk of
/// the token stream (a lexer for another language would take `'a` for a character literal).
pub(super) fn collect_tokens(
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

/// The parse of a Rust file, or the diagnostic that says why there is none.
pub(super) fn parse_reporting(
    file: &SourceFile,
    a: &mut Analysis,
) -> Option<(TokenStream, syn::File)> {
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
            return None;
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
        return None;
    }
    Some((tokens, ast))
}

#[cfg(test)]
mod tests {
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
}
