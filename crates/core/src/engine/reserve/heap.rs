//! A heap event: `e` assigned once from a per-CPU array lookup (`bpf_map_lookup_elem(&heap,
//! &key)`, BCC `heap.lookup(&key)`). The lookup becomes the reservation and its NULL check the
//! failure branch; once every site of the file has its plan, `settle_heaps` converts a heap
//! only when every use of the map is a converted lookup, and deletes the map and the key
//! variable nothing else reads.

use std::collections::HashMap;

use tree_sitter::Node;

use super::super::context::{Analysis, Ctx};
use super::event::Event;
use super::region::Region;
use super::{Plan, bare, declared_name, first_declarator, norm, single_declarator};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{line_end_incl, line_start};

pub(super) struct HeapUse {
    map: String,
    /// The lookup call, replaced by the reservation.
    lookup: (usize, usize),
    /// The key variable of the lookup (`zero` in `&zero`), if it is a plain name.
    key: Option<String>,
}

/// The heap lookup that gives `var` its value: `var = bpf_map_lookup_elem(&heap, &key);` or
/// `T *var = ...;` (BCC: `heap.lookup(&key)`), the only assignment to `var`.
pub(super) fn heap_lookup<'t>(
    cx: &Ctx<'_, 't>,
    body: Node<'t>,
    decl: Node<'t>,
    var: &str,
) -> Result<Node<'t>, String> {
    let src = cx.src();
    let d = first_declarator(decl);
    if d.kind() == "init_declarator" {
        if let Some(v) = d.field("value")
            && lookup_call(bare(v), src).is_some()
        {
            return Ok(decl);
        }
        return Err(format!("`{var}` does not come from a per-CPU array lookup"));
    }
    let assigns: Vec<Node> = c::descendants(body)
        .into_iter()
        .filter(|n| n.kind() == "assignment_expression")
        .filter(|n| {
            n.field("left")
                .is_some_and(|l| l.kind() == "identifier" && c::text(l, src) == var)
        })
        .collect();
    let [a] = assigns[..] else {
        return Err(format!(
            "`{var}` is assigned {} times; bpf-migrate reserves events that come from one per-CPU array lookup",
            assigns.len()
        ));
    };
    let right = a.field("right").map(bare);
    if right.and_then(|r| lookup_call(r, src)).is_none() {
        return Err(format!("`{var}` does not come from a per-CPU array lookup"));
    }
    let stmt = a
        .parent()
        .filter(|p| p.kind() == "expression_statement")
        .ok_or("the lookup is not a statement of its own")?;
    Ok(stmt)
}

/// `bpf_map_lookup_elem(&heap, &key)` or `heap.lookup(&key)`: the map and the key argument.
fn lookup_call<'a>(n: Node, src: &'a str) -> Option<(&'a str, &'a str, (usize, usize))> {
    if n.kind() != "call_expression" {
        return None;
    }
    let args = c::arg_spans(n);
    let f = n.field("function")?;
    match f.kind() {
        "identifier" if c::text(f, src) == "bpf_map_lookup_elem" && args.len() == 2 => {
            let m = c::strip_parens(&src[args[0].0..args[0].1])
                .strip_prefix('&')?
                .trim();
            c::is_ident(m).then_some((
                m,
                &src[args[1].0..args[1].1],
                (n.start_byte(), n.end_byte()),
            ))
        }
        "field_expression"
            if f.field("field").map(|x| c::text(x, src)) == Some("lookup") && args.len() == 1 =>
        {
            let m = c::text(f.field("argument")?, src);
            c::is_ident(m).then_some((
                m,
                &src[args[0].0..args[0].1],
                (n.start_byte(), n.end_byte()),
            ))
        }
        _ => None,
    }
}

/// The lookup in the anchor statement: the heap, the call's span and the key variable.
fn lookup_parts(cx: &Ctx, anchor: Node, var: &str) -> Result<HeapUse, String> {
    let src = cx.src();
    for n in c::descendants(anchor) {
        if let Some((map, key, span)) = lookup_call(n, src) {
            let key = c::strip_parens(key)
                .strip_prefix('&')
                .map(str::trim)
                .filter(|k| c::is_ident(k))
                .map(str::to_string);
            return Ok(HeapUse {
                map: map.to_string(),
                lookup: span,
                key,
            });
        }
    }
    // Defensive: `heap_lookup` found this lookup in the anchor already.
    Err(format!("`{var}` does not come from a per-CPU array lookup"))
}

