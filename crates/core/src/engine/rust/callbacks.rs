//! The sample callback: `|cpu, data| ...` closures (inline or held in a `let`) and functions
//! of the file lose their CPU argument and return 0 on every path; one that reads the CPU, is
//! used elsewhere or has another shape is refused.

use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Block, Expr, ExprClosure, ExprPath, FnArg, Pat, ReturnType, Stmt};

use super::Rs;
use super::collect::{Collect, Func, binding, local_named};
use crate::edit::Edit;
use crate::engine::context::{CpuUse, Report};
use crate::rules::Rule;
use crate::source::{indent_at, line_start};

/// The callback's new text (closures are rewritten in place in the copied text; functions are
/// edited where they are defined and keep their name).
pub(super) fn callback(
    rs: &mut Rs,
    col: &Collect,
    cb: &Expr,
    func: Option<Func>,
    map: &str,
) -> Option<String> {
    let span = rs.range(cb.span());
    match cb {
        Expr::Closure(cl) => inline_closure(rs, cl, map, span),
        Expr::Path(p) => named_callback(rs, col, p, func, map, span),
        _ => {
            rs.report(
                span.0,
                Rule::CallbackForm,
                "the sample callback is neither a closure nor a function name",
                "migrate by hand",
            );
            None
        }
    }
}

/// A closure written in the chain: its new text, the edits applied to a copy of it.
fn inline_closure(
    rs: &mut Rs,
    cl: &ExprClosure,
    map: &str,
    (cs, ce): (usize, usize),
) -> Option<String> {
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
    Some(crate::edit::apply(&rs.src()[cs..ce], &rel, false))
}

