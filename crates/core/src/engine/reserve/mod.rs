//! `--strategy reserve`: an event built on the stack or in a per-CPU array "heap" is reserved
//! in the ring buffer and filled in place (`bpf_ringbuf_reserve`/`submit`/`discard`), instead
//! of being copied in by `bpf_ringbuf_output`.
//!
//! A site is converted only when the conversion keeps what user space receives and what the
//! rest of the program does, including when the ring is full: then the reservation fails, and
//! the code between the reservation and the submit is skipped. So that code may only fill the
//! event, read things and set locals nobody reads later; and what runs after the submit in the
//! original (a `return`, a cleanup label, the next loop iteration) is what the failure branch
//! does. Every other site keeps the copy strategy, with a note saying why.
//!
//! `plan` takes one output call through five steps, a module each: `event` (1, which event,
//! declared where, with what initialiser and size), `region` (2, the code from the
//! reservation to the submit), `effects` (3, what that code may do), `on_full` (4, what the
//! failure branch does) and `exits` (5, the discards on every other way out). `stack` and
//! `heap` write the reservation of each kind of event; `heap` also settles the per-CPU arrays
//! for the whole file, which `settle` does once every site has its plan.

mod effects;
mod event;
mod exits;
mod heap;
mod on_full;
mod region;
mod stack;

#[cfg(test)]
mod snippets;

use tree_sitter::Node;

use super::context::{Analysis, Ctx, Report};
use super::options::Strategy;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::indent_at;

/// How the program names the ring buffer.
#[derive(Clone)]
pub enum Dialect {
    /// `bpf_ringbuf_reserve(&map, ...)`: the map argument as written (`&events`).
    Libbpf { map_arg: String },
    /// BCC: `table.ringbuf_reserve(...)`.
    Bcc { table: String },
}

impl Dialect {
    fn reserve(&self, size: &str) -> String {
        match self {
            Dialect::Libbpf { map_arg } => format!("bpf_ringbuf_reserve({map_arg}, {size}, 0)"),
            Dialect::Bcc { table } => format!("{table}.ringbuf_reserve({size})"),
        }
    }
    fn submit(&self, var: &str) -> String {
        match self {
            Dialect::Libbpf { .. } => format!("bpf_ringbuf_submit({var}, 0)"),
            Dialect::Bcc { table } => format!("{table}.ringbuf_submit({var}, 0)"),
        }
    }
    fn discard(&self, var: &str) -> String {
        match self {
            Dialect::Libbpf { .. } => format!("bpf_ringbuf_discard({var}, 0);"),
            Dialect::Bcc { table } => format!("{table}.ringbuf_discard({var}, 0);"),
        }
    }
}

/// One output call that may be converted, with the copy edit it falls back to.
pub struct Candidate<'t> {
    pub call: Node<'t>,
    pub data: (usize, usize),
    pub size: (usize, usize),
    pub dialect: Dialect,
    pub copy: Edit,
}

struct Plan {
    edits: Vec<Edit>,
    /// The statements from the reservation to the submit.
    region: (usize, usize),
    heap: Option<heap::HeapUse>,
    /// The function (its start) where the plan adds a label for the failure branch.
    adds_label: Option<usize>,
    /// The first way out of the region that discards the record (a filter's `return 0;`).
    first_discard: Option<usize>,
}

/// Where an output call's edit goes: straight into the file's edits with the copy strategy,
/// among the candidates for `settle` with the reserve strategy.
pub fn offer<'t>(cx: &mut Ctx<'_, 't>, cands: &mut Vec<Candidate<'t>>, cand: Candidate<'t>) {
    if cx.opts.strategy == Strategy::Reserve {
        cands.push(cand);
    } else {
        cx.edits.push(cand.copy);
    }
}

