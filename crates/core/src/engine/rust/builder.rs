//! `PerfBufferBuilder::new(MAP).sample_cb(CB).lost_cb(L).pages(N).build()` chains, with their
//! error handling, become `RingBufferBuilder::new()`, `add(MAP, CB)` and `build()`; the
//! callbacks, the map, the page count and the lost callback are their own modules' work.

use syn::Expr;
use syn::spanned::Spanned;

use super::callbacks::callback;
use super::collect::{Collect, Func};
use super::lost::lost_callback;
use super::lost_counter;
use super::maps::{enclosing_fn, resolve_map};
use super::messages::message_text;
use super::pages::page_count;
use super::{Rs, compat};
use crate::edit::Edit;
use crate::engine::context::{Analysis, Consumer, Report};
use crate::engine::options::{Lost, Strategy};
use crate::rules::Rule;
use crate::source::indent_at;

/// Builder methods that end a chain's error handling.
const TAIL_METHODS: &[&str] = &[
    "context",
    "with_context",
    "expect",
    "unwrap",
    "map_err",
    "unwrap_or_else",
];

pub(super) struct Chain<'a> {
    /// The whole expression, error handling included.
    pub(super) whole: (usize, usize),
    /// `.context(...)?` and the like after `.build()`, as written.
    pub(super) tail: String,
    /// `libbpf_rs::` when the builder was named by a path.
    pub(super) prefix: String,
    pub(super) map: &'a Expr,
    pub(super) sample: Option<&'a Expr>,
    pub(super) lost: Option<&'a Expr>,
    pub(super) pages: Option<&'a Expr>,
    pub(super) expr: &'a Expr,
    /// The builder's path without `::new` (`libbpf_rs::PerfBufferBuilder`).
    pub(super) builder: (usize, usize),
    /// The end of the `new(MAP)` call.
    pub(super) new_end: usize,
}

/// The chains of the file, outermost first (a chain inside another's argument is left to
/// the outer one); their callback arguments are recorded, so that a callback named there is
/// not counted as used elsewhere.
pub(super) fn find_chains<'ast>(
    rs: &mut Rs,
    col: &Collect<'ast>,
    builder_names: &[String],
) -> Vec<Chain<'ast>> {
    let mut chains: Vec<Chain> = col
        .exprs
        .iter()
        .filter_map(|e| match_chain(rs, e, builder_names))
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
    chains
}

/// `e` without its error handling (`?`, `.context(...)`, `.unwrap()` and the like, and
/// parentheses), and whether a `?` was part of it.
pub(super) fn without_error_handling(mut e: &Expr) -> (&Expr, bool) {
    let mut question = false;
    loop {
        match e {
            Expr::Try(t) => {
                question = true;
                e = &t.expr;
            }
            Expr::MethodCall(m) if TAIL_METHODS.contains(&m.method.to_string().as_str()) => {
                e = &m.receiver
            }
            Expr::Paren(p) => e = &p.expr,
            _ => return (e, question),
        }
    }
}

