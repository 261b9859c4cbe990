//! Step 5: every way out of the region but through the submit discards the record: returns,
//! gotos to labels outside it, breaks and continues that leave `B` (`discard_before`, adding
//! braces around a lone body), and the `else` an output under an `if` gets.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::event::Event;
use super::mentions;
use super::region::Region;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{indent_at, line_end_incl, line_start};

/// Every way out of the region but through the submit gets a discard; where the first of
/// them is.
pub(super) fn discard_exits(
    cx: &Ctx,
    ev: &Event,
    reg: &Region,
    discard: &str,
    unit: &str,
    edits: &mut Vec<Edit>,
) -> Result<Option<usize>, String> {
    let mut first = None;
    for s in &reg.stmts {
        first = first.or(exits(cx, *s, ev, discard, unit, reg.span, edits)?);
    }
    Ok(first)
}

/// Every way out of the region statement `stmt` but through the submit gets a discard:
/// returns, gotos to labels outside the region, and breaks and continues that leave the block.
fn exits(
    cx: &Ctx,
    stmt: Node,
    ev: &Event,
    discard: &str,
    unit: &str,
    region: (usize, usize),
    edits: &mut Vec<Edit>,
) -> Result<Option<usize>, String> {
    let src = cx.src();
    let var = ev.var.as_str();
    let mut first = None;
    for n in c::descendants(stmt) {
        match n.kind() {
            "labeled_statement" => {
                return Err("a label sits between the reservation and the submit".into());
            }
            "return_statement" => {
                if !mentions(n, var, src).is_empty() {
                    return Err(format!("a return reads `{var}` before it is submitted"));
                }
                edits.push(discard_before(src, n, discard, unit)?);
                first.get_or_insert(n.start_byte());
            }
            "goto_statement" => {
                let label = n.field("label").map(|l| c::text(l, src)).unwrap_or("");
                let target = c::descendants(ev.func).into_iter().find(|l| {
                    l.kind() == "labeled_statement"
                        && l.field("label").map(|x| c::text(x, src)) == Some(label)
                });
                if target.is_some_and(|t| t.start_byte() >= region.0 && t.start_byte() < region.1) {
                    return Err(
                        "a goto jumps inside the region between the reservation and the submit"
                            .into(),
                    );
                }
                edits.push(discard_before(src, n, discard, unit)?);
                first.get_or_insert(n.start_byte());
            }
            "break_statement" | "continue_statement" if leaves_block(stmt, n)? => {
                edits.push(discard_before(src, n, discard, unit)?);
                first.get_or_insert(n.start_byte());
            }
            _ => {}
        }
    }
    Ok(first)
}

/// Whether the break or continue `n` in the region statement `stmt` leaves the block (to the
/// enclosing loop's next iteration or end): a loop or switch inside the region keeps it in.
fn leaves_block(stmt: Node, n: Node) -> Result<bool, String> {
    let stop: &[&str] = if n.kind() == "break_statement" {
        &[
            "for_statement",
            "while_statement",
            "do_statement",
            "switch_statement",
        ]
    } else {
        &["for_statement", "while_statement", "do_statement"]
    };
    let Some(block) = stmt.parent() else {
        // Defensive: a region statement is a statement of `B`.
        return Err("a statement outside any block".into());
    };
    let mut p = n.parent();
    while let Some(x) = p {
        if x == block {
            break;
        }
        if stop.contains(&x.kind()) {
            return Ok(false);
        }
        p = x.parent();
    }
    Ok(true)
}

