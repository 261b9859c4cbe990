//! The lost-sample callback: a ring buffer has none. A static one that nothing else uses is
//! removed, with the file-scope statics only it used; any other is left, no longer called.

use std::collections::HashSet;

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
use super::State;
use super::syntax::{functions_named, item_span, other_uses, own_spans, strip_ptr, without_init};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;

const HELP: &str = "when the ring is full, bpf_ringbuf_output() returns -EAGAIN on the BPF side: count those failures there (e.g. in a per-CPU array) and read the counter from user space";

/// A lost-sample callback has no ring buffer equivalent. A static one that nothing else uses
/// is removed (else `-Wunused-function` would warn), with file-scope statics only it used.
pub(super) fn lost_callback(cx: &mut Ctx, st: &mut State, name: &str, creation: &[(usize, usize)]) {
    let at = creation[0].0;
    if !st.done_callbacks.insert(name.to_string()) {
        return;
    }
    let src = cx.src();
    let why = st
        .lost_why
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, w)| format!("; bpf-migrate cannot feed it from a counter: {w}"))
        .unwrap_or_default();
    let Some((def, fns)) = removable(cx, name, creation) else {
        // Kept (not static, used elsewhere, or not a plain function): it just is no longer
        // called.
        let msg = format!(
            "the lost-sample callback `{name}` is no longer called: a ring buffer has none{why}"
        );
        cx.diag(at, Rule::LostCallback, msg, Some(HELP));
        return;
    };
    for (n, _) in &fns {
        let (s, e) = item_span(src, *n);
        cx.edits.push(Edit::delete(s, e, Rule::LostCallback));
    }
    statics_only_used_by(cx, def);
    cx.diag(
        def.start_byte(),
        Rule::LostCallback,
        format!("the lost-sample callback `{name}` is removed: a ring buffer has none{why}"),
        Some(HELP),
    );
}

/// A function's definition and prototypes, each with its function_declarator.
type Functions<'t> = Vec<(Node<'t>, Node<'t>)>;

/// The callback's definition, with all its declarations, when it may be deleted: a static
/// function, whole (code that does not parse can make a function appear to run on over what
/// follows it), that nothing but the creation calls names.
fn removable<'t>(
    cx: &Ctx<'_, 't>,
    name: &str,
    creation: &[(usize, usize)],
) -> Option<(Node<'t>, Functions<'t>)> {
    let src = cx.src();
    if !c::is_ident(name) {
        return None;
    }
    let fns = functions_named(cx, name);
    let def = fns
        .iter()
        .find(|(n, _)| n.kind() == "function_definition")
        .map(|x| x.0)?;
    let allowed = own_spans(&fns, creation);
    let is_static = {
        let mut cursor = def.walk();
        def.children(&mut cursor)
            .any(|c| c.kind() == "storage_class_specifier" && c::text(c, src) == "static")
    };
    let whole = !def.has_error()
        && !creation
            .iter()
            .any(|&(s, e)| s < def.end_byte() && e > def.start_byte());
    (is_static && whole && other_uses(cx, name, &allowed).is_empty()).then_some((def, fns))
}

/// File-scope statics that only the callback `def` used would now be unused: they go.
fn statics_only_used_by(cx: &mut Ctx, def: Node) {
    let src = cx.src();
    let body = def.field("body").unwrap();
    let used: HashSet<&str> = cx
        .of_kind("identifier")
        .iter()
        .filter(|n| {
            n.kind() == "identifier"
                && n.start_byte() >= body.start_byte()
                && n.end_byte() <= body.end_byte()
        })
        .map(|n| c::text(*n, src))
        .collect();
    let root = cx.root();
    let mut cursor = root.walk();
    let top: Vec<Node> = root.named_children(&mut cursor).collect();
    for item in top {
        let Some(var) = static_variable(item, src).filter(|v| used.contains(v)) else {
            continue;
        };
        let elsewhere = other_uses(
            cx,
            var,
            &[
                (item.start_byte(), item.end_byte()),
                (def.start_byte(), def.end_byte()),
            ],
        );
        if elsewhere.is_empty() {
            let (s, e) = item_span(src, item);
            cx.edits.push(Edit::delete(s, e, Rule::LostCallback));
        }
    }
}

/// The variable a top-level `static` declaration of one variable declares.
fn static_variable<'a>(item: Node, src: &'a str) -> Option<&'a str> {
    if item.kind() != "declaration" || !c::text(item, src).trim_start().starts_with("static") {
        return None;
    }
    let d = item.field("declarator")?;
    let mut cursor = item.walk();
    if item
        .children_by_field_name("declarator", &mut cursor)
        .count()
        != 1
    {
        return None;
    }
    Some(strip_ptr(without_init(d), src))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{BPF, PERF_CALLBACK, RING_CALLBACK, check_note_with, perf, ring};
    use crate::engine::testkit::check_migrate_with;
    use crate::engine::{Lost, Options};

    /// `--lost drop`: the callback goes (`lost_counter` has the default).
    fn drop() -> Options {
        Options {
            lost: Lost::Drop,
            ..Options::default()
        }
    }

    const COUNTER: &str = "static unsigned long long lost_total;\n\n";

    /// A lost-sample callback that counts, `linkage` its storage class.
    fn lost(linkage: &str) -> String {
        format!(
            "/* Count what the kernel dropped. */\n\
             {linkage}void handle_lost(void *ctx, int cpu, __u64 lost_cnt)\n\
             {{\n\tlost_total += lost_cnt;\n}}\n"
        )
    }

    const CREATE: &str = "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost, NULL, NULL);\n";

    const CREATE_AFTER: &str =
        "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n";

    #[test]
    fn removes_a_static_callback_and_its_counter() {
        let before = perf(
            "",
            &format!("{COUNTER}{PERF_CALLBACK}\n{}", lost("static ")),
            "",
            CREATE,
        );
        let after = ring("", RING_CALLBACK, "", CREATE_AFTER);
        let files = [("x.bpf.c", BPF), ("x.c", &before)];
        check_migrate_with(&files, &[("x.c", &after)], &drop());
        check_note_with(
            &files,
            &drop(),
            "the lost-sample callback `handle_lost` is removed",
        );
    }

    #[test]
    fn keeps_a_callback_other_files_may_call() {
        let before = perf(
            "",
            &format!("{COUNTER}{PERF_CALLBACK}\n{}", lost("")),
            "",
            CREATE,
        );
        let after = ring(
            "",
            &format!("{COUNTER}{RING_CALLBACK}\n{}", lost("")),
            "",
            CREATE_AFTER,
        );
        let files = [("x.bpf.c", BPF), ("x.c", &before)];
        check_migrate_with(&files, &[("x.c", &after)], &drop());
        check_note_with(
            &files,
            &drop(),
            "the lost-sample callback `handle_lost` is no longer called",
        );
    }
}
