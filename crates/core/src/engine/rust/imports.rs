//! `use` items and the names they bring: provider detection (a file that defines or
//! re-exports the API, or imports it from elsewhere than libbpf_rs), builder aliases, the
//! rewritten imports and `PerfBuffer` types, and builder names used outside a chain.

use syn::spanned::Spanned;
use syn::{ItemUse, UseTree};

use super::collect::Collect;
use super::{Rs, compat};
use crate::edit::Edit;
use crate::engine::context::Report;
use crate::engine::options::Strategy;
use crate::rules::Rule;
use crate::source::{line_end_incl, line_start};

/// The names whose definitions make a file the perf buffer's provider, not a user.
pub(super) fn is_api_name(i: &syn::Ident) -> bool {
    i == "PerfBuffer" || i == "PerfBufferBuilder"
}

/// The API names a use tree brings in, each with the first name of its path (None when the
/// tree starts with the name itself).
pub(super) fn imported_api_names<'a>(
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

/// A file that imports the API from elsewhere (a wrapper crate, a module that re-exports it)
/// is not migrated: true when it was refused.
pub(super) fn refuse_imported_elsewhere(rs: &mut Rs, col: &Collect) -> bool {
    let Some((name, root)) = &col.imported_elsewhere else {
        return false;
    };
    let from = if root.is_empty() {
        "a path of its own".to_string()
    } else {
        format!("`{root}`")
    };
    let at = rs.range(name.span()).0;
    rs.report(at, Rule::UnsupportedForm, format!("`{name}` is imported from {from}, not from libbpf_rs: bpf-migrate migrates libbpf-rs's perf buffer, used directly"), "import it from libbpf_rs, or migrate by hand");
    true
}

/// Which of the ring buffer's names the file imports already.
#[derive(Clone, Copy, Default)]
pub(super) struct RingImported {
    pub(super) builder: bool,
    pub(super) buffer: bool,
}

/// The names the builder goes by (`PerfBufferBuilder` and its aliases: `use
/// libbpf_rs::PerfBufferBuilder as PerfBuilder;`), and which of `RingBufferBuilder` and
/// `RingBuffer` are imported already.
pub(super) fn builder_names(col: &Collect) -> (Vec<String>, RingImported) {
    let mut builder_names = vec!["PerfBufferBuilder".to_string()];
    let mut ring = RingImported::default();
    for u in &col.uses {
        walk_use(&u.tree, &mut |t| match t {
            UseTree::Rename(r) if r.ident == "PerfBufferBuilder" => {
                builder_names.push(r.rename.to_string())
            }
            UseTree::Name(n) if n.ident == "RingBufferBuilder" => ring.builder = true,
            UseTree::Name(n) if n.ident == "RingBuffer" => ring.buffer = true,
            _ => {}
        });
    }
    (builder_names, ring)
}

fn walk_use<'a>(t: &'a UseTree, f: &mut dyn FnMut(&'a UseTree)) {
    f(t);
    match t {
        UseTree::Path(p) => walk_use(&p.tree, f),
        UseTree::Group(g) => g.items.iter().for_each(|i| walk_use(i, f)),
        _ => {}
    }
}

