//! Where an output call's event could carry the CPU that wrote it: the event is a
//! `struct NAME` of the function, sent whole (`&e, sizeof(e)` or `e, sizeof(*e)`), and the
//! statement that outputs it can have `e.cpu = bpf_get_smp_processor_id();` put before it.
//! Worked out for every output call; linking uses it only for a map whose sample callback
//! reads the CPU (`engine::cpu_field`), and reports the reason when there is one.

use tree_sitter::Node;

use super::super::context::{CpuSite, Ctx};
use crate::lang::NodeExt;
use crate::lang::c;
use crate::source::line_start;

/// The site of the output call `call` whose event and size are the arguments at `data` and
/// `size`, or where and why its event cannot carry the CPU.
pub(crate) fn cpu_site(
    cx: &Ctx,
    call: Node,
    data: (usize, usize),
    size: (usize, usize),
) -> Result<CpuSite, (usize, String)> {
    let src = cx.src();
    let (data_at, size_at) = (data.0, size.0);
    let data_text = &src[data.0..data.1];
    let (var, pointer) = event_var(cx, data).ok_or_else(|| {
        (
            data_at,
            format!(
                "the event `{data_text}` is not a local struct (`&e`) or a pointer to one (`e`)"
            ),
        )
    })?;
    let func = c::ancestor(call, "function_definition").ok_or_else(|| {
        (
            call.start_byte(),
            "the output is not in a function".to_string(),
        )
    })?;
    let decl = declaration(func, &var, src).map_err(|why| (data_at, why))?;
    let tag = struct_tag(decl.ty, src).ok_or_else(|| {
        (
            data_at,
            format!(
                "the event `{data_text}` is a `{}`, not a struct (`struct NAME`) the CPU can be added to",
                c::text(decl.ty, src)
            ),
        )
    })?;
    if decl.pointer != pointer {
        return Err((
            data_at,
            format!(
                "the event `{data_text}` is not `&{var}` for a local `struct {tag} {var}` or `{var}` for a `struct {tag} *{var}`"
            ),
        ));
    }
    if !pointer && !decl.initialised && !zeroed(func, &var, src) {
        return Err((
            data_at,
            format!(
                "`{var}` is declared without an initialiser: a field added at the end of `struct {tag}` may leave padding bytes that are never written, which the verifier rejects; initialise it (`struct {tag} {var} = {{}};`)"
            ),
        ));
    }
    let size_text = &src[size.0..size.1];
    if !sizes_whole(size_text, &var, pointer, &format!("struct {tag}")) {
        return Err((
            size_at,
            format!(
                "the size `{}` is not the whole `struct {tag}` (`sizeof({}{var})`): a record of another length cannot have a field added at its end",
                size_text,
                if pointer { "*" } else { "" }
            ),
        ));
    }
    let stmt = statement(call, pointer, &var).map_err(|why| (call.start_byte(), why))?;
    let at = stmt.start_byte();
    let ls = line_start(src, at);
    let sep = if src[ls..at].trim().is_empty() {
        format!("\n{}", &src[ls..at])
    } else {
        " ".to_string()
    };
    Ok(CpuSite {
        tag,
        var,
        arrow: pointer,
        at,
        sep,
    })
}

/// The type an output call sends, as its function declares the event (`struct NAME` for
/// `&e` with a local `struct NAME e`, or `e` with a `struct NAME *e`), and the start of that
/// function; or why not. BCC lays `b["MAP"].event()` out from this type, so a helper that
/// outputs for the call must take it (`compat`).
pub(crate) fn event_type(
    cx: &Ctx,
    call: Node,
    data: (usize, usize),
) -> Result<(String, usize), String> {
    let src = cx.src();
    let data_text = &src[data.0..data.1];
    let (var, pointer) = event_var(cx, data).ok_or_else(|| {
        format!("the event `{data_text}` is not a local (`&e`) or a pointer (`e`) of a type this function declares")
    })?;
    let func = c::ancestor(call, "function_definition")
        .ok_or_else(|| "the output is not in a function".to_string())?;
    let decl = declaration(func, &var, src)?;
    if decl.pointer != pointer {
        return Err(format!(
            "the event `{data_text}` is not `&{var}` for a local `{var}` or `{var}` for a pointer `*{var}`"
        ));
    }
    Ok((c::text(decl.ty, src).to_string(), func.start_byte()))
}

/// Whether `size` is the size of the whole event `var` of type `ty`: `sizeof(var)` (a local),
/// `sizeof(*var)` (a pointer), or `sizeof(ty)`.
pub(super) fn sizes_whole(size: &str, var: &str, pointer: bool, ty: &str) -> bool {
    let size: String = c::strip_parens(size).split_whitespace().collect();
    let whole = if pointer {
        [format!("sizeof(*{var})"), format!("sizeof*{var}")]
    } else {
        [format!("sizeof({var})"), format!("sizeof{var}")]
    };
    whole.contains(&size)
        || size == format!("sizeof({})", ty.split_whitespace().collect::<String>())
}

