//! `--strategy compat` for BCC tools, the tool's side (`compat` writes the C): one tool for
//! kernels with and without the ring buffer. BCC compiles the C when the tool runs, so the
//! kind of each table is picked then: the tool asks the kernel once, with libbpf's own probe
//! inside libbcc, and where there is no ring buffer defines `MAP_use_perf` for the C
//! (`compat_cflags()`, given to every `BPF()`), whose `#ifdef` then keeps the perf table.
//!
//! The tool keeps its perf buffer code and callbacks: `b["events"].open_perf_buffer(cb, ...)`
//! becomes `compat_open(b["events"], cb, ...)`, `b.perf_buffer_poll(...)`
//! `compat_poll(b, ...)` and `b.perf_buffer_consume()` `compat_consume(b)`, small functions
//! written once after the imports, which call the perf buffer's or the ring buffer's. A kept
//! lost callback is fed on the ring path as `bcc_lost_counter` does it; the perf path calls
//! it as before.

use tree_sitter::Node;

use super::bcc_lost_counter::{c_string_refuses, imports_end};
use super::context::Analysis;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{descendants, text};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// The names the tool's side adds; a tool that already has one is refused.
const NAMES: [&str; 6] = [
    "compat_ring_buffer_available",
    "compat_use_perf",
    "compat_cflags",
    "compat_open",
    "compat_poll",
    "compat_consume",
];

/// Whether a tool holds the functions this strategy writes: it was migrated.
pub fn has_shim(src: &str) -> bool {
    src.contains("\ndef compat_open(")
}

/// What the tool calls, for the functions to write.
#[derive(Default)]
pub(super) struct Used {
    pub poll: bool,
    pub consume: bool,
}

/// `OBJECT.open_perf_buffer(ARGS)` becomes `compat_open(OBJECT, ARGS)`: the arguments stay,
/// for the perf path.
pub(super) fn open_edit(src: &str, object: Node, args: Node) -> Edit {
    let open = args.start_byte() + 1;
    let sep = if src[open..].starts_with(['\n', '\r']) {
        ","
    } else {
        ", "
    };
    Edit::replace(
        object.start_byte(),
        open,
        format!("compat_open({}{sep}", text(object, src)),
        Rule::CompatLoader,
    )
}

/// `OBJECT.perf_buffer_poll(ARGS)` becomes `compat_poll(OBJECT, ARGS)` (`consume`:
/// `compat_consume(OBJECT)`); `kprobe_poll`, BCC's old name, is a poll.
pub(super) fn poll_edit(src: &str, object: Node, args: Node, consume: bool) -> Edit {
    let name = if consume {
        "compat_consume"
    } else {
        "compat_poll"
    };
    let open = args.start_byte() + 1;
    let empty = args.named_child_count() == 0;
    let sep = if empty { "" } else { ", " };
    Edit::replace(
        object.start_byte(),
        open,
        format!("{name}({}{sep}", text(object, src)),
        Rule::CompatLoader,
    )
}

/// The tool's `BPF(...)` calls compile with `compat_cflags()`: added, or wrapped around the
/// `cflags` the call passes.
fn cflags_edit(src: &str, call: Node) -> Result<Edit, String> {
    let Some(args) = call.field("arguments") else {
        return Err("a BPF() call without arguments".into());
    };
    let mut cursor = args.walk();
    let items: Vec<Node> = args
        .named_children(&mut cursor)
        .filter(|n| n.kind() != "comment")
        .collect();
    if items
        .iter()
        .any(|n| matches!(n.kind(), "list_splat" | "dictionary_splat"))
    {
        return Err("BPF() is called with unpacked arguments, which may hold its cflags".into());
    }
    // BPF(src_file, hdr_file, text, debug, cflags, ...)
    if items
        .iter()
        .filter(|n| n.kind() != "keyword_argument")
        .count()
        >= 5
    {
        return Err("BPF() is given its cflags as a positional argument".into());
    }
    let cflags = items.iter().find(|n| {
        n.kind() == "keyword_argument" && n.field("name").is_some_and(|k| text(k, src) == "cflags")
    });
    Ok(
        match (cflags.and_then(|k| k.field("value")), items.last()) {
            (Some(v), _) => Edit::replace(
                v.start_byte(),
                v.end_byte(),
                format!("compat_cflags({})", text(v, src)),
                Rule::CompatLoader,
            ),
            (None, Some(last)) => Edit::insert(
                last.end_byte(),
                ", cflags=compat_cflags()",
                Rule::CompatLoader,
            ),
            (None, None) => Edit::insert(
                args.start_byte() + 1,
                "cflags=compat_cflags()",
                Rule::CompatLoader,
            ),
        },
    )
}

