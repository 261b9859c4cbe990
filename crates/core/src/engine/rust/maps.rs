//! Map expressions: which skeleton map a chain reads (`&skel.maps.events`,
//! `skel.maps().events()`, `obj.map("events")`, or a parameter every caller passes the same
//! map), and the function a chain is in.

use syn::spanned::Spanned;
use syn::{Expr, FnArg};

use super::Rs;
use super::callbacks::pat_name;
use super::collect::{Collect, Func};
use crate::engine::context::Report;
use crate::rules::Rule;

/// The name of the map a chain reads, or None when it was refused.
pub(super) fn resolve_map(
    rs: &mut Rs,
    col: &Collect,
    e: &Expr,
    func: Option<Func>,
) -> Option<String> {
    let map = map_name(e).or_else(|| map_from_callers(rs, col, e, func));
    if map.is_none() {
        rs.report(rs.range(e.span()).0, Rule::UnresolvedMap, format!("cannot tell which map `{}` is", rs.text(e.span())), "bpf-migrate follows &skel.maps.NAME, skel.maps().NAME() and obj.map(\"NAME\"); migrate by hand");
    }
    map
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

pub(super) fn enclosing_fn<'ast>(
    rs: &Rs,
    col: &Collect<'ast>,
    at: (usize, usize),
) -> Option<Func<'ast>> {
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

#[cfg(test)]
mod tests {
    use super::super::test_crate::{migrates, refused};
    use crate::rules::Rule;

    /// `Self::listen(&skel.maps.events)` is the only call of the method reading `events`.
    #[test]
    fn map_that_every_caller_of_a_method_passes() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            struct Tracer;

            impl Tracer {
                fn listen(events: &libbpf_rs::Map) -> anyhow::Result<()> {
                    let perf = PerfBufferBuilder::new(events).sample_cb(handle).build()?;
                    perf.poll(std::time::Duration::from_millis(100))?;
                    Ok(())
                }

                fn run(skel: &x::XSkel) -> anyhow::Result<()> {
                    Self::listen(&skel.maps.events)
                }
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = x::XSkelBuilder::default().open(&mut open_object)?.load()?;
                Tracer::run(&skel)
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            fn handle(data: &[u8]) -> i32 {
                println!("{}", data.len());
                0
            }

            struct Tracer;

            impl Tracer {
                fn listen(events: &libbpf_rs::Map) -> anyhow::Result<()> {
                    let mut builder = RingBufferBuilder::new();
                    builder.add(events, handle)?;
                    let perf = builder.build()?;
                    perf.poll(std::time::Duration::from_millis(100))?;
                    Ok(())
                }

                fn run(skel: &x::XSkel) -> anyhow::Result<()> {
                    Self::listen(&skel.maps.events)
                }
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = x::XSkelBuilder::default().open(&mut open_object)?.load()?;
                Tracer::run(&skel)
            }
            "#,
        );
    }

    #[test]
    fn map_named_by_a_string() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(obj: &libbpf_rs::Object) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(obj.map("events").unwrap())
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

            fn open(obj: &libbpf_rs::Object) -> anyhow::Result<()> {
                let mut builder = RingBufferBuilder::new();
                builder.add(obj.map("events").unwrap(), handle)?;
                let perf = builder.build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
        );
    }

    #[test]
    fn map_held_in_a_local_is_refused() {
        refused(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let events = &skel.maps.events;
                let perf = PerfBufferBuilder::new(events).sample_cb(handle).build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#,
            Rule::UnresolvedMap,
            "cannot tell which map `events` is",
        );
    }
}