/// Puts `discard` before the exit statement `x`, adding braces when `x` is the whole body of
/// an `if`, `else` or loop.
fn discard_before(src: &str, x: Node, discard: &str, unit: &str) -> Result<Edit, String> {
    // Defensive: an exit statement always has a parent.
    let parent = x.parent().ok_or("an exit outside any statement")?;
    let s = x.start_byte();
    if matches!(parent.kind(), "compound_statement" | "case_statement") {
        let ls = line_start(src, s);
        let text = if src[ls..s].trim().is_empty() {
            format!("{discard}\n{}", &src[ls..s])
        } else {
            format!("{discard} ")
        };
        return Ok(Edit::insert(s, text, Rule::ReserveSubmit));
    }
    // A body without braces: `if (c) return 0;` or `if (c)\n\t\treturn 0;`. A comment
    // that ends the exit's line moves into the braces with it.
    let le = line_end_incl(src, x.end_byte());
    let rest = src[x.end_byte()..le].trim();
    let trailing_comment = rest.starts_with("//")
        || (rest.starts_with("/*")
            && rest.ends_with("*/")
            && !rest[2..rest.len() - 2].contains("*/"));
    let end = if trailing_comment {
        x.end_byte() + src[x.end_byte()..le].trim_end().len()
    } else {
        x.end_byte()
    };
    let head_end = src[..s].trim_end().len();
    let head_ind = indent_at(src, head_end.saturating_sub(1));
    let same_line = !src[head_end..s].contains('\n');
    let inner = if same_line {
        format!("{head_ind}{unit}")
    } else {
        indent_at(src, s).to_string()
    };
    Ok(Edit::replace(
        head_end,
        end,
        format!(
            " {{\n{inner}{discard}\n{inner}{}\n{head_ind}}}",
            &src[s..end]
        ),
        Rule::ReserveSubmit,
    ))
}

/// `else discard;` after the body of the guarding `if`.
pub(super) fn else_discard(
    src: &str,
    guard: Node,
    call_stmt: Node,
    discard: &str,
    unit: &str,
) -> Result<Edit, String> {
    // Defensive: the guard was recognised by its consequence.
    let body = guard.field("consequence").ok_or("an if without a body")?;
    let end = body.end_byte();
    if !src[end..line_end_incl(src, end)].trim().is_empty() {
        return Err("code follows the output's if on the same line".into());
    }
    let ind = indent_at(src, guard.start_byte());
    let text = if body == call_stmt {
        format!("\n{ind}else\n{ind}{unit}{discard}")
    } else {
        format!(" else {{\n{ind}{unit}{discard}\n{ind}}}")
    };
    Ok(Edit::insert(end, text, Rule::ReserveSubmit))
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: "a statement outside
    //! any block", "an exit outside any statement", "an if without a body".

    use super::super::snippets::{converts, fallback, lines_noted};

    #[test]
    fn a_label_sits_in_the_region() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
again:
	e.len = 2;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "a label sits between the reservation and the submit",
        );
    }

    #[test]
    fn a_goto_jumps_into_the_region() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	if (!ctx)
		goto skip;
	e.len = 2;
	if (ctx) {
skip:
		e.len = 3;
	}
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "a goto jumps inside the region between the reservation and the submit",
        );
    }

    #[test]
    fn a_return_reads_the_event() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	if (!ctx)
		return e.pid;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "a return reads `e` before it is submitted",
        );
    }

    #[test]
    fn code_follows_the_guarding_if_on_its_line() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	if (ctx) bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e)); return 0;
}
"#,
            "code follows the output's if on the same line",
        );
    }

    /// Every way out before the output discards: braces are added around a lone return, a
    /// goto to a label outside gets its discard, and a guarded output gets an else. A note at
    /// the first says that a full ring now counts such events lost too.
    #[test]
    fn exits_discard() {
        assert_eq!(
            lines_noted(EXITS, crate::rules::Rule::ReserveSubmit),
            ["return 0; /* hidden */"]
        );
        converts(
            EXITS,
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event *e;
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (pid == 0)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		goto out;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = pid;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	if (e->comm[0] == '.') {
		bpf_ringbuf_discard(e, 0);
		return 0; /* hidden */
	}
	if (e->comm[0] == 0) {
		bpf_ringbuf_discard(e, 0);
		goto out;
	}
	if (e->comm[1])
		bpf_ringbuf_submit(e, 0);
	else
		bpf_ringbuf_discard(e, 0);
out:
	return 0;
}
"#,
        );
    }

    const EXITS: &str = r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (pid == 0)
		return 0;
	e.pid = pid;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	if (e.comm[0] == '.')
		return 0; /* hidden */
	if (e.comm[0] == 0) {
		goto out;
	}
	if (e.comm[1])
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
out:
	return 0;
}
"#;
}
