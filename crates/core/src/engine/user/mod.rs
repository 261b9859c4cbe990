//! libbpf C user space: `perf_buffer__new` (libbpf 1.x and the old `perf_buffer_opts` form),
//! the other `perf_buffer__*` calls, `struct perf_buffer`, and the sample and lost callbacks.
//!
//! `analyze` is the dispatch; each site has a handler of its own:
//!
//! | module | site |
//! |---|---|
//! | `new_site` | `perf_buffer__new()` in either form, becoming `ring_buffer__new()` |
//! | `opts` | the old form's `struct perf_buffer_opts` |
//! | `maps` | the map an fd expression reads; the BPF sources a loader names |
//! | `callbacks` | the sample callback's signature and body |
//! | `lost` | the lost-sample callback, dropped (`--lost drop`, or where it cannot be fed) |
//! | `lost_counter` | the lost-sample callback kept, fed from a counter the BPF side keeps |
//! | `null_checks` | `libbpf_get_error()`, `IS_ERR()`, `PTR_ERR()` on the new buffer |
//! | `pages` | the page count: its value, a run-time count, `#define`s left unused |
//! | `api` | `perf_buffer__poll/consume/epoll_fd/free`, `struct perf_buffer`, the APIs with no equivalent |
//! | `messages` | printed strings that name the perf buffer |
//!
//! `syntax` holds the helpers several of them share.

mod api;
mod callbacks;
mod compat;
mod lost;
mod lost_counter;
mod maps;
pub(in crate::engine) mod messages;
mod new_site;
mod null_checks;
mod opts;
mod pages;
mod syntax;

use std::collections::HashSet;

pub use lost_counter::MAP_SUFFIX as LOST_MAP_SUFFIX;
pub use maps::FIRST_MAP;

use super::context::{Analysis, CpuUse, Ctx, Report};
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;

#[derive(Default)]
struct State {
    explained: Vec<(usize, usize)>,
    done_callbacks: HashSet<String>,
    /// Sample callbacks that read the CPU, with the map each reads.
    cpu_uses: Vec<CpuUse>,
    needs_errno: bool,
    /// Page-count arguments of the perf buffers migrated.
    page_args: Vec<(usize, usize)>,
    /// Sample callbacks, the creation calls that pass them and the first of those: one
    /// callback may serve several perf buffers, and is rewritten once all of them are seen.
    samples: Vec<SampleCallback>,
    /// Declarations of old-form perf buffer options (`opts`).
    opts_decls: Vec<opts::OptsDecl>,
    /// Lost callbacks and the creation calls that pass them, likewise.
    lost: Vec<(String, Vec<(usize, usize)>)>,
    /// Perf buffers whose lost callback is kept, fed by a counter (`lost_counter`).
    counters: Vec<lost_counter::Counter>,
    /// Why a lost callback (by name) is dropped although `--lost count` asked to keep it.
    lost_why: Vec<(String, String)>,
}

/// A sample callback, where the perf buffers that take it are created, and the first of them.
struct SampleCallback {
    name: String,
    creation: Vec<(usize, usize)>,
    at: usize,
    /// The maps of those perf buffers.
    maps: Vec<String>,
}

pub fn analyze(cx: &mut Ctx, out: &mut Analysis) {
    let src = cx.src();
    maps::collect_bpf_sources(cx, out);
    // A loader --strategy compat migrated: its shim calls the perf buffer on purpose.
    if super::compat::has_loader_shim(src) || !is_consumer(cx) || api::created_elsewhere(cx) {
        return;
    }
    let mut st = State::default();
    if cx.opts.strategy == super::Strategy::Compat {
        compat::analyze(cx, &mut st, out);
        return;
    }
    creation_sites(cx, &mut st, out);
    opts::declarations_left(cx, &mut st);
    for s in std::mem::take(&mut st.samples) {
        callbacks::sample_callback(cx, &mut st, &s.name, &s.creation, s.at, &s.maps);
    }
    for (name, creation) in std::mem::take(&mut st.lost) {
        lost::lost_callback(cx, &mut st, &name, &creation);
    }
    api::rename_calls(cx, &mut st);
    lost_counter::add_watcher(cx, &st);
    api::rename_struct_tags(cx, &mut st);
    messages::messages(cx);
    pages::unused_page_defines(cx, &st);
    if st.needs_errno && !src.contains("<errno.h>") {
        null_checks::add_errno_include(cx);
    }
    account_triggers(cx, &st);
    out.cpu_uses = std::mem::take(&mut st.cpu_uses);
}

