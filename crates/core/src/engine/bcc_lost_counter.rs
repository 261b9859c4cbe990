//! A BCC tool's lost-sample callback kept (`--lost count`, the default): a ring buffer has
//! none, so the BPF program counts, per CPU, the records its ring could not take (a
//! `BPF_PERCPU_ARRAY` `MAP_lost` that linking adds, `engine::lost_counter`), and the tool
//! passes what is new to the callback after each poll, as `lost_cb(count)`, as BCC did.
//!
//! The tool gets, once, after its imports, a table of watched counters and two functions:
//! `b["events"].open_perf_buffer(cb, lost_cb=lost)` becomes
//! `b["events"].open_ring_buffer(lost_watch(b["events_lost"], lost, cb))` (which registers the
//! counter and returns the callback), and each poll `lost_check(b.ring_buffer_poll())`.
//! Where that cannot be done, the callback is no longer passed, as under `--lost drop`, and
//! the note says why.

use tree_sitter::Node;

use super::context::Analysis;
use super::user::LOST_MAP_SUFFIX;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c::{of_kind, text};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::{SourceFile, line_end_incl};

/// The names the tool's side adds; a tool that already uses one keeps its callback dropped.
const NAMES: [&str; 3] = ["lost_counters", "lost_watch", "lost_check"];

/// What the tool's side adds after its imports.
const WATCHER: &str = r#"

# A ring buffer has no lost-sample callback: the BPF program counts the records its ring
# could not take in a per-CPU table beside it, and lost_check() passes what is new to the
# callback after each poll (added by bpf-migrate).
lost_counters = {}


def lost_watch(counter, lost_cb, callback):
    lost_counters[id(counter)] = [counter, lost_cb, 0]
    return callback


def lost_check(ret=None):
    for c in lost_counters.values():
        n = c[0].sum(0).value
        if n > c[2]:
            c[1](n - c[2])
            c[2] = n
    return ret
"#;

/// The help of a lost callback no longer called.
pub(super) const DROP_HELP: &str = "events dropped when the ring is full make ringbuf_output() return -EAGAIN in the BPF program: count them there in a BPF_PERCPU_ARRAY and read it from Python";

/// An `open_perf_buffer()` call with a lost callback, whose arguments are rewritten once the
/// whole tool has been seen.
pub(super) struct LostOpen {
    /// The argument list, parentheses included.
    pub args: (usize, usize),
    /// The sample callback as passed, `callback=` included when it was a keyword argument.
    pub cb: String,
    /// The callback's own span (its value, without `callback=`).
    pub cb_span: (usize, usize),
    pub cb_keyword: bool,
    pub lost: String,
    pub lost_at: usize,
    /// How the counter table is named from where the buffer is opened.
    pub counter: String,
    pub map: String,
    /// Its consumer in the analysis.
    pub consumer: usize,
}

/// The counter table of `map` named from the table expression `object`: the same lookup with
/// the counter's name (`b["events_lost"]`, `b.get_table("events_lost")`), or the table's BPF
/// object asked for it (`events.bpf["events_lost"]`).
pub(super) fn counter_expr(object: Node, src: &str, map: &str) -> String {
    let counter = format!("{map}{LOST_MAP_SUFFIX}");
    let renamed = |s: Node| {
        let t = text(s, src);
        let q = t.find(['"', '\''])?;
        let quote = &t[q..q + 1];
        let (prefix, inner) = (&t[..q], t[q..].trim_matches(|c| c == '"' || c == '\''));
        (inner == map).then(|| format!("{prefix}{quote}{counter}{quote}"))
    };
    let lookup = match object.kind() {
        "subscript" => object.field("subscript").and_then(|s| {
            let v = object.field("value")?;
            Some(format!("{}[{}]", text(v, src), renamed(s)?))
        }),
        "call" => object
            .field("arguments")
            .and_then(|a| a.named_child(0))
            .and_then(|s| {
                let f = object.field("function")?;
                Some(format!("{}({})", text(f, src), renamed(s)?))
            }),
        _ => None,
    };
    lookup.unwrap_or_else(|| format!("{}.bpf[\"{counter}\"]", text(object, src)))
}

