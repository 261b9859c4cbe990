//! Step 1: the event of an output call. `&e` for a local struct `e` (stack) or `e` assigned
//! once from a per-CPU array lookup (heap); the output a statement of the block that declares
//! the event (or the whole body of an `if` without `else` there), nothing after it mentioning
//! the event; an initialiser the reservation can carry over; and, once the later steps have
//! passed, a size that is the event's own.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::super::gate::is_python_source;
use super::{
    Candidate, Dialect, bare, declared_name, first_declarator, heap, mentions, single_declarator,
    stack, statements,
};
use crate::lang::NodeExt;
use crate::lang::c;

/// What step 1 found out about the event of an output call.
pub(super) struct Event<'t> {
    /// The event's name: the struct (stack) or the pointer (heap).
    pub(super) var: String,
    /// A local struct, not a pointer into a per-CPU array.
    pub(super) stack: bool,
    /// The output call's expression statement.
    pub(super) call_stmt: Node<'t>,
    /// The `if` without `else` whose whole body is the output.
    pub(super) guard: Option<Node<'t>>,
    /// The statement of `stmts` that outputs: the guard, else the call's statement.
    pub(super) out_stmt: Node<'t>,
    /// The function (or BCC probe body) and its body.
    pub(super) func: Node<'t>,
    pub(super) body: Node<'t>,
    /// The event's declaration and its type as written (`struct event`).
    pub(super) decl: Node<'t>,
    pub(super) decl_type: String,
    /// Where the event starts to exist: the declaration (stack) or the heap lookup.
    pub(super) anchor: Node<'t>,
    /// The statements of the block `B` that holds the anchor, and where in them the anchor
    /// and the output are.
    pub(super) stmts: Vec<Node<'t>>,
    pub(super) ai: usize,
    pub(super) oi: usize,
    /// The stack event's initialiser, and its designated fields.
    pub(super) init: Option<Node<'t>>,
    pub(super) fields: Vec<(String, String)>,
}

impl<'t> Event<'t> {
    /// The condition of the guarding `if`, which runs before the submit.
    pub(super) fn condition(&self) -> Option<Node<'t>> {
        self.guard.and_then(|g| g.field("condition"))
    }
}

/// Where the output call stands: its statement, the guarding `if`, the function and its body.
struct Site<'t> {
    call_stmt: Node<'t>,
    guard: Option<Node<'t>>,
    out_stmt: Node<'t>,
    func: Node<'t>,
    body: Node<'t>,
}

pub(super) fn recognise<'t>(cx: &Ctx<'_, 't>, k: &Candidate<'t>) -> Result<Event<'t>, String> {
    let src = cx.src();
    let site = site(cx, k)?;
    let (var, stack) = event_var(cx, k)?;
    let (decl, decl_type) = declaration(site.body, &var, src)?;

    // The anchor: where the event starts to exist (the declaration, or the heap lookup).
    let anchor = if stack {
        let d = first_declarator(decl);
        if d.kind() == "init_declarator" {
            if !matches!(d.field("declarator").map(|x| x.kind()), Some("identifier")) {
                return Err(format!("`{var}` is not a plain struct variable"));
            }
        } else if d.kind() != "identifier" {
            return Err(format!("`{var}` is not a plain struct variable"));
        }
        decl
    } else {
        heap::heap_lookup(cx, site.body, decl, &var)?
    };
    let block = anchor
        .parent()
        .filter(|p| p.kind() == "compound_statement")
        .ok_or("the event is not declared in a block")?;
    let stmts = statements(block);
    let ai = stmts.iter().position(|s| *s == anchor).unwrap();
    let oi = stmts
        .iter()
        .position(|s| *s == site.out_stmt)
        .filter(|&i| i > ai)
        .ok_or("the output is not a statement of the block that declares the event (it is conditional or in a loop)")?;
    if stmts[oi + 1..]
        .iter()
        .any(|s| !mentions(*s, &var, src).is_empty())
    {
        return Err(format!("`{var}` is used after it is output"));
    }

    // `= { .pid = pid, ... }`: the fields, set right after the reservation, which then takes
    // the declaration's place so that the values are computed where they were.
    let init = if stack {
        first_declarator(decl).field("value")
    } else {
        None
    };
    let fields = match init {
        Some(v) => stack::designated_fields(v, src, &var)?,
        None => Vec::new(),
    };
    Ok(Event {
        var,
        stack,
        call_stmt: site.call_stmt,
        guard: site.guard,
        out_stmt: site.out_stmt,
        func: site.func,
        body: site.body,
        decl,
        decl_type,
        anchor,
        stmts,
        ai,
        oi,
        init,
        fields,
    })
}