/// A callback named in the chain: a local closure, or a function of the file (edited where
/// it is defined, once however many chains name it); the name stays as written.
fn named_callback(
    rs: &mut Rs,
    col: &Collect,
    p: &ExprPath,
    func: Option<Func>,
    map: &str,
    (cs, ce): (usize, usize),
) -> Option<String> {
    let name = p.path.segments.last().unwrap().ident.to_string();
    // A local closure: `let cb = |cpu, data| ...;`.
    if p.path.segments.len() == 1
        && let Some(f) = func
        && let Some(l) = local_named(rs, col, f, &name, cs)
    {
        let Some(Expr::Closure(cl)) = l.init.as_ref().map(|i| &*i.expr) else {
            rs.report(cs, Rule::CallbackForm, format!("the sample callback `{name}` is not a closure or a function bpf-migrate can see"), "migrate by hand");
            return None;
        };
        let mut edits = Vec::new();
        if !closure_edits(rs, cl, map, &mut edits) {
            return None;
        }
        rs.edits.extend(edits);
        return Some(rs.src()[cs..ce].to_string());
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
    let (fs, _) = rs.range(f.span);
    if rs.done_fns.insert(fs) {
        fn_edits(rs, f, &name, map)?;
    }
    Some(rs.src()[cs..ce].to_string())
}

/// `fn name(cpu: i32, data: &[u8])` → `fn name(data: &[u8]) -> i32`, its body returning 0;
/// None when it was refused.
fn fn_edits(rs: &mut Rs, f: Func, name: &str, map: &str) -> Option<()> {
    let fs = rs.range(f.span).0;
    let inputs: Vec<&FnArg> = f.sig.inputs.iter().collect();
    if inputs.len() != 2 || !matches!(f.sig.output, ReturnType::Default) {
        rs.report(
            fs,
            Rule::CallbackForm,
            format!("the sample callback `{name}` does not look like fn(cpu: i32, data: &[u8])"),
            "migrate by hand",
        );
        return None;
    }
    let cpu = match inputs[0] {
        FnArg::Typed(t) => pat_name(&t.pat),
        _ => None,
    };
    let (bs, be) = rs.range(f.block.span());
    let mut keep = None;
    if let Some(cpu) = cpu.filter(|c| !rs.uses_in(c, bs, be).is_empty()) {
        let data = match inputs[1] {
            FnArg::Typed(t) => pat_name(&t.pat),
            _ => None,
        };
        let label = (name.to_string(), format!("`{name}`"));
        keep = Some(keep_cpu(rs, f.block, &cpu, data, map, label)?);
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
    rs.edits.extend(keep);
    Some(())
}

/// The placeholder for the CPU's bytes in the statement `keep_cpu` writes, which linking
/// replaces once it knows where the field is (`engine::cpu_field`); an edit that still holds
/// it is never applied.
pub const CPU_BYTES: &str = "__BPF_MIGRATE_CPU_BYTES__";

/// A callback whose body `block` reads its CPU parameter `cpu` keeps it: the statement that
/// reads the CPU from the field linking adds to the event, first in the body, and the use
/// recorded for linking (`engine::cpu_field`). None, refused, where that cannot be done.
fn keep_cpu(
    rs: &mut Rs,
    block: &Block,
    cpu: &str,
    data: Option<String>,
    map: &str,
    (callback, label): (String, String),
) -> Option<Edit> {
    let src = rs.src();
    let (bs, be) = rs.range(block.span());
    let uses = rs.uses_in(cpu, bs, be);
    let first = uses[0];
    let refuse = |rs: &mut Rs, why: &str| {
        rs.report(first, Rule::CallbackUsesCpu, format!("the sample callback {label} uses `{cpu}`, the CPU that produced the event, which a ring buffer does not report; bpf-migrate cannot add it to the events: {why}"), crate::engine::cpu_field::REFUSAL_HELP);
    };
    let Some(data) = data else {
        refuse(rs, "its data parameter has no name");
        return None;
    };
    // A record that must be exactly as long as the event: the field makes it longer.
    let body: String = src[bs..be].split_whitespace().collect();
    let len = format!("{data}.len()");
    if [
        format!("{len}=="),
        format!("{len}!="),
        format!("=={len}"),
        format!("!={len}"),
    ]
    .iter()
    .any(|p| body.contains(p.as_str()))
    {
        refuse(
            rs,
            &format!(
                "it compares `{data}.len()` with `==` or `!=`, and the record grows by the field"
            ),
        );
        return None;
    }
    let open = rs.range(block.brace_token.span.open()).1;
    let indent = match block.stmts.first() {
        Some(st) => indent_at(src, rs.range(st.span()).0).to_string(),
        None => format!("{}    ", indent_at(src, bs)),
    };
    rs.cpu_uses.push(CpuUse {
        maps: vec![map.to_string()],
        callback,
        offset: first,
        uses: uses.len(),
        at: open,
        lead: String::new(),
        param: cpu.to_string(),
        data: Some(data),
        read_as: Vec::new(),
        python: None,
        rust: true,
    });
    Some(Edit::insert(
        open,
        format!(
            "\n{indent}let {cpu} = {CPU_BYTES}; // the event's cpu field (added by bpf-migrate)"
        ),
        Rule::CpuField,
    ))
}

/// For a strategy that keeps the sample callback `cb` as it is (`compat`): where it reads its
/// CPU argument first, if it does; Err with why that cannot be told.
pub(super) fn cpu_read(
    rs: &Rs,
    col: &Collect,
    cb: &Expr,
    func: Option<Func>,
) -> Result<Option<usize>, String> {
    let at = rs.range(cb.span()).0;
    let closure = |cl: &ExprClosure| {
        (
            cl.inputs.first().and_then(pat_name),
            rs.range(cl.body.span()),
        )
    };
    let (cpu, (bs, be)) = match cb {
        Expr::Closure(cl) => closure(cl),
        Expr::Path(p) => {
            let name = p.path.segments.last().unwrap().ident.to_string();
            let local = func
                .filter(|_| p.path.segments.len() == 1)
                .and_then(|f| local_named(rs, col, f, &name, at));
            match (local, col.fns.iter().find(|f| f.sig.ident == name)) {
                (Some(l), _) => match l.init.as_ref().map(|i| &*i.expr) {
                    Some(Expr::Closure(cl)) => closure(cl),
                    _ => {
                        return Err(format!(
                            "the sample callback `{name}` is not a closure or a function bpf-migrate can see"
                        ));
                    }
                },
                (None, Some(f)) => {
                    let cpu = match f.sig.inputs.first() {
                        Some(FnArg::Typed(t)) => pat_name(&t.pat),
                        _ => None,
                    };
                    (cpu, rs.range(f.block.span()))
                }
                (None, None) => {
                    return Err(format!(
                        "the sample callback `{name}` is not defined in this file"
                    ));
                }
            }
        }
        _ => {
            return Err("the sample callback is neither a closure nor a function name".to_string());
        }
    };
    Ok(cpu.and_then(|c| rs.uses_in(&c, bs, be).first().copied()))
}

pub(super) fn pat_name(p: &Pat) -> Option<String> {
    binding(p).map(|i| i.ident.to_string())
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
            let Expr::Block(b) = &*cl.body else {
                rs.report(u, Rule::CallbackUsesCpu, format!("the sample callback for `{map}` uses `{cpu}`, the CPU that produced the event, which a ring buffer does not report; bpf-migrate adds it to the events for a callback whose body is a block"), "put the closure's body in braces and run bpf-migrate again; or, by hand, add a cpu field to the event, set it with bpf_get_smp_processor_id() on the BPF side, and read that field instead");
                return false;
            };
            let Some(keep) = keep_cpu(
                rs,
                &b.block,
                &cpu,
                pat_name(inputs[1]),
                map,
                (format!("|{cpu}, ..|"), format!("for `{map}`")),
            ) else {
                return false;
            };
            edits.push(keep);
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

#[cfg(test)]
mod tests {
    use super::super::test_crate::{migrates, refused};
    use crate::rules::Rule;

    #[test]
    fn function_loses_its_cpu_and_returns_zero_on_every_path() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                if data.len() < 4 {
                    return;
                }
                if data[0] == 0 {
                    println!("zero");
                }
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            fn handle(data: &[u8]) -> i32 {
                if data.len() < 4 {
                    return 0;
                }
                if data[0] == 0 {
                    println!("zero");
                }
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

    /// An expression body becomes a block; an empty block gets its 0.
    #[test]
    fn inline_closures_return_zero() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu, data: &[u8]| println!("{}", data.len()))
                    .build()?;
                let idle = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu, _data: &[u8]| {})
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                idle.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, |data: &[u8]| { println!("{}", data.len()); 0 })?;
                let perf = builder.build()?;
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, |_data: &[u8]| { 0 })?;
                let idle = builder.build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                idle.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
        );
    }

    #[test]
    fn closure_held_in_a_let_is_edited_where_it_is() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let total = std::cell::Cell::new(0);
                let on_event = |_cpu: i32, data: &[u8]| {
                    total.set(total.get() + data.len());
                    if data.is_empty() {
                        return;
                    }
                    println!("{}", total.get())
                };
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(on_event)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let total = std::cell::Cell::new(0);
                let on_event = |data: &[u8]| {
                    total.set(total.get() + data.len());
                    if data.is_empty() {
                        return 0;
                    }
                    println!("{}", total.get());
                    0
                };
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, on_event)?;
                let perf = builder.build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
        );
    }

    #[test]
    fn let_that_is_no_closure_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn make() -> impl FnMut(i32, &[u8]) {
                |_cpu, _data| {}
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let on_event = make();
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(on_event)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackForm,
            "the sample callback `on_event` is not a closure or a function bpf-migrate can see",
        );
    }

    #[test]
    fn function_of_another_file_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(events::on_event)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackForm,
            "the sample callback `on_event` is not defined in this file",
        );
    }

    /// Its signature changes, so its other callers would break.
    #[test]
    fn function_called_elsewhere_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                handle(0, &[]);
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackForm,
            "the sample callback `handle` is also used here",
        );
    }

    #[test]
    fn function_of_another_shape_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(data: &[u8]) {
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
            Rule::CallbackForm,
            "the sample callback `handle` does not look like fn(cpu: i32, data: &[u8])",
        );
    }

    #[test]
    fn function_reading_the_cpu_of_an_event_that_is_no_struct_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(cpu: i32, data: &[u8]) {
                println!("{} bytes on CPU {}", data.len(), cpu);
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackUsesCpu,
            "the sample callback `handle` (src/main.rs:4) uses `cpu`, the CPU that produced the event, which a ring buffer does not report; bpf-migrate cannot add it to the events: the event `&pid` is a `u32`, not a struct",
        );
    }

    #[test]
    fn callback_that_is_an_expression_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn make() -> impl FnMut(i32, &[u8]) {
                |_cpu, _data| {}
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(make())
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackForm,
            "the sample callback is neither a closure nor a function name",
        );
    }

    #[test]
    fn closure_of_another_shape_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|data: &[u8]| println!("{}", data.len()))
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackForm,
            "the sample callback for `events` does not look like |cpu, data| ...",
        );
    }

    /// A format string's `{cpu}` is a use too.
    #[test]
    fn closure_reading_the_cpu_without_a_block_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|cpu, data: &[u8]| println!("{} bytes on CPU {cpu}", data.len()))
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::CallbackUsesCpu,
            "the sample callback for `events` uses `cpu`, the CPU that produced the event, which a ring buffer does not report; bpf-migrate adds it to the events for a callback whose body is a block",
        );
    }

    /// The BPF side of `CPU_READER`: a struct event with a `#define`d array.
    const EVENT_BPF: &str = r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define COMM_LEN 16