/// Why the counter cannot be given to the tool's lost callbacks, if it cannot: the file, as a
/// whole, must take the watcher.
fn why_not(src: &str, root: Node, polls: &[(usize, usize)], maps: &[&str]) -> Option<String> {
    if polls.is_empty() {
        return Some("the tool does not poll its buffers in this file".into());
    }
    let idents = |name: &str| {
        of_kind_all(root, "identifier")
            .iter()
            .any(|n| text(*n, src) == name)
    };
    if let Some(n) = NAMES.iter().find(|n| idents(n)) {
        return Some(format!("the name `{n}` is taken"));
    }
    for map in maps {
        // A template's table (`bcc_format`): the counter would need a name filled in too.
        if super::bcc_format::is_identity(map) {
            return Some(format!(
                "the table's name is filled in by the tool's `%` formatting (`{map}`), and a counter beside it would need a name filled in too"
            ));
        }
        let counter = format!("{map}{LOST_MAP_SUFFIX}");
        if src.contains(&counter) {
            return Some(format!("the name `{counter}` is taken"));
        }
        if let Some(why) = c_string_refuses(src, root, map) {
            return Some(why);
        }
    }
    if imports_end(src, root).is_none() {
        return Some("the tool has no import at its top to put the counter's code after".into());
    }
    None
}

/// Every node of `kind` under `root` (the analysis keeps only some kinds indexed).
fn of_kind_all<'t>(root: Node<'t>, kind: &str) -> Vec<Node<'t>> {
    let nodes = crate::lang::c::named_descendants(root);
    of_kind(&nodes, kind)
}

/// Why the counter's C cannot be added after `BPF_PERF_OUTPUT(map);` in the tool's own
/// strings, if it cannot: new lines need a triple-quoted string, and braces one that is no
/// f-string or `.format()` template. None too when the table is defined in another file.
pub(super) fn c_string_refuses(src: &str, root: Node, map: &str) -> Option<String> {
    for s in of_kind_all(root, "string") {
        let body = text(s, src);
        let defines = body.match_indices("BPF_PERF_OUTPUT").any(|(i, _)| {
            let rest = body[i + "BPF_PERF_OUTPUT".len()..].trim_start();
            rest.strip_prefix('(')
                .map(|r| r.trim_start())
                .and_then(|r| r.strip_prefix(map))
                .is_some_and(|r| r.trim_start().starts_with(')'))
        });
        if !defines {
            continue;
        }
        let opener = s.child(0).map(|o| text(o, src)).unwrap_or("");
        if !(opener.ends_with("\"\"\"") || opener.ends_with("'''")) {
            return Some(format!(
                "`BPF_PERF_OUTPUT({map})` is in a one-line string, where the counter's C cannot be added"
            ));
        }
        if opener.contains(['f', 'F']) || body.contains("{{") {
            return Some(format!(
                "`BPF_PERF_OUTPUT({map})` is in a format string, where the counter's C would need its braces escaped"
            ));
        }
    }
    None
}

/// Just past the last import of the module's opening statements (its docstring, comments,
/// imports and `if`/`try` blocks of imports).
pub(super) fn imports_end(src: &str, root: Node) -> Option<usize> {
    let mut end = None;
    let mut cursor = root.walk();
    for n in root.named_children(&mut cursor) {
        match n.kind() {
            "import_statement" | "import_from_statement" | "future_import_statement" => {
                end = Some(n.end_byte())
            }
            "comment" => {}
            "expression_statement"
                if end.is_none() && n.named_child(0).is_some_and(|c| c.kind() == "string") => {}
            "if_statement" | "try_statement"
                if of_kind_all(n, "import_statement").len()
                    + of_kind_all(n, "import_from_statement").len()
                    > 0 =>
            {
                end = Some(n.end_byte())
            }
            _ => break,
        }
    }
    end.map(|e| line_end_incl(src, e))
}

