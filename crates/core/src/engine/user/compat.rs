//! `--strategy compat`, the loader's side (`engine::compat` is the BPF side's): the loader
//! keeps its perf buffer code and callbacks, and reads through `struct compat_ring`, a ring
//! buffer or a perf buffer picked before load.
//!
//! - `perf_buffer__new/poll/consume/epoll_fd/free` and `struct perf_buffer` become their
//!   `compat_ring__` namesakes, small functions written once before the file's first
//!   function, which call the perf buffer's or the ring buffer's;
//! - before the skeleton is loaded (`S__load(X)`, or `X = S__open_and_load()`, which becomes
//!   `S__open_pick_and_load()`), `S__pick_buffers(X)` probes the kernel for the ring buffer
//!   (`libbpf_probe_bpf_map_type`, not its version) and, where there is none, makes each map
//!   read here a perf event array and sets its `MAP_use_perf` flag;
//! - on the ring path, the sample callback is given CPU -1 (one that reads the CPU is refused)
//!   and the lost callback is not called.
//!
//! Refused: the old `perf_buffer_opts` form, a map not read as a skeleton's field
//! (`bpf_map__fd(X->maps.MAP)`), no load of that skeleton in the file, a sample callback not
//! defined here, and the perf buffer calls with no ring buffer equivalent.

use tree_sitter::Node;

use super::super::compat::{FLAG_SUFFIX, refuse};
use super::super::context::{Analysis, Consumer, Ctx, Report};
use super::super::options::Lost;
use super::lost_counter::{MAP_SUFFIX as LOST_MAP_SUFFIX, WATCHER};
use super::syntax::{functions_named, item_span, strip_ptr};
use super::{State, account_triggers, api, maps};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::line_start;

/// The perf buffer calls the shim stands in for, and its name for them.
const CALLS: &[&str] = &["new", "poll", "consume", "epoll_fd", "free"];
const PREFIX: &str = "compat_ring__";

/// A buffer made from a skeleton's map: `X->maps.MAP` read by `perf_buffer__new` (at `at`),
/// and the fd of its lost counter (`bpf_map__fd(X->maps.MAP_lost)`) where the loader keeps a
/// lost callback (`--lost count`), which the ring path then feeds from it.
struct Read {
    skel: String,
    map: String,
    at: usize,
    counter_fd: Option<String>,
}

pub(super) fn analyze(cx: &mut Ctx, st: &mut State, out: &mut Analysis) {
    let src = cx.src();
    let mut reads: Vec<Read> = Vec::new();
    for call in cx.of_kind("call_expression") {
        let Some(name) = c::call_name(call, src) else {
            continue;
        };
        if api::NO_EQUIVALENT.contains(&name) {
            api::no_equivalent(cx, st, call, name);
        } else if name == "perf_buffer__new" {
            let (map, read) = creation(cx, call);
            if let Some(map) = map {
                out.consumers.push(Consumer {
                    map,
                    offset: call.start_byte(),
                    pages: None,
                    lost_counted: read.as_ref().is_some_and(|r| r.counter_fd.is_some()),
                    bpf2go: false,
                });
            }
            reads.extend(read);
        }
    }
    let used = rename(cx, st, &reads);
    let counted = reads.iter().any(|r| r.counter_fd.is_some());
    if reads.is_empty() {
        account_triggers(cx, st);
        return;
    }
    let picks = load_sites(cx, &reads);
    let mut text = shim(&used, counted);
    for (s, maps, open_and_load) in &picks {
        text.push_str(&pick_buffers(s, maps));
        if *open_and_load {
            text.push_str(&open_pick_and_load(s));
        }
    }
    let root = cx.root();
    let mut cursor = root.walk();
    let first_fn = root
        .named_children(&mut cursor)
        .find(|n| n.kind() == "function_definition");
    let at = first_fn.map_or(src.len(), |f| item_span(src, f).0);
    cx.edits.push(Edit::insert(at, text, Rule::CompatLoader));
    let mut headers = vec![
        ("stdlib.h", "#include <stdlib.h>\n"),
        ("errno.h", "#include <errno.h>\n"),
    ];
    if counted {
        headers.push(("bpf/bpf.h", "#include <bpf/bpf.h>\n"));
    }
    super::add_includes(cx, &headers, Rule::CompatLoader);
    account_triggers(cx, st);
}