/// The functions written after the imports, for `tables` (the `MAP_use_perf` macros).
fn shim(tables: &[String], used: &Used) -> String {
    let defines: Vec<String> = tables
        .iter()
        .map(|t| format!("\"-D{t}{}\"", super::compat::FLAG_SUFFIX))
        .collect();
    let mut out = format!(
        r#"

# Added by bpf-migrate --strategy compat: the tool reads its events from a ring buffer where
# the kernel has one, else from the perf buffer it was written for; its C picks the same way,
# by the macros compat_cflags() defines.
def compat_ring_buffer_available():
    # libbpf's own probe of the feature, inside libbcc (an older BCC lacks it: perf buffer).
    from bcc.libbcc import lib
    probe = getattr(lib, "libbpf_probe_bpf_map_type", None)
    return probe is not None and probe(27, None) == 1  # BPF_MAP_TYPE_RINGBUF


compat_use_perf = not compat_ring_buffer_available()


def compat_cflags(cflags=()):
    return list(cflags) + ([{}] if compat_use_perf else [])


def compat_open(table, callback, *args, **kwargs):
    if compat_use_perf:
        return table.open_perf_buffer(callback, *args, **kwargs)
    return table.open_ring_buffer(callback)
"#,
        defines.join(", ")
    );
    if used.poll {
        out.push_str(
            r#"

def compat_poll(b, timeout=-1):
    if compat_use_perf:
        return b.perf_buffer_poll(timeout)
    return b.ring_buffer_poll(timeout)
"#,
        );
    }
    if used.consume {
        out.push_str(
            r#"

def compat_consume(b):
    if compat_use_perf:
        return b.perf_buffer_consume()
    return b.ring_buffer_consume()
"#,
        );
    }
    out
}

/// Once the whole tool has been seen: its `BPF()` calls get the cflags and the functions go
/// after its imports (with `bcc_lost_counter`'s, where it put them there); or the tool is
/// refused, saying why.
pub(super) fn settle(file: &SourceFile, root: Node, used: &Used, a: &mut Analysis) {
    if a.edits.is_empty() && a.consumers.is_empty() {
        return;
    }
    let (at, edits, add) = match plan(&file.text, root, used, a) {
        Ok(x) => x,
        Err((at, what)) => {
            a.diags.push(
                Diagnostic::at(
                    file,
                    at,
                    Rule::CompatUnsupported,
                    format!("--strategy compat cannot migrate this tool: {what}"),
                )
                .help("migrate it with the default strategy (ring buffer only), or by hand"),
            );
            return;
        }
    };
    a.edits.extend(edits);
    match a.edits.iter_mut().find(|e| e.start == at && e.end == at) {
        // The lost counter's functions: after them, with their blank lines.
        Some(watcher) => {
            let body = watcher.text.trim_end_matches('\n').len();
            let blank = watcher.text[body..].to_string();
            watcher.text.truncate(body);
            watcher.text.push('\n');
            watcher.text.push_str(&add);
            watcher.text.push_str(blank.get(1..).unwrap_or(""));
        }
        None => {
            let src = &file.text;
            let blank = src[at..]
                .split_inclusive('\n')
                .take_while(|l| l.trim().is_empty() && l.ends_with('\n'))
                .count();
            let text = format!("{add}{}", "\n".repeat(2usize.saturating_sub(blank)));
            a.edits.push(Edit::insert(at, text, Rule::CompatLoader));
        }
    }
}