/// Only a file that calls the perf buffer API is a consumer; others (vmlinux.h, with the
/// kernel's own struct perf_buffer) are left alone. A header that declares the API (libbpf.h
/// vendored into a project) is the library, not a consumer.
fn is_consumer(cx: &Ctx) -> bool {
    let src = cx.src();
    let toks = cx.tokens();
    toks.iter()
        .any(|&(t, s, e)| t == Tok::Ident && src[s..e].starts_with("perf_buffer__"))
        && !toks.iter().any(|&(t, s, e)| {
            t == Tok::Ident
                && &src[s..e] == "perf_buffer__new"
                && c::is_declared_name(cx.root(), s, e)
        })
}

/// The calls that create a perf buffer, and those with no ring buffer equivalent.
fn creation_sites(cx: &mut Ctx, st: &mut State, out: &mut Analysis) {
    let src = cx.src();
    for call in cx.of_kind("call_expression") {
        let Some(name) = c::call_name(call, src) else {
            continue;
        };
        if name == "perf_buffer__new" {
            let f = call.field("function").unwrap();
            st.explained.push((f.start_byte(), f.end_byte()));
            new_site::new_site(cx, st, call, out);
        } else if api::NO_EQUIVALENT.contains(&name) {
            api::no_equivalent(cx, st, call, name);
        }
    }
}

/// Every perf_buffer identifier must have been explained by a site above.
fn account_triggers(cx: &mut Ctx, st: &State) {
    let src = cx.src();
    let toks = cx.tokens();
    for &(t, s, e) in toks {
        if t != Tok::Ident {
            continue;
        }
        let w = &src[s..e];
        let is_struct_tag = w == "perf_buffer"
            && toks
                .iter()
                .rev()
                .find(|x| x.2 <= s && x.0 != Tok::Comment)
                .is_some_and(|x| &src[x.1..x.2] == "struct");
        // `struct perf_buffer { ... }`: the kernel's own struct of that name (vmlinux.h).
        let defines_struct = is_struct_tag
            && cx
                .root()
                .descendant_for_byte_range(s, e)
                .and_then(|n| n.parent())
                .is_some_and(|p| p.kind() == "struct_specifier" && p.field("body").is_some());
        // libbpf's names: `perf_buffer__*` and its types; not a program's own
        // `perf_buffer_create()` helper.
        let libbpf_name = w.starts_with("perf_buffer__")
            || matches!(
                w,
                "perf_buffer_opts"
                    | "perf_buffer_raw_opts"
                    | "perf_buffer_sample_fn"
                    | "perf_buffer_lost_fn"
                    | "perf_buffer_event_fn"
            );
        if (libbpf_name || is_struct_tag)
            && !defines_struct
            && !st.explained.iter().any(|&(a, b)| s >= a && e <= b)
            && !c::is_declared_name(cx.root(), s, e)
        {
            cx.report(
                s,
                Rule::UnsupportedForm,
                format!("`{w}` is used in a form bpf-migrate does not understand"),
                "migrate this use by hand, or rewrite it in the plain libbpf form and run bpf-migrate again",
            );
        }
    }
}

/// The `#include <H>` lines of `headers` (H, line) the file lacks, before libbpf's header, else
/// before its first include.
fn add_includes(cx: &mut Ctx, headers: &[(&str, &str)], rule: Rule) {
    let src = cx.src();
    let mut includes = String::new();
    for (h, line) in headers {
        if !src.contains(&format!("<{h}>")) {
            includes.push_str(line);
        }
    }
    if !includes.is_empty() {
        let all = cx.of_kind("preproc_include");
        let anchor = all
            .iter()
            .find(|n| c::text(**n, src).contains("bpf/libbpf.h"))
            .or(all.first());
        let at = anchor.map_or(0, |n| crate::source::line_start(src, n.start_byte()));
        cx.edits.push(crate::edit::Edit::insert(at, includes, rule));
    }
}