/// A `perf_buffer__new(fd, pages, sample, lost, ctx, opts)` the shim can take: its map a
/// skeleton's field, its sample callback defined here and blind to the CPU. The map, where it
/// can be told, is read even when refused: it links the loader to its program.
fn creation(cx: &mut Ctx, call: Node) -> (Option<String>, Option<Read>) {
    let src = cx.src();
    let args = c::arg_spans(call);
    let at = call.start_byte();
    if args.len() != 6 {
        refuse(
            cx,
            at,
            format!(
                "perf_buffer__new() with {} arguments, not the six of libbpf 1.x (the old perf_buffer_opts form)",
                args.len()
            ),
        );
        return (None, None);
    }
    let fd = &src[args[0].0..args[0].1];
    let Some((map, spans)) = maps::resolve_map(cx, fd, args[0].0, call, 0) else {
        refuse(
            cx,
            args[0].0,
            format!("cannot tell which map `{fd}` refers to"),
        );
        return (None, None);
    };
    let Some((skel, sep, skel_at)) = spans
        .iter()
        .find_map(|&(s, e)| skeleton_of(&src[s..e], &map).map(|(k, sep)| (k, sep, s)))
    else {
        refuse(
            cx,
            args[0].0,
            format!(
                "the map `{map}` is not read as a skeleton's field (`bpf_map__fd(skel->maps.{map})`), which the loader needs to make it a perf event array before load"
            ),
        );
        return (Some(map), None);
    };
    let sample = c::strip_parens(&src[args[2].0..args[2].1]);
    if let Some(why) = sample_blind_to_cpu(cx, sample) {
        refuse(cx, args[2].0, why);
        return (Some(map), None);
    }
    let lost = c::strip_parens(&src[args[3].0..args[3].1]);
    let keeps_lost = cx.opts.lost == Lost::Count && !matches!(lost, "NULL" | "0" | "nullptr");
    // The counter is named through the skeleton, which must be in scope at the call: a map
    // passed in as an fd (`print_events(int fd)`) comes from a skeleton of another function.
    let func = c::ancestor(call, "function_definition");
    let in_scope = func.is_some_and(|f| f.start_byte() <= skel_at && skel_at < f.end_byte());
    if keeps_lost && !in_scope {
        cx.report(
            args[3].0,
            Rule::CompatLoader,
            format!("the lost-sample callback `{lost}` is called on the perf path only: the ring's counter `{map}{LOST_MAP_SUFFIX}` cannot be named here, where the map comes as `{fd}` from another function"),
            "pass the skeleton to this function and read the map as `bpf_map__fd(skel->maps.MAP)` to have the ring path count its losses too",
        );
    }
    let counter_fd =
        (keeps_lost && in_scope).then(|| format!("bpf_map__fd({skel}{sep}{map}{LOST_MAP_SUFFIX})"));
    // The whole call, laid out again: it gains the counter's fd as its first argument.
    if let Some(fd) = &counter_fd {
        let mut new_args = vec![fd.clone()];
        new_args.extend(args.iter().map(|a| src[a.0..a.1].to_string()));
        let name = format!("{PREFIX}new_counted");
        let text = c::layout_call(src, at, call.end_byte(), &name, &new_args);
        cx.edits
            .push(Edit::replace(at, call.end_byte(), text, Rule::CompatLoader));
    }
    let read = Read {
        skel,
        map: map.clone(),
        at,
        counter_fd,
    };
    (Some(map), Some(read))
}

/// `X` of an expression `... X->maps.MAP ...` (or `X.maps.MAP`), where X is a name or a path
/// of members (`app.skel`, `env->obj`), and how it reaches its maps (`->maps.`).
fn skeleton_of(expr: &str, map: &str) -> Option<(String, &'static str)> {
    for sep in ["->maps.", ".maps."] {
        let want = format!("{sep}{map}");
        let Some(i) = expr.find(&want) else {
            continue;
        };
        let end = i + want.len();
        if expr[end..].starts_with(|ch: char| ch.is_alphanumeric() || ch == '_') {
            continue;
        }
        let before = &expr[..i];
        let start = before
            .rfind(|ch: char| !(ch.is_alphanumeric() || matches!(ch, '_' | '.' | '-' | '>')))
            .map_or(0, |k| k + 1);
        let skel = &before[start..];
        if !skel.is_empty() && skel.split("->").flat_map(|p| p.split('.')).all(c::is_ident) {
            return Some((skel.to_string(), sep));
        }
    }
    None
}