struct event {
    u64 ts;
    u32 pid;
    char comm[COMM_LEN];
    u8 flags;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(u32));
    __uint(value_size, sizeof(u32));
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_getpid")
int handle(void *ctx)
{
    struct event e = {};

    e.ts = bpf_ktime_get_ns();
    e.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
    return 0;
}
"#;

    /// A reader printing the CPU, from a closure given `check` as its length test.
    fn cpu_reader(check: &str) -> String {
        format!(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {{
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|cpu, data: &[u8]| {{
                        if {check} {{
                            return;
                        }}
                        println!("{{}} bytes on CPU {{cpu}}", data.len());
                    }})
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }}
            "#
        )
    }

    #[test]
    fn a_callback_reading_the_cpu_reads_it_from_a_field_of_the_event() {
        use crate::engine::options::Options;
        use crate::engine::testkit::run;
        let (changed, diags) = run(
            &[
                (
                    "src/main.rs",
                    &super::super::test_crate::main_rs(&cpu_reader("data.len() < 8")),
                ),
                ("src/bpf/x.bpf.c", EVENT_BPF),
            ],
            &Options::default(),
        );
        assert!(!diags.iter().any(|d| d.severity.refuses()), "{diags:?}");
        // ts 0..8, pid 8..12, comm 12..28, flags 28: the field at 32.
        let main = &changed["src/main.rs"];
        assert!(
            main.contains("builder.add(&skel.maps.events, |data: &[u8]| {\n            let cpu = data.get(32..36).map_or(-1, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])); // the event's cpu field (added by bpf-migrate)\n            if data.len() < 8 {\n                return 0;\n            }"),
            "{main}"
        );
        let bpf = &changed["src/bpf/x.bpf.c"];
        assert!(
            bpf.contains("    u8 flags;\n    unsigned int cpu;\n};"),
            "{bpf}"
        );
        assert!(bpf.contains("e.cpu = bpf_get_smp_processor_id();"), "{bpf}");
        // A record checked for its exact length would no longer pass.
        refused(
            &cpu_reader("data.len() != std::mem::size_of::<u64>()"),
            Rule::CallbackUsesCpu,
            "it compares `data.len()` with `==` or `!=`",
        );
    }
}
