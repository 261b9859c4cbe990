//! A stack event (`struct event e = {};` ... `output(&e, sizeof(e))`): its initialiser, its
//! uses rewritten to go through the pointer, and the reservation put where it is first used.

use tree_sitter::Node;

use super::event::Event;
use super::region::Region;
use super::{first_line, mentions};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{indent_at, line_end_incl, line_start};

/// The fields of an initialiser: none for `{}` and `{0}`, `(field, value)` for designated
/// ones (`{ .pid = pid }`); anything else (positional values, nested designators, values that
/// span lines or read the event) is refused.
pub(super) fn designated_fields(
    init: Node,
    src: &str,
    var: &str,
) -> Result<Vec<(String, String)>, String> {
    let flat: String = c::text(init, src).split_whitespace().collect();
    if flat == "{}" || flat == "{0}" {
        return Ok(Vec::new());
    }
    let refuse = || {
        format!(
            "`{var}` is initialised with `{}`; bpf-migrate carries over `= {{}}` and `= {{ .field = value, ... }}`",
            first_line(c::text(init, src))
        )
    };
    if init.kind() != "initializer_list" {
        return Err(refuse());
    }
    let mut fields = Vec::new();
    let mut cur = init.walk();
    for item in init.named_children(&mut cur) {
        if item.kind() == "comment" {
            continue;
        }
        let designators: Vec<Node> = {
            let mut c2 = item.walk();
            item.children_by_field_name("designator", &mut c2).collect()
        };
        let value = item.field("value");
        match (item.kind(), &designators[..], value) {
            ("initializer_pair", [d], Some(v))
                if d.kind() == "field_designator"
                    && !c::text(v, src).contains('\n')
                    && mentions(v, var, src).is_empty() =>
            {
                let field = c::text(*d, src).trim_start_matches('.').trim();
                fields.push((field.to_string(), c::text(v, src).to_string()));
            }
            _ => return Err(refuse()),
        }
    }
    Ok(fields)
}

/// The uses of the event in the region and the guard's condition go through the pointer.
pub(super) fn rewrite_uses(
    src: &str,
    ev: &Event,
    reg: &Region,
    edits: &mut Vec<Edit>,
) -> Result<(), String> {
    let cond = ev.condition();
    for s in reg.stmts.iter().chain(cond.as_ref()) {
        for m in mentions(*s, &ev.var, src) {
            edits.push(rewrite_use(m, &ev.var, src)?);
        }
    }
    Ok(())
}

/// A use of a stack event becomes a use of the pointer: `e.f` → `e->f`, `&e` → `e`,
/// `sizeof(e)` → `sizeof(*e)`.
fn rewrite_use(m: Node, var: &str, src: &str) -> Result<Edit, String> {
    // Defensive: an identifier in a statement has a parent.
    let p = m.parent().ok_or("a bare use")?;
    match p.kind() {
        "field_expression" if p.field("argument") == Some(m) => {
            // Defensive: a field expression has its operator.
            let op = p.field("operator").ok_or("a field without operator")?;
            if c::text(op, src) != "." {
                return Err(format!("`{}` uses the event as a pointer", c::text(p, src)));
            }
            Ok(Edit::replace(
                op.start_byte(),
                op.end_byte(),
                "->",
                Rule::ReserveSubmit,
            ))
        }
        "pointer_expression" if p.field("operator").map(|o| c::text(o, src)) == Some("&") => Ok(
            Edit::replace(p.start_byte(), p.end_byte(), var, Rule::ReserveSubmit),
        ),
        "sizeof_expression" => Ok(Edit::replace(
            m.start_byte(),
            m.end_byte(),
            format!("*{var}"),
            Rule::ReserveSubmit,
        )),
        "parenthesized_expression"
            if p.parent().is_some_and(|g| g.kind() == "sizeof_expression") =>
        {
            Ok(Edit::replace(
                m.start_byte(),
                m.end_byte(),
                format!("*{var}"),
                Rule::ReserveSubmit,
            ))
        }
        _ => Err(format!(
            "`{}` uses the event `{var}` as a whole value",
            first_line(c::text(p, src))
        )),
    }
}

/// The texts the reservation is made of.
pub(super) struct Reservation<'a> {
    /// The reserve call.
    pub(super) reserve: &'a str,
    /// The failure branch's statement.
    pub(super) on_full: &'a str,
    /// The file's indentation step.
    pub(super) unit: &'a str,
}

