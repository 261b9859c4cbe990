//! Step 3: what the code between the reservation and the submit may do. When the ring is full
//! it is skipped, so it may only fill the event, call helpers that only read (`pure_call`,
//! functions of the file that only read) and set locals that nothing reads after the output.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::event::Event;
use super::region::Region;
use super::{mentions, names_declared, statements};
use crate::lang::NodeExt;
use crate::lang::c;

/// The region, the guard's condition and the designated initialiser's values change nothing
/// that a full ring would leave undone.
pub(super) fn check(cx: &Ctx, ev: &Event, reg: &Region) -> Result<(), String> {
    let src = cx.src();
    let locals_before: Vec<String> = ev.stmts[..reg.ri]
        .iter()
        .filter(|s| s.kind() == "declaration")
        .flat_map(|d| names_declared(*d, src))
        .collect();
    let read_after: Vec<String> = ev.stmts[ev.oi + 1..]
        .iter()
        .flat_map(|s| c::descendants(*s))
        .filter(|n| n.kind() == "identifier")
        .map(|n| c::text(n, src).to_string())
        .collect();
    for s in &reg.stmts {
        for d in c::descendants(*s)
            .into_iter()
            .filter(|n| n.kind() == "declaration")
        {
            for name in names_declared(d, src) {
                if read_after.contains(&name) {
                    return Err(format!(
                        "`{name}` is declared between the reservation and the submit and read after it; when the ring is full it would be unset"
                    ));
                }
            }
        }
    }
    let cond = ev.condition();
    let init_values = ev.init.filter(|_| !ev.fields.is_empty());
    let locals = Locals {
        before: &locals_before,
        read_after: &read_after,
    };
    for s in reg
        .stmts
        .iter()
        .chain(cond.as_ref())
        .chain(init_values.as_ref())
    {
        check_effects(cx, *s, &ev.var, ev.stack, &locals)?;
    }
    Ok(())
}

/// The locals of `B` declared before the reservation, and every name read after the output.
struct Locals<'a> {
    before: &'a [String],
    read_after: &'a [String],
}

