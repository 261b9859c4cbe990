//! A lost-sample callback kept (`--lost count`, the default): a ring buffer has none, so the
//! BPF program counts, per CPU, the records its ring could not take (a per-CPU array
//! `MAP_lost` that linking adds, `engine::lost_counter`), and the loader passes what is new to
//! the callback after each poll, with the CPU and count the perf buffer gave it.
//!
//! The loader gets a small `struct lost_counter` with two functions, once per file, before its
//! first function: the creation becomes
//! `lost_counter__watch(&MAP_lost_counter, FD_OF_MAP_lost, lost, ctx, ring_buffer__new(...))`
//! and each poll `lost_counter__check(&MAP_lost_counter, ring_buffer__poll(...))`.

use tree_sitter::Node;

use super::super::context::Ctx;
use super::State;
use crate::edit::Edit;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;
use crate::source::line_start;

/// The suffix of the counter map a ring `MAP` gets on the BPF side: `MAP_lost`.
pub const MAP_SUFFIX: &str = "_lost";

/// A perf buffer whose lost callback is kept: its map, and the expression its handle is
/// stored in (`pb`), for the polls.
pub(super) struct Counter {
    pub map: String,
    pub handle: Option<String>,
}

impl Counter {
    /// The loader's static that watches it.
    fn var(&self) -> String {
        format!("{}{MAP_SUFFIX}_counter", self.map)
    }
}