/// For the handlers' unit tests: their loaders `x.c`, built from the parts a test is about
/// (`loader`, `perf` and `ring`, with the usual callback, declarations and polling loop); the
/// BPF side of their programs (a perf event array `events` and its output call, as those
/// loaders, including `x.skel.h`, expect it), migrated; and a check of the notes the testkit
/// leaves aside.
#[cfg(test)]
pub(in crate::engine) mod testing {
    use crate::engine::Options;
    use crate::engine::testkit::run;
    use crate::report::Severity;

    /// The engine over `files` makes a note that says `says`.
    pub fn check_note(files: &[(&str, &str)], says: &str) {
        check_note_with(files, &Options::default(), says);
    }

    /// `check_note` with options.
    pub fn check_note_with(files: &[(&str, &str)], opts: &Options, says: &str) {
        let (_, diags) = run(files, opts);
        assert!(
            diags
                .iter()
                .any(|d| d.severity == Severity::Note && d.message.contains(says)),
            "no note saying `{says}`: {diags:?}"
        );
    }

    /// The sample callback of most loaders: it prints the pid.
    pub const PERF_CALLBACK: &str = r#"static void handle_event(void *ctx, int cpu, void *data, __u32 size)
{
	printf("pid %u\n", *(__u32 *)data);
}
"#;

    /// `PERF_CALLBACK` migrated.
    pub const RING_CALLBACK: &str = r#"static int handle_event(void *ctx, void *data, size_t size)
{
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}
"#;

    /// `main`'s usual declarations: the perf buffer `pb` and the skeleton.
    pub const PERF_DECLS: &str = "\tstruct perf_buffer *pb;\n\tstruct x_bpf *skel;\n";

    /// `PERF_DECLS` migrated.
    pub const RING_DECLS: &str = "\tstruct ring_buffer *pb;\n\tstruct x_bpf *skel;\n";

    /// Polling `pb` until an error, then freeing it.
    pub const PERF_POLL: &str =
        "\twhile (perf_buffer__poll(pb, 100) >= 0)\n\t\t;\n\tperf_buffer__free(pb);\n";

    /// `PERF_POLL` migrated.
    pub const RING_POLL: &str =
        "\twhile (ring_buffer__poll(pb, 100) >= 0)\n\t\t;\n\tring_buffer__free(pb);\n";

    /// The head of a loader `x.c`: `<stdio.h>`, the `#include` lines `includes`, libbpf and
    /// the skeleton, and a blank line.
    pub fn head(includes: &str) -> String {
        format!("#include <stdio.h>\n{includes}#include <bpf/libbpf.h>\n#include \"x.skel.h\"\n\n")
    }

    /// A loader `x.c`: its head with `includes`; `top`, the code before `main` (globals,
    /// callbacks); then `main`, which starts with `decls` (its declarations, the blank line
    /// after them, and whatever it does before it opens the skeleton), opens and attaches the
    /// skeleton, and goes on with `body` up to its closing brace.
    pub fn loader(includes: &str, top: &str, decls: &str, body: &str) -> String {
        format!(
            "{}{top}\nint main(void)\n{{\n{decls}\tskel = x_bpf__open_and_load();\n\
             \tif (!skel || x_bpf__attach(skel))\n\t\treturn 1;\n{body}}}\n",
            head(includes)
        )
    }

    /// A `loader` whose `main` declares `PERF_DECLS` then `decls`, makes its perf buffer with
    /// `create`, returns 1 if it failed, and polls it.
    pub fn perf(includes: &str, top: &str, decls: &str, create: &str) -> String {
        loader(
            includes,
            top,
            &format!("{PERF_DECLS}{decls}\n"),
            &format!("{create}\tif (!pb)\n\t\treturn 1;\n{PERF_POLL}\treturn 0;\n"),
        )
    }

    /// `perf` migrated: the same with a ring buffer.
    pub fn ring(includes: &str, top: &str, decls: &str, create: &str) -> String {
        loader(
            includes,
            top,
            &format!("{RING_DECLS}{decls}\n"),
            &format!("{create}\tif (!pb)\n\t\treturn 1;\n{RING_POLL}\treturn 0;\n"),
        )
    }

