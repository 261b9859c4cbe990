//! `perf_buffer__new()`, in the libbpf 1.x form `(fd, pages, sample, lost, ctx, opts)` or the
//! old `(fd, pages, &opts)`, becomes `ring_buffer__new(fd, sample, ctx, NULL)`; the map it
//! reads becomes a consumer for linking.

use tree_sitter::Node;

use super::super::context::{Analysis, Consumer, Ctx, Report};
use super::super::options::Lost;
use super::maps::{FIRST_MAP, map_other_uses, resolve_map};
use super::{SampleCallback, State, lost_counter, null_checks, opts, pages};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;

/// What the buffer hands its records to: the sample and lost callbacks and the context, as
/// written.
struct Callbacks {
    sample: String,
    lost: String,
    ctx: String,
}

pub(super) fn new_site(cx: &mut Ctx, st: &mut State, call: Node, out: &mut Analysis) {
    let src = cx.src();
    let args = c::arg_spans(call);
    let at = call.start_byte();
    if cx.has_error_in(call.start_byte(), call.end_byte()) {
        cx.report(
            at,
            Rule::UnsupportedForm,
            "this perf_buffer__new() call does not parse as C",
            "check the macros around this call",
        );
        return;
    }
    // Where this call's pieces may be named without counting as other uses.
    let mut creation: Vec<(usize, usize)> = vec![(call.start_byte(), call.end_byte())];
    let Some(Callbacks { sample, lost, ctx }) = callbacks_of(cx, st, call, &args, &mut creation)
    else {
        return;
    };
    let Some((map, fd)) = map_of(cx, call, args[0]) else {
        return;
    };
    if !c::is_ident(&sample) {
        cx.report(
            at,
            Rule::CallbackForm,
            format!("the sample callback `{sample}` is not a function name"),
            "bpf-migrate rewrites callbacks defined as functions in the same file",
        );
        return;
    }
    match st.samples.iter_mut().find(|s| s.name == sample) {
        Some(s) => {
            s.creation.extend(creation.iter().copied());
            if !s.maps.contains(&map) {
                s.maps.push(map.clone());
            }
        }
        None => st.samples.push(SampleCallback {
            name: sample.clone(),
            creation: creation.clone(),
            at,
            maps: vec![map.clone()],
        }),
    }
    let ring = c::layout_call(
        src,
        call.start_byte(),
        call.end_byte(),
        "ring_buffer__new",
        &[fd, sample, ctx.clone(), "NULL".to_string()],
    );
    let mut text = ring.clone();
    let mut counted = false;
    if !c::is_null(&lost) {
        let lost_at = src[at..call.end_byte()]
            .find(lost.as_str())
            .map_or(at, |k| at + k);
        let watched = match cx.opts.lost {
            Lost::Count => Some(lost_counter::watch(
                cx,
                st,
                (&map, args[0]),
                (&lost, &ctx),
                &ring,
                (call, handle_of(call, src)),
            )),
            Lost::Drop => None,
        };
        match watched {
            Some(Ok(t)) => {
                text = t;
                counted = true;
                cx.diag(
                    lost_at,
                    Rule::LostCounter,
                    format!(
                        "the lost-sample callback `{lost}` is kept: the BPF program counts, per CPU, the records `{map}` could not take (a per-CPU array `{map}{}`), and after each poll the loader passes what is new to `{lost}`",
                        lost_counter::MAP_SUFFIX
                    ),
                    Some("the counts differ from the perf buffer's: one ring shared by all CPUs fills at other times than a buffer per CPU"),
                );
            }
            why => {
                if let Some(Err(why)) = why {
                    st.lost_why.push((lost.clone(), why));
                }
                match st.lost.iter_mut().find(|(n, _)| *n == lost) {
                    Some((_, spans)) => spans.extend(creation.iter().copied()),
                    None => st.lost.push((lost, creation.clone())),
                }
            }
        }
    }

    cx.edits.push(Edit::replace(
        call.start_byte(),
        call.end_byte(),
        text,
        Rule::PerfBufferNew,
    ));
    if let Some(h) = handle_of(call, src) {
        null_checks::null_checks(cx, st, call, &h);
    }
    let pages = pages::page_count(cx, st, call, args[1]);
    out.consumers.push(Consumer {
        map,
        offset: at,
        pages,
        lost_counted: counted,
        bpf2go: false,
    });
}