/// The tool's lost callbacks, now that all of it has been seen: fed from the counters, or
/// no longer passed, with a note each. Under `--strategy compat` (`compat`) the arguments
/// stay, for the perf path: only the sample callback is wrapped in `lost_watch()`, and a
/// callback that cannot be fed is still called on the perf path.
pub(super) fn settle(
    file: &SourceFile,
    root: Node,
    opens: &[LostOpen],
    polls: &[(usize, usize)],
    compat: bool,
    a: &mut Analysis,
) {
    if opens.is_empty() {
        return;
    }
    let src = file.text.as_str();
    let edits = &mut a.edits;
    let mut diags = Vec::new();
    let maps: Vec<&str> = opens.iter().map(|o| o.map.as_str()).collect();
    let why = why_not(src, root, polls, &maps);
    for o in opens {
        let cb = if o.cb_keyword {
            format!("callback={}", o.cb)
        } else {
            o.cb.clone()
        };
        match &why {
            None => {
                let watch = format!("lost_watch({}, {}, {})", o.counter, o.lost, o.cb);
                edits.push(if compat {
                    Edit::replace(o.cb_span.0, o.cb_span.1, watch, Rule::LostCounter)
                } else {
                    Edit::replace(
                        o.args.0,
                        o.args.1,
                        format!("({}{watch})", if o.cb_keyword { "callback=" } else { "" }),
                        Rule::BccOpenPerfBuffer,
                    )
                });
                diags.push(Diagnostic::at(
                    file,
                    o.lost_at,
                    Rule::LostCounter,
                    format!(
                        "the lost-event callback `{}` is kept: {}the BPF program counts the records the ring `{}` could not take in `{}{LOST_MAP_SUFFIX}`, and lost_check() passes what is new to it after each poll; the counts are not the perf buffer's (one ring shared by all CPUs fills at other times)",
                        o.lost,
                        if compat { "the perf buffer still calls it on the perf path; on the ring path, " } else { "" },
                        o.map,
                        o.map
                    ),
                ));
            }
            Some(why) if compat => {
                diags.push(Diagnostic::at(
                    file,
                    o.lost_at,
                    Rule::BccOpenPerfBuffer,
                    format!(
                        "the lost-event callback `{}` is called on the perf path only: a ring buffer has none; bpf-migrate cannot feed it from a counter: {why}",
                        o.lost
                    ),
                ).help(DROP_HELP));
            }
            Some(why) => {
                edits.push(Edit::replace(
                    o.args.0,
                    o.args.1,
                    format!("({cb})"),
                    Rule::BccOpenPerfBuffer,
                ));
                diags.push(Diagnostic::at(
                    file,
                    o.lost_at,
                    Rule::BccOpenPerfBuffer,
                    format!(
                        "the lost-event callback `{}` is no longer called: a ring buffer has none; bpf-migrate cannot feed it from a counter: {why}",
                        o.lost
                    ),
                ).help(DROP_HELP));
            }
        }
    }
    if why.is_none() {
        for o in opens {
            a.consumers[o.consumer].lost_counted = true;
        }
    }
    a.diags.extend(diags);
    if why.is_some() {
        return;
    }
    let edits = &mut a.edits;
    for &(s, e) in polls {
        edits.push(Edit::insert(s, "lost_check(", Rule::LostCounter));
        edits.push(Edit::insert(e, ")", Rule::LostCounter));
    }
    // Two blank lines after the functions, with those already there.
    let at = imports_end(src, root).expect("checked by why_not");
    let blank = src[at..]
        .split_inclusive('\n')
        .take_while(|l| l.trim().is_empty() && l.ends_with('\n'))
        .count();
    let text = format!("{WATCHER}{}", "\n".repeat(2usize.saturating_sub(blank)));
    edits.push(Edit::insert(at, text, Rule::LostCounter));
}

#[cfg(test)]
mod tests {
    use crate::engine::options::{Lost, Options};
    use crate::engine::testkit::{check_migrate, run};

    /// A BCC tool whose table `events` is read with `open` (its arguments) and polled with
    /// `poll`; its C in `quote` strings (after `prefix` lines).
    fn tool(quote: &str, open: &str, poll: &str) -> String {
        format!(
            r#"from bcc import BPF
import time

prog = {quote}
BPF_PERF_OUTPUT(events);

int probe(void *ctx)
{{
    u32 pid = bpf_get_current_pid_tgid() >> 32;

    events.perf_submit(ctx, &pid, sizeof(pid));
    return 0;
}}
{quote}

b = BPF(text=prog)
b.attach_kprobe(event="do_exit", fn_name="probe")


def on_event(cpu, data, size):
    print(b["events"].event(data))


def on_lost(lost):
    print("lost %d" % lost)


{open}
while 1:
    {poll}
"#
        )
    }

    /// The counter's C after the table (its text is pinned by the lost-counter rule's
    /// example too).
    const COUNTER_C: &str = r#"BPF_RINGBUF_OUTPUT(events, 64);

/*
 * The records `events` could not take, per CPU, for the reader's lost-sample report
 * (added by bpf-migrate).
 */
BPF_PERCPU_ARRAY(events_lost, u64, 1);

static inline __attribute__((always_inline)) int events_lost_count(int err)
{
    if (err) {
        int zero = 0;
        u64 *n = events_lost.lookup(&zero);

        if (n)
            *n += 1;
    }
    return err;
}
"#;

    /// `tool` after migration, its buffer opened with `open` and polled with `poll`.
    fn watched(open: &str, poll: &str) -> String {
        tool("\"\"\"", open, poll)
            .replace(
                "import time\n",
                &format!("import time\n{}\n", super::WATCHER),
            )
            .replace("BPF_PERF_OUTPUT(events);\n", COUNTER_C)
            .replace(
                "events.perf_submit(ctx, &pid, sizeof(pid));",
                "events_lost_count(events.ringbuf_output(&pid, sizeof(pid), 0));",
            )
            .replace("def on_event(cpu,", "def on_event(ctx,")
    }