/// Why the sample callback `name` cannot be given CPU -1 on the ring path, if it cannot.
fn sample_blind_to_cpu(cx: &Ctx, name: &str) -> Option<String> {
    if !c::is_ident(name) {
        return Some(format!(
            "the sample callback `{name}` is not a function's name"
        ));
    }
    let src = cx.src();
    let fns = functions_named(cx, name);
    let Some((def, fdecl)) = fns.iter().find(|(n, _)| n.kind() == "function_definition") else {
        return Some(format!(
            "the sample callback `{name}` is not defined in this file, so whether it reads the CPU, which a ring buffer does not give, cannot be told"
        ));
    };
    let params = fdecl.field("parameters")?;
    let mut cursor = params.walk();
    let cpu = params
        .named_children(&mut cursor)
        .filter(|p| p.kind() == "parameter_declaration")
        .nth(1)
        .and_then(|p| p.field("declarator"))
        .map(|d| strip_ptr(d, src).to_string())?;
    let body = def.field("body")?;
    let reads = c::named_descendants(body)
        .into_iter()
        .any(|n| n.kind() == "identifier" && c::text(n, src) == cpu);
    reads.then(|| format!("the sample callback `{name}` reads the CPU (`{cpu}`), which a ring buffer does not give"))
}

/// `perf_buffer__X` → `compat_ring__X` and `struct perf_buffer` → `struct compat_ring`; the
/// perf buffer's own types, which the shim passes on, stay. Returns the calls renamed.
fn rename(cx: &mut Ctx, st: &mut State, reads: &[Read]) -> Vec<&'static str> {
    let src = cx.src();
    let mut used = Vec::new();
    for n in cx.of_kind("identifier") {
        let t = c::text(n, src);
        if let Some(call) = CALLS
            .iter()
            .find(|c| t.strip_prefix("perf_buffer__") == Some(**c))
        {
            st.explained.push((n.start_byte(), n.end_byte()));
            // A creation whose lost callback the ring path feeds is laid out again whole
            // (`creation`).
            let counted = reads
                .iter()
                .any(|r| r.at == n.start_byte() && r.counter_fd.is_some());
            if !counted {
                cx.edits.push(Edit::replace(
                    n.start_byte(),
                    n.end_byte(),
                    format!("{PREFIX}{call}"),
                    Rule::CompatLoader,
                ));
            }
            if !used.contains(call) {
                used.push(*call);
            }
        }
    }
    for n in cx.of_kinds(&["type_identifier", "identifier"]) {
        if matches!(
            c::text(n, src),
            "perf_buffer_opts" | "perf_buffer_sample_fn" | "perf_buffer_lost_fn"
        ) {
            st.explained.push((n.start_byte(), n.end_byte()));
        }
    }
    for n in cx.of_kind("struct_specifier") {
        if n.field("body").is_some() {
            continue;
        }
        if let Some(name) = n.field("name") {
            match c::text(name, src) {
                "perf_buffer" => {
                    st.explained.push((name.start_byte(), name.end_byte()));
                    cx.edits.push(Edit::replace(
                        name.start_byte(),
                        name.end_byte(),
                        "compat_ring",
                        Rule::CompatLoader,
                    ));
                }
                "perf_buffer_opts" => st.explained.push((name.start_byte(), name.end_byte())),
                _ => {}
            }
        }
    }
    used
}

/// Where a skeleton is loaded: its type `S`, the variable, the called name, and the statement
/// (`S__load(X)`), or `X = S__open_and_load()` when `open_and_load`.
struct LoadSite {
    skel_type: String,
    var: String,
    call: (usize, usize),
    stmt: usize,
    open_and_load: bool,
}