fn match_chain<'a>(rs: &Rs, e: &'a Expr, names: &[String]) -> Option<Chain<'a>> {
    let whole_e = e;
    let (e, _) = without_error_handling(e);
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
                let name = &p.path.segments[segs.len() - 2].ident;
                return Some(Chain {
                    builder: (rs.range(p.span()).0, rs.range(name.span()).1),
                    new_end: rs.range(c.span()).1,
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

/// One chain rewritten, and its map recorded as a consumer; nothing is rewritten when a part
/// of it is refused.
pub(super) fn rewrite_chain(rs: &mut Rs, col: &Collect, c: &Chain, a: &mut Analysis) {
    let at = c.whole.0;
    let func = enclosing_fn(rs, col, c.whole);
    let Some(map) = resolve_map(rs, col, c.map, func) else {
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
    if rs.opts.strategy == Strategy::Compat {
        return compat::rewrite_chain(rs, col, c, func, map, sample, a);
    }
    let Some(mut cb_text) = callback(rs, col, sample, func, &map) else {
        return;
    };
    let mut lost_counted = false;
    if let Some(l) = c.lost {
        let counted = match rs.opts.lost {
            Lost::Count => lost_counter::wrap(rs, c.map, &map, l, &cb_text)
                .map_err(|why| format!("; bpf-migrate cannot feed it from a counter: {why}")),
            Lost::Drop => Err(String::new()),
        };
        match counted {
            Ok(text) => {
                cb_text = text;
                lost_counted = true;
            }
            Err(why) => lost_callback(rs, col, l, func, &why),
        }
    }
    let Some(pages) = page_count(rs, col, c, func, false) else {
        return;
    };
    replace_chain(rs, col, c, func, &cb_text);
    a.consumers.push(Consumer {
        map,
        offset: at,
        pages,
        lost_counted,
        bpf2go: false,
    });
}

/// The first of `names` that no code of the function uses (the last when all are): the
/// builder's variable (`builder`), the skeleton's maps accessor's (`maps`).
fn free_name(rs: &Rs, func: Option<Func>, names: [&'static str; 3]) -> &'static str {
    let fn_range = func
        .map(|f| rs.range(f.span))
        .unwrap_or((0, rs.src().len()));
    names
        .into_iter()
        .find(|n| rs.uses_in(n, fn_range.0, fn_range.1).is_empty())
        .unwrap_or(names[2])
}

/// The map read through a skeleton's accessor of libbpf-rs before 0.24,
/// `SKEL.maps().NAME()` or `SKEL.maps_mut().NAME()`: (`SKEL.maps_mut()`, its method, `NAME()`).
/// The accessor's value is a temporary, dropped at the end of the statement it is made in,
/// which a ring buffer builder of 0.21 to 0.23 (`add(&mut self, map: &'slf MapHandle, ..)`)
/// must outlive until `build()`.
fn accessor_temporary(rs: &Rs, map: &Expr) -> Option<(String, String, String)> {
    let Expr::MethodCall(field) = map else {
        return None;
    };
    let Expr::MethodCall(accessor) = &*field.receiver else {
        return None;
    };
    let method = accessor.method.to_string();
    (field.args.is_empty()
        && accessor.args.is_empty()
        && matches!(method.as_str(), "maps" | "maps_mut"))
    .then(|| {
        (
            rs.text(accessor.span()).to_string(),
            method,
            format!("{}()", field.method),
        )
    })
}

/// The chain's new text: a `let` of the buffer becomes the builder's `let`, the `add` and the
/// buffer's `let`; a chain elsewhere becomes a block. When `add` and `build` are statements
/// of their own and the map is read through a skeleton accessor of libbpf-rs before 0.24
/// (`skel.maps_mut().events()`), the accessor is bound to a variable first
/// (`let mut maps = skel.maps_mut();`), which lives until `build()`: in 0.21 to 0.23 the
/// builder borrows the map until then, and a temporary would be dropped after `add` (E0716).
fn replace_chain(rs: &mut Rs, col: &Collect, c: &Chain, func: Option<Func>, cb_text: &str) {
    let src = rs.src().to_string();
    let at = c.whole.0;
    let builder = free_name(rs, func, ["builder", "ringbuf_builder", "rb_builder"]);
    let mut map_text = rs.text(c.map.span()).to_string();
    // Error handling written over several lines is copied onto one.
    let tail: String = message_text(&c.tail).lines().map(str::trim).collect();
    let new = format!("{}RingBufferBuilder::new()", c.prefix);
    // `let mut maps = skel.maps_mut();`, put after the builder's `let`.
    let mut bind_maps = String::new();
    if let (false, Some((accessor, method, field))) =
        (tail.is_empty(), accessor_temporary(rs, c.map))
    {
        let var = free_name(rs, func, ["maps", "skel_maps", "ringbuf_maps"]);
        let mutable = if method == "maps_mut" { "mut " } else { "" };
        bind_maps = format!("let {mutable}{var} = {accessor};");
        map_text = format!("{var}.{field}");
    }
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
                let bind = if bind_maps.is_empty() {
                    String::new()
                } else {
                    format!("{bind_maps}\n{indent}")
                };
                format!(
                    "let mut {builder} = {new};\n{indent}{bind}{add}{tail};\n{indent}let {pat} = {builder}.build(){tail};"
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
                let i = indent_at(&src, at);
                let bind = if bind_maps.is_empty() {
                    String::new()
                } else {
                    format!("{i}    {bind_maps}\n")
                };
                format!(
                    "{{\n{i}    let mut {builder} = {new};\n{bind}{i}    {add}{tail};\n{i}    {builder}.build(){tail}\n{i}}}"
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
}

#[cfg(test)]
mod tests {
    use super::super::test_crate::{migrates, refused};
    use crate::rules::Rule;

    /// A chain bound by `let`, with error handling: the builder's `let`, then `add` and `build`,
    /// each with the handling (its message updated); `builder` is taken, so the variable is
    /// `ringbuf_builder`.
    #[test]
    fn let_chain_becomes_builder_add_and_build() {
        migrates(
            r#"
            use anyhow::Context;
            use libbpf_rs::PerfBufferBuilder;
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{} bytes", data.len());
            }

            fn main() -> anyhow::Result<()> {
                let builder = XSkelBuilder::default();
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = builder.open(&mut open_object)?.load()?;
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()
                    .context("cannot open the perf buffer")?;
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#,
            r#"
            use anyhow::Context;
            use libbpf_rs::RingBufferBuilder;
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(data: &[u8]) -> i32 {
                println!("{} bytes", data.len());
                0
            }

            fn main() -> anyhow::Result<()> {
                let builder = XSkelBuilder::default();
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = builder.open(&mut open_object)?.load()?;
                let mut ringbuf_builder = RingBufferBuilder::new();
                ringbuf_builder.add(&skel.maps.events, handle).context("cannot open the ring buffer")?;
                let perf = ringbuf_builder.build().context("cannot open the ring buffer")?;
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#,
        );
    }

    /// A chain that is a function's value, its builder named by a path: a block, the path kept;
    /// `PerfBuffer` in the signature follows.
    #[test]
    fn chain_as_a_value_becomes_a_block() {
        migrates(
            r#"
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{} bytes", data.len());
            }

            fn open<'a>(skel: &'a XSkel) -> libbpf_rs::Result<libbpf_rs::PerfBuffer<'a>> {
                libbpf_rs::PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = XSkelBuilder::default().open(&mut open_object)?.load()?;
                let perf = open(&skel)?;
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#,
            r#"
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(data: &[u8]) -> i32 {
                println!("{} bytes", data.len());
                0
            }

            fn open<'a>(skel: &'a XSkel) -> libbpf_rs::Result<libbpf_rs::RingBuffer<'a>> {
                { let mut builder = libbpf_rs::RingBufferBuilder::new(); builder.add(&skel.maps.events, handle).map(|_| ()).and_then(|_| builder.build()) }
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = XSkelBuilder::default().open(&mut open_object)?.load()?;
                let perf = open(&skel)?;
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#,
        );
    }

    /// libbpf-rs 0.21 to 0.23: the map read through the skeleton's accessor, a temporary
    /// that the builder would borrow past its statement (E0716), is bound first, under a
    /// name the function does not use; `maps()` binds without `mut`. A chain whose `add` and
    /// `build` are one expression keeps the temporary (it lives to the end of it).
    #[test]
    fn an_old_skeleton_accessor_is_bound_before_the_builder_borrows_it() {
        let before = r#"
            use libbpf_rs::PerfBufferBuilder;
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{} bytes", data.len());
            }

            fn main() -> anyhow::Result<()> {
                let maps = 3;
                let mut skel = XSkelBuilder::default().open()?.load()?;
                let perf = PerfBufferBuilder::new(skel.maps_mut().events())
                    .sample_cb(handle)
                    .build()?;
                println!("{maps}");
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#;
        let after = r#"
            use libbpf_rs::RingBufferBuilder;
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(data: &[u8]) -> i32 {
                println!("{} bytes", data.len());
                0
            }

            fn main() -> anyhow::Result<()> {
                let maps = 3;
                let mut skel = XSkelBuilder::default().open()?.load()?;
                let mut builder = RingBufferBuilder::new();
                let mut skel_maps = skel.maps_mut();
                builder.add(skel_maps.events(), handle)?;
                let perf = builder.build()?;
                println!("{maps}");
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#;
        migrates(before, after);
        let shared = |s: &str| {
            s.replace("maps_mut()", "maps()")
                .replace("let mut skel_maps", "let skel_maps")
        };
        migrates(&shared(before), &shared(after));
        // No error handling: `add` and `build` in one expression.
        migrates(
            &before.replace(".build()?;", ".build();\n                let perf = perf?;"),
            &after.replace(
                "let mut skel_maps = skel.maps_mut();\n                builder.add(skel_maps.events(), handle)?;\n                let perf = builder.build()?;",
                "let perf = builder.add(skel.maps_mut().events(), handle).map(|_| ()).and_then(|_| builder.build());\n                let perf = perf?;",
            ),
        );
    }

    #[test]
    fn chain_without_sample_callback_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn lost(_cpu: i32, count: u64) {
                eprintln!("lost {count}");
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = XSkelBuilder::default().open(&mut open_object)?.load()?;
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .lost_cb(lost)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackForm,
            "this PerfBufferBuilder has no sample_cb",
        );
    }
}
