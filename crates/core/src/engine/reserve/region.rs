//! Step 2: the region, from the reservation point (stack: the first statement of `B` that
//! mentions the event; heap: the lookup, whose NULL check is recognised and kept) to the
//! output. Every token in it must be C the parser understood, with no preprocessor lines.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::event::Event;
use super::{mentions, norm, statements};
use crate::lang::NodeExt;
use crate::lang::c;

pub(super) struct Region<'t> {
    /// Where the reservation goes: an index in the event's `stmts`.
    pub(super) ri: usize,
    /// The heap's NULL check, and its `return` or `goto`.
    pub(super) null_check: Option<(Node<'t>, Node<'t>)>,
    /// The statements from the reservation to the output (not included), the NULL check
    /// left out.
    pub(super) stmts: Vec<Node<'t>>,
    /// The span from the reservation point to the end of the output.
    pub(super) span: (usize, usize),
}

pub(super) fn find<'t>(cx: &Ctx<'_, 't>, ev: &Event<'t>) -> Result<Region<'t>, String> {
    let src = cx.src();
    let (var, stmts, ai, oi) = (&ev.var, &ev.stmts, ev.ai, ev.oi);
    // Where the reservation goes, and the heap's NULL check.
    let (ri, null_check) = if ev.stack {
        let ri = (ai + 1..=oi)
            .find(|&i| i == oi || !ev.fields.is_empty() || !mentions(stmts[i], var, src).is_empty())
            .unwrap();
        (ri, None)
    } else {
        let ni = (ai + 1..oi)
            .find(|&i| !mentions(stmts[i], var, src).is_empty())
            .ok_or("no NULL check follows the lookup")?;
        let ret = null_check(stmts[ni], var, src).ok_or(format!(
            "the first use of `{var}` after the lookup is not a plain NULL check (`if (!{var}) return ...;` or `goto`)"
        ))?;
        (ai + 1, Some((stmts[ni], ret)))
    };
    let region: Vec<Node> = stmts[ri..oi]
        .iter()
        .copied()
        .filter(|s| null_check.is_none_or(|(n, _)| n != *s))
        .collect();
    let span = (stmts[ri.min(oi)].start_byte(), ev.out_stmt.end_byte());
    if !ev.stack {
        // Nothing may touch the pointer but its declaration and the code from the lookup to
        // the output, wherever in the function it is.
        let (from, to) = (ev.anchor.start_byte(), ev.out_stmt.end_byte());
        let (decl, body) = (ev.decl, ev.body);
        let inside = |n: &Node, (a, b): (usize, usize)| a <= n.start_byte() && n.end_byte() <= b;
        if mentions(body, var, src)
            .iter()
            .any(|m| !inside(m, (decl.start_byte(), decl.end_byte())) && !inside(m, (from, to)))
        {
            return Err(format!(
                "`{var}` is used outside the code from the lookup to the output"
            ));
        }
    }
    check_covered(cx, span)?;
    Ok(Region {
        ri,
        null_check,
        stmts: region,
        span,
    })
}

/// `if (!e) return X;` or `if (!e) goto L;` (or `e == NULL`, or braces around the body): the
/// return or goto.
fn null_check<'t>(s: Node<'t>, var: &str, src: &str) -> Option<Node<'t>> {
    if s.kind() != "if_statement" || s.field("alternative").is_some() {
        return None;
    }
    let cond = norm(c::text(s.field("condition")?, src)).replace(' ', "");
    let forms = [
        format!("(!{var})"),
        format!("({var}==NULL)"),
        format!("(NULL=={var})"),
        format!("({var}==0)"),
        format!("(!({var}))"),
    ];
    if !forms.contains(&cond) {
        return None;
    }
    let mut body = s.field("consequence")?;
    if body.kind() == "compound_statement" {
        let st = statements(body);
        let [one] = st[..] else { return None };
        body = one;
    }
    matches!(body.kind(), "return_statement" | "goto_statement").then_some(body)
}

/// Every byte of code in the region is part of a statement the parser understood: a BCC
/// placeholder the Python fills in at run time (`FILTER`), masked for parsing, could return.
fn check_covered(cx: &Ctx, (s, e): (usize, usize)) -> Result<(), String> {
    let src = cx.src();
    for &(t, a, b) in cx.tokens() {
        if a < s || b > e || matches!(t, c::Tok::Comment | c::Tok::Punct(_)) {
            continue;
        }
        let n = cx.root().descendant_for_byte_range(a, b);
        if n.is_none_or(|n| n.start_byte() != a && n.child_count() > 0) {
            return Err(format!(
                "`{}` between the reservation and the submit is not C bpf-migrate can read (a placeholder filled in at run time, or a macro)",
                &src[a..b]
            ));
        }
    }
    for n in c::descendants(
        cx.root()
            .descendant_for_byte_range(s, e)
            .unwrap_or(cx.root()),
    ) {
        if n.start_byte() >= s && n.end_byte() <= e && n.kind().starts_with("preproc") {
            return Err(
                "a preprocessor directive sits between the reservation and the submit".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Every reason of this step is reached.

    use super::super::snippets::{HEAP, bcc_fallback, fallback};

    #[test]
    fn no_null_check_follows_the_lookup() {
        fallback(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&heap, &zero);

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}}
"#
            ),
            "no NULL check follows the lookup",
        );
    }

    #[test]
    fn the_null_check_does_more_than_return() {
        fallback(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&heap, &zero);

	if (!e) {{
		bpf_printk("no heap");
		return 0;
	}}
	e->pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}}
"#
            ),
            "the first use of `e` after the lookup is not a plain NULL check (`if (!e) return ...;` or `goto`)",
        );
    }

    #[test]
    fn the_heap_pointer_is_read_after_the_block() {
        fallback(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	struct event *e;

	if (ctx) {{
		e = bpf_map_lookup_elem(&heap, &zero);
		if (!e)
			return 0;
		e->pid = 1;
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	}}
	return e != 0;
}}
"#
            ),
            "`e` is used outside the code from the lookup to the output",
        );
    }

    #[test]
    fn a_bcc_placeholder_sits_in_the_region() {
        bcc_fallback(
            r#"
struct event_t {
    u32 pid;
    u32 tgid;
};

int probe(struct pt_regs *ctx)
{
    struct event_t e = {};

    e.pid = bpf_get_current_pid_tgid() >> 32;
    FILTER
    e.tgid = e.pid;
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"#,
            "\nbpf_text = bpf_text.replace('FILTER', 'if (e.pid == 1) { return 0; }')",
            "`FILTER` between the reservation and the submit is not C bpf-migrate can read (a placeholder filled in at run time, or a macro)",
        );
    }

    #[test]
    fn a_preprocessor_directive_sits_in_the_region() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};

	e.pid = 1;
#ifdef WITH_LEN
	e.len = 2;
#endif
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "a preprocessor directive sits between the reservation and the submit",
        );
    }
}
