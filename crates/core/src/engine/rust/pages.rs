//! The page count of a chain (`.pages(64)`, `.pages(PAGES)`): a ring buffer's size is the BPF
//! map's, so the count goes to linking and the option goes. One chosen at run time
//! (`.pages(args.pages)`) sets the ring's size before load instead: the open skeleton's map
//! gets `set_max_entries` with the perf buffer's pages for every CPU, as a power of two.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::Expr;
use syn::spanned::Spanned;

use super::Rs;
use super::builder::{Chain, without_error_handling};
use super::collect::{Collect, Func, binding, load_of, local_named, make_mut};
use super::items::item_lines;
use super::lost_counter::skel_map;
use crate::edit::Edit;
use crate::engine::context::Report;
use crate::rules::Rule;
use crate::source::{indent_at, line_start};

/// The page count of the chain `c` in `func`, when it can be told (a literal or a `const`);
/// Some(None) when there is none or it is chosen at run time (and set before load); None when
/// the chain was refused. `stays`: the chain keeps its `.pages()` (compat), so a `const` it
/// names stays too.
pub(super) fn page_count(
    rs: &mut Rs,
    col: &Collect,
    c: &Chain,
    func: Option<Func>,
    stays: bool,
) -> Option<Option<u64>> {
    let p = c.pages;
    let mut pages = p.and_then(|p| rs.text(p.span()).replace('_', "").parse::<u64>().ok());
    if let Some(p) = p.filter(|_| pages.is_none()) {
        match page_const(rs, col, p, stays) {
            Some(v) => pages = v,
            None => {
                if let Err(why) = run_time(rs, col, c.map, p, func) {
                    rs.report(rs.range(p.span()).0, Rule::UnsupportedForm, format!("the page count `{}` is chosen at run time, and the ring's size cannot be set from it before load: {why}", rs.text(p.span())), "a ring buffer's size is the BPF map's max_entries: set it before load by hand (`open_skel.maps.NAME.set_max_entries(...)`), or make the page count a literal, then run bpf-migrate again");
                    return None;
                }
            }
        }
    }
    Some(pages)
}

fn idents(ts: TokenStream, out: &mut Vec<String>) {
    for t in ts {
        match t {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => idents(g.stream(), out),
            _ => {}
        }
    }
}

/// The page count `p` chosen at run time, for the map `&SKEL.maps.NAME` of a chain in `func`:
/// before `let SKEL = OPEN.load()...;`, the statements that set the ring's size from it
/// (`OPEN` made `mut` if it is not), and a note; or why not.
fn run_time(
    rs: &mut Rs,
    col: &Collect,
    map: &Expr,
    p: &Expr,
    func: Option<Func>,
) -> Result<(), String> {
    let pages = rs.text(p.span()).to_string();
    let (skel, name) = skel_map(rs, map).ok_or_else(|| {
        format!(
            "the map `{}` is not a skeleton's field (`&skel.maps.NAME`, libbpf-rs 0.24 and later)",
            rs.text(map.span())
        )
    })?;
    let f = func.ok_or("the perf buffer is not built in a function")?;
    let not_loaded = || {
        format!(
            "the skeleton `{skel}` is not loaded in this function as `let {skel} = open_skel.load()...;`, before which its map's size could be set"
        )
    };
    let load = local_named(rs, col, f, &skel, rs.range(p.span()).0).ok_or_else(not_loaded)?;
    let question = without_error_handling(&load.init.as_ref().ok_or_else(not_loaded)?.expr).1;
    let open = match load_of(load).ok_or_else(not_loaded)? {
        Expr::Path(p) if p.path.get_ident().is_some() => p.path.get_ident().unwrap().to_string(),
        _ => {
            return Err(format!(
                "the skeleton `{skel}` is opened and loaded in one expression; bind the open skeleton first (`let mut open_skel = ...open(...)?;`)"
            ));
        }
    };
    let at = rs.range(load.span()).0;
    let open_local = local_named(rs, col, f, &open, at)
        .ok_or_else(|| format!("the open skeleton `{open}` is not a local of this function"))?;
    // What the page count reads must be there before the load.
    let params: Vec<String> = f
        .sig
        .inputs
        .iter()
        .filter_map(|i| match i {
            syn::FnArg::Typed(t) => binding(&t.pat).map(|b| b.ident.to_string()),
            syn::FnArg::Receiver(_) => Some("self".to_string()),
        })
        .collect();
    let mut read = Vec::new();
    idents(p.to_token_stream(), &mut read);
    for id in read {
        let before = params.contains(&id) || local_named(rs, col, f, &id, at).is_some();
        if !before && local_named(rs, col, f, &id, usize::MAX).is_some() {
            return Err(format!(
                "it reads `{id}`, which is set after the skeleton is loaded"
            ));
        }
    }
    let src = rs.src().to_string();
    let indent = indent_at(&src, at).to_string();
    let simple = matches!(
        p,
        Expr::Path(_) | Expr::Field(_) | Expr::Lit(_) | Expr::MethodCall(_)
    );
    let count = if simple {
        pages.clone()
    } else {
        format!("({pages})")
    };
    let (fs, fe) = rs.range(f.span);
    let bytes = ["ring_bytes", "ring_size_bytes"]
        .into_iter()
        .find(|n| rs.uses_in(n, fs, fe).is_empty())
        .unwrap_or("ring_bytes");
    let err = if question {
        "?"
    } else {
        ".expect(\"the number of CPUs\")"
    };
    let set_err = if question {
        "?"
    } else {
        ".expect(\"the ring's size\")"
    };
    let text = format!(
        "{indent}// The ring holds the perf buffer's `{pages}` pages for every CPU, rounded up to a\n\
         {indent}// power of two (added by bpf-migrate).\n\
         {indent}let {bytes} = {count} as u64 * 4096 * libbpf_rs::num_possible_cpus(){err} as u64;\n\
         {indent}{open}.maps.{name}.set_max_entries({bytes}.next_power_of_two().min(1 << 30) as u32){set_err};\n"
    );
    let ls = line_start(&src, at);
    rs.edits
        .push(Edit::insert(ls, text, Rule::RsPerfBufferBuilder));
    make_mut(rs, open_local);
    rs.report(
        rs.range(p.span()).0,
        Rule::RsPerfBufferBuilder,
        format!("the page count `{pages}` is chosen at run time: the ring's size is set from it before `{open}.load()`, `{pages}` pages for every CPU, rounded up to a power of two (at most 1 GiB)"),
        "the size in the BPF source stays the default for loaders that do not set it",
    );
    Ok(())
}