fn site<'t>(cx: &Ctx<'_, 't>, k: &Candidate<'t>) -> Result<Site<'t>, String> {
    let src = cx.src();
    let call = k.call;
    let call_stmt = call
        .parent()
        .filter(|p| p.kind() == "expression_statement")
        .ok_or("the result of the output call is used, and bpf_ringbuf_submit() returns nothing")?;
    // `if (cond) output;` with no else: the if stands where the output does, its condition
    // runs before the submit, and an added else discards.
    let guard = guarded(call_stmt);
    let out_stmt = guard.unwrap_or(call_stmt);
    let func = c::ancestor(call, "function_definition")
        .or_else(|| bcc_probe_body(call, src))
        .ok_or("the output is not in a function")?;
    let body = if func.kind() == "compound_statement" {
        func
    } else {
        // Defensive: a function definition always has a body.
        func.field("body").ok_or("the function has no body")?
    };
    if matches!(k.dialect, Dialect::Bcc { .. })
        && is_python_source(cx.file.path(), &cx.file.text)
        && c::text(func, src).contains("{{")
    {
        return Err("the C is a Python format string, where new braces would need escaping".into());
    }
    Ok(Site {
        call_stmt,
        guard,
        out_stmt,
        func,
        body,
    })
}

/// The event's name, and whether it is a local struct (`&e`) rather than a pointer (`e`).
fn event_var(cx: &Ctx, k: &Candidate) -> Result<(String, bool), String> {
    let src = cx.src();
    let data_node = cx
        .root()
        .descendant_for_byte_range(k.data.0, k.data.1)
        // Defensive: a span inside the file always has a node.
        .ok_or("the event argument cannot be read")?;
    let data = bare(data_node);
    match data.kind() {
        "pointer_expression" if data.field("operator").map(|o| c::text(o, src)) == Some("&") => {
            let a = data.field("argument").map(bare);
            match a {
                Some(a) if a.kind() == "identifier" => Ok((c::text(a, src).to_string(), true)),
                _ => Err("the event is not a local variable (`&e`)".into()),
            }
        }
        "identifier" => Ok((c::text(data, src).to_string(), false)),
        _ => Err(format!(
            "the event `{}` is not a local variable or a per-CPU array pointer",
            &src[k.data.0..k.data.1]
        )),
    }
}

/// The one declaration of the event in the function, declaring it alone, and its type.
fn declaration<'t>(body: Node<'t>, var: &str, src: &str) -> Result<(Node<'t>, String), String> {
    let decls: Vec<Node> = c::descendants(body)
        .into_iter()
        .filter(|n| n.kind() == "declaration")
        .filter(|d| {
            let mut cur = d.walk();
            d.children_by_field_name("declarator", &mut cur)
                .any(|x| declared_name(x, src) == Some(var))
        })
        .collect();
    let [decl] = decls[..] else {
        return Err(if decls.is_empty() {
            format!("`{var}` is not declared in this function")
        } else {
            format!("`{var}` is declared more than once in this function")
        });
    };
    let decl_type = src[decl.start_byte()..first_declarator(decl).start_byte()].trim();
    let decl_type = decl_type.split_whitespace().collect::<Vec<_>>().join(" ");
    if decl_type.contains("static") || decl_type.contains("extern") || !single_declarator(decl) {
        return Err(format!("`{var}` is not declared alone as a local"));
    }
    if decl_type == "void" {
        return Err(format!(
            "`{var}` points to void; the reservation needs the event's type"
        ));
    }
    Ok((decl, decl_type))
}

/// The size must be the event's own, a compile-time constant.
pub(super) fn check_size(src: &str, k: &Candidate, ev: &Event) -> Result<(), String> {
    let var = &ev.var;
    let size = c::strip_parens(&src[k.size.0..k.size.1]);
    let size_ok = [
        format!("sizeof({var})"),
        format!("sizeof {var}"),
        format!("sizeof(*{var})"),
        format!("sizeof *{var}"),
        format!("sizeof({})", ev.decl_type),
    ]
    .iter()
    .any(|f| {
        *f == size
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("( ", "(")
            .replace(" )", ")")
    });
    if size_ok {
        return Ok(());
    }
    let constant = !c::lex(size, 0..size.len()).iter().any(|&(t, s, e)| {
        t == c::Tok::Ident && {
            let w = &size[s..e];
            w != "sizeof" && w.chars().any(|ch| ch.is_ascii_lowercase())
        }
    });
    Err(if constant {
        format!("the size `{size}` is not the size of `{var}`")
    } else {
        format!("the size `{size}` is not a compile-time constant, and a reservation's must be")
    })
}

/// The body of a BCC probe macro (`TRACEPOINT_PROBE(sock, inet_sock_set_state) { ... }`),
/// which the C parser sees as a block at file scope after a call. The macros define functions
/// that return int.
fn bcc_probe_body<'t>(call: Node<'t>, src: &str) -> Option<Node<'t>> {
    const MACROS: &[&str] = &[
        "TRACEPOINT_PROBE",
        "RAW_TRACEPOINT_PROBE",
        "KFUNC_PROBE",
        "KRETFUNC_PROBE",
        "KMOD_RET",
        "LSM_PROBE",
    ];
    let mut n = call;
    let body = loop {
        let p = n.parent()?;
        if p.kind() == "translation_unit" {
            break n;
        }
        n = p;
    };
    let head = body.prev_named_sibling()?;
    let text = c::text(head, src).trim_start();
    (body.kind() == "compound_statement"
        && MACROS.iter().any(|m| {
            text.strip_prefix(m)
                .is_some_and(|r| r.trim_start().starts_with('('))
        }))
    .then_some(body)
}