/// Identifiers outside the chains and the rewritten imports: `PerfBuffer` types become
/// `RingBuffer` (under compat the shim's `CompatBuffer`, without a `libbpf_rs::` path), and a
/// builder name used in another form is refused.
pub(super) fn rewrite_names(
    rs: &mut Rs,
    chain_ranges: &[(usize, usize)],
    builder_names: &[String],
) {
    let compat = rs.opts.strategy == Strategy::Compat;
    let idents = rs.idents.clone();
    for (t, s, e) in &idents {
        let inside = |r: &[(usize, usize)]| r.iter().any(|&(a, b)| *s >= a && *e <= b);
        if inside(chain_ranges) || inside(&rs.explained) {
            continue;
        }
        if t == "PerfBuffer" && compat {
            let before = &rs.src()[..*s];
            let path = ["::libbpf_rs::", "libbpf_rs::"]
                .into_iter()
                .find(|p| before.ends_with(p))
                .map_or(0, str::len);
            rs.edits.push(Edit::replace(
                *s - path,
                *e,
                compat::BUFFER,
                Rule::CompatLoader,
            ));
        } else if t == "PerfBuffer" {
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
}

/// `use libbpf_rs::PerfBufferBuilder;` → `RingBufferBuilder` (the alias dropped: the new code
/// names RingBufferBuilder), or removed when RingBufferBuilder is imported already, and
/// `PerfBuffer` → `RingBuffer` likewise (a group whose every name goes goes whole: `use
/// libbpf_rs::{PerfBuffer, PerfBufferBuilder};` beside `use libbpf_rs::{RingBuffer,
/// RingBufferBuilder};`); under compat, removed (the shim's names are the file's own).
pub(super) fn rewrite_use(rs: &mut Rs, u: &ItemUse, ring: RingImported) {
    // Under compat, every name goes, as if the ring's were imported already.
    let compat = rs.opts.strategy == Strategy::Compat;
    let ring = RingImported {
        builder: ring.builder || compat,
        buffer: ring.buffer || compat,
    };
    let src = rs.src().to_string();
    let mut edits = Vec::new();
    // Whether the use of `name` goes (its ring twin imported already).
    let goes = |name: &syn::Ident| {
        (name == "PerfBufferBuilder" && ring.builder) || (name == "PerfBuffer" && ring.buffer)
    };
    // `use PATH::{...};` whose every name goes: the whole item.
    if let UseTree::Path(p) = &u.tree
        && let UseTree::Group(g) = &*p.tree
        && g.items.iter().all(|i| match i {
            UseTree::Name(n) => goes(&n.ident),
            UseTree::Rename(r) => r.ident == "PerfBufferBuilder" && ring.builder,
            _ => false,
        })
    {
        let e = remove_use_tree(rs, &u.tree, None, u, &src);
        rs.explained.push((e.start, e.end));
        rs.edits.push(e);
        return;
    }
    #[allow(clippy::too_many_arguments)]
    fn visit(
        rs: &Rs,
        t: &UseTree,
        parent: Option<&syn::UseGroup>,
        ring: RingImported,
        goes: &dyn Fn(&syn::Ident) -> bool,
        item: &ItemUse,
        src: &str,
        out: &mut Vec<Edit>,
    ) {
        match t {
            UseTree::Path(p) => visit(rs, &p.tree, None, ring, goes, item, src, out),
            UseTree::Group(g) => g
                .items
                .iter()
                .for_each(|i| visit(rs, i, Some(g), ring, goes, item, src, out)),
            UseTree::Name(n) if n.ident == "PerfBufferBuilder" || n.ident == "PerfBuffer" => {
                let (s, e) = rs.range(n.ident.span());
                if goes(&n.ident) {
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
                if ring.builder {
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
    visit(rs, &u.tree, None, ring, &goes, u, &src, &mut edits);
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
    use super::super::test_crate::{migrates, refused};
    use crate::rules::Rule;

    /// A file that defines or re-exports the perf buffer's names is its provider: left alone.
    /// One that imports them from elsewhere than libbpf_rs is reported, not migrated.
    #[test]
    fn providers_are_left_alone_and_other_perf_buffers_reported() {
        let chain = "fn f(m: &libbpf_rs::Map) { let _pb = PerfBufferBuilder::new(m).sample_cb(|_c: i32, _d: &[u8]| {}).build(); }\n";
        let analyse = |head: &str| {
            let text = format!("{head}\n{chain}");
            let file = crate::source::SourceFile::new("src/x.rs".into(), "x.rs".into(), text);
            super::super::analyze(&file, &crate::engine::Options::default()).0
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
    fn aliased_builder_is_imported_as_ring_buffer_builder() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder as PerfBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
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
            "#,
        );
    }

    #[test]
    fn builder_import_goes_when_ring_builder_is_imported_and_types_follow() {
        migrates(
            r#"
            use libbpf_rs::{PerfBuffer, PerfBufferBuilder, RingBufferBuilder};

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            struct Reader<'a> {
                buffer: PerfBuffer<'a>,
            }

            fn open<'a>(skel: &'a x::XSkel) -> anyhow::Result<Reader<'a>> {
                let _unused = RingBufferBuilder::new();
                let buffer = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                Ok(Reader { buffer })
            }
            "#,
            r#"
            use libbpf_rs::{RingBuffer, RingBufferBuilder};

            fn handle(data: &[u8]) -> i32 {
                println!("{}", data.len());
                0
            }

            struct Reader<'a> {
                buffer: RingBuffer<'a>,
            }

            fn open<'a>(skel: &'a x::XSkel) -> anyhow::Result<Reader<'a>> {
                let _unused = RingBufferBuilder::new();
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, handle)?;
                let buffer = builder.build()?;
                Ok(Reader { buffer })
            }
            "#,
        );
    }

    /// Both ring names imported already, on a line of their own (scx's monitors): the perf
    /// names' whole `use` goes, not `use libbpf_rs::{RingBuffer};` again (E0252).
    #[test]
    fn perf_imports_go_whole_when_both_ring_names_are_imported() {
        migrates(
            r#"
            use libbpf_rs::{PerfBuffer, PerfBufferBuilder};
            use libbpf_rs::{RingBuffer, RingBufferBuilder};

            struct Reader<'a> {
                buffer: PerfBuffer<'a>,
                _ring: Option<RingBuffer<'a>>,
            }

            fn open<'a>(skel: &'a x::XSkel) -> anyhow::Result<Reader<'a>> {
                let _unused = RingBufferBuilder::new();
                let buffer = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu: i32, _data: &[u8]| {})
                    .build()?;
                Ok(Reader { buffer, _ring: None })
            }
            "#,
            r#"
            use libbpf_rs::{RingBuffer, RingBufferBuilder};

            struct Reader<'a> {
                buffer: RingBuffer<'a>,
                _ring: Option<RingBuffer<'a>>,
            }

            fn open<'a>(skel: &'a x::XSkel) -> anyhow::Result<Reader<'a>> {
                let _unused = RingBufferBuilder::new();
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, |_data: &[u8]| { 0 })?;
                let buffer = builder.build()?;
                Ok(Reader { buffer, _ring: None })
            }
            "#,
        );
    }

    #[test]
    fn builder_imported_from_a_wrapper_is_refused() {
        refused(
            r#"
            use bpfkit::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::UnsupportedForm,
            "`PerfBufferBuilder` is imported from `bpfkit`, not from libbpf_rs",
        );
    }

    #[test]
    fn builder_used_outside_a_chain_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn builder_of(map: &libbpf_rs::Map) -> PerfBufferBuilder<'_> {
                PerfBufferBuilder::new(map)
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::UnsupportedForm,
            "`PerfBufferBuilder` is used here in a form bpf-migrate does not understand",
        );
    }
}