/// Where the functions go, the cflags edits and the functions; or where and why not.
fn plan(
    src: &str,
    root: Node,
    used: &Used,
    a: &Analysis,
) -> Result<(usize, Vec<Edit>, String), (usize, String)> {
    let nodes = descendants(root);
    let taken = nodes
        .iter()
        .filter(|n| n.kind() == "identifier")
        .find(|n| NAMES.contains(&text(**n, src)));
    if let Some(n) = taken {
        return Err((
            n.start_byte(),
            format!("the name `{}` is taken", text(*n, src)),
        ));
    }
    let mut tables: Vec<String> = Vec::new();
    for t in a
        .maps
        .iter()
        .map(|m| &m.name)
        .chain(a.consumers.iter().map(|c| &c.map))
    {
        if !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    for m in &a.maps {
        if let Some(why) = c_string_refuses(src, root, &m.name) {
            return Err((m.offset, why));
        }
    }
    let calls: Vec<Node> = nodes
        .iter()
        .copied()
        .filter(|n| n.kind() == "call")
        .filter(|n| {
            n.field("function").is_some_and(|f| match f.kind() {
                "identifier" => text(f, src) == "BPF",
                "attribute" => f.field("attribute").is_some_and(|x| text(x, src) == "BPF"),
                _ => false,
            })
        })
        .collect();
    if calls.is_empty() {
        return Err((
            a.consumers.first().map_or(0, |c| c.offset),
            "it makes no BPF() object in this file, whose C must be compiled with compat_cflags()"
                .into(),
        ));
    }
    let Some(at) = imports_end(src, root) else {
        return Err((
            0,
            "it has no import at its top to put the compat functions after".into(),
        ));
    };
    let mut edits = Vec::new();
    for c in calls {
        edits.push(cflags_edit(src, c).map_err(|why| (c.start_byte(), why))?);
    }
    Ok((at, edits, shim(&tables, used)))
}

#[cfg(test)]
mod tests {
    use crate::engine::testkit::run;
    use crate::engine::{Lost, Options, Strategy};
    use crate::rules::Rule;

    fn compat(lost: Lost) -> Options {
        Options {
            strategy: Strategy::Compat,
            lost,
            ..Options::default()
        }
    }

    /// A BCC tool: its table `events` defined by `table`, written to by `submit`, the C
    /// compiled by `bpf`, the table opened by `open` and polled by `poll`; `cb` is the
    /// callback's body.
    fn tool(table: &str, submit: &str, bpf: &str, open: &str, poll: &str, cb: &str) -> String {
        format!(
            r#"from bcc import BPF
import time

prog = """
#include <linux/sched.h>

struct data_t {{
    u32 pid;
    char comm[TASK_COMM_LEN];
}};

{table}

int trace_exit(struct pt_regs *ctx)
{{
    struct data_t data = {{}};

    data.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&data.comm, sizeof(data.comm));
    {submit}
    return 0;
}}
"""

b = {bpf}
b.attach_kprobe(event="do_exit", fn_name="trace_exit")


def on_event(cpu, data, size):
{cb}


def on_lost(n):
    print("lost %d" % n)


{open}
while 1:
    {poll}
"#
        )
    }

    const TABLE: &str = "BPF_PERF_OUTPUT(events);";
    const SUBMIT: &str = "events.perf_submit(ctx, &data, sizeof(data));";
    const CB: &str = "    event = b[\"events\"].event(data)\n    print(event.pid, event.comm)";

    /// The tool migrated with --strategy compat: its new text, or the messages of the
    /// refusals.
    fn migrate(text: &str, lost: Lost) -> Result<String, Vec<String>> {
        let (changed, diags) = run(&[("x.py", text)], &compat(lost));
        let refused: Vec<String> = diags
            .iter()
            .filter(|d| d.severity.refuses())
            .inspect(|d| assert_eq!(d.rule, Rule::CompatUnsupported, "{d:?}"))
            .map(|d| d.message.clone())
            .collect();
        if !refused.is_empty() {
            assert!(changed.is_empty());
            return Err(refused);
        }
        let changed = changed.get("x.py");
        Ok(changed
            .unwrap_or_else(|| panic!("x.py unchanged: {diags:?}"))
            .clone())
    }

    fn refused(text: &str, says: &str) {
        let why = migrate(text, Lost::Count).expect_err("refused");
        assert!(why.iter().any(|w| w.contains(says)), "{why:?}");
    }

    #[test]
    fn the_tool_and_its_c_pick_the_same_buffer() {
        let before = tool(
            TABLE,
            SUBMIT,
            "BPF(text=prog)",
            "b[\"events\"].open_perf_buffer(on_event, page_cnt=64)",
            "b.perf_buffer_poll(timeout=100)",
            CB,
        );
        let after = migrate(&before, Lost::Count).unwrap();
        let shim = super::shim(
            &["events".to_string()],
            &super::Used {
                poll: true,
                consume: false,
            },
        );
        let table = "#ifdef events_use_perf\nBPF_PERF_OUTPUT(events);\n#else\nBPF_RINGBUF_OUTPUT(events, 512);\n#endif\n\n/*\n * Added by bpf-migrate --strategy compat. Where the kernel has no ring buffer, the tool\n * defines events_use_perf (compat_cflags()), and `events` is a perf buffer.\n */\nstatic inline __attribute__((always_inline)) int events_output(void *ctx, struct data_t *data, u32 size)\n{\n#ifdef events_use_perf\n    return events.perf_submit(ctx, data, size);\n#else\n    return events.ringbuf_output(data, size, 0);\n#endif\n}\n";
        let want = tool(
            table.trim_end(),
            "events_output(ctx, &data, sizeof(data));",
            "BPF(text=prog, cflags=compat_cflags())",
            "compat_open(b[\"events\"], on_event, page_cnt=64)",
            "compat_poll(b, timeout=100)",
            CB,
        )
        .replace("import time\n", &format!("import time\n{shim}\n"));
        assert_eq!(after, want);
        // The shim asks libbpf's probe, and defines the table's macro only for the perf path.
        assert!(shim.contains("probe(27, None) == 1"), "{shim}");
        assert!(
            shim.contains(
                "return list(cflags) + ([\"-Devents_use_perf\"] if compat_use_perf else [])"
            ),
            "{shim}"
        );
        // A second run changes nothing.
        assert!(run(&[("x.py", &after)], &compat(Lost::Count)).0.is_empty());
        assert!(run(&[("x.py", &after)], &Options::default()).0.is_empty());
    }

    #[test]
    fn a_kept_lost_callback_is_fed_on_the_ring_path_and_passed_on_the_perf_path() {
        let before = tool(
            TABLE,
            SUBMIT,
            "BPF(text=prog, cflags=[\"-DDEBUG=0\"])",
            "b[\"events\"].open_perf_buffer(on_event, lost_cb=on_lost)",
            "b.perf_buffer_consume()",
            CB,
        );
        let after = migrate(&before, Lost::Count).unwrap();
        for want in [
            // The counter after the #ifdef, counted on the ring path only.
            "#endif\n\n/*\n * The records `events` could not take",
            "#ifdef events_use_perf\n    return events.perf_submit(ctx, data, size);\n#else\n    return events_lost_count(events.ringbuf_output(data, size, 0));\n#endif",
            "BPF(text=prog, cflags=compat_cflags([\"-DDEBUG=0\"]))",
            "compat_open(b[\"events\"], lost_watch(b[\"events_lost\"], on_lost, on_event), lost_cb=on_lost)",
            "lost_check(compat_consume(b))",
            "def lost_check(ret=None):",
            "def compat_consume(b):",
        ] {
            assert!(after.contains(want), "no `{want}` in\n{after}");
        }
        assert!(!after.contains("def compat_poll("), "{after}");
        // Under --lost drop the arguments stay, for the perf path.
        let after = migrate(&before, Lost::Drop).unwrap();
        assert!(
            after.contains("compat_open(b[\"events\"], on_event, lost_cb=on_lost)"),
            "{after}"
        );
        assert!(!after.contains("lost_watch"), "{after}");
    }

    #[test]
    fn what_compat_cannot_make_work_on_both_paths_is_refused() {
        let poll = "b.perf_buffer_poll()";
        let open = "b[\"events\"].open_perf_buffer(on_event)";
        let with = |table: &str, bpf: &str, cb: &str| tool(table, SUBMIT, bpf, open, poll, cb);
        refused(
            &with(TABLE, "BPF(text=prog)", "    print(cpu)"),
            "reads `cpu`, the CPU",
        );
        refused(
            &with(TABLE, "BPF(text=prog, **kw)", CB),
            "unpacked arguments",
        );
        refused(
            &with(TABLE, "BPF(\"\", \"\", prog, 0, [])", CB),
            "positional argument",
        );
        refused(
            &with(
                "BPF_HASH(seen, u32); BPF_PERF_OUTPUT(events);",
                "BPF(text=prog)",
                CB,
            ),
            "does not begin its line",
        );
        refused(
            &with(
                "BPF_PERF_OUTPUT(events); BPF_HASH(seen, u32);",
                "BPF(text=prog)",
                CB,
            ),
            "does not end its line",
        );
        refused(
            &with(TABLE, "load(prog)", CB),
            "makes no BPF() object in this file",
        );
        refused(
            &with(TABLE, "BPF(text=prog)", CB)
                .replace("import time\n", "import time\ncompat_poll = None\n"),
            "the name `compat_poll` is taken",
        );
        refused(
            &tool(
                TABLE,
                "events.perf_submit_skb(ctx, 64, &data, sizeof(data));",
                "BPF(text=prog)",
                open,
                poll,
                CB,
            ),
            "appends packet bytes",
        );
        // The helper takes the type the outputs send, which BCC lays `.event()` out from.
        refused(
            &tool(
                "BPF_PERF_OUTPUT(events);\nstruct data_t last;",
                "events.perf_submit(ctx, &last, sizeof(last));",
                "BPF(text=prog)",
                open,
                poll,
                CB,
            ),
            "`last` is not declared in the function that outputs it",
        );
        refused(
            &tool(
                "BPF_PERF_OUTPUT(events);\n\nstruct other_t {\n    u64 x;\n};\n\nint other(struct pt_regs *ctx)\n{\n    struct other_t o = {};\n\n    events.perf_submit(ctx, &o, sizeof(o));\n    return 0;\n}",
                SUBMIT,
                "BPF(text=prog)",
                open,
                poll,
                CB,
            ),
            "its outputs send a `struct other_t` and a `struct data_t`",
        );
    }
}