    #[test]
    fn a_lost_callback_is_fed_from_the_counter_after_each_poll() {
        check_migrate(
            &[(
                "x.py",
                &tool(
                    "\"\"\"",
                    "b[\"events\"].open_perf_buffer(on_event, lost_cb=on_lost)",
                    "b.perf_buffer_poll()",
                ),
            )],
            &[(
                "x.py",
                &watched(
                    "b[\"events\"].open_ring_buffer(lost_watch(b[\"events_lost\"], on_lost, on_event))",
                    "lost_check(b.ring_buffer_poll())",
                ),
            )],
        );
        // Positional and keyword forms, a table from get_table() or held in a variable.
        check_migrate(
            &[(
                "x.py",
                &tool(
                    "\"\"\"",
                    "b.get_table(b\"events\").open_perf_buffer(callback=on_event, page_cnt=8, lost_cb=on_lost)",
                    "b.perf_buffer_consume()",
                ),
            )],
            &[(
                "x.py",
                &watched(
                    "b.get_table(b\"events_lost\").open_ring_buffer(callback=lost_watch(b.get_table(b\"events_lost\"), on_lost, on_event))",
                    "lost_check(b.ring_buffer_consume())",
                )
                .replace(
                    "b.get_table(b\"events_lost\").open_ring_buffer",
                    "b.get_table(b\"events\").open_ring_buffer",
                ),
            )],
        );
        check_migrate(
            &[(
                "x.py",
                &tool(
                    "\"\"\"",
                    "t = b[\"events\"]\nt.open_perf_buffer(on_event, 8, on_lost)",
                    "b.perf_buffer_poll(timeout=100)",
                ),
            )],
            &[(
                "x.py",
                &watched(
                    "t = b[\"events\"]\nt.open_ring_buffer(lost_watch(t.bpf[\"events_lost\"], on_lost, on_event))",
                    "lost_check(b.ring_buffer_poll(timeout=100))",
                ),
            )],
        );
    }

    /// The note on `on_lost` when the tool at `text` keeps it dropped.
    fn dropped_because(text: &str, opts: &Options) -> String {
        let (changed, diags) = run(&[("x.py", text)], opts);
        let out = &changed["x.py"];
        assert!(!out.contains("lost_check("), "{out}");
        assert!(out.contains(".open_ring_buffer(on_event)"), "{out}");
        diags
            .iter()
            .find(|d| d.message.contains("`on_lost` is no longer called"))
            .unwrap_or_else(|| panic!("{diags:?}"))
            .message
            .clone()
    }

    #[test]
    fn where_the_counter_cannot_be_read_the_callback_is_dropped_with_the_reason() {
        let open = "b[\"events\"].open_perf_buffer(on_event, lost_cb=on_lost)";
        let drop = Options {
            lost: Lost::Drop,
            ..Options::default()
        };
        let plain = tool("\"\"\"", open, "b.perf_buffer_poll()");
        assert!(!dropped_because(&plain, &drop).contains("counter"));
        for (text, why) in [
            (
                plain.replace("import time", "import time\nlost_check = None"),
                "the name `lost_check` is taken",
            ),
            (
                plain.replace("int probe", "// events_lost\nint probe"),
                "the name `events_lost` is taken",
            ),
            (
                plain
                    .replace("{\n", "{{\n")
                    .replace("}\n", "}}\n")
                    .replace("b = BPF(text=prog)", "b = BPF(text=prog.format())"),
                "format string",
            ),
        ] {
            let msg = dropped_because(&text, &Options::default());
            assert!(msg.contains(why), "{why}: {msg}");
        }
    }

    #[test]
    fn a_one_line_string_cannot_take_the_counter() {
        let text = r#"from bcc import BPF

prog = "BPF_PERF_OUTPUT(events);\n"
prog += "int probe(void *ctx) { u32 pid = 1; events.perf_submit(ctx, &pid, sizeof(pid)); return 0; }\n"
b = BPF(text=prog)


def on_event(cpu, data, size):
    print(size)


def on_lost(lost):
    print(lost)


b["events"].open_perf_buffer(on_event, lost_cb=on_lost)
while 1:
    b.perf_buffer_poll()
"#;
        let msg = dropped_because(text, &Options::default());
        assert!(msg.contains("one-line string"), "{msg}");
    }
}
