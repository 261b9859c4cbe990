//! The lost-sample callback: a ring buffer has none, so it goes from the chain, and so does
//! what only it used (a function of the file, a closure held in a `let`, the variables only
//! that closure captured). A note says so either way.

use syn::spanned::Spanned;
use syn::{Expr, ExprPath, Pat};

use super::Rs;
use super::collect::{Collect, Func, local_named};
use super::items::item_lines;
use crate::edit::Edit;
use crate::engine::context::Report;
use crate::rules::Rule;

const HELP: &str = "when the ring is full, bpf_ringbuf_output() returns -EAGAIN in the BPF program: count those failures there (e.g. in a per-CPU array) and read the counter from user space";

/// The lost-sample callback goes: a function only it used is removed, and so is a closure held
/// in a variable, with the variables only it captured (they would be unused).
/// `why` ends the note: why the callback could not be kept (`lost_counter`), or nothing.
pub(super) fn lost_callback(
    rs: &mut Rs,
    col: &Collect,
    lost: &Expr,
    func: Option<Func>,
    why: &str,
) {
    let (ls, le) = rs.range(lost.span());
    let mut closure_range = (ls, le);
    if let Expr::Path(p) = lost {
        match named_lost(rs, col, p, func, ls, why) {
            Some(local) => closure_range = local,
            None => return,
        }
    }
    if let Some(f) = func {
        remove_dead_lets(rs, col, f, vec![closure_range, (ls, le)]);
    }
    rs.report(
        ls,
        Rule::RsLostCallback,
        format!("the lost-sample callback is removed: a ring buffer has none{why}"),
        HELP,
    );
}

/// A lost callback named in the chain (at `ls`): a local closure nothing else uses is deleted
/// and its range returned, for its captures to be looked at; a function nothing else uses is
/// deleted, else it stays, no longer called; either is reported here (None).
fn named_lost(
    rs: &mut Rs,
    col: &Collect,
    p: &ExprPath,
    func: Option<Func>,
    ls: usize,
    why: &str,
) -> Option<(usize, usize)> {
    let src = rs.src().to_string();
    let name = p.path.segments.last().unwrap().ident.to_string();
    let fn_ident = col
        .fns
        .iter()
        .find(|f| f.sig.ident == name)
        .map(|f| rs.range(f.sig.ident.span()))
        .unwrap_or((usize::MAX, 0));
    let others = rs.other_uses(&name, fn_ident);
    // A local closure.
    let local = func.and_then(|f| local_named(rs, col, f, &name, ls));
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
        Some((a, b))
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
            format!("the lost-sample callback `{name}` is removed: a ring buffer has none{why}"),
            HELP,
        );
        None
    } else {
        rs.report(
            ls,
            Rule::RsLostCallback,
            format!(
                "the lost-sample callback `{name}` is no longer called: a ring buffer has none{why}"
            ),
            HELP,
        );
        None
    }
}

/// Variables of `f` the removed code (`removed`: the closure and the chain's argument)
/// captured that nothing else uses, and then those that only the removed lets used
/// (`let lost = ...; let lost2 = lost.clone();`).
fn remove_dead_lets(rs: &mut Rs, col: &Collect, f: Func, mut removed: Vec<(usize, usize)>) {
    let src = rs.src().to_string();
    let (fs, fe) = rs.range(f.span);
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

#[cfg(test)]
mod tests {
    use super::super::test_crate::{migrates_noting_with, migrates_with};
    use crate::engine::options::{Lost, Options};

    /// `--lost drop`: the callback goes (`lost_counter` has the default).
    fn drop() -> Options {
        Options {
            lost: Lost::Drop,
            ..Options::default()
        }
    }

    #[test]
    fn lost_function_goes_with_its_comment_and_attributes() {
        migrates_noting_with(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            // Called when the kernel drops samples.
            #[allow(dead_code)]
            fn on_lost(cpu: i32, count: u64) {
                eprintln!("lost {count} on CPU {cpu}");
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .lost_cb(on_lost)
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
            "the lost-sample callback `on_lost` is removed",
            &drop(),
        );
    }

    /// `counter` only fed the closure, and `lost` only fed `counter`.
    #[test]
    fn lost_closure_goes_with_what_only_it_captured() {
        migrates_noting_with(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            use std::sync::Arc;
            use std::sync::atomic::{AtomicU64, Ordering};

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let lost = Arc::new(AtomicU64::new(0));
                let counter = lost.clone();
                let on_lost = move |_cpu: i32, n: u64| {
                    counter.fetch_add(n, Ordering::Relaxed);
                };
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .lost_cb(on_lost)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            use std::sync::Arc;
            use std::sync::atomic::{AtomicU64, Ordering};

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
            "the lost-sample callback is removed",
            &drop(),
        );
    }

    #[test]
    fn inline_lost_closure_goes_from_the_chain() {
        migrates_with(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu, data: &[u8]| println!("{}", data.len()))
                    .lost_cb(|cpu, n| eprintln!("lost {n} on CPU {cpu}"))
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, |data: &[u8]| { println!("{}", data.len()); 0 })?;
                let perf = builder.build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            &drop(),
        );
    }

    #[test]
    fn lost_function_used_elsewhere_stays() {
        migrates_noting_with(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            pub fn on_lost(cpu: i32, count: u64) {
                eprintln!("lost {count} on CPU {cpu}");
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .lost_cb(on_lost)
                    .build()?;
                on_lost(0, 0);
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

            pub fn on_lost(cpu: i32, count: u64) {
                eprintln!("lost {count} on CPU {cpu}");
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, handle)?;
                let perf = builder.build()?;
                on_lost(0, 0);
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            "the lost-sample callback `on_lost` is no longer called",
            &drop(),
        );
    }
}