/// Converts what can be converted and falls back to the copy edit for the rest; whether each
/// candidate was converted, in order.
pub fn settle(cx: &mut Ctx, cands: Vec<Candidate>, out: &mut Analysis) -> Vec<bool> {
    let mut plans: Vec<Result<Plan, String>> = cands.iter().map(|k| plan(cx, k)).collect();
    drop_overlaps(&mut plans);
    let heap_edits = heap::settle_heaps(cx, &mut plans, out);
    let mut converted = Vec::with_capacity(plans.len());
    for (k, p) in cands.into_iter().zip(plans) {
        converted.push(p.is_ok());
        match p {
            Ok(p) => {
                if let Some(at) = p.first_discard {
                    cx.diag(
                        at,
                        Rule::ReserveSubmit,
                        "the record is reserved before this way out, which discards it: when the ring is full, an event that would have left here is not reserved either, and a tool that counts its ring's losses counts it as lost, where the copy counted only the records it output".to_string(),
                        Some("to count only records that are output, make the checks that leave before the event is first written, then run bpf-migrate again: the reservation goes after them"),
                    );
                }
                cx.edits.extend(p.edits);
            }
            Err(why) => {
                let at = k.call.start_byte();
                cx.edits.push(k.copy);
                cx.diag(
                    at,
                    Rule::ReserveFallback,
                    format!("this event is copied into the ring buffer, not reserved in it: {why}"),
                    Some("the copy is correct, only slower; rewrite the code around it as the note says and run bpf-migrate again for a reservation"),
                );
            }
        }
    }
    cx.edits.extend(heap_edits);
    converted
}

/// Two reservations whose regions overlap would hold two records at once: keep the first.
/// Likewise two plans that would add a label to the same function.
fn drop_overlaps(plans: &mut [Result<Plan, String>]) {
    for i in 0..plans.len() {
        let Ok(p) = &plans[i] else { continue };
        let r = p.region;
        let f = p.adds_label;
        if plans[..i]
            .iter()
            .any(|q| matches!(q, Ok(q) if q.region.0 < r.1 && r.0 < q.region.1))
        {
            // Defensive: not reached from C input. A region that overlaps another holds that
            // other output call, which `effects` refuses first (an output is not pure).
            plans[i] = Err("another event is reserved in the same stretch of code".into());
        } else if f.is_some()
            && plans[..i]
                .iter()
                .any(|q| matches!(q, Ok(q) if q.adds_label == f))
        {
            plans[i] = Err(
                "another event of this function already adds a label for its failure branch".into(),
            );
        }
    }
}

/// One output call through the five steps, then the submit and the reservation.
fn plan(cx: &Ctx, k: &Candidate) -> Result<Plan, String> {
    let src = cx.src();
    let ev = event::recognise(cx, k)?;
    let reg = region::find(cx, &ev)?;
    effects::check(cx, &ev, &reg)?;
    let (on_full, label) = on_full::on_full(src, ev.out_stmt, ev.func, ev.body)?;
    let adds_label = label.as_ref().map(|_| ev.func.start_byte());
    let mut edits: Vec<Edit> = label.into_iter().collect();
    let unit = indent_unit(src, ev.func, ev.body);
    let discard = k.dialect.discard(&ev.var);
    let first_discard = exits::discard_exits(cx, &ev, &reg, &discard, &unit, &mut edits)?;
    if ev.stack {
        stack::rewrite_uses(src, &ev, &reg, &mut edits)?;
    }
    if let Some(g) = ev.guard {
        edits.push(exits::else_discard(src, g, ev.call_stmt, &discard, &unit)?);
    }
    event::check_size(src, k, &ev)?;
    let heap = reserve_and_submit(cx, k, &ev, &reg, &on_full, &unit, &mut edits)?;
    Ok(Plan {
        edits,
        region: reg.span,
        heap,
        adds_label,
        first_discard,
    })
}

