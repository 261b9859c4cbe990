//! The page count of `perf_buffer__new()`: a ring buffer's size is set in the BPF map, so the
//! count goes away. Its value (a constant the tool can read) sizes the ring; a count chosen at
//! run time is noted; a `#define` that only gave it is deleted.

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
use super::State;
use super::syntax::{item_span, strip_ptr, without_init};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

/// Records the page-count argument of a migrated `perf_buffer__new()` (`span`) and returns
/// its value when it is a constant.
pub(super) fn page_count(
    cx: &mut Ctx,
    st: &mut State,
    call: Node,
    span: (usize, usize),
) -> Option<u64> {
    let text = &cx.src()[span.0..span.1];
    st.page_args.push(span);
    let pages = eval_int(cx, text, 0);
    if pages.is_none() {
        runtime_page_count(cx, call, text, span);
    }
    pages
}

/// A page count chosen at run time no longer sizes anything: the ring's size is fixed in the
/// BPF map. Say so; a local variable that only held it would be left unused, so refuse that.
fn runtime_page_count(cx: &mut Ctx, call: Node, text: &str, span: (usize, usize)) {
    if c::is_ident(text)
        && let Some(func) = c::ancestor(call, "function_definition")
        && only_sizes_buffer(cx, func, text)
    {
        cx.report(
            span.0,
            Rule::UnsupportedForm,
            format!("the page count `{text}` is a local variable that only sizes this perf buffer; it would be left unused"),
            "the ring buffer's size is set in the BPF map (max_entries); remove the variable or make the page count a constant, then run bpf-migrate again",
        );
        return;
    }
    cx.diag(
        span.0,
        Rule::PerfBufferNew,
        format!("the page count `{text}` is chosen at run time and no longer applies"),
        Some("a ring buffer's size is fixed by the map's max_entries in the BPF program (--ringbuf-size); an option that set the page count now does nothing"),
    );
}

/// Whether `var` is a local of `func` that nothing reads but the `perf_buffer__new` argument.
fn only_sizes_buffer(cx: &Ctx, func: Node, var: &str) -> bool {
    let src = cx.src();
    let within = |n: &Node| n.start_byte() >= func.start_byte() && n.end_byte() <= func.end_byte();
    let local = cx.of_kind("declaration").iter().any(|n| {
        within(n) && {
            let mut cursor = n.walk();
            n.children_by_field_name("declarator", &mut cursor)
                .any(|d| strip_ptr(without_init(d), src) == var)
        }
    });
    let uses = cx
        .of_kind("identifier")
        .iter()
        .filter(|n| n.kind() == "identifier" && c::text(**n, src) == var && within(n))
        .count();
    // The declaration and the perf_buffer__new argument: nothing else reads it.
    local && uses <= 2
}

/// A `#define` that only gave perf buffers their page count is dead once they are gone.
pub(super) fn unused_page_defines(cx: &mut Ctx, st: &State) {
    let src = cx.src();
    let mut names: Vec<&str> = st
        .page_args
        .iter()
        .map(|&(s, e)| &src[s..e])
        .filter(|t| c::is_ident(t))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let Some(def) = cx
            .of_kind("preproc_def")
            .into_iter()
            .find(|d| d.field("name").is_some_and(|n| c::text(n, src) == name))
        else {
            continue;
        };
        let used = cx.tokens().iter().any(|&(t, s, e)| {
            t == Tok::Ident
                && &src[s..e] == name
                && !(s >= def.start_byte() && e <= def.end_byte())
                && !st.page_args.iter().any(|&(a, b)| s >= a && e <= b)
        });
        if !used {
            let (s, e) = item_span(src, def);
            cx.edits.push(Edit::delete(s, e, Rule::PerfBufferNew));
        }
    }
}

