//! Step 4: what a full ring does. The failure branch does what the original did after the
//! output: the next statement's `return`, a `goto` to a label that follows, `continue` in a
//! loop body, `return;` at the end of a void function, or a `goto` to a label it adds before
//! other code that follows.

use tree_sitter::Node;

use super::{first_line, norm, statements};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{indent_at, line_start};

/// What the original did after the output, as the statement a full ring runs instead; with
/// the edit that puts a label before that code when it is more than a `return` (the failure
/// branch then jumps there, as `goto cleanup` does in hand-written code).
pub(super) fn on_full(
    src: &str,
    out_stmt: Node,
    func: Node,
    body: Node,
) -> Result<(String, Option<Edit>), String> {
    let mut cur = out_stmt;
    loop {
        // Defensive: every statement met going up from the output is inside the function
        // body (as are the parent below and the else's if).
        let parent = cur.parent().ok_or("the output is not in a function body")?;
        if parent.kind() != "compound_statement" {
            return Err("the output is not a statement of a block".into());
        }
        let st = statements(parent);
        let i = st
            .iter()
            .position(|s| *s == cur)
            // Defensive: `cur` is always a statement of `parent`.
            .ok_or("the output is not a statement of its block")?;
        if let Some(next) = st.get(i + 1) {
            return after_output(src, *next, func);
        }
        if parent == body {
            let ty = func.field("type").map(|t| c::text(t, src)).unwrap_or("");
            let ptr = func
                .field("declarator")
                .is_some_and(|d| d.kind() == "pointer_declarator");
            return if ty == "void" && !ptr {
                Ok(("return;".into(), None))
            } else {
                Err("the function ends without a return after the output".into())
            };
        }
        let gp = parent
            .parent()
            // Defensive: a block other than the body has a parent.
            .ok_or("the output is not in a function body")?;
        match gp.kind() {
            "if_statement" => cur = gp,
            // Defensive: an else belongs to an if.
            "else_clause" => cur = gp.parent().ok_or("malformed if")?,
            "for_statement" | "while_statement" | "do_statement" => {
                return Ok(("continue;".into(), None));
            }
            "compound_statement" => cur = parent,
            k => {
                return Err(format!(
                    "the output sits in a {k} bpf-migrate does not follow"
                ));
            }
        }
    }
}

/// The failure branch when `next` follows the output (or the `if`, or the block, it is in).
fn after_output(src: &str, next: Node, func: Node) -> Result<(String, Option<Edit>), String> {
    match next.kind() {
        "labeled_statement" => {
            // Defensive: a labeled statement has a label.
            let l = next.field("label").ok_or("a label without a name")?;
            Ok((format!("goto {};", c::text(l, src)), None))
        }
        "return_statement"
            if !c::descendants(next)
                .iter()
                .any(|n| n.kind() == "call_expression") =>
        {
            Ok((norm(c::text(next, src)), None))
        }
        // A label cannot stand before a declaration (before C23).
        "declaration" => Err(format!(
            "the declaration `{}` follows the output, and the failure branch would have to jump past it",
            first_line(c::text(next, src))
        )),
        _ => {
            let label = free_label(src, func)?;
            let ls = line_start(src, next.start_byte());
            if !src[ls..next.start_byte()].trim().is_empty() {
                return Err(format!(
                    "`{}` runs after the output on the same line",
                    first_line(c::text(next, src))
                ));
            }
            let ind = indent_at(src, func.start_byte());
            Ok((
                format!("goto {label};"),
                Some(Edit::insert(
                    ls,
                    format!("{ind}{label}:\n"),
                    Rule::ReserveSubmit,
                )),
            ))
        }
    }
}

/// A label name the function does not use yet.
fn free_label(src: &str, func: Node) -> Result<&'static str, String> {
    let used: Vec<&str> = c::descendants(func)
        .into_iter()
        .filter(|n| n.kind() == "labeled_statement")
        .filter_map(|n| n.field("label").map(|l| c::text(l, src)))
        .collect();
    ["cleanup", "out", "done"]
        .into_iter()
        .find(|l| !used.contains(l))
        .ok_or_else(|| "the function already uses every label name bpf-migrate would add".into())
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: "the output is not in
    //! a function body", "the output is not a statement of its block", "malformed if", "a label
    //! without a name".

    use super::super::snippets::{HEAP, converts, fallback};

    /// A handler whose event is output, followed by `after` (lines of C).
    fn then(after: &str) -> String {
        format!(
            r#"SEC("tp/a")
int handle(void *ctx)
{{
	struct event e = {{}};

	e.pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
{after}}}
"#
        )
    }

    #[test]
    fn a_declaration_follows_the_output() {
        fallback(
            &then("\tint after = 0;\n\treturn after;\n"),
            "the declaration `int after = 0;` follows the output, and the failure branch would have to jump past it",
        );
    }

    #[test]
    fn code_follows_the_output_on_its_line() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e)); bpf_printk("sent");
	return 0;
}
"#,
            "`bpf_printk(\"sent\");` runs after the output on the same line",
        );
    }

    #[test]
    fn an_int_function_ends_with_the_output() {
        fallback(
            &then(""),
            "the function ends without a return after the output",
        );
    }

    #[test]
    fn the_output_is_in_a_case() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	switch (bpf_get_prandom_u32() & 1) {
	case 0: {
		struct event e = {};

		e.pid = 1;
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	}
	}
	return 0;
}
"#,
            "the output sits in a case_statement bpf-migrate does not follow",
        );
    }

    #[test]
    fn the_output_is_in_an_else_if() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	if (!ctx) {
		return 1;
	} else if (ctx) {
		struct event e = {};

		e.pid = 1;
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	}
	return 0;
}
"#,
            "the output is not a statement of a block",
        );
    }

    #[test]
    fn every_label_name_is_taken() {
        fallback(
            &then(
                "\tbpf_printk(\"sent\");
	if (!ctx)
		goto cleanup;
	if (ctx == (void *)1)
		goto out;
	goto done;
cleanup:
	bpf_printk(\"1\");
out:
	bpf_printk(\"2\");
done:
	return 0;
",
            ),
            "the function already uses every label name bpf-migrate would add",
        );
    }

    /// More than a `return` after the output: the failure branch jumps to a label put before
    /// it (the heap's NULL check becomes that jump, and the heap goes).
    #[test]
    fn a_label_is_added_before_the_code_after_the_output() {
        converts(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	struct event *e;

	e = bpf_map_lookup_elem(&heap, &zero);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	bpf_printk("sent");
	return 0;
}}
"#
            ),
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		goto cleanup;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_ringbuf_submit(e, 0);
cleanup:
	bpf_printk("sent");
	return 0;
}
"#,
        );
    }

    /// At the end of a loop body, a full ring goes on with the next iteration; a break that
    /// leaves the body discards.
    #[test]
    fn a_full_ring_continues_the_loop() {
        converts(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	for (int i = 0; i < 4; i++) {
		struct event e = {};

		e.pid = i;
		if (bpf_get_prandom_u32() & 1)
			break;
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	}
	return 0;
}
"#,
            r#"SEC("tp/a")
int handle(void *ctx)
{
	for (int i = 0; i < 4; i++) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e)
			continue;
		__builtin_memset(e, 0, sizeof(*e));

		e->pid = i;
		if (bpf_get_prandom_u32() & 1) {
			bpf_ringbuf_discard(e, 0);
			break;
		}
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}
"#,
        );
    }
}
