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

use std::collections::HashMap;

use tree_sitter::Node;

use super::context::{Analysis, Ctx, Report};
use super::gate::is_python;
use super::options::Strategy;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{indent_at, line_end_incl, line_start};

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
    heap: Option<HeapUse>,
    /// The function (its start) where the plan adds a label for the failure branch.
    adds_label: Option<usize>,
}

struct HeapUse {
    map: String,
    /// The lookup call, replaced by the reservation.
    lookup: (usize, usize),
    /// The key variable of the lookup (`zero` in `&zero`), if it is a plain name.
    key: Option<String>,
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

/// Converts what can be converted and falls back to the copy edit for the rest.
pub fn settle(cx: &mut Ctx, cands: Vec<Candidate>, out: &mut Analysis) {
    let mut plans: Vec<Result<Plan, String>> = cands.iter().map(|k| plan(cx, k)).collect();

    // Two reservations whose regions overlap would hold two records at once: keep the first.
    for i in 0..plans.len() {
        let Ok(p) = &plans[i] else { continue };
        let r = p.region;
        let f = p.adds_label;
        if plans[..i]
            .iter()
            .any(|q| matches!(q, Ok(q) if q.region.0 < r.1 && r.0 < q.region.1))
        {
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

    // A heap goes only if every use of it is a converted lookup; otherwise another part of the
    // program may read what this one wrote there, and none of its lookups is converted.
    let src = cx.src();
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
        let why = match def {
            None => Some(format!(
                "`{name}` is not a per-CPU array defined in this file"
            )),
            Some(_) if others > 0 => Some(format!(
                "the per-CPU array `{name}` is used elsewhere too, and what reads it there would no longer see this event"
            )),
            Some(_) => None,
        };
        if let Some(why) = why {
            for &i in idx {
                plans[i] = Err(why.clone());
            }
            continue;
        }
        let (s, e) = def.unwrap();
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
        heap_edits.push(del);
        for &i in idx {
            let h = heap_of(&plans[i]);
            gone.push((h.lookup, h.key.clone()));
        }
    }
    // The key of the removed lookups (`u32 zero = 0;`) goes too when nothing else reads it.
    let mut removed_decls = Vec::new();
    for (lookup, key) in &gone {
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

    for (k, p) in cands.into_iter().zip(plans) {
        match p {
            Ok(p) => cx.edits.extend(p.edits),
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
            && c::arg_spans(call, src)
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

fn plan(cx: &Ctx, k: &Candidate) -> Result<Plan, String> {
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
        func.field("body").ok_or("the function has no body")?
    };
    if matches!(k.dialect, Dialect::Bcc { .. })
        && is_python(cx.file.path())
        && c::text(func, src).contains("{{")
    {
        return Err("the C is a Python format string, where new braces would need escaping".into());
    }
    let data_node = cx
        .root()
        .descendant_for_byte_range(k.data.0, k.data.1)
        .ok_or("the event argument cannot be read")?;
    let data = bare(data_node);
    let (var, stack) = match data.kind() {
        "pointer_expression" if data.field("operator").map(|o| c::text(o, src)) == Some("&") => {
            let a = data.field("argument").map(bare);
            match a {
                Some(a) if a.kind() == "identifier" => (c::text(a, src).to_string(), true),
                _ => return Err("the event is not a local variable (`&e`)".into()),
            }
        }
        "identifier" => (c::text(data, src).to_string(), false),
        _ => {
            return Err(format!(
                "the event `{}` is not a local variable or a per-CPU array pointer",
                &src[k.data.0..k.data.1]
            ));
        }
    };
    // The one declaration of the variable in this function.
    let decls: Vec<Node> = c::descendants(body)
        .into_iter()
        .filter(|n| n.kind() == "declaration")
        .filter(|d| {
            let mut cur = d.walk();
            d.children_by_field_name("declarator", &mut cur)
                .any(|x| declared_name(x, src) == Some(var.as_str()))
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
        heap_lookup(cx, body, decl, &var)?
    };
    let block = anchor
        .parent()
        .filter(|p| p.kind() == "compound_statement")
        .ok_or("the event is not declared in a block")?;
    let stmts = statements(block);
    let ai = stmts.iter().position(|s| *s == anchor).unwrap();
    let oi = stmts
        .iter()
        .position(|s| *s == out_stmt)
        .filter(|&i| i > ai)
        .ok_or("the output is not a statement of the block that declares the event (it is conditional or in a loop)")?;
    let after_o = &stmts[oi + 1..];
    if after_o.iter().any(|s| !mentions(*s, &var, src).is_empty()) {
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
        Some(v) => designated_fields(v, src, &var)?,
        None => Vec::new(),
    };
    // Where the reservation goes, and the heap's NULL check.
    let (ri, null_check) = if stack {
        let ri = (ai + 1..=oi)
            .find(|&i| i == oi || !fields.is_empty() || !mentions(stmts[i], &var, src).is_empty())
            .unwrap();
        (ri, None)
    } else {
        let ni = (ai + 1..oi)
            .find(|&i| !mentions(stmts[i], &var, src).is_empty())
            .ok_or("no NULL check follows the lookup")?;
        let ret = null_check(stmts[ni], &var, src).ok_or(format!(
            "the first use of `{var}` after the lookup is not a plain NULL check (`if (!{var}) return ...;` or `goto`)"
        ))?;
        (ai + 1, Some((stmts[ni], ret)))
    };
    let region: Vec<Node> = stmts[ri..oi]
        .iter()
        .copied()
        .filter(|s| null_check.is_none_or(|(n, _)| n != *s))
        .collect();
    let region_span = (stmts[ri.min(oi)].start_byte(), out_stmt.end_byte());
    if !stack {
        // Nothing may touch the pointer but its declaration and the code from the lookup to
        // the output, wherever in the function it is.
        let (from, to) = (anchor.start_byte(), out_stmt.end_byte());
        let inside = |n: &Node, (a, b): (usize, usize)| a <= n.start_byte() && n.end_byte() <= b;
        if mentions(body, &var, src)
            .iter()
            .any(|m| !inside(m, (decl.start_byte(), decl.end_byte())) && !inside(m, (from, to)))
        {
            return Err(format!(
                "`{var}` is used outside the code from the lookup to the output"
            ));
        }
    }
    check_covered(cx, region_span)?;

    let locals_before: Vec<String> = stmts[..ri]
        .iter()
        .filter(|s| s.kind() == "declaration")
        .flat_map(|d| names_declared(*d, src))
        .collect();
    let read_after: Vec<String> = after_o
        .iter()
        .flat_map(|s| c::descendants(*s))
        .filter(|n| n.kind() == "identifier")
        .map(|n| c::text(n, src).to_string())
        .collect();
    for s in &region {
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
    let mut edits = Vec::new();
    let cond = guard.and_then(|g| g.field("condition"));
    let init_values = init.filter(|_| !fields.is_empty());
    for s in region
        .iter()
        .chain(cond.as_ref())
        .chain(init_values.as_ref())
    {
        check_effects(cx, *s, &var, stack, &locals_before, &read_after)?;
    }
    let (on_full, label) = on_full(src, out_stmt, func, body)?;
    let adds_label = label.as_ref().map(|_| func.start_byte());
    edits.extend(label);

    let unit = indent_unit(src, func, body);
    let discard = k.dialect.discard(&var);
    for s in &region {
        exits(cx, *s, &var, &discard, &unit, region_span, func, &mut edits)?;
    }
    if stack {
        for s in region.iter().chain(cond.as_ref()) {
            for m in mentions(*s, &var, src) {
                edits.push(rewrite_use(m, &var, src)?);
            }
        }
    }
    if let Some(g) = guard {
        edits.push(else_discard(src, g, call_stmt, &discard, &unit)?);
    }

    // The size must be the event's own, a compile-time constant.
    let size = c::strip_parens(&src[k.size.0..k.size.1]);
    let size_ok = [
        format!("sizeof({var})"),
        format!("sizeof {var}"),
        format!("sizeof(*{var})"),
        format!("sizeof *{var}"),
        format!("sizeof({decl_type})"),
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
    if !size_ok {
        let constant = !c::lex(size, 0..size.len()).iter().any(|&(t, s, e)| {
            t == c::Tok::Ident && {
                let w = &size[s..e];
                w != "sizeof" && w.chars().any(|ch| ch.is_ascii_lowercase())
            }
        });
        return Err(if constant {
            format!("the size `{size}` is not the size of `{var}`")
        } else {
            format!("the size `{size}` is not a compile-time constant, and a reservation's must be")
        });
    }
    let reserve = k.dialect.reserve(&format!("sizeof(*{var})"));

    // The output becomes the submit.
    edits.push(Edit::replace(
        call.start_byte(),
        call.end_byte(),
        k.dialect.submit(&var),
        Rule::ReserveSubmit,
    ));

    let heap_use = if stack {
        // `struct event e = {};` goes; the pointer is declared where the event is first used.
        // An initialiser zeroes every byte it does not set, padding included.
        let zero = init.is_some();
        let at = stmts[ri];
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
        let declare = if ri == ai + 1 {
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
        for (field, value) in &fields {
            text.push_str(&format!("{ind}{var}->{field} = {value};\n"));
        }
        if ri == ai + 1 {
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
        None
    } else {
        let heap = lookup_parts(cx, anchor, &var)?;
        let lookup = heap.lookup;
        edits.push(Edit::replace(
            lookup.0,
            lookup.1,
            reserve,
            Rule::ReserveHeap,
        ));
        // The NULL check now handles a full ring: it does what the original did after the
        // output.
        let (_, ret) = null_check.unwrap();
        if norm(c::text(ret, src)) != norm(&on_full) {
            edits.push(Edit::replace(
                ret.start_byte(),
                ret.end_byte(),
                on_full.clone(),
                Rule::ReserveHeap,
            ));
        }
        Some(heap)
    };
    Ok(Plan {
        edits,
        region: region_span,
        heap: heap_use,
        adds_label,
    })
}

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn first_declarator(decl: Node) -> Node {
    decl.field("declarator").unwrap_or(decl)
}

/// The heap lookup that gives `var` its value: `var = bpf_map_lookup_elem(&heap, &key);` or
/// `T *var = ...;` (BCC: `heap.lookup(&key)`), the only assignment to `var`.
fn heap_lookup<'t>(
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
    let args = c::arg_spans(n, src);
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
    Err(format!("`{var}` does not come from a per-CPU array lookup"))
}

/// The fields of an initialiser: none for `{}` and `{0}`, `(field, value)` for designated
/// ones (`{ .pid = pid }`); anything else (positional values, nested designators, values that
/// span lines or read the event) is refused.
fn designated_fields(init: Node, src: &str, var: &str) -> Result<Vec<(String, String)>, String> {
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

/// `else discard;` after the body of the guarding `if`.
fn else_discard(
    src: &str,
    guard: Node,
    call_stmt: Node,
    discard: &str,
    unit: &str,
) -> Result<Edit, String> {
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

/// The code between the reservation and the submit may fill the event, call pure helpers and
/// set locals that nothing reads after the submit: when the ring is full it is skipped.
fn check_effects(
    cx: &Ctx,
    stmt: Node,
    var: &str,
    stack: bool,
    locals_before: &[String],
    read_after: &[String],
) -> Result<(), String> {
    let src = cx.src();
    let inner_locals: Vec<String> = c::descendants(stmt)
        .into_iter()
        .filter(|n| n.kind() == "declaration")
        .flat_map(|d| names_declared(d, src))
        .collect();
    for n in c::descendants(stmt) {
        match n.kind() {
            "call_expression" => {
                let Some(f) = n.field("function") else {
                    return Err("a call bpf-migrate cannot read".into());
                };
                match f.kind() {
                    "identifier" => {
                        let name = c::text(f, src);
                        if let Err(e) = pure_call(name) {
                            // A function of this file that only reads is fine, unless the
                            // event's address goes to it.
                            if !mentions(n, var, src).is_empty() {
                                return Err(format!(
                                    "the event's address goes to `{name}()`, another function"
                                ));
                            }
                            if local_function(cx, name).is_some()
                                && !local_function_is_pure(cx, name, 0)
                            {
                                return Err(format!(
                                    "`{name}()` changes state (a map, a global or memory through a pointer) between the reservation and the submit; when the ring is full that would be skipped"
                                ));
                            }
                            if !local_function_is_pure(cx, name, 0) {
                                return Err(e);
                            }
                        }
                    }
                    // BCC table methods that only read (a stack id is only read through
                    // the event that carries it).
                    "field_expression"
                        if matches!(
                            f.field("field").map(|x| c::text(x, src)),
                            Some("lookup" | "get_stackid")
                        ) => {}
                    _ => {
                        return Err(format!(
                            "`{}` runs between the reservation and the submit, and bpf-migrate cannot tell what it does",
                            c::text(f, src)
                        ));
                    }
                }
            }
            "assignment_expression" | "update_expression" => {
                let Some(target) = n.field(if n.kind() == "assignment_expression" {
                    "left"
                } else {
                    "argument"
                }) else {
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
                    || (locals_before.iter().any(|l| l == root)
                        && !read_after.iter().any(|r| r == root));
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

/// What the original did after the output, as the statement a full ring runs instead; with
/// the edit that puts a label before that code when it is more than a `return` (the failure
/// branch then jumps there, as `goto cleanup` does in hand-written code).
fn on_full(
    src: &str,
    out_stmt: Node,
    func: Node,
    body: Node,
) -> Result<(String, Option<Edit>), String> {
    let mut cur = out_stmt;
    loop {
        let parent = cur.parent().ok_or("the output is not in a function body")?;
        if parent.kind() == "compound_statement" {
            let st = statements(parent);
            let i = st
                .iter()
                .position(|s| *s == cur)
                .ok_or("the output is not a statement of its block")?;
            if let Some(next) = st.get(i + 1) {
                return match next.kind() {
                    "labeled_statement" => {
                        let l = next.field("label").ok_or("a label without a name")?;
                        Ok((format!("goto {};", c::text(l, src)), None))
                    }
                    "return_statement"
                        if !c::descendants(*next)
                            .iter()
                            .any(|n| n.kind() == "call_expression") =>
                    {
                        Ok((norm(c::text(*next, src)), None))
                    }
                    // A label cannot stand before a declaration (before C23).
                    "declaration" => Err(format!(
                        "the declaration `{}` follows the output, and the failure branch would have to jump past it",
                        first_line(c::text(*next, src))
                    )),
                    _ => {
                        let label = free_label(src, func)?;
                        let ls = line_start(src, next.start_byte());
                        if !src[ls..next.start_byte()].trim().is_empty() {
                            return Err(format!(
                                "`{}` runs after the output on the same line",
                                first_line(c::text(*next, src))
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
                };
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
                .ok_or("the output is not in a function body")?;
            match gp.kind() {
                "if_statement" => cur = gp,
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
        } else {
            return Err("the output is not a statement of a block".into());
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

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
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

/// Every way out of the region but through the submit gets a discard: returns, gotos to labels
/// outside it, and breaks and continues that leave the block.
#[allow(clippy::too_many_arguments)]
fn exits(
    cx: &Ctx,
    stmt: Node,
    var: &str,
    discard: &str,
    unit: &str,
    region: (usize, usize),
    func: Node,
    edits: &mut Vec<Edit>,
) -> Result<(), String> {
    let src = cx.src();
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
            }
            "goto_statement" => {
                let label = n.field("label").map(|l| c::text(l, src)).unwrap_or("");
                let target = c::descendants(func).into_iter().find(|l| {
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
            }
            "break_statement" | "continue_statement" => {
                // Leaving the block (to the enclosing loop's next iteration or end) is a way
                // out; a loop or switch inside the region keeps it in.
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
                    return Err("a statement outside any block".into());
                };
                let mut p = n.parent();
                let mut inside = false;
                while let Some(x) = p {
                    if x == block {
                        break;
                    }
                    if stop.contains(&x.kind()) {
                        inside = true;
                        break;
                    }
                    p = x.parent();
                }
                if !inside {
                    edits.push(discard_before(src, n, discard, unit)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Puts `discard` before the exit statement `x`, adding braces when `x` is the whole body of
/// an `if`, `else` or loop.
fn discard_before(src: &str, x: Node, discard: &str, unit: &str) -> Result<Edit, String> {
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

/// A use of a stack event becomes a use of the pointer: `e.f` → `e->f`, `&e` → `e`,
/// `sizeof(e)` → `sizeof(*e)`.
fn rewrite_use(m: Node, var: &str, src: &str) -> Result<Edit, String> {
    let p = m.parent().ok_or("a bare use")?;
    match p.kind() {
        "field_expression" if p.field("argument") == Some(m) => {
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