/// The code between the reservation and the submit may fill the event, call pure helpers and
/// set locals that nothing reads after the submit: when the ring is full it is skipped.
fn check_effects(
    cx: &Ctx,
    stmt: Node,
    var: &str,
    stack: bool,
    locals: &Locals,
) -> Result<(), String> {
    let src = cx.src();
    let inner_locals: Vec<String> = c::descendants(stmt)
        .into_iter()
        .filter(|n| n.kind() == "declaration")
        .flat_map(|d| names_declared(d, src))
        .collect();
    for n in c::descendants(stmt) {
        match n.kind() {
            "call_expression" => check_call(cx, n, var)?,
            "assignment_expression" | "update_expression" => {
                let Some(target) = n.field(if n.kind() == "assignment_expression" {
                    "left"
                } else {
                    "argument"
                }) else {
                    // Defensive: the parser gives every assignment a target.
                    return Err("an assignment bpf-migrate cannot read".into());
                };
                let (root, deref) = target_root(target, src);
                let Some(root) = root else {
                    return Err(format!(
                        "`{}` writes memory between the reservation and the submit",
                        c::text(n, src)
                    ));
                };
                if root == var {
                    if target.kind() == "identifier" {
                        return Err(format!("`{var}` is assigned as a whole"));
                    }
                    if stack && deref {
                        return Err(format!("`{}` writes through the event", c::text(n, src)));
                    }
                    continue;
                }
                if deref {
                    return Err(format!(
                        "`{}` writes through a pointer between the reservation and the submit; when the ring is full it would be skipped",
                        c::text(n, src)
                    ));
                }
                let ok = inner_locals.iter().any(|l| l == root)
                    || (locals.before.iter().any(|l| l == root)
                        && !locals.read_after.iter().any(|r| r == root));
                if !ok {
                    return Err(format!(
                        "`{root}` is set between the reservation and the submit and read elsewhere; when the ring is full that would be skipped"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A call between the reservation and the submit: a pure helper, a function of this file that
/// only reads (and does not get the event's address), or a BCC table method that only reads.
fn check_call(cx: &Ctx, n: Node, var: &str) -> Result<(), String> {
    let src = cx.src();
    let Some(f) = n.field("function") else {
        // Defensive: the parser gives every call a function.
        return Err("a call bpf-migrate cannot read".into());
    };
    match f.kind() {
        "identifier" => {
            let name = c::text(f, src);
            if let Err(e) = pure_call(name) {
                // A function of this file that only reads is fine, unless the event's address
                // goes to it.
                if !mentions(n, var, src).is_empty() {
                    return Err(format!(
                        "the event's address goes to `{name}()`, another function"
                    ));
                }
                if local_function(cx, name).is_some() && !local_function_is_pure(cx, name, 0) {
                    return Err(format!(
                        "`{name}()` changes state (a map, a global or memory through a pointer) between the reservation and the submit; when the ring is full that would be skipped"
                    ));
                }
                if !local_function_is_pure(cx, name, 0) {
                    return Err(e);
                }
            }
            Ok(())
        }
        // BCC table methods that only read (a stack id is only read through the event that
        // carries it).
        "field_expression"
            if matches!(
                f.field("field").map(|x| c::text(x, src)),
                Some("lookup" | "get_stackid")
            ) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{}` runs between the reservation and the submit, and bpf-migrate cannot tell what it does",
            c::text(f, src)
        )),
    }
}

/// Pure helpers and macros: code between the reservation and the submit may call these.
fn pure_call(name: &str) -> Result<(), String> {
    const DENY: &[&str] = &[
        "update",
        "delete",
        "push",
        "pop",
        "send_signal",
        "override",
        "write_user",
        "output",
        "ringbuf",
        "spin_lock",
        "spin_unlock",
        "timer",
        "redirect",
        "store_bytes",
        "change_",
        "adjust_",
        "set_retval",
        "loop",
        "for_each",
        "sys_",
        "printk",
        "seq_",
        "setsockopt",
        "sk_release",
        "sk_assign",
        "csum",
        "kptr_xchg",
        "obj_drop",
        "tail_call",
    ];
    if matches!(name, "load_byte" | "load_half" | "load_word") {
        return Err(format!(
            "`{name}()` (an LD_ABS packet load) cannot run while a record is reserved"
        ));
    }
    if name == "bpf_tail_call" {
        return Err("a tail call cannot happen while a record is reserved".into());
    }
    let known = name.starts_with("bpf_")
        || name.starts_with("__builtin_")
        || name.starts_with("BPF_CORE_READ")
        || name.starts_with("BPF_PROBE_READ")
        || name.starts_with("PT_REGS_")
        || matches!(
            name,
            "ARRAY_SIZE"
                | "min"
                | "max"
                | "min_t"
                | "max_t"
                | "likely"
                | "unlikely"
                | "READ_ONCE"
                | "offsetof"
                | "barrier_var"
                | "KERNEL_VERSION"
                | "ntohs"
                | "ntohl"
                | "htons"
                | "htonl"
                | "be16_to_cpu"
                | "be32_to_cpu"
        );
    if known && !DENY.iter().any(|d| name.contains(d)) {
        Ok(())
    } else if known {
        Err(format!(
            "`{name}()` runs between the reservation and the submit; when the ring is full it would be skipped"
        ))
    } else {
        Err(format!(
            "`{name}()` runs between the reservation and the submit, and bpf-migrate cannot tell what it does"
        ))
    }
}

/// The variable an assignment target is rooted in, and whether it writes through a pointer.
fn target_root<'a>(mut n: Node, src: &'a str) -> (Option<&'a str>, bool) {
    let mut deref = false;
    loop {
        match n.kind() {
            "identifier" => return (Some(c::text(n, src)), deref),
            "field_expression" => {
                if n.field("operator").map(|o| c::text(o, src)) == Some("->") {
                    deref = true;
                }
                match n.field("argument") {
                    Some(a) => n = a,
                    None => return (None, deref),
                }
            }
            "subscript_expression" => match n.field("argument") {
                Some(a) => n = a,
                None => return (None, deref),
            },
            "parenthesized_expression" => match n.named_child(0) {
                Some(x) => n = x,
                None => return (None, deref),
            },
            "pointer_expression" => {
                deref = true;
                match n.field("argument") {
                    Some(a) => n = a,
                    None => return (None, deref),
                }
            }
            _ => return (None, deref),
        }
    }
}

fn local_function<'t>(cx: &Ctx<'_, 't>, name: &str) -> Option<Node<'t>> {
    let src = cx.src();
    cx.of_kind("function_definition").into_iter().find(|f| {
        f.field("declarator")
            .and_then(|d| d.field("declarator"))
            .is_some_and(|n| c::text(n, src) == name)
    })
}

/// A function defined in this file whose calls are all pure (a few levels deep) and that
/// writes nothing but its own locals (no global, nothing through a pointer).
fn local_function_is_pure(cx: &Ctx, name: &str, depth: usize) -> bool {
    if depth > 3 {
        return false;
    }
    let src = cx.src();
    let Some(f) = local_function(cx, name) else {
        return false;
    };
    let globals: Vec<String> = statements(cx.root())
        .into_iter()
        .filter(|d| d.kind() == "declaration")
        .flat_map(|d| names_declared(d, src))
        .collect();
    c::descendants(f).into_iter().all(|n| match n.kind() {
        "call_expression" => match n.field("function") {
            Some(g) if g.kind() == "identifier" => {
                let gname = c::text(g, src);
                pure_call(gname).is_ok() || local_function_is_pure(cx, gname, depth + 1)
            }
            _ => false,
        },
        "assignment_expression" | "update_expression" => {
            let t = n.field("left").or_else(|| n.field("argument"));
            t.is_some_and(|t| {
                let (root, deref) = target_root(t, src);
                !deref && root.is_some_and(|r| !globals.iter().any(|g| g == r))
            })
        }
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: "a call bpf-migrate
    //! cannot read", "an assignment bpf-migrate cannot read".

    use super::super::snippets::{bcc_fallback, converts, fallback};

    /// A handler whose event is filled by `fill` (a statement or two of C), output, and whose
    /// return is `ret`; what comes before it in the file is `before`.
    fn between(before: &str, fill: &str, ret: &str) -> String {
        format!(
            r#"{before}SEC("tp/a")
int handle(struct event *ctx)
{{
	struct event e = {{}};
	u32 key = 0;
	u64 one = 1;
	int ret = 0;

	e.pid = 1;
	{fill}
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return {ret};
}}
"#
        )
    }

    #[test]
    fn a_local_declared_in_the_region_is_read_after_it() {
        fallback(
            &between("", "int n = 5;", "n"),
            "`n` is declared between the reservation and the submit and read after it; when the ring is full it would be unset",
        );
    }

    #[test]
    fn packet_loads_and_tail_calls_cannot_run_while_reserved() {
        fallback(
            &between("", "e.len = load_byte(ctx, 0);", "0"),
            "`load_byte()` (an LD_ABS packet load) cannot run while a record is reserved",
        );
        fallback(
            &between("", "bpf_tail_call(ctx, &progs, 0);", "0"),
            "a tail call cannot happen while a record is reserved",
        );
    }

    #[test]
    fn a_map_update_would_be_skipped() {
        fallback(
            &between("", "bpf_map_update_elem(&seen, &key, &one, BPF_ANY);", "0"),
            "`bpf_map_update_elem()` runs between the reservation and the submit; when the ring is full it would be skipped",
        );
    }

    #[test]
    fn a_function_of_another_file_is_unknown() {
        fallback(
            &between("", "e.len = get_len();", "0"),
            "`get_len()` runs between the reservation and the submit, and bpf-migrate cannot tell what it does",
        );
    }

    #[test]
    fn the_event_address_goes_to_a_function() {
        let fill = "static void fill(struct event *e)\n{\n\te->len = 1;\n}\n\n";
        fallback(
            &between(fill, "fill(&e);", "0"),
            "the event's address goes to `fill()`, another function",
        );
    }

    #[test]
    fn a_function_of_the_file_sets_a_global() {
        let count = "u64 total;\n\nstatic u32 count(void)\n{\n\ttotal++;\n\treturn 1;\n}\n\n";
        fallback(
            &between(count, "e.len = count();", "0"),
            "`count()` changes state (a map, a global or memory through a pointer) between the reservation and the submit; when the ring is full that would be skipped",
        );
    }

    #[test]
    fn a_call_through_a_pointer_is_unknown() {
        fallback(
            &between(
                "struct ops { u32 (*get)(void); };\nstruct ops *ops;\n\n",
                "e.len = ops->get();",
                "0",
            ),
            "`ops->get` runs between the reservation and the submit, and bpf-migrate cannot tell what it does",
        );
    }

    #[test]
    fn a_bcc_table_method_that_writes_is_unknown() {
        bcc_fallback(
            r#"
struct event_t {
    u32 pid;
};

BPF_HASH(counts, u32, u64);

int probe(struct pt_regs *ctx)
{
    struct event_t e = {};
    u32 key = 0;

    e.pid = bpf_get_current_pid_tgid() >> 32;
    counts.increment(key);
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"#,
            "",
            "`counts.increment` runs between the reservation and the submit, and bpf-migrate cannot tell what it does",
        );
    }

    #[test]
    fn writes_that_a_full_ring_would_skip() {
        fallback(
            &between("", "*(u32 *)ctx = 0;", "0"),
            "`*(u32 *)ctx = 0` writes memory between the reservation and the submit",
        );
        fallback(
            &between("", "ctx->pid = 2;", "0"),
            "`ctx->pid = 2` writes through a pointer between the reservation and the submit; when the ring is full it would be skipped",
        );
        fallback(
            &between("", "ret = 1;", "ret"),
            "`ret` is set between the reservation and the submit and read elsewhere; when the ring is full that would be skipped",
        );
        fallback(
            &between("u64 sent;\n\n", "sent++;", "0"),
            "`sent` is set between the reservation and the submit and read elsewhere; when the ring is full that would be skipped",
        );
    }

    #[test]
    fn the_event_is_assigned_as_a_whole() {
        fallback(&between("", "e = *ctx;", "0"), "`e` is assigned as a whole");
    }

    #[test]
    fn a_write_through_a_pointer_in_the_event() {
        fallback(
            r#"struct holder {
	u32 *slot;
};

SEC("tp/a")
int handle(void *ctx)
{
	struct holder e = {};

	*e.slot = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            "`*e.slot = 1` writes through the event",
        );
    }

    /// Helpers that read, functions of the file that only read, and locals nothing reads
    /// after the output are fine.
    #[test]
    fn reads_and_unread_locals_convert() {
        converts(
            r#"static u32 tgid(void)
{
	u32 t = bpf_get_current_pid_tgid() >> 32;
	return t;
}

SEC("tp/a")
int handle(void *ctx)
{
	struct event e = {};
	u32 n;

	e.pid = tgid();
	n = bpf_get_smp_processor_id();
	e.len = n;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#,
            r#"static u32 tgid(void)
{
	u32 t = bpf_get_current_pid_tgid() >> 32;
	return t;
}

SEC("tp/a")
int handle(void *ctx)
{
	struct event *e;
	u32 n;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = tgid();
	n = bpf_get_smp_processor_id();
	e->len = n;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
"#,
        );
    }
}