/// Integer value of a page count: a literal, a `#define`, or a product or shift of those.
fn eval_int(cx: &Ctx, expr: &str, depth: usize) -> Option<u64> {
    if depth > 4 {
        return None;
    }
    let e = c::strip_parens(expr);
    if let Some((a, b)) = e.split_once('*') {
        return eval_int(cx, a, depth + 1)?.checked_mul(eval_int(cx, b, depth + 1)?);
    }
    if let Some((a, b)) = e.split_once("<<") {
        return eval_int(cx, a, depth + 1)?.checked_shl(eval_int(cx, b, depth + 1)? as u32);
    }
    let lit = e.trim_end_matches(['u', 'U', 'l', 'L']);
    if let Some(h) = lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    if let Ok(v) = lit.parse() {
        return Some(v);
    }
    if !c::is_ident(e) {
        return None;
    }
    let src = cx.src();
    cx.of_kind("preproc_def")
        .into_iter()
        .find(|d| d.field("name").is_some_and(|n| c::text(n, src) == e))
        .and_then(|d| d.field("value"))
        .and_then(|v| eval_int(cx, c::text(v, src), depth + 1))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        BPF, PERF_CALLBACK, PERF_DECLS, PERF_POLL, RING_CALLBACK, check_note, loader, perf, ring,
    };
    use crate::engine::testkit::{check_migrate, check_refused};
    use crate::rules::Rule;

    #[test]
    fn deletes_a_define_that_only_gave_the_page_count() {
        let before = perf(
            "",
            &format!("#define PERF_BUFFER_PAGES\t16\n\n{PERF_CALLBACK}"),
            "",
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), PERF_BUFFER_PAGES,\n\
             \t\t\t      handle_event, NULL, NULL, NULL);\n",
        );
        let after = ring(
            "",
            RING_CALLBACK,
            "",
            "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event,\n\
             \t\t\t      NULL, NULL);\n",
        );
        check_migrate(&[("x.bpf.c", BPF), ("x.c", &before)], &[("x.c", &after)]);
    }

    /// The ring is never smaller than one CPU's perf buffer was: 1024 pages a CPU (4 MiB)
    /// make a 4 MiB ring, 64 pages (256 KiB) the default 256 KiB; `--ringbuf-size` decides
    /// when given.
    #[test]
    fn a_ring_is_no_smaller_than_one_cpus_perf_buffer() {
        let with_pages = |pages: u64| {
            perf(
                "",
                &format!("#define PERF_BUFFER_PAGES\t{pages}\n\n{PERF_CALLBACK}"),
                "",
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), PERF_BUFFER_PAGES,\n\
                 \t\t\t      handle_event, NULL, NULL, NULL);\n",
            )
        };
        let ring_of = |pages: u64, opts: &crate::engine::Options| {
            let loader = with_pages(pages);
            let (out, diags) =
                crate::engine::testkit::run(&[("x.bpf.c", BPF), ("x.c", &loader)], opts);
            let bpf = out.get("x.bpf.c").cloned().unwrap_or_default();
            let size = bpf
                .lines()
                .find(|l| l.contains("max_entries"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let note = diags
                .into_iter()
                .find(|d| d.rule == Rule::PerfMapDef)
                .map(|d| d.message)
                .unwrap_or_default();
            (size, note)
        };
        let default = crate::engine::Options::default();
        let (size, note) = ring_of(1024, &default);
        assert_eq!(size, "__uint(max_entries, 4 * 1024 * 1024);");
        assert!(
            note.ends_with("4096 KiB shared by all CPUs, no less than the perf buffer had for one CPU (1024 pages, 4096 KiB)"),
            "{note}"
        );
        let (size, note) = ring_of(64, &default);
        assert_eq!(size, "__uint(max_entries, 256 * 1024);");
        assert!(
            note.ends_with(
                "256 KiB shared by all CPUs; the perf buffer had 64 pages (256 KiB) per CPU"
            ),
            "{note}"
        );
        let given = crate::engine::Options {
            ring_size: 1 << 20,
            ring_size_given: true,
            ..default
        };
        let (size, _) = ring_of(1024, &given);
        assert_eq!(size, "__uint(max_entries, 1 * 1024 * 1024);");
    }

    #[test]
    fn notes_a_page_count_chosen_at_run_time() {
        let env = "static struct env {\n\tint pages;\n} env = { .pages = 8 };\n\n";
        let before = perf(
            "#include <stdlib.h>\n",
            &format!("{env}{PERF_CALLBACK}"),
            "",
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), env.pages, handle_event, NULL, NULL, NULL);\n",
        );
        let after = ring(
            "#include <stdlib.h>\n",
            &format!("{env}{RING_CALLBACK}"),
            "",
            "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n",
        );
        // `main` reads the page count from its arguments.
        let from_args = |loader: String| {
            loader
                .replace("int main(void)", "int main(int argc, char **argv)")
                .replace(
                    "\n\tskel = x_bpf__open_and_load();",
                    "\n\tif (argc > 1)\n\t\tenv.pages = atoi(argv[1]);\n\tskel = x_bpf__open_and_load();",
                )
        };
        let files = [("x.bpf.c", BPF), ("x.c", &from_args(before))];
        check_migrate(&files, &[("x.c", &from_args(after))]);
        check_note(&files, "the page count `env.pages` is chosen at run time");
    }

    #[test]
    fn refuses_a_local_that_only_held_the_page_count() {
        let before = loader(
            "#include <unistd.h>\n",
            PERF_CALLBACK,
            &format!("\tsize_t pages = (1 << 20) / sysconf(_SC_PAGESIZE);\n{PERF_DECLS}\n"),
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), pages, handle_event, NULL, NULL, NULL);\n\
                 \tif (!pb)\n\t\treturn 1;\n{PERF_POLL}\treturn 0;\n"
            ),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::UnsupportedForm,
            "the page count `pages` is a local variable that only sizes this perf buffer",
        );
    }
}
