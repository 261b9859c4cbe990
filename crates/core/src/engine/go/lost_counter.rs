//! A cilium/ebpf reader keeps reporting lost records (`--lost count`): the BPF side counts
//! the records its ring could not take in a per-CPU array `MAP_lost` beside it (the same
//! counter as for libbpf C loaders: `engine::lost_counter`), and the reader's
//! `if rec.LostSamples != 0 { ... }` asks that counter instead:
//!
//! ```go
//! if lost := rdLost.lostSince(); lost != 0 {
//!     log.Printf("dropped %d samples", lost)
//! }
//! ```
//!
//! with `rdLost := &lostCounter{m: objs.EventsLost}` after the reader is made and the small
//! `lostCounter` type at the end of the file. A loss is told with the next record read after
//! it. The `continue` that ended the test goes: the record read is a real one now, not a
//! report of losses. Where any of this cannot be done, the test goes with a note that says
//! why (as under `--lost drop`).

use tree_sitter::Node;

use super::super::user::LOST_MAP_SUFFIX;
use super::GoFile;
use crate::lang::NodeExt;
use crate::rules::Rule;

/// A reader the migration made, as far as its lost counter needs it.
pub(super) struct ReaderSite<'t> {
    /// Its consumer's index in the file's analysis.
    pub consumer: usize,
    /// The statement that makes it (`rd, err := perf.NewReader(...)`).
    pub stmt: Node<'t>,
    /// The variable it is held in (`rd`), when a plain local.
    pub var: Option<String>,
    /// The expression of its counter map (`objs.EventsLost`, `coll.Maps["events_lost"]`),
    /// when its own map is named in the call the way bpf2go or a collection names it.
    pub counter: Option<String>,
}

/// The counter map's expression beside the map expression `map` of a reader: bpf2go's field
/// of `MAP_lost` (`Events` → `EventsLost`, `EVENTS` → `EVENTS_lost`, as bpf2go names it),
/// or the collection's entry.
pub(super) fn counter_of(g: &GoFile, map: Node) -> Option<String> {
    match map.kind() {
        "selector_expression" => {
            let field = g.text(map.field("field")?);
            let operand = g.text(map.field("operand")?);
            let last = field.chars().last()?;
            let suffix = if last.is_ascii_lowercase() || last.is_ascii_digit() {
                "Lost".to_string()
            } else {
                LOST_MAP_SUFFIX.to_string()
            };
            Some(format!("{operand}.{field}{suffix}"))
        }
        "index_expression" => {
            let index = map
                .field("index")
                .filter(|i| i.kind() == "interpreted_string_literal")?;
            let operand = g.text(map.field("operand")?);
            let name = g.text(index).trim_matches('"');
            Some(format!("{operand}[\"{name}{LOST_MAP_SUFFIX}\"]"))
        }
        _ => None,
    }
}