/// The callbacks and context of either form; None (after a refusal) when options a ring
/// buffer does not take are given, or the call has neither form's arguments.
fn callbacks_of(
    cx: &mut Ctx,
    st: &mut State,
    call: Node,
    args: &[(usize, usize)],
    creation: &mut Vec<(usize, usize)>,
) -> Option<Callbacks> {
    let src = cx.src();
    let argt = |i: usize| &src[args[i].0..args[i].1];
    match args.len() {
        6 => {
            if !c::is_null(argt(5)) {
                cx.report(
                    args[5].0,
                    Rule::OptsUnsupported,
                    format!("perf_buffer__new() is given options (`{}`) that a ring buffer does not take", argt(5)),
                    "perf_buffer_opts such as sample_period have no ring buffer equivalent; migrate by hand",
                );
                return None;
            }
            Some(Callbacks {
                sample: argt(2).to_string(),
                lost: argt(3).to_string(),
                ctx: argt(4).to_string(),
            })
        }
        3 => {
            let o = opts::old_opts(cx, st, call, argt(2), args[2].0)?;
            creation.extend(o.spans);
            Some(Callbacks {
                sample: o.sample,
                lost: o.lost,
                ctx: o.ctx,
            })
        }
        n => {
            cx.report(
                call.start_byte(),
                Rule::UnsupportedForm,
                format!("perf_buffer__new() with {n} arguments is neither the libbpf 1.x nor the old form"),
                "migrate by hand",
            );
            None
        }
    }
}

/// The map the fd argument at `fd_at` reads, with any other use of it in the loader refused,
/// and the argument's text for the new call; None (after a refusal) when it cannot be told.
fn map_of(cx: &mut Ctx, call: Node, fd_at: (usize, usize)) -> Option<(String, String)> {
    let src = cx.src();
    let fd = &src[fd_at.0..fd_at.1];
    let Some((map, fd_spans)) = resolve_map(cx, fd, fd_at.0, call, 0) else {
        cx.report(
            fd_at.0,
            Rule::UnresolvedMap,
            format!("cannot tell which map `{fd}` refers to"),
            "bpf-migrate follows skel->maps.NAME, bpf_object__find_map_fd_by_name(obj, \"NAME\"), the first map of a one-map object (bpf_object__next_map(obj, NULL)) and variables set from them in the same file",
        );
        return None;
    };
    let mut fd = fd.to_string();
    if map == FIRST_MAP {
        if let Some((s, e, text)) = by_name(cx, fd_spans[0]) {
            if s >= fd_at.0 && e <= fd_at.1 {
                // In the argument itself, which the new call's text carries.
                fd.replace_range(s - fd_at.0..e - fd_at.0, &text);
            } else {
                cx.edits
                    .push(Edit::replace(s, e, text, Rule::PerfBufferNew));
            }
        }
    } else {
        map_other_uses(cx, &map, &fd_spans);
    }
    Some((map, fd))
}

/// `bpf_object__next_map(obj, NULL)` (or `bpf_map__next(NULL, obj)`) at `span` finds the map
/// by the name linking gives it (`link::first_maps`): the migrated program may define more
/// maps (a lost counter, a packet's scratch buffer), and which comes first is clang's choice.
fn by_name(cx: &Ctx, span: (usize, usize)) -> Option<(usize, usize, String)> {
    let src = cx.src();
    let found = cx.of_kind("call_expression").iter().find_map(|&n| {
        let within = n.start_byte() >= span.0 && n.end_byte() <= span.1;
        let obj = match c::call_name(n, src) {
            Some("bpf_object__next_map") => 0,
            Some("bpf_map__next") => 1,
            _ => return None,
        };
        let &(os, oe) = c::arg_spans(n).get(obj).filter(|_| within)?;
        Some((n.start_byte(), n.end_byte(), &src[os..oe]))
    });
    let (s, e, obj) = found?;
    Some((
        s,
        e,
        format!("bpf_object__find_map_by_name({obj}, \"{FIRST_MAP}\")"),
    ))
}