/// The lookup becomes the reservation; the NULL check now handles a full ring: it does what
/// the original did after the output.
pub(super) fn reserve(
    cx: &Ctx,
    ev: &Event,
    reg: &Region,
    reserve: &str,
    on_full: &str,
    edits: &mut Vec<Edit>,
) -> Result<HeapUse, String> {
    let src = cx.src();
    let heap = lookup_parts(cx, ev.anchor, &ev.var)?;
    let lookup = heap.lookup;
    edits.push(Edit::replace(
        lookup.0,
        lookup.1,
        reserve,
        Rule::ReserveHeap,
    ));
    let (_, ret) = reg.null_check.unwrap();
    if norm(c::text(ret, src)) != norm(on_full) {
        edits.push(Edit::replace(
            ret.start_byte(),
            ret.end_byte(),
            on_full.to_string(),
            Rule::ReserveHeap,
        ));
    }
    Ok(heap)
}

/// A heap goes only if every use of it is a converted lookup; otherwise another part of the
/// program may read what this one wrote there, and none of its lookups is converted. The
/// edits that delete the heaps and their keys.
pub(super) fn settle_heaps(
    cx: &Ctx,
    plans: &mut [Result<Plan, String>],
    out: &mut Analysis,
) -> Vec<Edit> {
    let mut heaps: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        if let Ok(Plan { heap: Some(h), .. }) = p {
            heaps.entry(h.map.clone()).or_default().push(i);
        }
    }
    let mut heap_edits = Vec::new();
    // Lookups that go, and the key variable each one used.
    let mut gone: Vec<((usize, usize), Option<String>)> = Vec::new();
    let mut heap_names: Vec<&String> = heaps.keys().collect();
    heap_names.sort();
    for name in heap_names {
        let idx = &heaps[name];
        match remove_heap(cx, plans, name, idx, out) {
            Ok(del) => {
                heap_edits.push(del);
                for &i in idx {
                    let h = heap_of(&plans[i]);
                    gone.push((h.lookup, h.key.clone()));
                }
            }
            Err(why) => {
                for &i in idx {
                    plans[i] = Err(why.clone());
                }
            }
        }
    }
    remove_keys(cx, &gone, &mut heap_edits);
    heap_edits
}

/// The edit that deletes the heap `name`, whose converted lookups are the plans `idx`, and its
/// record for linking; or why it stays.
fn remove_heap(
    cx: &Ctx,
    plans: &[Result<Plan, String>],
    name: &String,
    idx: &[usize],
    out: &mut Analysis,
) -> Result<Edit, String> {
    let src = cx.src();
    let lookups: Vec<(usize, usize)> = idx.iter().map(|&i| heap_of(&plans[i]).lookup).collect();
    let def = heap_def(cx, name);
    let inside = |n: &Node, (s, e): (usize, usize)| s <= n.start_byte() && n.end_byte() <= e;
    let others = cx
        .of_kind("identifier")
        .into_iter()
        .filter(|n| c::text(*n, src) == name)
        .filter(|n| !lookups.iter().any(|&l| inside(n, l)))
        .filter(|n| !def.is_some_and(|d| inside(n, d)))
        .count();
    let Some((s, e)) = def else {
        return Err(format!(
            "`{name}` is not a per-CPU array defined in this file"
        ));
    };
    if others > 0 {
        return Err(format!(
            "the per-CPU array `{name}` is used elsewhere too, and what reads it there would no longer see this event"
        ));
    }
    let del = delete_with_comment(cx, s, e, Rule::ReserveHeap);
    // Where the name is: `} name SEC(".maps");`, `BPF_PERCPU_ARRAY(name, ...)`.
    let def = &src[s..e];
    let name_at = s + if def.starts_with("BPF_PERCPU_ARRAY") {
        def.find(name.as_str())
    } else {
        def.rfind(name.as_str())
    }
    .unwrap_or(0);
    out.heap_maps.push((name.clone(), del.start, name_at));
    Ok(del)
}