/// Rewrites the test `stmt` (`if X.LostSamples != 0 { ... }`, `sel` its `X.LostSamples`) to
/// ask the counter of `site`; Err says why it cannot, for the note of a test that goes.
/// `made` holds the reader statements whose counter variable is made already.
pub(super) fn count(
    g: &mut GoFile,
    stmt: Node,
    sel: Node,
    site: &ReaderSite,
    made: &mut Vec<usize>,
) -> Result<(), String> {
    let Some(counter) = &site.counter else {
        return Err("its map is not named in the reader's call as bpf2go's field or a collection's entry, where the counter would be found".into());
    };
    let Some(var) = &site.var else {
        return Err("the reader is not held in a local variable".into());
    };
    let cond = stmt.field("condition").ok_or("no condition")?;
    let body = stmt.field("consequence").ok_or("no body")?;
    let text = g.text(sel);
    let names: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.kind(),
                "identifier" | "type_identifier" | "field_identifier"
            )
        })
        .map(|n| g.text(*n))
        .collect();
    let taken = |name: &str| names.contains(&name);
    let cv = format!("{var}Lost");
    if taken(&cv) && !made.contains(&site.stmt.start_byte()) || taken("lostCounter") {
        return Err(format!(
            "the name `{cv}` or `lostCounter` is taken in this file"
        ));
    }
    let lost = ["lost", "nLost", "lostRecords"]
        .into_iter()
        .find(|n| !taken(n))
        .ok_or("the names it would take are taken in this file")?;
    // The statements of the body: a last `continue` goes; any other jump stays a jump.
    let mut cur = body.walk();
    let stmts: Vec<Node> = body
        .named_children(&mut cur)
        .filter(|n| n.kind() == "statement_list")
        .flat_map(|l| {
            let mut c = l.walk();
            l.named_children(&mut c).collect::<Vec<_>>()
        })
        .filter(|n| n.kind() != "comment")
        .collect();
    let last_continue = stmts
        .last()
        .filter(|s| s.kind() == "continue_statement" && g.text(**s) == "continue");
    let jumps = g.nodes.iter().any(|n| {
        matches!(
            n.kind(),
            "continue_statement" | "break_statement" | "goto_statement"
        ) && body.start_byte() <= n.start_byte()
            && n.end_byte() <= body.end_byte()
            && last_continue.is_none_or(|c| c.id() != n.id())
    });
    if jumps {
        return Err("its body jumps elsewhere than to the next record".into());
    }
    if stmts.len() == 1 && last_continue.is_some() {
        return Err("it only skips the loss record, and there is no such record now".into());
    }
    g.replace(
        cond.start_byte(),
        cond.end_byte(),
        format!("{lost} := {cv}.lostSince(); {lost} != 0"),
        Rule::LostCounter,
    );
    for n in g.of_kind("selector_expression") {
        if n.start_byte() >= body.start_byte()
            && n.end_byte() <= body.end_byte()
            && g.text(n) == text
        {
            g.replace(n.start_byte(), n.end_byte(), lost, Rule::LostCounter);
        }
    }
    if let Some(c) = last_continue {
        g.delete_lines(*c, Rule::LostCounter);
    }
    if !made.contains(&site.stmt.start_byte()) {
        made.push(site.stmt.start_byte());
        let after = after_error_check(g, site.stmt);
        let src = g.src();
        let indent: String = src[crate::source::line_start(src, site.stmt.start_byte())..]
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        let at = crate::source::line_end_incl(src, super::end_trimmed(src, after));
        g.edits.push(crate::edit::Edit::insert(
            at,
            format!("{indent}{cv} := &lostCounter{{m: {counter}}}\n"),
            Rule::LostCounter,
        ));
    }
    Ok(())
}

/// The statement after which the counter is made: the reader's, or the `if err != nil`
/// right after it.
fn after_error_check<'t>(g: &GoFile<'_, 't>, stmt: Node<'t>) -> Node<'t> {
    stmt.next_named_sibling()
        .filter(|n| {
            n.kind() == "if_statement"
                && n.field("condition")
                    .is_some_and(|c| g.text(c).contains("err"))
        })
        .unwrap_or(stmt)
}

/// The name of the counters' type.
pub(super) const LOST_COUNTER_TYPE_NAME: &str = "lostCounter";

/// The type every counter of a file is, added once at its end (once a package: `package`).
pub(super) const LOST_COUNTER_TYPE: &str = "
// lostCounter tells how many records the BPF program could not put in its ring buffer: the
// program counts them per CPU in a map beside the ring (added by bpf-migrate: a ring buffer
// record carries no LostSamples).
type lostCounter struct {
\tm    *ebpf.Map
\tseen []uint64
}

// lostSince returns how many records were lost since its last call.
func (c *lostCounter) lostSince() uint64 {
\tvar now []uint64
\tif err := c.m.Lookup(uint32(0), &now); err != nil {
\t\treturn 0
\t}
\tvar lost uint64
\tfor cpu, n := range now {
\t\tif cpu >= len(c.seen) {
\t\t\tlost += n
\t\t} else if n > c.seen[cpu] {
\t\t\tlost += n - c.seen[cpu]
\t\t}
\t}
\tc.seen = now
\treturn lost
}
";