/// A page count named by a `const`: its value, and the const goes when nothing else uses it.
/// `None` when the expression is not such a constant.
fn page_const(rs: &mut Rs, col: &Collect, p: &Expr, stays: bool) -> Option<Option<u64>> {
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
    if !used_elsewhere && !stays {
        let mut s = is;
        if let Some(first) = item.attrs.first() {
            s = s.min(rs.range(first.span()).0);
        }
        let (a, b) = item_lines(&rs.file.text, s, ie);
        rs.edits.push(Edit::delete(a, b, Rule::RsPerfBufferBuilder));
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::super::test_crate::{migrates_noting, refused};
    use crate::rules::Rule;

    #[test]
    fn literal_page_count_goes_to_linking() {
        migrates_noting(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .pages(1_024)
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
            "4096 KiB shared by all CPUs, no less than the perf buffer had for one CPU (1024 pages, 4096 KiB)",
        );
    }

    #[test]
    fn page_count_const_goes_when_only_the_chain_used_it() {
        migrates_noting(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            /// Pages per CPU.
            const PAGES: usize = 16;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .pages(PAGES)
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
            "the perf buffer had 16 pages",
        );
    }

    #[test]
    fn page_count_chosen_at_run_time_sets_the_ring_size_before_load() {
        migrates_noting(
            r#"
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn main() -> anyhow::Result<()> {
                let pages: usize = std::env::args().nth(1).map_or(Ok(64), |a| a.parse())?;
                let mut object = std::mem::MaybeUninit::uninit();
                let open_skel = x::XSkelBuilder::default().open(&mut object)?;
                let skel = open_skel.load()?;
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .pages(pages * 2)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};
            use libbpf_rs::RingBufferBuilder;

            fn handle(data: &[u8]) -> i32 {
                println!("{}", data.len());
                0
            }

            fn main() -> anyhow::Result<()> {
                let pages: usize = std::env::args().nth(1).map_or(Ok(64), |a| a.parse())?;
                let mut object = std::mem::MaybeUninit::uninit();
                let mut open_skel = x::XSkelBuilder::default().open(&mut object)?;
                // The ring holds the perf buffer's `pages * 2` pages for every CPU, rounded up to a
                // power of two (added by bpf-migrate).
                let ring_bytes = (pages * 2) as u64 * 4096 * libbpf_rs::num_possible_cpus()? as u64;
                open_skel.maps.events.set_max_entries(ring_bytes.next_power_of_two().min(1 << 30) as u32)?;
                let skel = open_skel.load()?;
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, handle)?;
                let perf = builder.build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            "the ring's size is set from it before `open_skel.load()`",
        );
    }

    /// A reader whose skeleton is loaded by `load` (with `let open_skel` before it), and whose
    /// perf buffer has `pages` pages.
    fn loaded(load: &str, pages: &str) -> String {
        format!(
            r#"
            use libbpf_rs::skel::{{OpenSkel, SkelBuilder}};
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {{
                println!("{{}}", data.len());
            }}

            fn main() -> anyhow::Result<()> {{
                let mut object = std::mem::MaybeUninit::uninit();
                {load}
                let pages: usize = 8;
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .pages({pages})
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }}
            "#
        )
    }

    #[test]
    fn a_run_time_page_count_the_load_cannot_see_is_refused() {
        let open = "let open_skel = x::XSkelBuilder::default().open(&mut object)?;\n    let skel = open_skel.load()?;";
        refused(
            &loaded(open, "pages"),
            Rule::UnsupportedForm,
            "it reads `pages`, which is set after the skeleton is loaded",
        );
        refused(
            &loaded(
                "let skel = x::XSkelBuilder::default().open(&mut object)?.load()?;",
                "pages",
            ),
            Rule::UnsupportedForm,
            "opened and loaded in one expression",
        );
    }

    #[test]
    fn a_run_time_page_count_with_the_skeleton_loaded_elsewhere_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel, pages: usize) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .pages(pages)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::UnsupportedForm,
            "the skeleton `skel` is not loaded in this function",
        );
    }
}