/// The key of the removed lookups (`u32 zero = 0;`) goes too when nothing else reads it.
fn remove_keys(cx: &Ctx, gone: &[((usize, usize), Option<String>)], heap_edits: &mut Vec<Edit>) {
    let src = cx.src();
    let mut removed_decls = Vec::new();
    for (lookup, key) in gone {
        let Some(key) = key else { continue };
        let Some(at) = cx.root().descendant_for_byte_range(lookup.0, lookup.1) else {
            continue;
        };
        let Some(decl) = declaration_of(cx, at, key) else {
            continue;
        };
        if removed_decls.contains(&decl.start_byte()) || !single_declarator(decl) {
            continue;
        }
        let scope = c::ancestor(decl, "function_definition").unwrap_or(cx.root());
        let inside = |n: &Node, (s, e): (usize, usize)| s <= n.start_byte() && n.end_byte() <= e;
        let uses = c::descendants(scope)
            .into_iter()
            .filter(|n| n.kind() == "identifier" && c::text(*n, src) == key)
            .filter(|n| !inside(n, (decl.start_byte(), decl.end_byte())))
            .filter(|n| !gone.iter().any(|(l, _)| inside(n, *l)))
            .count();
        if uses == 0 {
            removed_decls.push(decl.start_byte());
            heap_edits.push(delete_lines(
                src,
                decl.start_byte(),
                decl.end_byte(),
                Rule::ReserveHeap,
            ));
        }
    }
}

fn heap_of(p: &Result<Plan, String>) -> &HeapUse {
    p.as_ref()
        .ok()
        .and_then(|p| p.heap.as_ref())
        .expect("a heap plan")
}

/// The definition of the per-CPU array `name` in this file: its statement's span.
fn heap_def(cx: &Ctx, name: &str) -> Option<(usize, usize)> {
    let src = cx.src();
    for d in cx.of_kind("declaration") {
        let t = c::text(d, src);
        if !t.contains("BPF_MAP_TYPE_PERCPU_ARRAY") || d.parent() != Some(cx.root()) {
            continue;
        }
        let declarators: Vec<Node> = {
            let mut cur = d.walk();
            d.children_by_field_name("declarator", &mut cur).collect()
        };
        if let [one] = declarators[..]
            && declared_name(one, src) == Some(name)
        {
            return Some((d.start_byte(), d.end_byte()));
        }
    }
    // BCC: BPF_PERCPU_ARRAY(name, type[, entries]);
    for call in cx.of_kind("call_expression") {
        if c::call_name(call, src) == Some("BPF_PERCPU_ARRAY")
            && c::arg_spans(call)
                .first()
                .is_some_and(|&(s, e)| &src[s..e] == name)
        {
            let stmt = call.parent().filter(|p| {
                matches!(p.kind(), "expression_statement" | "declaration")
                    && p.parent() == Some(cx.root())
            })?;
            return Some((stmt.start_byte(), stmt.end_byte()));
        }
    }
    None
}

/// The declaration of `name` visible at `at`: in the enclosing blocks, else at file scope.
fn declaration_of<'t>(cx: &Ctx<'_, 't>, at: Node<'t>, name: &str) -> Option<Node<'t>> {
    let src = cx.src();
    let mut n = at.parent();
    while let Some(p) = n {
        if matches!(p.kind(), "compound_statement" | "translation_unit") {
            let mut cur = p.walk();
            for ch in p.named_children(&mut cur) {
                if ch.start_byte() >= at.start_byte() {
                    break;
                }
                if ch.kind() == "declaration" {
                    let mut c2 = ch.walk();
                    if ch
                        .children_by_field_name("declarator", &mut c2)
                        .any(|d| declared_name(d, src) == Some(name))
                    {
                        return Some(ch);
                    }
                }
            }
        }
        if p.kind() == "function_definition" {
            // Parameters are not removable declarations.
            if let Some(d) = p.field("declarator")
                && c::descendants(d)
                    .iter()
                    .any(|x| x.kind() == "identifier" && c::text(*x, src) == name)
            {
                return None;
            }
        }
        n = p.parent();
    }
    None
}

/// Deletes a definition with the comment lines right above it, which describe it.
fn delete_with_comment(cx: &Ctx, s: usize, e: usize, rule: Rule) -> Edit {
    let src = cx.src();
    let mut from = s;
    for &(t, a, b) in cx.tokens().iter().rev() {
        if b > from {
            continue;
        }
        let gap = &src[b..from];
        let own_line = src[line_start(src, a)..a].trim().is_empty();
        if t == c::Tok::Comment
            && gap.trim().is_empty()
            && gap.matches('\n').count() == 1
            && own_line
        {
            from = a;
        } else {
            break;
        }
    }
    delete_lines(src, from, e, rule)
}