/// The creation call's text, `ring` (a `ring_buffer__new(...)` call), made to watch the counter
/// of `map` for the callback `lost` with its context `ctx`; Err, with the reason, when the
/// loader cannot be given one.
pub(super) fn watch(
    cx: &Ctx,
    st: &mut State,
    (map, fd): (&str, (usize, usize)),
    (lost, ctx): (&str, &str),
    ring: &str,
    (call, handle): (Node, Option<String>),
) -> Result<String, String> {
    let src = cx.src();
    if map == super::maps::FIRST_MAP {
        return Err(
            "the ring's map is found as the object's first (`bpf_object__next_map(obj, NULL)`), not by a name beside which its counter could be found".to_string(),
        );
    }
    // The fd itself names the map, or a variable in it does that was set to one that does,
    // in the same function (`int fd = bpf_object__find_map_fd_by_name(obj, "events");`, or
    // `m = skel->maps.events;` read as `bpf_map__fd(m)`): that expression, naming the
    // counter, is evaluated where the buffer is made.
    let named = counter_fd(src, fd, map).or_else(|| through_variable(cx, fd, map, call));
    let Some(counter_fd) = named else {
        return Err(format!(
            "the counter map can be named only beside a ring named where the buffer is made (`bpf_map__fd(skel->maps.{map})` or `bpf_object__find_map_fd_by_name(obj, \"{map}\")`), not through `{}`",
            &src[fd.0..fd.1]
        ));
    };
    if !c::is_ident(lost) {
        return Err(format!("the callback `{lost}` is not a function name"));
    }
    if !side_effect_free(ctx) {
        return Err(format!(
            "its context `{ctx}` would be evaluated twice, and is not a plain name or address"
        ));
    }
    let c = Counter {
        map: map.to_string(),
        handle,
    };
    let var = c.var();
    if let Some(taken) = ["lost_counter", &var].into_iter().find(|n| mentions(cx, n)) {
        return Err(format!("the name `{taken}` it needs is taken in this file"));
    }
    st.counters.push(c);
    let line = line_start(src, fd.0);
    let indent: String = src[line..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    let width = |s: &str| s.chars().count() + 7 * s.matches('\t').count();
    let all = format!(
        "lost_counter__watch(&{var}, {counter_fd}, {lost}, {ctx}, {})",
        one_line(ring)
    );
    if !ring.contains('\n') && width(&src[line..fd.0]) + all.len() <= 100 {
        return Ok(all);
    }
    // The counter's arguments, then the ring buffer's creation, on lines of their own, one
    // step further in.
    let step = if indent.starts_with(' ') {
        "    "
    } else {
        "\t"
    };
    let cont = format!("{indent}{step}");
    // A `//` comment inside the call keeps its lines: joined, it would hide what follows.
    let ring = if !ring.contains("//") && width(&cont) + one_line(ring).len() < 100 {
        one_line(ring)
    } else {
        one_line_or_wrapped(ring, &cont, step)
    };
    Ok(format!(
        "lost_counter__watch(&{var},\n{cont}{counter_fd}, {lost}, {ctx},\n{cont}{ring})"
    ))
}

/// A call laid out on several lines, on one.
fn one_line(call: &str) -> String {
    call.split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ring` laid out on several lines, its lines after the first one a step further in than
/// `indent`, its own line's.
fn one_line_or_wrapped(ring: &str, indent: &str, step: &str) -> String {
    let mut lines = ring.split('\n');
    let first = lines.next().unwrap_or_default().to_string();
    lines.fold(first, |acc, l| format!("{acc}\n{indent}{step}{}", l.trim()))
}

/// `fd` (the fd expression of the ring) with the map's name made the counter's, when it names
/// the map once itself (`skel->maps.NAME`, `maps->NAME`, `"NAME"`).
fn counter_fd(src: &str, fd: (usize, usize), map: &str) -> Option<String> {
    let toks = c::lex(src, fd.0..fd.1);
    let at: Vec<(usize, usize)> = toks
        .iter()
        .enumerate()
        .filter(|&(k, &(t, s, e))| match t {
            Tok::Ident => {
                &src[s..e] == map
                    && k >= 1
                    && matches!(toks[k - 1].0, Tok::Punct(b'.') | Tok::Punct(b'>'))
            }
            Tok::Str => src[s..e] == format!("\"{map}\""),
            _ => false,
        })
        .map(|(_, &(t, s, e))| {
            if t == Tok::Str {
                (s + 1, e - 1)
            } else {
                (s, e)
            }
        })
        .collect();
    let [(s, e)] = at[..] else { return None };
    Some(format!(
        "{}{map}{MAP_SUFFIX}{}",
        &src[fd.0..s],
        &src[e..fd.1]
    ))
}

/// The counter's fd for an `fd` whose one variable (`map_fd`, or `m` in `bpf_map__fd(m)`)
/// holds, at `call`, an expression naming `map` with nothing but map lookups: `fd` with the
/// variable replaced by that expression naming the counter.
fn through_variable(cx: &Ctx, fd: (usize, usize), map: &str, call: Node) -> Option<String> {
    let src = cx.src();
    let toks = c::lex(src, fd.0..fd.1);
    let vars: Vec<(usize, usize)> = toks
        .iter()
        .enumerate()
        .filter(|&(k, &(t, _, _))| {
            t == Tok::Ident
                && !matches!(toks.get(k + 1), Some((Tok::Punct(b'('), _, _)))
                && !(k >= 1 && matches!(toks[k - 1].0, Tok::Punct(b'.') | Tok::Punct(b'>')))
        })
        .map(|(_, &(_, s, e))| (s, e))
        .collect();
    let [(s, e)] = vars[..] else { return None };
    if !side_effect_free_call(&src[fd.0..fd.1]) {
        return None;
    }
    let value = super::maps::value_span(cx, &src[s..e], call)?;
    let counter = counter_fd(src, value, map).filter(|e| side_effect_free_call(e))?;
    Some(format!("{}{counter}{}", &src[fd.0..s], &src[e..fd.1]))
}

/// `ctx` only names or takes the address of something: no call, assignment or increment.
fn side_effect_free(ctx: &str) -> bool {
    let toks = c::lex(ctx, 0..ctx.len());
    toks.iter().enumerate().all(|(k, &(t, _, _))| match t {
        Tok::Ident | Tok::Number | Tok::Comment => {
            !matches!(toks.get(k + 1), Some((Tok::Punct(b'('), _, _)))
        }
        Tok::Punct(p) => {
            b"&.*()->[]".contains(&p)
                && !(p == b'-' && matches!(toks.get(k + 1), Some((Tok::Punct(b'-'), _, _))))
        }
        _ => false,
    })
}

/// `e` calls nothing but the libbpf functions that find a map's fd: evaluating it again
/// where the buffer is made does what it did where it was first evaluated.
fn side_effect_free_call(e: &str) -> bool {
    let toks = c::lex(e, 0..e.len());
    toks.iter().enumerate().all(|(k, &(t, s, end))| {
        t != Tok::Ident
            || !matches!(toks.get(k + 1), Some((Tok::Punct(b'('), _, _)))
            || matches!(
                &e[s..end],
                "bpf_map__fd" | "bpf_object__find_map_fd_by_name" | "bpf_object__find_map_by_name"
            )
    })
}

/// An identifier `name` appears in the file.
fn mentions(cx: &Ctx, name: &str) -> bool {
    let src = cx.src();
    cx.tokens()
        .iter()
        .any(|&(t, s, e)| t == Tok::Ident && &src[s..e] == name)
}

/// A poll (or consume) of a watched buffer reports the counts after it: the call is wrapped in
/// `lost_counter__check()`, for the buffer it polls (by the handle's text), or for every
/// counter of the file when that cannot be told.
pub(super) fn check_after(cx: &mut Ctx, st: &State, call: Node) {
    if st.counters.is_empty() {
        return;
    }
    let src = cx.src();
    let (s, e) = (call.start_byte(), call.end_byte());
    // `if (consume(pb))` made `consume(pb) < 0`: the counts wait for the next poll.
    if cx.edits.iter().any(|x| x.start == e && x.end == e) {
        return;
    }
    let first = c::arg_spans(call)
        .first()
        .map(|&(a, b)| c::strip_parens(&src[a..b]).to_string());
    let mine: Vec<&Counter> = st
        .counters
        .iter()
        .filter(|c| c.handle.is_some() && c.handle == first)
        .collect();
    let all: Vec<&Counter> = if mine.is_empty() {
        st.counters.iter().collect()
    } else {
        mine
    };
    let (mut open, mut close) = (String::new(), String::new());
    for c in all {
        open.push_str(&format!("lost_counter__check(&{}, ", c.var()));
        close.push(')');
    }
    cx.edits.push(Edit::insert(s, open, Rule::LostCounter));
    cx.edits.push(Edit::insert(e, close, Rule::LostCounter));
}

/// The watcher, once, before the file's first function, and the headers it needs.
pub(super) fn add_watcher(cx: &mut Ctx, st: &State) {
    if st.counters.is_empty() {
        return;
    }
    let src = cx.src();
    let root = cx.root();
    let mut cursor = root.walk();
    let first_fn = root
        .named_children(&mut cursor)
        .find(|n| n.kind() == "function_definition");
    let at = first_fn.map_or(src.len(), |f| super::syntax::item_span(src, f).0);
    let mut text = String::from(WATCHER);
    for c in &st.counters {
        let line = format!("static struct lost_counter {};\n", c.var());
        if !text.contains(&line) {
            text.push_str(&line);
        }
    }
    text.push('\n');
    cx.edits.push(Edit::insert(at, text, Rule::LostCounter));
    super::add_includes(
        cx,
        &[
            ("stdlib.h", "#include <stdlib.h>\n"),
            ("bpf/bpf.h", "#include <bpf/bpf.h>\n"),
        ],
        Rule::LostCounter,
    );
}

/// The loader's side of the counter (see the module's documentation).
pub(super) const WATCHER: &str = r#"/*
 * A ring buffer has no lost-sample callback: the BPF program counts the records its ring
 * could not take, per CPU, in a map beside it, and lost_counter__check() passes what is new
 * to the callback after each poll (added by bpf-migrate).
 */
struct lost_counter {
	int fd;
	int ncpus;
	void (*cb)(void *ctx, int cpu, __u64 cnt);
	void *ctx;
	__u64 *seen;
	__u64 *now;
};

static struct ring_buffer *lost_counter__watch(struct lost_counter *lc, int fd,
					       void (*cb)(void *ctx, int cpu, __u64 cnt),
					       void *ctx, struct ring_buffer *rb)
{
	/* A ring that could not be made leaves errno as ring_buffer__new() set it. */
	if (!rb)
		return NULL;
	lc->fd = fd;
	lc->ncpus = libbpf_num_possible_cpus();
	lc->cb = cb;
	lc->ctx = ctx;
	if (lc->ncpus > 0) {
		lc->seen = calloc(lc->ncpus, sizeof(*lc->seen));
		lc->now = calloc(lc->ncpus, sizeof(*lc->now));
	}
	return rb;
}

static int lost_counter__check(struct lost_counter *lc, int ret)
{
	__u32 zero = 0;
	int cpu;

	if (!lc->seen || !lc->now || bpf_map_lookup_elem(lc->fd, &zero, lc->now))
		return ret;
	for (cpu = 0; cpu < lc->ncpus; cpu++) {
		if (lc->now[cpu] > lc->seen[cpu]) {
			lc->cb(lc->ctx, cpu, lc->now[cpu] - lc->seen[cpu]);
			lc->seen[cpu] = lc->now[cpu];
		}
	}
	return ret;
}

"#;

#[cfg(test)]
mod tests {
    use super::super::testing::{BPF, PERF_CALLBACK, bpf_two_maps, check_note, perf};
    use crate::engine::testkit::{check_refused, run};
    use crate::engine::{Lost, Options};
    use crate::report::Severity;
    use crate::rules::Rule;

    const LOST: &str = "static void handle_lost(void *ctx, int cpu, __u64 cnt)\n{\n\tfprintf(stderr, \"lost %llu\\n\", cnt);\n}\n";

    /// The loader with the lost callback `LOST` and `top` before its main, making its buffer
    /// with `create`.
    fn loader(top: &str, create: &str) -> String {
        perf("", &format!("{PERF_CALLBACK}\n{LOST}{top}"), "", create)
    }

    /// The default creation of the buffer, with `handle_lost`.
    const CREATE: &str = "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost, NULL, NULL);\n";

    /// The loader `x.c` making its buffer with `create`, migrated with `BPF` (or `bpf`): the new
    /// texts of the loader and the BPF source, and whether anything was refused.
    fn migrate(bpf: &str, top: &str, create: &str) -> (String, String, bool) {
        let before = loader(top, create);
        let (changed, diags) = run(&[("x.bpf.c", bpf), ("x.c", &before)], &Options::default());
        let refused = diags.iter().any(|d| d.severity == Severity::Manual);
        let get = |f: &str| changed.get(f).cloned().unwrap_or_default();
        (get("x.c"), get("x.bpf.c"), refused)
    }

    #[test]
    fn a_kept_callback_is_watched_and_checked_after_each_poll() {
        let (c, bpf, refused) = migrate(BPF, "", CREATE);
        assert!(!refused);
        assert!(
            c.contains("static void handle_lost(void *ctx, int cpu, __u64 cnt)"),
            "{c}"
        );
        assert!(c.contains("\tpb = lost_counter__watch(&events_lost_counter,\n\t\tbpf_map__fd(skel->maps.events_lost), handle_lost, NULL,\n\t\tring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL));\n"), "{c}");
        assert!(
            c.contains(
                "while (lost_counter__check(&events_lost_counter, ring_buffer__poll(pb, 100)) >= 0)"
            ),
            "{c}"
        );
        assert!(
            c.contains("#include <stdlib.h>\n#include <bpf/bpf.h>\n#include <bpf/libbpf.h>"),
            "{c}"
        );
        assert_eq!(c.matches("struct lost_counter {").count(), 1, "{c}");
        assert!(bpf.contains("} events_lost SEC(\".maps\");"), "{bpf}");
        assert!(
            bpf.contains("\tevents_lost_count(bpf_ringbuf_output(&events, &pid, sizeof(pid), 0));"),
            "{bpf}"
        );
        // The counter comes after the ring, before the program that counts into it.
        assert!(
            bpf.find("} events SEC") < bpf.find("events_lost SEC"),
            "{bpf}"
        );
        assert!(
            bpf.find("events_lost_count(long") < bpf.find("int trace_exec"),
            "{bpf}"
        );
    }

    #[test]
    fn a_variable_set_from_the_map_in_the_function_names_the_counter() {
        let (c, _, refused) = migrate(
            BPF,
            "",
            "\tint map_fd = bpf_object__find_map_fd_by_name(skel->obj, \"events\");\n\tpb = perf_buffer__new(map_fd, 8, handle_event, handle_lost, NULL, NULL);\n",
        );
        assert!(!refused);
        assert!(c.contains("lost_counter__watch(&events_lost_counter,\n\t\tbpf_object__find_map_fd_by_name(skel->obj, \"events_lost\"), handle_lost, NULL,\n\t\tring_buffer__new(map_fd, handle_event, NULL, NULL));"), "{c}");
    }

    #[test]
    fn a_map_variable_set_in_the_function_names_the_counter() {
        // ksnoop's form: the map held in a variable, its fd taken where the buffer is made.
        let (c, _, refused) = migrate(
            BPF,
            "",
            "\tstruct bpf_map *perf_map;\n\n\tperf_map = skel->maps.events;\n\tpb = perf_buffer__new(bpf_map__fd(perf_map), 8, handle_event, handle_lost, NULL, NULL);\n",
        );
        assert!(!refused, "{c}");
        assert!(c.contains("lost_counter__watch(&events_lost_counter,\n\t\tbpf_map__fd(skel->maps.events_lost), handle_lost, NULL,\n\t\tring_buffer__new(bpf_map__fd(perf_map), handle_event, NULL, NULL));"), "{c}");
    }

    #[test]
    fn a_comment_beside_an_argument_is_not_taken_for_the_next_one() {
        let (c, _, refused) = migrate(
            BPF,
            "",
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, // pages per CPU\n\t\t\t      handle_event, handle_lost, NULL, NULL);\n",
        );
        assert!(!refused, "{c}");
        // The comment went with the page count it described.
        assert!(c.contains("\tpb = lost_counter__watch(&events_lost_counter,\n\t\tbpf_map__fd(skel->maps.events_lost), handle_lost, NULL,\n\t\tring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL));\n"), "{c}");
    }

    #[test]
    fn a_comment_inside_an_argument_keeps_the_creation_on_its_lines() {
        let (c, _, refused) = migrate(
            BPF,
            "",
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events // the stream\n\t\t\t      ), 8, handle_event, handle_lost, NULL, NULL);\n",
        );
        assert!(!refused, "{c}");
        assert!(c.contains("// the stream\n"), "{c}");
    }

    #[test]
    fn an_output_whose_result_is_read_keeps_its_result() {
        let bpf = BPF.replace(
            "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;",
            "\treturn bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid)) ? 1 : 0;",
        );
        let (_, bpf, refused) = migrate(&bpf, "", CREATE);
        assert!(!refused);
        assert!(bpf.contains("\treturn events_lost_count(bpf_ringbuf_output(&events, &pid, sizeof(pid), 0)) ? 1 : 0;"), "{bpf}");
    }

    #[test]
    fn a_legacy_map_gets_a_legacy_counter() {
        let bpf = BPF.replace(
            "struct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} events SEC(\".maps\");",
            "struct bpf_map_def SEC(\"maps\") events = {\n\t.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,\n\t.key_size = sizeof(u32),\n\t.value_size = sizeof(u32),\n};",
        );
        let (_, bpf, refused) = migrate(
            &bpf,
            "",
            "\tpb = perf_buffer__new(bpf_object__find_map_fd_by_name(skel->obj, \"events\"), 8, handle_event, handle_lost, NULL, NULL);\n",
        );
        assert!(!refused);
        assert!(bpf.contains("struct bpf_map_def SEC(\"maps\") events_lost = {\n\t.type = BPF_MAP_TYPE_PERCPU_ARRAY,"), "{bpf}");
    }

    #[test]
    fn each_poll_checks_its_own_buffer_or_all_when_it_cannot_be_told() {
        let before = perf(
            "",
            &format!(
                "{PERF_CALLBACK}\n{LOST}\nstatic int drain(struct perf_buffer *b)\n{{\n\treturn perf_buffer__consume(b) < 0 ? -1 : 0;\n}}\n"
            ),
            "\tstruct perf_buffer *eb;\n",
            "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost, NULL, NULL);\n\
             \teb = perf_buffer__new(bpf_map__fd(skel->maps.errors), 8, handle_event, handle_lost, NULL, NULL);\n\
             \tperf_buffer__poll(eb, 10);\n\tdrain(eb);\n",
        );
        let bpf = bpf_two_maps();
        let (changed, diags) = run(&[("x.bpf.c", &bpf), ("x.c", &before)], &Options::default());
        assert!(
            !diags.iter().any(|d| d.severity == Severity::Manual),
            "{diags:?}"
        );
        let c = &changed["x.c"];
        assert!(
            c.contains("lost_counter__check(&errors_lost_counter, ring_buffer__poll(eb, 10));"),
            "{c}"
        );
        assert!(
            c.contains("lost_counter__check(&events_lost_counter, ring_buffer__poll(pb, 100))"),
            "{c}"
        );
        assert!(c.contains("return lost_counter__check(&events_lost_counter, lost_counter__check(&errors_lost_counter, ring_buffer__consume(b))) < 0 ? -1 : 0;"), "{c}");
        assert_eq!(c.matches("struct lost_counter {").count(), 1, "{c}");
        let b = &changed["x.bpf.c"];
        assert!(
            b.contains("errors_lost_count(bpf_ringbuf_output(&errors,"),
            "{b}"
        );
    }

    #[test]
    fn what_cannot_be_fed_is_dropped_and_says_why() {
        for (top, create, why) in [
            (
                "",
                "\tint fd0 = bpf_map__fd(skel->maps.events);\n\tint fd = fd0;\n\tpb = perf_buffer__new(fd, 8, handle_event, handle_lost, NULL, NULL);\n",
                "not through `fd`",
            ),
            (
                "static void *state(void)\n{\n\treturn NULL;\n}\n",
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost, state(), NULL);\n",
                "its context `state()` would be evaluated twice",
            ),
            (
                "static int lost_counter;\n",
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost, &lost_counter, NULL);\n",
                "the name `lost_counter` it needs is taken",
            ),
        ] {
            let (c, bpf, refused) = migrate(BPF, top, create);
            assert!(!refused, "{why}");
            assert!(!c.contains("lost_counter__"), "{c}");
            assert!(!bpf.contains("events_lost"), "{bpf}");
            let before = loader(top, create);
            check_note(
                &[("x.bpf.c", BPF), ("x.c", &before)],
                "bpf-migrate cannot feed it from a counter: ",
            );
            let (_, diags) = run(&[("x.bpf.c", BPF), ("x.c", &before)], &Options::default());
            assert!(
                diags.iter().any(|d| d.message.contains(why)),
                "{why}: {diags:?}"
            );
        }
    }

    #[test]
    fn a_program_that_traces_the_counters_reads_is_refused() {
        // Every read of the counter is a bpf() call, which checks CAP_BPF/CAP_SYS_ADMIN: a
        // capability tracer would print one event more at each read, and read once more for it.
        let bpf = BPF.replace(
            "SEC(\"tracepoint/syscalls/sys_enter_execve\")",
            "SEC(\"kprobe/cap_capable\")",
        );
        let (c, _, refused) = migrate(&bpf, "", CREATE);
        assert!(refused && c.is_empty(), "{c}");
        let before = loader("", CREATE);
        check_refused(
            &[("x.bpf.c", &bpf), ("x.c", &before)],
            Rule::UnsupportedForm,
            "which runs through `cap_capable`, traced here",
        );
        // Under --lost drop the callback goes and the program migrates.
        let opts = Options {
            lost: Lost::Drop,
            ..Options::default()
        };
        let (changed, diags) = run(&[("x.bpf.c", &bpf), ("x.c", &before)], &opts);
        assert!(
            !diags.iter().any(|d| d.severity == Severity::Manual),
            "{diags:?}"
        );
        assert!(changed["x.bpf.c"].contains("BPF_MAP_TYPE_RINGBUF"));
    }

    #[test]
    fn a_taken_counter_name_is_refused_not_left_dangling() {
        let bpf = BPF.replace("char LICENSE", "int events_lost;\n\nchar LICENSE");
        let before = loader("", CREATE);
        check_refused(
            &[("x.bpf.c", &bpf), ("x.c", &before)],
            Rule::UnsupportedForm,
            "the name `events_lost` is taken",
        );
    }
}