/// `&e` (a local) or `e` (a pointer), casts and parentheses aside.
pub(super) fn event_var(cx: &Ctx, span: (usize, usize)) -> Option<(String, bool)> {
    let src = cx.src();
    let data = bare(cx.root().descendant_for_byte_range(span.0, span.1)?);
    match data.kind() {
        "pointer_expression" if data.field("operator").map(|o| c::text(o, src)) == Some("&") => {
            let a = bare(data.field("argument")?);
            (a.kind() == "identifier").then(|| (c::text(a, src).to_string(), false))
        }
        "identifier" => Some((c::text(data, src).to_string(), true)),
        _ => None,
    }
}

pub(super) fn bare(mut n: Node) -> Node {
    loop {
        let inner = match n.kind() {
            "parenthesized_expression" => n.named_child(0),
            "cast_expression" => n.field("value"),
            _ => None,
        };
        match inner {
            Some(x) => n = x,
            None => return n,
        }
    }
}

/// The one declaration of the event in its function.
pub(super) struct Decl<'t> {
    pub(super) ty: Node<'t>,
    pub(super) pointer: bool,
    initialised: bool,
}

pub(super) fn declaration<'t>(func: Node<'t>, var: &str, src: &str) -> Result<Decl<'t>, String> {
    let mut found = Vec::new();
    for d in c::descendants(func)
        .into_iter()
        .filter(|n| matches!(n.kind(), "declaration" | "parameter_declaration"))
    {
        let Some(ty) = d.field("type") else { continue };
        let mut cur = d.walk();
        for x in d.children_by_field_name("declarator", &mut cur) {
            let (init, mut n) = match x.kind() {
                "init_declarator" => (true, x.field("declarator")),
                _ => (false, Some(x)),
            };
            let mut pointer = false;
            let mut plain = true;
            while let Some(m) = n {
                match m.kind() {
                    "identifier" => break,
                    "pointer_declarator" if !pointer => {
                        pointer = true;
                        n = m.field("declarator");
                    }
                    _ => {
                        plain = false;
                        n = m.field("declarator");
                    }
                }
            }
            if n.is_some_and(|m| c::text(m, src) == var) {
                found.push((
                    Decl {
                        ty,
                        pointer,
                        initialised: init,
                    },
                    plain,
                ));
            }
        }
    }
    match &found[..] {
        [] => Err(format!(
            "`{var}` is not declared in the function that outputs it"
        )),
        [(_, false)] => Err(format!("`{var}` is not a plain struct or pointer variable")),
        [_] => Ok(found.pop().unwrap().0),
        _ => Err(format!(
            "`{var}` is declared more than once in its function"
        )),
    }
}

/// `struct NAME` without a body.
fn struct_tag(ty: Node, src: &str) -> Option<String> {
    (ty.kind() == "struct_specifier" && ty.field("body").is_none())
        .then(|| ty.field("name").map(|n| c::text(n, src).to_string()))
        .flatten()
}

/// `__builtin_memset(&e, 0, ...)` (or `memset`) somewhere in the function: the event is
/// zeroed whole, padding included.
fn zeroed(func: Node, var: &str, src: &str) -> bool {
    c::descendants(func).into_iter().any(|n| {
        n.kind() == "call_expression"
            && matches!(c::call_name(n, src), Some("__builtin_memset" | "memset"))
            && c::arg_spans(n).first().is_some_and(|&(a, b)| {
                let t: String = src[a..b].split_whitespace().collect();
                t == format!("&{var}")
            })
    })
}

/// The statement before which the assignment goes: the one of a block (or a `case`) that
/// holds the call. Not through a loop, a switch or a label, where a statement put before it
/// would run at another time; nor, for a pointer, through the body of an `if` without
/// braces, whose condition may be what makes the pointer valid.
fn statement<'t>(call: Node<'t>, pointer: bool, var: &str) -> Result<Node<'t>, String> {
    let mut n = call;
    loop {
        let p = n
            .parent()
            .ok_or_else(|| "the output is not in a block".to_string())?;
        match p.kind() {
            "compound_statement" | "case_statement" => return Ok(n),
            "for_statement" | "while_statement" | "do_statement" | "switch_statement" => {
                return Err(
                    "the output is the body or the condition of a loop or switch without braces; put it in a block of its own".into(),
                );
            }
            "labeled_statement" => {
                return Err("the output's statement has a label, which a jump could reach without the CPU set; put the label on a statement of its own".into());
            }
            "if_statement" | "else_clause" if pointer && p.field("condition") != Some(n) => {
                return Err(format!(
                    "the output of `{var}` is the body of an `if` or `else` without braces, whose condition may be what makes `{var}` valid; put braces around it"
                ));
            }
            _ => n = p,
        }
    }
}