/// Deletes whole lines when the statement has them to itself, and a blank line that would
/// otherwise double up.
fn delete_lines(src: &str, s: usize, e: usize, rule: Rule) -> Edit {
    let ls = line_start(src, s);
    let le = line_end_incl(src, e);
    if !src[ls..s].trim().is_empty() || !src[e..le].trim().is_empty() {
        return Edit::delete(s, e, rule);
    }
    let blank_before = ls == 0 || {
        let pls = line_start(src, ls - 1);
        src[pls..ls].trim().is_empty()
    };
    let next_end = line_end_incl(src, le);
    let blank_after = le < src.len() && src[le..next_end].trim().is_empty();
    if blank_before && blank_after {
        Edit::delete(ls, next_end, rule)
    } else {
        Edit::delete(ls, le, rule)
    }
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: `lookup_parts`'s
    //! "does not come from a per-CPU array lookup" (`heap_lookup` gives the same reason first,
    //! tested here).

    use super::super::snippets::{HEAP, bcc_converts, converts, fallback};

    /// A handler that fills the heap event `e` from `get` (its declaration and lookup).
    fn handler(get: &str) -> String {
        format!(
            r#"SEC("tp/a")
int handle(struct event *ctx)
{{
	u32 zero = 0;
{get}
	if (!e)
		return 0;
	e->pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}}
"#
        )
    }

    #[test]
    fn the_pointer_is_not_from_a_lookup() {
        for get in [
            "\tstruct event *e = ctx;\n",
            "\tstruct event *e;\n\n\te = ctx;\n",
        ] {
            fallback(
                &handler(get),
                "`e` does not come from a per-CPU array lookup",
            );
        }
    }

    #[test]
    fn the_pointer_is_assigned_twice() {
        fallback(
            &format!(
                "{HEAP}\n{}",
                handler(
                    "\tstruct event *e;\n\n\te = bpf_map_lookup_elem(&heap, &zero);\n\tif (e && e->pid)\n\t\te = bpf_map_lookup_elem(&heap, &zero);\n"
                )
            ),
            "`e` is assigned 2 times; bpf-migrate reserves events that come from one per-CPU array lookup",
        );
    }

    #[test]
    fn the_lookup_is_inside_a_condition() {
        fallback(
            &format!(
                r#"{HEAP}
SEC("tp/a")
int handle(void *ctx)
{{
	u32 zero = 0;
	struct event *e;

	if (!(e = bpf_map_lookup_elem(&heap, &zero)))
		return 0;
	e->pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}}
"#
            ),
            "the lookup is not a statement of its own",
        );
    }

    #[test]
    fn the_map_is_not_a_per_cpu_array() {
        let hash = HEAP.replace("PERCPU_ARRAY", "HASH");
        fallback(
            &format!(
                "{hash}\n{}",
                handler("\tstruct event *e = bpf_map_lookup_elem(&heap, &zero);\n")
            ),
            "`heap` is not a per-CPU array defined in this file",
        );
    }

    #[test]
    fn the_heap_is_used_elsewhere() {
        fallback(
            &format!(
                r#"{HEAP}
{}
SEC("tp/b")
int other(void *ctx)
{{
	u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&heap, &zero);

	if (e)
		bpf_printk("%d", e->pid);
	return 0;
}}
"#,
                handler("\tstruct event *e = bpf_map_lookup_elem(&heap, &zero);\n")
            ),
            "the per-CPU array `heap` is used elsewhere too, and what reads it there would no longer see this event",
        );
    }

    /// The lookup becomes the reservation, its NULL check the failure branch; the heap and
    /// its key go.
    #[test]
    fn a_heap_event_is_reserved_in_place_of_the_lookup() {
        converts(
            &format!(
                "{HEAP}\n{}",
                handler("\tstruct event *e = bpf_map_lookup_elem(&heap, &zero);\n")
            ),
            r#"SEC("tp/a")
int handle(struct event *ctx)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return 0;
	e->pid = 1;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
"#,
        );
    }

    #[test]
    fn a_bcc_heap_event_is_reserved() {
        bcc_converts(
            r#"
struct event_t {
    u32 pid;
};

BPF_PERCPU_ARRAY(heap, struct event_t, 1);

int probe(struct pt_regs *ctx)
{
    u32 zero = 0;
    struct event_t *e = heap.lookup(&zero);

    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    events.perf_submit(ctx, e, sizeof(*e));
    return 0;
}
"#,
            r#"
struct event_t {
    u32 pid;
};

int probe(struct pt_regs *ctx)
{
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));

    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    events.ringbuf_submit(e, 0);
    return 0;
}
"#,
        );
    }
}