/// `struct event e = {};` goes; the pointer is declared where the event is first used (the
/// statement `ri` of `B`), reserved, checked, zeroed and given its designated fields there.
/// An initialiser zeroes every byte it does not set, padding included.
pub(super) fn reserve(
    src: &str,
    ev: &Event,
    ri: usize,
    r: &Reservation,
    edits: &mut Vec<Edit>,
) -> Result<(), String> {
    let (var, decl, decl_type) = (&ev.var, ev.decl, &ev.decl_type);
    let (reserve, on_full, unit) = (r.reserve, r.on_full, r.unit);
    let zero = ev.init.is_some();
    let at = ev.stmts[ri];
    let ls = line_start(src, at.start_byte());
    if !src[ls..at.start_byte()].trim().is_empty() {
        return Err("the first use of the event shares its line with other code".into());
    }
    let dl = line_start(src, decl.start_byte());
    if !src[dl..decl.start_byte()].trim().is_empty()
        || !src[decl.end_byte()..line_end_incl(src, decl.end_byte())]
            .trim()
            .is_empty()
    {
        return Err(format!(
            "the declaration of `{var}` shares its line with other code"
        ));
    }
    let ind = indent_at(src, at.start_byte());
    let declare = if ri == ev.ai + 1 {
        format!("{decl_type} *")
    } else {
        String::new()
    };
    let mut text =
        format!("{ind}{declare}{var} = {reserve};\n{ind}if (!{var})\n{ind}{unit}{on_full}\n");
    if zero {
        text.push_str(&format!(
            "{ind}__builtin_memset({var}, 0, sizeof(*{var}));\n"
        ));
    }
    for (field, value) in &ev.fields {
        text.push_str(&format!("{ind}{var}->{field} = {value};\n"));
    }
    if ri == ev.ai + 1 {
        // The declaration is replaced where it stands.
        edits.push(Edit::replace(
            dl,
            line_end_incl(src, decl.end_byte()),
            text,
            Rule::ReserveSubmit,
        ));
    } else {
        // Declarations stay where the file keeps them; the reservation goes where the
        // event is first used.
        edits.push(Edit::replace(
            decl.start_byte(),
            decl.end_byte(),
            format!("{decl_type} *{var};"),
            Rule::ReserveSubmit,
        ));
        edits.push(Edit::insert(ls, text, Rule::ReserveSubmit));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: "a bare use", "a
    //! field without operator".

    use super::super::snippets::{converts, fallback};

    #[test]
    fn a_positional_initialiser_keeps_the_copy() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = { 1, 2 };

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "`e` is initialised with `{ 1, 2 }`; bpf-migrate carries over `= {}` and `= { .field = value, ... }`",
        );
    }

    /// Not C (`e` is a struct), but it parses.
    #[test]
    fn the_event_is_read_as_a_pointer() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.len = e->pid;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "`e->pid` uses the event as a pointer",
        );
    }

    #[test]
    fn the_event_is_copied_as_a_whole() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	struct event copy = e;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "`copy = e` uses the event `e` as a whole value",
        );
    }

    #[test]
    fn the_first_use_shares_its_line() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};
	u32 pid;

	pid = 1; e.pid = pid;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "the first use of the event shares its line with other code",
        );
    }

    #[test]
    fn the_declaration_shares_its_line() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	u32 pid = 1; struct event e = {};

	e.pid = pid;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "the declaration of `e` shares its line with other code",
        );
    }

    /// The reservation goes where the event is first used, after the filters; the
    /// declaration stays where it was.
    #[test]
    fn a_stack_event_is_reserved_where_first_used() {
        converts(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (pid == 0)
		return 0;
	e.pid = pid;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event *e;
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (pid == 0)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = pid;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
"#,
        );
    }

    /// Designated fields become assignments at the reservation, which takes the
    /// declaration's place; a guarded output gets an else that discards.
    #[test]
    fn designated_fields_are_set_after_the_reservation() {
        converts(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = { .pid = bpf_get_current_pid_tgid() >> 32, .len = 16 };

	if (e.pid > 1)
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->len = 16;

	if (e->pid > 1)
		bpf_ringbuf_submit(e, 0);
	else
		bpf_ringbuf_discard(e, 0);
	return 0;
}
"#,
        );
    }
}