/// For each skeleton type whose maps the buffers read: the type, the maps, and whether it is
/// loaded by `S__open_and_load()` (rewritten here into `S__open_pick_and_load()`);
/// `S__pick_buffers(X);` goes before each statement that calls `S__load(X)`. A buffer's
/// skeleton `X` is found by name among the loads, else it is the one skeleton the file loads
/// (a helper given the skeleton as a parameter). One loaded nowhere in the file is refused.
fn load_sites(cx: &mut Ctx, reads: &[Read]) -> Vec<(String, Vec<String>, bool)> {
    let src = cx.src();
    let mut sites: Vec<LoadSite> = Vec::new();
    for call in cx.of_kind("call_expression") {
        let Some(name) = c::call_name(call, src) else {
            continue;
        };
        let (s, var, open_and_load) = if let Some(s) = name.strip_suffix("__open_and_load") {
            let Some(var) = assigned_to(call, src) else {
                continue;
            };
            (s, var, true)
        } else if let Some(s) = name.strip_suffix("__load") {
            let Some(a) = c::arg_spans(call).first().copied() else {
                continue;
            };
            (s, c::strip_parens(&src[a.0..a.1]), false)
        } else {
            continue;
        };
        if s.starts_with("bpf_") || !c::is_ident(s) {
            continue;
        }
        let f = call.field("function").unwrap();
        sites.push(LoadSite {
            skel_type: s.to_string(),
            var: var.to_string(),
            call: (f.start_byte(), f.end_byte()),
            stmt: statement_of(call).start_byte(),
            open_and_load,
        });
    }
    let mut types: Vec<&str> = sites.iter().map(|l| l.skel_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    // (site indices, maps) per skeleton type.
    let mut picks: Vec<(String, Vec<String>, Vec<usize>)> = Vec::new();
    for r in reads {
        let by_name: Vec<usize> = (0..sites.len())
            .filter(|&k| sites[k].var == r.skel)
            .collect();
        let found = if by_name.is_empty() && types.len() == 1 {
            (0..sites.len()).collect()
        } else {
            by_name
        };
        let Some(&first) = found.first() else {
            let x = &r.skel;
            refuse(
                cx,
                r.at,
                format!(
                    "the skeleton `{x}` is not loaded in this file (`S__load({x})` or `{x} = S__open_and_load()`), where the kind of buffer must be picked before load"
                ),
            );
            continue;
        };
        let ty = sites[first].skel_type.clone();
        let k = match picks.iter().position(|p| p.0 == ty) {
            Some(k) => k,
            None => {
                picks.push((ty, Vec::new(), Vec::new()));
                picks.len() - 1
            }
        };
        if !picks[k].1.contains(&r.map) {
            picks[k].1.push(r.map.clone());
        }
        for f in found {
            if !picks[k].2.contains(&f) {
                picks[k].2.push(f);
            }
        }
    }
    let mut out = Vec::new();
    for (ty, mut maps, at) in picks {
        maps.sort();
        let mut open_and_load = false;
        for k in at {
            let l = &sites[k];
            if l.open_and_load {
                open_and_load = true;
                cx.edits.push(Edit::replace(
                    l.call.0,
                    l.call.1,
                    format!("{ty}__open_pick_and_load"),
                    Rule::CompatLoader,
                ));
            } else {
                let at = l.stmt;
                let indent = &src[line_start(src, at)..at];
                let sep = if indent.trim().is_empty() {
                    format!("\n{indent}")
                } else {
                    " ".to_string()
                };
                cx.edits.push(Edit::insert(
                    at,
                    format!("{ty}__pick_buffers({});{sep}", l.var),
                    Rule::CompatLoader,
                ));
            }
        }
        out.push((ty, maps, open_and_load));
    }
    out
}

/// The variable a call's result is assigned to or initialises: `x` of `x = f()` or
/// `struct s *x = f()`.
fn assigned_to<'a>(call: Node, src: &'a str) -> Option<&'a str> {
    let p = call.parent()?;
    match p.kind() {
        "assignment_expression" => Some(c::strip_parens(c::text(p.field("left")?, src))),
        "init_declarator" => Some(strip_ptr(p.field("declarator")?, src)),
        _ => None,
    }
}

/// The statement of a block that holds `n`.
fn statement_of(n: Node) -> Node {
    let mut cur = n;
    while let Some(p) = cur.parent() {
        if matches!(p.kind(), "compound_statement" | "translation_unit") {
            return cur;
        }
        cur = p;
    }
    cur
}