/// The output becomes the submit, and the event's declaration (stack) or lookup (heap) the
/// reservation, whose failure branch runs `on_full`.
fn reserve_and_submit(
    cx: &Ctx,
    k: &Candidate,
    ev: &event::Event,
    reg: &region::Region,
    on_full: &str,
    unit: &str,
    edits: &mut Vec<Edit>,
) -> Result<Option<heap::HeapUse>, String> {
    let reserve = k.dialect.reserve(&format!("sizeof(*{})", ev.var));
    edits.push(Edit::replace(
        k.call.start_byte(),
        k.call.end_byte(),
        k.dialect.submit(&ev.var),
        Rule::ReserveSubmit,
    ));
    if ev.stack {
        let at = stack::Reservation {
            reserve: &reserve,
            on_full,
            unit,
        };
        stack::reserve(cx.src(), ev, reg.ri, &at, edits)?;
        Ok(None)
    } else {
        heap::reserve(cx, ev, reg, &reserve, on_full, edits).map(Some)
    }
}

/// The file's indentation step, from the function body.
fn indent_unit(src: &str, func: Node, body: Node) -> String {
    let base = indent_at(src, func.start_byte());
    if let Some(first) = statements(body).first() {
        let ind = indent_at(src, first.start_byte());
        if let Some(rest) = ind.strip_prefix(base)
            && !rest.is_empty()
        {
            return rest.to_string();
        }
    }
    "\t".into()
}

fn declared_name<'a>(mut n: Node, src: &'a str) -> Option<&'a str> {
    loop {
        match n.kind() {
            "identifier" => return Some(c::text(n, src)),
            "init_declarator"
            | "pointer_declarator"
            | "array_declarator"
            | "attributed_declarator"
            | "parenthesized_declarator" => {
                n = n.field("declarator").or_else(|| n.named_child(0))?;
            }
            _ => return None,
        }
    }
}

/// The names a declaration declares.
fn names_declared(d: Node, src: &str) -> Vec<String> {
    let mut cur = d.walk();
    d.children_by_field_name("declarator", &mut cur)
        .filter_map(|x| declared_name(x, src).map(str::to_string))
        .collect()
}

fn single_declarator(decl: Node) -> bool {
    let mut cur = decl.walk();
    decl.children_by_field_name("declarator", &mut cur).count() == 1
}

fn first_declarator(decl: Node) -> Node {
    decl.field("declarator").unwrap_or(decl)
}

/// Named statements of a block, comments left out.
fn statements(block: Node) -> Vec<Node> {
    let mut cur = block.walk();
    block
        .named_children(&mut cur)
        .filter(|n| n.kind() != "comment")
        .collect()
}

fn mentions<'t>(node: Node<'t>, var: &str, src: &str) -> Vec<Node<'t>> {
    c::descendants(node)
        .into_iter()
        .filter(|n| n.kind() == "identifier" && c::text(*n, src) == var)
        .collect()
}

/// Strips casts and parentheses off an expression node.
fn bare(mut n: Node) -> Node {
    loop {
        match n.kind() {
            "parenthesized_expression" => match n.named_child(0) {
                Some(x) => n = x,
                None => return n,
            },
            "cast_expression" => match n.field("value") {
                Some(x) => n = x,
                None => return n,
            },
            _ => return n,
        }
    }
}

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    //! A test per fallback reason of this file. Not reached from C input: "another event is
    //! reserved in the same stretch of code".

    use super::snippets::{copies, fallback};

    /// Two outputs of a function that each need a label before the code after them: the
    /// first gets it, the second keeps the copy.
    #[test]
    fn one_added_label_per_function() {
        fallback(
            r#"SEC("tp/a")
int handle(void *ctx)
{
	struct event a = {};
	struct event b = {};

	a.pid = 1;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &a, sizeof(a));
	bpf_printk("a");
	b.pid = 2;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &b, sizeof(b));
	bpf_printk("b");
	return 0;
}
"#,
            "another event of this function already adds a label for its failure branch",
        );
    }

    /// With the copy strategy, `offer` puts the copy edit in straight away.
    #[test]
    fn the_copy_strategy_copies() {
        let handler = |output: &str| {
            format!(
                r#"SEC("tp/a")
int handle(void *ctx)
{{
	struct event e = {{}};

	e.pid = 1;
	{output};
	return 0;
}}
"#
            )
        };
        copies(
            &handler("bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e))"),
            &handler("bpf_ringbuf_output(&events, &e, sizeof(e), 0)"),
        );
    }
}