/// The expression the new buffer is stored in: `pb` in `pb = perf_buffer__new(...)`.
fn handle_of(call: Node, src: &str) -> Option<String> {
    let mut p = call.parent()?;
    while p.kind() == "parenthesized_expression" || p.kind() == "cast_expression" {
        p = p.parent()?;
    }
    match p.kind() {
        "assignment_expression" => p.field("left").map(|l| c::text(l, src).to_string()),
        "init_declarator" => {
            let mut d = p.field("declarator")?;
            while d.kind() == "pointer_declarator" {
                d = d.field("declarator")?;
            }
            Some(c::text(d, src).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        BPF, PERF_CALLBACK, PERF_POLL, RING_CALLBACK, RING_POLL, bpf_two_maps, head,
    };
    use crate::engine::testkit::{check_migrate, check_refused};
    use crate::rules::Rule;

    /// A loader in the libbpf 1.x style, with a context `env`: `main` runs `start`, opens the
    /// skeleton, declares its buffer `pb` where `make` makes it, polls it with `poll` and
    /// destroys the skeleton.
    fn libbpf_1(callback: &str, start: &str, make: &str, poll: &str) -> String {
        format!(
            "{}struct env {{\n\tint verbose;\n}} env;\n\n{callback}\n\
             int main(void)\n{{\n{start}\tstruct x_bpf *skel = x_bpf__open_and_load();\n\
             \tif (!skel || x_bpf__attach(skel))\n\t\treturn 1;\n\
             {make}\tif (!pb)\n\t\treturn 1;\n{poll}\tx_bpf__destroy(skel);\n\treturn 0;\n}}\n",
            head("")
        )
    }

    /// `perf_buffer__new()` over `events`, 64 pages, with the arguments after those.
    fn perf_new(args: &str) -> String {
        format!(
            "\tstruct perf_buffer *pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 64,\n\
             \t\t\t\t\t\t  {args});\n"
        )
    }

    /// A libbpf 1.x loader whose `perf_buffer__new()` takes `args` after the page count.
    fn before(args: &str) -> String {
        libbpf_1(PERF_CALLBACK, "", &perf_new(args), PERF_POLL)
    }

    #[test]
    fn migrates_the_libbpf_1_form() {
        let after = libbpf_1(
            RING_CALLBACK,
            "",
            "\tstruct ring_buffer *pb = ring_buffer__new(bpf_map__fd(skel->maps.events),\n\
             \t\t\t\t\t\t  handle_event, &env, NULL);\n",
            RING_POLL,
        );
        check_migrate(
            &[
                ("x.bpf.c", BPF),
                ("x.c", &before("handle_event, NULL, &env, NULL")),
            ],
            &[("x.c", &after)],
        );
    }

    #[test]
    fn refuses_options_a_ring_buffer_does_not_take() {
        let before = libbpf_1(
            PERF_CALLBACK,
            "\tLIBBPF_OPTS(perf_buffer_opts, pb_opts, .sample_period = 1);\n",
            &perf_new("handle_event, NULL, &env, &pb_opts"),
            PERF_POLL,
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::OptsUnsupported,
            "is given options (`&pb_opts`) that a ring buffer does not take",
        );
    }

    #[test]
    fn refuses_another_number_of_arguments() {
        check_refused(
            &[
                ("x.bpf.c", BPF),
                ("x.c", &before("handle_event, NULL, &env")),
            ],
            Rule::UnsupportedForm,
            "perf_buffer__new() with 5 arguments",
        );
    }

    #[test]
    fn refuses_a_call_that_does_not_parse() {
        check_refused(
            &[
                ("x.bpf.c", BPF),
                ("x.c", &before("handle_event, NULL, &env, NULL, ")),
            ],
            Rule::UnsupportedForm,
            "this perf_buffer__new() call does not parse as C",
        );
    }

    #[test]
    fn one_callback_serving_several_buffers_is_rewritten_once() {
        // Two maps, one sample callback for both (a tool that watches several streams).
        let bpf = bpf_two_maps();
        let make = |kind: &str, new: &str, args: &str| {
            format!(
                "\tstruct {kind} *pb = {new}(bpf_map__fd(skel->maps.events), {args});\n\
                 \tstruct {kind} *pb2 = {new}(bpf_map__fd(skel->maps.errors), {args});\n\
                 \tif (!pb2)\n\t\treturn 1;\n"
            )
        };
        let before = libbpf_1(
            PERF_CALLBACK,
            "",
            &make(
                "perf_buffer",
                "perf_buffer__new",
                "64, handle_event, NULL, &env, NULL",
            ),
            &format!("{PERF_POLL}\tperf_buffer__free(pb2);\n"),
        );
        let after = libbpf_1(
            RING_CALLBACK,
            "",
            &make(
                "ring_buffer",
                "ring_buffer__new",
                "handle_event, &env, NULL",
            ),
            &format!("{RING_POLL}\tring_buffer__free(pb2);\n"),
        );
        check_migrate(&[("x.bpf.c", &bpf), ("x.c", &before)], &[("x.c", &after)]);
    }

    #[test]
    fn refuses_a_sample_callback_that_is_not_a_name() {
        check_refused(
            &[
                ("x.bpf.c", BPF),
                (
                    "x.c",
                    &before("env.verbose ? handle_event : NULL, NULL, &env, NULL"),
                ),
            ],
            Rule::CallbackForm,
            "is not a function name",
        );
    }
}
