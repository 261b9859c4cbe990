//! The page count of a chain (`.pages(64)`, `.pages(PAGES)`): a ring buffer's size is the BPF
//! map's, so the count goes to linking and the option goes; one chosen at run time is refused.

use syn::Expr;
use syn::spanned::Spanned;

use super::Rs;
use super::collect::Collect;
use super::items::item_lines;
use crate::edit::Edit;
use crate::engine::context::Report;
use crate::rules::Rule;

/// The page count of `.pages(p)`, when it can be told (a literal or a `const`); None when the
/// count is chosen at run time and the chain was refused.
pub(super) fn page_count(rs: &mut Rs, col: &Collect, p: Option<&Expr>) -> Option<Option<u64>> {
    let mut pages = p.and_then(|p| rs.text(p.span()).replace('_', "").parse::<u64>().ok());
    if let Some(p) = p.filter(|_| pages.is_none()) {
        match page_const(rs, col, p) {
            Some(v) => pages = v,
            None => {
                rs.report(rs.range(p.span()).0, Rule::UnsupportedForm, format!("the page count `{}` is chosen at run time; it would be left unused (a dead option or field warns in Rust)", rs.text(p.span())), "a ring buffer's size is the BPF map's max_entries: remove the option, or make the page count a literal, then run bpf-migrate again");
                return None;
            }
        }
    }
    Some(pages)
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
            "the perf buffer had 1024 pages",
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
    fn page_count_chosen_at_run_time_is_refused() {
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
            "the page count `pages` is chosen at run time",
        );
    }
}