/// `S__pick_buffers()`: where the kernel has no ring buffer, each map a perf event array and
/// its flag set.
fn pick_buffers(s: &str, maps: &[String]) -> String {
    let mut body = String::new();
    for m in maps {
        body.push_str(&format!(
            "\tif (compat_ring__pick(obj->maps.{m}))\n\t\tobj->rodata->{m}{FLAG_SUFFIX} = 1;\n"
        ));
    }
    format!("static void {s}__pick_buffers(struct {s} *obj)\n{{\n{body}}}\n\n")
}

/// `S__open_and_load()` with the buffers picked between open and load.
fn open_pick_and_load(s: &str) -> String {
    format!(
        "static struct {s} *{s}__open_pick_and_load(void)\n{{\n\
         \tstruct {s} *obj = {s}__open();\n\tint err;\n\n\
         \tif (!obj)\n\t\treturn NULL;\n\
         \t{s}__pick_buffers(obj);\n\
         \terr = {s}__load(obj);\n\
         \tif (err) {{\n\t\t{s}__destroy(obj);\n\t\terrno = -err;\n\t\treturn NULL;\n\t}}\n\
         \treturn obj;\n}}\n\n"
    )
}

/// The shim: its state, the pick, and the calls the file uses; where a lost callback is kept
/// (`counted`), the lost counter's watcher (`user::lost_counter`) and the ring path feeding it.
fn shim(used: &[&str], counted: bool) -> String {
    let (lost_note, member) = if counted {
        (
            "the lost callback is told after each\n * poll what the ring could not take (counted by the BPF program)",
            "\tstruct lost_counter lost;\n",
        )
    } else {
        ("the lost callback is not\n * called", "")
    };
    let mut text = if counted {
        WATCHER.to_string()
    } else {
        String::new()
    };
    text.push_str(&format!(
        "/*\n * The ring buffer where the kernel has one (Linux 5.8 and later, or a backport), else the\n * perf buffer, behind the perf buffer's calls and callbacks (added by bpf-migrate --strategy\n * compat). On the ring path the sample callback is given CPU -1, and {lost_note}.\n */\n\
         struct compat_ring {{\n\tstruct perf_buffer *pb;\n\tstruct ring_buffer *rb;\n\tperf_buffer_sample_fn sample_cb;\n\tvoid *ctx;\n{member}}};\n\n"
    ));
    text.push_str(SHIM);
    if counted {
        text.push_str(NEW_COUNTED);
    }
    // The ring's result, checked for new losses first where they are counted.
    let checked = |call: &str| {
        if counted {
            format!("lost_counter__check(&b->lost, {call})")
        } else {
            call.to_string()
        }
    };
    for call in ["poll", "consume", "epoll_fd", "free"] {
        if !used.contains(&call) {
            continue;
        }
        match call {
            "poll" => text.push_str(&format!(
                "static int compat_ring__poll(struct compat_ring *b, int timeout_ms)\n{{\n\
                 \tif (b->pb)\n\t\treturn perf_buffer__poll(b->pb, timeout_ms);\n\
                 \treturn {};\n}}\n\n",
                checked("ring_buffer__poll(b->rb, timeout_ms)")
            )),
            "consume" => text.push_str(&format!(
                "/* 0 or an error, as perf_buffer__consume() (ring_buffer__consume() counts records). */\n\
                 static int compat_ring__consume(struct compat_ring *b)\n{{\n\tint n;\n\n\
                 \tif (b->pb)\n\t\treturn perf_buffer__consume(b->pb);\n\
                 \tn = {};\n\treturn n < 0 ? n : 0;\n}}\n\n",
                checked("ring_buffer__consume(b->rb)")
            )),
            "epoll_fd" => text.push_str(EPOLL_FD),
            "free" => text.push_str(&format!(
                "static void compat_ring__free(struct compat_ring *b)\n{{\n\
                 \tif (!b)\n\t\treturn;\n\
                 \tperf_buffer__free(b->pb);\n\tring_buffer__free(b->rb);\n{}\tfree(b);\n}}\n\n",
                if counted {
                    "\tfree(b->lost.seen);\n\tfree(b->lost.now);\n"
                } else {
                    ""
                }
            )),
            _ => {}
        }
    }
    text
}

const SHIM: &str = r#"static int compat_ring__use_perf;