/// The `if` whose whole body (with or without braces) is `stmt`, when it has no else.
fn guarded(stmt: Node) -> Option<Node> {
    let mut body = stmt;
    let mut p = stmt.parent()?;
    if p.kind() == "compound_statement" {
        if statements(p).len() != 1 {
            return None;
        }
        body = p;
        p = p.parent()?;
    }
    (p.kind() == "if_statement"
        && p.field("consequence") == Some(body)
        && p.field("alternative").is_none())
    .then_some(p)
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: "the function has no
    //! body", "the event argument cannot be read".

    use super::super::snippets::{HEAP, bcc_fallback, fallback};

    #[test]
    fn the_result_of_the_output_is_used() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	return bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
}
"#,
            "the result of the output call is used, and bpf_ringbuf_submit() returns nothing",
        );
    }

    /// A block at file scope after a macro that is not a BCC probe macro.
    #[test]
    fn the_output_is_not_in_a_function() {
        fallback(
            r#"DEFINE_THING(x, y);
{
	struct event e = {};

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
}
"#,
            "the output is not in a function",
        );
    }

    #[test]
    fn python_format_strings_keep_the_copy() {
        bcc_fallback(
            r#"
struct event_t {{
    u32 pid;
}};

int probe(struct pt_regs *ctx)
{{
    struct event_t e = {{}};

    e.pid = {pid};
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}}
"#,
            ".format(pid=1)",
            "the C is a Python format string, where new braces would need escaping",
        );
    }

    #[test]
    fn the_event_is_an_element() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e[2] = {};

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e[0], sizeof(e[0]));
	return 0;
}
"#,
            "the event is not a local variable (`&e`)",
        );
    }

    #[test]
    fn the_event_is_a_field() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct { struct event ev; } s = {};

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, s.ev.comm, 16);
	return 0;
}
"#,
            "the event `s.ev.comm` is not a local variable or a per-CPU array pointer",
        );
    }

    #[test]
    fn the_event_is_a_global() {
        fallback(
            r#"struct event global_e;

SEC("tp/a")
int handle(void *ctx)
{
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &global_e, sizeof(global_e));
	return 0;
}
"#,
            "`global_e` is not declared in this function",
        );
    }

    #[test]
    fn the_event_is_declared_twice() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	if (ctx) {
		struct event e = {};
		e.pid = 1;
	}
	struct event e = {};

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "`e` is declared more than once in this function",
        );
    }

    #[test]
    fn the_event_is_static_or_declared_with_another() {
        for decl in ["static struct event e;", "struct event e = {}, f = {};"] {
            fallback(
                &format!(
                    r#"SEC("tp/a")
int handle(void *ctx)
{{
	{decl}

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}}
"#
                ),
                "`e` is not declared alone as a local",
            );
        }
    }

    #[test]
    fn the_heap_pointer_is_void() {
        fallback(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	void *e = bpf_map_lookup_elem(&heap, &zero);

	if (!e)
		return 0;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(struct event));
	return 0;
}}
"#
            ),
            "`e` points to void; the reservation needs the event's type",
        );
    }

    #[test]
    fn the_event_is_an_array() {
        for decl in ["char buf[16];", "char buf[16] = {};"] {
            fallback(
                &format!(
                    r#"SEC("tp/a")
int handle(void *ctx)
{{
	{decl}

	bpf_get_current_comm(buf, sizeof(buf));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &buf, sizeof(buf));
	return 0;
}}
"#
                ),
                "`buf` is not a plain struct variable",
            );
        }
    }

    #[test]
    fn the_lookup_is_the_body_of_an_if() {
        fallback(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	struct event *e;

	if (ctx)
		e = bpf_map_lookup_elem(&heap, &zero);
	if (!e)
		return 0;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}}
"#
            ),
            "the event is not declared in a block",
        );
    }

    #[test]
    fn the_output_is_in_a_loop() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	for (int i = 0; i < 4; i++) {
		e.pid = i;
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	}
	return 0;
}
"#,
            "the output is not a statement of the block that declares the event (it is conditional or in a loop)",
        );
    }

    #[test]
    fn the_event_is_used_after_the_output() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return e.pid;
}
"#,
            "`e` is used after it is output",
        );
    }

    #[test]
    fn the_size_is_another_constant() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, 8);
	return 0;
}
"#,
            "the size `8` is not the size of `e`",
        );
    }

    #[test]
    fn the_size_is_a_variable() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};
	u32 len = 8;

	e.pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, len);
	return 0;
}
"#,
            "the size `len` is not a compile-time constant, and a reservation's must be",
        );
    }
}