    /// A loader whose buffer is made and polled in `top`, by a function that `main` returns
    /// the result of, `call`, once the skeleton is open and attached.
    pub fn loader_calling(includes: &str, top: &str, call: &str) -> String {
        format!(
            "{}{top}\nint main(void)\n{{\n\tstruct x_bpf *skel = x_bpf__open_and_load();\n\n\
             \tif (!skel || x_bpf__attach(skel))\n\t\treturn 1;\n\treturn {call};\n}}\n",
            head(includes)
        )
    }

    pub const BPF: &str = r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"#;

    /// `BPF` with a second perf event array, `errors`, written next to `events`.
    pub fn bpf_two_maps() -> String {
        BPF.replace(
            "} events SEC(\".maps\");",
            "} events SEC(\".maps\");\n\nstruct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\
             \t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} errors SEC(\".maps\");",
        )
        .replace(
            "\treturn 0;\n}\n\nchar",
            "\tbpf_perf_event_output(ctx, &errors, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}\n\nchar",
        )
    }

    pub const BPF_AFTER: &str = r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"#;
}

#[cfg(test)]
mod tests {
    use super::testing::{
        BPF, BPF_AFTER, PERF_CALLBACK, PERF_DECLS, PERF_POLL, RING_CALLBACK, RING_DECLS, RING_POLL,
        loader,
    };
    use crate::engine::testkit::{check_migrate, check_refused};
    use crate::rules::Rule;

    /// What `main` does once the buffer is polled and freed, for a failure to jump to.
    const OUT: &str = "out:\n\tx_bpf__destroy(skel);\n\treturn 0;\n";

    #[test]
    fn a_whole_program_migrates() {
        let before = loader(
            "",
            PERF_CALLBACK,
            &format!("{PERF_DECLS}\n"),
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n\
                 \tif (!pb)\n\t\tgoto out;\n{PERF_POLL}{OUT}"
            ),
        );
        let after = loader(
            "",
            RING_CALLBACK,
            &format!("{RING_DECLS}\n"),
            &format!(
                "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n\
                 \tif (!pb)\n\t\tgoto out;\n{RING_POLL}{OUT}"
            ),
        );
        check_migrate(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            &[("x.bpf.c", BPF_AFTER), ("x.c", &after)],
        );
    }

    /// A program's own helper named like libbpf's (`perf_buffer_create()`, xd_scsiiotrace) is
    /// no libbpf name: its calls are left alone, its body migrates.
    #[test]
    fn a_helper_named_like_libbpf_is_not_refused() {
        let helper = |kind: &str, new: &str| {
            format!(
                "{PERF_CALLBACK}\nstatic struct {kind} *{kind}_create(struct x_bpf *skel)\n{{\n\treturn {new};\n}}\n"
            )
        };
        let create = "\tpb = perf_buffer_create(skel);\n\tif (!pb)\n\t\tgoto out;\n";
        let before = loader(
            "",
            &helper(
                "perf_buffer",
                "perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL)",
            ),
            &format!("{PERF_DECLS}\n"),
            &format!("{create}{PERF_POLL}{OUT}"),
        );
        let after = loader(
            "",
            &helper(
                "perf_buffer",
                "ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL)",
            )
            .replace("static struct perf_buffer *", "static struct ring_buffer *")
            .replace(PERF_CALLBACK, RING_CALLBACK),
            &format!("{RING_DECLS}\n"),
            &format!("{create}{RING_POLL}{OUT}"),
        );
        check_migrate(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            &[("x.bpf.c", BPF_AFTER), ("x.c", &after)],
        );
    }

    #[test]
    fn a_trigger_behind_a_macro_is_refused() {
        let before = loader(
            "",
            &format!("#define POLL_EVENTS(pb) perf_buffer__poll(pb, 100)\n\n{PERF_CALLBACK}"),
            &format!("{PERF_DECLS}\n"),
            &format!(
                "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n\
                 \tif (!pb)\n\t\tgoto out;\n\
                 \twhile (POLL_EVENTS(pb) >= 0)\n\t\t;\n\tperf_buffer__free(pb);\n{OUT}"
            ),
        );
        check_refused(
            &[("x.bpf.c", BPF), ("x.c", &before)],
            Rule::UnsupportedForm,
            "`perf_buffer__poll` is used in a form bpf-migrate does not understand",
        );
    }
}