/* Before load: where the kernel has no ring buffer, makes `map` a perf event array. */
static int compat_ring__pick(struct bpf_map *map)
{
	compat_ring__use_perf = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1;
	if (!compat_ring__use_perf)
		return 0;
	bpf_map__set_type(map, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	bpf_map__set_key_size(map, sizeof(int));
	bpf_map__set_value_size(map, sizeof(int));
	bpf_map__set_max_entries(map, 0);
	return 1;
}

static int compat_ring__sample(void *ctx, void *data, size_t size)
{
	struct compat_ring *b = ctx;

	b->sample_cb(b->ctx, -1, data, size);
	return 0;
}

static struct compat_ring *compat_ring__new(int map_fd, size_t page_cnt,
					    perf_buffer_sample_fn sample_cb,
					    perf_buffer_lost_fn lost_cb, void *ctx,
					    const struct perf_buffer_opts *opts)
{
	struct compat_ring *b = calloc(1, sizeof(*b));
	int err;

	if (!b)
		return NULL;
	b->sample_cb = sample_cb;
	b->ctx = ctx;
	if (compat_ring__use_perf)
		b->pb = perf_buffer__new(map_fd, page_cnt, sample_cb, lost_cb, ctx, opts);
	else
		b->rb = ring_buffer__new(map_fd, compat_ring__sample, b, NULL);
	if (!b->pb && !b->rb) {
		err = errno;
		free(b);
		errno = err;
		return NULL;
	}
	return b;
}

"#;

const NEW_COUNTED: &str = r#"/* compat_ring__new(), whose ring path passes what the ring could not take, counted in the map
 * of `lost_fd`, to the lost callback after each poll. */
static struct compat_ring *compat_ring__new_counted(int lost_fd, int map_fd, size_t page_cnt,
						    perf_buffer_sample_fn sample_cb,
						    perf_buffer_lost_fn lost_cb, void *ctx,
						    const struct perf_buffer_opts *opts)
{
	struct compat_ring *b = compat_ring__new(map_fd, page_cnt, sample_cb, lost_cb, ctx, opts);

	if (b && b->rb && lost_cb)
		lost_counter__watch(&b->lost, lost_fd, lost_cb, ctx, b->rb);
	return b;
}

"#;

const EPOLL_FD: &str = r#"static int compat_ring__epoll_fd(const struct compat_ring *b)
{
	if (b->pb)
		return perf_buffer__epoll_fd(b->pb);
	return ring_buffer__epoll_fd(b->rb);
}

"#;

#[cfg(test)]
mod tests {
    use super::super::testing::{BPF, PERF_CALLBACK, perf};
    use super::skeleton_of;
    use crate::engine::testkit::run;
    use crate::engine::{Lost, Options, Strategy};
    use crate::report::Severity;
    use crate::rules::Rule;

    const CREATE: &str = "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n";

    fn compat() -> Options {
        Options {
            strategy: Strategy::Compat,
            ..Options::default()
        }
    }

    /// The program `x.bpf.c` (`bpf`) and its loader (`top` before `main`, the buffer made with
    /// `create`) migrated with --strategy compat: the new loader and BPF source, or the
    /// messages of the refusals.
    fn migrate(bpf: &str, top: &str, create: &str) -> Result<(String, String), Vec<String>> {
        let before = perf("", top, "", create);
        let (changed, diags) = run(&[("x.bpf.c", bpf), ("x.c", &before)], &compat());
        let refused: Vec<String> = diags
            .iter()
            .filter(|d| d.severity == Severity::Manual)
            .inspect(|d| assert_eq!(d.rule, Rule::CompatUnsupported, "{d:?}"))
            .map(|d| d.message.clone())
            .collect();
        if !refused.is_empty() {
            assert!(changed.is_empty());
            return Err(refused);
        }
        Ok((changed["x.c"].clone(), changed["x.bpf.c"].clone()))
    }

    #[test]
    fn the_loader_keeps_its_callbacks_and_picks_between_open_and_load() {
        let (c, bpf) = migrate(BPF, PERF_CALLBACK, CREATE).unwrap();
        // The callback is the perf buffer's still.
        assert!(c.contains(PERF_CALLBACK), "{c}");
        assert!(c.contains("\tpb = compat_ring__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n"), "{c}");
        assert!(c.contains("\tstruct compat_ring *pb;\n"), "{c}");
        assert!(
            c.contains("compat_ring__poll(pb, 100)") && c.contains("compat_ring__free(pb);"),
            "{c}"
        );
        // x_bpf__open_and_load() opens, picks and loads.
        assert!(c.contains("\tskel = x_bpf__open_pick_and_load();\n"), "{c}");
        assert!(c.contains("static void x_bpf__pick_buffers(struct x_bpf *obj)\n{\n\tif (compat_ring__pick(obj->maps.events))\n\t\tobj->rodata->events_use_perf = 1;\n}\n"), "{c}");
        // Only the calls the file makes are written.
        assert!(
            !c.contains("compat_ring__consume") && !c.contains("compat_ring__epoll_fd"),
            "{c}"
        );
        assert!(
            c.contains("#include <stdlib.h>\n#include <errno.h>\n#include <bpf/libbpf.h>"),
            "{c}"
        );
        assert!(
            bpf.contains("const volatile int events_use_perf = 0;"),
            "{bpf}"
        );
        assert!(
            bpf.contains("\tevents_output(ctx, &pid, sizeof(pid));\n"),
            "{bpf}"
        );
        assert!(bpf.contains("\t\treturn bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, data, size);\n\treturn bpf_ringbuf_output(&events, data, size, 0);\n"), "{bpf}");
    }

    /// A map passed in as an fd from where the skeleton is: its counter cannot be named at
    /// the creation, so the lost callback serves the perf path only, with a note, and the
    /// BPF side gets no counter.
    #[test]
    fn a_lost_callback_far_from_the_skeleton_serves_the_perf_path_only() {
        const LOST: &str = "static void handle_lost(void *ctx, int cpu, __u64 cnt)\n{\n}\n";
        const OPEN: &str = "static struct perf_buffer *open_buf(int fd)\n{\n\treturn perf_buffer__new(fd, 8, handle_event, handle_lost, NULL, NULL);\n}\n";
        let top = format!("{PERF_CALLBACK}{LOST}{OPEN}");
        let create = "\tpb = open_buf(bpf_map__fd(skel->maps.events));\n";
        let before = perf("", &top, "", create);
        let (changed, diags) = run(&[("x.bpf.c", BPF), ("x.c", &before)], &compat());
        let c = &changed["x.c"];
        assert!(
            c.contains("\treturn compat_ring__new(fd, 8, handle_event, handle_lost, NULL, NULL);"),
            "{c}"
        );
        assert!(!changed["x.bpf.c"].contains("events_lost"));
        assert!(
            diags.iter().any(|d| d.rule == Rule::CompatLoader
                && d.message.contains("is called on the perf path only")),
            "{diags:?}"
        );
    }

    #[test]
    fn a_kept_lost_callback_is_fed_on_the_ring_path() {
        const LOST: &str = "static void handle_lost(void *ctx, int cpu, __u64 cnt)\n{\n\tfprintf(stderr, \"lost %llu\\n\", cnt);\n}\n";
        let top = format!("{PERF_CALLBACK}{LOST}");
        let create = CREATE.replace("handle_event, NULL,", "handle_event, handle_lost,");
        let (c, bpf) = migrate(BPF, &top, &create).unwrap();
        assert!(
            c.contains("\tpb = compat_ring__new_counted(bpf_map__fd(skel->maps.events_lost),"),
            "{c}"
        );
        assert!(c.contains("\tstruct lost_counter lost;\n};"), "{c}");
        assert!(
            c.contains(
                "return lost_counter__check(&b->lost, ring_buffer__poll(b->rb, timeout_ms));"
            ),
            "{c}"
        );
        assert!(c.contains("\tfree(b->lost.seen);"), "{c}");
        assert!(c.contains("#include <bpf/bpf.h>"), "{c}");
        // The counter, then the helper whose ring path counts into it.
        let counter = bpf
            .find("} events_lost SEC(\".maps\");")
            .expect("the counter");
        let helper = bpf
            .find("static __always_inline long events_output")
            .expect("the helper");
        assert!(counter < helper, "{bpf}");
        assert!(
            bpf.contains(
                "\treturn events_lost_count(bpf_ringbuf_output(&events, data, size, 0));\n"
            ),
            "{bpf}"
        );
        // --lost drop: the perf path keeps the callback, the ring path reports nothing.
        let before = perf("", &top, "", &create);
        let opts = Options {
            lost: Lost::Drop,
            ..compat()
        };
        let (changed, _) = run(&[("x.bpf.c", BPF), ("x.c", &before)], &opts);
        assert!(changed["x.c"].contains(
            "compat_ring__new(bpf_map__fd(skel->maps.events), 8, handle_event, handle_lost,"
        ));
        assert!(!changed["x.bpf.c"].contains("events_lost"));
    }

    #[test]
    fn a_separate_load_gets_the_pick_before_its_statement() {
        let before = perf("", PERF_CALLBACK, "", CREATE).replace(
            "\tskel = x_bpf__open_and_load();\n",
            "\tskel = x_bpf__open();\n\tif (!skel)\n\t\treturn 1;\n\tif (x_bpf__load(skel))\n\t\treturn 1;\n",
        );
        let (changed, diags) = run(&[("x.bpf.c", BPF), ("x.c", &before)], &compat());
        assert!(
            !diags.iter().any(|d| d.severity == Severity::Manual),
            "{diags:?}"
        );
        let c = &changed["x.c"];
        assert!(
            c.contains("\tx_bpf__pick_buffers(skel);\n\tif (x_bpf__load(skel))\n"),
            "{c}"
        );
        assert!(!c.contains("open_pick_and_load"), "{c}");
    }

    #[test]
    fn what_it_cannot_make_work_on_both_kernels_is_refused() {
        for (top, create, says) in [
            (
                PERF_CALLBACK.replace("*(__u32 *)data", "*(__u32 *)data + cpu"),
                CREATE.to_string(),
                "reads the CPU (`cpu`)",
            ),
            (
                String::new(),
                CREATE.to_string(),
                "the sample callback `handle_event` is not defined in this file",
            ),
            (
                PERF_CALLBACK.to_string(),
                CREATE.replace(
                    "bpf_map__fd(skel->maps.events)",
                    "bpf_object__find_map_fd_by_name(skel->obj, \"events\")",
                ),
                "is not read as a skeleton's field",
            ),
            (
                PERF_CALLBACK.to_string(),
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, &opts);\n".to_string(),
                "not the six of libbpf 1.x",
            ),
        ] {
            let refused = migrate(BPF, &top, &create).unwrap_err();
            assert!(
                refused.iter().any(|m| m.contains(says)),
                "{says}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_skeleton_loaded_elsewhere_is_refused() {
        let before = perf("", PERF_CALLBACK, "", CREATE).replace(
            "\tskel = x_bpf__open_and_load();\n",
            "\tskel = open_elsewhere();\n",
        );
        let (changed, diags) = run(&[("x.bpf.c", BPF), ("x.c", &before)], &compat());
        assert!(changed.is_empty());
        assert!(
            diags.iter().any(|d| d.rule == Rule::CompatUnsupported
                && d.message
                    .contains("the skeleton `skel` is not loaded in this file")),
            "{diags:?}"
        );
    }

    #[test]
    fn the_bpf_side_alone_or_with_its_names_taken_is_refused() {
        let (changed, diags) = run(&[("x.bpf.c", BPF)], &compat());
        assert!(changed.is_empty());
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("without its reader")),
            "{diags:?}"
        );
        let taken = BPF.replace("char LICENSE", "static int events_output;\n\nchar LICENSE");
        let refused = migrate(&taken, PERF_CALLBACK, CREATE).unwrap_err();
        assert!(
            refused
                .iter()
                .any(|m| m.contains("the name `events_output` it needs is taken")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let (c, bpf) = migrate(BPF, PERF_CALLBACK, CREATE).unwrap();
        for opts in [compat(), Options::default()] {
            let (changed, diags) = run(&[("x.bpf.c", &bpf), ("x.c", &c)], &opts);
            assert!(changed.is_empty(), "{:?}", changed.keys());
            assert!(
                !diags.iter().any(|d| d.severity == Severity::Manual),
                "{diags:?}"
            );
        }
    }

    #[test]
    fn the_skeleton_is_the_path_before_its_maps() {
        let of = |e: &str| skeleton_of(e, "events");
        assert_eq!(
            of("bpf_map__fd(app.skel->maps.events)"),
            Some(("app.skel".into(), "->maps."))
        );
        assert_eq!(of("obj.maps.events"), Some(("obj".into(), ".maps.")));
        assert_eq!(of("skel->maps.events_x"), None);
        assert_eq!(of("maps.events"), None);
    }
}
